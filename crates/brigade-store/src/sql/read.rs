//! Reads, the same on both engines (run on a read connection, or inside a write).

use std::collections::HashMap;

use brigade_api::{
    AttemptOutcome, HistoryEntry, JobView, LogLine, Page, Progress, QueueView, TaskState, TaskView,
    WorkerState, WorkerView,
};

use super::{Conn, Engine, Value, args, lit};
use crate::Result;
use crate::model::JobFilter;
use crate::rows::{self, Columns};

/// Columns [`rows::task_view`] reads.
pub(crate) const TASK_COLUMNS: &str = "seq, id, job_id, kind, name, queue, state, attempt, max_attempts, priority, \
     timeout_ms, requires, input, output, error, worker_id, created_at, run_at, started_at, finished_at, \
     task_key, after_keys, run_if, spawned_by, progress, limits, fair_key";

/// Columns [`rows::job_view`] reads.
pub(crate) const JOB_COLUMNS: &str = "seq, id, name, queue, labels, state, total, created_at, started_at, finished_at, cancel_requested, \
     keep_ms, schedule_id, fire_at, callback";

/// Columns [`rows::worker_view`] reads.
pub(crate) const WORKER_COLUMNS: &str = "id, name, hostname, queues, kinds, labels, capacity, version, state, load, joined_at, last_seen_at";

use super::indexed_by;

/// Whether any task is queued at all (limited ones too, and keys whose
/// parked tasks are to be looked at again).
pub(crate) async fn has_queued<C: Conn>(c: &mut C) -> Result<bool> {
    let sql = format!(
        "SELECT 1 AS one FROM tasks{} WHERE state = {q} AND limits IS NULL \
         UNION ALL SELECT 1 AS one FROM tasks{} WHERE state = {q} AND limits IS NOT NULL AND parked_on IS NULL \
         UNION ALL SELECT 1 AS one FROM limit_waits LIMIT 1",
        indexed_by::<C>("tasks_ready"),
        indexed_by::<C>("tasks_limited"),
        q = lit(TaskState::Queued)
    );
    Ok(!c.rows(&sql, args![]).await?.is_empty())
}

/// Task counts of a job by state.
pub(crate) async fn progress<C: Conn>(c: &mut C, job_id: &str) -> Result<Progress> {
    Ok(progress_and_last_end(c, job_id).await?.0)
}

/// Task counts of a job by state, and when its last task finished.
pub(crate) async fn progress_and_last_end<C: Conn>(
    c: &mut C,
    job_id: &str,
) -> Result<(Progress, Option<i64>)> {
    let counts = c
        .rows(
            "SELECT state, count(*) AS n, max(finished_at) AS t FROM tasks WHERE job_id = ? GROUP BY state",
            args![job_id],
        )
        .await?;
    let mut p = Progress::default();
    let mut last_end = None;
    for row in counts {
        rows::add_count(&mut p, &row.text("state")?, row.int("n")?)?;
        last_end = last_end.max(row.int_opt("t")?);
    }
    Ok((p, last_end))
}

pub(crate) async fn job<C: Conn>(c: &mut C, id: &str) -> Result<Option<JobView>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
    let Some(row) = c.rows(&sql, args![id]).await?.pop() else {
        return Ok(None);
    };
    let p = progress(c, id).await?;
    Ok(Some(rows::job_view(&row, p)?))
}

/// One text column of one row, `None` when there is no row.
async fn text_of<C: Conn>(c: &mut C, sql: &str, key: &str) -> Result<Option<String>> {
    match c.rows(sql, args![key]).await?.pop() {
        Some(row) => Ok(Some(row.text("v")?)),
        None => Ok(None),
    }
}

pub(crate) async fn job_owner<C: Conn>(c: &mut C, id: &str) -> Result<Option<String>> {
    text_of(c, "SELECT owner AS v FROM jobs WHERE id = ?", id).await
}

