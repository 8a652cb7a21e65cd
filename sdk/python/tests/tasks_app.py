"""Tasks the test suite's workers run (kinds ``tasks_app.*``)."""

import asyncio
import os
import time

from brigade import Brigade

app = Brigade()


def mark(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()


@app.task(max_attempts=3, timeout=30)
def add(x, y):
    return x + y


@app.task
def hello(name, greeting="hello"):
    return f"{greeting}, {name}"


@app.task
async def async_add(x, y):
    await asyncio.sleep(0.01)
    return x + y


@app.task(bind=True, max_attempts=5, retry_delay=0.2)
def flaky(ctx, succeed_on):
    ctx.log(f"attempt {ctx.attempt}")
    ctx.progress(ctx.attempt, succeed_on, "trying")
    try:
        if ctx.attempt < succeed_on:
            raise OSError(f"not yet (attempt {ctx.attempt})")
    except OSError as e:
        raise ctx.retry(exc=e, countdown=0.2)
    return {"attempt": ctx.attempt, "task_id": ctx.task_id, "job_id": ctx.job_id}


@app.task(max_attempts=1)
def boom(n):
    def inner_helper():
        raise ValueError(f"boom {n}")

    inner_helper()


@app.task(max_attempts=1, timeout=0.5)
def sleepy(seconds):
    time.sleep(seconds)
    return "woke"


@app.task(max_attempts=1, timeout=0.5)
async def async_sleepy(path, seconds):
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        mark(path, "cancelled")
        raise
    return "woke"


@app.task(bind=True, max_attempts=1, timeout=60)
async def async_wait_cancel(ctx, path):
    mark(path, "started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        mark(path, "cancelled")
        raise
    return "not cancelled"


@app.task(bind=True, max_attempts=1, timeout=60)
def sync_wait_cancel(ctx, path):
    mark(path, "started")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ctx.cancelled:
            mark(path, "saw cancelled")
            return None
        time.sleep(0.05)
    return "not cancelled"


@app.task(bind=True, max_attempts=3, timeout=60)
def slow_once(ctx, path, seconds, later_seconds=None):
    """Marks its start and its end with the worker's pid; attempts after the
    first take ``later_seconds`` when given."""
    mark(path, f"start {os.getpid()} {ctx.attempt}")
    if ctx.attempt > 1 and later_seconds is not None:
        seconds = later_seconds
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ctx.cancelled:
            mark(path, f"handed back {os.getpid()}")
            return None
        time.sleep(0.02)
    mark(path, f"done {os.getpid()}")
    return os.getpid()


@app.task
def not_json():
    return {1, 2, 3}


@app.task(max_attempts=1, timeout=60)
def tracked(path, seconds):
    """Marks its start and end with the monotonic clock (one clock per machine)."""
    mark(path, f"{time.monotonic():.6f} 1")
    time.sleep(seconds)
    mark(path, f"{time.monotonic():.6f} -1")


# The canvas (test_canvas.py).
@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@app.task
def big(n):
    return "x" * n


@app.task
def lengths(strings):
    return [len(s) for s in strings]


@app.task(bind=True, max_attempts=1, timeout=60)
def report_progress(ctx, path):
    """Reports progress, then waits for ``path`` to exist."""
    ctx.progress(3, 10, "three of ten")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(path):
        time.sleep(0.02)
    return "done"


@app.task(bind=True)
def trace_context(ctx):
    return ctx.traceparent
