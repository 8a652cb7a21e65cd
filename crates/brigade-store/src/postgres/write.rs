//! Write transactions of the PostgreSQL engine. Each runs in its own transaction
//! (see [`super::PostgresStore`]); several servers run them concurrently against
//! one database, so every read that decides a write locks the rows it decides on
//! (`FOR UPDATE`, or `FOR UPDATE SKIP LOCKED` where another server may take them
//! instead), and every job is finished under a lock of its row.
//!
//! The semantics are those of the SQLite engine's `write.rs`: same states, same
//! attempt checks, same `attempt_base` rule, same events and flags.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use brigade_api::{
    Backoff, ErrorKind, Heartbeat, JobState, LeasedTask, Outcome, Progress, RejectedResult,
    ResultsReply, TaskError, TaskResult, TaskView, WorkerJoin, WorkerState, WorkerView,
};
use brigade_core::lifecycle::{Failure, on_failure};
use brigade_core::{NewJob, from_ms, ids::new_id};
use sqlx::{PgConnection, Row};

use super::{read, rows};
use crate::model::{Changes, DeleteOutcome, Idempotency, Phase, RetryOutcome, Submitted, Timing};
use crate::{Result, StoreError, events};

/// Unfinished task states, as SQL.
const UNFINISHED: &str = "('queued','scheduled','running')";

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?)
}

/// The earlier job submitted with this idempotency key, if any.
async fn idempotent_replay(
    conn: &mut PgConnection,
    owner: &str,
    idem: &Idempotency,
) -> Result<Option<Submitted>> {
    let found = sqlx::query("SELECT id, idem_hash FROM jobs WHERE owner = $1 AND idem_key = $2")
        .bind(owner)
        .bind(&idem.key)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = found else { return Ok(None) };
    let hash: Option<String> = row.try_get("idem_hash")?;
    if hash.as_deref() != Some(idem.hash.as_str()) {
        return Err(StoreError::IdempotencyConflict);
    }
    let id: String = row.try_get("id")?;
    let mut view = read::job(&mut *conn, &id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("job vanished".into()))?;
    let ids =
        sqlx::query_scalar::<_, String>("SELECT id FROM tasks WHERE job_id = $1 ORDER BY seq")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?;
    view.task_ids = Some(ids);
    Ok(Some(Submitted {
        job: view,
        created: false,
        changes: Changes::default(),
    }))
}

