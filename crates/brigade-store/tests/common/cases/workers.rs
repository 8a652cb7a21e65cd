//! Workers: joining and listing, leaving (running tasks handed back),
//! draining.

use std::collections::BTreeMap;
use std::sync::Arc;

use brigade_api::{Load, TaskState, WorkerState};
use brigade_core::from_ms;
use brigade_store::Store;

use crate::common::{
    LATER, T0, TTL, TestResult, beat, ensure, failed, ids_of, job, join, kinds, lease_ids, ok,
    outcomes, report, task_view, worker_join,
};

/// A worker is stored as it joined; `workers` lists the most recent first;
/// heartbeats record its load and when it was heard from; unknown ids get `None`.
pub async fn workers_join_and_list(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let mut join_a = worker_join("a", &["default", "other"]);
    join_a.labels = BTreeMap::from([("gpu".to_owned(), "yes".to_owned())]);
    join_a.capacity = 3;
    let (a, changes) = store.join_worker("owner", join_a.clone(), T0).await?;
    ensure(kinds(&changes) == ["worker.joined"], "worker.joined")?;
    ensure(
        changes.events[0].worker_id.as_deref() == Some(a.id.as_str()),
        "the event names the worker",
    )?;
    let (b, _) = store
        .join_worker("owner", worker_join("b", &[]), T0 + 1)
        .await?;
    ensure(a.id != b.id, "ids differ")?;
    ensure(
        b.queues == ["default"],
        format!("no queues means default: {:?}", b.queues),
    )?;

    let stored = store.worker(&a.id).await?.ok_or("a")?;
    ensure(
        stored.name == "a"
            && stored.hostname == "a.host"
            && stored.queues == ["default", "other"]
            && stored.kinds == ["echo"]
            && stored.labels == join_a.labels
            && stored.capacity == 3
            && stored.version == "test"
            && stored.state == WorkerState::Active
            && stored.running == 0
            && stored.joined_at == from_ms(T0)
            && stored.last_seen_at == from_ms(T0),
        format!("stored {stored:?}"),
    )?;
    let listed: Vec<String> = store.workers().await?.into_iter().map(|w| w.id).collect();
    ensure(listed == [b.id.clone(), a.id.clone()], "most recent first")?;

    store.submit("owner", job(2, 3), None, T0).await?;
    let leased = lease_ids(store, &a.id, 2, T0 + 2).await?;
    let hb = brigade_api::Heartbeat {
        running: leased.iter().map(|(id, _)| id.clone()).collect(),
        load: Load {
            cpu: 0.5,
            memory: 0.25,
            running: 2,
            capacity: 3,
        },
    };
    let reply = store.heartbeat(&a.id, hb, T0 + 5, TTL).await?.ok_or("a")?;
    ensure(
        reply.cancel.is_empty() && !reply.drain,
        format!("{reply:?}"),
    )?;
    let stored = store.worker(&a.id).await?.ok_or("a")?;
    ensure(
        stored.running == 2
            && stored.last_seen_at == from_ms(T0 + 5)
            && stored.load.cpu == 0.5
            && stored.load.running == 2,
        format!("after a heartbeat {stored:?}"),
    )?;
    let listed = store.workers().await?;
    ensure(
        listed.iter().find(|w| w.id == a.id).map(|w| w.running) == Some(2),
        "the list counts running tasks",
    )?;
    ensure(store.worker("nope").await?.is_none(), "unknown worker")?;
    ensure(
        store.heartbeat("nope", beat(&[]), T0, TTL).await?.is_none(),
        "an unknown worker's heartbeat",
    )?;
    ensure(
        store.lease("nope", 1, T0, TTL).await?.is_none(),
        "an unknown worker's lease",
    )?;
    Ok(())
}

