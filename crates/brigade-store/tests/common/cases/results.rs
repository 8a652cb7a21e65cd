//! Results: every rejection code, duplicates in a batch, results riding on a
//! lease, and the history of attempts they leave.

use std::sync::Arc;

use brigade_api::{ErrorKind, RejectionCode, TaskError, TaskState};
use brigade_store::Store;

use crate::common::{
    T0, TTL, TestResult, codes, ensure, failed, ids_of, job, job_view, join, kinds, lease_ids, ok,
    outcomes, report, task_view,
};

/// A failure of `kind`.
fn failed_with(task_id: &str, attempt: u32, kind: ErrorKind) -> brigade_api::TaskResult {
    brigade_api::TaskResult {
        error: Some(TaskError::new(kind, format!("{kind:?}"))),
        ..failed(task_id, attempt, true)
    }
}

/// Each refused result is named with its code and a reason, in batch order,
/// and changes nothing: unknown task, stale attempt, another worker's task,
/// a task no longer running.
pub async fn report_rejection_codes(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(3, 3), None, T0).await?;
    let ids = ids_of(&sub)?;
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let w1 = join(store, "w1", T0).await?;
    let w2 = join(store, "w2", T0).await?;
    ensure(
        lease_ids(store, &w1, 3, T0).await?.len() == 3,
        "w1 runs all",
    )?;

    let (reply, changes) = report(store, &w1, vec![ok("nope", 1)], T0 + 1).await?;
    ensure(
        reply.accepted.is_empty()
            && codes(&reply.rejected) == [("nope".into(), RejectionCode::UnknownTask)],
        format!("unknown task: {reply:?}"),
    )?;
    ensure(reply.rejected[0].reason == "unknown task", "reason")?;
    ensure(changes.events.is_empty(), "a rejection publishes nothing")?;

    let (reply, _) = report(store, &w2, vec![ok(a, 1)], T0 + 1).await?;
    ensure(
        codes(&reply.rejected) == [(a.clone(), RejectionCode::NotLeasedToWorker)],
        format!("another worker's task: {reply:?}"),
    )?;
    ensure(
        reply.rejected[0].reason == "stale attempt: the task is not leased to this worker",
        format!("reason {:?}", reply.rejected[0].reason),
    )?;

    let (reply, _) = report(store, &w1, vec![ok(a, 2)], T0 + 1).await?;
    ensure(
        codes(&reply.rejected) == [(a.clone(), RejectionCode::StaleAttempt)],
        format!("another attempt: {reply:?}"),
    )?;
    ensure(
        reply.rejected[0].reason == "stale attempt: the task is on attempt 1",
        format!("reason {:?}", reply.rejected[0].reason),
    )?;
    for id in &ids {
        let t = task_view(store, id).await?;
        ensure(
            t.state == TaskState::Running
                && t.attempt == 1
                && t.worker_id.as_deref() == Some(w1.as_str()),
            format!("rejected results changed {id}: {t:?}"),
        )?;
    }

    let (reply, _) = report(store, &w1, vec![ok(a, 1)], T0 + 2).await?;
    ensure(reply.accepted == [a.clone()], "the holder's result")?;
    let (reply, _) = report(store, &w1, vec![failed(a, 1, false)], T0 + 3).await?;
    ensure(
        codes(&reply.rejected) == [(a.clone(), RejectionCode::NotRunning)],
        format!("after the end: {reply:?}"),
    )?;
    ensure(
        reply.rejected[0].reason == "the task is succeeded",
        format!("reason {:?}", reply.rejected[0].reason),
    )?;
    ensure(
        task_view(store, a).await?.state == TaskState::Succeeded,
        "a late failure does not undo a success",
    )?;

    // A mixed batch: each result on its own, replies in batch order.
    let (reply, _) = report(
        store,
        &w1,
        vec![ok("nope", 1), ok(b, 1), ok(c, 7), ok(a, 1)],
        T0 + 4,
    )
    .await?;
    ensure(reply.accepted == [b.clone()], format!("accepted {reply:?}"))?;
    ensure(
        codes(&reply.rejected)
            == [
                ("nope".into(), RejectionCode::UnknownTask),
                (c.clone(), RejectionCode::StaleAttempt),
                (a.clone(), RejectionCode::NotRunning),
            ],
        format!("rejected {:?}", reply.rejected),
    )?;
    ensure(
        task_view(store, c).await?.state == TaskState::Running,
        "c still runs",
    )?;
    Ok(())
}

