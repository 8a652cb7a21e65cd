"""REST clients of the brigade API: :class:`Client` (sync) and
:class:`AsyncClient` (asyncio), with :class:`Job` handles and a
:class:`JobBuilder`.

:class:`brigade.Brigade` and :class:`brigade.AsyncBrigade` are these clients
plus the task registry; most code uses those.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from . import _http
from ._fasthttp import SyncFastConn
from .errors import TimeoutError as WaitTimeout

FINISHED = ("succeeded", "failed", "cancelled")
# The server holds a job long-poll at most this long; longer waits loop.
MAX_WAIT_MS = 60_000
# Most tasks in one job (the server's limit).
MAX_TASKS = 10_000


def _wait_ms(deadline: float | None) -> int:
    """The next long-poll's ``wait_ms``: the time left, at most the server's cap."""
    left = MAX_WAIT_MS if deadline is None else int((deadline - time.monotonic()) * 1000)
    return max(0, min(MAX_WAIT_MS, left))


def _q(s: str) -> str:
    return quote(s, safe="")


def _limit_body(concurrency: int | None, rate: int | None, per: float | None, burst: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if concurrency is not None:
        body["concurrency"] = int(concurrency)
    if rate is not None:
        body["rate"] = int(rate)
    if per is not None:
        body["per_ms"] = max(1, int(per * 1000))
    if burst is not None:
        body["burst"] = int(burst)
    return body


class JobBuilder:
    """Build a job's JSON: ``JobBuilder(name="x").add("sleep", {"ms": 5}).add(...)``.

    Every keyword of :meth:`add` is a task field of the API (``priority``,
    ``max_attempts``, ``timeout_ms``, ``backoff``, ``requires``, ``run_at``,
    ``name``, ``queue``).
    """

    def __init__(self, name: str | None = None, queue: str | None = None, labels: dict[str, str] | None = None):
        self.name = name
        self.queue = queue
        self.labels = dict(labels or {})
        self.tasks: list[dict[str, Any]] = []

    def add(self, kind: str, input: Any = None, **fields: Any) -> JobBuilder:
        """Append a task of ``kind`` with ``input``."""
        task: dict[str, Any] = {"kind": kind, "input": input}
        task.update({k: v for k, v in fields.items() if v is not None})
        self.tasks.append(task)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of ``POST /v1/jobs``."""
        d: dict[str, Any] = {"tasks": self.tasks}
        if self.name is not None:
            d["name"] = self.name
        if self.queue is not None:
            d["queue"] = self.queue
        if self.labels:
            d["labels"] = self.labels
        return d


