//! The columns this engine selects for the shared row readers of [`crate::rows`].

pub(crate) use crate::rows::*;

/// Columns [`task_view`](crate::rows::task_view) reads.
pub(crate) const TASK_COLUMNS: &str = "seq, id, job_id, kind, name, queue, state, attempt, max_attempts, priority, \
     timeout_ms, requires, input, output, error, worker_id, created_at, run_at, started_at, finished_at";

/// Columns [`job_view`](crate::rows::job_view) reads.
pub(crate) const JOB_COLUMNS: &str = "seq, id, name, queue, labels, state, total, created_at, started_at, finished_at, cancel_requested";

/// Columns [`worker_view`](crate::rows::worker_view) reads.
pub(crate) const WORKER_COLUMNS: &str = "id, name, hostname, queues, kinds, labels, capacity, version, state, load, joined_at, last_seen_at";
