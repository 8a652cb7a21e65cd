//! Write transactions of the SQLite engine. Each runs inside the writer's group
//! commit (see [`super::writer`]) on its single connection.

use std::collections::{BTreeMap, BTreeSet};

use brigade_api::{
    Backoff, ErrorKind, Heartbeat, HeartbeatReply, JobState, LeasedTask, Outcome, Progress,
    RejectedResult, ResultsReply, TaskError, TaskResult, TaskView, WorkerJoin, WorkerState,
    WorkerView,
};
use brigade_core::lifecycle::{Failure, on_failure};
use brigade_core::{NewJob, from_ms, ids::new_id};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{read, rows};
use crate::model::{Changes, DeleteOutcome, Idempotency, Phase, RetryOutcome, Submitted, Timing};
use crate::{Result, StoreError, events};

/// Unfinished task states, as SQL.
const UNFINISHED: &str = "('queued','scheduled','running')";
/// Rows per multi-row insert (SQLite allows 32766 bound parameters).
const INSERT_CHUNK: usize = 1000;

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?)
}

pub(crate) async fn submit(
    conn: &mut SqliteConnection,
    owner: String,
    job: NewJob,
    idem: Option<Idempotency>,
    now: i64,
) -> Result<Submitted> {
    if let Some(idem) = &idem {
        let found = sqlx::query("SELECT id, idem_hash FROM jobs WHERE owner = ? AND idem_key = ?")
            .bind(&owner)
            .bind(&idem.key)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = found {
            let hash: Option<String> = row.try_get("idem_hash")?;
            if hash.as_deref() != Some(idem.hash.as_str()) {
                return Err(StoreError::IdempotencyConflict);
            }
            let id: String = row.try_get("id")?;
            let mut view = read::job(&mut *conn, &id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("job vanished".into()))?;
            let ids = sqlx::query_scalar::<_, String>(
                "SELECT id FROM tasks WHERE job_id = ? ORDER BY seq",
            )
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?;
            view.task_ids = Some(ids);
            return Ok(Submitted {
                job: view,
                created: false,
                changes: Changes::default(),
            });
        }
    }

    let job_id = new_id();
    let total = job.tasks.len();
    sqlx::query(
        "INSERT INTO jobs (id, name, queue, labels, owner, state, total, created_at, idem_key, idem_hash) \
         VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
    )
    .bind(&job_id)
    .bind(&job.name)
    .bind(&job.queue)
    .bind(json(&job.labels)?)
    .bind(&owner)
    .bind(total as i64)
    .bind(now)
    .bind(idem.as_ref().map(|i| i.key.as_str()))
    .bind(idem.as_ref().map(|i| i.hash.as_str()))
    .execute(&mut *conn)
    .await?;

    let queues: BTreeSet<&str> = job.tasks.iter().map(|t| t.queue.as_str()).collect();
    for q in queues {
        sqlx::query("INSERT OR IGNORE INTO queues (name) VALUES (?)")
            .bind(q)
            .execute(&mut *conn)
            .await?;
    }

    let mut ids = Vec::with_capacity(total);
    let mut progress = Progress {
        total: total as u64,
        ..Progress::default()
    };
    for chunk in job.tasks.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO tasks (id, job_id, kind, name, queue, priority, state, input, max_attempts, timeout_ms, \
             backoff, requires, run_at, created_at, ready_at) ",
        );
        let mut prepared = Vec::with_capacity(chunk.len());
        for t in chunk {
            let scheduled = t.run_at.is_some_and(|at| at > now);
            if scheduled {
                progress.scheduled += 1;
            } else {
                progress.queued += 1;
            }
            let requires = if t.requires.is_empty() {
                None
            } else {
                Some(json(&t.requires)?)
            };
            prepared.push((new_id(), t, scheduled, json(&t.backoff)?, requires));
        }
        qb.push_values(
            prepared.iter(),
            |mut b, (id, t, scheduled, backoff, requires)| {
                b.push_bind(id.as_str())
                    .push_bind(job_id.as_str())
                    .push_bind(t.kind.as_str())
                    .push_bind(t.name.as_deref())
                    .push_bind(t.queue.as_str())
                    .push_bind(t.priority)
                    .push_bind(if *scheduled { "scheduled" } else { "queued" })
                    .push_bind(t.input.as_str())
                    .push_bind(i64::from(t.max_attempts))
                    .push_bind(t.timeout_ms as i64)
                    .push_bind(backoff.as_str())
                    .push_bind(requires.as_deref())
                    .push_bind(if *scheduled { t.run_at } else { None })
                    .push_bind(now)
                    .push_bind(if *scheduled { t.run_at } else { Some(now) });
            },
        );
        qb.build().execute(&mut *conn).await?;
        ids.extend(prepared.into_iter().map(|(id, ..)| id));
    }

    let view = brigade_api::JobView {
        id: job_id.clone(),
        name: job.name.clone(),
        queue: job.queue,
        labels: job.labels,
        state: JobState::Queued,
        progress,
        created_at: from_ms(now),
        started_at: None,
        finished_at: None,
        duration_ms: None,
        wall_ms: None,
        task_ids: Some(ids),
    };
    let changes = Changes {
        events: vec![events::job(
            "job.created",
            now,
            &job_id,
            JobState::Queued,
            job.name.as_deref(),
        )],
        ready: progress.queued > 0,
        scheduled: progress.scheduled > 0,
        ..Changes::default()
    };
    Ok(Submitted {
        job: view,
        created: true,
        changes,
    })
}

