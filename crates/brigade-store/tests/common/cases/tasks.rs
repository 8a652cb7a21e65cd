//! Cancelling tasks and jobs, and retrying tasks by hand.

use std::sync::Arc;

use brigade_api::{ErrorKind, JobState, RejectionCode, TaskState};
use brigade_core::from_ms;
use brigade_store::{RetryOutcome, Store};

use crate::common::{
    LATER, T0, TestResult, beat, codes, ensure, failed, ids_of, job, job_view, job_with, join,
    kinds, lease_ids, ok, outcomes, report, task, task_view,
};

/// Cancelling a running task ends its attempt, names its worker in
/// `cancelled` (and in the worker's heartbeat reply) and refuses its late
/// result; a queued task is cancelled quietly; a finished one is left alone.
pub async fn cancel_task(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(3, 3), None, T0).await?;
    let ids = ids_of(&sub)?;
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let w = join(store, "w", T0).await?;
    ensure(
        lease_ids(store, &w, 1, T0).await? == [(a.clone(), 1)],
        "a runs",
    )?;

    let changes = store.cancel_task(a, T0 + 5).await?.ok_or("a known")?;
    ensure(
        changes.cancelled == [(w.clone(), a.clone())],
        format!("cancelled {:?}", changes.cancelled),
    )?;
    ensure(
        kinds(&changes) == ["task.cancelled"],
        format!("events {:?}", kinds(&changes)),
    )?;
    let view = task_view(store, a).await?;
    ensure(
        view.state == TaskState::Cancelled
            && view.finished_at == Some(from_ms(T0 + 5))
            && view.error.as_ref().map(|e| e.kind) == Some(ErrorKind::Cancelled),
        format!("a {view:?}"),
    )?;
    ensure(
        outcomes(store, a).await? == ["cancelled"],
        "the attempt ended cancelled",
    )?;
    let hb = store
        .heartbeat(&w, beat(&[a]), T0 + 6, crate::common::TTL)
        .await?
        .ok_or("w")?;
    ensure(hb.cancel == [a.clone()], "the heartbeat says cancel")?;
    let (reply, _) = report(store, &w, vec![ok(a, 1)], T0 + 7).await?;
    ensure(
        codes(&reply.rejected) == [(a.clone(), RejectionCode::NotRunning)]
            && reply.rejected[0].reason == "the task is cancelled",
        format!("late result {reply:?}"),
    )?;
    ensure(
        task_view(store, a).await?.state == TaskState::Cancelled,
        "still cancelled",
    )?;
    ensure(
        store.worker(&w).await?.map(|v| v.running) == Some(0),
        "the worker runs nothing",
    )?;

    let changes = store.cancel_task(b, T0 + 8).await?.ok_or("b known")?;
    ensure(
        changes.cancelled.is_empty() && kinds(&changes) == ["task.cancelled"],
        format!("queued task: {:?}", changes),
    )?;
    ensure(
        task_view(store, b)
            .await?
            .history
            .is_some_and(|h| h.is_empty()),
        "a task that never ran has no attempts",
    )?;
    let again = store.cancel_task(b, T0 + 9).await?.ok_or("b known")?;
    ensure(
        again.events.is_empty() && again.cancelled.is_empty(),
        "cancelling twice changes nothing",
    )?;
    ensure(
        store.cancel_task("nope", T0).await?.is_none(),
        "unknown task",
    )?;
    ensure(
        job_view(store, &sub.job.id).await?.finished_at.is_none(),
        "the job goes on",
    )?;

    ensure(
        lease_ids(store, &w, 5, T0 + 10).await? == [(c.clone(), 1)],
        "c runs",
    )?;
    report(store, &w, vec![ok(c, 1)], T0 + 11).await?;
    let changes = store.cancel_task(c, T0 + 12).await?.ok_or("c known")?;
    ensure(
        changes.events.is_empty(),
        "cancelling a finished task changes nothing",
    )?;
    ensure(
        task_view(store, c).await?.state == TaskState::Succeeded,
        "c stays succeeded",
    )?;
    ensure(
        job_view(store, &sub.job.id).await?.state == JobState::Cancelled,
        "two cancelled, one succeeded",
    )?;
    Ok(())
}

