"""Celery's names over brigade, so that porting a Celery app means changing
its imports:

    from brigade.celery import Celery, group      # was: from celery import Celery, group

    app = Celery("tasks", broker="pyamqp://guest@localhost//")

``Celery(main, broker=..., backend=...)`` is a :class:`brigade.Brigade`.
``broker`` (or ``backend``) is used as the server URL when it is an
``http(s)://`` URL; any other broker URL (AMQP, Redis…) is ignored, with a
warning, in favour of ``BRIGADE_SERVER``: brigade is its own broker and result
store.
"""

from __future__ import annotations

import warnings
from typing import Any

from .app import AsyncResult, Brigade, GroupResult, Retry, Signature, Task, chain, chord, group
from .errors import TaskFailed, TaskRevoked, TimeoutError

__all__ = [
    "AsyncResult",
    "Celery",
    "GroupResult",
    "Retry",
    "Signature",
    "Task",
    "TaskFailed",
    "TaskRevoked",
    "TimeoutError",
    "chain",
    "chord",
    "group",
    "signature",
]


class Celery(Brigade):
    """A :class:`brigade.Brigade` built with Celery's arguments."""

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        *,
        token: str | None = None,
        **ignored: Any,
    ):
        url = None
        for candidate in (broker, backend):
            if candidate and candidate.startswith(("http://", "https://")):
                url = candidate
                break
            if candidate:
                warnings.warn(
                    f"brigade ignores the Celery broker/backend {candidate!r}: it is its own broker and "
                    "result store; the server is BRIGADE_SERVER (or pass an http:// URL)",
                    stacklevel=2,
                )
        super().__init__(url, token, main=main)


def signature(task: Task, args: Any = (), kwargs: Any = None, **options: Any) -> Signature:
    """Celery's ``signature(task, args, kwargs, **options)``."""
    return Signature(task, args, kwargs, **options)
