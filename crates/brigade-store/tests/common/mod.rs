//! Store-level behaviour every engine must have: one body per behaviour, run
//! against SQLite (`tests/sqlite.rs`) and PostgreSQL (`tests/postgres.rs`).

#![allow(dead_code, reason = "each test binary uses part of the bodies")]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use brigade_api::{
    Backoff, ErrorKind, JobState, Outcome, TaskError, TaskResult, TaskState, WorkerJoin,
};
use brigade_core::{NewJob, NewTask};
use brigade_store::{Remote, Store};

/// Errors of a test body.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The tests' clock: a fixed instant, advanced by hand.
pub const T0: i64 = 1_700_000_000_000;
/// Lease time to live.
pub const TTL: i64 = 30_000;

/// Fail the test with `msg` unless `cond`.
pub fn ensure(cond: bool, msg: impl Into<String>) -> TestResult {
    if cond { Ok(()) } else { Err(msg.into().into()) }
}

/// A task of kind `echo` in queue `default`.
pub fn task(max_attempts: u32) -> NewTask {
    NewTask {
        kind: "echo".into(),
        input: r#"{"n": 1, "text": "hi"}"#.into(),
        name: None,
        queue: "default".into(),
        priority: 0,
        max_attempts,
        timeout_ms: 60_000,
        backoff: Backoff {
            jitter: false,
            ..Backoff::default()
        },
        requires: BTreeMap::new(),
        run_at: None,
    }
}

/// A job of `n` tasks.
pub fn job(n: usize, max_attempts: u32) -> NewJob {
    NewJob {
        name: Some("test".into()),
        queue: "default".into(),
        labels: BTreeMap::new(),
        tasks: (0..n).map(|_| task(max_attempts)).collect(),
    }
}

/// Register a worker for `echo` tasks in `default`.
pub async fn join(store: &dyn Store, name: &str, now: i64) -> TestResult<String> {
    let (w, _) = store
        .join_worker(
            "owner",
            WorkerJoin {
                name: name.into(),
                hostname: "host".into(),
                queues: vec!["default".into()],
                kinds: vec!["echo".into()],
                labels: BTreeMap::new(),
                capacity: 100,
                version: "test".into(),
            },
            now,
        )
        .await?;
    Ok(w.id)
}

/// A successful result.
pub fn ok(task_id: &str, attempt: u32) -> TaskResult {
    TaskResult {
        task_id: task_id.into(),
        attempt,
        outcome: Outcome::Succeeded,
        output: serde_json::json!({"ok": true}),
        error: None,
        retryable: None,
        duration_ms: Some(1),
    }
}

/// A failed result.
pub fn failed(task_id: &str, attempt: u32, retryable: bool) -> TaskResult {
    TaskResult {
        task_id: task_id.into(),
        attempt,
        outcome: Outcome::Failed,
        output: serde_json::Value::Null,
        error: Some(TaskError::new(ErrorKind::Handler, "boom")),
        retryable: Some(retryable),
        duration_ms: Some(1),
    }
}

async fn task_state(store: &dyn Store, id: &str) -> TestResult<TaskState> {
    Ok(store.task(id).await?.ok_or("task vanished")?.state)
}

