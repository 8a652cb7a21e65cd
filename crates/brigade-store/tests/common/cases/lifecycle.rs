//! The first cases: a task's whole way through the store, stale results,
//! matching, heartbeats, cancel and retry.

use std::collections::BTreeMap;
use std::sync::Arc;

use brigade_api::{JobState, TaskState};
use brigade_core::NewJob;
use brigade_store::Store;

use crate::common::{
    T0, TTL, TestResult, beat, ensure, failed, job, join, join_with, ok, task, task_state,
};

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
                keep_ms: None,
                unique: None,
                callback: None,
                traceparent: None,
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

/// A traced job's context is stored on each of its tasks (spawned ones
/// too), handed out with each lease, plain or limited, and named again by
/// the results recorded; an untraced job carries none.
pub async fn trace_context_rides_with_the_tasks(store: Arc<dyn Store>) -> TestResult {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let store = &*store;
    let limited = brigade_core::NewTask {
        limits: vec!["k".to_owned()],
        ..crate::common::task(1)
    };
    let traced = NewJob {
        traceparent: Some(TP.to_owned()),
        ..crate::common::job_with(vec![crate::common::task(1), limited])
    };
    let sub = store.submit("owner", traced, None, T0).await?;
    let traced_ids = sub.job.task_ids.clone().ok_or("task ids")?;
    let plain = store.submit("owner", job(1, 1), None, T0).await?;
    let plain_ids = plain.job.task_ids.clone().ok_or("task ids")?;
    let worker = join(store, "w1", T0).await?;
    let (leased, _) = store
        .lease(&worker, 10, T0 + 1, TTL)
        .await?
        .ok_or("worker known")?;
    ensure(leased.len() == 3, format!("leased {}", leased.len()))?;
    for t in &leased {
        let want = traced_ids.contains(&t.id).then_some(TP);
        ensure(
            t.traceparent.as_deref() == want,
            format!("lease of {}: {:?}", t.id, t.traceparent),
        )?;
    }
    // A spawn joins the spawner's trace.
    let spawning = brigade_api::TaskResult {
        spawn: vec![brigade_api::TaskSpec::new("echo", serde_json::json!(1))],
        ..ok(&traced_ids[0], 1)
    };
    let results = vec![spawning, ok(&traced_ids[1], 1), ok(&plain_ids[0], 1)];
    let (reply, changes) = store
        .report(&worker, results, T0 + 2)
        .await?
        .ok_or("worker known")?;
    ensure(reply.accepted.len() == 3, format!("{reply:?}"))?;
    let mut named: Vec<&str> = changes.traced.iter().map(|t| t.task_id.as_str()).collect();
    named.sort_unstable();
    let mut want: Vec<&str> = traced_ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    ensure(
        named == want,
        format!("traced results {:?}", changes.traced),
    )?;
    ensure(
        changes
            .traced
            .iter()
            .all(|t| t.traceparent == TP && t.job_id == sub.job.id && t.attempt == 1),
        format!("traced results {:?}", changes.traced),
    )?;
    let (spawned, _) = store
        .lease(&worker, 10, T0 + 3, TTL)
        .await?
        .ok_or("worker known")?;
    ensure(
        spawned.len() == 1 && spawned[0].traceparent.as_deref() == Some(TP),
        format!("spawned {spawned:?}"),
    )?;
    Ok(())
}
