//! Write transactions, the same on both engines. Each runs inside the
//! transaction its engine opened (SQLite: a savepoint of the writer's group
//! commit; PostgreSQL: a transaction of its own, retried on conflicts).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use brigade_api::{
    AttemptOutcome, Backoff, EventKind, Heartbeat, HeartbeatReply, JobState, LeasedTask, LogBatch,
    LogsReply, Outcome, Progress, QueueView, RejectedResult, ResultsReply, TaskError, TaskResult,
    TaskState, TaskView, WorkerJoin, WorkerState, WorkerView,
};
use brigade_core::transition::{self, Budget, Held, Rejection, Wake};
use brigade_core::unique::{Hold, Holder, UniqueKey};
use brigade_core::{NewJob, NewTask, from_ms, ids::new_id};

use super::{
    ATTEMPT_UPSERT, Conn, RUNNING_COLUMNS, Row, Success, Value, args, graph, jlit, lit, lits, read,
    wlit, wlits,
};
use crate::model::{
    Bulk, Changes, DeleteOutcome, HandOff, Idempotency, Phase, Pruned, RetryOutcome, Submitted,
    TaskFilter, Timing, TracedResult,
};
use crate::rows::{self, Columns};
use crate::{Result, StoreError, events};

/// Rows per multi-row insert (well under both engines' bound-parameter limits).
const INSERT_CHUNK: usize = 500;

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?)
}

fn unfinished() -> String {
    lits(&TaskState::UNFINISHED)
}

fn rejected(task_id: &str, why: &Rejection) -> RejectedResult {
    RejectedResult {
        task_id: task_id.to_owned(),
        reason: why.reason(),
        code: why.code(),
    }
}

/// Whether `attempt` of `task_id` is the one `worker_id` runs now (the rule
/// of results, for what else a worker reports of a task: logs, progress):
/// its job's id, or why not.
async fn current_attempt<C: Conn>(
    c: &mut C,
    task_id: &str,
    worker_id: &str,
    attempt: u32,
) -> Result<std::result::Result<String, Rejection>> {
    let Some(row) = c
        .rows(
            "SELECT job_id, state, attempt, worker_id FROM tasks WHERE id = ?",
            args![task_id],
        )
        .await?
        .pop()
    else {
        return Ok(Err(Rejection::UnknownTask));
    };
    let lessee = row.text_opt("worker_id")?;
    let held = Held {
        state: rows::task_state(&row.text("state")?)?,
        attempt: row.int("attempt")? as u32,
        worker_id: lessee.as_deref(),
    };
    Ok(match transition::check_attempt(held, worker_id, attempt) {
        Ok(()) => Ok(row.text("job_id")?),
        Err(why) => Err(why),
    })
}

fn wake(changes: &mut Changes, w: Wake) {
    match w {
        Wake::Nobody => {}
        Wake::Workers => changes.ready = true,
        Wake::Promoter => changes.scheduled = true,
    }
}

/// The job an earlier submit with the same idempotency key created.
async fn replay<C: Conn>(c: &mut C, owner: &str, idem: &Idempotency) -> Result<Option<Submitted>> {
    let Some(row) = c
        .rows(
            "SELECT id, idem_hash FROM jobs WHERE owner = ? AND idem_key = ?",
            args![owner, &idem.key],
        )
        .await?
        .pop()
    else {
        return Ok(None);
    };
    if row.text_opt("idem_hash")?.as_deref() != Some(idem.hash.as_str()) {
        return Err(StoreError::IdempotencyConflict);
    }
    let id = row.text("id")?;
    Ok(Some(earlier_job(c, &id, None).await?))
}

/// An earlier job, as a submit that created nothing answers with it.
async fn earlier_job<C: Conn>(
    c: &mut C,
    id: &str,
    duplicate_of: Option<String>,
) -> Result<Submitted> {
    let mut view = read::job(c, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("job vanished".into()))?;
    let ids = c
        .rows(
            "SELECT id FROM tasks WHERE job_id = ? ORDER BY seq",
            args![id],
        )
        .await?
        .iter()
        .map(|r| r.text("id"))
        .collect::<Result<Vec<_>>>()?;
    view.task_ids = Some(ids);
    Ok(Submitted {
        job: view,
        created: false,
        duplicate_of,
        changes: Changes::default(),
        handed: Vec::new(),
    })
}

/// Take `unique`'s key of `owner` for the new job `job_id`, or name the
/// earlier job that still holds it. Race-free on both engines: the insert
/// of a key another transaction just took waits for it (PostgreSQL's unique
/// index; SQLite's one writer), and a takeover locks the row first.
async fn take_key<C: Conn>(
    c: &mut C,
    owner: &str,
    unique: &UniqueKey,
    job_id: &str,
    now: i64,
) -> Result<Option<String>> {
    let for_ms = match unique.hold {
        Hold::For(ms) => Some(ms as i64),
        Hold::Unfinished => None,
    };
    // Twice: a row pruned between the insert and the read is inserted anew.
    for _ in 0..2 {
        let inserted = c
            .exec(
                "INSERT INTO job_keys (owner, ukey, job_id, created_at, for_ms) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (owner, ukey) DO NOTHING",
                args![owner, &unique.key, job_id, now, for_ms],
            )
            .await?;
        if inserted > 0 {
            return Ok(None);
        }
        let sql = format!(
            "SELECT job_id, created_at, for_ms FROM job_keys WHERE owner = ? AND ukey = ?{}",
            super::for_update::<C>()
        );
        let Some(row) = c.rows(&sql, args![owner, &unique.key]).await?.pop() else {
            continue;
        };
        let earlier = row.text("job_id")?;
        let hold = match row.int_opt("for_ms")? {
            Some(ms) => Hold::For(ms.max(0) as u64),
            None => Hold::Unfinished,
        };
        let created_at = row.int("created_at")?;
        let holder = c
            .rows("SELECT finished_at FROM jobs WHERE id = ?", args![&earlier])
            .await?
            .pop()
            .map(|j| -> Result<Holder> {
                Ok(Holder {
                    created_at,
                    finished: j.int_opt("finished_at")?.is_some(),
                    hold,
                })
            })
            .transpose()?;
        if brigade_core::unique::holds(holder, now) {
            return Ok(Some(earlier));
        }
        c.exec(
            "UPDATE job_keys SET job_id = ?, created_at = ?, for_ms = ? WHERE owner = ? AND ukey = ?",
            args![job_id, now, for_ms, owner, &unique.key],
        )
        .await?;
        return Ok(None);
    }
    Err(StoreError::Corrupt("unique key vanished twice".into()))
}