/// Submit, lease, report: exact states, events and flags along the way.
pub async fn round_trip(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(2, 1), None, T0).await?;
    ensure(sub.created, "created")?;
    ensure(sub.changes.ready && !sub.changes.scheduled, "submit flags")?;
    ensure(
        sub.changes
            .events
            .iter()
            .map(|e| e.kind.as_str())
            .eq(["job.created"]),
        "submit events",
    )?;
    let ids = sub.job.task_ids.clone().ok_or("task ids")?;
    ensure(ids.len() == 2, "two task ids")?;
    let job = store.job(&sub.job.id).await?.ok_or("job")?;
    ensure(job.state == JobState::Queued, "job queued")?;
    ensure(
        job.progress.queued == 2 && job.progress.total == 2,
        "progress",
    )?;

    let worker = join(store, "w1", T0).await?;
    let (leased, changes) = store
        .lease(&worker, 10, T0 + 1, TTL)
        .await?
        .ok_or("worker known")?;
    ensure(leased.len() == 2, format!("leased {}", leased.len()))?;
    // Submission order at equal priority.
    ensure(
        leased[0].id == ids[0] && leased[1].id == ids[1],
        "lease order",
    )?;
    ensure(leased.iter().all(|t| t.attempt == 1), "first attempt")?;
    ensure(
        leased[0].input == serde_json::json!({"n": 1, "text": "hi"}),
        "input round trip",
    )?;
    ensure(
        changes.events.iter().all(|e| e.kind == "task.started") && changes.events.len() == 2,
        "lease events",
    )?;
    // Queued since the submit at T0, leased at T0 + 1: 1 ms each.
    ensure(
        changes.timings.len() == 2
            && changes
                .timings
                .iter()
                .all(|t| t.phase == brigade_store::Phase::Queued && t.seconds == 0.001),
        format!("lease timings {:?}", changes.timings),
    )?;
    ensure(
        task_state(store, &ids[0]).await? == TaskState::Running,
        "running",
    )?;
    let job = store.job(&sub.job.id).await?.ok_or("job")?;
    ensure(job.state == JobState::Running, "job running")?;
    ensure(job.started_at.is_some(), "job started")?;
    let w = store.worker(&worker).await?.ok_or("worker")?;
    ensure(w.running == 2, "worker runs two")?;
    // Nothing more to lease.
    let (more, _) = store.lease(&worker, 10, T0 + 2, TTL).await?.ok_or("w")?;
    ensure(more.is_empty(), "nothing left")?;

    let (reply, changes) = store
        .report(
            &worker,
            vec![ok(&ids[0], 1), failed(&ids[1], 1, true)],
            T0 + 3,
        )
        .await?
        .ok_or("worker known")?;
    ensure(reply.accepted == ids, format!("accepted {reply:?}"))?;
    ensure(reply.rejected.is_empty(), "none rejected")?;
    let kinds: Vec<&str> = changes.events.iter().map(|e| e.kind.as_str()).collect();
    // max_attempts = 1: the failure is final.
    ensure(
        kinds == ["task.succeeded", "task.failed", "job.finished"],
        format!("report events {kinds:?}"),
    )?;
    ensure(!changes.ready && !changes.scheduled, "report flags")?;
    // Leased at T0 + 1, reported at T0 + 3: 2 ms each.
    ensure(
        changes.timings.len() == 2
            && changes
                .timings
                .iter()
                .all(|t| t.phase == brigade_store::Phase::Run && t.seconds == 0.002),
        format!("report timings {:?}", changes.timings),
    )?;
    let done = store.task(&ids[0]).await?.ok_or("task")?;
    ensure(done.state == TaskState::Succeeded, "succeeded")?;
    ensure(done.output == serde_json::json!({"ok": true}), "output")?;
    let history = done.history.ok_or("history")?;
    ensure(
        history.len() == 1 && history[0].outcome == "succeeded",
        "history",
    )?;
    let bad = store.task(&ids[1]).await?.ok_or("task")?;
    ensure(bad.state == TaskState::Failed, "failed")?;
    ensure(bad.error.map(|e| e.message) == Some("boom".into()), "error")?;
    let job = store.job(&sub.job.id).await?.ok_or("job")?;
    ensure(job.state == JobState::Failed, "job failed")?;
    ensure(job.finished_at.is_some(), "job finished")?;

    // Idempotent submit returns the same job.
    let idem = brigade_store::Idempotency {
        key: "k1".into(),
        hash: "h1".into(),
    };
    let first = store
        .submit("owner", job_of(1), Some(idem.clone()), T0 + 4)
        .await?;
    let again = store.submit("owner", job_of(1), Some(idem), T0 + 5).await?;
    ensure(first.created && !again.created, "idempotent created flags")?;
    ensure(first.job.id == again.job.id, "same job")?;
    ensure(first.job.task_ids == again.job.task_ids, "same tasks")?;
    let clash = store
        .submit(
            "owner",
            job_of(1),
            Some(brigade_store::Idempotency {
                key: "k1".into(),
                hash: "other".into(),
            }),
            T0 + 6,
        )
        .await;
    ensure(
        matches!(clash, Err(brigade_store::StoreError::IdempotencyConflict)),
        "idempotency conflict",
    )?;
    Ok(())
}

fn job_of(n: usize) -> NewJob {
    job(n, 3)
}

