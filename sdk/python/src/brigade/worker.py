"""The worker: joins, leases for its free slots (long-poll), runs tasks —
plain functions on threads, ``async def`` on an event loop of their own —
heartbeats with its load, reports results in batches (kept while the server
is away), ships log lines and progress, and on SIGTERM finishes what runs within the grace
period, hands the rest back and leaves.

The protocol it speaks is described in ``docs/protocol.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import _http, _wire
from ._fasthttp import FastConn
from .app import Context, Retry
from .errors import ApiError, Unreachable

if TYPE_CHECKING:
    from .app import Brigade, Task

log = logging.getLogger("brigade.worker")

VERSION = "python-0.1.0"
# Most results in one report, most lines in one log request.
MAX_BATCH = 1000
MAX_LOG_BATCH = 5000
# A busy worker (more than half its slots taken) waits this long for more
# slots to free before leasing, so it leases in batches, not one by one.
LEASE_GATHER = 0.002
# After the grace period, how long handed-back tasks get to notice and return.
HANDBACK_WAIT = 1.0
# Where results ride on leases, how long the reporter leaves them for the next lease.
RESULTS_RIDE_WAIT = 0.01
_STOP = object()


class _Run:
    """One attempt this worker holds."""

    __slots__ = ("task", "attempt", "ctx", "future", "abandoned", "done", "timer", "started", "wrote_logs", "kind")

    def __init__(self, task: dict[str, Any], ctx: Context):
        self.task = task
        self.kind = task["kind"]
        self.attempt = int(task["attempt"])
        self.ctx = ctx
        self.future: concurrent.futures.Future[Any] | None = None
        # Told to stop by the server, or handed back: its result is not wanted.
        self.abandoned = False
        # Its result is decided (reported or being reported); the slot may
        # still be held by a thread that has not returned.
        self.done = False
        self.timer: asyncio.TimerHandle | None = None
        self.started = time.monotonic()
        self.wrote_logs = False


def _load(capacity: int, running: int) -> dict[str, Any]:
    cpu = 0.0
    try:
        cpu = min(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    except OSError:
        pass
    mem = 0.0
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f if ":" in line}
        if info.get("MemTotal"):
            mem = 1.0 - info.get("MemAvailable", info["MemTotal"]) / info["MemTotal"]
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "memory": max(0.0, mem), "running": running, "capacity": capacity}


class Worker:
    """Runs an app's tasks. ``run()`` blocks (SIGTERM and Ctrl-C stop it
    gracefully); ``start()`` runs it on a thread and ``stop()`` ends it."""

    def __init__(
        self,
        app: Brigade,
        concurrency: int = 8,
        queues: Iterable[str] | None = None,
        labels: dict[str, str] | None = None,
        name: str | None = None,
        grace: float = 30.0,
        lease_wait: float = 30.0,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.app = app
        self.capacity = min(int(concurrency), 10_000)
        self.queues = [q for q in (queues or ["default"]) if q]
        self.labels = dict(labels or {})
        self.name = name or socket.gethostname()
        self.grace = grace
        self.lease_wait = max(0.0, min(60.0, lease_wait))
        self.id: str | None = None
        self.joined = threading.Event()
        self.stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._hurry = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # --- public -----------------------------------------------------------
    def run(self) -> None:
        """Join and work until SIGTERM/SIGINT (or the server drains this worker)."""
        asyncio.run(self._main(install_signals=threading.current_thread() is threading.main_thread()))
        if self._error is not None:
            raise self._error

    def start(self) -> Worker:
        """Run on a background thread; returns once joined."""
        self._thread = threading.Thread(target=self._thread_main, name="brigade-worker", daemon=True)
        self._thread.start()
        while not self.joined.wait(0.05):
            if self.stopped.is_set():
                if self._error is not None:
                    raise self._error
                break
        return self

    def stop(self, wait: bool = True, grace: float | None = None) -> None:
        """Stop gracefully (``grace`` seconds for running tasks, default the worker's)."""
        if grace is not None:
            self.grace = grace
        loop, ev = self._loop, self._stop_requested
        if loop is not None and ev is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass
        if wait and self._thread is not None:
            self._thread.join()

    # --- main -------------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main(install_signals=False))
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._error = e
        finally:
            self.stopped.set()

    async def _main(self, install_signals: bool) -> None:
        try:
            await self._serve(install_signals)
        except BaseException as e:
            self._error = self._error or e
            raise
        finally:
            self.stopped.set()

    async def _serve(self, install_signals: bool) -> None:
        if not self.app.tasks:
            raise ValueError("the app has no tasks: register some with @app.task")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_requested = asyncio.Event()
        if _http.use_httpx():
            self.conn: _http.AsyncConn | FastConn = _http.AsyncConn(self.app.urls, self.app.token, timeout=30.0)
        else:
            self.conn = FastConn(self.app.urls, self.app.token, timeout=30.0)
        self.running: dict[str, _Run] = {}
        self.busy = 0  # slots held (including by threads past their timeout)
        self.slot_freed = asyncio.Event()
        self.pending: list[dict[str, Any]] = []
        self.results_ready = asyncio.Event()
        self.unreported: set[str] = set()
        self.logs: deque[tuple[str, int, str]] = deque()
        # The latest progress report of each task (task threads write it).
        self.progress: dict[str, dict[str, Any]] = {}
        self.progress_lock = threading.Lock()
        self.reading: set[asyncio.Future[None]] = set()
        self.log_lock = asyncio.Lock()
        self.rejoin_lock = asyncio.Lock()
        self.idle_polling = False
        self.lease_in_flight = False
        self.keepalive = False
        self.leasing = True
        self.results_in_lease: bool | None = None  # unknown until a lease reply says
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal)

        await self._join()
        self.joined.set()
        # Threads for plain functions, one event loop for async ones.
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._thread_loop, name=f"brigade-task-{i}", daemon=True)
            for i in range(self.capacity)
        ]
        for t in self.threads:
            t.start()
        self.task_loop = asyncio.new_event_loop()
        self.task_loop_thread = threading.Thread(target=self._run_task_loop, name="brigade-async-tasks", daemon=True)
        self.task_loop_thread.start()

        lease = asyncio.create_task(self._lease_loop())
        beats = asyncio.create_task(self._heartbeat_loop())
        reporter = asyncio.create_task(self._report_loop())
        shipper = asyncio.create_task(self._log_loop())
        stop = asyncio.create_task(self._stop_requested.wait())
        await asyncio.wait([lease, stop], return_when=asyncio.FIRST_COMPLETED)
        self.leasing = False
        lease.cancel()
        stop.cancel()
        log.info("stopping: no more leases; %d running task(s) get %.0f s to finish", self._live(), self.grace)
        deadline = time.monotonic() + (0 if self._hurry else self.grace)
        while self._live() and time.monotonic() < deadline and not self._hurry:
            self.slot_freed.clear()
            try:
                await asyncio.wait_for(self.slot_freed.wait(), timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                pass
        left = [r for r in self.running.values() if not r.done]
        if left:
            log.warning("grace period over: handing %d task(s) back", len(left))
            for r in left:
                self._abandon(r)
            # Code that watches ctx.cancelled (or a cancelled coroutine) gets
            # a moment to return before the process goes.
            t_end = time.monotonic() + HANDBACK_WAIT
            while self.busy > 0 and time.monotonic() < t_end:
                self.slot_freed.clear()
                try:
                    await asyncio.wait_for(self.slot_freed.wait(), timeout=max(0.0, t_end - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
        beats.cancel()
        # Every result reaches the server (or 30 s pass) before leaving.
        t_end = time.monotonic() + 30
        while (self.pending or self.unreported) and time.monotonic() < t_end:
            self.results_ready.set()
            await asyncio.sleep(0.02)
        reporter.cancel()
        await self._ship_logs()
        shipper.cancel()
        try:
            if self.id:
                await self.conn.call("DELETE", f"/v1/workers/{self.id}", retry=False)
                log.info("left (worker %s)", self.id)
        except Exception as e:  # noqa: BLE001 - the server will notice
            log.warning("could not leave (%s); the server will notice the silence", e)
        for _ in self.threads:
            self.jobs.put(_STOP)
        self.task_loop.call_soon_threadsafe(self.task_loop.stop)
        await self.conn.close()

    def _on_signal(self) -> None:
        assert self._stop_requested is not None
        if self._stop_requested.is_set():
            log.warning("second signal: handing running tasks back now")
            self._hurry = True
            self.slot_freed.set()
        self._stop_requested.set()

    def _live(self) -> int:
        return sum(1 for r in self.running.values() if not r.done)

    # --- join -------------------------------------------------------------
    def _join_body(self) -> dict[str, Any]:
        return {
            "name": self.name[:256],
            "hostname": socket.gethostname()[:256],
            "queues": self.queues,
            "kinds": sorted(self.app.tasks),
            "labels": self.labels,
            "capacity": self.capacity,
            "version": VERSION,
        }

    async def _join(self) -> None:
        delay = 0.2
        while True:
            try:
                joined = await self.conn.call("POST", "/v1/workers", json=self._join_body())
                break
            except (Unreachable, ApiError) as e:
                if isinstance(e, ApiError) and not e.transient:
                    raise
                if self._stop_requested is not None and self._stop_requested.is_set():
                    raise
                log.warning("cannot join yet (%s); retrying in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        self.id = joined["id"]
        self.heartbeat_every = max(0.1, joined.get("heartbeat_ms", 5000) / 1000)
        self.keepalive = bool(joined.get("long_poll_keepalive", False))
        if joined.get("results_on_lease"):
            # The server says it takes results on the lease: no need to find out.
            self.results_in_lease = True
        log.info("joined as %s (%s), %d slots, kinds %s", self.id, self.name, self.capacity, ", ".join(sorted(self.app.tasks)))

    async def _rejoin(self, old: str | None) -> None:
        async with self.rejoin_lock:
            if self.id != old:
                return  # another loop already did
            log.warning("the server does not know worker %s any more; joining again", old)
            await self._join()

    # --- leasing ----------------------------------------------------------
    async def _lease_loop(self) -> None:
        backoff = 0.1
        while self.leasing:
            while self.busy >= self.capacity:
                self.slot_freed.clear()
                await self.slot_freed.wait()
            if self.busy * 2 > self.capacity:
                await asyncio.sleep(LEASE_GATHER)
            n = min(self.capacity - self.busy, 1000)
            if n <= 0:
                continue
            worker_id = self.id
            self.idle_polling = self.busy == 0
            self.busy += n  # reserved for what the lease brings
            body: dict[str, Any] = {"max": n, "wait_ms": int(self.lease_wait * 1000)}
            carried: list[dict[str, Any]] = []
            if self.pending and self.results_in_lease is not False:
                # Results ride on the lease (one request a round instead of two)
                # where the server takes them; until it is known to, ask with
                # wait_ms 0, so a server that ignores them answers at once.
                carried = self.pending[:MAX_BATCH]
                del self.pending[: len(carried)]
                body["results"] = carried
                if self.results_in_lease is None:
                    body["wait_ms"] = 0
            self.lease_in_flight = True
            try:
                resp = await self.conn.request(
                    "POST", f"/v1/workers/{worker_id}/lease", json=body, read_timeout=self.lease_wait + 15, retry=False
                )
                reply = _http.body(resp)
            except BaseException as e:
                self.lease_in_flight = False
                self.busy -= n
                self.idle_polling = False
                if carried:
                    # Not known to be recorded: report them again (a repeat is harmless).
                    self.pending[:0] = carried
                    self.results_ready.set()
                if isinstance(e, ApiError) and e.status == 404:
                    await self._rejoin(worker_id)
                    continue
                if isinstance(e, (ApiError, Unreachable)):
                    if carried:
                        log.warning(
                            "cannot report %d result(s) with the lease (%s); keeping them, retrying in %.1f s",
                            len(carried), e, backoff,
                        )
                    else:
                        log.warning("lease failed (%s); retrying in %.1f s", e, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(5.0, backoff * 2)
                    continue
                raise
            self.lease_in_flight = False
            self.idle_polling = False
            backoff = 0.1
            if carried:
                taken = reply.get("results")
                if isinstance(taken, dict):
                    self.results_in_lease = True
                    self._answered(carried)
                    self._log_rejected(taken)
                else:
                    if self.results_in_lease is None:
                        log.info("this server does not take results on the lease; reporting them apart")
                    self.results_in_lease = False
                    self.pending[:0] = carried
                    self.results_ready.set()
            tasks = reply.get("tasks") or []
            self.busy -= n - min(n, len(tasks))
            for t in tasks[:n]:
                self._start(t)
            for t in tasks[n:]:
                log.error("the server sent more tasks than asked for: %s", t.get("id"))
            if reply.get("drain"):
                log.info("the server asked this worker to drain")
                assert self._stop_requested is not None
                self._stop_requested.set()
                return

    # --- running ----------------------------------------------------------
    def _start(self, t: dict[str, Any]) -> None:
        task_id = t["id"]
        ctx = Context(
            task_id=task_id,
            job_id=t.get("job_id", ""),
            kind=t["kind"],
            attempt=int(t.get("attempt", 1)),
            timeout=(t.get("timeout_ms") or 0) / 1000 or None,
            traceparent=t.get("traceparent"),
        )
        run = _Run(t, ctx)

        def write(line: str, _run: _Run = run) -> None:
            _run.wrote_logs = True
            self.logs.append((task_id, _run.attempt, line[:4096]))

        ctx._log = write

        def progress(done: int, total: int | None, message: str | None, _run: _Run = run) -> None:
            report: dict[str, Any] = {"task_id": task_id, "attempt": _run.attempt, "done": done}
            if total is not None:
                report["total"] = total
            if message:
                report["message"] = message
            with self.progress_lock:
                self.progress[task_id] = report

        ctx._progress = progress
        old = self.running.get(task_id)
        if old is not None:
            # A new attempt of a task we still hold (its old one was lost): the old one is not wanted.
            self._abandon(old)
        self.running[task_id] = run
        task = self.app.tasks.get(t["kind"])
        if task is None:
            self._finish(run, self._failure("unknown_kind", f"this worker has no handler for {t['kind']!r}", True))
            return
        ctx.task = task
        if ctx.timeout:
            run.timer = self._loop.call_later(ctx.timeout, self._timed_out, run)  # type: ignore[union-attr]
        inp = t.get("input")
        if t.get("parents_truncated") and isinstance(inp, dict) and _wire.PREPEND in inp:
            # The lease carried the parents' ids only: read their outputs first.
            reading = asyncio.ensure_future(self._read_parents(task, run))
            self.reading.add(reading)  # a reference, so the task is not collected
            reading.add_done_callback(self.reading.discard)
            return
        self._dispatch(task, run)

    async def _read_parents(self, task: Task, run: _Run) -> None:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        try:
            while True:
                params: dict[str, Any] = {"limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                page = await self.conn.call(
                    "GET", f"/v1/workers/{self.id}/tasks/{run.ctx.task_id}/parents", params=params
                )
                items.extend(page.get("items") or [])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        except (ApiError, Unreachable) as e:
            if run.done:
                self._release()
            else:
                self._finish(run, self._failure("other", f"cannot read the task's parents: {e}", True))
            return
        if run.done:
            self._release()  # cancelled or timed out meanwhile: the slot was never used
            return
        run.task["parents"] = items
        self._dispatch(task, run)

    def _dispatch(self, task: Task, run: _Run) -> None:
        if task.is_async:
            run.future = asyncio.run_coroutine_threadsafe(self._run_async(task, run), self.task_loop)
            run.future.add_done_callback(functools.partial(self._async_finished, run))
        else:
            self.jobs.put((task, run))

    def _async_finished(self, run: _Run, fut: concurrent.futures.Future[Any]) -> None:
        # On the task loop's thread: hand over to the worker's loop.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._async_done, run, fut)
            except RuntimeError:
                pass

    def _run_task_loop(self) -> None:
        asyncio.set_event_loop(self.task_loop)
        self.task_loop.run_forever()

    def _thread_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            item = self.jobs.get()
            if item is _STOP:
                return
            task, run = item
            outcome = self._call(task, run)
            try:
                loop.call_soon_threadsafe(self._thread_done, run, outcome)
            except RuntimeError:
                return  # the worker is gone

    def _args(self, task: Task, run: _Run) -> tuple[list[Any], dict[str, Any]] | dict[str, Any]:
        try:
            args, kwargs = _wire.decode_input(run.task.get("input"), run.task.get("parents") or [])
        except ValueError as e:
            return self._failure("bad_input", f"ValueError: {e}", False)
        if task.bind:
            args = [run.ctx, *args]
        try:
            inspect.signature(task.fn).bind(*args, **kwargs)
        except TypeError as e:
            return self._failure("bad_input", f"TypeError: {e}", False)
        except ValueError:
            pass  # no signature to check (a builtin)
        return args, kwargs

    def _call(self, task: Task, run: _Run) -> dict[str, Any]:
        prepared = self._args(task, run)
        if isinstance(prepared, dict):
            return prepared
        args, kwargs = prepared
        try:
            value = task.fn(*args, **kwargs)
        except Retry as r:
            return self._retry(r)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            return self._failure("handler", _wire.encode_exception(e), True)
        return self._success(value)

    async def _run_async(self, task: Task, run: _Run) -> dict[str, Any]:
        prepared = self._args(task, run)
        if isinstance(prepared, dict):
            return prepared
        args, kwargs = prepared
        try:
            value = await task.fn(*args, **kwargs)
        except Retry as r:
            return self._retry(r)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            return self._failure("handler", _wire.encode_exception(e), True)
        return self._success(value)

    def _success(self, value: Any) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            return self._failure(
                "handler", f"TypeError: the return value is not JSON-serialisable ({type(value).__name__}: {e})", False
            )
        return {"outcome": "succeeded", "output": value}

    def _failure(self, kind: str, message: str, retryable: bool) -> dict[str, Any]:
        return {"outcome": "failed", "error": {"kind": kind, "message": message}, "retryable": retryable}

    def _retry(self, r: Retry) -> dict[str, Any]:
        exc = r.exc if r.exc is not None else r
        out = self._failure("handler", _wire.encode_exception(exc), True)
        if r.countdown is not None:
            # Read by servers that support it; others use the task's backoff.
            out["retry_in_ms"] = max(0, int(r.countdown * 1000))
        return out

    def _thread_done(self, run: _Run, outcome: dict[str, Any]) -> None:
        self._release()
        if self.running.get(run.ctx.task_id) is run and run.done:
            del self.running[run.ctx.task_id]
        self._finish(run, outcome, slot=False)

    def _async_done(self, run: _Run, fut: concurrent.futures.Future[Any]) -> None:
        self._release()
        if self.running.get(run.ctx.task_id) is run and run.done:
            del self.running[run.ctx.task_id]
        if fut.cancelled():
            self._finish(run, None, slot=False)
            return
        exc = fut.exception()
        if exc is not None:
            outcome = self._failure("crash", _wire.encode_exception(exc), True)
        else:
            outcome = fut.result()
        self._finish(run, outcome, slot=False)

    def _release(self) -> None:
        self.busy -= 1
        self.slot_freed.set()

    def _finish(self, run: _Run, outcome: dict[str, Any] | None, slot: bool = True) -> None:
        """Record the attempt's result (once); ``slot``: free its slot now too."""
        if slot:
            self._release()
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        if run.done:
            return
        run.done = True
        if slot and self.running.get(run.ctx.task_id) is run:
            del self.running[run.ctx.task_id]
        elif not slot and self.running.get(run.ctx.task_id) is run:
            del self.running[run.ctx.task_id]
        if run.abandoned or outcome is None:
            return
        result = {
            "task_id": run.ctx.task_id,
            "attempt": run.attempt,
            "duration_ms": int((time.monotonic() - run.started) * 1000),
            **outcome,
        }
        result.setdefault("output", None)
        self.unreported.add(run.ctx.task_id)
        self.pending.append(result)
        self.results_ready.set()

    def _timed_out(self, run: _Run) -> None:
        run.timer = None
        if run.done:
            return
        run.ctx.cancel_event.set()
        ms = run.task.get("timeout_ms")
        outcome = self._failure("timeout", f"ran past its timeout of {ms} ms", True)
        if run.future is not None:
            run.future.cancel()
        # The result is decided now; a thread keeps its slot until its function returns.
        self._decide(run, outcome)

    def _abandon(self, run: _Run) -> None:
        if run.done:
            return
        run.abandoned = True
        run.ctx.cancel_event.set()
        if run.future is not None:
            run.future.cancel()
        self._decide(run, None)

    def _decide(self, run: _Run, outcome: dict[str, Any] | None) -> None:
        """The attempt is over for the server (timeout, cancel, hand-back) while
        its code may still run: report now, keep the slot until it returns."""
        if run.done:
            return
        run.done = True
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        if run.abandoned or outcome is None:
            return
        result = {
            "task_id": run.ctx.task_id,
            "attempt": run.attempt,
            "duration_ms": int((time.monotonic() - run.started) * 1000),
            "output": None,
            **outcome,
        }
        self.unreported.add(run.ctx.task_id)
        self.pending.append(result)
        self.results_ready.set()

    # --- heartbeats -------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_every)
            live = [tid for tid, r in self.running.items() if not r.done]
            if not live and not self.unreported and self.idle_polling and self.keepalive:
                continue  # the held long-poll counts as this idle worker's heartbeat
            ids = list(dict.fromkeys(live + list(self.unreported)))
            worker_id = self.id
            try:
                reply = await self.conn.call(
                    "POST",
                    f"/v1/workers/{worker_id}/heartbeat",
                    json={"running": ids, "load": _load(self.capacity, len(live))},
                    retry=False,
                )
            except ApiError as e:
                if e.status == 404:
                    await self._rejoin(worker_id)
                else:
                    log.warning("heartbeat refused: %s", e)
                continue
            except Unreachable as e:
                log.warning("heartbeat failed: %s", e)
                continue
            for tid in reply.get("cancel") or []:
                # Also "not yours": ids of tasks this worker does not hold are ignored.
                r = self.running.get(tid)
                if r is not None and not r.done:
                    log.info("task %s cancelled by the server", tid)
                    self._abandon(r)
            if reply.get("drain"):
                log.info("the server asked this worker to drain")
                assert self._stop_requested is not None
                self._stop_requested.set()

    # --- results and logs -------------------------------------------------
    async def _report_loop(self) -> None:
        backoff = 0.1
        while True:
            if not self.pending:
                self.results_ready.clear()
                await self.results_ready.wait()
                continue
            if self.results_in_lease and self.leasing and not self.lease_in_flight:
                # The lease loop is about to lease (a slot just freed): the
                # lease carries them; what it leaves behind is reported apart.
                # A lease in flight (a long-poll) carries nothing: report now.
                await asyncio.sleep(RESULTS_RIDE_WAIT)
                if not self.pending:
                    continue
            batch = self.pending[:MAX_BATCH]
            del self.pending[: len(batch)]
            if any(self._wrote_logs(r["task_id"]) for r in batch) or self.logs:
                await self._ship_logs()  # an attempt's lines reach the server before its result
            worker_id = self.id
            try:
                reply = await self.conn.call(
                    "POST", f"/v1/workers/{worker_id}/results", json={"results": batch}, retry=False
                )
            except (ApiError, Unreachable) as e:
                if isinstance(e, ApiError) and e.status == 404:
                    # Forgotten: its tasks went back to the queue; these results are for attempts no longer current.
                    self._answered(batch)
                    await self._rejoin(worker_id)
                    continue
                if isinstance(e, Unreachable) or e.transient:
                    log.warning("cannot report %d result(s) (%s); keeping them, retrying in %.1f s", len(batch), e, backoff)
                    self.pending[:0] = batch
                    await asyncio.sleep(backoff)
                    backoff = min(5.0, backoff * 2)
                    continue
                log.error("the server refused %d result(s): %s; dropping them", len(batch), e)
                self._answered(batch)
                continue
            backoff = 0.1
            self._answered(batch)
            self._log_rejected(reply)

    def _log_rejected(self, reply: dict[str, Any]) -> None:
        for r in reply.get("rejected") or []:
            # `code` is machine-readable where the server sends it; `reason` is for humans.
            log.info(
                "result of %s not recorded: %s%s",
                r.get("task_id"),
                r.get("reason"),
                f" ({r['code']})" if r.get("code") else "",
            )

    def _wrote_logs(self, task_id: str) -> bool:
        return bool(self.logs) and any(t == task_id for t, _, _ in list(self.logs))

    def _answered(self, batch: list[dict[str, Any]]) -> None:
        for r in batch:
            self.unreported.discard(r["task_id"])

    async def _log_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            if self.logs:
                await self._ship_logs()
            if self.progress:
                await self._ship_progress()

    async def _ship_progress(self) -> None:
        """The latest report of each task still running, in one request."""
        with self.progress_lock:
            reports, self.progress = self.progress, {}
        batch = [
            r for r in reports.values()
            if (run := self.running.get(r["task_id"])) is not None and not run.done and run.attempt == r["attempt"]
        ]
        if not batch:
            return
        try:
            reply = await self.conn.call("POST", f"/v1/workers/{self.id}/progress", json={"progress": batch}, retry=False)
        except (ApiError, Unreachable) as e:
            # Progress is for people: a newer report will follow, this one is not kept.
            log.info("progress not reported: %s", e)
            return
        for r in reply.get("rejected") or []:
            log.debug("progress of %s not recorded: %s", r.get("task_id"), r.get("reason"))

    async def _ship_logs(self) -> None:
        async with self.log_lock:
            while self.logs:
                batches: dict[tuple[str, int], list[str]] = {}
                n = 0
                while self.logs and n < MAX_LOG_BATCH:
                    tid, attempt, line = self.logs.popleft()
                    batches.setdefault((tid, attempt), []).append(line)
                    n += 1
                body = {"logs": [{"task_id": t, "attempt": a, "lines": ls} for (t, a), ls in batches.items()]}
                for i in range(3):
                    try:
                        await self.conn.call("POST", f"/v1/workers/{self.id}/logs", json=body, retry=False)
                        break
                    except (ApiError, Unreachable) as e:
                        if isinstance(e, ApiError) and not e.transient:
                            log.warning("the server refused %d log line(s): %s", n, e)
                            break
                        await asyncio.sleep(0.1 * 2**i)