async fn ensure_queues<C: Conn>(c: &mut C, names: BTreeSet<&str>) -> Result<()> {
    for q in names {
        c.exec(
            "INSERT INTO queues (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
            args![q],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn submit<C: Conn>(
    c: &mut C,
    owner: &str,
    job: &NewJob,
    idem: Option<&Idempotency>,
    now: i64,
) -> Result<Submitted> {
    if let Some(idem) = idem
        && let Some(earlier) = replay(c, owner, idem).await?
    {
        return Ok(earlier);
    }
    let job_id = new_id();
    if let Some(unique) = &job.unique
        && let Some(earlier) = take_key(c, owner, unique, &job_id, now).await?
    {
        return earlier_job(c, &earlier, Some(earlier.clone())).await;
    }
    let total = job.tasks.len();
    // Two servers may take the same new key at once (PostgreSQL): the loser
    // waits for the winner's commit, inserts nothing, and answers with the
    // winner's job.
    let inserted = c
        .exec(
            "INSERT INTO jobs (id, name, queue, labels, owner, state, total, created_at, idem_key, idem_hash, keep_ms, callback) \
             VALUES (?, ?, ?, ?::jsonb, ?, ?, ?, ?, ?, ?, ?, ?::jsonb) \
             ON CONFLICT (owner, idem_key) WHERE idem_key IS NOT NULL DO NOTHING",
            args![
                &job_id,
                job.name.as_deref(),
                &job.queue,
                json(&job.labels)?,
                owner,
                JobState::Queued.as_str(),
                total as i64,
                now,
                idem.map(|i| i.key.as_str()),
                idem.map(|i| i.hash.as_str()),
                job.keep_ms.map(|k| k.min(brigade_core::retention::MAX_KEEP_MS) as i64),
                job.callback.as_ref().map(json).transpose()?,
            ],
        )
        .await?;
    if inserted == 0 {
        if let Some(idem) = idem
            && let Some(earlier) = replay(c, owner, idem).await?
        {
            // The key this submit took is for a job never created.
            if let Some(unique) = &job.unique {
                c.exec(
                    "DELETE FROM job_keys WHERE owner = ? AND ukey = ? AND job_id = ?",
                    args![owner, &unique.key, &job_id],
                )
                .await?;
            }
            return Ok(earlier);
        }
        return Err(StoreError::Corrupt("job insert did nothing".into()));
    }
    ensure_queues(c, job.tasks.iter().map(|t| t.queue.as_str()).collect()).await?;

    let mut progress = Progress {
        total: total as u64,
        ..Progress::default()
    };
    let origin = Origin {
        spawned_by: None,
        spawner_groups: &[],
        traceparent: job.traceparent.as_deref(),
    };
    let ids = insert_tasks(c, &job_id, &job.tasks, origin, now, &mut progress).await?;

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
        keep_ms: job.keep_ms,
        expires_at: None,
        task_ids: Some(ids),
        schedule_id: None,
        fire_at: None,
        callback: job.callback.clone(),
    };
    let changes = Changes {
        events: vec![events::job(
            EventKind::JobCreated,
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
        duplicate_of: None,
        changes,
        handed: Vec::new(),
    })
}

/// Submit, then lease for `waiting` workers (in order) in the same
/// transaction: a just-submitted task goes straight to a worker that waits
/// for work, with one commit instead of two and no wake-up in between.
/// The leases take the queue's oldest tasks by the usual rules, not
/// necessarily this job's. A replayed submit (same idempotency key) leases
/// nothing.
pub(crate) async fn submit_and_lease<C: Conn>(
    c: &mut C,
    owner: &str,
    job: &NewJob,
    idem: Option<&Idempotency>,
    now: i64,
    ttl: i64,
    waiting: &[HandOff],
) -> Result<Submitted> {
    let mut submitted = submit(c, owner, job, idem, now).await?;
    if !submitted.created || waiting.is_empty() {
        return Ok(submitted);
    }
    let queued = submitted.job.progress.queued;
    let mut handed = 0u64;
    for w in waiting {
        let want = queued.saturating_sub(handed).min(u64::from(w.max)) as u32;
        if want == 0 {
            submitted.handed.push(Some(Vec::new()));
            continue;
        }
        match lease(c, &w.worker_id, want, now, ttl).await? {
            Some((tasks, more)) => {
                handed += tasks.len() as u64;
                submitted.changes.merge(more);
                submitted.handed.push(Some(tasks));
            }
            None => submitted.handed.push(None),
        }
    }
    // Only what is left needs the dispatcher's attention.
    submitted.changes.ready = queued > handed;
    Ok(submitted)
}

/// Where new tasks come from: a submit, or a running task's spawn.
#[derive(Clone, Copy)]
struct Origin<'a> {
    /// The task that spawned them.
    spawned_by: Option<&'a str>,
    /// The spawner's groups, which they join.
    spawner_groups: &'a [String],
    /// The job's trace context, stored on each of them.
    traceparent: Option<&'a str>,
}

/// Insert tasks of a job, each with a new id (returned in order); count
/// them in `progress`. Spawned tasks name their spawner and inherit its
/// groups. Tasks of a flat job (no key, no `after`, not spawned) are
/// inserted by the statement flat jobs always used: they pay nothing for
/// graphs.
async fn insert_tasks<C: Conn>(
    c: &mut C,
    job_id: &str,
    tasks: &[NewTask],
    origin: Origin<'_>,
    now: i64,
    progress: &mut Progress,
) -> Result<Vec<String>> {
    let Origin {
        spawned_by,
        spawner_groups,
        traceparent,
    } = origin;
    let graph =
        spawned_by.is_some() || tasks.iter().any(|t| t.key.is_some() || !t.after.is_empty());
    let mut ids = Vec::with_capacity(tasks.len());
    let mut graph_rows: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    // Limits and fairness cost flat jobs nothing either.
    let flow = tasks
        .iter()
        .any(|t| !t.limits.is_empty() || t.fair_key.is_some());
    let places = if flow {
        super::limits::fair_places(c, tasks).await?
    } else {
        Vec::new()
    };
    // Untraced jobs write the statement they always did.
    let traced = traceparent.is_some();
    let width = if graph { 21 } else { 15 } + if flow { 3 } else { 0 } + usize::from(traced);
    for chunk in tasks.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO tasks (id, job_id, kind, name, queue, priority, state, input, max_attempts, \
             timeout_ms, backoff, requires, run_at, created_at, ready_at",
        );
        if graph {
            sql.push_str(", task_key, after_keys, run_if, pending_keys, member_of, spawned_by");
        }
        if flow {
            sql.push_str(", limits, fair_key, vt");
        }
        if traced {
            sql.push_str(", traceparent");
        }
        sql.push_str(") VALUES ");
        let mut args: Vec<Value> = Vec::with_capacity(chunk.len() * width);
        for (i, t) in chunk.iter().enumerate() {
            let place = places.get(ids.len()).copied().flatten();
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?::json, ?, ?, ?::jsonb, ?::jsonb, ?, ?, ?");
            if graph {
                sql.push_str(", ?, ?::jsonb, ?, ?, ?::jsonb, ?");
            }
            if flow {
                sql.push_str(", ?, ?, ?");
            }
            if traced {
                sql.push_str(", ?");
            }
            sql.push(')');
            let waits = !t.after.is_empty();
            let scheduled = !waits && t.run_at.is_some_and(|at| at > now);
            let state = if waits {
                progress.waiting += 1;
                TaskState::Waiting
            } else if scheduled {
                progress.scheduled += 1;
                TaskState::Scheduled
            } else {
                progress.queued += 1;
                TaskState::Queued
            };
            let id = new_id();
            let requires = if t.requires.is_empty() {
                None
            } else {
                Some(json(&t.requires)?)
            };
            args.extend(args![
                &id,
                job_id,
                &t.kind,
                t.name.as_deref(),
                &t.queue,
                i64::from(t.priority),
                state,
                t.input.as_str(),
                t.max_attempts,
                t.timeout_ms as i64,
                json(&t.backoff)?,
                requires,
                // A waiting task keeps its not-before for when it is released.
                if scheduled || waits { t.run_at } else { None },
                now,
                if waits {
                    None
                } else if scheduled {
                    t.run_at
                } else {
                    Some(now)
                },
            ]);
            if graph {
                let groups = brigade_core::graph::groups_of(t.key.as_deref(), spawner_groups);
                args.extend(args![
                    t.key.as_deref(),
                    if waits { Some(json(&t.after)?) } else { None },
                    t.run_if.map(|r| r.as_str()),
                    // At submit every group it waits for is open; a spawn
                    // counts again once the spawned tasks joined theirs.
                    t.after.len() as i64,
                    if groups.is_empty() {
                        None
                    } else {
                        Some(json(&groups)?)
                    },
                    spawned_by,
                ]);
                if !groups.is_empty() || waits {
                    graph_rows.push((id.clone(), groups, t.after.clone()));
                }
            }
            if flow {
                args.extend(args![
                    if t.limits.is_empty() {
                        None
                    } else {
                        Some(json(&t.limits)?)
                    },
                    t.fair_key.as_deref(),
                    place,
                ]);
            }
            if traced {
                args.extend(args![traceparent]);
            }
            ids.push(id);
        }
        c.exec(&sql, args).await?;
    }
    if !graph_rows.is_empty() {
        graph::add_to_groups(c, job_id, &graph_rows).await?;
    }
    Ok(ids)
}

/// Apply the `spawn` of a running task's accepted result: the new tasks'
/// ids, or why they cannot join the job (then nothing is spawned).
async fn spawn<C: Conn>(
    c: &mut C,
    task: &Running,
    specs: &[brigade_api::TaskSpec],
    now: i64,
    changes: &mut Changes,
    jobs: &mut BTreeSet<String>,
) -> Result<std::result::Result<Vec<String>, String>> {
    let mut tasks = match brigade_core::validate::validate_spawn(
        "result",
        specs.to_vec(),
        // The route checked the shapes against the server's own limits.
        &brigade_core::Limits {
            max_tasks_per_job: usize::MAX,
            max_input_bytes: usize::MAX,
        },
    ) {
        Ok(t) => t,
        Err(errors) => {
            let why: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            return Ok(Err(why.join("; ")));
        }
    };
    let Some(job) = c
        .rows(
            "SELECT queue, total FROM jobs WHERE id = ?",
            args![&task.job_id],
        )
        .await?
        .pop()
    else {
        return Ok(Err("the job is gone".into()));
    };
    let queue = job.text("queue")?;
    for t in &mut tasks {
        if t.queue.is_empty() {
            t.queue.clone_from(&queue);
        }
    }
    let spawner_groups = graph::keys(task.member_of.as_deref())?;
    let total = job.int("total")?;
    let shaped = tasks.iter().any(|t| t.key.is_some() || !t.after.is_empty());
    let job_graph = if shaped {
        graph::job_graph(c, &task.job_id, total).await?
    } else {
        brigade_core::graph::JobGraph {
            tasks: total.max(0) as u64,
            ..Default::default()
        }
    };
    if let Err(why) = graph::check_spawn(&job_graph, &spawner_groups, &tasks) {
        return Ok(Err(why));
    }
    ensure_queues(c, tasks.iter().map(|t| t.queue.as_str()).collect()).await?;
    let mut progress = Progress::default();
    // Spawned tasks join the trace of the job they join.
    let origin = Origin {
        spawned_by: Some(&task.id),
        spawner_groups: &spawner_groups,
        traceparent: task.traceparent.as_deref(),
    };
    let ids = insert_tasks(c, &task.job_id, &tasks, origin, now, &mut progress).await?;
    c.exec(
        "UPDATE jobs SET total = total + ? WHERE id = ?",
        args![ids.len() as i64, &task.job_id],
    )
    .await?;
    changes.ready |= progress.queued > 0;
    changes.scheduled |= progress.scheduled > 0;
    // Spawned waiters wait only for the groups still open.
    let mut waiters = Vec::new();
    for (id, t) in ids.iter().zip(&tasks) {
        if t.after.is_empty() {
            continue;
        }
        let open = graph::open_count(c, &task.job_id, &t.after).await?;
        if open != t.after.len() as i64 {
            c.exec(
                "UPDATE tasks SET pending_keys = ? WHERE id = ?",
                args![open, id.as_str()],
            )
            .await?;
        }
        waiters.push(id.clone());
    }
    if !waiters.is_empty() {
        graph::decide_new(c, &waiters, now, changes, jobs).await?;
    }
    Ok(Ok(ids))
}

/// After tasks of `jobs` finished: record the jobs that are now over.
pub(crate) async fn finish_jobs<C: Conn>(
    c: &mut C,
    jobs: &BTreeSet<String>,
    now: i64,
    changes: &mut Changes,
) -> Result<()> {
    // A job with tasks left is not over: on PostgreSQL, say so without
    // locking its row, so result batches of one job do not queue behind each
    // other's commits. Two transactions may then each end a job's last tasks
    // and each see the other's as unfinished; each leaves the job in
    // `unsettled`, and the engine looks again after committing
    // (`settle_jobs`), when the later one sees them all ended.
    //
    // A job that looks over is locked (in BTreeSet order in every
    // transaction) and looked at again: of two transactions that both see it
    // over, the second waits for the first and then sees it recorded, so the
    // job is recorded as over exactly once.
    let lock_first = matches!(C::ENGINE, super::Engine::Sqlite);
    let lock_sql = format!(
        "SELECT name, cancel_requested, finished_at, callback FROM jobs WHERE id = ?{}",
        super::for_update::<C>()
    );
    let open_sql = format!(
        "SELECT 1 AS one FROM tasks WHERE job_id = ? AND state IN {} LIMIT 1",
        unfinished()
    );
    for job_id in jobs {
        if !lock_first && !c.rows(&open_sql, args![job_id]).await?.is_empty() {
            changes.unsettled.push(job_id.clone());
            continue;
        }
        let Some(row) = c.rows(&lock_sql, args![job_id]).await?.pop() else {
            continue;
        };
        if row.int_opt("finished_at")?.is_some() {
            continue;
        }
        if !c.rows(&open_sql, args![job_id]).await?.is_empty() {
            continue;
        }
        let (progress, last_end) = read::progress_and_last_end(c, job_id).await?;
        let skipped = if progress.cancelled > 0 {
            graph::skipped(c, job_id).await?
        } else {
            0
        };
        let state =
            brigade_core::job_state_skipping(&progress, row.flag("cancel_requested")?, skipped);
        c.exec(
            "UPDATE jobs SET state = ?, finished_at = ? WHERE id = ?",
            args![state.as_str(), last_end.unwrap_or(now).max(0), job_id],
        )
        .await?;
        // The outbox row, in this same transaction: the callback exists
        // exactly when the finish does.
        super::callbacks::enqueue(
            c,
            job_id,
            row.text_opt("callback")?.as_deref(),
            EventKind::JobFinished.as_str(),
            now,
        )
        .await?;
        changes.events.push(events::job(
            EventKind::JobFinished,
            now,
            job_id,
            state,
            row.text_opt("name")?.as_deref(),
        ));
    }
    Ok(())
}

/// Of `jobs`, those whose tasks have all ended, found without locking.
pub(crate) async fn ended_jobs<C: Conn>(c: &mut C, jobs: &[String]) -> Result<BTreeSet<String>> {
    let open_sql = format!(
        "SELECT 1 AS one FROM tasks WHERE job_id = ? AND state IN {} LIMIT 1",
        unfinished()
    );
    let mut ended = BTreeSet::new();
    for job_id in jobs {
        if c.rows(&open_sql, args![job_id]).await?.is_empty() {
            ended.insert(job_id.clone());
        }
    }
    Ok(ended)
}

/// Record the end of `jobs` (from [`ended_jobs`]) that no transaction has
/// recorded yet: the second look after a change left them `unsettled`.
pub(crate) async fn settle_jobs<C: Conn>(
    c: &mut C,
    jobs: &BTreeSet<String>,
    now: i64,
) -> Result<Changes> {
    let mut changes = Changes::default();
    finish_jobs(c, jobs, now, &mut changes).await?;
    Ok(changes)
}

/// Jobs not recorded as over whose tasks have all ended: what a server that
/// died between a change and its second look leaves behind (at most `limit`).
pub(crate) async fn stranded_jobs<C: Conn>(c: &mut C, limit: u32) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT id FROM jobs WHERE finished_at IS NULL AND NOT EXISTS \
         (SELECT 1 FROM tasks WHERE tasks.job_id = jobs.id AND tasks.state IN {}) LIMIT ?",
        unfinished()
    );
    c.rows(&sql, args![limit])
        .await?
        .iter()
        .map(|r| r.text("id"))
        .collect()
}