/// Results of an old attempt, of another worker, or repeated, are refused.
pub async fn stale_attempt(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(1, 3), None, T0).await?;
    let id = sub.job.task_ids.ok_or("ids")?.remove(0);
    let w1 = join(store, "w1", T0).await?;
    let w2 = join(store, "w2", T0).await?;
    let (leased, _) = store.lease(&w1, 1, T0, TTL).await?.ok_or("w1")?;
    ensure(leased.len() == 1, "leased")?;

    // Another worker cannot report it.
    let (reply, _) = store
        .report(&w2, vec![ok(&id, 1)], T0 + 1)
        .await?
        .ok_or("w2")?;
    ensure(
        reply.accepted.is_empty() && reply.rejected.len() == 1,
        "other worker rejected",
    )?;

    // A retryable failure schedules a retry.
    let (reply, changes) = store
        .report(&w1, vec![failed(&id, 1, true)], T0 + 2)
        .await?
        .ok_or("w1")?;
    ensure(reply.accepted == [id.clone()], "failure accepted")?;
    ensure(changes.scheduled && !changes.ready, "retry scheduled")?;
    ensure(
        changes
            .events
            .iter()
            .map(|e| e.kind.as_str())
            .eq(["task.retrying"]),
        "retrying event",
    )?;
    ensure(
        task_state(store, &id).await? == TaskState::Scheduled,
        "scheduled",
    )?;
    // The same result again: refused, the task is no longer running.
    let (reply, _) = store
        .report(&w1, vec![ok(&id, 1)], T0 + 3)
        .await?
        .ok_or("w1")?;
    ensure(
        reply.rejected.len() == 1 && reply.rejected[0].reason == "the task is scheduled",
        format!("repeat rejected {reply:?}"),
    )?;

    let (moved, next) = store.promote_due(T0 + 3_600_000).await?;
    ensure(moved == 1 && next.is_none(), "promoted")?;
    let (leased, _) = store
        .lease(&w2, 1, T0 + 3_600_001, TTL)
        .await?
        .ok_or("w2")?;
    ensure(
        leased.len() == 1 && leased[0].attempt == 2,
        "second attempt",
    )?;
    // The first attempt's late result is stale.
    let (reply, _) = store
        .report(&w1, vec![ok(&id, 1)], T0 + 3_600_002)
        .await?
        .ok_or("w1")?;
    ensure(
        reply.rejected.len() == 1
            && reply.rejected[0].reason == "stale attempt: the task is on attempt 2",
        format!("stale rejected {reply:?}"),
    )?;
    // The current attempt is accepted once, even when repeated in one batch.
    let (reply, changes) = store
        .report(&w2, vec![ok(&id, 2), ok(&id, 2)], T0 + 3_600_003)
        .await?
        .ok_or("w2")?;
    ensure(
        reply.accepted == [id.clone()] && reply.rejected.len() == 1,
        format!("accepted once {reply:?}"),
    )?;
    ensure(
        changes
            .events
            .iter()
            .map(|e| e.kind.as_str())
            .eq(["task.succeeded", "job.finished"]),
        "success events",
    )?;
    let view = store.task(&id).await?.ok_or("task")?;
    ensure(view.state == TaskState::Succeeded, "succeeded")?;
    ensure(view.history.map(|h| h.len()) == Some(2), "two attempts")?;
    ensure(
        store
            .report("nobody", vec![ok(&id, 2)], T0)
            .await?
            .is_none(),
        "unknown worker",
    )?;
    Ok(())
}

