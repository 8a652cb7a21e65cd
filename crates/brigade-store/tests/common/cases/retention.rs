//! Retention: finished jobs past their time are deleted with their tasks,
//! history and logs, in small batches; nothing else is touched.

use std::sync::Arc;

use brigade_api::LogBatch;
use brigade_core::{NewJob, from_ms};
use brigade_store::{Pruned, Store};

use crate::common::{T0, TestResult, ensure, ids_of, job, join, lease_ids, ok, report};

const MINUTE: i64 = 60_000;

/// Submit `job` at `now`, lease every task, log a line for each and report
/// them all succeeded at `done`; its id and task ids.
async fn finished_job(
    store: &dyn Store,
    worker: &str,
    job: NewJob,
    now: i64,
    done: i64,
) -> TestResult<(String, Vec<String>)> {
    let n = job.tasks.len() as u32;
    let sub = store.submit("owner", job, None, now).await?;
    let ids = ids_of(&sub)?;
    let leased = lease_ids(store, worker, n, now).await?;
    ensure(leased.len() == ids.len(), format!("leased {leased:?}"))?;
    let logs = leased
        .iter()
        .map(|(id, attempt)| LogBatch {
            task_id: id.clone(),
            attempt: *attempt,
            lines: vec!["working".into(), "done".into()],
        })
        .collect();
    store.append_logs(worker, logs, now).await?;
    let results = leased.iter().map(|(id, a)| ok(id, *a)).collect();
    report(store, worker, results, done).await?;
    Ok((sub.job.id, ids))
}

/// Prune until nothing more is due; the sum of what went.
async fn prune_all(store: &dyn Store, now: i64, keep: Option<u64>) -> TestResult<Pruned> {
    let mut total = Pruned::default();
    for _ in 0..100 {
        let p = store.prune(now, keep, 500).await?;
        total.jobs += p.jobs;
        total.tasks += p.tasks;
        total.attempts += p.attempts;
        total.logs += p.logs;
        if !p.more {
            return Ok(total);
        }
    }
    Err("prune never finished".into())
}

/// A finished job goes after the server's retention, or after its own
/// `keep_ms` (shorter or longer), with its tasks, attempts and logs; running
/// jobs stay whatever their age, and no retention keeps jobs forever.
pub async fn prune_deletes_expired_jobs_with_everything(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let w = join(store, "w", T0).await?;
    let keep_default = Some(10 * MINUTE as u64);
    let done = T0 + 1000;
    let (plain, plain_tasks) = finished_job(store, &w, job(2, 3), T0, done).await?;
    let short = NewJob {
        keep_ms: Some(MINUTE as u64),
        ..job(1, 3)
    };
    let (short, short_tasks) = finished_job(store, &w, short, T0, done).await?;
    let long = NewJob {
        keep_ms: Some(60 * MINUTE as u64),
        ..job(1, 3)
    };
    let (long, _) = finished_job(store, &w, long, T0, done).await?;
    // Still running: leased, never reported.
    let open = store.submit("owner", job(1, 3), None, T0).await?;
    lease_ids(store, &w, 1, T0).await?;

    ensure(
        prune_all(store, done + MINUTE - 1, keep_default).await? == Pruned::default(),
        "nothing expired a millisecond early",
    )?;
    let p = prune_all(store, done + MINUTE, keep_default).await?;
    ensure(
        (p.jobs, p.tasks, p.attempts, p.logs) == (1, 1, 1, 2),
        format!("the short job with its task, attempt and logs: {p:?}"),
    )?;
    ensure(store.job(&short).await?.is_none(), "short job gone")?;
    ensure(
        store.task(&short_tasks[0]).await?.is_none(),
        "its task gone",
    )?;
    ensure(
        store.task_logs(&short_tasks[0], None, 10).await?.is_empty(),
        "its logs gone",
    )?;
    ensure(store.job(&plain).await?.is_some(), "the plain job stays")?;

    let p = prune_all(store, done + 10 * MINUTE, keep_default).await?;
    ensure(
        (p.jobs, p.tasks, p.attempts, p.logs) == (1, 2, 2, 4),
        format!("the plain job after the default retention: {p:?}"),
    )?;
    ensure(store.job(&plain).await?.is_none(), "plain job gone")?;
    for t in &plain_tasks {
        ensure(store.task(t).await?.is_none(), "its tasks gone")?;
    }
    ensure(
        store.job(&long).await?.is_some(),
        "its own longer keep wins",
    )?;

    // Years later: the long job goes, the running one stays.
    let later = done + 365 * 24 * 60 * MINUTE;
    let p = prune_all(store, later, keep_default).await?;
    ensure(p.jobs == 1, format!("the long job: {p:?}"))?;
    ensure(
        store.job(&open.job.id).await?.is_some(),
        "a running job is never pruned",
    )?;

    // Without a server retention, only jobs with their own keep_ms go.
    let (forever, _) = finished_job(store, &w, job(1, 3), later, later).await?;
    let own = NewJob {
        keep_ms: Some(0),
        ..job(1, 3)
    };
    let (own, _) = finished_job(store, &w, own, later, later).await?;
    let p = prune_all(store, later + 100 * 365 * 24 * 60 * MINUTE, None).await?;
    ensure(p.jobs == 1, format!("only the job with keep_ms: {p:?}"))?;
    ensure(store.job(&own).await?.is_none(), "keep_ms 0 goes at once")?;
    ensure(
        store.job(&forever).await?.is_some(),
        "no retention keeps jobs forever",
    )?;
    Ok(())
}

