//! Calls racing each other on one store: whatever order the engine runs
//! them in, each thing happens once.

use std::sync::Arc;

use brigade_api::{JobState, TaskState};
use brigade_store::{Idempotency, JobFilter, Store, StoreError};
use futures::future::join_all;

use crate::common::{
    T0, TestResult, ensure, failed, ids_of, job, job_view, join, lease_ids, ok, task_view,
};

/// Rounds of each race, so that more than one order is likely to be seen.
const ROUNDS: usize = 5;

/// Submits with one key at once make one job: one is created, the others
/// return it; with another body they are refused.
pub async fn concurrent_submits_with_one_key_make_one_job(store: Arc<dyn Store>) -> TestResult {
    for round in 0..ROUNDS {
        let key = format!("key-{round}");
        let submits = (0..8).map(|i| {
            let store = store.clone();
            let idem = Idempotency {
                key: key.clone(),
                // Two of the eight carry another body.
                hash: if i % 4 == 3 { "other" } else { "body" }.into(),
            };
            tokio::spawn(async move { store.submit("owner", job(2, 1), Some(idem), T0).await })
        });
        let mut created = Vec::new();
        let mut replayed = Vec::new();
        let mut conflicts = 0;
        for done in join_all(submits).await {
            match done? {
                Ok(s) if s.created => created.push(s.job.id),
                Ok(s) => replayed.push(s.job.id),
                Err(StoreError::IdempotencyConflict) => conflicts += 1,
                Err(e) => return Err(e.into()),
            }
        }
        ensure(
            created.len() == 1,
            format!("round {round}: {} created", created.len()),
        )?;
        ensure(
            replayed.iter().all(|id| *id == created[0]),
            format!("round {round}: replays of other jobs {replayed:?}"),
        )?;
        // The first to commit decides the body: five replays and two
        // conflicts, or (another body first) one replay and six conflicts.
        ensure(
            (replayed.len(), conflicts) == (5, 2) || (replayed.len(), conflicts) == (1, 6),
            format!(
                "round {round}: {} replayed, {conflicts} conflicts",
                replayed.len()
            ),
        )?;
    }
    let all = store.jobs(&JobFilter::default(), 100, None).await?;
    ensure(
        all.items.len() == ROUNDS,
        format!("{} jobs for {ROUNDS} keys", all.items.len()),
    )?;
    Ok(())
}