/// A worker that leaves hands its running tasks back at once, without
/// spending an attempt (history: `handed_back`); it leases nothing more and
/// its late results are refused.
pub async fn leave_hands_tasks_back(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    // Two attempts each: had the hand-back spent one, the next failure would be final.
    let sub = store.submit("owner", job(2, 2), None, T0).await?;
    let ids = ids_of(&sub)?;
    let w1 = join(store, "w1", T0).await?;
    ensure(
        lease_ids(store, &w1, 2, T0).await?.len() == 2,
        "w1 runs both",
    )?;

    let changes = store.leave(&w1, T0 + 5).await?.ok_or("w1 known")?;
    ensure(
        kinds(&changes) == ["task.retrying", "task.retrying", "worker.left"],
        format!("events {:?}", kinds(&changes)),
    )?;
    ensure(changes.ready, "waiting workers should look")?;
    for id in &ids {
        let t = task_view(store, id).await?;
        ensure(
            t.state == TaskState::Queued,
            format!("{id} is {:?}", t.state),
        )?;
        let history = t.history.ok_or("history")?;
        ensure(
            history.len() == 1
                && history[0].outcome == "handed_back"
                && history[0].finished_at == Some(from_ms(T0 + 5))
                && history[0].error.is_none(),
            format!("history {history:?}"),
        )?;
    }
    let view = store.worker(&w1).await?.ok_or("w1 listed")?;
    ensure(
        view.state == WorkerState::Left && view.running == 0,
        format!("w1 {view:?}"),
    )?;
    // A worker that left is unknown to the protocol (404: join again).
    ensure(
        store.lease(&w1, 10, T0 + 6, TTL).await?.is_none(),
        "a worker that left is told it is unknown when it leases",
    )?;
    ensure(
        store
            .report(&w1, vec![ok(&ids[0], 1)], T0 + 6)
            .await?
            .is_none(),
        "… and when it reports",
    )?;
    ensure(
        store
            .heartbeat(&w1, beat(&[&ids[0]]), T0 + 7, TTL)
            .await?
            .is_none(),
        "… and when it heartbeats",
    )?;
    ensure(
        store.worker(&w1).await?.map(|w| w.state) == Some(WorkerState::Left),
        "a heartbeat does not bring it back",
    )?;
    let reaped = store.reap(LATER, TTL).await?;
    ensure(
        !reaped
            .events
            .iter()
            .any(|e| e.worker_id.as_deref() == Some(w1.as_str())),
        "a worker that left is not lost",
    )?;

    // Another worker takes them over; the budget is whole.
    let w2 = join(store, "w2", LATER).await?;
    let leased = lease_ids(store, &w2, 2, LATER).await?;
    ensure(
        leased.iter().all(|(_, n)| *n == 2),
        format!("attempt numbers go on: {leased:?}"),
    )?;
    report(store, &w2, vec![failed(&ids[0], 2, true)], LATER + 1).await?;
    ensure(
        task_view(store, &ids[0]).await?.state == TaskState::Scheduled,
        "the hand-back spent no attempt: one of two tries left",
    )?;
    report(store, &w2, vec![ok(&ids[1], 2)], LATER + 1).await?;
    ensure(
        outcomes(store, &ids[1]).await? == ["handed_back", "succeeded"],
        "history of the other",
    )?;
    ensure(
        store.leave("nope", T0).await?.is_none(),
        "an unknown worker cannot leave",
    )?;
    // Leaving with nothing running.
    let changes = store.leave(&w2, LATER + 2).await?.ok_or("w2")?;
    ensure(
        kinds(&changes) == ["worker.left"] && !changes.ready,
        format!("idle leave {:?}", kinds(&changes)),
    )?;
    Ok(())
}

/// A draining worker finishes what it runs (heartbeats extend, results
/// count) but leases nothing; other workers lease on.
pub async fn drain_worker_stops_leasing(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(2, 3), None, T0).await?;
    let ids = ids_of(&sub)?;
    let w = join(store, "w", T0).await?;
    ensure(
        lease_ids(store, &w, 1, T0).await? == [(ids[0].clone(), 1)],
        "w runs the first",
    )?;
    let view = store.drain_worker(&w).await?.ok_or("w")?;
    ensure(
        view.state == WorkerState::Draining && view.running == 1,
        format!("draining {view:?}"),
    )?;
    ensure(
        lease_ids(store, &w, 10, T0 + 1).await?.is_empty(),
        "a draining worker leases nothing",
    )?;
    ensure(
        task_view(store, &ids[1]).await?.state == TaskState::Queued,
        "the other task waits",
    )?;
    let hb = store
        .heartbeat(&w, beat(&[&ids[0]]), T0 + TTL / 2, TTL)
        .await?
        .ok_or("w")?;
    ensure(
        hb.drain && hb.cancel.is_empty(),
        format!("heartbeat {hb:?}"),
    )?;
    // The heartbeat extended the lease: a reap after the first lease ran out keeps it.
    store.reap(T0 + TTL + 1, 10 * TTL).await?;
    ensure(
        task_view(store, &ids[0]).await?.state == TaskState::Running,
        "its lease was extended",
    )?;
    let (reply, _) = report(store, &w, vec![ok(&ids[0], 1)], T0 + TTL + 2).await?;
    ensure(reply.accepted == [ids[0].clone()], "its result counts")?;
    let again = store.drain_worker(&w).await?.ok_or("w")?;
    ensure(again.state == WorkerState::Draining, "draining twice")?;
    ensure(
        store.drain_worker("nope").await?.is_none(),
        "unknown worker",
    )?;

    let v = join(store, "v", T0).await?;
    ensure(
        lease_ids(store, &v, 10, T0 + TTL + 3).await? == [(ids[1].clone(), 1)],
        "another worker leases",
    )?;
    // A worker that left stays left.
    store.leave(&v, T0 + TTL + 4).await?.ok_or("v")?;
    let view = store.drain_worker(&v).await?.ok_or("v")?;
    ensure(
        view.state == WorkerState::Left,
        format!("a worker that left is not draining: {:?}", view.state),
    )?;
    Ok(())
}

