"""The Celery-shaped surface: :class:`Brigade` (client and task registry),
:class:`Task`, :class:`Signature`, :class:`AsyncResult`, :func:`group`."""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import inspect
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import _wire
from .client import AsyncClient, Client, JobBuilder
from .errors import TaskFailed, TaskRevoked
from .errors import TimeoutError as WaitTimeout

if TYPE_CHECKING:
    from .worker import Worker

# brigade task state -> the Celery state name code ported from Celery expects.
CELERY_STATES = {
    "queued": "PENDING",
    "scheduled": "PENDING",
    "running": "STARTED",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "cancelled": "REVOKED",
}
# Celery task options that have no meaning here (acks are always late, results
# always kept, every exception retried): accepted, with a warning, so that a
# ported app imports.
CELERY_NOOP_OPTIONS = frozenset(
    {"acks_late", "ignore_result", "serializer", "track_started", "rate_limit", "autoretry_for",
     "retry_backoff", "retry_backoff_max", "retry_jitter", "reject_on_worker_lost", "typing", "base"}
)
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
FINISHED = ("succeeded", "failed", "cancelled")


class Retry(Exception):
    """Raised (``raise ctx.retry(...)``) to end this attempt and run the task again.

    ``countdown`` (seconds) is sent with the result as ``retry_in_ms``; a
    server that does not read it waits out the task's backoff instead (which
    the task's ``retry_delay`` sets).
    """

    def __init__(self, exc: BaseException | None = None, countdown: float | None = None, message: str | None = None):
        self.exc = exc
        self.countdown = countdown
        super().__init__(message or (f"retry: {exc!r}" if exc is not None else "retry"))


class Context:
    """What a task knows about its run (the ``ctx`` of ``bind=True`` tasks).

    ``attempt`` is 1-based; ``retries`` (attempt - 1), ``id`` and ``request``
    (the context itself) are there for code written against Celery's
    ``self.request``.
    """

    def __init__(
        self,
        task_id: str,
        job_id: str,
        kind: str,
        attempt: int,
        timeout: float | None = None,
        log: Callable[[str], None] | None = None,
        task: Task | None = None,
    ):
        self.task_id = task_id
        self.job_id = job_id
        self.kind = kind
        self.attempt = attempt
        self.timeout = timeout
        self.task = task
        self.cancel_event = threading.Event()
        self._log = log
        self.started = time.monotonic()

    @property
    def id(self) -> str:
        return self.task_id

    @property
    def retries(self) -> int:
        return self.attempt - 1

    @property
    def request(self) -> Context:
        return self

    @property
    def cancelled(self) -> bool:
        """True once the server cancelled the task, it ran past its timeout, or
        the worker is handing it back: a long-running sync task should check
        this and return (a thread cannot be stopped from outside)."""
        return self.cancel_event.is_set()

    def log(self, *parts: Any) -> None:
        """Write a line to the task's log (``brigade logs TASK``)."""
        line = " ".join(str(p) for p in parts)
        if self._log is not None:
            for one in line.splitlines() or [""]:
                self._log(one)

    def progress(self, current: float, total: float | None = None, message: str = "") -> None:
        """Report progress. The API has no progress field yet, so this is a log
        line ``[progress] current/total message``."""
        text = f"{current:g}" if total is None else f"{current:g}/{total:g}"
        self.log(f"[progress] {text} {message}".rstrip())

    def retry(self, exc: BaseException | None = None, countdown: float | None = None, **_: Any) -> Retry:
        """The exception to raise to run the task again: ``raise ctx.retry(exc=e, countdown=5)``."""
        return Retry(exc=exc, countdown=countdown)


