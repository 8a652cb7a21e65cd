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
        self._solo = True
        self.app = None  # type: ignore[assignment]  # no server behind it
        self.logs = logs

    def view(self) -> dict[str, Any]:
        return self._eview

    @property
    def brigade_state(self) -> str:
        return str(self._eview["state"])

    @property
    def state(self) -> str:
        return {"succeeded": "SUCCESS", "failed": "FAILURE"}[self._eview["state"]]

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
            return _outcome(self._eview)
        except TaskFailed as e:
            return e

    info = result

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        return _outcome(self._eview) if propagate else self.result

    async def get_async(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        return self.get(timeout, propagate)

    def revoke(self) -> None:
        pass

    def forget(self) -> None:
        pass


def run_eager(task: Task, spec: dict[str, Any]) -> EagerResult:
    """Run one task dict (as it would be submitted) here and now."""
    task_id, job_id = f"eager-{uuid.uuid4()}", f"eager-{uuid.uuid4()}"
    payload = json.loads(json.dumps(spec["input"]))
    args, kwargs = _wire.decode_input(payload)
    max_attempts = int(spec.get("max_attempts") or DEFAULT_MAX_ATTEMPTS)
    lines: list[str] = []
    error: dict[str, Any] | None = None
    output: Any = None
    state = "failed"
    attempt = 0
    for attempt in range(1, max_attempts + 1):
        ctx = Context(task_id, job_id, task.name, attempt, task.timeout, log=lines.append, task=task)
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
    }
    return EagerResult(task_id, view, lines)


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
