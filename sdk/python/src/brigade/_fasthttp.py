"""A small asyncio HTTP/1.1 client for the worker's own protocol calls.

httpx's asyncio path costs about a millisecond of CPU per request here (three
times its sync client); the worker makes two requests per task round, and on
its event loop that time also delays the threads waiting for the GIL. This
client does only what the worker needs — keep-alive connections to the
brigade server, JSON bodies, ``Content-Length`` or chunked replies, TLS — and
costs a fraction of that. Everything else (the user-facing clients) uses
httpx. ``BRIGADE_HTTPX=1``, or a proxy set in the environment, makes them use
httpx as well.
"""

from __future__ import annotations

import asyncio
import json as _json
import socket
import ssl
from typing import Any
from urllib.parse import urlencode, urlsplit

from .errors import Unreachable

ATTEMPTS = 3
MAX_IDLE = 8


class Response:
    """The part of ``httpx.Response`` that :mod:`brigade._http` reads."""

    def __init__(self, status: int, reason: str, headers: dict[str, str], content: bytes):
        self.status_code = status
        self.reason_phrase = reason
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.content)


class _Origin:
    def __init__(self, url: str):
        u = urlsplit(url)
        self.tls = u.scheme == "https"
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if self.tls else 80)
        self.prefix = u.path.rstrip("/")
        self.host_header = u.netloc
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []


class _Stale(Exception):
    """A reused connection was closed by the server before it answered."""


class FastConn:
    """Asynchronous connection to one or several servers (fail-over), with the
    interface of :class:`brigade._http.AsyncConn`."""

    def __init__(self, urls: list[str], token: str | None, timeout: float = 30.0):
        self.urls = urls
        self.origins = [_Origin(u) for u in urls]
        self.token = token
        self.timeout = timeout
        self._at = 0
        self._ssl: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return self.urls[self._at]

    async def _connect(self, o: _Origin) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ctx = None
        if o.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        return await asyncio.wait_for(asyncio.open_connection(o.host, o.port, ssl=ctx), 5.0)

    async def _once(self, o: _Origin, head: bytes, payload: bytes, timeout: float) -> Response:
        reused = bool(o.idle)
        reader, writer = o.idle.pop() if reused else await self._connect(o)
        try:
            writer.write(head + payload)
            try:
                line = await asyncio.wait_for(reader.readline(), timeout)
            except (ConnectionError, asyncio.IncompleteReadError):
                line = b""
            if not line:
                raise _Stale() if reused else ConnectionError("the server closed the connection")
            resp, keep = await asyncio.wait_for(self._read(reader, line), timeout)
        except BaseException:
            writer.close()
            raise
        if keep and len(o.idle) < MAX_IDLE:
            o.idle.append((reader, writer))
        else:
            writer.close()
        return resp

    async def _read(self, reader: asyncio.StreamReader, line: bytes) -> tuple[Response, bool]:
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ConnectionError(f"not an HTTP reply: {line[:80]!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers: dict[str, str] = {}
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            content = b"".join(chunks)
        elif "content-length" in headers:
            content = await reader.readexactly(int(headers["content-length"]))
        elif status in (204, 304) or 100 <= status < 200:
            content = b""
        else:
            content = await reader.read()
            return Response(status, reason, headers, content), False
        keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
        return Response(status, reason, headers, content), keep

    def _head(self, o: _Origin, method: str, path: str, params: dict[str, Any] | None, body: bytes | None, extra: dict[str, str] | None) -> bytes:
        target = o.prefix + path
        if params:
            target += "?" + urlencode(params)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {o.host_header}", "User-Agent: brigade-python/0.1.0", "Accept: application/json"]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        elif method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")
        for k, v in (extra or {}).items():
            lines.append(f"{k}: {v}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = None,
        retry: bool = True,
    ) -> Response:
        body = None if json is None else _json.dumps(json, separators=(",", ":")).encode()
        timeout = self.timeout if read_timeout is None else read_timeout
        last: BaseException | None = None
        tries = ATTEMPTS * len(self.urls) if retry else 1
        i = 0
        while i < tries:
            o = self.origins[self._at]
            try:
                return await self._once(o, self._head(o, method, path, params, body, headers), body or b"", timeout)
            except _Stale:
                continue  # an idle connection the server had closed: not an attempt
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                last = e
                for _, w in o.idle:
                    w.close()
                o.idle.clear()
                self._at = (self._at + 1) % len(self.urls)
                i += 1
                if retry and i < tries and i % len(self.urls) == 0:
                    await asyncio.sleep(0.1 * i)
        raise Unreachable(f"no brigade server answered at {', '.join(self.urls)}: {last!r}") from last

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        from ._http import body

        return body(await self.request(method, path, **kw))

    async def close(self) -> None:
        for o in self.origins:
            for _, w in o.idle:
                w.close()
            o.idle.clear()


