//! Callback deliveries: the outbox row appears when the job finishes (and
//! only for the events asked), a claim gives a delivery to one claimant at a
//! time, attempts are recorded, and a delivery moves on only under its claim.

use std::sync::Arc;

use brigade_api::Callback;
use brigade_store::{CallbackOutcome, Store};

use crate::common::{T0, TestResult, ensure, ids_of, job, join, lease_ids, ok, report};

const URL: &str = "https://hooks.example.com/brigade";

/// Submit a one-task job with a callback and finish it at `done`; its id.
async fn finished_with_callback(store: &dyn Store, worker: &str, done: i64) -> TestResult<String> {
    let mut j = job(1, 1);
    j.callback = Some(Callback::new(URL));
    let sub = store.submit("owner", j, None, T0).await?;
    ensure(
        sub.job.callback.as_ref().map(|c| c.url.as_str()) == Some(URL),
        "the submit's view shows the callback",
    )?;
    let ids = ids_of(&sub)?;
    let leased = lease_ids(store, worker, 1, T0).await?;
    ensure(leased.len() == ids.len(), format!("leased {leased:?}"))?;
    let results = leased.iter().map(|(id, a)| ok(id, *a)).collect();
    report(store, worker, results, done).await?;
    Ok(sub.job.id)
}

fn outcome(
    id: &str,
    by: &str,
    attempt: u32,
    delivered: bool,
    at: i64,
    retry_at: Option<i64>,
) -> CallbackOutcome {
    CallbackOutcome {
        id: id.to_owned(),
        claimed_by: by.to_owned(),
        attempt,
        delivered,
        http_status: Some(if delivered { 200 } else { 503 }),
        error: (!delivered).then(|| "the receiver answered 503".to_owned()),
        at,
        retry_at,
    }
}

/// A finished job's delivery is claimed by one server at a time, retried
/// when its time comes, and listed attempt by attempt.
pub async fn a_finished_job_queues_one_delivery_claimed_once(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let w = join(store, "w", T0).await?;
    // Nothing is due before a job with a callback finishes.
    ensure(
        store.claim_callbacks("a", T0, 60_000, 10).await?.is_empty(),
        "no delivery before the job finishes",
    )?;
    let done = T0 + 1000;
    let job_id = finished_with_callback(store, &w, done).await?;
    let view = store.job(&job_id).await?.ok_or("the job")?;
    ensure(view.callback.is_some(), "the job view shows its callback")?;

    let due = store.claim_callbacks("a", done, 60_000, 10).await?;
    ensure(due.len() == 1, format!("one delivery due: {due:?}"))?;
    let d = &due[0];
    ensure(
        d.job_id == job_id && d.event == "job.finished" && d.url == URL && d.attempts == 0,
        format!("the delivery: {d:?}"),
    )?;
    // Claimed: another server gets nothing until the claim runs out.
    ensure(
        store
            .claim_callbacks("b", done + 10, 60_000, 10)
            .await?
            .is_empty(),
        "a claimed delivery is not claimed again",
    )?;
    // The first attempt fails; retried at +5 s.
    store
        .record_callback(outcome(&d.id, "a", 1, false, done + 20, Some(done + 5000)))
        .await?;
    ensure(
        store
            .claim_callbacks("b", done + 4000, 60_000, 10)
            .await?
            .is_empty(),
        "not due before its retry time",
    )?;
    let again = store.claim_callbacks("b", done + 5000, 60_000, 10).await?;
    ensure(
        again.len() == 1 && again[0].attempts == 1,
        format!("due again, one attempt made: {again:?}"),
    )?;
    // A late record under a claim that was taken over leaves the delivery alone.
    store
        .record_callback(outcome(&d.id, "a", 1, true, done + 5001, None))
        .await?;
    store
        .record_callback(outcome(&d.id, "b", 2, true, done + 5002, None))
        .await?;
    ensure(
        store
            .claim_callbacks("c", done + 999_999_999, 60_000, 10)
            .await?
            .is_empty(),
        "a delivered delivery is never due again",
    )?;
    let attempts = store.callback_attempts(&job_id).await?.ok_or("the job")?;
    let got: Vec<(u32, &str, Option<u16>)> = attempts
        .iter()
        .map(|a| (a.attempt, a.status.as_str(), a.http_status))
        .collect();
    ensure(
        got == [
            (1, "failed", Some(503)),
            (1, "delivered", Some(200)),
            (2, "delivered", Some(200)),
        ],
        format!("attempts: {attempts:?}"),
    )?;
    ensure(
        attempts[0].error.is_some() && attempts[0].url == URL,
        "error and url listed",
    )?;
    ensure(
        store.callback_attempts("nope").await?.is_none(),
        "no attempts of an unknown job",
    )?;
    Ok(())
}

/// A claim that ran out (its server died) is taken by another; a delivery
/// given up is not due again; deleting the job deletes its deliveries.
pub async fn an_expired_claim_is_taken_over_and_given_up_deliveries_stay_put(
    store: Arc<dyn Store>,
) -> TestResult {
    let store = &*store;
    let w = join(store, "w", T0).await?;
    let done = T0 + 1000;
    let job_id = finished_with_callback(store, &w, done).await?;
    let due = store.claim_callbacks("a", done, 1000, 10).await?;
    ensure(due.len() == 1, "due")?;
    let taken = store.claim_callbacks("b", done + 1000, 1000, 10).await?;
    ensure(
        taken.len() == 1 && taken[0].id == due[0].id,
        "the claim ran out; b takes the delivery",
    )?;
    store
        .record_callback(outcome(&taken[0].id, "b", 1, false, done + 1001, None))
        .await?;
    ensure(
        store
            .claim_callbacks("c", done + 999_999_999, 1000, 10)
            .await?
            .is_empty(),
        "given up: never due again",
    )?;
    ensure(
        store.delete_job(&job_id).await? == brigade_store::DeleteOutcome::Deleted,
        "deleted",
    )?;
    ensure(
        store.callback_attempts(&job_id).await?.is_none(),
        "gone with the job",
    )?;
    Ok(())
}

/// A job without a callback, or whose callback asks for other events,
/// queues nothing.
pub async fn jobs_without_a_callback_queue_nothing(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let w = join(store, "w", T0).await?;
    let sub = store.submit("owner", job(1, 1), None, T0).await?;
    let leased = lease_ids(store, &w, 1, T0).await?;
    let results = leased.iter().map(|(id, a)| ok(id, *a)).collect();
    report(store, &w, results, T0 + 1).await?;
    ensure(
        store
            .job(&sub.job.id)
            .await?
            .is_some_and(|j| j.state.is_finished()),
        "finished",
    )?;
    ensure(
        store
            .claim_callbacks("a", T0 + 10, 1000, 10)
            .await?
            .is_empty(),
        "nothing to deliver",
    )?;
    ensure(
        store
            .callback_attempts(&sub.job.id)
            .await?
            .is_some_and(|a| a.is_empty()),
        "no attempts listed",
    )?;
    Ok(())
}