pub(crate) async fn lease<C: Conn>(
    c: &mut C,
    worker_id: &str,
    max: u32,
    now: i64,
    ttl: i64,
) -> Result<Option<(Vec<LeasedTask>, Changes)>> {
    let Some(worker) = c
        .rows(
            "SELECT state, queues, kinds, labels FROM workers WHERE id = ?",
            args![worker_id],
        )
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let state = worker.text("state")?;
    if state == WorkerState::Left.as_str() {
        // It left: it is to join again.
        return Ok(None);
    }
    if state != WorkerState::Active.as_str() || max == 0 {
        return Ok(Some((Vec::new(), Changes::default())));
    }
    let queues: Vec<String> = rows::json_or(worker.text_opt("queues")?)?;
    let kinds: Vec<String> = rows::json_or(worker.text_opt("kinds")?)?;
    let labels: BTreeMap<String, String> = rows::json_or(worker.text_opt("labels")?)?;
    if queues.is_empty() || kinds.is_empty() {
        return Ok(Some((Vec::new(), Changes::default())));
    }
    let offered = brigade_core::dispatch::offered_labels(&labels);
    // The clock as the transaction runs (PostgreSQL): the request may have
    // waited for a connection or a lock since it read it, while the results
    // that released what it leases committed; a start is never recorded
    // before the end of what it waited for.
    let now = c.now_after_wait(now);
    let expires = now + ttl;
    let mut pick = super::Pick {
        worker_id,
        queues: &queues,
        kinds: &kinds,
        offered: &offered,
        max,
        now,
        expires,
    };
    // Limited tasks first: they are out of the main index, and a flood of
    // unlimited work must not starve them.
    let limited = super::limits::pick(c, &pick).await?;
    let mut changes = Changes {
        scheduled: limited.timed,
        ..Changes::default()
    };
    let mut picked = limited.rows;
    pick.max = max.saturating_sub(picked.len() as u32);
    if pick.max > 0 {
        picked.extend(c.pick(&pick).await?);
    }
    let mut leased = Vec::with_capacity(picked.len());
    for row in picked {
        let id = row.text("id")?;
        let job_id = row.text("job_id")?;
        let attempt = row.int("attempt")? as u32;
        changes.events.push(events::task(
            EventKind::TaskStarted,
            now,
            &job_id,
            &id,
            Some(worker_id),
            attempt,
        ));
        let kind = row.text("kind")?;
        changes.timings.push(Timing::between(
            kind.clone(),
            Phase::Queued,
            row.int("ready_at")?,
            now,
        ));
        let (parents, parents_truncated) = match row.text_opt("after_keys")? {
            Some(after) => {
                let after: Vec<String> = serde_json::from_str(&after)?;
                let (p, cut) = graph::lease_parents(c, &job_id, &after).await?;
                (Some(p), cut)
            }
            None => (None, false),
        };
        leased.push(LeasedTask {
            id,
            job_id,
            kind,
            input: serde_json::from_str(&row.text("input")?)?,
            attempt,
            timeout_ms: row.int("timeout_ms")? as u64,
            lease_expires_at: from_ms(expires),
            parents,
            parents_truncated,
            traceparent: row.text_opt("traceparent")?,
        });
    }
    Ok(Some((leased, changes)))
}

