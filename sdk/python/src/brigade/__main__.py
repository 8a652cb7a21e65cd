"""``python -m brigade worker MODULE:APP`` and ``python -m brigade bench``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from .app import Brigade
from .errors import BrigadeError


def load_app(target: str) -> Brigade:
    """The app named ``module:attribute`` (``module`` alone: its ``app``)."""
    module_name, _, attr = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    app = getattr(module, attr or "app", None)
    if not isinstance(app, Brigade):
        raise SystemExit(f"{target}: {attr or 'app'} is not a brigade.Brigade app")
    return app


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        for kv in item.split(","):
            if not kv:
                continue
            k, sep, v = kv.partition("=")
            if not sep:
                raise SystemExit(f"--labels wants key=value, not {kv!r}")
            out[k] = v
    return out


def cmd_worker(a: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, a.loglevel.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: far too much for a worker.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = load_app(a.app)
    if a.server or a.token:
        app.urls = Brigade(a.server, a.token).urls if a.server else app.urls
        app.token = a.token or app.token
    w = app.worker(
        concurrency=a.concurrency,
        queues=[q for q in a.queues.split(",") if q],
        labels=_labels(a.labels),
        name=a.name,
        grace=a.grace,
        lease_wait=a.lease_wait,
    )
    try:
        w.run()
    except BrigadeError as e:
        # A refused join (bad token, bad kinds) is the user's to fix: say it plainly.
        raise SystemExit(f"brigade worker: {e}") from None
    return 0


# --- bench ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find_bin(explicit: str | None) -> str:
    for c in (explicit, os.environ.get("BRIGADE_BIN"), os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "brigade"), os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "brigade"), shutil.which("brigade")):
        if c and os.path.exists(c):
            return c
    raise SystemExit("no brigade binary: pass --bin, set BRIGADE_BIN, or --server URL")


class _Server:
    def __init__(self, binary: str):
        self.dir = tempfile.mkdtemp(prefix="brigade-py-bench-")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "server", "--listen", f"127.0.0.1:{self.port}", "--database-url", f"sqlite://{self.dir}/brigade.db"],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        c = Brigade(self.url)
        deadline = time.monotonic() + 60
        while not c.ready():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the server did not start; see {self.dir}/server.log")
            time.sleep(0.05)
        c.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _worker_proc(url: str, concurrency: int, queue: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "brigade", "worker", "brigade._bench:app", "--concurrency", str(concurrency), "--queues", queue, "--name", "py-bench", "--loglevel", "warning"],
        env={**os.environ, "BRIGADE_SERVER": url},
    )


def _stop(p: subprocess.Popen[bytes]) -> float | None:
    """Stop the worker; the CPU seconds (user + system) it used, when known."""
    p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        pid, _, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = 0
            return float(usage.ru_utime + usage.ru_stime)
        time.sleep(0.05)
    p.kill()
    p.wait()
    return None


def _ts(s: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def kv(k: str, v: Any) -> None:
    print(f"{k}={v}", flush=True)


def bench_throughput(url: str, tasks: int, concurrency: int) -> float:
    app = Brigade(url)
    queue = f"py-bench-{os.getpid()}"
    jobs = []
    left = tasks
    while left > 0:
        n = min(left, 10_000)
        jobs.append(app.submit({"name": "py-bench-throughput", "queue": queue, "tasks": [{"kind": "py-bench.noop", "input": {"args": [], "kwargs": {}}}] * n}))
        left -= n
    w = _worker_proc(url, concurrency, queue)
    cpu = None
    try:
        views = [app.wait_job(j.id, timeout=600) for j in jobs]
    finally:
        cpu = _stop(w)
    start = min(_ts(v["started_at"]) for v in views)
    end = max(_ts(v["finished_at"]) for v in views)
    ok = sum(v["progress"]["succeeded"] for v in views)
    rate = ok / max(end - start, 1e-9)
    kv("py_throughput_tasks", ok)
    kv("py_throughput_concurrency", concurrency)
    kv("py_throughput_seconds", f"{end - start:.3f}")
    kv("py_throughput_tasks_per_s", f"{rate:.0f}")
    if cpu:
        # What the worker itself costs: tasks per CPU-second of the worker
        # process (start-up included), whatever the server and the machine allow.
        kv("py_worker_cpu_s", f"{cpu:.2f}")
        kv("py_worker_tasks_per_cpu_s", f"{ok / cpu:.0f}")
    app.close()
    return rate


def bench_latency(url: str, runs: int) -> float:
    from . import _bench

    _bench.app.urls = [url]
    queue = f"py-bench-lat-{os.getpid()}"
    w = _worker_proc(url, 8, queue)
    try:
        samples = []
        for i in range(runs + 1):
            t = time.perf_counter()
            r = _bench.add.apply_async((2, 3), queue=queue)
            assert r.get(timeout=30) == 5
            if i:  # the first warms the connections up
                samples.append((time.perf_counter() - t) * 1000)
    finally:
        _stop(w)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    kv("py_latency_runs", len(samples))
    kv("py_latency_p50_ms", f"{p50:.3f}")
    kv("py_latency_p99_ms", f"{p99:.3f}")
    return p50


def rust_bench(binary: str, args: list[str]) -> dict[str, str]:
    out = subprocess.run([binary, "bench", *args], capture_output=True, text=True, env={**os.environ, "RUST_LOG": "warn"})
    if out.returncode != 0:
        print(out.stdout + out.stderr, file=sys.stderr)
        raise SystemExit(f"brigade bench {' '.join(args)} failed")
    figures: dict[str, str] = {}
    for m in re.finditer(r"^(\w+)=(\S+)$", out.stdout, re.M):
        figures[m.group(1)] = m.group(2)
    return figures


def cmd_bench(a: argparse.Namespace) -> int:
    binary = None if a.server else _find_bin(a.bin)
    if binary:
        kv("server_binary", binary)

    def on_server(run: Any) -> Any:
        # Each scenario on a fresh server (as `brigade bench` does), so the
        # latency run does not inherit the throughput run's 20 000 rows.
        if a.server:
            return run(a.server)
        assert binary is not None
        server = _Server(binary)
        try:
            return run(server.url)
        finally:
            server.stop()

    if a.scenario in ("throughput", "all"):
        rate = on_server(lambda url: bench_throughput(url, a.tasks, a.concurrency))
        kv("py_throughput_target_met", "yes" if rate >= 3000 else "no")
    if a.scenario in ("latency", "all"):
        p50 = on_server(lambda url: bench_latency(url, a.runs))
        if a.rust:
            binary = binary or _find_bin(a.bin)
            r = rust_bench(binary, ["latency", "--latency-runs", str(a.runs)])
            rust = float(r["latency_p50_ms"])
            kv("rust_latency_p50_ms", f"{rust:.3f}")
            kv("rust_latency_p99_ms", r.get("latency_p99_ms"))
            kv("py_over_rust_p50", f"{p50 / rust:.2f}")
    if a.rust and a.scenario in ("throughput", "all"):
        binary = binary or _find_bin(a.bin)
        r = rust_bench(binary, ["throughput", "--workers", "1", "--capacity", str(a.concurrency), "--tasks", str(a.tasks)])
        for k, v in r.items():
            if "throughput" in k or "tasks_per_s" in k:
                kv(f"rust_{k}", v)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m brigade", description="brigade for Python")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="run a worker for an app's tasks")
    w.add_argument("app", help="module:attribute of the Brigade app (e.g. tasks:app)")
    w.add_argument("--concurrency", "-c", type=int, default=8, help="tasks run at once (default 8)")
    w.add_argument("--queues", "-Q", default="default", help="queues served, comma-separated (default: default)")
    w.add_argument("--labels", "-l", action="append", default=[], help="k=v labels, repeatable or comma-separated")
    w.add_argument("--name", "-n", default=None, help="a name for humans (default: the host name)")
    w.add_argument("--grace", type=float, default=30.0, help="seconds running tasks get to finish on SIGTERM (default 30)")
    w.add_argument("--lease-wait", type=float, default=30.0, help="longest lease long-poll in seconds (default 30)")
    w.add_argument("--server", default=None, help="server URL(s) (default: BRIGADE_SERVER or the app's)")
    w.add_argument("--token", default=None, help="token (default: BRIGADE_TOKEN)")
    w.add_argument("--loglevel", default="info")
    w.set_defaults(func=cmd_worker)
    b = sub.add_parser("bench", help="measure one Python worker: noop throughput and add.delay().get() latency")
    b.add_argument("scenario", nargs="?", default="all", choices=["all", "throughput", "latency"])
    b.add_argument("--server", default=None, help="use this server (default: start one from --bin on a temp SQLite file)")
    b.add_argument("--bin", default=None, help="brigade binary (default: BRIGADE_BIN, target/{release,debug}/brigade, PATH)")
    b.add_argument("--tasks", type=int, default=20_000)
    b.add_argument("--concurrency", type=int, default=256)
    b.add_argument("--runs", type=int, default=200, help="round trips of the latency run")
    b.add_argument("--rust", action="store_true", help="also run the Rust worker's `brigade bench` figures to compare")
    b.set_defaults(func=cmd_bench)
    a = p.parse_args(argv)
    return int(a.func(a) or 0)


if __name__ == "__main__":
    sys.exit(main())
