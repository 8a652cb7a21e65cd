"""HTTP plumbing shared by the sync and async clients: base URLs with
fail-over, the bearer token, problem+json errors, retries of requests that are
safe to repeat."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any, Protocol

import httpx

from .errors import ApiError, NotFound, Unreachable

DEFAULT_URL = "http://127.0.0.1:7070"
USER_AGENT = "brigade-python/0.1.0"
# Transport failures are retried this many times over the URLs (with a
# short backoff); every request the SDK sends is safe to repeat (submits
# carry an Idempotency-Key).
ATTEMPTS = 3


def resolve(url: str | None, token: str | None) -> tuple[list[str], str | None]:
    """Base URLs (``BRIGADE_SERVER``, comma-separated for fail-over) and token
    (``BRIGADE_TOKEN``), arguments first."""
    raw = url or os.environ.get("BRIGADE_SERVER") or DEFAULT_URL
    urls = [u.strip().rstrip("/") for u in raw.split(",") if u.strip()]
    if not urls:
        urls = [DEFAULT_URL]
    return urls, token if token is not None else (os.environ.get("BRIGADE_TOKEN") or None)


def use_httpx() -> bool:
    """Whether the hot paths (the sync client, the worker) go through httpx
    rather than the SDK's lean HTTP/1.1 client: when ``BRIGADE_HTTPX=1``, or
    when a proxy is configured in the environment (httpx honours it)."""
    if os.environ.get("BRIGADE_HTTPX") or os.environ.get("BRIGADE_WORKER_HTTPX"):
        return True
    return any(os.environ.get(v) for v in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"))


def headers(token: str | None) -> dict[str, str]:
    h = {"user-agent": USER_AGENT, "accept": "application/json"}
    if token:
        h["authorization"] = f"Bearer {token}"
    return h


class Reply(Protocol):
    """What is read of a response (httpx's, or the worker's own client's)."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...

    @property
    def reason_phrase(self) -> str: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def raise_for(resp: Reply) -> None:
    """ApiError (NotFound for 404) when ``resp`` is not a success."""
    if resp.status_code < 400:
        return
    try:
        problem = resp.json()
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)}
    except ValueError:
        problem = {"detail": resp.text[:500] or resp.reason_phrase}
    cls = NotFound if resp.status_code == 404 else ApiError
    raise cls(resp.status_code, problem)


def body(resp: Reply) -> Any:
    raise_for(resp)
    if resp.status_code == 204 or not resp.content:
        return None
    return resp.json()


def new_idempotency_key() -> str:
    return f"py-{uuid.uuid4()}"


def current_traceparent() -> str | None:
    """The active OpenTelemetry span's ``traceparent``, when ``opentelemetry``
    is installed and a span is active; ``None`` otherwise."""
    try:
        from opentelemetry import propagate  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def submit_headers(key: str, traceparent: str | None) -> dict[str, str]:
    """The headers of ``POST /v1/jobs``: its idempotency key and the trace
    context to make the job's trace a child of (the server ignores a
    malformed one)."""
    headers = {"idempotency-key": key}
    tp = traceparent or current_traceparent()
    if tp:
        headers["traceparent"] = tp
    return headers


class Conn:
    """Synchronous connection to one or several servers."""

    def __init__(self, urls: list[str], token: str | None, timeout: float = 30.0):
        self.urls = urls
        self.token = token
        self._at = 0
        self._client = httpx.Client(headers=headers(token), timeout=httpx.Timeout(timeout, connect=5.0))

    @property
    def url(self) -> str:
        return self.urls[self._at]

    def request(self, method: str, path: str, *, read_timeout: float | None = None, **kw: Any) -> httpx.Response:
        if read_timeout is not None:
            kw["timeout"] = httpx.Timeout(read_timeout, connect=5.0)
        last: Exception | None = None
        for i in range(ATTEMPTS * len(self.urls)):
            try:
                return self._client.request(method, self.url + path, **kw)
            except httpx.TransportError as e:
                last = e
                self._at = (self._at + 1) % len(self.urls)
                if (i + 1) % len(self.urls) == 0:
                    time.sleep(0.1 * (i + 1))
        raise Unreachable(f"no brigade server answered at {', '.join(self.urls)}: {last}") from last

    def call(self, method: str, path: str, **kw: Any) -> Any:
        return body(self.request(method, path, **kw))

    def stream(self, method: str, path: str, **kw: Any) -> Any:
        return self._client.stream(method, self.url + path, timeout=httpx.Timeout(None, connect=5.0), **kw)

    def close(self) -> None:
        self._client.close()


class AsyncConn:
    """Asynchronous connection to one or several servers."""

    def __init__(self, urls: list[str], token: str | None, timeout: float = 30.0):
        self.urls = urls
        self.token = token
        self._at = 0
        self._client = httpx.AsyncClient(
            headers=headers(token),
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    @property
    def url(self) -> str:
        return self.urls[self._at]

    async def request(
        self, method: str, path: str, *, read_timeout: float | None = None, retry: bool = True, **kw: Any
    ) -> httpx.Response:
        if read_timeout is not None:
            kw["timeout"] = httpx.Timeout(read_timeout, connect=5.0)
        last: Exception | None = None
        tries = ATTEMPTS * len(self.urls) if retry else 1
        for i in range(tries):
            try:
                return await self._client.request(method, self.url + path, **kw)
            except httpx.TransportError as e:
                last = e
                self._at = (self._at + 1) % len(self.urls)
                if retry and (i + 1) % len(self.urls) == 0:
                    await asyncio.sleep(0.1 * (i + 1))
        raise Unreachable(f"no brigade server answered at {', '.join(self.urls)}: {last}") from last

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        return body(await self.request(method, path, **kw))

    def stream(self, method: str, path: str, **kw: Any) -> Any:
        return self._client.stream(method, self.url + path, timeout=httpx.Timeout(None, connect=5.0), **kw)

    async def close(self) -> None:
        await self._client.aclose()
