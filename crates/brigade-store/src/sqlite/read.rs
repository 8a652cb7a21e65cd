//! Read queries of the SQLite engine (run on the read pool, or inside a write).

use std::collections::HashMap;

use brigade_api::{JobView, Page, Progress, QueueView, TaskState, TaskView, WorkerView};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::rows::{self, JOB_COLUMNS, TASK_COLUMNS, WORKER_COLUMNS};
use crate::Result;
use crate::model::JobFilter;

/// Task counts of a job by state.
pub(crate) async fn progress(conn: &mut SqliteConnection, job_id: &str) -> Result<Progress> {
    let counts =
        sqlx::query("SELECT state, count(*) AS n FROM tasks WHERE job_id = ? GROUP BY state")
            .bind(job_id)
            .fetch_all(&mut *conn)
            .await?;
    let mut p = Progress::default();
    for row in counts {
        rows::add_count(
            &mut p,
            &row.try_get::<String, _>("state")?,
            row.try_get("n")?,
        )?;
    }
    Ok(p)
}

pub(crate) async fn job(conn: &mut SqliteConnection, id: &str) -> Result<Option<JobView>> {
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let p = progress(conn, id).await?;
    Ok(Some(rows::job_view(&row, p)?))
}

pub(crate) async fn job_owner(conn: &mut SqliteConnection, id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT owner FROM jobs WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

pub(crate) async fn worker_owner(conn: &mut SqliteConnection, id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT owner FROM workers WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

pub(crate) async fn jobs(
    conn: &mut SqliteConnection,
    filter: &JobFilter,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Page<JobView>> {
    let mut qb: QueryBuilder<Sqlite> =
        QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1"));
    if let Some(c) = rows::parse_cursor(cursor)? {
        qb.push(" AND seq < ").push_bind(c);
    }
    if let Some(state) = filter.state {
        // Unfinished states are refined from task counts below; filter on the stored one.
        qb.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(name) = &filter.name {
        qb.push(" AND name = ").push_bind(name.clone());
    }
    if let Some(owner) = &filter.owner {
        qb.push(" AND owner = ").push_bind(owner.clone());
    }
    if let Some((k, v)) = &filter.label {
        qb.push(" AND EXISTS (SELECT 1 FROM json_each(jobs.labels) l WHERE l.key = ")
            .push_bind(k.clone())
            .push(" AND l.value = ")
            .push_bind(v.clone())
            .push(")");
    }
    qb.push(" ORDER BY seq DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let mut found = qb.build().fetch_all(&mut *conn).await?;
    let next = rows::cut_page(&mut found, limit)?;
    let mut items = Vec::with_capacity(found.len());
    for row in &found {
        let id: String = row.try_get("id")?;
        let p = progress(conn, &id).await?;
        items.push(rows::job_view(row, p)?);
    }
    Ok(Page {
        items,
        next_cursor: next,
    })
}

pub(crate) async fn job_tasks(
    conn: &mut SqliteConnection,
    job_id: &str,
    state: Option<TaskState>,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Option<Page<TaskView>>> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let mut qb: QueryBuilder<Sqlite> =
        QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = "));
    qb.push_bind(job_id.to_owned());
    if let Some(c) = rows::parse_cursor(cursor)? {
        qb.push(" AND seq > ").push_bind(c);
    }
    if let Some(s) = state {
        qb.push(" AND state = ").push_bind(s.as_str());
    }
    qb.push(" ORDER BY seq LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let mut found = qb.build().fetch_all(&mut *conn).await?;
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

pub(crate) async fn task(conn: &mut SqliteConnection, id: &str) -> Result<Option<TaskView>> {
    let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut view = rows::task_view(&row)?;
    let history = sqlx::query(
        "SELECT attempt, worker_id, started_at, finished_at, outcome, error FROM attempts \
         WHERE task_id = ? ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    view.history = Some(
        history
            .iter()
            .map(rows::history_entry)
            .collect::<Result<Vec<_>>>()?,
    );
    Ok(Some(view))
}

async fn running_counts(conn: &mut SqliteConnection) -> Result<HashMap<String, u32>> {
    let counts = sqlx::query(
        "SELECT worker_id, count(*) AS n FROM tasks INDEXED BY tasks_running_on \
         WHERE state = 'running' GROUP BY worker_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut map = HashMap::new();
    for row in counts {
        let id: Option<String> = row.try_get("worker_id")?;
        if let Some(id) = id {
            map.insert(id, row.try_get::<i64, _>("n")? as u32);
        }
    }
    Ok(map)
}

pub(crate) async fn worker(conn: &mut SqliteConnection, id: &str) -> Result<Option<WorkerView>> {
    let row = sqlx::query(&format!(
        "SELECT {WORKER_COLUMNS} FROM workers WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE worker_id = ? AND state = 'running'")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(Some(rows::worker_view(&row, running as u32)?))
}

pub(crate) async fn workers(conn: &mut SqliteConnection) -> Result<Vec<WorkerView>> {
    let running = running_counts(conn).await?;
    let found = sqlx::query(&format!(
        "SELECT {WORKER_COLUMNS} FROM workers ORDER BY joined_at DESC LIMIT 1000"
    ))
    .fetch_all(&mut *conn)
    .await?;
    found
        .iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            rows::worker_view(row, running.get(&id).copied().unwrap_or(0))
        })
        .collect()
}

pub(crate) async fn queues(conn: &mut SqliteConnection) -> Result<Vec<QueueView>> {
    let mut views: Vec<QueueView> = sqlx::query("SELECT name, paused FROM queues ORDER BY name")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(QueueView {
                name: r.try_get("name")?,
                paused: r.try_get::<i64, _>("paused")? != 0,
                queued: 0,
                scheduled: 0,
                running: 0,
                workers: 0,
            })
        })
        .collect::<Result<_>>()?;
    for (state, index) in [
        ("queued", "tasks_ready"),
        ("scheduled", "tasks_due"),
        ("running", "tasks_leases"),
    ] {
        let counts = sqlx::query(&format!(
            "SELECT queue, count(*) AS n FROM tasks INDEXED BY {index} WHERE state = '{state}' GROUP BY queue"
        ))
        .fetch_all(&mut *conn)
        .await?;
        for row in counts {
            let name: String = row.try_get("queue")?;
            let n = row.try_get::<i64, _>("n")? as u64;
            if let Some(q) = views.iter_mut().find(|q| q.name == name) {
                match state {
                    "queued" => q.queued = n,
                    "scheduled" => q.scheduled = n,
                    _ => q.running = n,
                }
            }
        }
    }
    let serving = sqlx::query("SELECT queues FROM workers WHERE state IN ('active','draining')")
        .fetch_all(&mut *conn)
        .await?;
    for row in serving {
        let qs: Vec<String> = rows::json_or(row.try_get("queues")?)?;
        for name in qs {
            if let Some(q) = views.iter_mut().find(|q| q.name == name) {
                q.workers += 1;
            }
        }
    }
    Ok(views)
}

pub(crate) async fn task_logs(
    conn: &mut SqliteConnection,
    task_id: &str,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<(i64, brigade_api::LogLine)>> {
    let found = sqlx::query(
        "SELECT seq, attempt, line, at FROM task_logs WHERE task_id = ? AND seq > ? \
         ORDER BY seq LIMIT ?",
    )
    .bind(task_id)
    .bind(after.unwrap_or(0))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    found
        .iter()
        .map(|row| {
            Ok((
                row.try_get("seq")?,
                brigade_api::LogLine {
                    attempt: row.try_get::<i64, _>("attempt")? as u32,
                    at: brigade_core::from_ms(row.try_get("at")?),
                    line: row.try_get("line")?,
                },
            ))
        })
        .collect()
}
