"""The canvas (chain, group, chord) on the server's workflows, with a real
Python worker: each task runs once the server has its parents' results."""

import pytest

from brigade import GroupResult, TaskFailed, chain, chord, group
from conftest import wait_for
from tasks_app import add, app, big, boom, echo, lengths, mul, report_progress, tsum


def test_chain_passes_each_result_as_the_first_argument(worker):
    r = chain(add.s(2, 2), add.s(4)).delay()
    assert r.get(timeout=30) == 8
    tasks = app.job_tasks(r.job_id)
    # One job; the second step waited for the first on the server.
    assert [t["kind"] for t in tasks] == ["tasks_app.add", "tasks_app.add"]
    assert tasks[1]["after"] == [tasks[0]["key"]]
    assert r.id == tasks[1]["id"]
    # First argument, as in Celery: echo(previous, "b").
    r = chain(add.s(1, 1), echo.s("b", k=1)).delay()
    assert r.get(timeout=30) == {"args": [2, "b"], "kwargs": {"k": 1}}
    # res.parent walks back the chain, as in Celery.
    r = chain(add.s(2, 2), add.s(4), add.s(8))()
    assert r.get(timeout=30) == 16
    assert r.parent.get(timeout=30) == 8 and r.parent.parent.get(timeout=30) == 4
    assert r.parent.parent.parent is None
    c = chord(group(add.s(1, 1), add.s(2, 2)), tsum.s()).delay()
    assert c.get(timeout=30) == 6 and c.parent.get(timeout=30) == [2, 4]


def test_pipe_immutable_and_partial_chain(worker):
    assert (add.s(4, 4) | mul.s(8))().get(timeout=30) == 64
    # Arguments given when sending go to the first step (prepended).
    assert chain(add.s(4) | mul.s(8))(4).get(timeout=30) == 64
    # .si() runs after the previous step but ignores its result.
    r = chain(add.s(1, 1), add.si(10, 10), echo.s()).delay()
    assert r.get(timeout=30) == {"args": [20], "kwargs": {}}


def test_group_returns_the_list_in_order(worker):
    g = group(add.s(i, i) for i in range(10)).delay()
    assert isinstance(g, GroupResult)
    assert g.get(timeout=30) == [2 * i for i in range(10)]
    # A partial group: the call's argument is prepended to each member's.
    assert group(add.s(i) for i in range(5))(10).get(timeout=30) == [10, 11, 12, 13, 14]


def test_chord_body_gets_the_results_in_order(worker):
    r = chord(group(add.s(i, i) for i in range(10)), tsum.s()).delay()
    assert r.get(timeout=30) == 90
    tasks = app.job_tasks(r.job_id)
    assert len(tasks) == 11
    body = tasks[-1]
    assert body["kind"] == "tasks_app.tsum" and body["input"]["args"] == []
    # The body ran once, once every member had succeeded.
    assert len(body["history"] if "history" in body else app.get_task(body["id"])["history"]) == 1
    # Order is the group's, whatever order the members finished in.
    r = chord([echo.s(i) for i in range(6)], echo.s())
    out = r.delay().get(timeout=30)
    assert out == {"args": [[{"args": [i], "kwargs": {}} for i in range(6)]], "kwargs": {}}
    # Celery's other spellings.
    assert chord(add.s(i, i) for i in range(4))(tsum.s()).get(timeout=30) == 12
    assert (group(add.s(i, i) for i in range(4)) | tsum.s())().get(timeout=30) == 12


def test_nested_canvas(worker):
    # A group of chains and plain tasks, then a body.
    r = chord(group(chain(add.s(1, 1), mul.s(3)), add.s(5, 5), chain(add.s(0, 1), mul.s(10))), tsum.s()).delay()
    assert r.get(timeout=30) == 6 + 10 + 10
    # A chain through a group: every member gets the result, the next step the list.
    assert chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()).delay().get(timeout=30) == 7
    # A chain that ends in a group gives the group's results.
    g = chain(add.s(1, 1), group(mul.s(2), mul.s(3))).delay()
    assert isinstance(g, GroupResult)
    assert g.get(timeout=30) == [4, 6]
    # A group of chains, each the last step's result.
    assert group(chain(add.s(i, i), mul.s(i)) for i in range(4)).delay().get(timeout=30) == [0, 2, 8, 18]


def test_chord_with_a_failing_member_cancels_the_body(worker):
    r = chord(group(add.s(1, 1), boom.s(7), add.s(2, 2)), tsum.s()).delay()
    with pytest.raises(TaskFailed) as info:
        r.get(timeout=30)
    # The failure raised is the member's, with its remote type and traceback.
    assert info.value.type == "ValueError" and info.value.message == "boom 7"
    assert "inner_helper" in info.value.traceback
    body = app.get_task(r.id)
    assert body["state"] == "cancelled"
    assert body["error"]["kind"] == "dependency"
    # It never ran.
    assert not [h for h in body.get("history") or [] if h.get("outcome") != "cancelled"]
    assert r.state == "REVOKED"
    # propagate=False gives the failure instead of raising it.
    assert isinstance(r.get(timeout=30, propagate=False), TaskFailed)


def test_chain_failure_raises_the_failed_step(worker):
    r = chain(add.s(1, 1), boom.s(), add.s(1)).delay()
    with pytest.raises(TaskFailed, match="boom 2"):
        r.get(timeout=30)
    steps = app.job_tasks(r.job_id)
    assert [t["state"] for t in steps] == ["succeeded", "failed", "cancelled"]


def test_parents_beyond_the_lease_bound_are_paged(worker):
    # Two outputs of 600 KB pass the lease's 1 MiB bound for parents: the
    # worker reads them from GET /v1/workers/{id}/tasks/{task}/parents.
    r = chord(group(big.s(600_000), big.s(600_001)), lengths.s()).delay()
    assert r.get(timeout=60) == [600_000, 600_001]


def test_progress_is_visible_from_the_client(worker, tmp_path):
    gate = tmp_path / "gate"
    r = report_progress.delay(str(gate))
    p = wait_for(lambda: r.progress, 20, "the progress report")
    assert (p["done"], p["total"], p["message"]) == (3, 10, "three of ten")
    assert r.info["done"] == 3  # as in Celery: info is the progress while it runs
    gate.write_text("go")
    assert r.get(timeout=30) == "done"
    assert r.info == "done"


def test_canvas_from_asyncio(worker):
    import asyncio

    async def go():
        r = await chord(group(add.s(i, i) for i in range(5)), tsum.s()).delay_async()
        g = await chain(add.s(1, 1), group(mul.s(2), mul.s(3))).delay_async()
        return await r.get_async(timeout=30), await g.get_async(timeout=30)

    assert asyncio.run(go()) == (20, [4, 6])
