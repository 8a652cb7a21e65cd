//! Reading rows back into wire types, the same way for both engines.
//!
//! JSON comes back as text from both engines; turning a fetched row into a
//! `TaskView`, `JobView` or `WorkerView` is one piece of code over [`Columns`].

use std::collections::BTreeMap;

use brigade_api::{
    HistoryEntry, JobState, JobView, Load, Progress, TaskError, TaskState, TaskView, WorkerState,
    WorkerView,
};
use brigade_core::from_ms;

use crate::{Result, StoreError};

/// Typed access to the columns of a fetched row.
pub(crate) trait Columns {
    /// An integer column.
    fn int(&self, col: &str) -> Result<i64>;
    /// A nullable integer column.
    fn int_opt(&self, col: &str) -> Result<Option<i64>>;
    /// A text column.
    fn text(&self, col: &str) -> Result<String>;
    /// A nullable text column.
    fn text_opt(&self, col: &str) -> Result<Option<String>>;
    /// A boolean column (an integer 0/1 in SQLite).
    fn flag(&self, col: &str) -> Result<bool>;
}

/// A page cursor as handed out (the `seq` of the last item), `None` for the first page.
pub(crate) fn parse_cursor(cursor: Option<&str>) -> Result<Option<i64>> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => c
            .parse::<i64>()
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("bad cursor {c:?}"))),
    }
}

/// Cut rows fetched with `LIMIT limit + 1` down to a page; the cursor of the
/// next page when there was one more row.
pub(crate) fn cut_page<R: Columns>(found: &mut Vec<R>, limit: u32) -> Result<Option<String>> {
    if found.len() <= limit as usize {
        return Ok(None);
    }
    found.truncate(limit as usize);
    Ok(found
        .last()
        .map(|r| r.int("seq"))
        .transpose()?
        .map(|s| s.to_string()))
}

/// A JSON text column, or the type's default when NULL or empty.
pub(crate) fn json_or<T: serde::de::DeserializeOwned + Default>(s: Option<String>) -> Result<T> {
    match s {
        Some(s) if !s.is_empty() => Ok(serde_json::from_str(&s)?),
        _ => Ok(T::default()),
    }
}

/// A JSON text column as a value (`null` when NULL).
pub(crate) fn value(s: Option<String>) -> Result<serde_json::Value> {
    match s {
        Some(s) => Ok(serde_json::from_str(&s)?),
        None => Ok(serde_json::Value::Null),
    }
}

/// A stored task error.
pub(crate) fn error(s: Option<String>) -> Result<Option<TaskError>> {
    match s {
        Some(s) => Ok(Some(serde_json::from_str(&s)?)),
        None => Ok(None),
    }
}

/// A stored task state.
pub(crate) fn task_state(s: &str) -> Result<TaskState> {
    TaskState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("task state {s:?}")))
}

fn ms_opt(row: &impl Columns, col: &str) -> Result<Option<time::OffsetDateTime>> {
    Ok(row.int_opt(col)?.map(from_ms))
}

/// A task row (the engine's `TASK_COLUMNS`).
pub(crate) fn task_view(row: &impl Columns) -> Result<TaskView> {
    Ok(TaskView {
        id: row.text("id")?,
        job_id: row.text("job_id")?,
        kind: row.text("kind")?,
        name: row.text_opt("name")?,
        queue: row.text("queue")?,
        state: task_state(&row.text("state")?)?,
        attempt: row.int("attempt")? as u32,
        max_attempts: row.int("max_attempts")? as u32,
        priority: row.int("priority")? as i32,
        timeout_ms: row.int("timeout_ms")? as u64,
        requires: json_or::<BTreeMap<String, String>>(row.text_opt("requires")?)?,
        limits: json_or::<Vec<String>>(row.text_opt("limits")?)?,
        fair_key: row.text_opt("fair_key")?,
        input: value(row.text_opt("input")?)?,
        output: value(row.text_opt("output")?)?,
        error: error(row.text_opt("error")?)?,
        worker_id: row.text_opt("worker_id")?,
        created_at: from_ms(row.int("created_at")?),
        run_at: ms_opt(row, "run_at")?,
        started_at: ms_opt(row, "started_at")?,
        finished_at: ms_opt(row, "finished_at")?,
        history: None,
        key: row.text_opt("task_key")?,
        after: json_or(row.text_opt("after_keys")?)?,
        run_if: row
            .text_opt("run_if")?
            .as_deref()
            .and_then(brigade_api::RunIf::parse),
        spawned_by: row.text_opt("spawned_by")?,
        children: None,
        progress: match row.text_opt("progress")? {
            Some(p) if !p.is_empty() => Some(serde_json::from_str(&p)?),
            _ => None,
        },
    })
}

