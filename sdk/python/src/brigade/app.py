"""The Celery-shaped surface: :class:`Brigade` (client and task registry),
:class:`Task`, :class:`Signature`, :class:`AsyncResult`, and the canvas:
:func:`chain`, :func:`group`, :func:`chord`."""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import inspect
import json
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
        traceparent: str | None = None,
    ):
        self.task_id = task_id
        # The job's W3C trace context, as the lease carried it (``None``:
        # the job is not traced): parent your own spans to it.
        self.traceparent = traceparent
        self.job_id = job_id
        self.kind = kind
        self.attempt = attempt
        self.timeout = timeout
        self.task = task
        self.cancel_event = threading.Event()
        self._log = log
        # Where progress reports go (the worker's batch; None: nowhere).
        self._progress: Callable[[int, int | None, str | None], None] | None = None
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

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report how far the task got: ``ctx.progress(30, 100, "page 30")``.

        The worker sends the latest report of each task to the server
        (``POST /v1/workers/{id}/progress``) a few times a second; clients
        read it as ``AsyncResult.progress``. It is also a log line
        ``[progress] 30/100 page 30``."""
        text = f"{done:g}" if total is None else f"{done:g}/{total:g}"
        self.log(f"[progress] {text} {message}".rstrip())
        if self._progress is not None:
            self._progress(
                max(0, int(done)),
                None if total is None else max(0, int(total)),
                message.encode()[:1024].decode(errors="ignore") if message else None,
            )

    def retry(self, exc: BaseException | None = None, countdown: float | None = None, **_: Any) -> Retry:
        """The exception to raise to run the task again: ``raise ctx.retry(exc=e, countdown=5)``."""
        return Retry(exc=exc, countdown=countdown)


class _Canvas:
    """What :func:`chain`, :func:`group`, :func:`chord` and signatures share:
    they compile into the tasks of one job (see :class:`_Graph`)."""

    def _compile(self, g: _Graph, upstream: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
        """Add this canvas's tasks to ``g``; ``upstream`` is the parents
        reference its first tasks take as their first argument (None: none).
        Returns the reference to what this canvas produces."""
        raise NotImplementedError

    def _app(self) -> Brigade | None:
        raise NotImplementedError

    def __or__(self, other: Any) -> chain:
        """``a | b`` is ``chain(a, b)`` (a group followed by a task is a chord)."""
        if not isinstance(other, _Canvas):
            return NotImplemented
        left = list(self.tasks) if isinstance(self, chain) else [self]
        right = list(other.tasks) if isinstance(other, chain) else [other]
        return chain(*left, *right)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Submit the whole canvas as one job; the result is that of its last
        step (an :class:`AsyncResult`, or a :class:`GroupResult` when it ends
        in a group)."""
        name = options.pop("job_name", None) or getattr(self, "name", None)
        g = _Graph()
        ref = self._compile(g, None, tuple(args or ()), dict(kwargs or {}), options)
        return g.submit(self._app(), ref, name)

    async def delay_async(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`delay` for asyncio code."""
        return await self.apply_async_async(args, kwargs)

    async def apply_async_async(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """:meth:`apply_async` for asyncio code; ``await r.get_async()`` waits."""
        name = options.pop("job_name", None) or getattr(self, "name", None)
        g = _Graph()
        ref = self._compile(g, None, tuple(args or ()), dict(kwargs or {}), options)
        app = self._app()
        if app is None or app._eager or not g.entries:
            return g.submit(app, ref, name)
        job = await app.aio.submit(g.body(name))
        return g.results(app, ref, job.id, job.task_ids)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """As Celery: calling a canvas sends it."""
        return self.apply_async(args, kwargs)


class Signature(_Canvas):
    """A task with its arguments and options, not yet sent (``add.s(2, 2)``).

    In a :func:`chain` (or as a chord's body) the previous step's result is
    prepended to its arguments, unless it is immutable (``add.si(2, 2)``).
    Arguments given when it is sent are prepended too, as in Celery:
    ``add.s(2).delay(8)`` runs ``add(8, 2)``.
    """

    def __init__(
        self,
        task: Task,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        immutable: bool = False,
        **options: Any,
    ):
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        self.options = options

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """The same signature with more options (``queue=``, ``priority=``...)."""
        imm = self.immutable if immutable is None else immutable
        return Signature(self.task, self.args, self.kwargs, imm, **{**self.options, **options})

    def _merge(self, args: Iterable[Any], kwargs: dict[str, Any] | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.immutable:
            return self.args, self.kwargs
        return tuple(args) + self.args, {**self.kwargs, **(kwargs or {})}

    def spec(self) -> dict[str, Any]:
        """The task as a job's task dict."""
        return self.task.spec(self.args, self.kwargs, **self.options)

    def _app(self) -> Brigade | None:
        return self.task.app

    def _compile(self, g: _Graph, upstream: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
        return g.add(self, upstream, args, kwargs, options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any) -> AsyncResult:
        a, k = self._merge(args or (), kwargs)
        return self.task.apply_async(a, k, **{**self.options, **options})

    async def apply_async_async(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        a, k = self._merge(args or (), kwargs)
        return await self.task.apply_async_async(a, k, **{**self.options, **options})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now (no server), as Celery does."""
        a, k = self._merge(args, kwargs)
        return self.task(*a, **k)

    def __repr__(self) -> str:
        return f"{self.task.name}.{'si' if self.immutable else 's'}(*{self.args!r}, **{self.kwargs!r})"


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
        limits: Iterable[str] | None = None,
        fair_key: str | None = None,
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
        self.limits = list(limits or [])
        self.fair_key = fair_key
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
        """A signature: in a chain, the previous result is prepended to ``args``."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a chain it runs after the previous step
        but does not take its result."""
        return Signature(self, args, kwargs, immutable=True)

    def signature(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> Signature:
        """Celery's ``task.signature(args, kwargs, **options)``."""
        return Signature(self, args, kwargs, **options)

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
        limits: Iterable[str] | None = None,
        fair_key: str | None = None,
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
        keys = list(limits) if limits is not None else self.limits
        if keys:
            t["limits"] = keys
        fk = fair_key if fair_key is not None else self.fair_key
        if fk:
            t["fair_key"] = fk
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
        ``timeout`` (seconds), ``name``, ``limits`` (keys whose cluster-wide
        limits the task counts against, see :meth:`Client.set_limit`) and
        ``fair_key`` (round-robin across tenants)."""
        spec = self.spec(args or (), kwargs, **options)
        if self.app._eager:
            from .testing import run_eager

            return run_eager(self, spec)
        job = self.app.submit({"tasks": [spec]})
        return AsyncResult(job.task_ids[0], app=self.app, job_id=job.id)

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
        return AsyncResult(job.task_ids[0], app=self.app, job_id=job.id)

    def __repr__(self) -> str:
        return f"<@task {self.name}>"


def _outcome(view: dict[str, Any], job: list[dict[str, Any]] | None = None) -> Any:
    """The output of a finished TaskView, or raise its failure; a task
    cancelled because a task it waited for failed raises that failure
    (found in ``job``, the job's task views, when given)."""
    state = view.get("state")
    if state == "succeeded":
        return view.get("output")
    if job and _by_dependency(view):
        view = _cause(view, job)
        state = view.get("state")
    type_, msg, tb, kind = _wire.decode_error(view.get("error"))
    cls = TaskRevoked if state == "cancelled" else TaskFailed
    if state == "cancelled" and not msg:
        msg = "cancelled"
    raise cls(str(view.get("id")), type_, msg, tb, kind, str(state))


def _by_dependency(view: dict[str, Any]) -> bool:
    """Cancelled by the server because a task it waited for did not succeed."""
    return view.get("state") == "cancelled" and (view.get("error") or {}).get("kind") == "dependency"


def _cause(view: dict[str, Any], job: list[dict[str, Any]]) -> dict[str, Any]:
    """The first task (in submission order) among those ``view`` waited for,
    directly or not, that failed or was cancelled on its own."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for v in job:
        if v.get("key"):
            by_key.setdefault(str(v["key"]), []).append(v)
    seen: set[str] = set()
    todo = [str(k) for k in view.get("after") or []]
    ancestors: set[str] = set()
    while todo:
        k = todo.pop()
        if k in seen:
            continue
        seen.add(k)
        for v in by_key.get(k, []):
            ancestors.add(str(v.get("id")))
            todo.extend(str(a) for a in v.get("after") or [])
    for v in job:
        if str(v.get("id")) in ancestors and v.get("state") in ("failed", "cancelled") and not _by_dependency(v):
            return v
    return view


class AsyncResult:
    """The result of a task sent with ``delay``/``apply_async``.

    ``state`` uses Celery's names (PENDING, STARTED, SUCCESS, FAILURE,
    REVOKED; RETRY while a failed attempt waits to run again);
    ``brigade_state`` is brigade's own (waiting, queued, scheduled, running,
    succeeded, failed, cancelled).

    ``parent`` is the result of the step before it in a chain (or a
    chord's header for its body), as in Celery; None otherwise.
    """

    parent: AsyncResult | GroupResult | None = None

    def __init__(self, id: str, app: Brigade, job_id: str | None = None):
        self.id = id
        self.task_id = id
        self.app = app
        self.job_id = job_id
        self._view: dict[str, Any] | None = None
        self._job: list[dict[str, Any]] | None = None

    def _final(self) -> bool:
        return self._view is not None and self._view.get("state") in FINISHED

    def view(self) -> dict[str, Any]:
        """The task as the API shows it now (TaskView, with history)."""
        if not self._final():
            self._view = self.app.get_task(self.id)
        assert self._view is not None
        return self._view

    def _job_views(self) -> list[dict[str, Any]] | None:
        """The job's tasks, read once, when this task was cancelled for a failure upstream."""
        if self._job is None and self._view is not None and _by_dependency(self._view) and self.job_id:
            self._job = self.app.job_tasks(self.job_id)
        return self._job

    async def _job_views_async(self) -> list[dict[str, Any]] | None:
        if self._job is None and self._view is not None and _by_dependency(self._view) and self.job_id:
            self._job = await self.app.aio.job_tasks(self.job_id)
        return self._job

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
    def progress(self) -> dict[str, Any] | None:
        """The last ``ctx.progress(done, total, message)`` the task reported:
        ``{"done", "total", "message", "at"}``, or None."""
        p = self.view().get("progress")
        return p if isinstance(p, dict) else None

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
            return _outcome(v, self._job_views())
        except TaskFailed as e:
            return e

    @property
    def info(self) -> Any:
        """As Celery: the result once finished, the progress (see
        :attr:`progress`) while it runs."""
        v = self.view()
        if v.get("state") in FINISHED:
            return self.result
        return self.progress

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        """Wait for the result: the task's return value. Raises
        :class:`brigade.TaskFailed` (remote type, message, traceback) if it
        failed, :class:`brigade.TaskRevoked` if cancelled, and
        :class:`brigade.TimeoutError` after ``timeout`` seconds. A canvas
        step that did not run because an earlier one failed raises that
        earlier failure. ``interval`` is accepted for Celery's sake: the
        wait is a long-poll that the task's finish answers, not a poll."""
        if not self._final():
            # One long-poll on the task: its finish answers it at once.
            self._view = self.app.wait_task(self.id, timeout)
        assert self._view is not None
        if not propagate:
            return self.result
        return _outcome(self._view, self._job_views())

    async def get_async(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        """:meth:`get` for asyncio code."""
        if not self._final():
            self._view = await self.app.aio.wait_task(self.id, timeout)
        assert self._view is not None
        job = await self._job_views_async()
        if not propagate:
            return self.result
        return _outcome(self._view, job)

    def revoke(self) -> None:
        """Cancel the task; a running one is told to stop."""
        self._view = self.app.cancel_task(self.id)

    def forget(self) -> None:
        """Celery API; results live with their job in brigade, so nothing to do."""

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"


class GroupResult:
    """The results of a :func:`group`: one job, its tasks in order (a member
    that is itself a group is a GroupResult)."""

    parent: AsyncResult | GroupResult | None = None

    def __init__(self, app: Brigade | None, job_id: str | None, results: list[AsyncResult | GroupResult]):
        self.app = app
        self.id = job_id
        self.job_id = job_id
        self.results = results

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult | GroupResult]:
        return iter(self.results)

    def __getitem__(self, i: int) -> AsyncResult | GroupResult:
        return self.results[i]

    def _leaves(self) -> Iterator[AsyncResult]:
        for r in self.results:
            if isinstance(r, GroupResult):
                yield from r._leaves()
            else:
                yield r

    def _collect(self, views: list[dict[str, Any]], propagate: bool) -> list[Any]:
        by_id = {v["id"]: v for v in views}
        for r in self._leaves():
            r._view = by_id.get(r.id, r._view)
            r._job = views
        return self._values(views, propagate)

    def _values(self, views: list[dict[str, Any]], propagate: bool) -> list[Any]:
        out: list[Any] = []
        for r in self.results:
            if isinstance(r, GroupResult):
                out.append(r._values(views, propagate))
                continue
            assert r._view is not None
            if propagate:
                out.append(_outcome(r._view, views))
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
        return sum(1 for r in self._leaves() if r.successful())

    def revoke(self) -> None:
        if self.app is not None and self.job_id is not None:
            self.app.cancel_job(self.job_id)

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} ({len(self.results)} tasks)>"


class _Graph:
    """A canvas compiled into one job: tasks with ``key`` and ``after``
    (brigade's workflows), whose inputs say which parents' outputs to
    prepend to their arguments (``_wire.PREPEND``). The server runs each
    task once its parents succeeded, and cancels it (error kind
    ``dependency``) once one failed: nothing here loops on the client."""

    def __init__(self) -> None:
        self.entries: list[tuple[Task, dict[str, Any]]] = []
        self._keys = 0
        # A step's reference -> the one before it (``AsyncResult.parent``).
        self.before: dict[str, Any] = {}

    def follows(self, ref: Any, prev: Any) -> None:
        if prev is not None:
            self.before[json.dumps(ref, sort_keys=True)] = prev

    def key(self) -> str:
        self._keys += 1
        return f"c{self._keys}"

    def add(
        self,
        sig: Signature,
        upstream: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        key: str | None = None,
    ) -> str:
        a, k = sig._merge(args, kwargs)
        spec = sig.task.spec(a, k, **{**sig.options, **options})
        spec["key"] = key or self.key()
        if upstream is not None:
            spec["after"] = _wire.ref_keys(upstream)
            if not sig.immutable:
                spec["input"][_wire.PREPEND] = upstream
        self.entries.append((sig.task, spec))
        return str(spec["key"])

    def body(self, name: str | None) -> dict[str, Any]:
        """The submit request."""
        body: dict[str, Any] = {"tasks": [spec for _, spec in self.entries]}
        if name:
            body["name"] = name
        return body

    def submit(self, app: Brigade | None, ref: Any, name: str | None) -> Any:
        """Send the job (or run it eagerly); the result of ``ref``."""
        if not self.entries or app is None:
            return GroupResult(None, None, [])
        if app._eager:
            from .testing import run_eager_graph

            return self._build(None, None, list(run_eager_graph(self.entries)), ref)
        job = app.submit(self.body(name))
        return self.results(app, ref, job.id, job.task_ids)

    def results(self, app: Brigade, ref: Any, job_id: str, task_ids: list[str]) -> Any:
        """The result of ``ref`` in the job just submitted."""
        return self._build(app, job_id, [AsyncResult(t, app=app, job_id=job_id) for t in task_ids], ref)

    def _build(self, rapp: Brigade | None, job_id: str | None, results: list[AsyncResult], ref: Any) -> Any:
        by_key: dict[str, list[AsyncResult]] = {}
        for (_, spec), r in zip(self.entries, results):
            by_key.setdefault(str(spec["key"]), []).append(r)

        def build(r: Any) -> AsyncResult | GroupResult:
            if isinstance(r, str):
                return by_key[r][0]
            items: list[AsyncResult | GroupResult] = []
            for item in r["list"]:
                if isinstance(item, dict) and "all" in item:
                    items.extend(by_key[str(item["all"])])
                else:
                    items.append(build(item))
            return GroupResult(rapp, job_id, items)

        out = build(ref)
        node, r = out, ref
        while (prev := self.before.get(json.dumps(r, sort_keys=True))) is not None:
            node.parent = build(prev)
            node, r = node.parent, prev
        return out


def _canvas(x: Any, what: str) -> _Canvas:
    if isinstance(x, _Canvas):
        return x
    raise TypeError(f"{what} takes signatures (task.s(...)) or canvases, not {type(x).__name__}")


class group(_Canvas):  # noqa: N801 - Celery's name
    """Many tasks run in parallel as one job: ``group(add.s(i, i) for i in
    range(10)).delay().get()`` is the list of results, in order. Members may
    be chains (or chords); a group inside a group is flattened. In a chain,
    every member takes the previous step's result, and the next step takes
    the list of the members' results."""

    def __init__(self, *tasks: _Canvas | Iterable[_Canvas], name: str | None = None):
        sigs: list[_Canvas] = []
        for t in tasks:
            if isinstance(t, _Canvas):
                sigs.append(t)
            else:
                sigs.extend(_canvas(x, "a group") for x in t)
        self.tasks = sigs
        self.name = name

    def _app(self) -> Brigade | None:
        return next((a for a in (t._app() for t in self.tasks) if a is not None), None)

    def _compile(self, g: _Graph, upstream: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
        items: list[Any] = []
        shared: str | None = None
        for m in self.tasks:
            if isinstance(m, Signature):
                # Plain members share one key: their parents are read in
                # submission order, and `after` names one key, not thousands.
                if shared is None:
                    shared = g.key()
                    items.append({"all": shared})
                g.add(m, upstream, args, kwargs, options, key=shared)
                continue
            shared = None
            r = m._compile(g, upstream, args, kwargs, options)
            if isinstance(m, group):
                items.extend(r["list"])
            else:
                items.append(r)
        return {"list": items}

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any) -> GroupResult:
        """Submit every task in one job (up to 10 000)."""
        out = super().apply_async(args, kwargs, **options)
        assert isinstance(out, GroupResult)
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"


class chain(_Canvas):  # noqa: N801 - Celery's name
    """Steps run one after the other, each result the next step's first
    argument: ``chain(add.s(2, 2), add.s(4)).delay().get()`` is 8. Also
    ``add.s(2, 2) | add.s(4)``. A group followed by a step is a chord.
    Arguments given when it is sent go to the first step."""

    def __init__(self, *tasks: _Canvas | Iterable[_Canvas], name: str | None = None):
        steps: list[_Canvas] = []
        for t in tasks:
            if isinstance(t, _Canvas):
                steps.append(t)
            else:
                steps.extend(_canvas(x, "a chain") for x in t)
        self.tasks = steps
        self.name = name

    def _app(self) -> Brigade | None:
        return next((a for a in (t._app() for t in self.tasks) if a is not None), None)

    def _compile(self, g: _Graph, upstream: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
        ref = upstream
        for i, step in enumerate(self.tasks):
            prev = ref
            ref = step._compile(g, ref, args if i == 0 else (), kwargs if i == 0 else {}, options)
            g.follows(ref, prev)
        return ref

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))


class chord(_Canvas):  # noqa: N801 - Celery's name
    """A group, then a body that takes the list of its results (in order):
    ``chord(group(add.s(i, i) for i in range(10)), tsum.s()).delay().get()``
    is the body's result. The body runs once, when the server has every
    member's result; if one fails, the server cancels the body and ``get()``
    raises that failure. Also ``chord(header)(body)``."""

    def __init__(self, header: _Canvas | Iterable[_Canvas], body: _Canvas | None = None, name: str | None = None):
        self.header: _Canvas = header if isinstance(header, _Canvas) else group(header)
        self.body = _canvas(body, "a chord's body") if body is not None else None
        self.name = name

    def _app(self) -> Brigade | None:
        return self.header._app() or (self.body._app() if self.body is not None else None)

    def _compile(self, g: _Graph, upstream: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
        if self.body is None:
            raise TypeError("a chord needs a body: chord(header, body) or chord(header)(body)")
        ref = self.header._compile(g, upstream, args, kwargs, options)
        out = self.body._compile(g, ref, (), {}, options)
        g.follows(out, ref)
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.body is None and args and isinstance(args[0], _Canvas):
            return chord(self.header, args[0], name=self.name).apply_async(args[1:], kwargs)
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


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
        requires=None, limits=None, fair_key=None, retry_delay=None)``;
        Celery's ``max_retries`` and
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
