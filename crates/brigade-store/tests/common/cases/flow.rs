//! Flow control: unique jobs, poison tasks, finding and replaying tasks.

use std::sync::Arc;

use brigade_api::{ErrorKind, JobState, TaskError, TaskState};
use brigade_core::NewJob;
use brigade_core::unique::{Hold, UniqueKey};
use brigade_store::{Idempotency, JobFilter, Store};
use futures::future::join_all;

use crate::common::{
    T0, TTL, TestResult, ensure, failed, ids_of, job, job_view, join, lease_ids, ok, report,
    task_view,
};

/// A job of one task with `unique` key `key` held as `hold`.
pub fn unique_job(key: &str, hold: Hold) -> NewJob {
    NewJob {
        unique: Some(UniqueKey {
            key: key.into(),
            hold,
        }),
        ..job(1, 1)
    }
}

/// An earlier job holds its key while unfinished (or for `for_ms`): a
/// submit with the key creates nothing and names it; keys are per owner; a
/// finished, expired or deleted holder lets the next submit take the key.
pub async fn unique_jobs_answer_with_the_holder(store: Arc<dyn Store>) -> TestResult {
    let first = store
        .submit("owner", unique_job("k", Hold::Unfinished), None, T0)
        .await?;
    ensure(
        first.created && first.duplicate_of.is_none(),
        "the first takes the key",
    )?;
    let again = store
        .submit("owner", unique_job("k", Hold::Unfinished), None, T0 + 1)
        .await?;
    ensure(
        !again.created && again.duplicate_of.as_deref() == Some(first.job.id.as_str()),
        format!("a duplicate of the first: {:?}", again.duplicate_of),
    )?;
    ensure(
        again.job.id == first.job.id && again.job.task_ids == first.job.task_ids,
        "answered with the earlier job and its tasks",
    )?;
    ensure(
        again.changes.events.is_empty(),
        "a duplicate changes nothing",
    )?;
    let other = store
        .submit("someone", unique_job("k", Hold::Unfinished), None, T0 + 2)
        .await?;
    ensure(other.created, "keys are per owner")?;
    let plain = store.submit("owner", job(1, 1), None, T0 + 3).await?;
    ensure(plain.created, "a job without a key is not held back")?;

    // Once the holder is finished, the key is free again.
    let w = join(&*store, "w", T0).await?;
    let ids = ids_of(&first)?;
    let mut leased = Vec::new();
    while !leased.iter().any(|(id, _)| *id == ids[0]) {
        let got = lease_ids(&*store, &w, 10, T0 + 4).await?;
        ensure(!got.is_empty(), "the held job's task is leased")?;
        leased.extend(got);
    }
    let results = leased.iter().map(|(id, a)| ok(id, *a)).collect();
    report(&*store, &w, results, T0 + 5).await?;
    let next = store
        .submit("owner", unique_job("k", Hold::Unfinished), None, T0 + 6)
        .await?;
    ensure(
        next.created && next.job.id != first.job.id,
        "a finished holder lets go",
    )?;

    // for_ms: held however the job ends, until it is that old.
    let young = store
        .submit("owner", unique_job("t", Hold::For(1000)), None, T0)
        .await?;
    ensure(young.created, "takes t")?;
    let dup = store
        .submit("owner", unique_job("t", Hold::For(1000)), None, T0 + 999)
        .await?;
    ensure(
        dup.duplicate_of.as_deref() == Some(young.job.id.as_str()),
        "held for 1000 ms",
    )?;
    let old = store
        .submit("owner", unique_job("t", Hold::For(1000)), None, T0 + 1000)
        .await?;
    ensure(old.created, "free once 1000 ms old")?;

    // A deleted holder holds nothing.
    store.cancel_job(&next.job.id, T0 + 7).await?;
    store.delete_job(&next.job.id).await?;
    let after_delete = store
        .submit("owner", unique_job("k", Hold::Unfinished), None, T0 + 8)
        .await?;
    ensure(after_delete.created, "a deleted holder lets go")?;
    Ok(())
}

/// Idempotency comes first: the same key and body replay the job they
/// created (not a duplicate); a new Idempotency-Key with a held unique key
/// is a duplicate, and records nothing, so the idempotency key stays free.
pub async fn unique_and_idempotency_keys_agree(store: Arc<dyn Store>) -> TestResult {
    let idem = |k: &str| Idempotency {
        key: k.into(),
        hash: "body".into(),
    };
    let first = store
        .submit(
            "owner",
            unique_job("u", Hold::Unfinished),
            Some(idem("i1")),
            T0,
        )
        .await?;
    ensure(first.created, "created")?;
    let replay = store
        .submit(
            "owner",
            unique_job("u", Hold::Unfinished),
            Some(idem("i1")),
            T0 + 1,
        )
        .await?;
    ensure(
        !replay.created && replay.duplicate_of.is_none() && replay.job.id == first.job.id,
        "an idempotent replay, not a duplicate",
    )?;
    let dup = store
        .submit(
            "owner",
            unique_job("u", Hold::Unfinished),
            Some(idem("i2")),
            T0 + 2,
        )
        .await?;
    ensure(
        dup.duplicate_of.as_deref() == Some(first.job.id.as_str()),
        "a new idempotency key is still a duplicate",
    )?;
    let all = store.jobs(&JobFilter::default(), 100, None).await?;
    ensure(all.items.len() == 1, format!("{} jobs", all.items.len()))?;
    Ok(())
}