/// After tasks of `jobs` finished: record the jobs that are now over.
pub(crate) async fn finish_jobs(
    conn: &mut SqliteConnection,
    jobs: impl IntoIterator<Item = &str>,
    now: i64,
    changes: &mut Changes,
) -> Result<()> {
    for job_id in jobs {
        let open: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM tasks WHERE job_id = ? AND state IN {UNFINISHED} LIMIT 1"
        ))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
        if open.is_some() {
            continue;
        }
        let row = sqlx::query("SELECT name, cancel_requested, finished_at FROM jobs WHERE id = ?")
            .bind(job_id)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else { continue };
        if row.try_get::<Option<i64>, _>("finished_at")?.is_some() {
            continue;
        }
        let progress = read::progress(&mut *conn, job_id).await?;
        let state =
            brigade_core::job_state(&progress, row.try_get::<i64, _>("cancel_requested")? != 0);
        let last_end: Option<i64> =
            sqlx::query_scalar("SELECT max(finished_at) FROM tasks WHERE job_id = ?")
                .bind(job_id)
                .fetch_one(&mut *conn)
                .await?;
        sqlx::query("UPDATE jobs SET state = ?, finished_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(last_end.unwrap_or(now).max(0))
            .bind(job_id)
            .execute(&mut *conn)
            .await?;
        let name: Option<String> = row.try_get("name")?;
        changes.events.push(events::job(
            "job.finished",
            now,
            job_id,
            state,
            name.as_deref(),
        ));
    }
    Ok(())
}

