//! Submitting jobs: idempotency keys, scheduled tasks, `has_queued`.

use std::sync::Arc;

use brigade_api::{JobState, TaskState};
use brigade_core::from_ms;
use brigade_store::{Idempotency, JobFilter, Store, StoreError};

use crate::common::{
    T0, TestResult, ensure, ids_of, job, job_view, job_with, join, kinds, lease_ids, ok, report,
    task, task_view,
};

fn key(key: &str, hash: &str) -> Option<Idempotency> {
    Some(Idempotency {
        key: key.into(),
        hash: hash.into(),
    })
}

/// The same key with the same body returns the first job (created = false,
/// nothing new stored, no events); the same key with another body is a
/// conflict; keys are per owner; without a key every submit is a new job.
pub async fn idempotent_submit(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let first = store
        .submit("alice", job(2, 3), key("k", "body-a"), T0)
        .await?;
    ensure(first.created, "the first submit creates")?;
    ensure(kinds(&first.changes) == ["job.created"], "job.created")?;
    let again = store
        .submit("alice", job(2, 3), key("k", "body-a"), T0 + 1)
        .await?;
    ensure(!again.created, "the replay is not created")?;
    ensure(
        again.job.id == first.job.id && again.job.task_ids == first.job.task_ids,
        format!("replay returned {:?}, first {:?}", again.job, first.job),
    )?;
    ensure(
        again.changes.events.is_empty() && !again.changes.ready,
        format!("a replay changes nothing: {:?}", again.changes),
    )?;
    let all = store.jobs(&JobFilter::default(), 10, None).await?;
    ensure(
        all.items.len() == 1,
        format!("{} jobs stored", all.items.len()),
    )?;

    let clash = store
        .submit("alice", job(2, 3), key("k", "body-b"), T0 + 2)
        .await;
    ensure(
        matches!(clash, Err(StoreError::IdempotencyConflict)),
        format!("same key, other body: {clash:?}"),
    )?;
    let all = store.jobs(&JobFilter::default(), 10, None).await?;
    ensure(all.items.len() == 1, "a conflict stores nothing")?;

    // Another owner's key of the same name is theirs.
    let bob = store
        .submit("bob", job(1, 3), key("k", "body-b"), T0 + 3)
        .await?;
    ensure(
        bob.created && bob.job.id != first.job.id,
        "another owner, same key: a new job",
    )?;
    // No key: each submit is a job of its own.
    let a = store.submit("alice", job(1, 3), None, T0 + 4).await?;
    let b = store.submit("alice", job(1, 3), None, T0 + 4).await?;
    ensure(a.created && b.created && a.job.id != b.job.id, "no key")?;

    // The replay of a job that has since finished shows it as it is now.
    let w = join(store, "w", T0).await?;
    let leased = lease_ids(store, &w, 10, T0 + 5).await?;
    let results = leased.iter().map(|(id, n)| ok(id, *n)).collect();
    report(store, &w, results, T0 + 6).await?;
    let late = store
        .submit("alice", job(2, 3), key("k", "body-a"), T0 + 7)
        .await?;
    ensure(
        !late.created && late.job.id == first.job.id && late.job.state == JobState::Succeeded,
        format!("late replay {:?}", late.job),
    )?;
    Ok(())
}