/// Results, then a lease, in one transaction.
pub(crate) async fn report_and_lease<C: Conn>(
    c: &mut C,
    worker_id: &str,
    results: &[TaskResult],
    max: u32,
    now: i64,
    ttl: i64,
    poison_after: u32,
) -> Result<Option<(ResultsReply, Vec<LeasedTask>, Changes)>> {
    let (reply, mut changes) = if results.is_empty() {
        (ResultsReply::default(), Changes::default())
    } else {
        match report(c, worker_id, results, now, poison_after).await? {
            Some(done) => done,
            None => return Ok(None),
        }
    };
    let Some((leased, more)) = lease(c, worker_id, max, now, ttl).await? else {
        return Ok(None);
    };
    changes.merge(more);
    Ok(Some((reply, leased, changes)))
}

/// A task's row as results, the reaper and hand-backs need it.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) seq: i64,
    pub(crate) id: String,
    pub(crate) job_id: String,
    pub(crate) state: TaskState,
    pub(crate) attempt: u32,
    pub(crate) attempt_base: u32,
    pub(crate) max_attempts: u32,
    pub(crate) worker_id: Option<String>,
    pub(crate) backoff: Backoff,
    pub(crate) kind: String,
    pub(crate) started_at: Option<i64>,
    /// The groups it belongs to, JSON (`None`: none).
    pub(crate) member_of: Option<String>,
    /// Attempts in a row that ended lost or crash.
    pub(crate) deaths: u32,
    /// The keys whose limits it counts against, JSON (`None`: none): its
    /// end may give a task parked on one of them room.
    pub(crate) limits: Option<String>,
    /// Its job's trace context (`None`: untraced).
    pub(crate) traceparent: Option<String>,
}

impl Running {
    pub(crate) fn from_row(row: &Row) -> Result<Self> {
        Ok(Self {
            seq: row.int("seq")?,
            id: row.text("id")?,
            job_id: row.text("job_id")?,
            state: rows::task_state(&row.text("state")?)?,
            attempt: row.int("attempt")? as u32,
            attempt_base: row.int("attempt_base")? as u32,
            max_attempts: row.int("max_attempts")? as u32,
            worker_id: row.text_opt("worker_id")?,
            backoff: serde_json::from_str(&row.text("backoff")?)?,
            kind: row.text("kind")?,
            started_at: row.int_opt("started_at")?,
            member_of: row.text_opt("member_of")?,
            deaths: row.int("deaths")?.max(0) as u32,
            limits: row.text_opt("limits")?,
            traceparent: row.text_opt("traceparent")?,
        })
    }

    /// The keys whose limits it counts against.
    fn limit_keys(&self) -> Result<Vec<String>> {
        rows::json_or(self.limits.clone())
    }

    fn held(&self) -> Held<'_> {
        Held {
            state: self.state,
            attempt: self.attempt,
            worker_id: self.worker_id.as_deref(),
        }
    }
}

/// Record attempt `attempt` of a task as ended with `outcome`.
///
/// An attempt's row is written once, when it ends: while it runs, the task
/// row (attempt, worker, start) describes it, so a lease writes no attempt
/// row. The worker and start come from the task row, which still holds them.
/// A row already there (an open one written by an older brigade, or one
/// handed back and leased again under the same number) is overwritten.
async fn end_attempt<C: Conn>(
    c: &mut C,
    id: &str,
    attempt: u32,
    outcome: AttemptOutcome,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    c.exec(
        &format!(
            "INSERT INTO attempts (task_id, attempt, worker_id, started_at, finished_at, outcome, error) \
             SELECT id, ?, worker_id, started_at, ?, ?, ?::jsonb FROM tasks WHERE id = ? \
             {ATTEMPT_UPSERT}"
        ),
        args![attempt, now, outcome.as_str(), error, id],
    )
    .await?;
    Ok(())
}

/// How an attempt failed.
struct Failed<'a> {
    error: &'a TaskError,
    retryable: bool,
    /// The worker's own retry delay.
    retry_in_ms: Option<u64>,
    /// How the attempt ended (`lost`: requeue at once rather than back off;
    /// `lost` and `crash` count toward poison).
    outcome: AttemptOutcome,
    /// The server's `--poison-after`.
    poison_after: u32,
}