pub(crate) async fn lease(
    conn: &mut SqliteConnection,
    worker_id: String,
    max: u32,
    now: i64,
    ttl: i64,
) -> Result<Option<(Vec<LeasedTask>, Changes)>> {
    let Some(worker) = sqlx::query("SELECT state, queues, kinds, labels FROM workers WHERE id = ?")
        .bind(&worker_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let state: String = worker.try_get("state")?;
    if state != WorkerState::Active.as_str() || max == 0 {
        return Ok(Some((Vec::new(), Changes::default())));
    }
    let queues: Vec<String> = rows::json_or(worker.try_get("queues")?)?;
    let kinds: Vec<String> = rows::json_or(worker.try_get("kinds")?)?;
    let labels: BTreeMap<String, String> = rows::json_or(worker.try_get("labels")?)?;
    if queues.is_empty() || kinds.is_empty() {
        return Ok(Some((Vec::new(), Changes::default())));
    }
    // A worker label "lang=python,c" offers lang=python and lang=c.
    let offered: Vec<String> = labels
        .iter()
        .flat_map(|(k, v)| v.split(',').map(move |one| format!("{k}={}", one.trim())))
        .collect();

    let expires = now + ttl;
    // One statement picks and marks the tasks; SQLite's single writer makes it race-free.
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "UPDATE tasks SET state = 'running', attempt = attempt + 1, worker_id = ",
    );
    qb.push_bind(worker_id.as_str())
        .push(", started_at = ")
        .push_bind(now)
        .push(", lease_expires_at = ")
        .push_bind(expires)
        .push(
            ", run_at = NULL, finished_at = NULL WHERE seq IN (SELECT seq FROM tasks INDEXED BY tasks_ready \
             WHERE state = 'queued' AND queue IN (",
        );
    let mut sep = qb.separated(", ");
    for q in &queues {
        sep.push_bind(q.as_str());
    }
    qb.push(") AND kind IN (");
    let mut sep = qb.separated(", ");
    for k in &kinds {
        sep.push_bind(k.as_str());
    }
    qb.push(
        ") AND queue NOT IN (SELECT name FROM queues WHERE paused = 1) \
         AND (requires IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(tasks.requires) r \
              WHERE r.key || '=' || r.value NOT IN (SELECT value FROM json_each(",
    );
    qb.push_bind(json(&offered)?);
    qb.push(")))) ORDER BY priority DESC, seq LIMIT ");
    qb.push_bind(i64::from(max));
    qb.push(
        ") RETURNING seq, priority, id, job_id, kind, input, attempt, timeout_ms, \
         coalesce(ready_at, created_at) AS ready_at",
    );
    let mut picked = qb.build().fetch_all(&mut *conn).await?;
    // RETURNING has no order: hand them out in dispatch order.
    picked.sort_by_cached_key(|r| {
        (
            std::cmp::Reverse(r.try_get::<i64, _>("priority").unwrap_or(0)),
            r.try_get::<i64, _>("seq").unwrap_or(0),
        )
    });

    let mut leased = Vec::with_capacity(picked.len());
    let mut changes = Changes::default();
    let mut jobs = BTreeSet::new();
    for row in picked {
        let id: String = row.try_get("id")?;
        let job_id: String = row.try_get("job_id")?;
        let attempt = row.try_get::<i64, _>("attempt")? as u32;
        changes.events.push(events::task(
            "task.started",
            now,
            &job_id,
            &id,
            Some(&worker_id),
            attempt,
        ));
        let input: String = row.try_get("input")?;
        let kind: String = row.try_get("kind")?;
        changes.timings.push(Timing::between(
            kind.clone(),
            Phase::Queued,
            row.try_get("ready_at")?,
            now,
        ));
        leased.push(LeasedTask {
            id,
            job_id: job_id.clone(),
            kind,
            input: serde_json::from_str(&input)?,
            attempt,
            timeout_ms: row.try_get::<i64, _>("timeout_ms")? as u64,
            lease_expires_at: from_ms(expires),
        });
        jobs.insert(job_id);
    }
    for chunk in leased.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR REPLACE INTO attempts (task_id, attempt, worker_id, started_at, outcome) ",
        );
        qb.push_values(chunk, |mut b, t| {
            b.push_bind(t.id.as_str())
                .push_bind(i64::from(t.attempt))
                .push_bind(worker_id.as_str())
                .push_bind(now)
                .push_bind("running");
        });
        qb.build().execute(&mut *conn).await?;
    }
    if !jobs.is_empty() {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE jobs SET started_at = ");
        qb.push_bind(now)
            .push(", state = 'running' WHERE started_at IS NULL AND id IN (");
        let mut sep = qb.separated(", ");
        for j in &jobs {
            sep.push_bind(j.as_str());
        }
        qb.push(")");
        qb.build().execute(&mut *conn).await?;
    }
    Ok(Some((leased, changes)))
}

/// A running task's row, as a result or reaper needs it.
struct Running {
    seq: i64,
    job_id: String,
    state: String,
    attempt: u32,
    attempt_base: u32,
    max_attempts: u32,
    worker_id: Option<String>,
    backoff: Backoff,
    kind: String,
    started_at: Option<i64>,
}

async fn running_row(conn: &mut SqliteConnection, id: &str) -> Result<Option<Running>> {
    let row = sqlx::query(
        "SELECT seq, job_id, state, attempt, attempt_base, max_attempts, worker_id, backoff, kind, started_at \
         FROM tasks WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let backoff: String = row.try_get("backoff")?;
    Ok(Some(Running {
        seq: row.try_get("seq")?,
        job_id: row.try_get("job_id")?,
        state: row.try_get("state")?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        attempt_base: row.try_get::<i64, _>("attempt_base")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        worker_id: row.try_get("worker_id")?,
        backoff: serde_json::from_str(&backoff)?,
        kind: row.try_get("kind")?,
        started_at: row.try_get("started_at")?,
    }))
}

/// Whether `id` was already handled in this batch (and remember it).
fn seen_before(applied: &mut std::collections::HashSet<String>, id: &str) -> bool {
    !applied.insert(id.to_owned())
}

/// The rows of many tasks at once, by id.
async fn running_rows<'a>(
    conn: &mut SqliteConnection,
    ids: impl Iterator<Item = &'a str>,
) -> Result<std::collections::HashMap<String, Running>> {
    let ids: Vec<&str> = ids.collect();
    let mut found = std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT seq, id, job_id, state, attempt, attempt_base, max_attempts, worker_id, backoff, \
             kind, started_at FROM tasks WHERE id IN (",
        );
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(")");
        for row in qb.build().fetch_all(&mut *conn).await? {
            let backoff: String = row.try_get("backoff")?;
            found.insert(
                row.try_get("id")?,
                Running {
                    seq: row.try_get("seq")?,
                    job_id: row.try_get("job_id")?,
                    state: row.try_get("state")?,
                    attempt: row.try_get::<i64, _>("attempt")? as u32,
                    attempt_base: row.try_get::<i64, _>("attempt_base")? as u32,
                    max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
                    worker_id: row.try_get("worker_id")?,
                    backoff: serde_json::from_str(&backoff)?,
                    kind: row.try_get("kind")?,
                    started_at: row.try_get("started_at")?,
                },
            );
        }
    }
    Ok(found)
}

