//! Building the live events a state change produces.

use brigade_api::{Event, EventKind, JobState, TaskError};
use brigade_core::from_ms;

/// An event about a task.
pub(crate) fn task(
    kind: EventKind,
    now: i64,
    job_id: &str,
    task_id: &str,
    worker_id: Option<&str>,
    attempt: u32,
) -> Event {
    let mut e = Event::new(kind.as_str(), from_ms(now));
    e.job_id = Some(job_id.to_owned());
    e.task_id = Some(task_id.to_owned());
    e.worker_id = worker_id.map(str::to_owned);
    e.attempt = Some(attempt);
    e
}

/// An event about a task carrying its error.
pub(crate) fn task_error(
    kind: EventKind,
    now: i64,
    job_id: &str,
    task_id: &str,
    worker_id: Option<&str>,
    attempt: u32,
    error: &TaskError,
) -> Event {
    let mut e = task(kind, now, job_id, task_id, worker_id, attempt);
    e.error = Some(error.clone());
    e
}

/// An event about a job.
pub(crate) fn job(
    kind: EventKind,
    now: i64,
    job_id: &str,
    state: JobState,
    name: Option<&str>,
) -> Event {
    let mut e = Event::new(kind.as_str(), from_ms(now));
    e.job_id = Some(job_id.to_owned());
    e.state = Some(state);
    e.name = name.map(str::to_owned);
    e
}

/// An event about a worker.
pub(crate) fn worker(kind: EventKind, now: i64, worker_id: &str, name: &str) -> Event {
    let mut e = Event::new(kind.as_str(), from_ms(now));
    e.worker_id = Some(worker_id.to_owned());
    e.name = Some(name.to_owned());
    e
}