/// A task whose `run_at` is in the future waits as `scheduled` (not leased,
/// not counted by `has_queued`) until `promote_due` reaches its time; one
/// whose `run_at` has passed is queued at once.
pub async fn scheduled_tasks_wait_for_promote_due(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let due = T0 + 60_000;
    let mut later = task(1);
    later.run_at = Some(due);
    let mut past = task(1);
    past.run_at = Some(T0 - 1);
    let sub = store
        .submit("owner", job_with(vec![later, past]), None, T0)
        .await?;
    ensure(
        sub.changes.scheduled && sub.changes.ready,
        format!("flags {:?}", sub.changes),
    )?;
    ensure(
        sub.job.progress.scheduled == 1 && sub.job.progress.queued == 1,
        format!("progress {:?}", sub.job.progress),
    )?;
    let ids = ids_of(&sub)?;
    let view = task_view(store, &ids[0]).await?;
    ensure(
        view.state == TaskState::Scheduled && view.run_at == Some(from_ms(due)),
        format!("scheduled task {:?} at {:?}", view.state, view.run_at),
    )?;
    ensure(
        task_view(store, &ids[1]).await?.state == TaskState::Queued,
        "a run_at in the past is queued",
    )?;

    let w = join(store, "w", T0).await?;
    let leased = lease_ids(store, &w, 10, T0 + 1).await?;
    ensure(
        leased == [(ids[1].clone(), 1)],
        format!("only the due task leased: {leased:?}"),
    )?;
    report(store, &w, vec![ok(&ids[1], 1)], T0 + 2).await?;
    ensure(!store.has_queued().await?, "a scheduled task is not queued")?;
    ensure(
        job_view(store, &sub.job.id).await?.state == JobState::Running,
        "half done",
    )?;

    ensure(
        store.promote_due(due - 1).await? == (0, Some(due)),
        "not yet due: nothing moves, the next is named",
    )?;
    ensure(
        lease_ids(store, &w, 10, due - 1).await?.is_empty(),
        "not leased before it is due",
    )?;
    ensure(
        store.promote_due(due).await? == (1, None),
        "due: one moved, none left",
    )?;
    ensure(
        task_view(store, &ids[0]).await?.state == TaskState::Queued,
        "promoted to queued",
    )?;
    ensure(store.has_queued().await?, "promoted counts as queued")?;
    ensure(
        store.promote_due(due + 1).await? == (0, None),
        "promoting again moves nothing",
    )?;
    let (leased, changes) = store
        .lease(&w, 10, due + 1, crate::common::TTL)
        .await?
        .ok_or("w")?;
    ensure(
        leased.len() == 1 && leased[0].id == ids[0] && leased[0].attempt == 1,
        "the promoted task is leased on its first attempt",
    )?;
    // It was ready from its run_at, not from the submit.
    ensure(
        changes.timings.len() == 1 && changes.timings[0].seconds == 0.001,
        format!("queued for {:?}", changes.timings),
    )?;
    report(store, &w, vec![ok(&ids[0], 1)], due + 2).await?;
    ensure(
        job_view(store, &sub.job.id).await?.state == JobState::Succeeded,
        "done",
    )?;

    // A job of scheduled tasks only wakes the promoter, not the workers.
    let mut only = task(1);
    only.run_at = Some(due + 10_000);
    let sub = store
        .submit("owner", job_with(vec![only]), None, due + 3)
        .await?;
    ensure(
        sub.changes.scheduled && !sub.changes.ready,
        format!("flags {:?}", sub.changes),
    )?;
    ensure(sub.job.state == JobState::Queued, "a waiting job is queued")?;
    Ok(())
}

/// `has_queued` is true exactly while some task is queued.
pub async fn has_queued(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    ensure(
        !store.has_queued().await?,
        "an empty store has nothing queued",
    )?;
    store.submit("owner", job(2, 1), None, T0).await?;
    ensure(store.has_queued().await?, "queued after a submit")?;
    let w = join(store, "w", T0).await?;
    ensure(lease_ids(store, &w, 1, T0).await?.len() == 1, "leased one")?;
    ensure(store.has_queued().await?, "one is still queued")?;
    ensure(
        lease_ids(store, &w, 1, T0).await?.len() == 1,
        "leased the other",
    )?;
    ensure(!store.has_queued().await?, "running tasks are not queued")?;
    Ok(())
}

/// `promote_due` moves exactly the tasks that are due and names the next
/// one's time; a retryable failure waits out the task's backoff (1 s, then
/// 2 s) as a scheduled task.
pub async fn promote_due_moves_what_is_due(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let at = |t: i64| {
        let mut x = task(3);
        x.run_at = Some(t);
        x
    };
    let (t1, t2, t3) = (T0 + 1_000, T0 + 2_000, T0 + 3_000);
    let sub = store
        .submit("owner", job_with(vec![at(t3), at(t1)]), None, T0)
        .await?;
    let ids = ids_of(&sub)?;
    let other = store
        .submit("owner", job_with(vec![at(t2)]), None, T0)
        .await?;
    let other_id = ids_of(&other)?.remove(0);
    ensure(store.promote_due(T0).await? == (0, Some(t1)), "nothing yet")?;
    ensure(
        store.promote_due(t2).await? == (2, Some(t3)),
        "the first two, in both jobs",
    )?;
    ensure(
        task_view(store, &ids[1]).await?.state == TaskState::Queued
            && task_view(store, &other_id).await?.state == TaskState::Queued
            && task_view(store, &ids[0]).await?.state == TaskState::Scheduled,
        "exactly the due ones moved",
    )?;

    // A retry after a failure: scheduled for now + backoff.
    let w = join(store, "w", T0).await?;
    let leased = lease_ids(store, &w, 1, t2).await?;
    ensure(leased == [(ids[1].clone(), 1)], format!("{leased:?}"))?;
    let now = t2 + 10;
    let (_, changes) = report(
        store,
        &w,
        vec![crate::common::failed(&ids[1], 1, true)],
        now,
    )
    .await?;
    ensure(changes.scheduled, "the promoter should look")?;
    let view = task_view(store, &ids[1]).await?;
    ensure(
        view.state == TaskState::Scheduled && view.run_at == Some(from_ms(now + 1_000)),
        format!("retry at {:?}", view.run_at),
    )?;
    ensure(
        store.promote_due(t3).await? == (1, Some(now + 1_000)),
        "t3 is due; the retry is next",
    )?;
    ensure(
        store.promote_due(now + 999).await? == (0, Some(now + 1_000)),
        "the backoff is not over",
    )?;
    ensure(
        store.promote_due(now + 1_000).await? == (1, None),
        "retry due",
    )?;
    // The second failure waits twice as long.
    let leased = lease_ids(store, &w, 10, now + 1_000).await?;
    ensure(
        leased.iter().any(|(id, n)| *id == ids[1] && *n == 2),
        format!("the retry is leased: {leased:?}"),
    )?;
    let later = now + 1_010;
    report(
        store,
        &w,
        vec![crate::common::failed(&ids[1], 2, true)],
        later,
    )
    .await?;
    ensure(
        task_view(store, &ids[1]).await?.run_at == Some(from_ms(later + 2_000)),
        "second backoff",
    )?;
    Ok(())
}