/// End the running attempt of `task` with a failure, as core decides:
/// retry after the backoff, requeue, or fail (as poison, too). Whether the
/// task is now final (failed for good), with its graph final.
async fn fail_attempt<C: Conn>(
    c: &mut C,
    task: &Running,
    how: Failed<'_>,
    now: i64,
    changes: &mut Changes,
) -> Result<Option<graph::Final>> {
    let Failed {
        error,
        retryable,
        retry_in_ms,
        outcome,
        poison_after,
    } = how;
    let t = transition::fail(
        Budget {
            attempt: task.attempt,
            attempt_base: task.attempt_base,
            max_attempts: task.max_attempts,
            backoff: &task.backoff,
            deaths: task.deaths,
            poison_after,
        },
        outcome,
        retryable,
        retry_in_ms,
        now,
        rand::random::<f64>(),
    );
    // The attempt keeps its own error; the task shows why it was given up.
    let attempt_error = json(error)?;
    let poison;
    let task_error = if t.poison {
        poison = transition::poison_error(t.deaths, error);
        &poison
    } else {
        error
    };
    let task_error_json = json(task_error)?;
    c.exec(
        "UPDATE tasks SET state = ?, run_at = ?, finished_at = ?, error = ?::jsonb, \
         lease_expires_at = NULL, ready_at = coalesce(?, ready_at), deaths = ? WHERE seq = ?",
        args![
            t.state,
            t.run_at,
            t.finished_at,
            task_error_json.as_str(),
            t.ready_at,
            i64::from(t.deaths),
            task.seq
        ],
    )
    .await?;
    end_attempt(
        c,
        &task.id,
        task.attempt,
        outcome,
        Some(&attempt_error),
        now,
    )
    .await?;
    changes.events.push(events::task_error(
        t.event,
        now,
        &task.job_id,
        &task.id,
        task.worker_id.as_deref(),
        task.attempt,
        task_error,
    ));
    wake(changes, t.wake);
    if t.state.is_finished() {
        graph::Final::of(&task.job_id, task.member_of.as_deref(), true)
    } else {
        Ok(None)
    }
}

pub(crate) async fn report<C: Conn>(
    c: &mut C,
    worker_id: &str,
    results: &[TaskResult],
    now: i64,
    poison_after: u32,
) -> Result<Option<(ResultsReply, Changes)>> {
    if !read::worker_exists(c, worker_id).await? {
        return Ok(None);
    }
    let mut ids: Vec<&str> = results.iter().map(|r| r.task_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut tasks: HashMap<String, Running> = HashMap::with_capacity(ids.len());
    for row in c.lock_tasks(&ids).await? {
        let t = Running::from_row(&row)?;
        tasks.insert(t.id.clone(), t);
    }
    let mut reply = ResultsReply::default();
    let mut changes = Changes::default();
    let mut jobs = BTreeSet::new();
    let mut seen: HashSet<&str> = HashSet::with_capacity(results.len());
    let mut succeeded: Vec<Success> = Vec::with_capacity(results.len());
    let mut finals: Vec<graph::Final> = Vec::new();
    let mut freed: Vec<String> = Vec::new();
    for r in results {
        let Some(task) = tasks.get(&r.task_id) else {
            reply
                .rejected
                .push(rejected(&r.task_id, &Rejection::UnknownTask));
            continue;
        };
        if let Err(why) = transition::check_attempt(task.held(), worker_id, r.attempt) {
            reply.rejected.push(rejected(&r.task_id, &why));
            continue;
        }
        // The rows were read before this batch changed them: a second result
        // for the same attempt in one batch must not be applied again (a
        // stale attempt's result, refused above, does not count).
        if !seen.insert(r.task_id.as_str()) {
            reply
                .rejected
                .push(rejected(&r.task_id, &Rejection::Duplicate));
            continue;
        }
        if let Some(started) = task.started_at {
            changes
                .timings
                .push(Timing::between(task.kind.clone(), Phase::Run, started, now));
        }
        match r.outcome {
            Outcome::Succeeded if !r.spawn.is_empty() => {
                if let Err(why) = spawn(c, task, &r.spawn, now, &mut changes, &mut jobs).await? {
                    // Recorded, not dropped: the attempt failed for a reason
                    // a retry would meet again.
                    let error = TaskError::new(brigade_api::ErrorKind::Spawn, why);
                    let how = Failed {
                        error: &error,
                        retryable: false,
                        retry_in_ms: None,
                        outcome: AttemptOutcome::Failed,
                        poison_after,
                    };
                    finals.extend(fail_attempt(c, task, how, now, &mut changes).await?);
                } else {
                    changes.events.push(events::task(
                        EventKind::TaskSucceeded,
                        now,
                        &task.job_id,
                        &r.task_id,
                        Some(worker_id),
                        task.attempt,
                    ));
                    succeeded.push(Success {
                        seq: task.seq,
                        output: json(&r.output)?,
                    });
                    finals.extend(graph::Final::of(
                        &task.job_id,
                        task.member_of.as_deref(),
                        false,
                    )?);
                }
            }
            Outcome::Succeeded => {
                finals.extend(graph::Final::of(
                    &task.job_id,
                    task.member_of.as_deref(),
                    false,
                )?);
                changes.events.push(events::task(
                    EventKind::TaskSucceeded,
                    now,
                    &task.job_id,
                    &r.task_id,
                    Some(worker_id),
                    task.attempt,
                ));
                succeeded.push(Success {
                    seq: task.seq,
                    output: json(&r.output)?,
                });
            }
            Outcome::Failed => {
                let error = r.error.clone().unwrap_or_else(transition::default_error);
                let outcome = transition::failed_outcome(&error);
                let how = Failed {
                    error: &error,
                    retryable: r.retryable.unwrap_or(true),
                    retry_in_ms: r.retry_in_ms,
                    outcome,
                    poison_after,
                };
                finals.extend(fail_attempt(c, task, how, now, &mut changes).await?);
            }
        }
        reply.accepted.push(r.task_id.clone());
        if let Some(traceparent) = &task.traceparent {
            changes.traced.push(TracedResult {
                task_id: task.id.clone(),
                job_id: task.job_id.clone(),
                kind: task.kind.clone(),
                attempt: task.attempt,
                outcome: r.outcome,
                traceparent: traceparent.clone(),
            });
        }
        jobs.insert(task.job_id.clone());
        freed.extend(task.limit_keys()?);
    }
    if !succeeded.is_empty() {
        c.succeed(now, &succeeded).await?;
    }
    if !freed.is_empty() {
        // A slot of these keys is free: waiting workers may lease what they held back.
        super::limits::ended(c, &freed).await?;
        changes.ready = true;
    }
    if !finals.is_empty() {
        graph::settle(c, finals, now, &mut changes, &mut jobs).await?;
    }
    finish_jobs(c, &jobs, now, &mut changes).await?;
    Ok(Some((reply, changes)))
}

/// Record a batch of heartbeats: the workers were heard from, the leases they
/// name are extended; replies in batch order, `None` for an unknown worker.
pub(crate) async fn heartbeats<C: Conn>(
    c: &mut C,
    batch: &[(String, Heartbeat)],
    now: i64,
    ttl: i64,
) -> Result<Vec<Option<HeartbeatReply>>> {
    // One order on every server, so two servers' batches never wait on each
    // other in a cycle; one row per worker.
    let mut beats: Vec<(&str, String)> = Vec::with_capacity(batch.len());
    let mut order: Vec<(&str, &Heartbeat)> = batch.iter().map(|(w, hb)| (w.as_str(), hb)).collect();
    order.sort_by_key(|(w, _)| *w);
    order.dedup_by_key(|(w, _)| *w);
    for (w, hb) in order {
        beats.push((w, json(&hb.load)?));
    }
    let states = c.touch_workers(now, &beats).await?;
    let mut held: Vec<(&str, &str)> = batch
        .iter()
        .flat_map(|(w, hb)| hb.running.iter().map(move |t| (t.as_str(), w.as_str())))
        .collect();
    held.sort_unstable();
    let extended = if held.is_empty() {
        Vec::new()
    } else {
        c.extend_leases(now + ttl, &held).await?
    };
    Ok(crate::model::heartbeat_replies(batch, &states, &extended))
}

pub(crate) async fn join_worker<C: Conn>(
    c: &mut C,
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
    c.exec(
        "INSERT INTO workers (id, name, hostname, owner, queues, kinds, labels, capacity, version, state, \
         load, joined_at, last_seen_at) \
         VALUES (?, ?, ?, ?, ?::jsonb, ?::jsonb, ?::jsonb, ?, ?, ?, '{}', ?, ?)",
        args![
            &id,
            &join.name,
            &join.hostname,
            owner,
            json(&queues)?,
            json(&join.kinds)?,
            json(&join.labels)?,
            join.capacity,
            &join.version,
            WorkerState::Active.as_str(),
            now,
            now
        ],
    )
    .await?;
    ensure_queues(c, queues.iter().map(String::as_str).collect()).await?;
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
        events: vec![events::worker(
            EventKind::WorkerJoined,
            now,
            &id,
            &join.name,
        )],
        ..Changes::default()
    };
    Ok((view, changes))
}