/// `leasers` concurrent workers (spread over `stores`) drain `total` tasks:
/// each task is handed out once and each result accepted once.
pub async fn concurrent_lease(stores: Vec<Arc<dyn Store>>, total: usize) -> TestResult {
    let first = stores.first().ok_or("a store")?.clone();
    let jobs = 4;
    let mut job_ids = Vec::new();
    for _ in 0..jobs {
        let sub = first
            .submit("owner", job(total / jobs, 1), None, T0)
            .await?;
        job_ids.push(sub.job.id);
    }
    let leasers = 4;
    let mut handles = Vec::new();
    for i in 0..leasers {
        let store = stores[i % stores.len()].clone();
        handles.push(tokio::spawn(async move {
            let worker = join(&*store, &format!("w{i}"), T0).await?;
            let mut leased = Vec::new();
            let mut accepted = 0usize;
            let mut rejected = 0usize;
            loop {
                let (batch, _) = store.lease(&worker, 25, T0 + 1, TTL).await?.ok_or("w")?;
                if batch.is_empty() {
                    break;
                }
                let results = batch.iter().map(|t| ok(&t.id, t.attempt)).collect();
                let (reply, _) = store.report(&worker, results, T0 + 2).await?.ok_or("w")?;
                accepted += reply.accepted.len();
                rejected += reply.rejected.len();
                leased.extend(batch.into_iter().map(|t| t.id));
            }
            TestResult::Ok((leased, accepted, rejected))
        }));
    }
    let mut all = Vec::new();
    let mut accepted = 0;
    let mut rejected = 0;
    for h in handles {
        let (leased, a, r) = h.await??;
        all.extend(leased);
        accepted += a;
        rejected += r;
    }
    let unique: HashSet<&String> = all.iter().collect();
    ensure(
        unique.len() == all.len(),
        format!("{} leases of {} tasks", all.len(), unique.len()),
    )?;
    ensure(
        all.len() == total,
        format!("leased {} of {total}", all.len()),
    )?;
    ensure(
        accepted == total && rejected == 0,
        format!("accepted {accepted}, rejected {rejected}"),
    )?;
    for id in &job_ids {
        let job = first.job(id).await?.ok_or("job")?;
        ensure(
            job.state == JobState::Succeeded && job.finished_at.is_some(),
            format!("job {id} is {:?}", job.state),
        )?;
    }
    Ok(())
}

/// Two reapers at once requeue a lost worker's task once.
pub async fn reap_once(a: Arc<dyn Store>, b: Arc<dyn Store>) -> TestResult {
    let sub = a.submit("owner", job(3, 3), None, T0).await?;
    let ids: BTreeSet<String> = sub.job.task_ids.ok_or("ids")?.into_iter().collect();
    let worker = join(&*a, "doomed", T0).await?;
    let (leased, _) = a.lease(&worker, 10, T0, TTL).await?.ok_or("w")?;
    ensure(leased.len() == 3, "leased")?;
    let later = T0 + 10 * TTL;
    let (ra, rb) = tokio::join!(a.reap(later, TTL), b.reap(later, TTL));
    let (ra, rb) = (ra?, rb?);
    let events: Vec<_> = ra.events.iter().chain(rb.events.iter()).collect();
    let lost = events.iter().filter(|e| e.kind == "worker.lost").count();
    ensure(lost == 1, format!("worker lost {lost} times"))?;
    let retried: Vec<&String> = events
        .iter()
        .filter(|e| e.kind == "task.retrying")
        .filter_map(|e| e.task_id.as_ref())
        .collect();
    ensure(
        retried.len() == 3
            && retried.iter().copied().collect::<BTreeSet<_>>() == ids.iter().collect(),
        format!("requeued {retried:?}"),
    )?;
    ensure(ra.ready || rb.ready, "ready after requeue")?;
    for id in &ids {
        let t = a.task(id).await?.ok_or("task")?;
        ensure(
            t.state == TaskState::Queued && t.attempt == 1,
            format!("{id} is {:?} on attempt {}", t.state, t.attempt),
        )?;
        let lost = t
            .history
            .ok_or("history")?
            .iter()
            .filter(|h| h.outcome == "lost")
            .count();
        ensure(lost == 1, "one lost attempt")?;
    }
    // Reaping again changes nothing.
    let again = b.reap(later + 1, TTL).await?;
    ensure(again.events.is_empty(), "second reap is quiet")?;
    // The lost worker's late result is refused; a new worker gets attempt 2.
    let other = join(&*b, "fresh", later).await?;
    let (leased, _) = b.lease(&other, 10, later + 2, TTL).await?.ok_or("w")?;
    ensure(
        leased.len() == 3 && leased.iter().all(|t| t.attempt == 2),
        "second attempts",
    )?;
    let (reply, _) = a
        .report(&worker, vec![ok(&leased[0].id, 1)], later + 3)
        .await?
        .ok_or("w")?;
    ensure(reply.rejected.len() == 1, "late result refused")?;
    Ok(())
}