/// A submit with waiting workers leases for them in its own transaction:
/// each takes at most what it asked and what the job queued, in order; the
/// tasks are running with attempt 1 and their `task.started` events follow
/// `job.created`; `ready` says whether any task is left queued. An unknown
/// worker gets `None`, a replay (same idempotency key) leases nothing, and
/// scheduled tasks are not handed off.
pub async fn submit_hands_tasks_to_waiting_workers(store: Arc<dyn Store>) -> TestResult {
    use brigade_store::HandOff;
    let store = &*store;
    let ask = |id: &str, max| HandOff {
        worker_id: id.into(),
        max,
    };
    let (a, b) = (join(store, "a", T0).await?, join(store, "b", T0).await?);
    let sub = store
        .submit_and_lease(
            "alice",
            job(3, 3),
            key("h", "x"),
            T0 + 1,
            crate::common::TTL,
            vec![ask(&a, 2), ask("nobody", 5), ask(&b, 5)],
        )
        .await?;
    ensure(sub.created, "created")?;
    let counts: Vec<Option<usize>> = sub
        .handed
        .iter()
        .map(|h| h.as_ref().map(Vec::len))
        .collect();
    ensure(
        counts == [Some(2), None, Some(1)],
        format!("handed {counts:?}"),
    )?;
    ensure(!sub.changes.ready, "nothing is left queued")?;
    let k = kinds(&sub.changes);
    ensure(
        k.first() == Some(&"job.created")
            && k.iter().filter(|k| **k == "task.started").count() == 3,
        format!("events {k:?}"),
    )?;
    for (worker, tasks) in [(&a, &sub.handed[0]), (&b, &sub.handed[2])] {
        for t in tasks.as_deref().unwrap_or_default() {
            ensure(t.attempt == 1, format!("attempt {}", t.attempt))?;
            let view = task_view(store, &t.id).await?;
            ensure(
                view.state == TaskState::Running
                    && view.worker_id.as_deref() == Some(worker.as_str()),
                format!("{} is {:?} on {:?}", t.id, view.state, view.worker_id),
            )?;
        }
    }

    let again = store
        .submit_and_lease(
            "alice",
            job(3, 3),
            key("h", "x"),
            T0 + 2,
            crate::common::TTL,
            vec![ask(&a, 5)],
        )
        .await?;
    ensure(
        !again.created && again.handed.is_empty(),
        "a replay hands nothing",
    )?;

    let mut later = task(3);
    later.run_at = Some(T0 + 60_000);
    let mut now_and_later = job_with(vec![later, task(3)]);
    now_and_later.name = Some("mixed".into());
    let mixed = store
        .submit_and_lease(
            "alice",
            now_and_later,
            None,
            T0 + 3,
            crate::common::TTL,
            vec![ask(&a, 5)],
        )
        .await?;
    let ids = ids_of(&mixed)?;
    let handed: Vec<&str> = mixed.handed[0]
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|t| t.id.as_str())
        .collect();
    ensure(
        handed == [ids[1].as_str()],
        format!("handed {handed:?} of {ids:?}"),
    )?;
    ensure(
        task_view(store, &ids[0]).await?.state == TaskState::Scheduled,
        "the scheduled task waits",
    )?;
    Ok(())
}