/// Give a worker's running tasks back to the queue without spending an attempt.
async fn hand_back<C: Conn>(
    c: &mut C,
    worker_id: &str,
    now: i64,
    changes: &mut Changes,
) -> Result<()> {
    let sql = format!(
        "SELECT id, job_id, attempt FROM tasks WHERE worker_id = ? AND state = {}",
        lit(TaskState::Running)
    );
    let running = c.rows(&sql, args![worker_id]).await?;
    for row in &running {
        let id = row.text("id")?;
        let attempt = row.int("attempt")? as u32;
        end_attempt(c, &id, attempt, AttemptOutcome::HandedBack, None, now).await?;
        changes.events.push(events::task(
            EventKind::TaskRetrying,
            now,
            &row.text("job_id")?,
            &id,
            Some(worker_id),
            attempt,
        ));
    }
    if !running.is_empty() {
        let sql = format!(
            "UPDATE tasks SET state = {}, attempt_base = attempt_base + 1, lease_expires_at = NULL, \
             ready_at = ? WHERE worker_id = ? AND state = {}",
            lit(TaskState::Queued),
            lit(TaskState::Running)
        );
        let moved = c.exec(&sql, args![now, worker_id]).await?;
        changes.ready |= moved > 0;
    }
    Ok(())
}

pub(crate) async fn leave<C: Conn>(
    c: &mut C,
    worker_id: &str,
    now: i64,
) -> Result<Option<Changes>> {
    let Some(row) = c
        .rows("SELECT name FROM workers WHERE id = ?", args![worker_id])
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let name = row.text("name")?;
    let mut changes = Changes::default();
    hand_back(c, worker_id, now, &mut changes).await?;
    c.exec(
        "UPDATE workers SET state = ?, last_seen_at = ? WHERE id = ?",
        args![WorkerState::Left.as_str(), now, worker_id],
    )
    .await?;
    changes
        .events
        .push(events::worker(EventKind::WorkerLeft, now, worker_id, &name));
    Ok(Some(changes))
}

pub(crate) async fn drain_worker<C: Conn>(
    c: &mut C,
    worker_id: &str,
) -> Result<Option<WorkerView>> {
    c.exec(
        "UPDATE workers SET state = ? WHERE id = ? AND state = ?",
        args![
            WorkerState::Draining.as_str(),
            worker_id,
            WorkerState::Active.as_str()
        ],
    )
    .await?;
    read::worker(c, worker_id).await
}

pub(crate) async fn reap<C: Conn>(
    c: &mut C,
    now: i64,
    ttl: i64,
    poison_after: u32,
) -> Result<Changes> {
    let mut changes = Changes::default();
    // The conditional update re-checks the state of rows another reaper just
    // changed, so each worker is reported lost once.
    let sql = format!(
        "UPDATE workers SET state = {} WHERE state IN {} AND last_seen_at < ? RETURNING id, name",
        wlit(WorkerState::Lost),
        wlits(&WorkerState::SERVING)
    );
    let lost = c.rows(&sql, args![now - ttl]).await?;
    for row in &lost {
        changes.events.push(events::worker(
            EventKind::WorkerLost,
            now,
            &row.text("id")?,
            &row.text("name")?,
        ));
    }
    // Tasks whose lease ran out: their worker is lost, or alive but no longer
    // names them. Rows another server holds (a reaper, a result being
    // recorded) are left to it.
    let sql = format!(
        "SELECT {RUNNING_COLUMNS} FROM tasks WHERE state = {} AND (lease_expires_at < ? \
         OR worker_id IN (SELECT id FROM workers WHERE state IN {})) ORDER BY seq{}",
        lit(TaskState::Running),
        wlits(&WorkerState::GONE),
        super::skip_locked::<C>()
    );
    let expired = c.rows(&sql, args![now]).await?;
    let error = transition::lost_error();
    let mut jobs = BTreeSet::new();
    let mut finals = Vec::new();
    let mut freed: Vec<String> = Vec::new();
    for row in &expired {
        let task = Running::from_row(row)?;
        let how = Failed {
            error: &error,
            retryable: true,
            retry_in_ms: None,
            outcome: AttemptOutcome::Lost,
            poison_after,
        };
        finals.extend(fail_attempt(c, &task, how, now, &mut changes).await?);
        freed.extend(task.limit_keys()?);
        jobs.insert(task.job_id);
    }
    if !freed.is_empty() {
        super::limits::ended(c, &freed).await?;
    }
    if !finals.is_empty() {
        graph::settle(c, finals, now, &mut changes, &mut jobs).await?;
    }
    finish_jobs(c, &jobs, now, &mut changes).await?;
    Ok(changes)
}

pub(crate) async fn promote_due<C: Conn>(c: &mut C, now: i64) -> Result<(u64, Option<i64>)> {
    let sql = format!(
        "UPDATE tasks SET state = {}, ready_at = run_at, run_at = NULL WHERE state = {} AND run_at <= ?",
        lit(TaskState::Queued),
        lit(TaskState::Scheduled)
    );
    let moved = c.exec(&sql, args![now]).await?;
    let sql = format!(
        "SELECT min(run_at) AS t FROM tasks WHERE state = {}",
        lit(TaskState::Scheduled)
    );
    let next = c
        .rows(&sql, args![])
        .await?
        .pop()
        .map(|r| r.int_opt("t"))
        .transpose()?
        .flatten();
    let (woken, wake_next) = super::limits::due_waits(c, now).await?;
    let next = match (next, wake_next) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok((moved + woken, next))
}

/// Which tasks a cancel is for.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Job(&'a str),
    Task(&'a str),
}

impl Scope<'_> {
    fn filter(self) -> (&'static str, String) {
        match self {
            Scope::Job(id) => ("job_id = ?", id.to_owned()),
            Scope::Task(id) => ("id = ?", id.to_owned()),
        }
    }
}

/// Cancel the unfinished tasks of `scope`; the jobs they belong to.
async fn cancel_where<C: Conn>(
    c: &mut C,
    scope: Scope<'_>,
    now: i64,
    changes: &mut Changes,
) -> Result<BTreeSet<String>> {
    let (filter, key) = scope.filter();
    let sql = format!(
        "SELECT id, job_id, state, attempt, worker_id, member_of FROM tasks WHERE {filter} AND state IN {}",
        unfinished()
    );
    let found = c.rows(&sql, args![key.as_str()]).await?;
    let error = transition::cancelled_error();
    let error_json = json(&error)?;
    let mut jobs = BTreeSet::new();
    let mut finals = Vec::new();
    for row in &found {
        let id = row.text("id")?;
        let job_id = row.text("job_id")?;
        finals.extend(graph::Final::of(
            &job_id,
            row.text_opt("member_of")?.as_deref(),
            true,
        )?);
        let attempt = row.int("attempt")? as u32;
        let worker_id = row.text_opt("worker_id")?;
        if rows::task_state(&row.text("state")?)? == TaskState::Running {
            end_attempt(
                c,
                &id,
                attempt,
                AttemptOutcome::Cancelled,
                Some(&error_json),
                now,
            )
            .await?;
            if let Some(w) = &worker_id {
                changes.cancelled.push((w.clone(), id.clone()));
            }
        }
        changes.events.push(events::task_error(
            EventKind::TaskCancelled,
            now,
            &job_id,
            &id,
            worker_id.as_deref(),
            attempt,
            &error,
        ));
        jobs.insert(job_id);
    }
    if !found.is_empty() {
        let sql = format!(
            "UPDATE tasks SET state = {}, finished_at = ?, error = ?::jsonb, lease_expires_at = NULL, \
             run_at = NULL WHERE {filter} AND state IN {}",
            lit(TaskState::Cancelled),
            unfinished()
        );
        c.exec(&sql, args![now, error_json.as_str(), key.as_str()])
            .await?;
    }
    if !finals.is_empty() {
        graph::settle(c, finals, now, changes, &mut jobs).await?;
    }
    Ok(jobs)
}