/// End attempt `attempt` of a running task with a failure: retry, requeue or fail it.
#[allow(clippy::too_many_arguments)]
async fn fail_attempt(
    conn: &mut SqliteConnection,
    id: &str,
    task: &Running,
    error: &TaskError,
    retryable: bool,
    lost: bool,
    outcome: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<()> {
    let counted = task.attempt.saturating_sub(task.attempt_base);
    let decision = on_failure(
        counted,
        task.max_attempts,
        retryable,
        lost,
        &task.backoff,
        now,
        rand::random::<f64>(),
    );
    let error_json = json(error)?;
    let (state, run_at, finished, event) = match decision {
        Failure::Retry { run_at } => ("scheduled", Some(run_at), None, "task.retrying"),
        Failure::Requeue => ("queued", None, None, "task.retrying"),
        Failure::Fail => ("failed", None, Some(now), "task.failed"),
    };
    // A requeued task is ready now; a retry when its backoff is over.
    let ready_at = match decision {
        Failure::Retry { run_at } => Some(run_at),
        Failure::Requeue => Some(now),
        Failure::Fail => None,
    };
    sqlx::query(
        "UPDATE tasks SET state = ?, run_at = ?, finished_at = ?, error = ?, lease_expires_at = NULL, \
         ready_at = coalesce(?, ready_at) WHERE seq = ?",
    )
    .bind(state)
    .bind(run_at)
    .bind(finished)
    .bind(&error_json)
    .bind(ready_at)
    .bind(task.seq)
    .execute(&mut *conn)
    .await?;
    end_attempt(conn, id, task.attempt, outcome, Some(&error_json), now).await?;
    changes.events.push(events::task_error(
        event,
        now,
        &task.job_id,
        id,
        task.worker_id.as_deref(),
        task.attempt,
        error,
    ));
    match decision {
        Failure::Retry { .. } => changes.scheduled = true,
        Failure::Requeue => changes.ready = true,
        Failure::Fail => {}
    }
    Ok(())
}

async fn end_attempt(
    conn: &mut SqliteConnection,
    id: &str,
    attempt: u32,
    outcome: &str,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE attempts SET finished_at = ?, outcome = ?, error = ? WHERE task_id = ? AND attempt = ?")
        .bind(now)
        .bind(outcome)
        .bind(error)
        .bind(id)
        .bind(i64::from(attempt))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn report(
    conn: &mut SqliteConnection,
    worker_id: String,
    results: Vec<TaskResult>,
    now: i64,
) -> Result<Option<(ResultsReply, Changes)>> {
    let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM workers WHERE id = ?")
        .bind(&worker_id)
        .fetch_optional(&mut *conn)
        .await?;
    if known.is_none() {
        return Ok(None);
    }
    let mut reply = ResultsReply::default();
    let mut changes = Changes::default();
    let mut jobs = BTreeSet::new();
    let tasks = running_rows(conn, results.iter().map(|r| r.task_id.as_str())).await?;
    let mut applied: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Successes are applied together below: (seq, output, task id, attempt).
    let mut succeeded: Vec<(i64, String, String, u32)> = Vec::with_capacity(results.len());
    for r in results {
        let reject = |reason: String| RejectedResult {
            task_id: r.task_id.clone(),
            reason,
        };
        let Some(task) = tasks.get(&r.task_id) else {
            reply.rejected.push(reject("unknown task".into()));
            continue;
        };
        // The rows were read before this batch changed them: a second result
        // for the same task in one batch finds it no longer running.
        if seen_before(&mut applied, &r.task_id) {
            reply
                .rejected
                .push(reject("the task's result was already recorded".into()));
            continue;
        }
        if task.attempt != r.attempt {
            reply.rejected.push(reject(format!(
                "stale attempt: the task is on attempt {}",
                task.attempt
            )));
            continue;
        }
        if task.worker_id.as_deref() != Some(worker_id.as_str()) {
            reply.rejected.push(reject(
                "stale attempt: the task is not leased to this worker".into(),
            ));
            continue;
        }
        if task.state != "running" {
            reply
                .rejected
                .push(reject(format!("the task is {}", task.state)));
            continue;
        }
        match r.outcome {
            Outcome::Succeeded => {
                changes.events.push(events::task(
                    "task.succeeded",
                    now,
                    &task.job_id,
                    &r.task_id,
                    Some(&worker_id),
                    task.attempt,
                ));
                succeeded.push((task.seq, json(&r.output)?, r.task_id.clone(), task.attempt));
                if let Some(started) = task.started_at {
                    changes.timings.push(Timing::between(
                        task.kind.clone(),
                        Phase::Run,
                        started,
                        now,
                    ));
                }
            }
            Outcome::Failed => {
                let error = r
                    .error
                    .clone()
                    .unwrap_or_else(|| TaskError::new(ErrorKind::Handler, "failed"));
                let outcome = match error.kind {
                    ErrorKind::Timeout => "timeout",
                    ErrorKind::Crash => "crash",
                    _ => "failed",
                };
                let retryable = r.retryable.unwrap_or(true);
                if let Some(started) = task.started_at {
                    changes.timings.push(Timing::between(
                        task.kind.clone(),
                        Phase::Run,
                        started,
                        now,
                    ));
                }
                fail_attempt(
                    conn,
                    &r.task_id,
                    task,
                    &error,
                    retryable,
                    false,
                    outcome,
                    now,
                    &mut changes,
                )
                .await?;
            }
        }
        reply.accepted.push(r.task_id);
        jobs.insert(task.job_id.clone());
    }
    for chunk in succeeded.chunks(INSERT_CHUNK / 2) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "UPDATE tasks SET state = 'succeeded', output = r.column2, error = NULL, finished_at = ",
        );
        qb.push_bind(now).push(", lease_expires_at = NULL FROM (");
        qb.push_values(chunk, |mut b, (seq, output, _, _)| {
            b.push_bind(*seq).push_bind(output.as_str());
        });
        qb.push(") AS r WHERE tasks.seq = r.column1");
        qb.build().execute(&mut *conn).await?;
        // A join on the key, not `(task_id, attempt) IN (VALUES …)`: SQLite
        // plans the row-value IN as a scan of every attempt ever recorded.
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "UPDATE attempts SET outcome = 'succeeded', error = NULL, finished_at = ",
        );
        qb.push_bind(now).push(" FROM (");
        qb.push_values(chunk, |mut b, (_, _, id, attempt)| {
            b.push_bind(id.as_str()).push_bind(i64::from(*attempt));
        });
        qb.push(") AS r WHERE attempts.task_id = r.column1 AND attempts.attempt = r.column2");
        qb.build().execute(&mut *conn).await?;
    }
    finish_jobs(conn, jobs.iter().map(String::as_str), now, &mut changes).await?;
    Ok(Some((reply, changes)))
}