/// Create the queues named, when unknown.
async fn ensure_queues(conn: &mut PgConnection, names: Vec<String>) -> Result<()> {
    sqlx::query(
        "INSERT INTO queues (name) SELECT DISTINCT n FROM unnest($1::text[]) AS n \
         ORDER BY n ON CONFLICT (name) DO NOTHING",
    )
    .bind(names)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn submit(
    conn: &mut PgConnection,
    owner: &str,
    job: &NewJob,
    idem: Option<&Idempotency>,
    now: i64,
) -> Result<Submitted> {
    if let Some(idem) = idem
        && let Some(earlier) = idempotent_replay(conn, owner, idem).await?
    {
        return Ok(earlier);
    }

    let job_id = new_id();
    let total = job.tasks.len();
    // Two servers may take the same new key at once: the loser waits for the
    // winner's commit, inserts nothing, and answers with the winner's job.
    let inserted = sqlx::query(
        "INSERT INTO jobs (id, name, queue, labels, owner, state, total, created_at, idem_key, idem_hash) \
         VALUES ($1, $2, $3, $4::jsonb, $5, 'queued', $6, $7, $8, $9) \
         ON CONFLICT (owner, idem_key) WHERE idem_key IS NOT NULL DO NOTHING",
    )
    .bind(&job_id)
    .bind(&job.name)
    .bind(&job.queue)
    .bind(json(&job.labels)?)
    .bind(owner)
    .bind(total as i64)
    .bind(now)
    .bind(idem.map(|i| i.key.as_str()))
    .bind(idem.map(|i| i.hash.as_str()))
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        if let Some(idem) = idem
            && let Some(earlier) = idempotent_replay(conn, owner, idem).await?
        {
            return Ok(earlier);
        }
        return Err(StoreError::Corrupt("job insert did nothing".into()));
    }

    ensure_queues(conn, job.tasks.iter().map(|t| t.queue.clone()).collect()).await?;

    let mut progress = Progress {
        total: total as u64,
        ..Progress::default()
    };
    let mut ids = Vec::with_capacity(total);
    let mut kinds = Vec::with_capacity(total);
    let mut names = Vec::with_capacity(total);
    let mut queues = Vec::with_capacity(total);
    let mut priorities = Vec::with_capacity(total);
    let mut states = Vec::with_capacity(total);
    let mut inputs = Vec::with_capacity(total);
    let mut max_attempts = Vec::with_capacity(total);
    let mut timeouts = Vec::with_capacity(total);
    let mut backoffs = Vec::with_capacity(total);
    let mut requires = Vec::with_capacity(total);
    let mut run_ats = Vec::with_capacity(total);
    for t in &job.tasks {
        let scheduled = t.run_at.is_some_and(|at| at > now);
        if scheduled {
            progress.scheduled += 1;
        } else {
            progress.queued += 1;
        }
        ids.push(new_id());
        kinds.push(t.kind.as_str());
        names.push(t.name.as_deref());
        queues.push(t.queue.as_str());
        priorities.push(i64::from(t.priority));
        states.push(if scheduled { "scheduled" } else { "queued" });
        inputs.push(t.input.as_str());
        max_attempts.push(i64::from(t.max_attempts));
        timeouts.push(t.timeout_ms as i64);
        backoffs.push(json(&t.backoff)?);
        requires.push(if t.requires.is_empty() {
            None
        } else {
            Some(json(&t.requires)?)
        });
        run_ats.push(if scheduled { t.run_at } else { None });
    }
    // One statement for all tasks: arrays, one per column, unnested in order.
    sqlx::query(
        "INSERT INTO tasks (id, job_id, kind, name, queue, priority, state, input, max_attempts, \
         timeout_ms, backoff, requires, run_at, created_at, ready_at) \
         SELECT u.id, $1, u.kind, u.name, u.queue, u.priority, u.state, u.input::json, u.max_attempts, \
                u.timeout_ms, u.backoff::jsonb, u.requires::jsonb, u.run_at, $2, coalesce(u.run_at, $2) \
         FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], \
                     $9::text[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], $14::bigint[]) \
              WITH ORDINALITY AS u(id, kind, name, queue, priority, state, input, max_attempts, \
                                   timeout_ms, backoff, requires, run_at, ord) \
         ORDER BY u.ord",
    )
    .bind(&job_id)
    .bind(now)
    .bind(&ids)
    .bind(&kinds)
    .bind(&names)
    .bind(&queues)
    .bind(&priorities)
    .bind(&states)
    .bind(&inputs)
    .bind(&max_attempts)
    .bind(&timeouts)
    .bind(&backoffs)
    .bind(&requires)
    .bind(&run_ats)
    .execute(&mut *conn)
    .await?;

    let view = brigade_api::JobView {
        id: job_id.clone(),
        name: job.name.clone(),
        queue: job.queue.clone(),
        labels: job.labels.clone(),
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
///
/// The job row is locked before its tasks are counted: when two servers finish
/// the last two tasks of a job at once, the second to get the lock sees the
/// first one's committed task and finishes the job.
pub(crate) async fn finish_jobs(
    conn: &mut PgConnection,
    jobs: &BTreeSet<String>,
    now: i64,
    changes: &mut Changes,
) -> Result<()> {
    // BTreeSet order: every transaction locks jobs in the same order.
    for job_id in jobs {
        let row = sqlx::query(
            "SELECT name, cancel_requested, finished_at FROM jobs WHERE id = $1 FOR UPDATE",
        )
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { continue };
        if row.try_get::<Option<i64>, _>("finished_at")?.is_some() {
            continue;
        }
        let open: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT 1::BIGINT FROM tasks WHERE job_id = $1 AND state IN {UNFINISHED} LIMIT 1"
        ))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
        if open.is_some() {
            continue;
        }
        let progress = read::progress(&mut *conn, job_id).await?;
        let state = brigade_core::job_state(&progress, row.try_get::<bool, _>("cancel_requested")?);
        let last_end: Option<i64> =
            sqlx::query_scalar("SELECT max(finished_at) FROM tasks WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(&mut *conn)
                .await?;
        sqlx::query("UPDATE jobs SET state = $1, finished_at = $2 WHERE id = $3")
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
    conn: &mut PgConnection,
    worker_id: &str,
    max: u32,
    now: i64,
    ttl: i64,
) -> Result<Option<(Vec<LeasedTask>, Changes)>> {
    let Some(worker) = sqlx::query(
        "SELECT state, queues::text AS queues, kinds::text AS kinds, labels::text AS labels \
         FROM workers WHERE id = $1",
    )
    .bind(worker_id)
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
    // One round trip: pick (skipping rows another server is leasing right now),
    // mark running, open the attempts, start the jobs.
    let picked = sqlx::query(
        "WITH picked AS ( \
             SELECT seq FROM tasks \
             WHERE state = 'queued' AND queue = ANY($1::text[]) AND kind = ANY($2::text[]) \
               AND queue NOT IN (SELECT name FROM queues WHERE paused) \
               AND (requires IS NULL OR NOT EXISTS ( \
                    SELECT 1 FROM jsonb_each_text(tasks.requires) r \
                    WHERE r.key || '=' || r.value <> ALL($3::text[]))) \
             ORDER BY priority DESC, seq \
             LIMIT $4 \
             FOR UPDATE SKIP LOCKED \
         ), leased AS ( \
             UPDATE tasks SET state = 'running', attempt = attempt + 1, worker_id = $5, \
                    started_at = $6, lease_expires_at = $7, run_at = NULL, finished_at = NULL \
             FROM picked WHERE tasks.seq = picked.seq \
             RETURNING tasks.seq, tasks.priority, tasks.id, tasks.job_id, tasks.kind, \
                       tasks.input::text AS input, tasks.attempt, tasks.timeout_ms, \
                       coalesce(tasks.ready_at, tasks.created_at) AS ready_at \
         ), opened AS ( \
             INSERT INTO attempts (task_id, attempt, worker_id, started_at, outcome) \
             SELECT id, attempt, $5, $6, 'running' FROM leased \
             ON CONFLICT (task_id, attempt) DO UPDATE SET worker_id = excluded.worker_id, \
                 started_at = excluded.started_at, finished_at = NULL, outcome = 'running', error = NULL \
         ), started AS ( \
             UPDATE jobs SET started_at = $6, state = 'running' \
             WHERE id IN (SELECT job_id FROM leased) AND started_at IS NULL \
         ) \
         SELECT id, job_id, kind, input, attempt, timeout_ms, ready_at FROM leased \
         ORDER BY priority DESC, seq",
    )
    .bind(&queues)
    .bind(&kinds)
    .bind(&offered)
    .bind(i64::from(max))
    .bind(worker_id)
    .bind(now)
    .bind(expires)
    .fetch_all(&mut *conn)
    .await?;

    let mut leased = Vec::with_capacity(picked.len());
    let mut changes = Changes::default();
    for row in picked {
        let id: String = row.try_get("id")?;
        let job_id: String = row.try_get("job_id")?;
        let attempt = row.try_get::<i64, _>("attempt")? as u32;
        changes.events.push(events::task(
            "task.started",
            now,
            &job_id,
            &id,
            Some(worker_id),
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
            job_id,
            kind,
            input: serde_json::from_str(&input)?,
            attempt,
            timeout_ms: row.try_get::<i64, _>("timeout_ms")? as u64,
            lease_expires_at: from_ms(expires),
        });
    }
    Ok(Some((leased, changes)))
}

/// A running task's row, as a result or reaper needs it.
struct Running {
    seq: i64,
    id: String,
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

const RUNNING_COLUMNS: &str = "seq, id, job_id, state, attempt, attempt_base, max_attempts, worker_id, \
                               backoff::text AS backoff, kind, started_at";

fn running(row: &sqlx::postgres::PgRow) -> Result<Running> {
    let backoff: String = row.try_get("backoff")?;
    Ok(Running {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        state: row.try_get("state")?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        attempt_base: row.try_get::<i64, _>("attempt_base")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        worker_id: row.try_get("worker_id")?,
        backoff: serde_json::from_str(&backoff)?,
        kind: row.try_get("kind")?,
        started_at: row.try_get("started_at")?,
    })
}

/// End attempt `attempt` of a running task with a failure: retry, requeue or fail it.
/// Returns the task's new state.
#[allow(clippy::too_many_arguments)]
async fn fail_attempt(
    conn: &mut PgConnection,
    task: &Running,
    error: &TaskError,
    retryable: bool,
    lost: bool,
    outcome: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<&'static str> {
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
        "UPDATE tasks SET state = $1, run_at = $2, finished_at = $3, error = $4::jsonb, \
         lease_expires_at = NULL, ready_at = coalesce($6, ready_at) WHERE seq = $5",
    )
    .bind(state)
    .bind(run_at)
    .bind(finished)
    .bind(&error_json)
    .bind(task.seq)
    .bind(ready_at)
    .execute(&mut *conn)
    .await?;
    end_attempts(
        conn,
        &[task.id.as_str()],
        &[i64::from(task.attempt)],
        outcome,
        Some(&error_json),
        now,
    )
    .await?;
    changes.events.push(events::task_error(
        event,
        now,
        &task.job_id,
        &task.id,
        task.worker_id.as_deref(),
        task.attempt,
        error,
    ));
    match decision {
        Failure::Retry { .. } => changes.scheduled = true,
        Failure::Requeue => changes.ready = true,
        Failure::Fail => {}
    }
    Ok(state)
}

/// Close attempts (`ids[i]`, `attempts[i]`) with one outcome.
async fn end_attempts(
    conn: &mut PgConnection,
    ids: &[&str],
    attempts: &[i64],
    outcome: &str,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE attempts SET finished_at = $1, outcome = $2, error = $3::jsonb \
         FROM unnest($4::text[], $5::bigint[]) AS u(task_id, attempt) \
         WHERE attempts.task_id = u.task_id AND attempts.attempt = u.attempt",
    )
    .bind(now)
    .bind(outcome)
    .bind(error)
    .bind(ids)
    .bind(attempts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn report(
    conn: &mut PgConnection,
    worker_id: &str,
    results: &[TaskResult],
    now: i64,
) -> Result<Option<(ResultsReply, Changes)>> {
    let known: Option<i64> = sqlx::query_scalar("SELECT 1::BIGINT FROM workers WHERE id = $1")
        .bind(worker_id)
        .fetch_optional(&mut *conn)
        .await?;
    if known.is_none() {
        return Ok(None);
    }
    // Lock every task the batch names, in one statement and in id order (the
    // same order in every transaction, so two batches cannot deadlock).
    let ids: Vec<&str> = results.iter().map(|r| r.task_id.as_str()).collect();
    let locked = sqlx::query(&format!(
        "SELECT {RUNNING_COLUMNS} FROM tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut tasks: HashMap<String, Running> = HashMap::with_capacity(locked.len());
    for row in &locked {
        let t = running(row)?;
        tasks.insert(t.id.clone(), t);
    }

    let mut reply = ResultsReply::default();
    let mut changes = Changes::default();
    let mut jobs = BTreeSet::new();
    // Successes are written together at the end.
    let mut ok_seqs: Vec<i64> = Vec::new();
    let mut ok_outputs: Vec<String> = Vec::new();
    let mut ok_ids: Vec<String> = Vec::new();
    let mut ok_attempts: Vec<i64> = Vec::new();
    for r in results {
        let reject = |reason: String| RejectedResult {
            task_id: r.task_id.clone(),
            reason,
        };
        let Some(task) = tasks.get_mut(&r.task_id) else {
            reply.rejected.push(reject("unknown task".into()));
            continue;
        };
        if task.attempt != r.attempt {
            reply.rejected.push(reject(format!(
                "stale attempt: the task is on attempt {}",
                task.attempt
            )));
            continue;
        }
        if task.worker_id.as_deref() != Some(worker_id) {
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
                ok_seqs.push(task.seq);
                ok_outputs.push(json(&r.output)?);
                ok_ids.push(r.task_id.clone());
                ok_attempts.push(i64::from(task.attempt));
                task.state = "succeeded".into();
                if let Some(started) = task.started_at {
                    changes.timings.push(Timing::between(
                        task.kind.clone(),
                        Phase::Run,
                        started,
                        now,
                    ));
                }
                changes.events.push(events::task(
                    "task.succeeded",
                    now,
                    &task.job_id,
                    &r.task_id,
                    Some(worker_id),
                    task.attempt,
                ));
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
                let state = fail_attempt(
                    conn,
                    task,
                    &error,
                    retryable,
                    false,
                    outcome,
                    now,
                    &mut changes,
                )
                .await?;
                task.state = state.into();
            }
        }
        jobs.insert(task.job_id.clone());
        reply.accepted.push(r.task_id.clone());
    }
    if !ok_seqs.is_empty() {
        sqlx::query(
            "UPDATE tasks SET state = 'succeeded', output = u.output::json, error = NULL, \
             finished_at = $1, lease_expires_at = NULL \
             FROM unnest($2::bigint[], $3::text[]) AS u(seq, output) WHERE tasks.seq = u.seq",
        )
        .bind(now)
        .bind(&ok_seqs)
        .bind(&ok_outputs)
        .execute(&mut *conn)
        .await?;
        let ids: Vec<&str> = ok_ids.iter().map(String::as_str).collect();
        end_attempts(conn, &ids, &ok_attempts, "succeeded", None, now).await?;
    }
    finish_jobs(conn, &jobs, now, &mut changes).await?;
    Ok(Some((reply, changes)))
}

/// Record a batch of heartbeats in two statements, whatever its size: one
/// UPDATE of the workers (a worker given up for lost is back and may lease
/// again), one of the leases they hold. Returns each known worker's state and
/// the tasks whose lease was extended.
pub(crate) async fn heartbeats(
    conn: &mut PgConnection,
    batch: &[(String, Heartbeat)],
    now: i64,
    ttl: i64,
) -> Result<(Vec<(String, String)>, Vec<String>)> {
    // Lock rows in one order on every server: two servers' batches never
    // wait on each other in a cycle.
    let mut beats: Vec<(&str, &Heartbeat)> = batch.iter().map(|(w, hb)| (w.as_str(), hb)).collect();
    beats.sort_by_key(|(w, _)| *w);
    beats.dedup_by_key(|(w, _)| *w);
    let ids: Vec<&str> = beats.iter().map(|(w, _)| *w).collect();
    let loads = beats
        .iter()
        .map(|(_, hb)| json(&hb.load))
        .collect::<Result<Vec<String>>>()?;
    let states: Vec<(String, String)> = sqlx::query_as(
        "WITH b AS (SELECT * FROM unnest($2::text[], $3::text[]) AS b(id, load)), \
         locked AS (SELECT w.id FROM workers w JOIN b ON w.id = b.id ORDER BY w.id FOR UPDATE OF w) \
         UPDATE workers SET last_seen_at = $1, load = b.load::jsonb, \
         state = CASE WHEN workers.state = 'lost' THEN 'active' ELSE workers.state END \
         FROM b, locked WHERE workers.id = b.id AND locked.id = b.id \
         RETURNING workers.id, workers.state",
    )
    .bind(now)
    .bind(&ids)
    .bind(&loads)
    .fetch_all(&mut *conn)
    .await?;
    let mut held: Vec<(&str, &str)> = batch
        .iter()
        .flat_map(|(w, hb)| hb.running.iter().map(move |t| (t.as_str(), w.as_str())))
        .collect();
    held.sort_unstable();
    let extended: Vec<String> = if held.is_empty() {
        Vec::new()
    } else {
        let (tids, wids): (Vec<&str>, Vec<&str>) = held.into_iter().unzip();
        sqlx::query_scalar(
            "UPDATE tasks SET lease_expires_at = $1 \
             FROM unnest($2::text[], $3::text[]) AS r(tid, wid) \
             WHERE tasks.id = r.tid AND tasks.worker_id = r.wid AND tasks.state = 'running' \
             RETURNING tasks.id",
        )
        .bind(now + ttl)
        .bind(&tids)
        .bind(&wids)
        .fetch_all(&mut *conn)
        .await?
    };
    Ok((states, extended))
}

pub(crate) async fn join_worker(
    conn: &mut PgConnection,
    owner: &str,
    join: &WorkerJoin,
    now: i64,
) -> Result<(WorkerView, Changes)> {
    let id = new_id();
    let queues = if join.queues.is_empty() {
        vec![brigade_core::validate::DEFAULT_QUEUE.to_owned()]
    } else {
        join.queues.clone()
    };
    sqlx::query(
        "INSERT INTO workers (id, name, hostname, owner, queues, kinds, labels, capacity, version, state, \
         load, joined_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8, $9, 'active', '{}', $10, $11)",
    )
    .bind(&id)
    .bind(&join.name)
    .bind(&join.hostname)
    .bind(owner)
    .bind(json(&queues)?)
    .bind(json(&join.kinds)?)
    .bind(json(&join.labels)?)
    .bind(i64::from(join.capacity))
    .bind(&join.version)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    ensure_queues(conn, queues.clone()).await?;
    let view = WorkerView {
        id: id.clone(),
        name: join.name.clone(),
        hostname: join.hostname.clone(),
        state: WorkerState::Active,
        queues,
        kinds: join.kinds.clone(),
        labels: join.labels.clone(),
        capacity: join.capacity,
        running: 0,
        load: brigade_api::Load {
            capacity: join.capacity,
            ..Default::default()
        },
        version: join.version.clone(),
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
    conn: &mut PgConnection,
    worker_id: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<()> {
    let moved = sqlx::query(
        "UPDATE tasks SET state = 'queued', attempt_base = attempt_base + 1, lease_expires_at = NULL, \
         ready_at = $2 WHERE worker_id = $1 AND state = 'running' RETURNING seq, id, job_id, attempt",
    )
    .bind(worker_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut moved = moved
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<i64, _>("seq")?,
                row.try_get::<String, _>("id")?,
                row.try_get::<String, _>("job_id")?,
                row.try_get::<i64, _>("attempt")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    moved.sort_unstable_by_key(|m| m.0);
    let ids: Vec<&str> = moved.iter().map(|m| m.1.as_str()).collect();
    let attempts: Vec<i64> = moved.iter().map(|m| m.3).collect();
    end_attempts(conn, &ids, &attempts, "handed_back", None, now).await?;
    for (_, id, job_id, attempt) in &moved {
        changes.events.push(events::task(
            "task.retrying",
            now,
            job_id,
            id,
            Some(worker_id),
            *attempt as u32,
        ));
    }
    changes.ready |= !moved.is_empty();
    Ok(())
}

pub(crate) async fn leave(
    conn: &mut PgConnection,
    worker_id: &str,
    now: i64,
) -> Result<Option<Changes>> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT name FROM workers WHERE id = $1 FOR UPDATE")
            .bind(worker_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(name) = name else { return Ok(None) };
    let mut changes = Changes::default();
    hand_back(conn, worker_id, now, &mut changes).await?;
    sqlx::query("UPDATE workers SET state = 'left', last_seen_at = $1 WHERE id = $2")
        .bind(now)
        .bind(worker_id)
        .execute(&mut *conn)
        .await?;
    changes
        .events
        .push(events::worker("worker.left", now, worker_id, &name));
    Ok(Some(changes))
}

pub(crate) async fn drain_worker(
    conn: &mut PgConnection,
    worker_id: &str,
) -> Result<Option<WorkerView>> {
    sqlx::query("UPDATE workers SET state = 'draining' WHERE id = $1 AND state = 'active'")
        .bind(worker_id)
        .execute(&mut *conn)
        .await?;
    read::worker(conn, worker_id).await
}

pub(crate) async fn reap(conn: &mut PgConnection, now: i64, ttl: i64) -> Result<Changes> {
    let mut changes = Changes::default();
    // The conditional update re-checks the state of rows another reaper just
    // changed, so each worker is reported lost once.
    let lost = sqlx::query(
        "UPDATE workers SET state = 'lost' \
         WHERE state IN ('active','draining') AND last_seen_at < $1 RETURNING id, name",
    )
    .bind(now - ttl)
    .fetch_all(&mut *conn)
    .await?;
    for row in &lost {
        let id: String = row.try_get("id")?;
        let name: String = row.try_get("name")?;
        changes
            .events
            .push(events::worker("worker.lost", now, &id, &name));
    }
    // Tasks whose lease ran out: their worker is lost, or alive but no longer names them.
    // Rows another server holds (a reaper, a result being recorded) are left to it.
    let expired = sqlx::query(&format!(
        "SELECT {RUNNING_COLUMNS} FROM tasks WHERE state = 'running' AND (lease_expires_at < $1 \
         OR worker_id IN (SELECT id FROM workers WHERE state IN ('lost','left'))) \
         ORDER BY seq FOR UPDATE SKIP LOCKED"
    ))
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut jobs = BTreeSet::new();
    for row in &expired {
        let task = running(row)?;
        let error = TaskError::new(
            ErrorKind::Lost,
            "the worker stopped renewing the lease (lost or unreachable)",
        );
        fail_attempt(conn, &task, &error, true, true, "lost", now, &mut changes).await?;
        jobs.insert(task.job_id);
    }
    finish_jobs(conn, &jobs, now, &mut changes).await?;
    Ok(changes)
}

pub(crate) async fn promote_due(conn: &mut PgConnection, now: i64) -> Result<(u64, Option<i64>)> {
    let moved = sqlx::query(
        "UPDATE tasks SET state = 'queued', ready_at = run_at, run_at = NULL WHERE seq IN ( \
             SELECT seq FROM tasks WHERE state = 'scheduled' AND run_at <= $1 \
             FOR UPDATE SKIP LOCKED)",
    )
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

/// Which tasks [`cancel_where`] cancels.
enum CancelScope<'a> {
    Job(&'a str),
    Task(&'a str),
}

/// Cancel the unfinished tasks of a job, or one task.
async fn cancel_where(
    conn: &mut PgConnection,
    scope: CancelScope<'_>,
    now: i64,
    changes: &mut Changes,
) -> Result<BTreeSet<String>> {
    let (filter, key) = match scope {
        CancelScope::Job(id) => ("job_id = $1", id),
        CancelScope::Task(id) => ("id = $1", id),
    };
    let rows = sqlx::query(&format!(
        "SELECT seq, id, job_id, state, attempt, worker_id FROM tasks \
         WHERE {filter} AND state IN {UNFINISHED} ORDER BY seq FOR UPDATE"
    ))
    .bind(key)
    .fetch_all(&mut *conn)
    .await?;
    let error = TaskError::new(ErrorKind::Cancelled, "cancelled by request");
    let error_json = json(&error)?;
    let mut jobs = BTreeSet::new();
    let mut seqs = Vec::with_capacity(rows.len());
    let mut running_ids = Vec::new();
    let mut running_attempts = Vec::new();
    for row in &rows {
        let id: String = row.try_get("id")?;
        let job_id: String = row.try_get("job_id")?;
        let state: String = row.try_get("state")?;
        let attempt = row.try_get::<i64, _>("attempt")?;
        let worker_id: Option<String> = row.try_get("worker_id")?;
        seqs.push(row.try_get::<i64, _>("seq")?);
        changes.events.push(events::task_error(
            "task.cancelled",
            now,
            &job_id,
            &id,
            worker_id.as_deref(),
            attempt as u32,
            &error,
        ));
        if state == "running" {
            running_ids.push(id);
            running_attempts.push(attempt);
        }
        jobs.insert(job_id);
    }
    let ids: Vec<&str> = running_ids.iter().map(String::as_str).collect();
    end_attempts(
        conn,
        &ids,
        &running_attempts,
        "cancelled",
        Some(&error_json),
        now,
    )
    .await?;
    if !seqs.is_empty() {
        sqlx::query(
            "UPDATE tasks SET state = 'cancelled', finished_at = $1, error = $2::jsonb, \
             lease_expires_at = NULL, run_at = NULL WHERE seq = ANY($3::bigint[])",
        )
        .bind(now)
        .bind(&error_json)
        .bind(&seqs)
        .execute(&mut *conn)
        .await?;
    }
    Ok(jobs)
}

pub(crate) async fn cancel_job(
    conn: &mut PgConnection,
    id: &str,
    now: i64,
) -> Result<Option<Changes>> {
    let found = sqlx::query(
        "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1 AND finished_at IS NULL",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if found.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1::BIGINT FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        // Cancelling a finished job changes nothing.
        return Ok(exists.map(|_| Changes::default()));
    }
    let mut changes = Changes::default();
    cancel_where(conn, CancelScope::Job(id), now, &mut changes).await?;
    finish_jobs(conn, &BTreeSet::from([id.to_owned()]), now, &mut changes).await?;
    Ok(Some(changes))
}

pub(crate) async fn cancel_task(
    conn: &mut PgConnection,
    id: &str,
    now: i64,
) -> Result<Option<Changes>> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1::BIGINT FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let mut changes = Changes::default();
    let jobs = cancel_where(conn, CancelScope::Task(id), now, &mut changes).await?;
    finish_jobs(conn, &jobs, now, &mut changes).await?;
    Ok(Some(changes))
}

pub(crate) async fn retry_task(
    conn: &mut PgConnection,
    id: &str,
    now: i64,
) -> Result<RetryOutcome> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(state) = state else {
        return Ok(RetryOutcome::NotFound);
    };
    let state = rows::task_state(&state)?;
    if !matches!(
        state,
        brigade_api::TaskState::Failed | brigade_api::TaskState::Cancelled
    ) {
        return Ok(RetryOutcome::NotRetryable(state));
    }
    let job_id: String = sqlx::query_scalar(
        "UPDATE tasks SET state = 'queued', attempt_base = attempt, finished_at = NULL, run_at = NULL, \
         lease_expires_at = NULL, ready_at = $2 WHERE id = $1 RETURNING job_id",
    )
    .bind(id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE jobs SET finished_at = NULL, cancel_requested = FALSE, \
         state = CASE WHEN started_at IS NULL THEN 'queued' ELSE 'running' END WHERE id = $1",
    )
    .bind(&job_id)
    .execute(&mut *conn)
    .await?;
    let view: TaskView = read::task(conn, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("task vanished".into()))?;
    let changes = Changes {
        ready: true,
        ..Changes::default()
    };
    Ok(RetryOutcome::Retried(Box::new(view), changes))
}

pub(crate) async fn delete_job(conn: &mut PgConnection, id: &str) -> Result<DeleteOutcome> {
    let finished: Option<Option<i64>> =
        sqlx::query_scalar("SELECT finished_at FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    match finished {
        None => Ok(DeleteOutcome::NotFound),
        Some(None) => Ok(DeleteOutcome::Unfinished),
        Some(Some(_)) => {
            sqlx::query(
                "DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE job_id = $1)",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "DELETE FROM task_logs WHERE task_id IN (SELECT id FROM tasks WHERE job_id = $1)",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM tasks WHERE job_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM jobs WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            Ok(DeleteOutcome::Deleted)
        }
    }
}

pub(crate) async fn set_queue_paused(
    conn: &mut PgConnection,
    name: &str,
    paused: bool,
) -> Result<brigade_api::QueueView> {
    sqlx::query(
        "INSERT INTO queues (name, paused) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
    )
    .bind(name)
    .bind(paused)
    .execute(&mut *conn)
    .await?;
    let all = read::queues(conn).await?;
    all.into_iter()
        .find(|q| q.name == name)
        .ok_or_else(|| StoreError::Corrupt("queue vanished".into()))
}

pub(crate) async fn append_logs(
    conn: &mut PgConnection,
    worker_id: &str,
    logs: &[brigade_api::LogBatch],
    now: i64,
) -> Result<Option<brigade_api::LogsReply>> {
    let known: Option<i64> = sqlx::query_scalar("SELECT 1::BIGINT FROM workers WHERE id = $1")
        .bind(worker_id)
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
        // Locked, so two batches of one attempt count its bytes one after the other.
        let row =
            sqlx::query("SELECT state, attempt, worker_id FROM tasks WHERE id = $1 FOR UPDATE")
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
        if lessee.as_deref() != Some(worker_id) || state != "running" {
            reply.rejected.push(reject(
                "stale attempt: the task is not running on this worker".into(),
            ));
            continue;
        }
        let stored = sqlx::query(
            "SELECT coalesce(sum(octet_length(line)), 0)::BIGINT AS bytes, \
             coalesce(bool_or(line = $1), FALSE) AS cut FROM task_logs WHERE task_id = $2 AND attempt = $3",
        )
        .bind(brigade_api::logs::TRUNCATED)
        .bind(&b.task_id)
        .bind(i64::from(b.attempt))
        .fetch_one(&mut *conn)
        .await?;
        let lines = crate::logs::admit(
            stored.try_get("bytes")?,
            stored.try_get("cut")?,
            b.lines.clone(),
        );
        if !lines.is_empty() {
            sqlx::query(
                "INSERT INTO task_logs (task_id, attempt, line, at) \
                 SELECT $1, $2, u.line, $3 FROM unnest($4::text[]) WITH ORDINALITY AS u(line, ord) \
                 ORDER BY u.ord",
            )
            .bind(&b.task_id)
            .bind(i64::from(b.attempt))
            .bind(now)
            .bind(&lines)
            .execute(&mut *conn)
            .await?;
        }
        reply.accepted.push(b.task_id.clone());
    }
    Ok(Some(reply))
}