def _job_body(job: dict[str, Any] | JobBuilder | Iterable[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(job, JobBuilder):
        return job.to_dict()
    if isinstance(job, dict):
        return job
    return {"tasks": list(job)}


def _parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each Server-Sent Event in ``lines``."""
    event, ident = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data), ident
            event, ident = "message", None
            data = []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                ident = value


def _event(event: str, data: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = {"data": data}
    if isinstance(parsed, dict):
        parsed.setdefault("type", event)
        return parsed
    return {"type": event, "data": parsed}


class Job:
    """A submitted job. ``view`` is its last read (the API's JobView)."""

    def __init__(self, client: Client, view: dict[str, Any]):
        self.client = client
        self.view = view

    @property
    def id(self) -> str:
        return str(self.view["id"])

    @property
    def state(self) -> str:
        """``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled`` (as last read)."""
        return str(self.view.get("state"))

    @property
    def progress(self) -> dict[str, int]:
        """Tasks per state (as last read)."""
        return dict(self.view.get("progress") or {})

    @property
    def task_ids(self) -> list[str]:
        """Ids of its tasks in submission order (known after a submit)."""
        ids = self.view.get("task_ids")
        if ids is None:
            ids = [t["id"] for t in self.tasks()]
            self.view["task_ids"] = ids
        return list(ids)

    def finished(self) -> bool:
        return self.state in FINISHED

    def refresh(self) -> Job:
        ids = self.view.get("task_ids")
        self.view = self.client.get_job(self.id)
        if ids is not None:
            self.view["task_ids"] = ids
        return self

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job is finished; :class:`brigade.TimeoutError` after ``timeout`` seconds."""
        ids = self.view.get("task_ids")
        self.view = self.client.wait_job(self.id, timeout)
        if ids is not None:
            self.view["task_ids"] = ids
        return self

    def tasks(self, state: str | None = None) -> list[dict[str, Any]]:
        """Its tasks (TaskView dicts, with output and error), in submission order."""
        return self.client.job_tasks(self.id, state=state)

    def results(self) -> list[Any]:
        """The outputs of its tasks, in submission order."""
        return [t.get("output") for t in self.tasks()]

    def cancel(self) -> Job:
        self.view = self.client.cancel_job(self.id)
        return self

    def events(self) -> Iterator[dict[str, Any]]:
        """Its live events (see :meth:`Client.events`)."""
        return self.client.events(job=self.id)

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.state}>"


class Client:
    """Synchronous client of the REST API.

    ``url`` defaults to ``BRIGADE_SERVER`` (several comma-separated URLs fail
    over), then ``http://127.0.0.1:7070``; ``token`` to ``BRIGADE_TOKEN``.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0):
        self.urls, self.token = _http.resolve(url, token)
        self.timeout = timeout
        self._conn: _http.Conn | SyncFastConn | None = None

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def conn(self) -> _http.Conn | SyncFastConn:
        # Connect lazily: importing a module that builds an app must not.
        if self._conn is None:
            if _http.use_httpx():
                self._conn = _http.Conn(self.urls, self.token, self.timeout)
            else:
                self._conn = SyncFastConn(self.urls, self.token, self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # jobs
    def submit(
        self,
        job: dict[str, Any] | JobBuilder | Iterable[dict[str, Any]],
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Job:
        """Submit a job (a dict as ``POST /v1/jobs`` takes it, a :class:`JobBuilder`,
        or a list of task dicts). Every submit carries an ``Idempotency-Key``
        (one is made up when not given), so a retry after a lost reply does not
        submit twice.

        ``traceparent`` (W3C Trace Context) makes the job's trace a child of
        yours; when not given, the current OpenTelemetry span's is sent, if
        ``opentelemetry`` is installed and a span is active."""
        key = idempotency_key or _http.new_idempotency_key()
        headers = _http.submit_headers(key, traceparent)
        view = self.conn.call("POST", "/v1/jobs", json=_job_body(job), headers=headers)
        return Job(self, view)

    def job(self, id: str) -> Job:
        return Job(self, self.get_job(id))

    def get_job(self, id: str) -> dict[str, Any]:
        return self.conn.call("GET", f"/v1/jobs/{_q(id)}")

    def wait_job(self, id: str, timeout: float | None = None) -> dict[str, Any]:
        """The job once finished (long-polls ``GET /v1/jobs/{id}?wait_ms=``)."""
        return self._wait(f"/v1/jobs/{_q(id)}", f"job {id}", timeout)

    def wait_task(self, id: str, timeout: float | None = None) -> dict[str, Any]:
        """The task once finished (long-polls ``GET /v1/tasks/{id}?wait_ms=``)."""
        return self._wait(f"/v1/tasks/{_q(id)}", f"task {id}", timeout)

    def _wait(self, path: str, what: str, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _wait_ms(deadline)
            view = self.conn.call("GET", path, params={"wait_ms": wait}, read_timeout=wait / 1000 + 30)
            if view.get("state") in FINISHED:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"{what} is still {view.get('state')} after {timeout} s")

    def jobs(
        self, state: str | None = None, name: str | None = None, label: str | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Jobs, newest first, page after page (``limit``: at most that many)."""
        params: dict[str, Any] = {k: v for k, v in (("state", state), ("name", name), ("label", label)) if v}
        yield from self._pages("/v1/jobs", params, limit)

    def job_tasks(self, id: str, state: str | None = None) -> list[dict[str, Any]]:
        params = {"state": state} if state else {}
        return list(self._pages(f"/v1/jobs/{_q(id)}/tasks", params, None))

    def cancel_job(self, id: str) -> dict[str, Any]:
        return self.conn.call("POST", f"/v1/jobs/{_q(id)}/cancel")

    def delete_job(self, id: str) -> None:
        self.conn.call("DELETE", f"/v1/jobs/{_q(id)}")

    # tasks
    def get_task(self, id: str) -> dict[str, Any]:
        """A task (TaskView) with its output, error and history."""
        return self.conn.call("GET", f"/v1/tasks/{_q(id)}")

    def cancel_task(self, id: str) -> dict[str, Any]:
        return self.conn.call("POST", f"/v1/tasks/{_q(id)}/cancel")

    def retry_task(self, id: str) -> dict[str, Any]:
        return self.conn.call("POST", f"/v1/tasks/{_q(id)}/retry")

    def task_logs(self, id: str) -> list[dict[str, Any]]:
        """A task's log lines, oldest first, every attempt."""
        return list(self._pages(f"/v1/tasks/{_q(id)}/logs", {}, None))

    # cluster
    def workers(self) -> list[dict[str, Any]]:
        return self.conn.call("GET", "/v1/workers")

    def queues(self) -> list[dict[str, Any]]:
        return self.conn.call("GET", "/v1/queues")

    # limits
    def limits(self) -> list[dict[str, Any]]:
        """Every limit with what its keys use now (``running``, ``started``,
        ``waiting``, and per concrete key under ``keys``)."""
        return self.conn.call("GET", "/v1/limits")

    def limit(self, key: str) -> dict[str, Any]:
        """One limit; :class:`NotFound` when none is set on ``key``."""
        return self.conn.call("GET", f"/v1/limits/{_q(key)}")

    def set_limit(
        self,
        key: str,
        *,
        concurrency: int | None = None,
        rate: int | None = None,
        per: float | None = None,
        burst: int | None = None,
    ) -> dict[str, Any]:
        """Set the cluster-wide limit of ``key``, or of each key a pattern
        (``"tenant:*"``) matches (admin): at most ``concurrency`` tasks naming
        it at once, at most ``rate`` starts per ``per`` seconds (default 1)
        with ``burst`` at once. Tasks name keys with ``limits=[...]``."""
        return self.conn.call("PUT", f"/v1/limits/{_q(key)}", json=_limit_body(concurrency, rate, per, burst))

    def delete_limit(self, key: str) -> None:
        """Remove a limit (admin)."""
        self.conn.call("DELETE", f"/v1/limits/{_q(key)}")

    def ready(self) -> bool:
        try:
            return self.conn.request("GET", "/readyz").status_code == 200
        except Exception:
            return False

    def events(self, job: str | None = None) -> Iterator[dict[str, Any]]:
        """Live events (``GET /v1/events``, Server-Sent Events) from now on, as
        dicts with ``type`` (``task.succeeded``, ``job.finished``...). Clients
        follow one of their own jobs (``job=``); admins may follow all. The
        iterator ends when the server ends the stream (shutdown, or a
        ``stream.lagged`` notice for a reader too slow)."""
        params = {"job": job} if job else {}
        with self.conn.stream("GET", "/v1/events", params=params, headers={"accept": "text/event-stream"}) as resp:
            if resp.status_code >= 400:
                resp.read()
                _http.raise_for(resp)
            for event, data, _ in _parse_sse(resp.iter_lines()):
                yield _event(event, data)

    def _pages(self, path: str, params: dict[str, Any], limit: int | None) -> Iterator[dict[str, Any]]:
        n = 0
        cursor = None
        while True:
            p = dict(params, limit=1000 if limit is None else max(1, min(1000, limit - n)))
            if cursor:
                p["cursor"] = cursor
            page = self.conn.call("GET", path, params=p)
            for item in page.get("items", []):
                yield item
                n += 1
                if limit is not None and n >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return


class AsyncJob:
    """A submitted job, for asyncio code."""

    def __init__(self, client: AsyncClient, view: dict[str, Any]):
        self.client = client
        self.view = view

    @property
    def id(self) -> str:
        return str(self.view["id"])

    @property
    def state(self) -> str:
        return str(self.view.get("state"))

    @property
    def progress(self) -> dict[str, int]:
        return dict(self.view.get("progress") or {})

    @property
    def task_ids(self) -> list[str]:
        return list(self.view.get("task_ids") or [])

    def finished(self) -> bool:
        return self.state in FINISHED

    async def refresh(self) -> AsyncJob:
        ids = self.view.get("task_ids")
        self.view = await self.client.get_job(self.id)
        if ids is not None:
            self.view["task_ids"] = ids
        return self

    async def wait(self, timeout: float | None = None) -> AsyncJob:
        ids = self.view.get("task_ids")
        self.view = await self.client.wait_job(self.id, timeout)
        if ids is not None:
            self.view["task_ids"] = ids
        return self

    async def tasks(self, state: str | None = None) -> list[dict[str, Any]]:
        return await self.client.job_tasks(self.id, state=state)

    async def results(self) -> list[Any]:
        return [t.get("output") for t in await self.tasks()]

    async def cancel(self) -> AsyncJob:
        self.view = await self.client.cancel_job(self.id)
        return self

    def events(self) -> AsyncIterator[dict[str, Any]]:
        return self.client.events(job=self.id)

    def __repr__(self) -> str:
        return f"<AsyncJob {self.id} {self.state}>"


class AsyncClient:
    """The asyncio twin of :class:`Client`: the same methods, awaited."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0):
        self.urls, self.token = _http.resolve(url, token)
        self.timeout = timeout
        self._conn: _http.AsyncConn | None = None

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def conn(self) -> _http.AsyncConn:
        if self._conn is None:
            self._conn = _http.AsyncConn(self.urls, self.token, self.timeout)
        return self._conn

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def submit(
        self,
        job: dict[str, Any] | JobBuilder | Iterable[dict[str, Any]],
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> AsyncJob:
        """As :meth:`Client.submit`."""
        key = idempotency_key or _http.new_idempotency_key()
        headers = _http.submit_headers(key, traceparent)
        view = await self.conn.call("POST", "/v1/jobs", json=_job_body(job), headers=headers)
        return AsyncJob(self, view)

    async def job(self, id: str) -> AsyncJob:
        return AsyncJob(self, await self.get_job(id))

    async def get_job(self, id: str) -> dict[str, Any]:
        return await self.conn.call("GET", f"/v1/jobs/{_q(id)}")

    async def wait_job(self, id: str, timeout: float | None = None) -> dict[str, Any]:
        """The job once finished (long-polls ``GET /v1/jobs/{id}?wait_ms=``)."""
        return await self._wait(f"/v1/jobs/{_q(id)}", f"job {id}", timeout)

    async def wait_task(self, id: str, timeout: float | None = None) -> dict[str, Any]:
        """The task once finished (long-polls ``GET /v1/tasks/{id}?wait_ms=``)."""
        return await self._wait(f"/v1/tasks/{_q(id)}", f"task {id}", timeout)

    async def _wait(self, path: str, what: str, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _wait_ms(deadline)
            view = await self.conn.call("GET", path, params={"wait_ms": wait}, read_timeout=wait / 1000 + 30)
            if view.get("state") in FINISHED:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"{what} is still {view.get('state')} after {timeout} s")

    async def jobs(
        self, state: str | None = None, name: str | None = None, label: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {k: v for k, v in (("state", state), ("name", name), ("label", label)) if v}
        return await self._pages("/v1/jobs", params, limit)

    async def job_tasks(self, id: str, state: str | None = None) -> list[dict[str, Any]]:
        return await self._pages(f"/v1/jobs/{_q(id)}/tasks", {"state": state} if state else {}, None)

    async def cancel_job(self, id: str) -> dict[str, Any]:
        return await self.conn.call("POST", f"/v1/jobs/{_q(id)}/cancel")

    async def delete_job(self, id: str) -> None:
        await self.conn.call("DELETE", f"/v1/jobs/{_q(id)}")

    async def get_task(self, id: str) -> dict[str, Any]:
        return await self.conn.call("GET", f"/v1/tasks/{_q(id)}")

    async def cancel_task(self, id: str) -> dict[str, Any]:
        return await self.conn.call("POST", f"/v1/tasks/{_q(id)}/cancel")

    async def retry_task(self, id: str) -> dict[str, Any]:
        return await self.conn.call("POST", f"/v1/tasks/{_q(id)}/retry")

    async def task_logs(self, id: str) -> list[dict[str, Any]]:
        return await self._pages(f"/v1/tasks/{_q(id)}/logs", {}, None)

    async def workers(self) -> list[dict[str, Any]]:
        return await self.conn.call("GET", "/v1/workers")

    async def queues(self) -> list[dict[str, Any]]:
        return await self.conn.call("GET", "/v1/queues")

    async def limits(self) -> list[dict[str, Any]]:
        return await self.conn.call("GET", "/v1/limits")

    async def limit(self, key: str) -> dict[str, Any]:
        return await self.conn.call("GET", f"/v1/limits/{_q(key)}")

    async def set_limit(
        self,
        key: str,
        *,
        concurrency: int | None = None,
        rate: int | None = None,
        per: float | None = None,
        burst: int | None = None,
    ) -> dict[str, Any]:
        """See :meth:`Client.set_limit`."""
        return await self.conn.call("PUT", f"/v1/limits/{_q(key)}", json=_limit_body(concurrency, rate, per, burst))

    async def delete_limit(self, key: str) -> None:
        await self.conn.call("DELETE", f"/v1/limits/{_q(key)}")

    async def events(self, job: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Live events as an async iterator (see :meth:`Client.events`)."""
        params = {"job": job} if job else {}
        async with self.conn.stream(
            "GET", "/v1/events", params=params, headers={"accept": "text/event-stream"}
        ) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                _http.raise_for(resp)
            event = "message"
            data: list[str] = []
            async for line in resp.aiter_lines():
                if line == "":
                    if data:
                        yield _event(event, "\n".join(data))
                    event = "message"
                    data = []
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        event = value
                    elif field == "data":
                        data.append(value)

    async def _pages(self, path: str, params: dict[str, Any], limit: int | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            p = dict(params, limit=1000 if limit is None else max(1, min(1000, limit - len(out))))
            if cursor:
                p["cursor"] = cursor
            page = await self.conn.call("GET", path, params=p)
            out.extend(page.get("items", []))
            if limit is not None and len(out) >= limit:
                return out[:limit]
            cursor = page.get("next_cursor")
            if not cursor:
                return out