/// Wait for a remote notification matching `want`.
pub async fn expect_remote(
    rx: &mut tokio::sync::broadcast::Receiver<Remote>,
    what: &str,
    want: impl Fn(&Remote) -> bool,
) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| format!("no remote {what} within 10s"))??;
        if want(&got) {
            return Ok(());
        }
    }
}

/// Changes made through `a` reach `b` as remote notifications; `a` does not hear itself.
pub async fn remote_notifications(a: Arc<dyn Store>, b: Arc<dyn Store>) -> TestResult {
    let mut on_b = b.remote().ok_or("b has remote notifications")?;
    let mut on_a = a.remote().ok_or("a has remote notifications")?;
    let sub = a.submit("owner", job(1, 1), None, T0).await?;
    let job_id = sub.job.id.clone();
    expect_remote(&mut on_b, "job.created", |r| {
        matches!(r, Remote::Event(e) if e.kind == "job.created" && e.job_id.as_deref() == Some(&job_id))
    })
    .await?;
    expect_remote(&mut on_b, "ready", |r| matches!(r, Remote::Ready)).await?;
    // Through b: a hears the lease and the result.
    let worker = join(&*b, "w", T0).await?;
    let (leased, _) = b.lease(&worker, 1, T0, TTL).await?.ok_or("w")?;
    let (reply, _) = b
        .report(&worker, vec![ok(&leased[0].id, 1)], T0 + 1)
        .await?
        .ok_or("w")?;
    ensure(reply.accepted.len() == 1, "accepted")?;
    expect_remote(
        &mut on_a,
        "job.finished",
        |r| matches!(r, Remote::Event(e) if e.kind == "job.finished"),
    )
    .await?;
    // a never heard its own job.created.
    let mut own = 0;
    while let Ok(r) = on_a.try_recv() {
        if matches!(&r, Remote::Event(e) if e.kind == "job.created") {
            own += 1;
        }
    }
    ensure(own == 0, "a heard its own event")?;
    // Many events in one transaction arrive, in order.
    let big = a.submit("owner", job(300, 1), None, T0 + 2).await?;
    let w2 = join(&*a, "w2", T0).await?;
    let (leased, changes) = a.lease(&w2, 300, T0 + 3, TTL).await?.ok_or("w")?;
    ensure(
        leased.len() == 300 && changes.events.len() == 300,
        "big lease",
    )?;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 300 {
        let got = tokio::time::timeout_at(deadline, on_b.recv())
            .await
            .map_err(|_| format!("only {} of 300 task.started", seen.len()))??;
        if let Remote::Event(e) = got
            && e.kind == "task.started"
            && e.job_id.as_deref() == Some(big.job.id.as_str())
        {
            seen.push(e.task_id.unwrap_or_default());
        }
    }
    let expected: Vec<String> = leased.into_iter().map(|t| t.id).collect();
    ensure(seen == expected, "events in order")?;
    Ok(())
}

/// Register a worker with labels.
pub async fn join_with(
    store: &dyn Store,
    name: &str,
    labels: &[(&str, &str)],
    now: i64,
) -> TestResult<String> {
    let (w, _) = store
        .join_worker(
            "owner",
            WorkerJoin {
                name: name.into(),
                hostname: "host".into(),
                queues: vec!["default".into(), "other".into()],
                kinds: vec!["echo".into()],
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                capacity: 10,
                version: "test".into(),
            },
            now,
        )
        .await?;
    Ok(w.id)
}