/// Two results for one task in one batch: the first is applied, the second
/// refused as `duplicate`.
pub async fn duplicate_result_in_one_batch(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(2, 3), None, T0).await?;
    let ids = ids_of(&sub)?;
    let w = join(store, "w", T0).await?;
    lease_ids(store, &w, 2, T0).await?;
    let (reply, changes) = report(
        store,
        &w,
        vec![
            ok(&ids[0], 1),
            failed(&ids[0], 1, false),
            failed(&ids[1], 1, true),
            ok(&ids[1], 1),
        ],
        T0 + 1,
    )
    .await?;
    ensure(
        reply.accepted == ids,
        format!("the first of each accepted: {reply:?}"),
    )?;
    ensure(
        codes(&reply.rejected)
            == [
                (ids[0].clone(), RejectionCode::Duplicate),
                (ids[1].clone(), RejectionCode::Duplicate),
            ],
        format!("the second of each rejected: {:?}", reply.rejected),
    )?;
    ensure(
        kinds(&changes) == ["task.succeeded", "task.retrying"],
        format!("one event each: {:?}", kinds(&changes)),
    )?;
    ensure(
        task_view(store, &ids[0]).await?.state == TaskState::Succeeded,
        "the first result (success) stands",
    )?;
    ensure(
        task_view(store, &ids[1]).await?.state == TaskState::Scheduled,
        "the first result (a retryable failure) stands",
    )?;
    ensure(
        outcomes(store, &ids[0]).await? == ["succeeded"],
        "one attempt recorded",
    )?;
    Ok(())
}

/// A worker lost and back again holds a task's new attempt while the old
/// attempt's result is still in its outbox: in one batch, the stale result is
/// refused and the current attempt's result is recorded.
pub async fn stale_result_does_not_shadow_the_current_one(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(1, 3), None, T0).await?;
    let id = ids_of(&sub)?.remove(0);
    let w = join(store, "w", T0).await?;
    lease_ids(store, &w, 1, T0).await?;
    // w falls silent: its task is requeued; w comes back and leases it again.
    store.reap(T0 + 2 * TTL, TTL).await?;
    store
        .heartbeat(&w, crate::common::beat(&[]), T0 + 2 * TTL + 1, TTL)
        .await?
        .ok_or("w")?;
    let again = lease_ids(store, &w, 1, T0 + 2 * TTL + 2).await?;
    ensure(
        again == [(id.clone(), 2)],
        format!("second attempt {again:?}"),
    )?;
    let (reply, _) = report(store, &w, vec![ok(&id, 1), ok(&id, 2)], T0 + 2 * TTL + 3).await?;
    ensure(
        reply.accepted == [id.clone()],
        format!("the current attempt's result is accepted: {reply:?}"),
    )?;
    ensure(
        codes(&reply.rejected) == [(id.clone(), RejectionCode::StaleAttempt)],
        format!("the old attempt's is stale: {:?}", reply.rejected),
    )?;
    ensure(
        task_view(store, &id).await?.state == TaskState::Succeeded,
        "succeeded",
    )?;
    Ok(())
}

