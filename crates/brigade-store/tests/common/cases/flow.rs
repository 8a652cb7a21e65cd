//! Flow control: unique jobs, poison tasks, finding and replaying tasks.

use std::sync::Arc;

use brigade_api::{ErrorKind, JobState, TaskError, TaskState};
use brigade_core::NewJob;
use brigade_core::unique::{Hold, UniqueKey};
use brigade_store::{Idempotency, JobFilter, Store, TaskFilter};
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
/// on one database): one job, and every duplicate names it. In odd rounds
/// the key is taken over from an earlier, cancelled holder.
pub async fn unique_race(stores: Vec<Arc<dyn Store>>) -> TestResult {
    let mut earlier = 0;
    for round in 0..6 {
        let key = format!("race-{round}");
        if round % 2 == 1 {
            let old = stores[0]
                .submit("owner", unique_job(&key, Hold::Unfinished), None, T0)
                .await?;
            stores[0].cancel_job(&old.job.id, T0).await?;
            earlier += 1;
        }
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
        all.items.len() == 6 + earlier,
        format!(
            "{} jobs for 6 keys and {earlier} earlier holders",
            all.items.len()
        ),
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

/// `tasks` finds tasks across jobs by state, kind, queue, error kind, job,
/// creation time and owner, newest first, a page at a time.
pub async fn tasks_are_found_across_jobs(store: Arc<dyn Store>) -> TestResult {
    let (a, b) = seed(&*store).await?;
    let all = |f: TaskFilter| {
        let store = store.clone();
        async move {
            let page = store.tasks(&f, 100, None).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                page.items.into_iter().map(|t| t.id).collect::<Vec<_>>(),
            )
        }
    };
    let failed = all(TaskFilter {
        state: Some(TaskState::Failed),
        ..TaskFilter::default()
    })
    .await?;
    ensure(
        failed == [a[1].clone(), a[0].clone()],
        format!("the two failed, newest first: {failed:?}"),
    )?;
    let by_error = all(TaskFilter {
        error_kind: Some("handler".into()),
        ..TaskFilter::default()
    })
    .await?;
    ensure(by_error == failed, "by error kind")?;
    let none = all(TaskFilter {
        error_kind: Some("poison".into()),
        ..TaskFilter::default()
    })
    .await?;
    ensure(none.is_empty(), "no poison")?;
    let other = all(TaskFilter {
        kind: Some("other".into()),
        ..TaskFilter::default()
    })
    .await?;
    ensure(
        other == [b[0].clone(), a[2].clone()],
        format!("kind other: {other:?}"),
    )?;
    let of_job = all(TaskFilter {
        job_id: Some(a_job(&*store, &a[0]).await?),
        ..TaskFilter::default()
    })
    .await?;
    ensure(of_job.len() == 3, "the job's three")?;
    let own = all(TaskFilter {
        owner: Some("someone".into()),
        ..TaskFilter::default()
    })
    .await?;
    ensure(own == [b[0].clone()], "an owner sees their own")?;
    let recent = all(TaskFilter {
        since: Some(T0 + 1),
        ..TaskFilter::default()
    })
    .await?;
    ensure(recent == [b[0].clone()], "created since")?;
    let queued_other = all(TaskFilter {
        state: Some(TaskState::Queued),
        queue: Some("default".into()),
        kind: Some("other".into()),
        owner: Some("owner".into()),
        ..TaskFilter::default()
    })
    .await?;
    ensure(queued_other == [a[2].clone()], "filters combine")?;
    // Pages of one.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .tasks(&TaskFilter::default(), 1, cursor.as_deref())
            .await?;
        seen.extend(page.items.into_iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ensure(
        seen.len() == 4,
        format!("4 tasks in pages of one: {seen:?}"),
    )?;
    Ok(())
}

/// The job of a task.
async fn a_job(store: &dyn Store, task_id: &str) -> TestResult<String> {
    Ok(task_view(store, task_id).await?.job_id)
}

/// Job A of `owner` at T0: two `echo` tasks that fail, one `other` task
/// left queued; job B of `someone` at T0 + 1: one queued `other` task.
async fn seed(store: &dyn Store) -> TestResult<(Vec<String>, Vec<String>)> {
    let mut other = crate::common::task(1);
    other.kind = "other".into();
    let a = store
        .submit(
            "owner",
            crate::common::job_with(vec![
                crate::common::task(1),
                crate::common::task(1),
                other.clone(),
            ]),
            None,
            T0,
        )
        .await?;
    let b = store
        .submit(
            "someone",
            crate::common::job_with(vec![other]),
            None,
            T0 + 1,
        )
        .await?;
    let w = join(store, "w", T0).await?;
    let leased = lease_ids(store, &w, 10, T0 + 2).await?;
    ensure(leased.len() == 2, "the two echo tasks")?;
    let results = leased.iter().map(|(id, n)| failed(id, *n, false)).collect();
    report(store, &w, results, T0 + 3).await?;
    Ok((ids_of(&a)?, ids_of(&b)?))
}

/// Bulk retry and cancel take the filters of `tasks`, in batches that each
/// look at a task once; only failed or cancelled tasks are retried, only
/// unfinished ones cancelled.
pub async fn bulk_retry_and_cancel_follow_the_filters(store: Arc<dyn Store>) -> TestResult {
    let (a, b) = seed(&*store).await?;
    let failed_only = TaskFilter {
        state: Some(TaskState::Failed),
        ..TaskFilter::default()
    };
    let mut retried = 0;
    let mut after = None;
    let mut batches = 0;
    loop {
        let bulk = store.retry_tasks(&failed_only, after, 1, T0 + 10).await?;
        retried += bulk.changed;
        batches += 1;
        ensure(batches <= 3, "the batches end")?;
        match bulk.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    ensure(retried == 2, format!("{retried} retried"))?;
    for id in &a[..2] {
        let t = task_view(&*store, id).await?;
        ensure(
            t.state == TaskState::Queued,
            format!("{id} queued again: {:?}", t.state),
        )?;
    }
    ensure(
        job_view(&*store, &a_job(&*store, &a[0]).await?)
            .await?
            .state
            != JobState::Failed,
        "the job is no longer failed",
    )?;
    let again = store.retry_tasks(&failed_only, None, 100, T0 + 11).await?;
    ensure(again.changed == 0, "nothing failed is left")?;

    let other = TaskFilter {
        kind: Some("other".into()),
        owner: Some("someone".into()),
        ..TaskFilter::default()
    };
    let cancelled = store.cancel_tasks(&other, None, 100, T0 + 12).await?;
    ensure(
        cancelled.changed == 1 && cancelled.next.is_none(),
        format!("one cancelled: {}", cancelled.changed),
    )?;
    ensure(
        task_view(&*store, &b[0]).await?.state == TaskState::Cancelled,
        "b's task cancelled",
    )?;
    ensure(
        task_view(&*store, &a[2]).await?.state == TaskState::Queued,
        "another owner's task untouched",
    )?;
    ensure(
        job_view(&*store, &a_job(&*store, &b[0]).await?)
            .await?
            .state
            == JobState::Cancelled,
        "b's job is finished",
    )?;
    ensure(
        store
            .cancel_tasks(&other, None, 100, T0 + 13)
            .await?
            .changed
            == 0,
        "a cancelled task is not cancelled twice",
    )?;
    // The cancelled task can be retried by the same filters.
    ensure(
        store.retry_tasks(&other, None, 100, T0 + 14).await?.changed == 1,
        "a cancelled task is retried",
    )?;
    ensure(
        task_view(&*store, &b[0]).await?.state == TaskState::Queued,
        "b's task queued again",
    )?;
    Ok(())
}

/// A schedule whose job has a `unique` key: a fire while the earlier job
/// holds the key creates nothing (a `schedule.skipped` event names the
/// holder), and the earlier job is left as it is.
pub async fn a_schedule_fire_respects_the_jobs_unique_key(store: Arc<dyn Store>) -> TestResult {
    use brigade_api::{CatchUp, JobSubmit, Overlap, ScheduleCreate, TaskSpec, Unique, UniqueWhile};
    use brigade_core::Limits;
    let job = JobSubmit {
        unique: Some(Unique {
            key: "nightly".into(),
            for_ms: None,
            while_: Some(UniqueWhile::Unfinished),
        }),
        ..JobSubmit::new(vec![TaskSpec::new("echo", serde_json::json!({}))])
    };
    let mut create = ScheduleCreate::every(1000, job);
    create.overlap = Some(Overlap::Allow);
    create.catch_up = Some(CatchUp::All);
    let schedule = brigade_core::schedule::validate_schedule(create, &Limits::default(), T0)
        .map_err(|e| format!("{e:?}"))?;
    let s = store.create_schedule("owner", schedule, T0).await?;
    store.fire_schedules(Limits::default(), T0 + 1000).await?;
    let (changes, _) = store.fire_schedules(Limits::default(), T0 + 2000).await?;
    let jobs = store.jobs(&JobFilter::default(), 100, None).await?;
    ensure(jobs.items.len() == 1, format!("{} jobs", jobs.items.len()))?;
    let first = &jobs.items[0];
    ensure(
        first.fire_at.map(brigade_core::to_ms) == Some(T0 + 1000),
        "the earlier job keeps its fire",
    )?;
    ensure(
        changes.events.iter().any(|e| {
            e.kind == "schedule.skipped" && e.job_id.as_deref() == Some(first.id.as_str())
        }),
        "the skipped fire names the holder",
    )?;
    match store
        .trigger_schedule(&s.id, Limits::default(), T0 + 2500)
        .await?
    {
        brigade_store::TriggerOutcome::Duplicate(earlier, _) => {
            ensure(earlier == first.id, "trigger names the holder")?
        }
        _ => return Err("a trigger while the key is held is a duplicate".into()),
    }
    Ok(())
}
