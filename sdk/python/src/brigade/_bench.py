"""Tasks of ``python -m brigade bench`` (run by its worker process)."""

from __future__ import annotations

from .app import Brigade

app = Brigade()


@app.task(name="py-bench.noop")
def noop() -> None:
    return None


@app.task(name="py-bench.add")
def add(x: int, y: int) -> int:
    return x + y