pub(crate) async fn cancel_job<C: Conn>(c: &mut C, id: &str, now: i64) -> Result<Option<Changes>> {
    // Tasks before the job, in id order, as a results batch locks them
    // (PostgreSQL): the two never wait on each other in a cycle.
    let lock = format!(
        "SELECT id FROM tasks WHERE job_id = ? AND state IN {} ORDER BY id{}",
        unfinished(),
        super::for_update::<C>()
    );
    c.rows(&lock, args![id]).await?;
    let found = c
        .exec(
            "UPDATE jobs SET cancel_requested = TRUE WHERE id = ? AND finished_at IS NULL",
            args![id],
        )
        .await?;
    if found == 0 {
        let exists = !c
            .rows("SELECT 1 AS one FROM jobs WHERE id = ?", args![id])
            .await?
            .is_empty();
        // Cancelling a finished job changes nothing.
        return Ok(exists.then(Changes::default));
    }
    let mut changes = Changes::default();
    cancel_where(c, Scope::Job(id), now, &mut changes).await?;
    finish_jobs(c, &BTreeSet::from([id.to_owned()]), now, &mut changes).await?;
    Ok(Some(changes))
}

pub(crate) async fn cancel_task<C: Conn>(c: &mut C, id: &str, now: i64) -> Result<Option<Changes>> {
    if c.rows("SELECT 1 AS one FROM tasks WHERE id = ?", args![id])
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    let mut changes = Changes::default();
    let jobs = cancel_where(c, Scope::Task(id), now, &mut changes).await?;
    finish_jobs(c, &jobs, now, &mut changes).await?;
    Ok(Some(changes))
}

/// Put one failed or cancelled task back with a fresh budget: `None` when
/// unknown, `Some(Err(state))` when it is in another state, else its job.
async fn retry_one<C: Conn>(
    c: &mut C,
    id: &str,
    now: i64,
) -> Result<Option<std::result::Result<String, TaskState>>> {
    let Some(row) = c
        .rows(
            "SELECT state, job_id, member_of, after_keys FROM tasks WHERE id = ?",
            args![id],
        )
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let state = rows::task_state(&row.text("state")?)?;
    if !transition::retryable_by_hand(state) {
        return Ok(Some(Err(state)));
    }
    let job_id = row.text("job_id")?;
    let member_of = row.text_opt("member_of")?;
    let after: Vec<String> = rows::json_or(row.text_opt("after_keys")?)?;
    // Its groups reopen; with `after` it waits again for those still open.
    let state = graph::reopen(c, id, &job_id, member_of.as_deref(), &after)
        .await?
        .unwrap_or(TaskState::Queued);
    c.exec(
        "UPDATE tasks SET state = ?, attempt_base = attempt, finished_at = NULL, run_at = NULL, \
         lease_expires_at = NULL, ready_at = ?, deaths = 0 WHERE id = ?",
        args![state, now, id],
    )
    .await?;
    let sql = format!(
        "UPDATE jobs SET finished_at = NULL, cancel_requested = FALSE, \
         state = CASE WHEN started_at IS NULL THEN {} ELSE {} END WHERE id = ?",
        jlit(JobState::Queued),
        jlit(JobState::Running)
    );
    c.exec(&sql, args![&job_id]).await?;
    Ok(Some(Ok(job_id)))
}

pub(crate) async fn retry_task<C: Conn>(c: &mut C, id: &str, now: i64) -> Result<RetryOutcome> {
    match retry_one(c, id, now).await? {
        None => Ok(RetryOutcome::NotFound),
        Some(Err(state)) => Ok(RetryOutcome::NotRetryable(state)),
        Some(Ok(_)) => {
            let view: TaskView = read::task(c, id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("task vanished".into()))?;
            let changes = Changes {
                ready: true,
                ..Changes::default()
            };
            Ok(RetryOutcome::Retried(Box::new(view), changes))
        }
    }
}

/// Up to `max` tasks in `states` matching `filter` after position `after`,
/// oldest first, locked (in id order, as a results batch locks them); the
/// position of the last when there may be more.
async fn bulk_matches<C: Conn>(
    c: &mut C,
    filter: &TaskFilter,
    states: &[TaskState],
    after: Option<i64>,
    max: u32,
) -> Result<(Vec<String>, Option<i64>)> {
    let mut sql = format!(
        "SELECT seq, id FROM tasks WHERE seq > ? AND state IN {}",
        lits(states)
    );
    let mut args = args![after.unwrap_or(0)];
    read::task_filter::<C>(filter, &mut sql, &mut args);
    sql.push_str(" ORDER BY seq LIMIT ?");
    args.push(i64::from(max.max(1)).into());
    let found = c.rows(&sql, args).await?;
    let next = if found.len() >= max.max(1) as usize {
        found.last().map(|r| r.int("seq")).transpose()?
    } else {
        None
    };
    let mut ids = found
        .iter()
        .map(|r| r.text("id"))
        .collect::<Result<Vec<_>>>()?;
    ids.sort_unstable();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    if !refs.is_empty() {
        c.lock_tasks(&refs).await?;
    }
    Ok((ids, next))
}

pub(crate) async fn retry_tasks<C: Conn>(
    c: &mut C,
    filter: &TaskFilter,
    after: Option<i64>,
    max: u32,
    now: i64,
) -> Result<Bulk> {
    let states = [TaskState::Failed, TaskState::Cancelled];
    let (ids, next) = bulk_matches(c, filter, &states, after, max).await?;
    let mut bulk = Bulk {
        next,
        ..Bulk::default()
    };
    for id in &ids {
        // Re-checked under the lock: a task retried meanwhile is skipped.
        if let Some(Ok(_)) = retry_one(c, id, now).await? {
            bulk.changed += 1;
        }
    }
    bulk.changes.ready = bulk.changed > 0;
    Ok(bulk)
}

pub(crate) async fn cancel_tasks<C: Conn>(
    c: &mut C,
    filter: &TaskFilter,
    after: Option<i64>,
    max: u32,
    now: i64,
) -> Result<Bulk> {
    let (ids, next) = bulk_matches(c, filter, &TaskState::UNFINISHED, after, max).await?;
    let mut bulk = Bulk {
        next,
        ..Bulk::default()
    };
    let mut jobs = BTreeSet::new();
    for id in &ids {
        let before = bulk.changes.events.len();
        jobs.extend(cancel_where(c, Scope::Task(id), now, &mut bulk.changes).await?);
        // One task.cancelled event per task this cancel ended.
        bulk.changed += bulk.changes.events[before..]
            .iter()
            .filter(|e| {
                e.kind == EventKind::TaskCancelled.as_str()
                    && e.task_id.as_deref() == Some(id.as_str())
            })
            .count() as u64;
    }
    finish_jobs(c, &jobs, now, &mut bulk.changes).await?;
    Ok(bulk)
}