pub(crate) async fn worker_owner<C: Conn>(c: &mut C, id: &str) -> Result<Option<String>> {
    text_of(c, "SELECT owner AS v FROM workers WHERE id = ?", id).await
}

pub(crate) async fn jobs<C: Conn>(
    c: &mut C,
    filter: &JobFilter,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Page<JobView>> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(cur) = rows::parse_cursor(cursor)? {
        sql.push_str(" AND seq < ?");
        args.push(cur.into());
    }
    if let Some(state) = filter.state {
        sql.push_str(&job_state_filter(state));
        if state.is_finished() {
            args.push(state.as_str().into());
        }
    }
    if let Some(name) = &filter.name {
        sql.push_str(" AND name = ?");
        args.push(name.into());
    }
    if let Some(owner) = &filter.owner {
        sql.push_str(" AND owner = ?");
        args.push(owner.into());
    }
    if let Some(schedule) = &filter.schedule_id {
        sql.push_str(" AND schedule_id = ?");
        args.push(schedule.into());
    }
    if let Some((k, v)) = &filter.label {
        sql.push_str(match C::ENGINE {
            Engine::Sqlite => {
                " AND EXISTS (SELECT 1 FROM json_each(jobs.labels) l WHERE l.key = ? AND l.value = ?)"
            }
            Engine::Postgres => " AND jobs.labels ->> ?::text = ?",
        });
        args.push(k.into());
        args.push(v.into());
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push((i64::from(limit) + 1).into());
    let mut found = c.rows(&sql, args).await?;
    let next = rows::cut_page(&mut found, limit)?;
    let mut items = Vec::with_capacity(found.len());
    for row in &found {
        let p = progress(c, &row.text("id")?).await?;
        items.push(rows::job_view(row, p)?);
    }
    Ok(Page {
        items,
        next_cursor: next,
    })
}

/// The condition for jobs a view shows in `state`. A finished job's state is
/// recorded; an unfinished one's is derived from its tasks, as
/// [`brigade_core::job_state`] does: running once any task started or ended.
fn job_state_filter(state: brigade_api::JobState) -> String {
    if state.is_finished() {
        return " AND finished_at IS NOT NULL AND state = ?".into();
    }
    let begun = super::lits(&[
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
    ]);
    let exists = format!(
        "EXISTS (SELECT 1 FROM tasks WHERE tasks.job_id = jobs.id AND tasks.state IN {begun})"
    );
    match state {
        brigade_api::JobState::Queued => format!(" AND finished_at IS NULL AND NOT {exists}"),
        _ => format!(" AND finished_at IS NULL AND {exists}"),
    }
}

pub(crate) async fn job_tasks<C: Conn>(
    c: &mut C,
    job_id: &str,
    state: Option<TaskState>,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Option<Page<TaskView>>> {
    if c.rows("SELECT 1 AS one FROM jobs WHERE id = ?", args![job_id])
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = ?");
    let mut args = args![job_id];
    if let Some(cur) = rows::parse_cursor(cursor)? {
        sql.push_str(" AND seq > ?");
        args.push(cur.into());
    }
    if let Some(s) = state {
        sql.push_str(" AND state = ?");
        args.push(s.into());
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    args.push((i64::from(limit) + 1).into());
    let mut found = c.rows(&sql, args).await?;
    let next = rows::cut_page(&mut found, limit)?;
    let items = found
        .iter()
        .map(rows::task_view)
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Page {
        items,
        next_cursor: next,
    }))
}

/// Append `filter` to a `WHERE` clause of `tasks` (as ` AND …` terms).
pub(crate) fn task_filter<C: Conn>(
    filter: &crate::model::TaskFilter,
    sql: &mut String,
    args: &mut Vec<Value>,
) {
    if let Some(state) = filter.state {
        // A literal, so that partial indexes (tasks_failed, tasks_ready) apply.
        sql.push_str(&format!(" AND state = {}", super::lit(state)));
    }
    if let Some(kind) = &filter.kind {
        sql.push_str(" AND kind = ?");
        args.push(kind.into());
    }
    if let Some(queue) = &filter.queue {
        sql.push_str(" AND queue = ?");
        args.push(queue.into());
    }
    if let Some(kind) = &filter.error_kind {
        sql.push_str(match C::ENGINE {
            Engine::Sqlite => " AND json_extract(error, '$.kind') = ?",
            Engine::Postgres => " AND error ->> 'kind' = ?",
        });
        args.push(kind.into());
    }
    if let Some(job) = &filter.job_id {
        sql.push_str(" AND job_id = ?");
        args.push(job.into());
    }
    if let Some(since) = filter.since {
        sql.push_str(" AND created_at >= ?");
        args.push(since.into());
    }
    if let Some(owner) = &filter.owner {
        sql.push_str(" AND job_id IN (SELECT id FROM jobs WHERE owner = ?)");
        args.push(owner.into());
    }
}

/// Tasks across jobs matching `filter`, newest first.
pub(crate) async fn tasks<C: Conn>(
    c: &mut C,
    filter: &crate::model::TaskFilter,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Page<TaskView>> {
    let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(cur) = rows::parse_cursor(cursor)? {
        sql.push_str(" AND seq < ?");
        args.push(cur.into());
    }
    task_filter::<C>(filter, &mut sql, &mut args);
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push((i64::from(limit) + 1).into());
    let mut found = c.rows(&sql, args).await?;
    let next = rows::cut_page(&mut found, limit)?;
    let items = found
        .iter()
        .map(rows::task_view)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page {
        items,
        next_cursor: next,
    })
}

pub(crate) async fn task<C: Conn>(c: &mut C, id: &str) -> Result<Option<TaskView>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?");
    let Some(row) = c.rows(&sql, args![id]).await?.pop() else {
        return Ok(None);
    };
    let mut view = rows::task_view(&row)?;
    let history = c
        .rows(
            "SELECT attempt, worker_id, started_at, finished_at, outcome, error FROM attempts \
             WHERE task_id = ? ORDER BY attempt",
            args![id],
        )
        .await?;
    let mut history = history
        .iter()
        .map(rows::history_entry)
        .collect::<Result<Vec<_>>>()?;
    // A running attempt has no row yet (it is written when the attempt
    // ends): the task row describes it.
    if view.state == TaskState::Running && history.last().is_none_or(|h| h.attempt < view.attempt) {
        history.push(HistoryEntry {
            attempt: view.attempt,
            worker_id: view.worker_id.clone(),
            started_at: view.started_at,
            finished_at: None,
            outcome: AttemptOutcome::Running.as_str().to_owned(),
            error: None,
        });
    }
    view.history = Some(history);
    view.children = Some(
        c.rows(
            "SELECT id FROM tasks WHERE spawned_by = ? ORDER BY seq",
            args![id],
        )
        .await?
        .iter()
        .map(|r| r.text("id"))
        .collect::<Result<Vec<_>>>()?,
    );
    Ok(Some(view))
}