/// The reaper gives a lost worker's tasks, and tasks whose lease ran out, to
/// the queue again, counting the attempt (history `lost`); the last attempt
/// fails for good; fresh leases are left alone.
pub async fn reap_requeues_expired_leases(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(2, 2), None, T0).await?;
    let ids = ids_of(&sub)?;
    let (a, b) = (&ids[0], &ids[1]);
    let w = join(store, "w", T0).await?;
    let v = join(store, "v", T0).await?;
    ensure(
        lease_ids(store, &w, 1, T0).await? == [(a.clone(), 1)],
        "w runs a",
    )?;
    ensure(
        lease_ids(store, &v, 1, T0).await? == [(b.clone(), 1)],
        "v runs b",
    )?;

    // w keeps beating but no longer names a; v beats and names b.
    let now = T0 + TTL - 1;
    store
        .heartbeats(
            vec![(w.clone(), beat(&[])), (v.clone(), beat(&[b]))],
            now,
            TTL,
        )
        .await?;
    let early = store.reap(T0 + TTL - 1, TTL).await?;
    ensure(early.events.is_empty(), "nothing has run out yet")?;
    let reaped = store.reap(T0 + TTL + 1, TTL).await?;
    let retried: Vec<Option<&str>> = reaped.events.iter().map(|e| e.task_id.as_deref()).collect();
    ensure(
        kinds(&reaped) == ["task.retrying"] && retried == [Some(a.as_str())],
        format!("reaped {:?}", reaped.events),
    )?;
    ensure(reaped.ready, "waiting workers should look")?;
    let view = task_view(store, a).await?;
    ensure(
        view.state == TaskState::Queued
            && view.error.as_ref().map(|e| e.kind) == Some(brigade_api::ErrorKind::Lost),
        format!("a {view:?}"),
    )?;
    ensure(outcomes(store, a).await? == ["lost"], "a lost attempt")?;
    ensure(
        task_view(store, b).await?.state == TaskState::Running,
        "b's lease was renewed",
    )?;
    ensure(
        store.worker(&w).await?.map(|x| x.state) == Some(WorkerState::Active),
        "a worker that beats is not lost",
    )?;

    // a's second attempt is its last: lost again, it fails.
    let now = T0 + TTL + 2;
    ensure(
        lease_ids(store, &w, 1, now).await? == [(a.clone(), 2)],
        "a again",
    )?;
    let reaped = store.reap(now + 10 * TTL, TTL).await?;
    let mut got: Vec<(&str, Option<&str>)> = reaped
        .events
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.task_id.as_deref().or(e.worker_id.as_deref()),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        ("task.failed", Some(a.as_str())),
        ("task.retrying", Some(b.as_str())),
        ("worker.lost", Some(w.as_str())),
        ("worker.lost", Some(v.as_str())),
    ];
    want.sort();
    ensure(got == want, format!("reaped {got:?}"))?;
    ensure(
        task_view(store, a).await?.state == TaskState::Failed,
        "the last attempt lost: failed",
    )?;
    ensure(
        outcomes(store, a).await? == ["lost", "lost"],
        "two lost attempts",
    )?;
    ensure(
        store.worker(&v).await?.map(|x| (x.state, x.running)) == Some((WorkerState::Lost, 0)),
        "v is lost and runs nothing",
    )?;
    let (reply, _) = report(store, &v, vec![ok(b, 1)], now + 10 * TTL + 1).await?;
    ensure(
        reply.accepted.is_empty() && reply.rejected.len() == 1,
        "a lost worker's late result is refused",
    )?;
    ensure(
        store.reap(now + 10 * TTL + 2, TTL).await?.events.is_empty(),
        "reaping again finds nothing",
    )?;
    Ok(())
}