/// The same result delivered several times at once is applied once; a
/// success and a failure racing for one attempt: exactly one wins.
pub async fn concurrent_results_for_one_task_apply_once(store: Arc<dyn Store>) -> TestResult {
    let w = join(&*store, "w", T0).await?;
    for round in 0..ROUNDS {
        let sub = store.submit("owner", job(1, 1), None, T0).await?;
        let id = ids_of(&sub)?.remove(0);
        ensure(
            lease_ids(&*store, &w, 1, T0).await? == [(id.clone(), 1)],
            "leased",
        )?;
        let reports = (0..6).map(|i| {
            let store = store.clone();
            let (w, id) = (w.clone(), id.clone());
            tokio::spawn(async move {
                let result = if i % 2 == 0 {
                    ok(&id, 1)
                } else {
                    failed(&id, 1, false)
                };
                store.report(&w, vec![result], T0 + 1).await
            })
        });
        let mut accepted = 0;
        let mut finished = 0;
        for done in join_all(reports).await {
            let (reply, changes) = done??.ok_or("w")?;
            accepted += reply.accepted.len();
            finished += changes
                .events
                .iter()
                .filter(|e| e.kind == "job.finished")
                .count();
        }
        ensure(accepted == 1, format!("round {round}: {accepted} accepted"))?;
        ensure(
            finished == 1,
            format!("round {round}: job.finished {finished} times"),
        )?;
        let view = task_view(&*store, &id).await?;
        let history = view.history.ok_or("history")?;
        ensure(
            history.len() == 1 && history[0].outcome == view.state.as_str(),
            format!("round {round}: {:?} with history {history:?}", view.state),
        )?;
        let job = job_view(&*store, &sub.job.id).await?;
        let want = if view.state == TaskState::Succeeded {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        ensure(
            job.state == want,
            format!("round {round}: job {:?}", job.state),
        )?;
    }
    Ok(())
}

/// A job cancelled while its last running task reports: the job ends once,
/// in the state of what won.
pub async fn cancel_racing_the_last_result_ends_the_job_once(store: Arc<dyn Store>) -> TestResult {
    let w = join(&*store, "w", T0).await?;
    for round in 0..ROUNDS {
        let sub = store.submit("owner", job(1, 1), None, T0).await?;
        let id = ids_of(&sub)?.remove(0);
        ensure(
            lease_ids(&*store, &w, 1, T0).await? == [(id.clone(), 1)],
            "leased",
        )?;
        let (reported, cancelled) = {
            let (s1, s2) = (store.clone(), store.clone());
            let (w, id2, job_id) = (w.clone(), id.clone(), sub.job.id.clone());
            let report =
                tokio::spawn(async move { s1.report(&w, vec![ok(&id2, 1)], T0 + 1).await });
            let cancel = tokio::spawn(async move { s2.cancel_job(&job_id, T0 + 1).await });
            (report.await??.ok_or("w")?, cancel.await??.ok_or("job")?)
        };
        let finished = reported
            .1
            .events
            .iter()
            .chain(cancelled.events.iter())
            .filter(|e| e.kind == "job.finished")
            .count();
        ensure(
            finished == 1,
            format!("round {round}: job.finished {finished} times"),
        )?;
        let task = task_view(&*store, &id).await?;
        let job = job_view(&*store, &sub.job.id).await?;
        let consistent = match task.state {
            TaskState::Succeeded => {
                reported.0.accepted == [id.clone()]
                    && cancelled.cancelled.is_empty()
                    && job.state == JobState::Succeeded
            }
            TaskState::Cancelled => {
                reported.0.accepted.is_empty()
                    && cancelled.cancelled == [(w.clone(), id.clone())]
                    && job.state == JobState::Cancelled
            }
            _ => false,
        };
        ensure(
            consistent,
            format!(
                "round {round}: task {:?}, job {:?}, reply {:?}, cancelled {:?}",
                task.state, job.state, reported.0, cancelled.cancelled
            ),
        )?;
    }
    Ok(())
}

/// The last tasks of a job ending in results that race (two workers'
/// batches, each seeing the other's task unfinished) still record the job
/// as over, exactly once.
pub async fn racing_last_results_end_the_job_once(store: Arc<dyn Store>) -> TestResult {
    let (w1, w2) = (
        join(&*store, "w1", T0).await?,
        join(&*store, "w2", T0).await?,
    );
    for round in 0..ROUNDS * 4 {
        let sub = store.submit("owner", job(2, 1), None, T0).await?;
        let ids = ids_of(&sub)?;
        let mut leased = lease_ids(&*store, &w1, 1, T0).await?;
        leased.extend(lease_ids(&*store, &w2, 1, T0).await?);
        ensure(
            leased.len() == 2,
            format!("round {round}: leased {leased:?}"),
        )?;
        let reports = [(&w1, &leased[0].0), (&w2, &leased[1].0)].map(|(w, id)| {
            let (store, w, id) = (store.clone(), w.clone(), id.clone());
            tokio::spawn(async move { store.report(&w, vec![ok(&id, 1)], T0 + 1).await })
        });
        let mut finished = 0;
        for r in join_all(reports).await {
            let (reply, changes) = r??.ok_or("worker")?;
            ensure(
                reply.accepted.len() == 1,
                format!("round {round}: {reply:?}"),
            )?;
            finished += changes
                .events
                .iter()
                .filter(|e| e.kind == "job.finished")
                .count();
        }
        ensure(
            finished == 1,
            format!("round {round}: job.finished {finished} times"),
        )?;
        let view = job_view(&*store, &sub.job.id).await?;
        ensure(
            view.state == JobState::Succeeded && view.finished_at.is_some(),
            format!(
                "round {round}: job {:?}, finished {:?}",
                view.state, view.finished_at
            ),
        )?;
        ensure(ids.len() == 2, "two tasks")?;
    }
    Ok(())
}