async fn running_counts<C: Conn>(c: &mut C) -> Result<HashMap<String, u32>> {
    let sql = format!(
        "SELECT worker_id, count(*) AS n FROM tasks{} WHERE state = {} GROUP BY worker_id",
        indexed_by::<C>("tasks_running"),
        lit(TaskState::Running)
    );
    let mut map = HashMap::new();
    for row in c.rows(&sql, args![]).await? {
        if let Some(id) = row.text_opt("worker_id")? {
            map.insert(id, row.int("n")? as u32);
        }
    }
    Ok(map)
}

pub(crate) async fn worker<C: Conn>(c: &mut C, id: &str) -> Result<Option<WorkerView>> {
    let sql = format!("SELECT {WORKER_COLUMNS} FROM workers WHERE id = ?");
    let Some(row) = c.rows(&sql, args![id]).await?.pop() else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT count(*) AS n FROM tasks WHERE worker_id = ? AND state = {}",
        lit(TaskState::Running)
    );
    let running = match c.rows(&sql, args![id]).await?.pop() {
        Some(r) => r.int("n")?,
        None => 0,
    };
    Ok(Some(rows::worker_view(&row, running as u32)?))
}

pub(crate) async fn workers<C: Conn>(c: &mut C) -> Result<Vec<WorkerView>> {
    let running = running_counts(c).await?;
    let sql = format!("SELECT {WORKER_COLUMNS} FROM workers ORDER BY joined_at DESC LIMIT 1000");
    c.rows(&sql, args![])
        .await?
        .iter()
        .map(|row| {
            let id = row.text("id")?;
            rows::worker_view(row, running.get(&id).copied().unwrap_or(0))
        })
        .collect()
}