/// An attempts row.
pub(crate) fn history_entry(row: &impl Columns) -> Result<HistoryEntry> {
    Ok(HistoryEntry {
        attempt: row.int("attempt")? as u32,
        worker_id: row.text_opt("worker_id")?,
        started_at: ms_opt(row, "started_at")?,
        finished_at: ms_opt(row, "finished_at")?,
        outcome: row.text("outcome")?,
        error: error(row.text_opt("error")?)?,
    })
}

/// A job row (the engine's `JOB_COLUMNS`) with the progress counted from its tasks.
pub(crate) fn job_view(row: &impl Columns, progress: Progress) -> Result<JobView> {
    let state = row.text("state")?;
    let stored = JobState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?;
    let cancel_requested = row.flag("cancel_requested")?;
    // Finished jobs keep their recorded state; others are derived from live
    // counts. A job is over once its end is recorded (`finished_at`, the
    // `job.finished` event): counts read apart from the row that already say
    // over (the last task ended between the two reads) read as running.
    let state = if stored.is_finished() {
        stored
    } else {
        match brigade_core::job_state(&progress, cancel_requested) {
            live if live.is_finished() => JobState::Running,
            live => live,
        }
    };
    let created = row.int("created_at")?;
    let started = row.int_opt("started_at")?;
    let finished = row.int_opt("finished_at")?;
    let keep_ms = row.int_opt("keep_ms")?;
    Ok(JobView {
        id: row.text("id")?,
        name: row.text_opt("name")?,
        queue: row.text("queue")?,
        labels: json_or(row.text_opt("labels")?)?,
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
        keep_ms: keep_ms.map(|k| k.max(0) as u64),
        // The server's default retention is the server's: it fills in the rest.
        expires_at: keep_ms
            .and_then(|k| {
                brigade_core::retention::expires_at(finished, Some(k.max(0) as u64), None)
            })
            .map(from_ms),
        task_ids: None,
        schedule_id: row.text_opt("schedule_id")?,
        fire_at: ms_opt(row, "fire_at")?,
        callback: row
            .text_opt("callback")?
            .map(|t| serde_json::from_str(&t))
            .transpose()?,
    })
}

/// A worker row (the engine's `WORKER_COLUMNS`) with the count of tasks it runs.
pub(crate) fn worker_view(row: &impl Columns, running: u32) -> Result<WorkerView> {
    let state = row.text("state")?;
    Ok(WorkerView {
        id: row.text("id")?,
        name: row.text("name")?,
        hostname: row.text("hostname")?,
        state: WorkerState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("worker state {state:?}")))?,
        queues: json_or(row.text_opt("queues")?)?,
        kinds: json_or(row.text_opt("kinds")?)?,
        labels: json_or(row.text_opt("labels")?)?,
        capacity: row.int("capacity")? as u32,
        running,
        load: json_or::<Load>(row.text_opt("load")?)?,
        version: row.text("version")?,
        joined_at: from_ms(row.int("joined_at")?),
        last_seen_at: from_ms(row.int("last_seen_at")?),
    })
}

/// Add `count` tasks in `state` to a progress.
pub(crate) fn add_count(p: &mut Progress, state: &str, count: i64) -> Result<()> {
    let n = count.max(0) as u64;
    match task_state(state)? {
        TaskState::Waiting => p.waiting += n,
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
