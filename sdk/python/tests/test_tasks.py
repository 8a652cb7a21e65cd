"""Tasks through the real server and a real Python worker process."""

import asyncio
import time

import pytest

import brigade
from brigade import TaskFailed, TaskRevoked, group
from conftest import wait_for
from tasks_app import (
    add,
    async_add,
    async_sleepy,
    async_wait_cancel,
    boom,
    flaky,
    hello,
    not_json,
    sleepy,
    sync_wait_cancel,
)


def test_kind_is_module_dot_function(app):
    assert add.name == "tasks_app.add"
    assert "tasks_app.async_add" in app.tasks


def test_sync_task_round_trip(worker):
    r = add.delay(2, 3)
    assert r.get(timeout=30) == 5
    assert r.state == "SUCCESS" and r.ready() and r.successful()
    assert r.view()["input"] == {"args": [2, 3], "kwargs": {}}


def test_kwargs_and_apply_async(worker):
    r = hello.apply_async(args=("brigade",), kwargs={"greeting": "hi"}, priority=5, queue="default")
    assert r.get(timeout=30) == "hi, brigade"
    assert r.view()["priority"] == 5


def test_async_task(worker):
    async def main():
        r = await async_add.delay_async(20, 22)
        return await r.get_async(timeout=30)

    assert asyncio.run(main()) == 42
    assert async_add.delay(1, 1).get(timeout=30) == 2


def test_retry_with_countdown(worker, app):
    r = flaky.delay(3)
    out = r.get(timeout=60)
    assert out["attempt"] == 3
    assert out["task_id"] == r.id and out["job_id"] == r.job_id
    history = r.view()["history"]
    assert [h["attempt"] for h in history] == [1, 2, 3]
    assert history[-1]["outcome"] == "succeeded"
    assert all(h["outcome"] != "succeeded" for h in history[:-1])
    lines = [l["line"] for l in app.task_logs(r.id)]
    assert "attempt 1" in lines and "attempt 3" in lines
    assert "[progress] 3/3 trying" in lines


def test_remote_error_with_traceback(worker):
    r = boom.delay(7)
    with pytest.raises(TaskFailed) as info:
        r.get(timeout=30)
    e = info.value
    assert e.type == "ValueError"
    assert e.message == "boom 7"
    assert e.kind == "handler"
    assert "inner_helper" in e.traceback and "tasks_app.py" in e.traceback
    assert r.state == "FAILURE" and r.failed()
    assert "inner_helper" in (r.traceback or "")


def test_non_json_arguments_are_a_type_error_at_delay(worker):
    with pytest.raises(TypeError, match="argument 0 of tasks_app.add is not JSON"):
        add.delay({1, 2}, 3)
    with pytest.raises(TypeError, match="keyword argument 'y'"):
        add.delay(1, y=object())


def test_non_json_return_value_fails_the_task(worker):
    with pytest.raises(TaskFailed, match="not JSON-serialisable"):
        not_json.apply_async(max_attempts=1).get(timeout=30)


def test_sync_timeout(worker):
    with pytest.raises(TaskFailed) as info:
        sleepy.delay(3).get(timeout=30)
    assert info.value.kind == "timeout"


def test_async_timeout_cancels_the_coroutine(worker, tmp_path):
    path = tmp_path / "marks"
    with pytest.raises(TaskFailed) as info:
        async_sleepy.delay(str(path), 30).get(timeout=30)
    assert info.value.kind == "timeout"
    wait_for(lambda: path.exists() and "cancelled" in path.read_text(), 10, "the coroutine to be cancelled")


def test_cancel_async_task(worker, tmp_path):
    path = tmp_path / "marks"
    r = async_wait_cancel.delay(str(path))
    wait_for(lambda: path.exists() and "started" in path.read_text(), 20, "the task to start")
    r.revoke()
    with pytest.raises(TaskRevoked):
        r.get(timeout=30)
    assert r.state == "REVOKED"
    wait_for(lambda: "cancelled" in path.read_text(), 10, "the coroutine to see the cancel")


def test_cancel_sync_task_sets_ctx_cancelled(worker, tmp_path):
    path = tmp_path / "marks"
    r = sync_wait_cancel.delay(str(path))
    wait_for(lambda: path.exists() and "started" in path.read_text(), 20, "the task to start")
    r.revoke()
    wait_for(lambda: "saw cancelled" in path.read_text(), 10, "ctx.cancelled")
    assert r.brigade_state == "cancelled"


def test_group_results_in_order(worker):
    g = group(add.s(i, i) for i in range(10)).delay()
    assert len(g) == 10
    assert g.get(timeout=30) == [i + i for i in range(10)]
    assert g.ready() and g.successful() and g.completed_count() == 10
    # One job of ten tasks.
    assert {r.job_id for r in g.results} == {g.id}


def test_group_member_and_failure(worker):
    g = group(add.s(1, 1), boom.s(3), add.s(2, 2)).delay()
    assert g[2].get(timeout=30) == 4
    with pytest.raises(TaskFailed, match="boom 3"):
        g.get(timeout=30)
    out = g.get(timeout=30, propagate=False)
    assert out[0] == 2 and isinstance(out[1], TaskFailed) and out[2] == 4


def test_countdown_schedules(worker):
    r = add.apply_async((1, 2), countdown=1)
    assert r.brigade_state == "scheduled"
    assert r.get(timeout=30) == 3


def test_get_timeout(app):
    # No worker serves this queue: the wait times out.
    r = add.apply_async((1, 2), queue="nobody-serves-this")
    with pytest.raises(brigade.TimeoutError):
        r.get(timeout=0.5)
    assert r.state == "PENDING" and not r.ready()
    r.revoke()