/// Submits with one unique key at once make one job; every other answers
/// with it.
pub async fn concurrent_unique_submits_make_one_job(store: Arc<dyn Store>) -> TestResult {
    unique_race(vec![store.clone(), store]).await
}

/// Eight submits of one unique key at once, spread over `stores` (servers
/// on one database): one job, and every duplicate names it.
pub async fn unique_race(stores: Vec<Arc<dyn Store>>) -> TestResult {
    for round in 0..5 {
        let key = format!("race-{round}");
        let submits = (0..8).map(|i| {
            let store = stores[i % stores.len()].clone();
            let j = unique_job(&key, Hold::Unfinished);
            tokio::spawn(async move { store.submit("owner", j, None, T0).await })
        });
        let mut created = Vec::new();
        let mut duplicates = Vec::new();
        for done in join_all(submits).await {
            let s = done??;
            if s.created {
                created.push(s.job.id);
            } else {
                duplicates.push(s.duplicate_of.ok_or("neither created nor a duplicate")?);
            }
        }
        ensure(
            created.len() == 1,
            format!("round {round}: {} created", created.len()),
        )?;
        ensure(
            duplicates.len() == 7 && duplicates.iter().all(|d| *d == created[0]),
            format!("round {round}: duplicates {duplicates:?} of {created:?}"),
        )?;
    }
    let all = stores[0].jobs(&JobFilter::default(), 100, None).await?;
    ensure(
        all.items.len() == 5,
        format!("{} jobs for 5 keys", all.items.len()),
    )?;
    Ok(())
}

/// How a test attempt ends.
#[derive(Clone, Copy)]
enum End {
    /// The handler panicked (a `crash` result).
    Crash,
    /// The handler failed.
    Handler,
    /// The worker went silent: the reaper finds the lease expired.
    Lost,
}

/// Lease the only task of the store for a new worker at `*now` and end the
/// attempt as `end`; the clock moves past any retry delay.
async fn attempt(store: &dyn Store, task_id: &str, end: End, now: &mut i64) -> TestResult {
    *now += 10 * TTL;
    store.promote_due(*now).await?;
    let w = join(store, &format!("w{now}"), *now).await?;
    let leased = lease_ids(store, &w, 1, *now).await?;
    ensure(
        leased.len() == 1 && leased[0].0 == task_id,
        format!("leased {leased:?}"),
    )?;
    match end {
        End::Crash | End::Handler => {
            let mut r = failed(task_id, leased[0].1, true);
            if matches!(end, End::Crash) {
                r.error = Some(TaskError::new(ErrorKind::Crash, "the handler panicked"));
            }
            report(store, &w, vec![r], *now + 1).await?;
        }
        End::Lost => {
            store.reap(*now + TTL + 1, TTL).await?;
        }
    }
    Ok(())
}

/// Attempts that end `lost` or `crash` count apart from handler failures:
/// the `poison_after`-th in a row fails the task as `poison` though its
/// budget has attempts left; a handler failure starts the count over; 0
/// turns it off.
pub async fn deaths_in_a_row_make_a_task_poison(store: Arc<dyn Store>) -> TestResult {
    store.set_poison_after(3);
    let sub = store.submit("owner", job(1, 10), None, T0).await?;
    let id = ids_of(&sub)?.remove(0);
    let mut now = T0;
    for end in [End::Crash, End::Handler, End::Crash, End::Lost] {
        attempt(&*store, &id, end, &mut now).await?;
        let t = task_view(&*store, &id).await?;
        ensure(
            !t.state.is_finished(),
            format!("not poison yet: {:?}", t.state),
        )?;
    }
    attempt(&*store, &id, End::Lost, &mut now).await?;
    let t = task_view(&*store, &id).await?;
    ensure(
        t.state == TaskState::Failed && t.attempt == 5,
        format!(
            "failed on the third death in a row: {:?} {}",
            t.state, t.attempt
        ),
    )?;
    let error = t.error.ok_or("an error")?;
    ensure(
        error.kind == ErrorKind::Poison,
        format!("as poison: {error:?}"),
    )?;
    let history = t.history.ok_or("history")?;
    let seen: Vec<&str> = history.iter().map(|h| h.outcome.as_str()).collect();
    ensure(
        seen == ["crash", "failed", "crash", "lost", "lost"],
        format!("history {seen:?}"),
    )?;
    ensure(
        history[4].error.as_ref().map(|e| e.kind) == Some(ErrorKind::Lost),
        "the attempt keeps its own error",
    )?;
    ensure(
        job_view(&*store, &sub.job.id).await?.state == JobState::Failed,
        "the job failed",
    )?;

    // A retry by hand starts the count over.
    ensure(
        matches!(
            store.retry_task(&id, now).await?,
            brigade_store::RetryOutcome::Retried(..)
        ),
        "retried",
    )?;
    attempt(&*store, &id, End::Lost, &mut now).await?;
    ensure(
        task_view(&*store, &id).await?.state == TaskState::Queued,
        "one death after a retry is not poison",
    )?;

    // Off: deaths only spend the budget.
    store.set_poison_after(0);
    for _ in 0..3 {
        attempt(&*store, &id, End::Lost, &mut now).await?;
    }
    ensure(
        task_view(&*store, &id).await?.state == TaskState::Queued,
        "--poison-after 0 never makes a task poison",
    )?;
    Ok(())
}
