# Celery's "First steps" tasks module and its retrying file task, ported to
# brigade: only the import changed (was: from celery import Celery).
from brigade.celery import Celery

app = Celery('tasks', broker='pyamqp://guest@localhost//')


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task(bind=True, max_retries=3)
def count_words(self, path):
    try:
        with open(path) as f:
            return len(f.read().split())
    except OSError as exc:
        raise self.retry(exc=exc, countdown=5)


# The "Next Steps" guide's proj/tasks.py adds these two, for the canvas (canvas.py).
@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)
