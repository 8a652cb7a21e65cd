"""Fixtures: the real brigade server binary on a temp SQLite file, and
Python worker processes (``python -m brigade worker tasks_app:app``).

The binary is ``$BRIGADE_BIN`` (default ``$CARGO_TARGET_DIR/debug/brigade``,
then ``target/debug/brigade`` from the repository root)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import brigade

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
# Short timings, so a killed worker's task comes back within seconds.
LEASE_TTL_MS = 2000
HEARTBEAT_MS = 300


def brigade_bin() -> str:
    explicit = os.environ.get("BRIGADE_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return str(Path(target) / "debug" / "brigade")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    def __init__(self, tmp: Path, lease_ttl_ms: int = LEASE_TTL_MS, port: int | None = None):
        self.binary = brigade_bin()
        if not os.path.exists(self.binary):
            pytest.exit(f"no brigade binary at {self.binary}: build it or set BRIGADE_BIN", 2)
        self.tmp = tmp
        self.lease_ttl_ms = lease_ttl_ms
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        self.start()

    def start(self):
        """(Re)start on the same port and database."""
        binary, tmp = self.binary, self.tmp
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                binary, "server",
                "--listen", f"127.0.0.1:{self.port}",
                "--database-url", f"sqlite://{tmp}/brigade.db",
                "--lease-ttl-ms", str(self.lease_ttl_ms),
                "--heartbeat-ms", str(HEARTBEAT_MS),
            ],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "RUST_LOG": "info,sqlx=warn"},
        )
        client = brigade.Client(self.url)
        wait_for(lambda: self.proc.poll() is not None or client.ready(), 60, "the server to start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"the server died: {self.log_path.read_text()}")
        client.close()

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class WorkerProc:
    """A Python worker process serving ``queues``."""

    def __init__(self, server: Server, tmp: Path, name: str, queues: str = "default", *extra: str, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = tmp / f"worker-{name}.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "brigade", "worker", "tasks_app:app", "--name", name, "--queues", queues, *extra],
            cwd=HERE,
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "BRIGADE_SERVER": server.url, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.pid = self.proc.pid
        client = brigade.Client(server.url)
        self.id = wait_for(
            lambda: next((w["id"] for w in client.workers() if w["name"] == name and w["state"] == "active"), None)
            or (self.proc.poll() is not None and self._died()),
            30,
            f"worker {name} to join",
        )
        client.close()

    def _died(self):
        raise AssertionError(f"worker {self.name} died: {self.log_path.read_text()}")

    def output(self) -> str:
        return self.log_path.read_text()

    def term(self):
        self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def wait(self, timeout=30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def tmp_session():
    with tempfile.TemporaryDirectory(prefix="brigade-py-tests-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def server(tmp_session):
    s = Server(tmp_session)
    os.environ["BRIGADE_SERVER"] = s.url
    from tasks_app import app

    app.urls = [s.url]
    yield s
    s.stop()


@pytest.fixture(scope="session")
def worker(server, tmp_session):
    """One worker on the default queue for the tests that need no special one."""
    w = WorkerProc(server, tmp_session, "default-worker", "default", "--concurrency", "8")
    yield w
    w.stop()


@pytest.fixture
def start_worker(server, tmp_session):
    """Start workers of one's own (stopped at the end of the test)."""
    started = []

    def start(name, queues, *extra):
        w = WorkerProc(server, tmp_session, name, queues, *extra)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def app(server):
    from tasks_app import app

    return app