/// Record a batch of heartbeats in two statements, whatever its size: one
/// UPDATE of the workers (a worker given up for lost is back and may lease
/// again), one of the leases they hold; the replies come back in batch order,
/// `None` for an unknown worker.
pub(crate) async fn heartbeats(
    conn: &mut SqliteConnection,
    batch: Vec<(String, Heartbeat)>,
    now: i64,
    ttl: i64,
) -> Result<Vec<Option<HeartbeatReply>>> {
    let beats: Vec<serde_json::Value> = batch
        .iter()
        .map(|(id, hb)| serde_json::json!({ "id": id, "load": hb.load }))
        .collect();
    let states: Vec<(String, String)> = sqlx::query_as(
        "UPDATE workers SET last_seen_at = ?1, load = b.load, \
         state = CASE WHEN workers.state = 'lost' THEN 'active' ELSE workers.state END \
         FROM (SELECT value ->> '$.id' AS id, value -> '$.load' AS load FROM json_each(?2)) AS b \
         WHERE workers.id = b.id RETURNING workers.id, workers.state",
    )
    .bind(now)
    .bind(json(&beats)?)
    .fetch_all(&mut *conn)
    .await?;
    let held: Vec<(&str, &str)> = batch
        .iter()
        .flat_map(|(w, hb)| hb.running.iter().map(move |t| (t.as_str(), w.as_str())))
        .collect();
    let extended: Vec<String> = if held.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar(
            "UPDATE tasks SET lease_expires_at = ?1 \
             FROM (SELECT value ->> '$[0]' AS tid, value ->> '$[1]' AS wid FROM json_each(?2)) AS r \
             WHERE tasks.id = r.tid AND tasks.worker_id = r.wid AND tasks.state = 'running' \
             RETURNING tasks.id",
        )
        .bind(now + ttl)
        .bind(json(&held)?)
        .fetch_all(&mut *conn)
        .await?
    };
    Ok(crate::model::heartbeat_replies(batch, &states, &extended))
}