/// Cancelling a job cancels every unfinished task: running ones are named
/// with their workers in `cancelled`, scheduled ones never come due.
pub async fn cancel_job_cancels_running_tasks(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let mut later = task(3);
    later.run_at = Some(T0 + 60_000);
    let sub = store
        .submit(
            "owner",
            job_with(vec![task(3), task(3), task(3), task(3), later]),
            None,
            T0,
        )
        .await?;
    let ids = ids_of(&sub)?;
    let w1 = join(store, "w1", T0).await?;
    let w2 = join(store, "w2", T0).await?;
    ensure(
        lease_ids(store, &w1, 1, T0).await? == [(ids[0].clone(), 1)],
        "w1",
    )?;
    ensure(
        lease_ids(store, &w2, 1, T0).await? == [(ids[1].clone(), 1)],
        "w2",
    )?;
    ensure(
        lease_ids(store, &w2, 1, T0).await? == [(ids[2].clone(), 1)],
        "w2 again",
    )?;
    report(store, &w2, vec![ok(&ids[2], 1)], T0 + 1).await?;

    let changes = store
        .cancel_job(&sub.job.id, T0 + 9)
        .await?
        .ok_or("job known")?;
    let mut cancelled = changes.cancelled.clone();
    cancelled.sort();
    let mut want = vec![(w1.clone(), ids[0].clone()), (w2.clone(), ids[1].clone())];
    want.sort();
    ensure(cancelled == want, format!("cancelled {cancelled:?}"))?;
    let cancelled_events: Vec<&str> = changes
        .events
        .iter()
        .filter(|e| e.kind == "task.cancelled")
        .filter_map(|e| e.task_id.as_deref())
        .collect();
    ensure(
        cancelled_events.len() == 4 && !cancelled_events.contains(&ids[2].as_str()),
        format!("four unfinished tasks cancelled: {cancelled_events:?}"),
    )?;
    ensure(
        kinds(&changes).last() == Some(&"job.finished"),
        "the job is over",
    )?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.state == JobState::Cancelled
            && view.finished_at == Some(from_ms(T0 + 9))
            && view.progress.cancelled == 4
            && view.progress.succeeded == 1,
        format!("job {view:?}"),
    )?;
    for (i, id) in ids.iter().enumerate() {
        let want = if i == 2 {
            TaskState::Succeeded
        } else {
            TaskState::Cancelled
        };
        ensure(
            task_view(store, id).await?.state == want,
            format!("task {i}"),
        )?;
    }
    let hb = store
        .heartbeat(&w1, beat(&[&ids[0]]), T0 + 10, crate::common::TTL)
        .await?
        .ok_or("w1")?;
    ensure(hb.cancel == [ids[0].clone()], "w1 is told to cancel")?;
    ensure(
        store.promote_due(LATER).await? == (0, None),
        "a cancelled scheduled task never comes due",
    )?;
    let again = store
        .cancel_job(&sub.job.id, T0 + 11)
        .await?
        .ok_or("still known")?;
    ensure(
        again.events.is_empty() && again.cancelled.is_empty(),
        "cancelling a finished job changes nothing",
    )?;
    ensure(store.cancel_job("nope", T0).await?.is_none(), "unknown job")?;
    Ok(())
}

