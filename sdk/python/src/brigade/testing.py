"""Eager mode for your own unit tests: tasks run in-process, at once, when
they are sent (Celery's ``task_always_eager``).

    from brigade.testing import eager

    def test_add():
        with eager(app):
            assert add.delay(2, 3).get() == 5

**This is not the real thing.** No server or worker is involved: nothing is
durable, there are no leases, timeouts are not enforced, ``countdown`` and
``retry_delay`` are not waited out, cancellation does nothing. What it does
keep: arguments and return values go through JSON (a non-JSON argument is a
TypeError at ``delay()``, as for real), ``raise ctx.retry(...)`` and failures
run the task again up to ``max_attempts`` (default 3, as on the server), and
failures raise :class:`brigade.TaskFailed` with the type, message and
traceback from ``get()``.

The canvas (``chain``, ``group``, ``chord``) runs too, in submission order,
with the server's rules: a step runs once every task it waits for succeeded,
takes their results as its first argument, and is cancelled (error kind
``dependency``) when one of them failed, so ``get()`` raises that failure.
Nothing runs in parallel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import _wire
from .app import AsyncResult, Context, Retry, _outcome
from .errors import TaskFailed

if TYPE_CHECKING:
    from .app import Brigade, Task

DEFAULT_MAX_ATTEMPTS = 3


class EagerResult(AsyncResult):
    """The result of a task run eagerly: the interface of :class:`brigade.AsyncResult`."""

    def __init__(self, id: str, view: dict[str, Any], logs: list[str]):  # noqa: D107 - no server
        self.id = id
        self.task_id = id
        self.job_id = view["job_id"]
        self._eview = view
        self._view = view
        self._job: list[dict[str, Any]] | None = None
        self.app = None  # type: ignore[assignment]  # no server behind it
        self.logs = logs

    def view(self) -> dict[str, Any]:
        return self._eview

    @property
    def brigade_state(self) -> str:
        return str(self._eview["state"])

    @property
    def state(self) -> str:
        return {"succeeded": "SUCCESS", "failed": "FAILURE", "cancelled": "REVOKED"}[self._eview["state"]]

    status = state

    @property
    def attempt(self) -> int:
        return int(self._eview["attempt"])

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return self.state == "SUCCESS"

    def failed(self) -> bool:
        return self.state == "FAILURE"

    @property
    def traceback(self) -> str | None:
        return _wire.decode_error(self._eview.get("error"))[2] or None

    @property
    def result(self) -> Any:
        try:
            return _outcome(self._eview, self._job)
        except TaskFailed as e:
            return e

    @property
    def info(self) -> Any:
        return self.result

    @property
    def progress(self) -> dict[str, Any] | None:
        p = self._eview.get("progress")
        return p if isinstance(p, dict) else None

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        return _outcome(self._eview, self._job) if propagate else self.result

    async def get_async(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        return self.get(timeout, propagate)

    def revoke(self) -> None:
        pass

    def forget(self) -> None:
        pass


def run_eager(
    task: Task, spec: dict[str, Any], job_id: str | None = None, parents: list[dict[str, Any]] | None = None
) -> EagerResult:
    """Run one task dict (as it would be submitted) here and now;
    ``parents`` as a lease would carry them."""
    task_id, job_id = f"eager-{uuid.uuid4()}", job_id or f"eager-{uuid.uuid4()}"
    payload = json.loads(json.dumps(spec["input"]))
    max_attempts = int(spec.get("max_attempts") or DEFAULT_MAX_ATTEMPTS)
    lines: list[str] = []
    error: dict[str, Any] | None = None
    output: Any = None
    state = "failed"
    attempt = 0
    last_progress: dict[str, Any] = {}
    try:
        args, kwargs = _wire.decode_input(payload, parents if parents is not None else [])
    except ValueError as e:
        args, kwargs = [], {}
        error, max_attempts = {"kind": "bad_input", "message": f"ValueError: {e}"}, 0
    for attempt in range(1, max_attempts + 1):
        ctx = Context(task_id, job_id, task.name, attempt, task.timeout, log=lines.append, task=task)
        ctx._progress = lambda done, total, message: last_progress.update(
            {"done": done, "total": total, "message": message}
        )
        call_args = [ctx, *args] if task.bind else list(args)
        try:
            inspect.signature(task.fn).bind(*call_args, **kwargs)
        except TypeError as e:
            error = {"kind": "bad_input", "message": f"TypeError: {e}"}
            break
        try:
            value = task.fn(*call_args, **kwargs)
            if inspect.isawaitable(value):
                value = _run_coro(value)
            output = json.loads(json.dumps(value, allow_nan=False))
            state, error = "succeeded", None
            break
        except Retry as r:
            error = {"kind": "handler", "message": _wire.encode_exception(r.exc if r.exc is not None else r)}
        except (TypeError, ValueError) as e:
            error = {"kind": "handler", "message": _wire.encode_exception(e)}
        except Exception as e:  # noqa: BLE001
            error = {"kind": "handler", "message": _wire.encode_exception(e)}
    view = {
        "id": task_id,
        "job_id": job_id,
        "kind": task.name,
        "state": state,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "input": payload,
        "output": output,
        "error": error,
        "key": spec.get("key"),
        "after": list(spec.get("after") or []),
        "progress": last_progress or None,
    }
    return EagerResult(task_id, view, lines)


def run_eager_graph(entries: list[tuple[Task, dict[str, Any]]]) -> list[EagerResult]:
    """Run a canvas's tasks (one job's, with ``key``/``after``) in submission
    order, as the server would: a task waits for every task of the keys it
    names (they come earlier), takes their results as ``parents``, and is
    cancelled with error kind ``dependency`` when one did not succeed."""
    job_id = f"eager-{uuid.uuid4()}"
    views: list[dict[str, Any]] = []
    results: list[EagerResult] = []
    for task, spec in entries:
        after = [str(k) for k in spec.get("after") or []]
        parents = [
            {"key": v["key"], "task_id": v["id"], "state": v["state"], "output": v["output"], "error": v["error"]}
            for v in views
            if v.get("key") in after
        ]
        if any(p["state"] != "succeeded" for p in parents):
            task_id = f"eager-{uuid.uuid4()}"
            view = {
                "id": task_id,
                "job_id": job_id,
                "kind": task.name,
                "state": "cancelled",
                "attempt": 0,
                "max_attempts": int(spec.get("max_attempts") or DEFAULT_MAX_ATTEMPTS),
                "input": spec["input"],
                "output": None,
                "error": {"kind": "dependency", "message": "a task it waits for did not succeed"},
                "key": spec.get("key"),
                "after": after,
            }
            r = EagerResult(task_id, view, [])
        else:
            r = run_eager(task, spec, job_id=job_id, parents=parents)
        views.append(r._eview)
        results.append(r)
    for r in results:
        r._job = views
    return results


async def _await(v: Any) -> Any:
    return await v


def _run_coro(v: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(v))
    # Called from async code (delay_async): a loop of its own, on a thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _await(v)).result()


@contextlib.contextmanager
def eager(app: Brigade) -> Iterator[Brigade]:
    """Within the block, ``app``'s tasks run in-process when sent."""
    before = app._eager
    app._eager = True
    try:
        yield app
    finally:
        app._eager = before


def enable(app: Brigade) -> None:
    """Turn eager mode on for ``app`` (for a whole test session)."""
    app._eager = True


def disable(app: Brigade) -> None:
    app._eager = False