pub(crate) async fn delete_job<C: Conn>(c: &mut C, id: &str) -> Result<DeleteOutcome> {
    let Some(row) = c
        .rows("SELECT finished_at FROM jobs WHERE id = ?", args![id])
        .await?
        .pop()
    else {
        return Ok(DeleteOutcome::NotFound);
    };
    if row.int_opt("finished_at")?.is_none() {
        return Ok(DeleteOutcome::Unfinished);
    }
    for sql in [
        "DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE job_id = ?)",
        "DELETE FROM task_logs WHERE task_id IN (SELECT id FROM tasks WHERE job_id = ?)",
        "DELETE FROM tasks WHERE job_id = ?",
        "DELETE FROM job_groups WHERE job_id = ?",
        "DELETE FROM group_members WHERE job_id = ?",
        "DELETE FROM group_waiters WHERE job_id = ?",
        "DELETE FROM job_keys WHERE job_id = ?",
        "DELETE FROM jobs WHERE id = ?",
    ]
    .into_iter()
    .chain(super::callbacks::DELETE_FOR_JOB)
    {
        c.exec(sql, args![id]).await?;
    }
    Ok(DeleteOutcome::Deleted)
}

pub(crate) async fn set_queue_paused<C: Conn>(
    c: &mut C,
    name: &str,
    paused: bool,
) -> Result<QueueView> {
    c.exec(
        "INSERT INTO queues (name, paused) VALUES (?, ?) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        args![name, paused],
    )
    .await?;
    read::queues(c)
        .await?
        .into_iter()
        .find(|q| q.name == name)
        .ok_or_else(|| StoreError::Corrupt("queue vanished".into()))
}

pub(crate) async fn append_logs<C: Conn>(
    c: &mut C,
    worker_id: &str,
    logs: &[LogBatch],
    now: i64,
) -> Result<Option<LogsReply>> {
    if !read::worker_exists(c, worker_id).await? {
        return Ok(None);
    }
    let bytes = match C::ENGINE {
        super::Engine::Sqlite => "length(CAST(line AS BLOB))",
        super::Engine::Postgres => "octet_length(line)",
    };
    let usage_sql = format!(
        "SELECT CAST(coalesce(sum({bytes}), 0) AS BIGINT) AS bytes, \
         count(CASE WHEN line = ? THEN 1 END) AS cut FROM task_logs WHERE task_id = ? AND attempt = ?"
    );
    let mut reply = LogsReply::default();
    for b in logs {
        if let Err(why) = current_attempt(c, &b.task_id, worker_id, b.attempt).await? {
            reply.rejected.push(rejected(&b.task_id, &why));
            continue;
        }
        let usage = c
            .rows(
                &usage_sql,
                args![brigade_api::logs::TRUNCATED, &b.task_id, b.attempt],
            )
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no log usage row".into()))?;
        let lines =
            crate::logs::admit(usage.int("bytes")?, usage.int("cut")? != 0, b.lines.clone());
        for chunk in lines.chunks(INSERT_CHUNK) {
            let mut sql =
                String::from("INSERT INTO task_logs (task_id, attempt, line, at) VALUES ");
            let mut args: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
            for (i, line) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?, ?, ?, ?)");
                args.extend(args![&b.task_id, b.attempt, line.as_str(), now]);
            }
            c.exec(&sql, args).await?;
        }
        reply.accepted.push(b.task_id.clone());
    }
    Ok(Some(reply))
}

/// Record progress reports of running tasks; each only for the task's
/// current attempt on this worker (the rule of results). `None` when the
/// worker is unknown.
pub(crate) async fn report_progress<C: Conn>(
    c: &mut C,
    worker_id: &str,
    reports: &[brigade_api::ProgressReport],
    now: i64,
) -> Result<Option<(ResultsReply, Changes)>> {
    if !read::worker_exists(c, worker_id).await? {
        return Ok(None);
    }
    let mut reply = ResultsReply::default();
    let mut changes = Changes::default();
    for p in reports {
        let job_id = match current_attempt(c, &p.task_id, worker_id, p.attempt).await? {
            Ok(job_id) => job_id,
            Err(why) => {
                reply.rejected.push(rejected(&p.task_id, &why));
                continue;
            }
        };
        let progress = brigade_api::TaskProgress {
            done: p.done,
            total: p.total,
            message: p.message.clone(),
            at: from_ms(now),
            attempt: p.attempt,
        };
        c.exec(
            "UPDATE tasks SET progress = ?::jsonb WHERE id = ?",
            args![json(&progress)?, &p.task_id],
        )
        .await?;
        let mut e = events::task(
            EventKind::TaskProgress,
            now,
            &job_id,
            &p.task_id,
            Some(worker_id),
            p.attempt,
        );
        e.progress = Some(Box::new(progress));
        changes.events.push(e);
        reply.accepted.push(p.task_id.clone());
    }
    Ok(Some((reply, changes)))
}

/// Expired jobs looked at per pass (each is one small indexed lookup).
const PRUNE_JOBS: u32 = 100;

/// Delete finished jobs whose retention ran out — their own `keep_ms` after
/// they finished, or `default_keep_ms` (the server's `--retention`; `None`
/// keeps them forever) — with their tasks, attempts and logs, at most
/// `max_tasks` tasks per call, so one call is one short transaction. A job
/// with more tasks goes over several calls and disappears with its last task;
/// the job row goes last, so a job is never left without its tasks in view.
pub(crate) async fn prune<C: Conn>(
    c: &mut C,
    now: i64,
    default_keep_ms: Option<u64>,
    max_tasks: u32,
) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    // Jobs another server is pruning are its own (SKIP LOCKED); the lock
    // also keeps a concurrent prune from deleting the same rows twice.
    let mut expired: Vec<String> = Vec::new();
    if let Some(keep) = default_keep_ms.and_then(|k| i64::try_from(k).ok()) {
        let sql = format!(
            "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND keep_ms IS NULL AND finished_at <= ? \
             ORDER BY finished_at LIMIT ?{}",
            super::skip_locked::<C>()
        );
        for row in c
            .rows(&sql, args![now.saturating_sub(keep), PRUNE_JOBS])
            .await?
        {
            expired.push(row.text("id")?);
        }
    }
    let sql = format!(
        "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND keep_ms IS NOT NULL AND finished_at + keep_ms <= ? \
         ORDER BY finished_at + keep_ms LIMIT ?{}",
        super::skip_locked::<C>()
    );
    for row in c.rows(&sql, args![now, PRUNE_JOBS]).await? {
        expired.push(row.text("id")?);
    }
    pruned.more = expired.len() >= PRUNE_JOBS as usize;
    let mut budget = i64::from(max_tasks.max(1));
    for job_id in &expired {
        if budget <= 0 {
            pruned.more = true;
            break;
        }
        // The job's first `budget` tasks by seq: a range the three deletes
        // below agree on.
        let Some(batch) = c
            .rows(
                "SELECT count(*) AS n, max(seq) AS upto FROM \
                 (SELECT seq FROM tasks WHERE job_id = ? ORDER BY seq LIMIT ?) AS batch",
                args![job_id, budget],
            )
            .await?
            .pop()
        else {
            continue;
        };
        let n = batch.int("n")?;
        if let Some(upto) = batch.int_opt("upto")? {
            pruned.attempts += c
                .exec(
                    "DELETE FROM attempts WHERE task_id IN \
                     (SELECT id FROM tasks WHERE job_id = ? AND seq <= ?)",
                    args![job_id, upto],
                )
                .await?;
            pruned.logs += c
                .exec(
                    "DELETE FROM task_logs WHERE task_id IN \
                     (SELECT id FROM tasks WHERE job_id = ? AND seq <= ?)",
                    args![job_id, upto],
                )
                .await?;
            pruned.tasks += c
                .exec(
                    "DELETE FROM tasks WHERE job_id = ? AND seq <= ?",
                    args![job_id, upto],
                )
                .await?;
        }
        if n < budget {
            c.exec("DELETE FROM job_keys WHERE job_id = ?", args![job_id])
                .await?;
            for sql in super::callbacks::DELETE_FOR_JOB {
                c.exec(sql, args![job_id]).await?;
            }
            pruned.jobs += c
                .exec("DELETE FROM jobs WHERE id = ?", args![job_id])
                .await?;
        } else {
            pruned.more = true;
        }
        budget -= n;
    }
    Ok(pruned)
}
