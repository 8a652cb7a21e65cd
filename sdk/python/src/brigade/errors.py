"""Exceptions raised by the SDK."""

from __future__ import annotations

import builtins
from typing import Any


class BrigadeError(Exception):
    """Base of every error the SDK raises."""


class ApiError(BrigadeError):
    """The server answered with an error (an RFC 9457 problem document).

    ``status`` is the HTTP status, ``problem`` the parsed body (``title``,
    ``detail`` and, for validation errors, ``errors``: the fields at fault).
    """

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or "error"
        fields = problem.get("errors") or []
        if fields:
            detail += " (" + "; ".join(f"{f.get('field')}: {f.get('message')}" for f in fields) + ")"
        super().__init__(f"HTTP {status}: {detail}")

    @property
    def transient(self) -> bool:
        """Whether trying again later may succeed (5xx, 429)."""
        return self.status >= 500 or self.status == 429


class NotFound(ApiError):
    """HTTP 404: the job, task or worker does not exist (or is not yours)."""


class Unreachable(BrigadeError):
    """No server answered."""


class TaskFailed(BrigadeError):
    """A task ended without a result.

    ``type`` is the remote exception's class name (``ValueError``),
    ``message`` its text and ``traceback`` the remote traceback as text (both
    empty when the failure did not come from Python code, e.g. a timeout).
    ``kind`` is brigade's error kind: ``handler``, ``timeout``, ``lost``,
    ``crash``, ``cancelled``, ``unknown_kind``, ``bad_input`` or ``other``.
    """

    def __init__(
        self,
        task_id: str,
        type: str,
        message: str,
        traceback: str = "",
        kind: str = "handler",
        state: str = "failed",
    ):
        self.task_id = task_id
        self.type = type
        self.message = message
        self.traceback = traceback
        self.kind = kind
        self.state = state
        text = f"task {task_id} {state}: {type}: {message}" if type else f"task {task_id} {state}: {message}"
        if traceback:
            text += "\n\nRemote traceback:\n" + traceback
        super().__init__(text)


class TaskRevoked(TaskFailed):
    """The task was cancelled before it produced a result."""


class TimeoutError(BrigadeError, builtins.TimeoutError):  # noqa: A001 - also the builtin
    """Waiting for a result took longer than the timeout given."""