/// Only failed and cancelled tasks can be retried: back to the queue with a
/// fresh attempt budget, history kept, the job reopened until it ends again.
pub async fn retry_task(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(4, 2), None, T0).await?;
    let ids = ids_of(&sub)?;
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let w = join(store, "w", T0).await?;
    ensure(lease_ids(store, &w, 2, T0).await?.len() == 2, "a and b run")?;
    // a fails twice: its budget of two is spent.
    report(store, &w, vec![failed(a, 1, true), ok(b, 1)], T0 + 1).await?;
    store.promote_due(LATER).await?;
    ensure(
        lease_ids(store, &w, 1, LATER).await? == [(a.clone(), 2)],
        "a again",
    )?;
    report(store, &w, vec![failed(a, 2, true)], LATER + 1).await?;
    ensure(
        task_view(store, a).await?.state == TaskState::Failed,
        "a failed for good",
    )?;
    store.cancel_task(c, LATER + 2).await?.ok_or("c")?;
    ensure(
        lease_ids(store, &w, 1, LATER + 3).await? == [(d.clone(), 1)],
        "d runs",
    )?;

    for (id, state) in [(b, TaskState::Succeeded), (d, TaskState::Running)] {
        match store.retry_task(id, LATER + 4).await? {
            RetryOutcome::NotRetryable(s) if s == state => {}
            other => return Err(format!("retry of a {state:?} task: {other:?}").into()),
        }
    }
    ensure(
        matches!(
            store.retry_task("nope", LATER).await?,
            RetryOutcome::NotFound
        ),
        "unknown task",
    )?;
    report(store, &w, vec![ok(d, 1)], LATER + 5).await?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.state == JobState::Failed && view.finished_at.is_some(),
        format!("the job ended {view:?}"),
    )?;

    let now = LATER + 10;
    match store.retry_task(a, now).await? {
        RetryOutcome::Retried(view, changes) => {
            ensure(
                view.state == TaskState::Queued && view.id == *a && view.finished_at.is_none(),
                format!("retried {view:?}"),
            )?;
            ensure(changes.ready, "waiting workers should look")?;
        }
        other => return Err(format!("retry of a failed task: {other:?}").into()),
    }
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.state == JobState::Running && view.finished_at.is_none(),
        format!("the job is reopened: {view:?}"),
    )?;
    ensure(
        matches!(
            store.retry_task(a, now).await?,
            RetryOutcome::NotRetryable(TaskState::Queued)
        ),
        "a queued task cannot be retried",
    )?;
    match store.retry_task(c, now).await? {
        RetryOutcome::Retried(view, _) => {
            ensure(view.state == TaskState::Queued, "cancelled task retried")?;
        }
        other => return Err(format!("retry of a cancelled task: {other:?}").into()),
    }
    ensure(store.has_queued().await?, "queued again")?;

    // The fresh budget: two more tries for a.
    let leased = lease_ids(store, &w, 1, now + 1).await?;
    ensure(
        leased == [(a.clone(), 3)],
        format!("a's third attempt {leased:?}"),
    )?;
    report(store, &w, vec![failed(a, 3, true)], now + 2).await?;
    ensure(
        task_view(store, a).await?.state == TaskState::Scheduled,
        "the first try of the fresh budget is retried",
    )?;
    store.promote_due(now + 3_600_000).await?;
    let leased = lease_ids(store, &w, 2, now + 3_600_001).await?;
    ensure(
        leased == [(a.clone(), 4), (c.clone(), 1)],
        format!("leased {leased:?}"),
    )?;
    let (_, changes) = report(
        store,
        &w,
        vec![failed(a, 4, true), ok(c, 1)],
        now + 3_600_002,
    )
    .await?;
    ensure(
        task_view(store, a).await?.state == TaskState::Failed,
        "the second try of the fresh budget is the last",
    )?;
    ensure(
        outcomes(store, a).await? == ["failed", "failed", "failed", "failed"],
        "every attempt kept in the history",
    )?;
    ensure(
        kinds(&changes).last() == Some(&"job.finished"),
        format!("the job ends again: {:?}", kinds(&changes)),
    )?;
    ensure(
        job_view(store, &sub.job.id).await?.state == JobState::Failed,
        "failed again",
    )?;
    Ok(())
}

/// Retrying the tasks of a cancelled job takes the cancel back: once they
/// succeed the job has succeeded.
pub async fn retry_takes_back_a_job_cancel(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(2, 1), None, T0).await?;
    let ids = ids_of(&sub)?;
    store.cancel_job(&sub.job.id, T0 + 1).await?.ok_or("job")?;
    ensure(
        job_view(store, &sub.job.id).await?.state == JobState::Cancelled,
        "cancelled",
    )?;
    for id in &ids {
        ensure(
            matches!(
                store.retry_task(id, T0 + 2).await?,
                RetryOutcome::Retried(..)
            ),
            "retried",
        )?;
    }
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.state == JobState::Queued && view.finished_at.is_none(),
        format!("reopened, nothing started: {view:?}"),
    )?;
    let w = join(store, "w", T0).await?;
    let leased = lease_ids(store, &w, 2, T0 + 3).await?;
    ensure(
        leased.iter().all(|(_, n)| *n == 1),
        format!("first real attempts {leased:?}"),
    )?;
    let results = leased.iter().map(|(id, n)| ok(id, *n)).collect();
    let (_, changes) = report(store, &w, results, T0 + 4).await?;
    ensure(
        kinds(&changes).last() == Some(&"job.finished"),
        format!("events {:?}", kinds(&changes)),
    )?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.state == JobState::Succeeded && view.finished_at == Some(from_ms(T0 + 4)),
        format!("succeeded {view:?}"),
    )?;
    Ok(())
}