pub(crate) async fn join_worker(
    conn: &mut SqliteConnection,
    owner: String,
    join: WorkerJoin,
    now: i64,
) -> Result<(WorkerView, Changes)> {
    let id = new_id();
    let queues = if join.queues.is_empty() {
        vec![brigade_core::validate::DEFAULT_QUEUE.to_owned()]
    } else {
        join.queues
    };
    sqlx::query(
        "INSERT INTO workers (id, name, hostname, owner, queues, kinds, labels, capacity, version, state, \
         load, joined_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', '{}', ?, ?)",
    )
    .bind(&id)
    .bind(&join.name)
    .bind(&join.hostname)
    .bind(&owner)
    .bind(json(&queues)?)
    .bind(json(&join.kinds)?)
    .bind(json(&join.labels)?)
    .bind(i64::from(join.capacity))
    .bind(&join.version)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    for q in &queues {
        sqlx::query("INSERT OR IGNORE INTO queues (name) VALUES (?)")
            .bind(q)
            .execute(&mut *conn)
            .await?;
    }
    let view = WorkerView {
        id: id.clone(),
        name: join.name.clone(),
        hostname: join.hostname,
        state: WorkerState::Active,
        queues,
        kinds: join.kinds,
        labels: join.labels,
        capacity: join.capacity,
        running: 0,
        load: brigade_api::Load {
            capacity: join.capacity,
            ..Default::default()
        },
        version: join.version,
        joined_at: from_ms(now),
        last_seen_at: from_ms(now),
    };
    let changes = Changes {
        events: vec![events::worker("worker.joined", now, &id, &join.name)],
        ..Changes::default()
    };
    Ok((view, changes))
}

/// Give a worker's running tasks back to the queue without spending an attempt.
async fn hand_back(
    conn: &mut SqliteConnection,
    worker_id: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<()> {
    let running = sqlx::query(
        "SELECT id, job_id, attempt FROM tasks WHERE worker_id = ? AND state = 'running'",
    )
    .bind(worker_id)
    .fetch_all(&mut *conn)
    .await?;
    for row in &running {
        let id: String = row.try_get("id")?;
        let attempt = row.try_get::<i64, _>("attempt")? as u32;
        end_attempt(conn, &id, attempt, "handed_back", None, now).await?;
        let job_id: String = row.try_get("job_id")?;
        changes.events.push(events::task(
            "task.retrying",
            now,
            &job_id,
            &id,
            Some(worker_id),
            attempt,
        ));
    }
    let moved = sqlx::query(
        "UPDATE tasks SET state = 'queued', attempt_base = attempt_base + 1, lease_expires_at = NULL, \
         ready_at = ? WHERE worker_id = ? AND state = 'running'",
    )
    .bind(now)
    .bind(worker_id)
    .execute(&mut *conn)
    .await?;
    changes.ready |= moved.rows_affected() > 0;
    Ok(())
}

pub(crate) async fn leave(
    conn: &mut SqliteConnection,
    worker_id: String,
    now: i64,
) -> Result<Option<Changes>> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM workers WHERE id = ?")
        .bind(&worker_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(name) = name else { return Ok(None) };
    let mut changes = Changes::default();
    hand_back(conn, &worker_id, now, &mut changes).await?;
    sqlx::query("UPDATE workers SET state = 'left', last_seen_at = ? WHERE id = ?")
        .bind(now)
        .bind(&worker_id)
        .execute(&mut *conn)
        .await?;
    changes
        .events
        .push(events::worker("worker.left", now, &worker_id, &name));
    Ok(Some(changes))
}

pub(crate) async fn drain_worker(
    conn: &mut SqliteConnection,
    worker_id: String,
) -> Result<Option<WorkerView>> {
    sqlx::query("UPDATE workers SET state = 'draining' WHERE id = ? AND state = 'active'")
        .bind(&worker_id)
        .execute(&mut *conn)
        .await?;
    read::worker(conn, &worker_id).await
}

pub(crate) async fn reap(conn: &mut SqliteConnection, now: i64, ttl: i64) -> Result<Changes> {
    let mut changes = Changes::default();
    let lost = sqlx::query(
        "SELECT id, name FROM workers WHERE state IN ('active','draining') AND last_seen_at < ?",
    )
    .bind(now - ttl)
    .fetch_all(&mut *conn)
    .await?;
    for row in &lost {
        let id: String = row.try_get("id")?;
        let name: String = row.try_get("name")?;
        sqlx::query("UPDATE workers SET state = 'lost' WHERE id = ?")
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        changes
            .events
            .push(events::worker("worker.lost", now, &id, &name));
    }
    // Tasks whose lease ran out: their worker is lost, or alive but no longer names them.
    let expired: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE state = 'running' AND (lease_expires_at < ? \
         OR worker_id IN (SELECT id FROM workers WHERE state IN ('lost','left')))",
    )
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut jobs = BTreeSet::new();
    for id in expired {
        let Some(task) = running_row(conn, &id).await? else {
            continue;
        };
        let error = TaskError::new(
            ErrorKind::Lost,
            "the worker stopped renewing the lease (lost or unreachable)",
        );
        fail_attempt(
            conn,
            &id,
            &task,
            &error,
            true,
            true,
            "lost",
            now,
            &mut changes,
        )
        .await?;
        jobs.insert(task.job_id);
    }
    finish_jobs(conn, jobs.iter().map(String::as_str), now, &mut changes).await?;
    Ok(changes)
}

