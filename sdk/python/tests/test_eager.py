"""brigade.testing: eager mode, no server."""

import asyncio

import pytest

from brigade import Brigade, GroupResult, TaskFailed, chain, chord, group
from brigade.testing import eager

app = Brigade("http://127.0.0.1:9")  # nothing listens: eager mode must not call it


@app.task
def add(x, y):
    return x + y


@app.task
async def async_mul(x, y):
    return x * y


@app.task(bind=True, max_attempts=3)
def flaky(ctx):
    if ctx.attempt < 3:
        raise ctx.retry(exc=OSError("again"), countdown=60)
    return ctx.attempt


@app.task(max_attempts=2)
def always_fails():
    raise KeyError("missing")


def test_eager_runs_in_process():
    with eager(app):
        r = add.delay(2, 3)
        assert r.get() == 5 and r.state == "SUCCESS"
        assert async_mul.delay(6, 7).get() == 42
        assert asyncio.run(_async_path()) == 9


async def _async_path():
    r = await async_mul.delay_async(3, 3)
    return await r.get_async()


def test_eager_retries_and_failures():
    with eager(app):
        assert flaky.delay().get() == 3
        r = always_fails.delay()
        with pytest.raises(TaskFailed) as info:
            r.get()
        assert info.value.type == "KeyError" and r.attempt == 2
        assert "always_fails" in info.value.traceback


def test_eager_checks_json_and_groups():
    with eager(app):
        with pytest.raises(TypeError):
            add.delay(object(), 1)
        assert group(add.s(i, 1) for i in range(4)).delay().get() == [1, 2, 3, 4]


def test_direct_call_runs_here():
    assert add(1, 2) == 3


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task(bind=True)
def steps(ctx, n):
    ctx.progress(n, 10, "half")
    return n


def test_eager_canvas():
    with eager(app):
        assert chain(add.s(2, 2), add.s(4)).delay().get() == 8
        r = chain(add.s(2, 2), add.s(4), add.s(8)).delay()
        assert (r.get(), r.parent.get(), r.parent.parent.get()) == (16, 8, 4)
        assert (add.s(4, 4) | async_mul.s(8))().get() == 64
        assert chain(add.s(1, 1), add.si(5, 5)).delay().get() == 10
        assert group(add.s(i, i) for i in range(10)).delay().get() == [2 * i for i in range(10)]
        assert chord(group(add.s(i, i) for i in range(10)), tsum.s()).delay().get() == 90
        assert chord(group(chain(add.s(1, 1), async_mul.s(3)), add.s(5, 5)), tsum.s()).delay().get() == 16
        g = chain(add.s(1, 1), group(add.s(1), add.s(2))).delay()
        assert isinstance(g, GroupResult) and g.get() == [3, 4]


def test_eager_chord_failure_cancels_the_body():
    with eager(app):
        r = chord(group(add.s(1, 1), always_fails.s()), tsum.s()).delay()
        with pytest.raises(TaskFailed) as info:
            r.get()
        assert info.value.type == "KeyError"
        assert r.state == "REVOKED" and r.view()["error"]["kind"] == "dependency"
        with pytest.raises(TaskFailed, match="missing"):
            chain(always_fails.s(), add.s(1)).delay().get()


def test_eager_progress():
    with eager(app):
        r = steps.delay(5)
        assert r.get() == 5
        assert r.progress == {"done": 5, "total": 10, "message": "half"}
        assert r.logs == ["[progress] 5/10 half"]
