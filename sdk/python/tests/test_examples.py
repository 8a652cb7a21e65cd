"""examples/python (Celery's examples, ported by changing imports) run as they are."""

import os
import signal
import subprocess
import sys

from conftest import REPO

EXAMPLES = REPO / "examples" / "python"


def test_celery_examples_run_unchanged(server, tmp_path):
    env = {**os.environ, "BRIGADE_SERVER": server.url, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "brigade", "worker", "tasks:app", "--name", "examples", "--concurrency", "4"],
        cwd=EXAMPLES,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        out = subprocess.run(
            [sys.executable, "client.py"], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert "add: 8" in lines
        assert "ready: True" in lines
        assert "group: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" in lines
        assert "count_words: 9" in lines
        assert "tsum: 6" in lines
        assert "failed: TaskFailed TypeError" in lines
        # The AMQP broker URL is ignored, and says so.
        assert "ignores the Celery broker" in out.stderr

        out = subprocess.run(
            [sys.executable, "canvas.py"], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [
            "partial: 10",
            "group: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]",
            "partial group: [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]",
            "chain: 64",
            "partial chain: 64",
            "pipe: 64",
            "three steps: 16",
            "parent: 8",
            "grandparent: 4",
            "immutable: 16",
            "chord: 90",
            "group | task: 90",
            "chord of 100: 9900",
        ]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        log.close()