pub(crate) async fn promote_due(
    conn: &mut SqliteConnection,
    now: i64,
) -> Result<(u64, Option<i64>)> {
    let moved = sqlx::query("UPDATE tasks SET state = 'queued', ready_at = run_at, run_at = NULL WHERE state = 'scheduled' AND run_at <= ?")
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let next: Option<i64> =
        sqlx::query_scalar("SELECT min(run_at) FROM tasks WHERE state = 'scheduled'")
            .fetch_one(&mut *conn)
            .await?;
    Ok((moved, next))
}

/// Cancel the unfinished tasks matching `filter` (`job_id = ?` or `id = ?`).
async fn cancel_where(
    conn: &mut SqliteConnection,
    filter: &str,
    key: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<BTreeSet<String>> {
    let rows = sqlx::query(&format!(
        "SELECT id, job_id, state, attempt, worker_id FROM tasks WHERE {filter} AND state IN {UNFINISHED}"
    ))
    .bind(key)
    .fetch_all(&mut *conn)
    .await?;
    let error = TaskError::new(ErrorKind::Cancelled, "cancelled by request");
    let error_json = json(&error)?;
    let mut jobs = BTreeSet::new();
    for row in &rows {
        let id: String = row.try_get("id")?;
        let job_id: String = row.try_get("job_id")?;
        let state: String = row.try_get("state")?;
        let attempt = row.try_get::<i64, _>("attempt")? as u32;
        let worker_id: Option<String> = row.try_get("worker_id")?;
        if state == "running" {
            end_attempt(conn, &id, attempt, "cancelled", Some(&error_json), now).await?;
        }
        changes.events.push(events::task_error(
            "task.cancelled",
            now,
            &job_id,
            &id,
            worker_id.as_deref(),
            attempt,
            &error,
        ));
        jobs.insert(job_id);
    }
    sqlx::query(&format!(
        "UPDATE tasks SET state = 'cancelled', finished_at = ?, error = ?, lease_expires_at = NULL, run_at = NULL \
         WHERE {filter} AND state IN {UNFINISHED}"
    ))
    .bind(now)
    .bind(&error_json)
    .bind(key)
    .execute(&mut *conn)
    .await?;
    Ok(jobs)
}

pub(crate) async fn cancel_job(
    conn: &mut SqliteConnection,
    id: String,
    now: i64,
) -> Result<Option<Changes>> {
    let found =
        sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND finished_at IS NULL")
            .bind(&id)
            .execute(&mut *conn)
            .await?;
    if found.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?;
        // Cancelling a finished job changes nothing.
        return Ok(exists.map(|_| Changes::default()));
    }
    let mut changes = Changes::default();
    cancel_where(conn, "job_id = ?", &id, now, &mut changes).await?;
    finish_jobs(conn, [id.as_str()], now, &mut changes).await?;
    Ok(Some(changes))
}

pub(crate) async fn cancel_task(
    conn: &mut SqliteConnection,
    id: String,
    now: i64,
) -> Result<Option<Changes>> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tasks WHERE id = ?")
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let mut changes = Changes::default();
    let jobs = cancel_where(conn, "id = ?", &id, now, &mut changes).await?;
    finish_jobs(conn, jobs.iter().map(String::as_str), now, &mut changes).await?;
    Ok(Some(changes))
}