/// A big job goes over several passes of at most `max_tasks` tasks each; its
/// row goes with its last task, so it is in view until then.
pub async fn prune_works_in_small_batches(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let w = join(store, "w", T0).await?;
    let (big, _) = finished_job(store, &w, job(25, 3), T0, T0).await?;
    let (small, _) = finished_job(store, &w, job(1, 3), T0, T0).await?;
    let now = T0 + MINUTE;
    let mut passes = Vec::new();
    loop {
        let p = store.prune(now, Some(1), 10).await?;
        passes.push((p.jobs, p.tasks));
        if passes.len() == 1 {
            ensure(
                store.job(&big).await?.is_some(),
                "in view until its last task goes",
            )?;
        }
        if !p.more || passes.len() > 10 {
            break;
        }
    }
    ensure(
        passes.iter().all(|(_, t)| *t <= 10),
        format!("no pass over the batch: {passes:?}"),
    )?;
    let total: (u64, u64) = passes.iter().fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1));
    ensure(
        total == (2, 26),
        format!("every job and task once: {passes:?}"),
    )?;
    ensure(
        store.job(&big).await?.is_none() && store.job(&small).await?.is_none(),
        "both gone",
    )?;
    ensure(
        store.prune(now, Some(1), 10).await? == Pruned::default(),
        "nothing left",
    )?;
    Ok(())
}

/// A job's view carries its own `keep_ms` and, once finished, its `expires_at`.
pub async fn job_view_shows_its_expiry(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let w = join(store, "w", T0).await?;
    let kept = NewJob {
        keep_ms: Some(5000),
        ..job(1, 3)
    };
    let sub = store.submit("owner", kept.clone(), None, T0).await?;
    ensure(sub.job.keep_ms == Some(5000), "submit echoes keep_ms")?;
    let view = store.job(&sub.job.id).await?.ok_or("job")?;
    ensure(
        view.keep_ms == Some(5000) && view.expires_at.is_none(),
        "no expiry while it runs",
    )?;
    let leased = lease_ids(store, &w, 1, T0).await?;
    report(store, &w, vec![ok(&leased[0].0, leased[0].1)], T0 + 700).await?;
    let view = store.job(&sub.job.id).await?.ok_or("job")?;
    ensure(
        view.expires_at == Some(from_ms(T0 + 700 + 5000)),
        format!("expires 5 s after it finished: {:?}", view.expires_at),
    )?;
    let (plain, _) = finished_job(store, &w, job(1, 3), T0, T0 + 1).await?;
    let view = store.job(&plain).await?.ok_or("job")?;
    ensure(
        view.keep_ms.is_none() && view.expires_at.is_none(),
        "the server's retention is the server's to fill in",
    )?;
    Ok(())
}
