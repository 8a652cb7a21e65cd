"""brigade for Python: a Celery-shaped client and worker for the brigade task runner.

>>> from brigade import Brigade
>>> app = Brigade()                      # BRIGADE_SERVER, BRIGADE_TOKEN
>>> @app.task(max_attempts=3, timeout=30)
... def add(x, y):
...     return x + y
>>> add.delay(2, 3).get(timeout=30)      # with a worker: python -m brigade worker tasks:app
5
"""

from .app import (
    AsyncBrigade,
    AsyncResult,
    Brigade,
    Context,
    GroupResult,
    Retry,
    Signature,
    Task,
    chain,
    chord,
    group,
)
from .client import AsyncClient, AsyncJob, Client, Job, JobBuilder
from .errors import ApiError, BrigadeError, NotFound, TaskFailed, TaskRevoked, TimeoutError, Unreachable

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncBrigade",
    "AsyncClient",
    "AsyncJob",
    "AsyncResult",
    "Brigade",
    "BrigadeError",
    "Client",
    "Context",
    "GroupResult",
    "Job",
    "JobBuilder",
    "NotFound",
    "Retry",
    "Signature",
    "Task",
    "TaskFailed",
    "TaskRevoked",
    "TimeoutError",
    "Unreachable",
    "chain",
    "chord",
    "group",
]