pub(crate) async fn retry_task(
    conn: &mut SqliteConnection,
    id: String,
    now: i64,
) -> Result<RetryOutcome> {
    let Some(task) = read::task(conn, &id).await? else {
        return Ok(RetryOutcome::NotFound);
    };
    if !matches!(
        task.state,
        brigade_api::TaskState::Failed | brigade_api::TaskState::Cancelled
    ) {
        return Ok(RetryOutcome::NotRetryable(task.state));
    }
    sqlx::query(
        "UPDATE tasks SET state = 'queued', attempt_base = attempt, finished_at = NULL, run_at = NULL, \
         lease_expires_at = NULL, ready_at = ? WHERE id = ?",
    )
    .bind(now)
    .bind(&id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE jobs SET finished_at = NULL, cancel_requested = 0, \
         state = CASE WHEN started_at IS NULL THEN 'queued' ELSE 'running' END WHERE id = ?",
    )
    .bind(&task.job_id)
    .execute(&mut *conn)
    .await?;
    let view: TaskView = read::task(conn, &id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("task vanished".into()))?;
    let changes = Changes {
        ready: true,
        ..Changes::default()
    };
    Ok(RetryOutcome::Retried(Box::new(view), changes))
}

pub(crate) async fn delete_job(conn: &mut SqliteConnection, id: String) -> Result<DeleteOutcome> {
    let finished: Option<Option<i64>> =
        sqlx::query_scalar("SELECT finished_at FROM jobs WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?;
    match finished {
        None => Ok(DeleteOutcome::NotFound),
        Some(None) => Ok(DeleteOutcome::Unfinished),
        Some(Some(_)) => {
            sqlx::query(
                "DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE job_id = ?)",
            )
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "DELETE FROM task_logs WHERE task_id IN (SELECT id FROM tasks WHERE job_id = ?)",
            )
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM tasks WHERE job_id = ?")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM jobs WHERE id = ?")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            Ok(DeleteOutcome::Deleted)
        }
    }
}

pub(crate) async fn set_queue_paused(
    conn: &mut SqliteConnection,
    name: String,
    paused: bool,
) -> Result<brigade_api::QueueView> {
    sqlx::query("INSERT INTO queues (name, paused) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET paused = excluded.paused")
        .bind(&name)
        .bind(paused)
        .execute(&mut *conn)
        .await?;
    let all = read::queues(conn).await?;
    all.into_iter()
        .find(|q| q.name == name)
        .ok_or_else(|| StoreError::Corrupt("queue vanished".into()))
}

pub(crate) async fn append_logs(
    conn: &mut SqliteConnection,
    worker_id: String,
    logs: Vec<brigade_api::LogBatch>,
    now: i64,
) -> Result<Option<brigade_api::LogsReply>> {
    let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM workers WHERE id = ?")
        .bind(&worker_id)
        .fetch_optional(&mut *conn)
        .await?;
    if known.is_none() {
        return Ok(None);
    }
    let mut reply = brigade_api::LogsReply::default();
    for b in logs {
        let reject = |reason: String| RejectedResult {
            task_id: b.task_id.clone(),
            reason,
        };
        let row = sqlx::query("SELECT state, attempt, worker_id FROM tasks WHERE id = ?")
            .bind(&b.task_id)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            reply.rejected.push(reject("unknown task".into()));
            continue;
        };
        let attempt = row.try_get::<i64, _>("attempt")? as u32;
        let state: String = row.try_get("state")?;
        let lessee: Option<String> = row.try_get("worker_id")?;
        if attempt != b.attempt {
            reply.rejected.push(reject(format!(
                "stale attempt: the task is on attempt {attempt}"
            )));
            continue;
        }
        if lessee.as_deref() != Some(worker_id.as_str()) || state != "running" {
            reply.rejected.push(reject(
                "stale attempt: the task is not running on this worker".into(),
            ));
            continue;
        }
        let stored = sqlx::query(
            "SELECT coalesce(sum(length(CAST(line AS BLOB))), 0) AS bytes, \
             coalesce(max(line = ?), 0) AS cut FROM task_logs WHERE task_id = ? AND attempt = ?",
        )
        .bind(brigade_api::logs::TRUNCATED)
        .bind(&b.task_id)
        .bind(i64::from(b.attempt))
        .fetch_one(&mut *conn)
        .await?;
        let lines = crate::logs::admit(
            stored.try_get("bytes")?,
            stored.try_get::<i64, _>("cut")? != 0,
            b.lines,
        );
        for chunk in lines.chunks(INSERT_CHUNK) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO task_logs (task_id, attempt, line, at) ");
            qb.push_values(chunk, |mut v, line| {
                v.push_bind(b.task_id.as_str())
                    .push_bind(i64::from(b.attempt))
                    .push_bind(line.as_str())
                    .push_bind(now);
            });
            qb.build().execute(&mut *conn).await?;
        }
        reply.accepted.push(b.task_id);
    }
    Ok(Some(reply))
}