class Signature:
    """A task with its arguments and options, not yet sent (``add.s(2, 2)``)."""

    def __init__(self, task: Task, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any):
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = options

    def set(self, **options: Any) -> Signature:
        """The same signature with more options (``queue=``, ``priority=``...)."""
        return Signature(self.task, self.args, self.kwargs, **{**self.options, **options})

    def spec(self) -> dict[str, Any]:
        """The task as a job's task dict."""
        return self.task.spec(self.args, self.kwargs, **self.options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> AsyncResult:
        return self.task.apply_async(
            self.args + tuple(args), {**self.kwargs, **(kwargs or {})}, **{**self.options, **options}
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task(*self.args, *args, **{**self.kwargs, **kwargs})

    def __repr__(self) -> str:
        return f"{self.task.name}.s(*{self.args!r}, **{self.kwargs!r})"


class Task:
    """A function registered with ``@app.task``; call it to run it here,
    ``delay``/``apply_async`` to run it on a worker."""

    def __init__(
        self,
        app: Brigade,
        fn: Callable[..., Any],
        name: str | None = None,
        bind: bool = False,
        max_attempts: int | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        requires: dict[str, str] | None = None,
        retry_delay: float | None = None,
        default_retry_delay: float | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        **celery_options: Any,
    ):
        unknown = set(celery_options) - CELERY_NOOP_OPTIONS
        if unknown:
            raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}")
        if celery_options:
            warnings.warn(
                f"brigade ignores the Celery task option(s) {', '.join(sorted(celery_options))} "
                f"of {getattr(fn, '__name__', fn)!r} (see docs/from-celery.md)",
                stacklevel=3,
            )
        if timeout is None:
            timeout = time_limit if time_limit is not None else soft_time_limit
        self.app = app
        self.fn = fn
        module = fn.__module__
        if module == "__main__" and app.main:
            # As Celery: tasks of a script run as __main__ are named after the app's main.
            module = app.main
        self.name = _wire.check_kind(name) if name else _wire.kind_for(module, fn.__name__)
        self.bind = bind
        if max_attempts is None and max_retries is not None:
            max_attempts = max_retries + 1
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.queue = queue
        self.priority = priority
        self.requires = dict(requires or {})
        self.retry_delay = retry_delay if retry_delay is not None else default_retry_delay
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here and now (no server), as Celery does."""
        if self.bind:
            ctx = Context("local", "local", self.name, 1, self.timeout, task=self)
            return self.fn(ctx, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return Signature(self, args, kwargs)

    si = s

    def spec(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: _dt.datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        requires: dict[str, str] | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        name: str | None = None,
        **unknown: Any,
    ) -> dict[str, Any]:
        """The task dict of one call (``POST /v1/jobs``'s ``tasks[i]``);
        TypeError if the arguments are not JSON."""
        if unknown:
            raise TypeError(f"unknown option(s) of apply_async: {', '.join(sorted(unknown))}")
        t: dict[str, Any] = {"kind": self.name, "input": _wire.encode_input(self.name, args, kwargs)}
        q = queue or self.queue
        if q:
            t["queue"] = q
        p = priority if priority is not None else self.priority
        if p is not None:
            t["priority"] = int(p)
        m = max_attempts if max_attempts is not None else self.max_attempts
        if m is not None:
            t["max_attempts"] = int(m)
        to = timeout if timeout is not None else self.timeout
        if to is not None:
            t["timeout_ms"] = max(1, int(to * 1000))
        req = {**self.requires, **(requires or {})}
        if req:
            t["requires"] = req
        if self.retry_delay is not None:
            ms = max(0, int(self.retry_delay * 1000))
            t["backoff"] = {"initial_ms": ms, "factor": 1.0, "max_ms": ms, "jitter": False}
        if countdown is not None:
            t["run_at"] = _wire.in_seconds(countdown)
        elif eta is not None:
            t["run_at"] = _wire.rfc3339(eta)
        if name:
            t["name"] = name
        return t

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task with these arguments; returns at once."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """Send the task: ``apply_async(args=(4, 5), countdown=10, priority=5,
        queue="q", requires={"gpu": "a100"})``; also ``eta``, ``max_attempts``,
        ``timeout`` (seconds) and ``name``."""
        spec = self.spec(args or (), kwargs, **options)
        if self.app._eager:
            from .testing import run_eager

            return run_eager(self, spec)
        job = self.app.submit({"tasks": [spec]})
        return AsyncResult(job.task_ids[0], app=self.app, job_id=job.id, solo=True)

    async def delay_async(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """:meth:`delay` for asyncio code."""
        return await self.apply_async_async(args, kwargs)

    async def apply_async_async(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """:meth:`apply_async` for asyncio code."""
        spec = self.spec(args or (), kwargs, **options)
        if self.app._eager:
            from .testing import run_eager

            return run_eager(self, spec)
        job = await self.app.aio.submit({"tasks": [spec]})
        return AsyncResult(job.task_ids[0], app=self.app, job_id=job.id, solo=True)

    def __repr__(self) -> str:
        return f"<@task {self.name}>"


def _outcome(view: dict[str, Any]) -> Any:
    """The output of a finished TaskView, or raise its failure."""
    state = view.get("state")
    if state == "succeeded":
        return view.get("output")
    type_, msg, tb, kind = _wire.decode_error(view.get("error"))
    cls = TaskRevoked if state == "cancelled" else TaskFailed
    if state == "cancelled" and not msg:
        msg = "cancelled"
    raise cls(str(view.get("id")), type_, msg, tb, kind, str(state))


class AsyncResult:
    """The result of a task sent with ``delay``/``apply_async``.

    ``state`` uses Celery's names (PENDING, STARTED, SUCCESS, FAILURE,
    REVOKED; RETRY while a failed attempt waits to run again);
    ``brigade_state`` is brigade's own (queued, scheduled, running,
    succeeded, failed, cancelled).
    """

    def __init__(self, id: str, app: Brigade, job_id: str | None = None, solo: bool = False):
        self.id = id
        self.task_id = id
        self.app = app
        self.job_id = job_id
        # The only task of its job: waiting for the job is waiting for it.
        self._solo = solo
        self._view: dict[str, Any] | None = None

    def _final(self) -> bool:
        return self._view is not None and self._view.get("state") in FINISHED

    def view(self) -> dict[str, Any]:
        """The task as the API shows it now (TaskView, with history)."""
        if not self._final():
            self._view = self.app.get_task(self.id)
        assert self._view is not None
        return self._view

    @property
    def brigade_state(self) -> str:
        return str(self.view().get("state"))

    @property
    def state(self) -> str:
        v = self.view()
        s = str(v.get("state"))
        if s == "scheduled" and int(v.get("attempt") or 0) > 0:
            return "RETRY"
        return CELERY_STATES.get(s, s.upper())

    status = state

    def ready(self) -> bool:
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state == "SUCCESS"

    def failed(self) -> bool:
        return self.state == "FAILURE"

    @property
    def attempt(self) -> int:
        return int(self.view().get("attempt") or 0)

    @property
    def traceback(self) -> str | None:
        """The remote traceback of a failed task."""
        v = self.view()
        return _wire.decode_error(v.get("error"))[2] or None if v.get("state") == "failed" else None

    @property
    def result(self) -> Any:
        """The output once succeeded, the :class:`TaskFailed` once failed, else None."""
        v = self.view()
        if v.get("state") not in FINISHED:
            return None
        try:
            return _outcome(v)
        except TaskFailed as e:
            return e

    info = result

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        """Wait for the result: the task's return value. Raises
        :class:`brigade.TaskFailed` (remote type, message, traceback) if it
        failed, :class:`brigade.TaskRevoked` if cancelled, and
        :class:`brigade.TimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._final():
            if self._solo and self.job_id:
                self.app.wait_job(self.job_id, timeout)
                self._view = self.app.get_task(self.id)
            else:
                pause = 0.01
                while True:
                    self._view = self.app.get_task(self.id)
                    if self._final():
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        raise WaitTimeout(f"task {self.id} is still {self._view.get('state')} after {timeout} s")
                    time.sleep(pause if deadline is None else max(0, min(pause, deadline - time.monotonic())))
                    pause = min(interval, pause * 2)
        assert self._view is not None
        if not propagate:
            return self.result
        return _outcome(self._view)

    async def get_async(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        """:meth:`get` for asyncio code."""
        aio = self.app.aio
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._final():
            if self._solo and self.job_id:
                await aio.wait_job(self.job_id, timeout)
                self._view = await aio.get_task(self.id)
            else:
                pause = 0.01
                while True:
                    self._view = await aio.get_task(self.id)
                    if self._final():
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        raise WaitTimeout(f"task {self.id} is still {self._view.get('state')} after {timeout} s")
                    await asyncio.sleep(pause)
                    pause = min(interval, pause * 2)
        assert self._view is not None
        if not propagate:
            return self.result
        return _outcome(self._view)

    def revoke(self) -> None:
        """Cancel the task; a running one is told to stop."""
        self._view = self.app.cancel_task(self.id)

    def forget(self) -> None:
        """Celery API; results live with their job in brigade, so nothing to do."""

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"


class GroupResult:
    """The results of a :func:`group`: one job, its tasks in order."""

    def __init__(self, app: Brigade | None, job_id: str | None, results: list[AsyncResult]):
        self.app = app
        self.id = job_id
        self.job_id = job_id
        self.results = results

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __getitem__(self, i: int) -> AsyncResult:
        return self.results[i]

    def _collect(self, views: list[dict[str, Any]], propagate: bool) -> list[Any]:
        by_id = {v["id"]: v for v in views}
        out = []
        for r in self.results:
            r._view = by_id.get(r.id, r._view)
        for r in self.results:
            assert r._view is not None
            if propagate:
                out.append(_outcome(r._view))
            else:
                out.append(r.result)
        return out

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every task's return value, in order; raises the first failure (in
        order) when ``propagate``."""
        if not self.results or self.app is None or self.job_id is None:
            return [r.get(timeout, propagate) for r in self.results]
        self.app.wait_job(self.job_id, timeout)
        return self._collect(self.app.job_tasks(self.job_id), propagate)

    join = get

    async def get_async(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        if not self.results or self.app is None or self.job_id is None:
            return [await r.get_async(timeout, propagate) for r in self.results]
        await self.app.aio.wait_job(self.job_id, timeout)
        return self._collect(await self.app.aio.job_tasks(self.job_id), propagate)

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def revoke(self) -> None:
        if self.app is not None and self.job_id is not None:
            self.app.cancel_job(self.job_id)

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} ({len(self.results)} tasks)>"


class group:  # noqa: N801 - Celery's name
    """Many tasks run in parallel as one job: ``group(add.s(i, i) for i in
    range(10)).delay().get()`` is the list of results, in order."""

    def __init__(self, *tasks: Signature | Iterable[Signature], name: str | None = None):
        sigs: list[Signature] = []
        for t in tasks:
            if isinstance(t, Signature):
                sigs.append(t)
            else:
                sigs.extend(t)
        for s in sigs:
            if not isinstance(s, Signature):
                raise TypeError(f"a group takes signatures (task.s(...)), not {type(s).__name__}")
        self.tasks = sigs
        self.name = name

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> GroupResult:
        """Submit every task in one job (up to 10 000)."""
        if not self.tasks:
            return GroupResult(None, None, [])
        app = self.tasks[0].task.app
        specs = [
            s.task.spec(s.args + tuple(args), {**s.kwargs, **(kwargs or {})}, **{**s.options, **options})
            for s in self.tasks
        ]
        if app._eager:
            from .testing import run_eager

            return GroupResult(None, None, [run_eager(s.task, spec) for s, spec in zip(self.tasks, specs)])
        body: dict[str, Any] = {"tasks": specs}
        if self.name:
            body["name"] = self.name
        job = app.submit(body)
        return GroupResult(app, job.id, [AsyncResult(t, app=app, job_id=job.id) for t in job.task_ids])

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        """As Celery: calling a group sends it."""
        return self.apply_async(args, kwargs)

    def __len__(self) -> int:
        return len(self.tasks)


def _needs_workflows(name: str) -> Callable[..., Any]:
    def missing(*_: Any, **__: Any) -> Any:
        raise NotImplementedError(
            f"{name} needs brigade's server-side workflows (a task that runs after others, with "
            "their results): the server does not have them yet. A client-side loop would not "
            "survive the client dying, so this SDK does not pretend. Use group() and chain by hand."
        )

    missing.__name__ = name
    return missing


chain = _needs_workflows("chain")
chord = _needs_workflows("chord")


class AsyncBrigade(AsyncClient):
    """The asyncio client: ``await AsyncBrigade().submit({...})``, ``await job.wait()``,
    ``async for e in client.events(job=id)``."""


class Brigade(Client):
    """A brigade app: the client of a server and the registry of tasks.

    ``Brigade(url=None, token=None)`` reads ``BRIGADE_SERVER`` and
    ``BRIGADE_TOKEN``. Nothing connects until a call needs it.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0, main: str | None = None):
        super().__init__(url, token, timeout=timeout)
        self.main = main
        self.tasks: dict[str, Task] = {}
        self._eager = False
        self._aio: AsyncBrigade | None = None
        self._aio_loop: asyncio.AbstractEventLoop | None = None

    @property
    def aio(self) -> AsyncBrigade:
        """An :class:`AsyncBrigade` to the same servers, for the running event loop."""
        loop = asyncio.get_running_loop()
        if self._aio is None or self._aio_loop is not loop or loop.is_closed():
            self._aio = AsyncBrigade(",".join(self.urls), self.token, timeout=self.timeout)
            self._aio_loop = loop
        return self._aio

    def task(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a task: ``@app.task`` or ``@app.task(max_attempts=3,
        timeout=30, queue="default", name=None, bind=False, priority=None,
        requires=None, retry_delay=None)``; Celery's ``max_retries`` and
        ``default_retry_delay`` are understood too. ``timeout`` and the delays
        are in seconds."""

        def register(f: Callable[..., Any]) -> Task:
            t = Task(self, f, **options)
            other = self.tasks.get(t.name)
            if other is not None and other.fn is not f:
                raise ValueError(f"two tasks are named {t.name!r}: give one of them name=")
            self.tasks[t.name] = t
            return t

        if fn is not None:
            return register(fn)
        return register

    def worker(
        self,
        concurrency: int = 8,
        queues: Iterable[str] | None = None,
        labels: dict[str, str] | None = None,
        name: str | None = None,
        grace: float = 30.0,
        lease_wait: float = 30.0,
    ) -> Worker:
        """A worker running this app's tasks: ``app.worker(concurrency=8).run()``."""
        from .worker import Worker

        return Worker(self, concurrency=concurrency, queues=queues, labels=labels, name=name, grace=grace, lease_wait=lease_wait)