/// Results and a lease in one call: the results are applied, then tasks are
/// leased; a refused result does not stop the lease; a draining worker's
/// results count but it leases nothing; an unknown worker gets `None`.
pub async fn report_and_lease(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(4, 3), None, T0).await?;
    let ids = ids_of(&sub)?;
    let w = join(store, "w", T0).await?;

    let (reply, leased, changes) = store
        .report_and_lease(&w, Vec::new(), 1, T0, TTL)
        .await?
        .ok_or("w")?;
    ensure(
        reply.accepted.is_empty() && reply.rejected.is_empty(),
        "no results",
    )?;
    ensure(
        leased.len() == 1 && leased[0].id == ids[0],
        "first task leased",
    )?;
    ensure(kinds(&changes) == ["task.started"], "started")?;

    let (reply, leased, changes) = store
        .report_and_lease(&w, vec![ok(&ids[0], 1)], 1, T0 + 1, TTL)
        .await?
        .ok_or("w")?;
    ensure(reply.accepted == [ids[0].clone()], format!("{reply:?}"))?;
    ensure(
        leased.len() == 1 && leased[0].id == ids[1] && leased[0].attempt == 1,
        "next task leased",
    )?;
    ensure(
        kinds(&changes) == ["task.succeeded", "task.started"],
        format!("events {:?}", kinds(&changes)),
    )?;
    ensure(
        task_view(store, &ids[0]).await?.state == TaskState::Succeeded
            && task_view(store, &ids[1]).await?.state == TaskState::Running,
        "both applied",
    )?;

    // A refused result (and a duplicate) beside an accepted one.
    let (reply, leased, _) = store
        .report_and_lease(
            &w,
            vec![ok(&ids[1], 1), ok(&ids[1], 1), ok("nope", 1)],
            1,
            T0 + 2,
            TTL,
        )
        .await?
        .ok_or("w")?;
    ensure(reply.accepted == [ids[1].clone()], format!("{reply:?}"))?;
    ensure(
        codes(&reply.rejected)
            == [
                (ids[1].clone(), RejectionCode::Duplicate),
                ("nope".into(), RejectionCode::UnknownTask),
            ],
        format!("rejected {:?}", reply.rejected),
    )?;
    ensure(
        leased.len() == 1 && leased[0].id == ids[2],
        "leased after refusals",
    )?;

    // Draining: the result is recorded, nothing more is leased.
    store.drain_worker(&w).await?.ok_or("w")?;
    let (reply, leased, _) = store
        .report_and_lease(&w, vec![ok(&ids[2], 1)], 5, T0 + 3, TTL)
        .await?
        .ok_or("w")?;
    ensure(
        reply.accepted == [ids[2].clone()],
        "draining: result accepted",
    )?;
    ensure(leased.is_empty(), "draining: nothing leased")?;
    ensure(
        task_view(store, &ids[3]).await?.state == TaskState::Queued,
        "the last task waits",
    )?;

    // The last task through another worker; the job ends in that call.
    let v = join(store, "v", T0).await?;
    let (_, leased, _) = store
        .report_and_lease(&v, Vec::new(), 5, T0 + 4, TTL)
        .await?
        .ok_or("v")?;
    ensure(leased.len() == 1 && leased[0].id == ids[3], "v leases it")?;
    let (_, leased, changes) = store
        .report_and_lease(&v, vec![ok(&ids[3], 1)], 5, T0 + 5, TTL)
        .await?
        .ok_or("v")?;
    ensure(leased.is_empty(), "nothing left")?;
    ensure(
        kinds(&changes) == ["task.succeeded", "job.finished"],
        format!("events {:?}", kinds(&changes)),
    )?;

    ensure(
        store
            .report_and_lease("ghost", vec![ok(&ids[0], 1)], 1, T0, TTL)
            .await?
            .is_none(),
        "unknown worker with results",
    )?;
    ensure(
        store
            .report_and_lease("ghost", Vec::new(), 1, T0, TTL)
            .await?
            .is_none(),
        "unknown worker without results",
    )?;
    Ok(())
}