class SyncFastConn:
    """Synchronous twin for the client's calls, on the standard library's
    ``http.client``: about a fifth of httpx's per-request cost, which is most
    of ``add.delay(2, 3).get()``'s overhead over the server's own time.
    Keep-alive connections are per thread (``http.client`` connections are
    not thread-safe). The interface of :class:`brigade._http.Conn`; event
    streams still go through httpx (:meth:`stream`)."""

    def __init__(self, urls: list[str], token: str | None, timeout: float = 30.0):
        import threading

        self.urls = urls
        self.origins = [_Origin(u) for u in urls]
        self.token = token
        self.timeout = timeout
        self._at = 0
        self._local = threading.local()
        self._httpx: Any = None

    @property
    def url(self) -> str:
        return self.urls[self._at]

    def _conn(self, i: int, fresh: bool = False) -> Any:
        import http.client

        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        c = conns.get(i)
        if c is not None and not fresh:
            return c, True
        if c is not None:
            c.close()
        o = self.origins[i]
        if o.tls:
            c = http.client.HTTPSConnection(o.host, o.port, timeout=5.0, context=ssl.create_default_context())
        else:
            c = http.client.HTTPConnection(o.host, o.port, timeout=5.0)
        conns[i] = c
        return c, False

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> Response:
        import http.client

        body = None if json is None else _json.dumps(json, separators=(",", ":")).encode()
        h = {"User-Agent": "brigade-python/0.1.0", "Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        timeout = self.timeout if read_timeout is None else read_timeout
        last: BaseException | None = None
        tries = ATTEMPTS * len(self.urls)
        i = 0
        while i < tries:
            at = self._at
            o = self.origins[at]
            target = o.prefix + path + ("?" + urlencode(params) if params else "")
            c, reused = self._conn(at)
            try:
                if c.sock is None:
                    c.connect()
                    # As httpx does: no Nagle delay on small requests.
                    if c.sock is not None:
                        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    reused = False
                c.request(method, target, body=body, headers={"Host": o.host_header, **h})
                if c.sock is not None:
                    c.sock.settimeout(timeout)
                r = c.getresponse()
                content = r.read()
                if r.will_close:
                    c.close()
                return Response(r.status, r.reason, {k.lower(): v for k, v in r.getheaders()}, content)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                c.close()
                if reused:
                    # An idle connection the server had closed: not an attempt.
                    self._conn(at, fresh=True)
                    continue
                last = e
            except (OSError, http.client.HTTPException) as e:
                c.close()
                last = e
            self._conn(at, fresh=True)
            self._at = (self._at + 1) % len(self.urls)
            i += 1
            if i < tries and i % len(self.urls) == 0:
                import time

                time.sleep(0.1 * i)
        raise Unreachable(f"no brigade server answered at {', '.join(self.urls)}: {last!r}") from last

    def call(self, method: str, path: str, **kw: Any) -> Any:
        from ._http import body

        return body(self.request(method, path, **kw))

    def stream(self, method: str, path: str, **kw: Any) -> Any:
        from ._http import Conn

        if self._httpx is None:
            self._httpx = Conn(self.urls, self.token, self.timeout)
        return self._httpx.stream(method, path, **kw)

    def close(self) -> None:
        for c in (getattr(self._local, "conns", None) or {}).values():
            c.close()
        if self._httpx is not None:
            self._httpx.close()
