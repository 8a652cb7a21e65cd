"""Submit → wait → tasks through the client openapi-python-client generated
from /openapi.json (package ``brigade_client``). Exits non-zero on any
mismatch."""

import sys

from brigade_client import Client
from brigade_client.api.jobs import get_job, list_job_tasks, list_jobs, submit_job
from brigade_client.models import JobSubmit, TaskSpec

url = sys.argv[1]
client = Client(base_url=url, raise_on_unexpected_status=True)

body = JobSubmit(name="openapi-check", tasks=[TaskSpec(kind="echo", input_={"n": i}) for i in range(3)])
resp = submit_job.sync_detailed(client=client, body=body)
assert resp.status_code == 201, (resp.status_code, resp.content)
job = resp.parsed
print(f"submitted job {job.id}")

state = None
for _ in range(20):
    view = get_job.sync(job.id, client=client, wait_ms=30_000)
    state = view.state.value if hasattr(view.state, "value") else view.state
    if state in ("succeeded", "failed", "cancelled"):
        break
assert state == "succeeded", f"job ended {state}"
print(f"job {job.id} {state}")

page = list_job_tasks.sync(job.id, client=client, limit=10)
outputs = [t.output for t in page.items]
assert outputs == [{"n": 0}, {"n": 1}, {"n": 2}], outputs
print(f"tasks: {outputs}")

jobs = list_jobs.sync(client=client, name="openapi-check", limit=5)
assert any(j.id == job.id for j in jobs.items)
print("ok: submit, wait, tasks and list through the generated client")
