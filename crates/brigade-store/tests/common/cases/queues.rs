//! Queues: counts per state, workers per queue, pausing and resuming.

use std::sync::Arc;

use brigade_api::{QueueView, TaskState};
use brigade_store::Store;

use crate::common::{
    T0, TestResult, ensure, ids_of, job_with, join_to, lease_ids, ok, report, task_in, task_view,
};

async fn queue(store: &dyn Store, name: &str) -> TestResult<QueueView> {
    Ok(store
        .queues()
        .await?
        .into_iter()
        .find(|q| q.name == name)
        .ok_or_else(|| format!("queue {name} not listed"))?)
}

fn counts(q: &QueueView) -> (u64, u64, u64, u64, bool) {
    (q.queued, q.scheduled, q.running, q.workers, q.paused)
}

/// Each queue counts its queued, scheduled and running tasks and the
/// workers (active or draining) that serve it; listed by name.
pub async fn queues_count_tasks_and_workers(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let mut later = task_in("alpha", 1);
    later.run_at = Some(T0 + 60_000);
    let sub = store
        .submit(
            "owner",
            job_with(vec![
                task_in("alpha", 1),
                later,
                task_in("beta", 1),
                task_in("beta", 1),
                task_in("beta", 1),
            ]),
            None,
            T0,
        )
        .await?;
    let ids = ids_of(&sub)?;
    let only_alpha = join_to(store, "owner", "a", &["alpha"], T0).await?;
    let both = join_to(store, "owner", "ab", &["alpha", "beta"], T0).await?;
    let gone = join_to(store, "owner", "b", &["beta"], T0).await?;
    let draining = join_to(store, "owner", "d", &["beta"], T0).await?;
    store.leave(&gone, T0).await?.ok_or("gone")?;
    store.drain_worker(&draining).await?.ok_or("draining")?;

    ensure(
        lease_ids(store, &only_alpha, 5, T0 + 1).await? == [(ids[0].clone(), 1)],
        "alpha's queued task",
    )?;
    ensure(
        lease_ids(store, &both, 1, T0 + 1).await? == [(ids[2].clone(), 1)],
        "beta's first",
    )?;
    let listed: Vec<String> = store.queues().await?.into_iter().map(|q| q.name).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    ensure(listed == sorted, format!("by name: {listed:?}"))?;
    ensure(
        listed.iter().any(|q| q == "alpha") && listed.iter().any(|q| q == "beta"),
        "the tasks' queues are listed",
    )?;
    let alpha = queue(store, "alpha").await?;
    ensure(
        counts(&alpha) == (0, 1, 1, 2, false),
        format!("alpha {alpha:?}"),
    )?;
    let beta = queue(store, "beta").await?;
    ensure(
        counts(&beta) == (2, 0, 1, 2, false),
        format!("beta (a worker left, one drains) {beta:?}"),
    )?;

    report(store, &only_alpha, vec![ok(&ids[0], 1)], T0 + 2).await?;
    let alpha = queue(store, "alpha").await?;
    ensure(
        counts(&alpha) == (0, 1, 0, 2, false),
        format!("finished tasks are not counted: {alpha:?}"),
    )?;
    store.promote_due(T0 + 60_000).await?;
    let alpha = queue(store, "alpha").await?;
    ensure(
        counts(&alpha) == (1, 0, 0, 2, false),
        format!("promoted: {alpha:?}"),
    )?;
    // A worker's queue is listed once it joins, even with no tasks.
    join_to(store, "owner", "g", &["gamma"], T0).await?;
    let gamma = queue(store, "gamma").await?;
    ensure(
        counts(&gamma) == (0, 0, 0, 1, false),
        format!("gamma {gamma:?}"),
    )?;
    Ok(())
}

/// A paused queue's tasks are not leased (those running finish); resuming
/// makes them leasable; pausing an unknown queue creates it.
pub async fn paused_queue_is_not_leased(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store
        .submit(
            "owner",
            job_with(vec![
                task_in("slow", 1),
                task_in("slow", 1),
                task_in("slow", 1),
                task_in("fast", 1),
            ]),
            None,
            T0,
        )
        .await?;
    let ids = ids_of(&sub)?;
    let w = join_to(store, "owner", "w", &["slow", "fast"], T0).await?;
    ensure(
        lease_ids(store, &w, 1, T0).await? == [(ids[0].clone(), 1)],
        "one slow task runs",
    )?;
    let view = store.set_queue_paused("slow", true).await?;
    ensure(
        view.name == "slow" && counts(&view) == (2, 0, 1, 1, true),
        format!("paused {view:?}"),
    )?;
    ensure(
        queue(store, "slow").await?.paused && !queue(store, "fast").await?.paused,
        "only slow is paused",
    )?;
    ensure(
        lease_ids(store, &w, 10, T0 + 1).await? == [(ids[3].clone(), 1)],
        "only the other queue's task is leased",
    )?;
    ensure(
        lease_ids(store, &w, 10, T0 + 1).await?.is_empty(),
        "nothing from the paused queue",
    )?;
    let (reply, _) = report(store, &w, vec![ok(&ids[0], 1)], T0 + 2).await?;
    ensure(
        reply.accepted == [ids[0].clone()],
        "a task of a paused queue that was running finishes",
    )?;
    // Pausing again changes nothing.
    ensure(
        store.set_queue_paused("slow", true).await?.paused,
        "still paused",
    )?;
    ensure(
        lease_ids(store, &w, 10, T0 + 3).await?.is_empty(),
        "still nothing",
    )?;

    let view = store.set_queue_paused("slow", false).await?;
    ensure(
        !view.paused && view.queued == 2,
        format!("resumed {view:?}"),
    )?;
    let leased = lease_ids(store, &w, 10, T0 + 4).await?;
    ensure(
        leased == [(ids[1].clone(), 1), (ids[2].clone(), 1)],
        format!("resumed queue leased: {leased:?}"),
    )?;
    ensure(
        task_view(store, &ids[1]).await?.state == TaskState::Running,
        "running",
    )?;

    let fresh = store.set_queue_paused("brand-new", true).await?;
    ensure(
        fresh.name == "brand-new" && counts(&fresh) == (0, 0, 0, 0, true),
        format!("created paused {fresh:?}"),
    )?;
    ensure(queue(store, "brand-new").await?.paused, "listed paused")?;
    // A task submitted to a paused queue waits for it.
    let sub = store
        .submit(
            "owner",
            job_with(vec![task_in("brand-new", 1)]),
            None,
            T0 + 5,
        )
        .await?;
    let late = ids_of(&sub)?.remove(0);
    let v = join_to(store, "owner", "v", &["brand-new"], T0 + 5).await?;
    ensure(
        lease_ids(store, &v, 10, T0 + 6).await?.is_empty(),
        "a new task of a paused queue is not leased",
    )?;
    ensure(
        !store.set_queue_paused("brand-new", false).await?.paused,
        "resumed",
    )?;
    ensure(
        lease_ids(store, &v, 10, T0 + 7).await? == [(late, 1)],
        "leased once resumed",
    )?;
    Ok(())
}