/// Label requirements, paused queues, priorities, heartbeats, cancel and retry.
pub async fn matching_heartbeat_cancel_retry(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let mut python = task(1);
    python.requires = BTreeMap::from([("lang".to_owned(), "python".to_owned())]);
    let mut urgent = task(1);
    urgent.priority = 10;
    let mut elsewhere = task(1);
    elsewhere.queue = "other".into();
    let sub = store
        .submit(
            "owner",
            NewJob {
                name: None,
                queue: "default".into(),
                labels: BTreeMap::new(),
                tasks: vec![python, urgent, elsewhere],
            },
            None,
            T0,
        )
        .await?;
    let ids = sub.job.task_ids.ok_or("ids")?;
    store.set_queue_paused("other", true).await?;

    let c_only = join_with(store, "c", &[("lang", "c")], T0).await?;
    let (got, _) = store.lease(&c_only, 10, T0, TTL).await?.ok_or("w")?;
    ensure(
        got.iter().map(|t| t.id.as_str()).eq([ids[1].as_str()]),
        "a worker without the label gets only the unconstrained task",
    )?;
    // "c, python" offers either.
    let both = join_with(store, "both", &[("lang", "c, python")], T0).await?;
    let (got, _) = store.lease(&both, 10, T0, TTL).await?.ok_or("w")?;
    ensure(
        got.iter().map(|t| t.id.as_str()).eq([ids[0].as_str()]),
        "the labelled task, not the paused queue's",
    )?;
    let q = store.set_queue_paused("other", false).await?;
    ensure(!q.paused && q.queued == 1, format!("resumed {q:?}"))?;
    let (got, _) = store.lease(&both, 10, T0, TTL).await?.ok_or("w")?;
    ensure(
        got.len() == 1 && got[0].id == ids[2],
        "resumed queue leased",
    )?;

    // Heartbeats extend held leases and name the others for cancelling.
    let reply = store
        .heartbeat(
            &both,
            brigade_api::Heartbeat {
                running: vec![
                    ids[0].clone(),
                    ids[1].clone(),
                    ids[2].clone(),
                    "nope".into(),
                ],
                load: brigade_api::Load::default(),
            },
            T0 + TTL,
            TTL,
        )
        .await?
        .ok_or("w")?;
    ensure(
        reply.cancel == [ids[1].clone(), "nope".to_owned()] && !reply.drain,
        format!("heartbeat {reply:?}"),
    )?;
    // At T0 + 1.5 TTL only c_only's lease (not renewed) has run out.
    let reaped = store.reap(T0 + TTL + TTL / 2, 10 * TTL).await?;
    // max_attempts 1: the lost attempt was its last.
    let ended: Vec<_> = reaped
        .events
        .iter()
        .filter(|e| e.kind == "task.failed")
        .filter_map(|e| e.task_id.clone())
        .collect();
    ensure(
        ended == [ids[1].clone()],
        format!("reaped {:?}", reaped.events),
    )?;

    // Draining is reported by the heartbeat; a draining worker leases nothing.
    store.drain_worker(&c_only).await?;
    let reply = store
        .heartbeat(
            &c_only,
            brigade_api::Heartbeat {
                running: Vec::new(),
                load: brigade_api::Load::default(),
            },
            T0 + 2 * TTL,
            TTL,
        )
        .await?
        .ok_or("w")?;
    ensure(reply.drain, "drain")?;
    let (got, _) = store.lease(&c_only, 10, T0, TTL).await?.ok_or("w")?;
    ensure(got.is_empty(), "draining leases nothing")?;

    // Cancel the job: running and queued tasks end, the job is cancelled.
    let changes = store
        .cancel_job(&sub.job.id, T0 + 3 * TTL)
        .await?
        .ok_or("job")?;
    let kinds: Vec<&str> = changes.events.iter().map(|e| e.kind.as_str()).collect();
    ensure(
        kinds == ["task.cancelled", "task.cancelled", "job.finished"],
        format!("cancel events {kinds:?}"),
    )?;
    let job = store.job(&sub.job.id).await?.ok_or("job")?;
    ensure(job.state == JobState::Cancelled, "job cancelled")?;
    let late = store
        .report(&both, vec![ok(&ids[0], 1)], T0 + 3 * TTL)
        .await?
        .ok_or("w")?;
    ensure(late.0.rejected.len() == 1, "result after cancel refused")?;

    // Retry gives a fresh budget and reopens the job.
    match store.retry_task(&ids[0], 2_000_000).await? {
        brigade_store::RetryOutcome::Retried(view, changes) => {
            ensure(view.state == TaskState::Queued && changes.ready, "retried")?;
        }
        other => return Err(format!("retry: {other:?}").into()),
    }
    let job = store.job(&sub.job.id).await?.ok_or("job")?;
    ensure(
        job.state == JobState::Running && job.finished_at.is_none(),
        "reopened",
    )?;
    ensure(
        store.delete_job(&sub.job.id).await? == brigade_store::DeleteOutcome::Unfinished,
        "unfinished job kept",
    )?;
    let (got, _) = store
        .lease(&both, 10, T0 + 4 * TTL, TTL)
        .await?
        .ok_or("w")?;
    ensure(
        got.len() == 1 && got[0].attempt == 2,
        "second attempt leased",
    )?;
    let (reply, changes) = store
        .report(&both, vec![failed(&ids[0], 2, true)], T0 + 4 * TTL)
        .await?
        .ok_or("w")?;
    // max_attempts 1, but the retry reset the budget: one more try was allowed, now it fails.
    ensure(reply.accepted.len() == 1, "accepted")?;
    ensure(
        changes.events.iter().any(|e| e.kind == "job.finished"),
        "job finished again",
    )?;
    ensure(
        store.delete_job(&sub.job.id).await? == brigade_store::DeleteOutcome::Deleted,
        "deleted",
    )?;
    ensure(store.job(&sub.job.id).await?.is_none(), "gone")?;
    ensure(store.task(&ids[0]).await?.is_none(), "tasks gone")?;
    Ok(())
}

