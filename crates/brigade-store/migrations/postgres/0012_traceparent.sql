-- Traces: the W3C traceparent of the job a task belongs to (its submit's
-- span), handed to the worker with each lease so the task's spans join the
-- job's trace. NULL when the job was submitted without tracing.
ALTER TABLE tasks ADD COLUMN traceparent TEXT;
