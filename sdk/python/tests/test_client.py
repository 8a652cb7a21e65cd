"""The REST client: jobs as dicts and builders, waiting, tasks, events."""

import threading

import pytest

import brigade
from brigade import Brigade, JobBuilder


def test_env_configuration(monkeypatch):
    monkeypatch.setenv("BRIGADE_SERVER", "http://a:1,http://b:2/")
    monkeypatch.setenv("BRIGADE_TOKEN", "secret")
    c = Brigade()
    assert c.urls == ["http://a:1", "http://b:2"] and c.token == "secret"
    assert Brigade("http://x:3", token="t").urls == ["http://x:3"]


def test_submit_dict_wait_and_tasks(worker, app):
    job = app.submit({"name": "py-dict", "tasks": [{"kind": "tasks_app.add", "input": {"args": [1, 2], "kwargs": {}}}]})
    assert job.state in ("queued", "running", "succeeded")
    job.wait(timeout=30)
    assert job.state == "succeeded"
    tasks = job.tasks()
    assert [t["output"] for t in tasks] == [3]
    assert app.get_job(job.id)["name"] == "py-dict"
    assert any(j["id"] == job.id for j in app.jobs(name="py-dict"))


def test_builder_and_results_in_order(worker, app):
    b = JobBuilder(name="py-built", labels={"team": "py"})
    for i in range(5):
        b.add("tasks_app.add", {"args": [i, 10], "kwargs": {}}, priority=i)
    job = app.submit(b).wait(timeout=30)
    assert job.results() == [10, 11, 12, 13, 14]
    assert job.progress["succeeded"] == 5


def test_bad_job_is_a_clear_api_error(app):
    with pytest.raises(brigade.ApiError) as info:
        app.submit({"tasks": [{"kind": "Not A Kind"}]})
    assert info.value.status == 422
    assert "tasks[0].kind" in str(info.value)


def test_unknown_job_is_not_found(app):
    with pytest.raises(brigade.NotFound):
        app.get_job("no-such-job")


def test_cancel_job(app):
    job = app.submit([{"kind": "tasks_app.add", "input": {"args": [1, 1]}, "queue": "nobody-serves-this"}])
    job.cancel()
    assert job.state == "cancelled"


def test_events_iterator(worker, app):
    from tasks_app import add

    r = add.apply_async((2, 2), countdown=1.0)
    seen = []

    def follow():
        for e in app.events(job=r.job_id):
            seen.append(e["type"])
            if e["type"] == "job.finished":
                return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    t.join(30)
    assert "job.finished" in seen
    assert "task.succeeded" in seen


def test_async_client(worker, server):
    import asyncio

    async def main():
        async with brigade.AsyncBrigade(server.url) as c:
            job = await c.submit({"tasks": [{"kind": "tasks_app.add", "input": {"args": [3, 4], "kwargs": {}}}]})
            await job.wait(timeout=30)
            return await job.results()

    assert asyncio.run(main()) == [7]


def test_the_httpx_paths_work_too(server, tmp_session, monkeypatch):
    """BRIGADE_HTTPX=1 (or a proxy in the environment) puts the client and the
    worker on httpx instead of the SDK's lean HTTP client."""
    from conftest import WorkerProc

    from brigade import _http

    monkeypatch.setenv("BRIGADE_HTTPX", "1")
    w = WorkerProc(server, tmp_session, "httpx-worker", "httpx-q", "--concurrency", "2", env={"BRIGADE_HTTPX": "1"})
    try:
        c = Brigade(server.url)
        assert isinstance(c.conn, _http.Conn)
        job = c.submit([{"kind": "tasks_app.add", "input": {"args": [20, 1]}, "queue": "httpx-q"}]).wait(timeout=30)
        assert job.results() == [21]
        assert job.tasks()[0]["worker_id"] == w.id
    finally:
        w.stop()


def test_limits_hold_tasks_to_their_budget(worker, app):
    from tasks_app import sleepy

    view = app.set_limit("py:slow", concurrency=1)
    assert view["key"] == "py:slow" and view["concurrency"] == 1
    rs = [sleepy.apply_async((0.2,), limits=["py:slow"]) for _ in range(3)]
    for r in rs:
        r.get(timeout=30)
    spans = sorted((t["started_at"], t["finished_at"]) for t in (app.get_task(r.id) for r in rs))
    # One at a time: each started once the one before had finished.
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, spans
    assert app.get_task(rs[0].id)["limits"] == ["py:slow"]
    assert any(lim["key"] == "py:slow" for lim in app.limits())
    app.delete_limit("py:slow")
    with pytest.raises(brigade.NotFound):
        app.limit("py:slow")
    with pytest.raises(brigade.ApiError) as info:
        app.set_limit("py:bad", burst=2)
    assert info.value.status == 422 and "burst" in str(info.value)


def test_fair_key_goes_on_the_task(app):
    from tasks_app import add

    spec = add.spec((1, 2), fair_key="tenant:7", limits=["k"])
    assert spec["fair_key"] == "tenant:7" and spec["limits"] == ["k"]


def test_traceparent_rides_from_submit_to_the_task_context(app, start_worker):
    """A submit's ``traceparent`` is the job's trace context: the lease carries it
    and the worker's ``ctx.traceparent`` is it; a job submitted without one has none."""
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    start_worker("py-traced", "traced")
    task = {"kind": "tasks_app.trace_context", "queue": "traced", "input": {"args": [], "kwargs": {}}}
    traced = app.submit({"tasks": [task]}, traceparent=tp)
    plain = app.submit({"tasks": [task]})
    assert traced.wait(timeout=30).results() == [tp]
    assert plain.wait(timeout=30).results() == [None]
