"""Worker processes dying, stopping and joining."""

import pytest

from conftest import wait_for
from tasks_app import app, slow_once


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_mid_task_finishes_once_elsewhere(start_worker, tmp_path):
    path = tmp_path / "marks"
    a = start_worker("doomed", "kill-q", "--concurrency", "1")
    r = slow_once.apply_async((str(path), 2.0), queue="kill-q")
    wait_for(lambda: any(l.startswith(f"start {a.pid}") for l in lines(path)), 30, "the task to start on the first worker")
    a.kill()  # SIGKILL: no goodbye, no result
    b = start_worker("survivor", "kill-q", "--concurrency", "1")
    assert r.get(timeout=60) == b.pid
    done = [l for l in lines(path) if l.startswith("done")]
    assert done == [f"done {b.pid}"]
    history = r.view()["history"]
    assert history[-1]["outcome"] == "succeeded" and history[-1]["worker_id"] == b.id
    assert history[0]["worker_id"] == a.id and history[0]["outcome"] != "succeeded"


def test_sigterm_lets_a_running_task_finish(start_worker, tmp_path):
    path = tmp_path / "marks"
    w = start_worker("graceful", "term-q", "--concurrency", "2", "--grace", "20")
    r = slow_once.apply_async((str(path), 1.0), queue="term-q")
    wait_for(lambda: any(l.startswith("start") for l in lines(path)), 30, "the task to start")
    w.term()
    assert w.wait(30) == 0
    assert r.get(timeout=5) == w.pid
    assert app.workers and next(x for x in app.workers() if x["id"] == w.id)["state"] == "left"


def test_sigterm_hands_back_what_overruns_the_grace(start_worker, tmp_path):
    path = tmp_path / "marks"
    w = start_worker("impatient", "grace-q", "--concurrency", "1", "--grace", "0.3")
    r = slow_once.apply_async((str(path), 30.0), {"later_seconds": 0.1}, queue="grace-q")
    wait_for(lambda: any(l.startswith("start") for l in lines(path)), 30, "the task to start")
    w.term()
    assert w.wait(30) == 0
    assert f"handed back {w.pid}" in lines(path)
    # Handed back at once (not after the lease TTL), for the next worker to run.
    assert r.brigade_state in ("queued", "scheduled")
    w2 = start_worker("patient", "grace-q", "--concurrency", "2")
    assert r.get(timeout=30) == w2.pid
    assert [h["worker_id"] for h in r.view()["history"]] == [w.id, w2.id]


def test_embedded_worker(server):
    from tasks_app import add

    w = app.worker(concurrency=2, queues=["embedded-q"], name="embedded").start()
    try:
        assert add.apply_async((5, 6), queue="embedded-q").get(timeout=30) == 11
    finally:
        w.stop()
    assert w.stopped.is_set()
    assert next(x for x in app.workers() if x["id"] == w.id)["state"] == "left"


@pytest.mark.parametrize("bad", ["nomodule:app", "tasks_app:nothing"])
def test_worker_cli_rejects_a_bad_app(bad):
    import subprocess
    import sys

    from conftest import HERE

    out = subprocess.run([sys.executable, "-m", "brigade", "worker", bad], cwd=HERE, capture_output=True, text=True)
    assert out.returncode != 0


def test_server_away_results_are_kept_and_sent(tmp_path):
    """The server dies while a task runs; the result is kept and recorded once it is back."""
    from conftest import Server, WorkerProc

    # A lease TTL far longer than the outage: the task stays this worker's.
    s = Server(tmp_path, lease_ttl_ms=30_000)
    w = None
    try:
        w = WorkerProc(s, tmp_path, "steadfast", "away-q", "--concurrency", "2")
        client = brigade_client(s.url)
        job = client.submit({"tasks": [slow_once.spec((str(tmp_path / "marks"), 1.0), None, queue="away-q")]})
        path = tmp_path / "marks"
        wait_for(lambda: any(l.startswith("start") for l in lines(path)), 30, "the task to start")
        s.kill()  # SIGKILL: the server is gone while the task runs and finishes
        wait_for(lambda: any(l.startswith("done") for l in lines(path)), 30, "the task to finish")
        s.start()
        view = client.wait_job(job.id, timeout=60)
        assert view["state"] == "succeeded"
        task = client.get_task(job.task_ids[0])
        assert task["output"] == w.pid
        assert [h["outcome"] for h in task["history"]] == ["succeeded"]
        assert [l for l in lines(path) if l.startswith("done")] == [f"done {w.pid}"]
        assert "cannot report" in w.output()
    finally:
        if w is not None:
            w.stop()
        s.stop()


def brigade_client(url):
    import brigade

    return brigade.Client(url)


def test_a_forgotten_worker_joins_again(tmp_path):
    """A server that does not know the worker (a fresh database here) answers 404: it rejoins."""
    from conftest import Server, WorkerProc

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    s = Server(first)
    w = None
    try:
        w = WorkerProc(s, tmp_path, "rejoiner", "rejoin-q", "--concurrency", "2")
        old_id = w.id
        s.kill()
        s = Server(second, port=s.port)  # same address, no memory of the worker
        client = brigade_client(s.url)
        new = wait_for(
            lambda: next((x for x in client.workers() if x["name"] == "rejoiner" and x["id"] != old_id), None),
            30,
            "the worker to join the new server",
        )
        job = client.submit({"tasks": [slow_once.spec((str(tmp_path / "marks"), 0.0), None, queue="rejoin-q")]})
        client.wait_job(job.id, timeout=30)
        assert client.get_task(job.task_ids[0])["worker_id"] == new["id"]
        assert "joining again" in w.output()
    finally:
        if w is not None:
            w.stop()
        s.stop()


def test_leases_only_for_free_slots(start_worker, tmp_path):
    """A worker of 2 slots never runs more than 2 tasks at once, however many are queued."""
    import brigade

    from tasks_app import tracked

    start_worker("two-slots", "slots-q", "--concurrency", "2")
    path = tmp_path / "marks"
    client = brigade.Client(app.url)
    job = client.submit({"tasks": [tracked.spec((str(path), 0.2), None, queue="slots-q") for _ in range(8)]})
    assert client.wait_job(job.id, timeout=60)["state"] == "succeeded"
    events = sorted((float(t), int(d)) for t, d in (line.split() for line in lines(path)))
    running, most = 0, 0
    for _, d in events:
        running += d
        most = max(most, running)
    assert len(events) == 16
    assert most == 2  # both slots used, never more