/// A batch of heartbeats is one write: each reply in batch order, leases
/// extended only for the worker that holds them, a worker given up for lost is
/// active again (and told to cancel what was taken from it), an unknown
/// worker gets no reply.
pub async fn heartbeat_batch(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    store.submit("owner", job(3, 3), None, T0).await?;
    let a = join(store, "a", T0).await?;
    let (got_a, _) = store.lease(&a, 2, T0, TTL).await?.ok_or("a")?;
    let b = join(store, "b", T0).await?;
    let (got_b, _) = store.lease(&b, 1, T0, TTL).await?.ok_or("b")?;
    ensure(got_a.len() == 2 && got_b.len() == 1, "leased 2 + 1")?;
    let (a1, a2, b1) = (&got_a[0].id, &got_a[1].id, &got_b[0].id);

    // b falls silent: it is lost and its task goes back to the queue.
    let later = T0 + TTL / 2;
    let none = store.heartbeats(Vec::new(), later, TTL).await?;
    ensure(none.is_empty(), "an empty batch has no replies")?;
    store
        .heartbeats(vec![(a.clone(), beat(&[a1, a2]))], later, TTL)
        .await?;
    let reaped = store.reap(T0 + TTL + 1, TTL).await?;
    let lost: Vec<_> = reaped
        .events
        .iter()
        .filter(|e| e.kind == "worker.lost")
        .filter_map(|e| e.worker_id.clone())
        .collect();
    ensure(lost == [b.clone()], format!("lost {lost:?}"))?;
    ensure(
        task_state(store, b1).await? == TaskState::Queued,
        "b's task requeued",
    )?;
    ensure(
        task_state(store, a1).await? == TaskState::Running,
        "a's leases were extended",
    )?;

    // One batch: a names its tasks and one that is b's; b is back; a ghost.
    let now = T0 + TTL + 2;
    let replies = store
        .heartbeats(
            vec![
                (a.clone(), beat(&[a1, a2, b1])),
                ("ghost".to_owned(), beat(&[a1])),
                (b.clone(), beat(&[b1])),
            ],
            now,
            TTL,
        )
        .await?;
    ensure(replies.len() == 3, format!("replies {replies:?}"))?;
    let ra = replies[0].as_ref().ok_or("a known")?;
    ensure(
        ra.cancel == [b1.clone()],
        format!("a cancels {:?}", ra.cancel),
    )?;
    ensure(replies[1].is_none(), "the ghost is unknown")?;
    let rb = replies[2].as_ref().ok_or("b known")?;
    ensure(
        rb.cancel == [b1.clone()],
        format!("b cancels {:?}", rb.cancel),
    )?;
    let workers = store.workers().await?;
    let b_state = workers
        .iter()
        .find(|w| w.id == b)
        .map(|w| w.state)
        .ok_or("b listed")?;
    ensure(
        b_state == brigade_api::WorkerState::Active,
        format!("b is {b_state:?}"),
    )?;
    // a's leases now run to now + TTL: a reap just before that keeps them.
    store.reap(now + TTL - 1, TTL).await?;
    ensure(
        task_state(store, a2).await? == TaskState::Running,
        "a's lease extended by the batch",
    )?;
    Ok(())
}

fn beat(running: &[&String]) -> brigade_api::Heartbeat {
    brigade_api::Heartbeat {
        running: running.iter().map(|s| (*s).clone()).collect(),
        load: brigade_api::Load::default(),
    }
}