pub(crate) async fn queues<C: Conn>(c: &mut C) -> Result<Vec<QueueView>> {
    let mut views: Vec<QueueView> = c
        .rows("SELECT name, paused FROM queues ORDER BY name", args![])
        .await?
        .iter()
        .map(|r| {
            Ok(QueueView {
                name: r.text("name")?,
                paused: r.flag("paused")?,
                queued: 0,
                scheduled: 0,
                running: 0,
                workers: 0,
            })
        })
        .collect::<Result<_>>()?;
    // Queued tasks are in three indexes: unlimited, limited, and parked.
    for (state, index, more) in [
        (TaskState::Queued, "tasks_ready", " AND limits IS NULL"),
        (
            TaskState::Queued,
            "tasks_limited",
            " AND limits IS NOT NULL AND parked_on IS NULL",
        ),
        (
            TaskState::Queued,
            "tasks_parked",
            " AND parked_on IS NOT NULL",
        ),
        (TaskState::Scheduled, "tasks_due", ""),
        (TaskState::Running, "tasks_running", ""),
    ] {
        let sql = format!(
            "SELECT queue, count(*) AS n FROM tasks{} WHERE state = {}{more} GROUP BY queue",
            indexed_by::<C>(index),
            lit(state)
        );
        for row in c.rows(&sql, args![]).await? {
            let name = row.text("queue")?;
            let n = row.int("n")?.max(0) as u64;
            if let Some(q) = views.iter_mut().find(|q| q.name == name) {
                match state {
                    TaskState::Queued => q.queued += n,
                    TaskState::Scheduled => q.scheduled = n,
                    _ => q.running = n,
                }
            }
        }
    }
    let sql = format!(
        "SELECT queues FROM workers WHERE state IN {}",
        super::wlits(&WorkerState::SERVING)
    );
    let serving = c.rows(&sql, args![]).await?;
    for row in serving {
        let qs: Vec<String> = rows::json_or(row.text_opt("queues")?)?;
        for name in qs {
            if let Some(q) = views.iter_mut().find(|q| q.name == name) {
                q.workers += 1;
            }
        }
    }
    Ok(views)
}

pub(crate) async fn task_logs<C: Conn>(
    c: &mut C,
    task_id: &str,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<(i64, LogLine)>> {
    c.rows(
        "SELECT seq, attempt, line, at FROM task_logs WHERE task_id = ? AND seq > ? \
         ORDER BY seq LIMIT ?",
        args![task_id, after.unwrap_or(0), i64::from(limit)],
    )
    .await?
    .iter()
    .map(|row| {
        Ok((
            row.int("seq")?,
            LogLine {
                attempt: row.int("attempt")? as u32,
                at: brigade_core::from_ms(row.int("at")?),
                line: row.text("line")?,
            },
        ))
    })
    .collect()
}

/// Whether a worker with this id is registered and has not left (a worker
/// that left is told 404, so it joins again).
pub(crate) async fn worker_exists<C: Conn>(c: &mut C, id: &str) -> Result<bool> {
    let sql = format!(
        "SELECT 1 AS one FROM workers WHERE id = ? AND state <> {}",
        super::wlit(WorkerState::Left)
    );
    Ok(!c.rows(&sql, args![id]).await?.is_empty())
}
