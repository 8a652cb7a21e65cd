//! Reading PostgreSQL rows back into wire types (json columns are selected as text).

use std::collections::BTreeMap;

use brigade_api::{
    HistoryEntry, JobState, JobView, Load, Progress, TaskError, TaskState, TaskView, WorkerState,
    WorkerView,
};
use brigade_core::from_ms;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::{Result, StoreError};

/// Columns [`task_view`] reads.
pub(crate) const TASK_COLUMNS: &str = "seq, id, job_id, kind, name, queue, state, attempt, max_attempts, priority, \
     timeout_ms, requires::text AS requires, input::text AS input, output::text AS output, error::text AS error, worker_id, created_at, run_at, started_at, finished_at";

/// Columns [`job_view`] reads.
pub(crate) const JOB_COLUMNS: &str = "seq, id, name, queue, labels::text AS labels, state, total, created_at, started_at, finished_at, cancel_requested";

/// Columns [`worker_view`] reads.
pub(crate) const WORKER_COLUMNS: &str = "id, name, hostname, queues::text AS queues, kinds::text AS kinds, labels::text AS labels, capacity, version, state, load::text AS load, joined_at, last_seen_at";

pub(crate) fn json_or<T: serde::de::DeserializeOwned + Default>(s: Option<String>) -> Result<T> {
    match s {
        Some(s) if !s.is_empty() => Ok(serde_json::from_str(&s)?),
        _ => Ok(T::default()),
    }
}

pub(crate) fn value(s: Option<String>) -> Result<serde_json::Value> {
    match s {
        Some(s) => Ok(serde_json::from_str(&s)?),
        None => Ok(serde_json::Value::Null),
    }
}

pub(crate) fn error(s: Option<String>) -> Result<Option<TaskError>> {
    match s {
        Some(s) => Ok(Some(serde_json::from_str(&s)?)),
        None => Ok(None),
    }
}

pub(crate) fn task_state(s: &str) -> Result<TaskState> {
    TaskState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("task state {s:?}")))
}

fn ms_opt(row: &PgRow, col: &str) -> Result<Option<time::OffsetDateTime>> {
    Ok(row.try_get::<Option<i64>, _>(col)?.map(from_ms))
}

pub(crate) fn task_view(row: &PgRow) -> Result<TaskView> {
    let state: String = row.try_get("state")?;
    Ok(TaskView {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        queue: row.try_get("queue")?,
        state: task_state(&state)?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        priority: row.try_get::<i64, _>("priority")? as i32,
        timeout_ms: row.try_get::<i64, _>("timeout_ms")? as u64,
        requires: json_or::<BTreeMap<String, String>>(row.try_get("requires")?)?,
        input: value(row.try_get("input")?)?,
        output: value(row.try_get("output")?)?,
        error: error(row.try_get("error")?)?,
        worker_id: row.try_get("worker_id")?,
        created_at: from_ms(row.try_get("created_at")?),
        run_at: ms_opt(row, "run_at")?,
        started_at: ms_opt(row, "started_at")?,
        finished_at: ms_opt(row, "finished_at")?,
        history: None,
    })
}

pub(crate) fn history_entry(row: &PgRow) -> Result<HistoryEntry> {
    Ok(HistoryEntry {
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        worker_id: row.try_get("worker_id")?,
        started_at: ms_opt(row, "started_at")?,
        finished_at: ms_opt(row, "finished_at")?,
        outcome: row.try_get("outcome")?,
        error: error(row.try_get("error")?)?,
    })
}

/// A job row with the progress counted from its tasks.
pub(crate) fn job_view(row: &PgRow, progress: Progress) -> Result<JobView> {
    let state: String = row.try_get("state")?;
    let stored = JobState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?;
    let cancel_requested = row.try_get::<bool, _>("cancel_requested")?;
    // Finished jobs keep their recorded state; others are derived from live counts.
    let state = if stored.is_finished() {
        stored
    } else {
        brigade_core::job_state(&progress, cancel_requested)
    };
    let created: i64 = row.try_get("created_at")?;
    let started: Option<i64> = row.try_get("started_at")?;
    let finished: Option<i64> = row.try_get("finished_at")?;
    Ok(JobView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        queue: row.try_get("queue")?,
        labels: json_or(row.try_get("labels")?)?,
        state,
        progress,
        created_at: from_ms(created),
        started_at: started.map(from_ms),
        finished_at: finished.map(from_ms),
        duration_ms: match (started, finished) {
            (Some(s), Some(f)) => Some(f.saturating_sub(s).max(0) as u64),
            _ => None,
        },
        wall_ms: finished.map(|f| f.saturating_sub(created).max(0) as u64),
        task_ids: None,
    })
}

pub(crate) fn worker_view(row: &PgRow, running: u32) -> Result<WorkerView> {
    let state: String = row.try_get("state")?;
    Ok(WorkerView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        hostname: row.try_get("hostname")?,
        state: WorkerState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("worker state {state:?}")))?,
        queues: json_or(row.try_get("queues")?)?,
        kinds: json_or(row.try_get("kinds")?)?,
        labels: json_or(row.try_get("labels")?)?,
        capacity: row.try_get::<i64, _>("capacity")? as u32,
        running,
        load: json_or::<Load>(row.try_get("load")?)?,
        version: row.try_get("version")?,
        joined_at: from_ms(row.try_get("joined_at")?),
        last_seen_at: from_ms(row.try_get("last_seen_at")?),
    })
}

/// Add `count` tasks in `state` to a progress.
pub(crate) fn add_count(p: &mut Progress, state: &str, count: i64) -> Result<()> {
    let n = count.max(0) as u64;
    match task_state(state)? {
        TaskState::Queued => p.queued += n,
        TaskState::Scheduled => p.scheduled += n,
        TaskState::Running => p.running += n,
        TaskState::Succeeded => p.succeeded += n,
        TaskState::Failed => p.failed += n,
        TaskState::Cancelled => p.cancelled += n,
    }
    p.total += n;
    Ok(())
}