/// A task's history lists every attempt with its worker, times, outcome and
/// error: failed, timeout, crash, lost, handed back, succeeded.
pub async fn history_records_each_attempt(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(1, 5), None, T0).await?;
    let id = ids_of(&sub)?.remove(0);
    let w1 = join(store, "w1", T0).await?;
    let mut now = T0;

    let outcomes_for = [ErrorKind::Handler, ErrorKind::Timeout, ErrorKind::Crash];
    for (n, kind) in outcomes_for.iter().enumerate() {
        let attempt = n as u32 + 1;
        now += 10;
        let leased = lease_ids(store, &w1, 1, now).await?;
        ensure(
            leased == [(id.clone(), attempt)],
            format!("attempt {leased:?}"),
        )?;
        let running = task_view(store, &id).await?.history.ok_or("history")?;
        let last = running.last().ok_or("an open attempt")?;
        ensure(
            last.attempt == attempt && last.outcome == "running" && last.finished_at.is_none(),
            format!("open attempt {last:?}"),
        )?;
        now += 10;
        let (reply, _) = report(store, &w1, vec![failed_with(&id, attempt, *kind)], now).await?;
        ensure(reply.accepted.len() == 1, "failure accepted")?;
        ensure(
            task_view(store, &id).await?.state == TaskState::Scheduled,
            "retry scheduled",
        )?;
        now += 3_600_000;
        ensure(store.promote_due(now).await?.0 == 1, "promoted")?;
    }
    // Attempt 4: the worker goes silent and the lease runs out.
    now += 10;
    ensure(
        lease_ids(store, &w1, 1, now).await? == [(id.clone(), 4)],
        "attempt 4",
    )?;
    now += 10 * TTL;
    let reaped = store.reap(now, TTL).await?;
    ensure(
        reaped.events.iter().any(|e| e.kind == "task.retrying"),
        "requeued",
    )?;
    // Attempt 5: the worker leaves.
    let w2 = join(store, "w2", now).await?;
    now += 10;
    ensure(
        lease_ids(store, &w2, 1, now).await? == [(id.clone(), 5)],
        "attempt 5",
    )?;
    now += 10;
    store.leave(&w2, now).await?.ok_or("w2")?;
    // Attempt 6 succeeds (the hand-back did not spend attempt 5 of 5).
    let w3 = join(store, "w3", now).await?;
    now += 10;
    ensure(
        lease_ids(store, &w3, 1, now).await? == [(id.clone(), 6)],
        "attempt 6",
    )?;
    let started6 = now;
    now += 10;
    report(store, &w3, vec![ok(&id, 6)], now).await?;

    let view = task_view(store, &id).await?;
    ensure(
        view.state == TaskState::Succeeded && view.attempt == 6,
        format!("{:?} on attempt {}", view.state, view.attempt),
    )?;
    ensure(view.error.is_none(), "a success clears the error")?;
    let history = view.history.ok_or("history")?;
    let got: Vec<(u32, &str, Option<&str>)> = history
        .iter()
        .map(|h| (h.attempt, h.outcome.as_str(), h.worker_id.as_deref()))
        .collect();
    let want = [
        (1, "failed", Some(w1.as_str())),
        (2, "timeout", Some(w1.as_str())),
        (3, "crash", Some(w1.as_str())),
        (4, "lost", Some(w1.as_str())),
        (5, "handed_back", Some(w2.as_str())),
        (6, "succeeded", Some(w3.as_str())),
    ];
    ensure(got == want, format!("history {got:?}"))?;
    let errors: Vec<Option<ErrorKind>> = history
        .iter()
        .map(|h| h.error.as_ref().map(|e| e.kind))
        .collect();
    ensure(
        errors
            == [
                Some(ErrorKind::Handler),
                Some(ErrorKind::Timeout),
                Some(ErrorKind::Crash),
                Some(ErrorKind::Lost),
                None,
                None,
            ],
        format!("errors {errors:?}"),
    )?;
    ensure(
        history.iter().all(|h| {
            h.started_at.is_some() && h.finished_at >= h.started_at && h.finished_at.is_some()
        }),
        "every attempt started and ended",
    )?;
    let last = history.last().ok_or("last")?;
    ensure(
        last.started_at == Some(brigade_core::from_ms(started6))
            && last.finished_at == Some(brigade_core::from_ms(now)),
        format!("last attempt times {last:?}"),
    )?;
    ensure(
        job_view(store, &sub.job.id).await?.state == brigade_api::JobState::Succeeded,
        "job succeeded",
    )?;
    Ok(())
}

/// A retryable failure that names its own delay (`retry_in_ms`) is retried
/// after that delay, not the task's backoff, within the same attempt budget.
pub async fn retry_in_ms_sets_the_retry_delay(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(1, 2), None, T0).await?;
    let id = ids_of(&sub)?[0].clone();
    let w = join(store, "w", T0).await?;
    let leased = store.lease(&w, 1, T0 + 1, TTL).await?.ok_or("w")?.0;
    ensure(leased.len() == 1, "leased")?;
    let asked = brigade_api::TaskResult {
        retry_in_ms: Some(7_000),
        ..failed(&id, 1, true)
    };
    report(store, &w, vec![asked], T0 + 10).await?;
    let view = store.task(&id).await?.ok_or("task")?;
    ensure(
        view.state == TaskState::Scheduled
            && view.run_at == Some(brigade_core::from_ms(T0 + 10 + 7_000)),
        format!(
            "scheduled for the worker's delay: {:?} {:?}",
            view.state, view.run_at
        ),
    )?;
    // The last attempt fails for good, whatever delay it asks for.
    store.promote_due(T0 + 10 + 7_000).await?;
    let leased = store.lease(&w, 1, T0 + 8_000, TTL).await?.ok_or("w")?.0;
    ensure(
        leased.len() == 1 && leased[0].attempt == 2,
        "second attempt",
    )?;
    let asked = brigade_api::TaskResult {
        retry_in_ms: Some(7_000),
        ..failed(&id, 2, true)
    };
    report(store, &w, vec![asked], T0 + 8_001).await?;
    let view = store.task(&id).await?.ok_or("task")?;
    ensure(
        view.state == TaskState::Failed,
        format!("failed after its budget: {:?}", view.state),
    )
}
