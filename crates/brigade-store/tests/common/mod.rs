//! Store-level behaviour every engine must have.
//!
//! The conformance cases live in [`cases`], one async body per behaviour,
//! each taking a fresh, empty store. [`conformance_tests!`] turns the list of
//! cases into one `#[tokio::test]` each; `tests/sqlite.rs` and
//! `tests/postgres.rs` invoke it once with the engine's opener, so a case
//! added to the list runs on both engines and the two cannot drift. A case
//! left out of the list is dead code, which `cases` denies.
//!
//! Below the helpers are the bodies of engine-specific tests (several
//! servers on one database, notifications), called by hand.

#![allow(dead_code, reason = "each test binary uses part of the helpers")]

pub mod cases;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use brigade_api::{
    Backoff, ErrorKind, JobState, Outcome, TaskError, TaskResult, TaskState, WorkerJoin,
};
use brigade_core::{NewJob, NewTask};
use brigade_store::{Remote, Store};

/// One `#[tokio::test]` per conformance case, on the engine `$open` opens.
///
/// `$open` names an async fn of the invoking file's root returning
/// `TestResult<Option<(guard, Arc<dyn Store>)>>`: a fresh, empty store and
/// whatever must live as long as it (a database file, a database), or `None`
/// to skip (PostgreSQL unreachable and skipping allowed). The tests are named
/// `conformance::<module>::<case>`.
macro_rules! conformance_tests {
    ($open:ident) => {
        $crate::common::conformance_tests!(@cases $open;
            basics {
                a_fresh_store_is_empty,
                lease_matches_queues_kinds_and_priority,
                values_round_trip,
                nul_characters_are_stored,
                large_batches_are_whole,
            }
            lifecycle {
                round_trip,
                stale_attempt,
                matching_heartbeat_cancel_retry,
                heartbeat_batch,
                trace_context_rides_with_the_tasks,
            }
            submit {
                idempotent_submit,
                scheduled_tasks_wait_for_promote_due,
                has_queued,
                promote_due_moves_what_is_due,
                submit_hands_tasks_to_waiting_workers,
            }
            jobs {
                jobs_pages_newest_first,
                jobs_filters,
                jobs_state_filter_agrees_with_the_view,
                job_tasks_page_in_submission_order,
                owners,
                delete_job_only_when_finished,
                job_ends_in_the_state_of_its_tasks,
            }
            results {
                report_rejection_codes,
                duplicate_result_in_one_batch,
                stale_result_does_not_shadow_the_current_one,
                report_and_lease,
                history_records_each_attempt,
                retry_in_ms_sets_the_retry_delay,
            }
            logs {
                logs_round_trip,
                logs_rejection_codes,
                logs_truncated_at_the_attempt_budget,
            }
            workers {
                workers_join_and_list,
                leave_hands_tasks_back,
                drain_worker_stops_leasing,
                reap_requeues_expired_leases,
            }
            queues {
                queues_count_tasks_and_workers,
                paused_queue_is_not_leased,
            }
            concurrency {
                concurrent_submits_with_one_key_make_one_job,
                concurrent_results_for_one_task_apply_once,
                cancel_racing_the_last_result_ends_the_job_once,
                racing_last_results_end_the_job_once,
            }
            graphs {
                a_diamond_runs_each_task_after_its_parents,
                a_failure_cancels_down_the_graph_and_runs_its_handlers,
                a_skipped_error_handler_leaves_the_job_succeeded,
                cancelling_a_parent_cascades_and_the_job_ends,
                spawned_tasks_join_their_spawners_group,
                a_rejected_result_spawns_nothing,
                a_spawn_that_would_wait_for_itself_fails_the_spawner,
                large_parents_ride_as_ids_and_page_with_outputs,
                progress_follows_the_attempt_rule,
            }
            callbacks {
                a_finished_job_queues_one_delivery_claimed_once,
                an_expired_claim_is_taken_over_and_given_up_deliveries_stay_put,
                jobs_without_a_callback_queue_nothing,
            }
            retention {
                prune_deletes_expired_jobs_with_everything,
                prune_works_in_small_batches,
                job_view_shows_its_expiry,
            }
            schedules {
                schedule_fires_once_under_concurrent_duty_calls,
                schedule_catch_up_policies,
                schedule_overlap_policies,
                schedule_pause_trigger_and_delete,
            }
            flow {
                unique_jobs_answer_with_the_holder,
                unique_and_idempotency_keys_agree,
                concurrent_unique_submits_make_one_job,
                deaths_in_a_row_make_a_task_poison,
                tasks_are_found_across_jobs,
                bulk_retry_and_cancel_follow_the_filters,
                a_schedule_fire_respects_the_jobs_unique_key,
            }
            limits {
                concurrency_holds_and_blocks_nobody,
                patterns_give_each_key_its_own_budget,
                a_rate_spaces_starts_on_the_clock,
                fair_keys_take_turns,
            }
            tasks {
                cancel_task,
                cancel_job_cancels_running_tasks,
                retry_task,
                retry_takes_back_a_job_cancel,
            }
        );
    };
    (@cases $open:ident; $($module:ident { $($(#[$attr:meta])* $case:ident),* $(,)? })*) => {
        mod conformance {
            $(
                mod $module {
                    $(
                        $(#[$attr])*
                        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                        async fn $case() -> $crate::common::TestResult {
                            let Some((_engine, store)) = super::super::$open().await? else {
                                return Ok(());
                            };
                            $crate::common::cases::$module::$case(store).await
                        }
                    )*
                }
            )*
        }
    };
}
pub(crate) use conformance_tests;

/// Errors of a test body.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The tests' clock: a fixed instant, advanced by hand.
pub const T0: i64 = 1_700_000_000_000;
/// Lease time to live.
pub const TTL: i64 = 30_000;

/// Fail the test with `msg` unless `cond`.
pub fn ensure(cond: bool, msg: impl Into<String>) -> TestResult {
    if cond { Ok(()) } else { Err(msg.into().into()) }
}

/// A task of kind `echo` in queue `default`.
pub fn task(max_attempts: u32) -> NewTask {
    NewTask {
        kind: "echo".into(),
        input: r#"{"n": 1, "text": "hi"}"#.into(),
        name: None,
        queue: "default".into(),
        priority: 0,
        max_attempts,
        timeout_ms: 60_000,
        backoff: Backoff {
            jitter: false,
            ..Backoff::default()
        },
        requires: BTreeMap::new(),
        run_at: None,
        key: None,
        after: Vec::new(),
        run_if: None,
        limits: Vec::new(),
        fair_key: None,
    }
}

/// A job of `n` tasks.
pub fn job(n: usize, max_attempts: u32) -> NewJob {
    NewJob {
        name: Some("test".into()),
        queue: "default".into(),
        labels: BTreeMap::new(),
        tasks: (0..n).map(|_| task(max_attempts)).collect(),
        keep_ms: None,
        unique: None,
        callback: None,
        traceparent: None,
    }
}

/// Register a worker for `echo` tasks in `default`.
pub async fn join(store: &dyn Store, name: &str, now: i64) -> TestResult<String> {
    let (w, _) = store
        .join_worker(
            "owner",
            WorkerJoin {
                name: name.into(),
                hostname: "host".into(),
                queues: vec!["default".into()],
                kinds: vec!["echo".into()],
                labels: BTreeMap::new(),
                capacity: 100,
                version: "test".into(),
            },
            now,
        )
        .await?;
    Ok(w.id)
}

/// A successful result.
pub fn ok(task_id: &str, attempt: u32) -> TaskResult {
    TaskResult {
        task_id: task_id.into(),
        attempt,
        outcome: Outcome::Succeeded,
        output: serde_json::json!({"ok": true}),
        error: None,
        retryable: None,
        retry_in_ms: None,
        duration_ms: Some(1),
        spawn: Vec::new(),
    }
}

/// A failed result.
pub fn failed(task_id: &str, attempt: u32, retryable: bool) -> TaskResult {
    TaskResult {
        task_id: task_id.into(),
        attempt,
        outcome: Outcome::Failed,
        output: serde_json::Value::Null,
        error: Some(TaskError::new(ErrorKind::Handler, "boom")),
        retryable: Some(retryable),
        retry_in_ms: None,
        duration_ms: Some(1),
        spawn: Vec::new(),
    }
}

pub async fn task_state(store: &dyn Store, id: &str) -> TestResult<TaskState> {
    Ok(store.task(id).await?.ok_or("task vanished")?.state)
}

/// `leasers` concurrent workers (spread over `stores`) drain `total` tasks:
/// each task is handed out once and each result accepted once.
pub async fn concurrent_lease(stores: Vec<Arc<dyn Store>>, total: usize) -> TestResult {
    let first = stores.first().ok_or("a store")?.clone();
    let jobs = 4;
    let mut job_ids = Vec::new();
    for _ in 0..jobs {
        let sub = first
            .submit("owner", job(total / jobs, 1), None, T0)
            .await?;
        job_ids.push(sub.job.id);
    }
    let leasers = 4;
    let mut handles = Vec::new();
    for i in 0..leasers {
        let store = stores[i % stores.len()].clone();
        handles.push(tokio::spawn(async move {
            let worker = join(&*store, &format!("w{i}"), T0).await?;
            let mut leased = Vec::new();
            let mut accepted = 0usize;
            let mut rejected = 0usize;
            loop {
                let (batch, _) = store.lease(&worker, 25, T0 + 1, TTL).await?.ok_or("w")?;
                if batch.is_empty() {
                    break;
                }
                let results = batch.iter().map(|t| ok(&t.id, t.attempt)).collect();
                let (reply, _) = store.report(&worker, results, T0 + 2).await?.ok_or("w")?;
                accepted += reply.accepted.len();
                rejected += reply.rejected.len();
                leased.extend(batch.into_iter().map(|t| t.id));
            }
            TestResult::Ok((leased, accepted, rejected))
        }));
    }
    let mut all = Vec::new();
    let mut accepted = 0;
    let mut rejected = 0;
    for h in handles {
        let (leased, a, r) = h.await??;
        all.extend(leased);
        accepted += a;
        rejected += r;
    }
    let unique: HashSet<&String> = all.iter().collect();
    ensure(
        unique.len() == all.len(),
        format!("{} leases of {} tasks", all.len(), unique.len()),
    )?;
    ensure(
        all.len() == total,
        format!("leased {} of {total}", all.len()),
    )?;
    ensure(
        accepted == total && rejected == 0,
        format!("accepted {accepted}, rejected {rejected}"),
    )?;
    for id in &job_ids {
        let job = first.job(id).await?.ok_or("job")?;
        ensure(
            job.state == JobState::Succeeded && job.finished_at.is_some(),
            format!("job {id} is {:?}", job.state),
        )?;
    }
    Ok(())
}

/// Two reapers at once requeue a lost worker's task once.
pub async fn reap_once(a: Arc<dyn Store>, b: Arc<dyn Store>) -> TestResult {
    let sub = a.submit("owner", job(3, 3), None, T0).await?;
    let ids: BTreeSet<String> = sub.job.task_ids.ok_or("ids")?.into_iter().collect();
    let worker = join(&*a, "doomed", T0).await?;
    let (leased, _) = a.lease(&worker, 10, T0, TTL).await?.ok_or("w")?;
    ensure(leased.len() == 3, "leased")?;
    let later = T0 + 10 * TTL;
    let (ra, rb) = tokio::join!(a.reap(later, TTL), b.reap(later, TTL));
    let (ra, rb) = (ra?, rb?);
    let events: Vec<_> = ra.events.iter().chain(rb.events.iter()).collect();
    let lost = events.iter().filter(|e| e.kind == "worker.lost").count();
    ensure(lost == 1, format!("worker lost {lost} times"))?;
    let retried: Vec<&String> = events
        .iter()
        .filter(|e| e.kind == "task.retrying")
        .filter_map(|e| e.task_id.as_ref())
        .collect();
    ensure(
        retried.len() == 3
            && retried.iter().copied().collect::<BTreeSet<_>>() == ids.iter().collect(),
        format!("requeued {retried:?}"),
    )?;
    ensure(ra.ready || rb.ready, "ready after requeue")?;
    for id in &ids {
        let t = a.task(id).await?.ok_or("task")?;
        ensure(
            t.state == TaskState::Queued && t.attempt == 1,
            format!("{id} is {:?} on attempt {}", t.state, t.attempt),
        )?;
        let lost = t
            .history
            .ok_or("history")?
            .iter()
            .filter(|h| h.outcome == "lost")
            .count();
        ensure(lost == 1, "one lost attempt")?;
    }
    // Reaping again changes nothing.
    let again = b.reap(later + 1, TTL).await?;
    ensure(again.events.is_empty(), "second reap is quiet")?;
    // The lost worker's late result is refused; a new worker gets attempt 2.
    let other = join(&*b, "fresh", later).await?;
    let (leased, _) = b.lease(&other, 10, later + 2, TTL).await?.ok_or("w")?;
    ensure(
        leased.len() == 3 && leased.iter().all(|t| t.attempt == 2),
        "second attempts",
    )?;
    let (reply, _) = a
        .report(&worker, vec![ok(&leased[0].id, 1)], later + 3)
        .await?
        .ok_or("w")?;
    ensure(reply.rejected.len() == 1, "late result refused")?;
    Ok(())
}

/// Wait for a remote notification matching `want`.
pub async fn expect_remote(
    rx: &mut tokio::sync::broadcast::Receiver<Remote>,
    what: &str,
    want: impl Fn(&Remote) -> bool,
) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| format!("no remote {what} within 10s"))??;
        if want(&got) {
            return Ok(());
        }
    }
}

/// Changes made through `a` reach `b` as remote notifications; `a` does not hear itself.
pub async fn remote_notifications(a: Arc<dyn Store>, b: Arc<dyn Store>) -> TestResult {
    let mut on_b = b.remote().ok_or("b has remote notifications")?;
    let mut on_a = a.remote().ok_or("a has remote notifications")?;
    let sub = a.submit("owner", job(1, 1), None, T0).await?;
    let job_id = sub.job.id.clone();
    expect_remote(&mut on_b, "job.created", |r| {
        matches!(r, Remote::Event(e) if e.kind == "job.created" && e.job_id.as_deref() == Some(&job_id))
    })
    .await?;
    expect_remote(&mut on_b, "ready", |r| matches!(r, Remote::Ready)).await?;
    // Through b: a hears the lease and the result.
    let worker = join(&*b, "w", T0).await?;
    let (leased, _) = b.lease(&worker, 1, T0, TTL).await?.ok_or("w")?;
    let (reply, _) = b
        .report(&worker, vec![ok(&leased[0].id, 1)], T0 + 1)
        .await?
        .ok_or("w")?;
    ensure(reply.accepted.len() == 1, "accepted")?;
    expect_remote(
        &mut on_a,
        "job.finished",
        |r| matches!(r, Remote::Event(e) if e.kind == "job.finished"),
    )
    .await?;
    // a never heard its own job.created.
    let mut own = 0;
    while let Ok(r) = on_a.try_recv() {
        if matches!(&r, Remote::Event(e) if e.kind == "job.created") {
            own += 1;
        }
    }
    ensure(own == 0, "a heard its own event")?;
    // Many events in one transaction arrive, in order.
    let big = a.submit("owner", job(300, 1), None, T0 + 2).await?;
    let w2 = join(&*a, "w2", T0).await?;
    let (leased, changes) = a.lease(&w2, 300, T0 + 3, TTL).await?.ok_or("w")?;
    ensure(
        leased.len() == 300 && changes.events.len() == 300,
        "big lease",
    )?;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 300 {
        let got = tokio::time::timeout_at(deadline, on_b.recv())
            .await
            .map_err(|_| format!("only {} of 300 task.started", seen.len()))??;
        if let Remote::Event(e) = got
            && e.kind == "task.started"
            && e.job_id.as_deref() == Some(big.job.id.as_str())
        {
            seen.push(e.task_id.unwrap_or_default());
        }
    }
    let expected: Vec<String> = leased.into_iter().map(|t| t.id).collect();
    ensure(seen == expected, "events in order")?;
    Ok(())
}

/// Register a worker with labels.
pub async fn join_with(
    store: &dyn Store,
    name: &str,
    labels: &[(&str, &str)],
    now: i64,
) -> TestResult<String> {
    let (w, _) = store
        .join_worker(
            "owner",
            WorkerJoin {
                name: name.into(),
                hostname: "host".into(),
                queues: vec!["default".into(), "other".into()],
                kinds: vec!["echo".into()],
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                capacity: 10,
                version: "test".into(),
            },
            now,
        )
        .await?;
    Ok(w.id)
}

pub fn beat(running: &[&String]) -> brigade_api::Heartbeat {
    brigade_api::Heartbeat {
        running: running.iter().map(|s| (*s).clone()).collect(),
        load: brigade_api::Load::default(),
    }
}

/// A registration of a worker for `echo` tasks in `queues`.
pub fn worker_join(name: &str, queues: &[&str]) -> WorkerJoin {
    WorkerJoin {
        name: name.into(),
        hostname: format!("{name}.host"),
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        kinds: vec!["echo".into()],
        labels: BTreeMap::new(),
        capacity: 8,
        version: "test".into(),
    }
}

/// Register a worker of `owner` for `echo` tasks in `queues`.
pub async fn join_to(
    store: &dyn Store,
    owner: &str,
    name: &str,
    queues: &[&str],
    now: i64,
) -> TestResult<String> {
    let (w, _) = store
        .join_worker(owner, worker_join(name, queues), now)
        .await?;
    Ok(w.id)
}

/// A job of these tasks, in queue `default`.
pub fn job_with(tasks: Vec<NewTask>) -> NewJob {
    NewJob {
        name: None,
        queue: "default".into(),
        labels: BTreeMap::new(),
        tasks,
        keep_ms: None,
        unique: None,
        callback: None,
        traceparent: None,
    }
}

/// A task of `task(max_attempts)` in another queue.
pub fn task_in(queue: &str, max_attempts: u32) -> NewTask {
    NewTask {
        queue: queue.into(),
        ..task(max_attempts)
    }
}

/// The kinds of a change's events, in order.
pub fn kinds(changes: &brigade_store::Changes) -> Vec<&str> {
    changes.events.iter().map(|e| e.kind.as_str()).collect()
}

/// `(task id, code)` of each rejection, in order.
pub fn codes(
    rejected: &[brigade_api::RejectedResult],
) -> Vec<(String, brigade_api::RejectionCode)> {
    rejected
        .iter()
        .map(|r| (r.task_id.clone(), r.code))
        .collect()
}

/// The task ids a submit returned.
pub fn ids_of(sub: &brigade_store::Submitted) -> TestResult<Vec<String>> {
    Ok(sub
        .job
        .task_ids
        .clone()
        .ok_or("submit returned no task ids")?)
}

/// Lease up to `max` tasks for a known worker; their ids and attempts.
pub async fn lease_ids(
    store: &dyn Store,
    worker: &str,
    max: u32,
    now: i64,
) -> TestResult<Vec<(String, u32)>> {
    let (leased, _) = store
        .lease(worker, max, now, TTL)
        .await?
        .ok_or("lease: worker unknown")?;
    Ok(leased.into_iter().map(|t| (t.id, t.attempt)).collect())
}

/// A task's view (with history); an error when unknown.
pub async fn task_view(store: &dyn Store, id: &str) -> TestResult<brigade_api::TaskView> {
    Ok(store
        .task(id)
        .await?
        .ok_or_else(|| format!("task {id} unknown"))?)
}

/// A job's view; an error when unknown.
pub async fn job_view(store: &dyn Store, id: &str) -> TestResult<brigade_api::JobView> {
    Ok(store
        .job(id)
        .await?
        .ok_or_else(|| format!("job {id} unknown"))?)
}

/// The outcomes of a task's history, oldest first.
pub async fn outcomes(store: &dyn Store, id: &str) -> TestResult<Vec<String>> {
    Ok(task_view(store, id)
        .await?
        .history
        .ok_or("task without history")?
        .into_iter()
        .map(|h| h.outcome)
        .collect())
}

/// Report results of a known worker.
pub async fn report(
    store: &dyn Store,
    worker: &str,
    results: Vec<TaskResult>,
    now: i64,
) -> TestResult<(brigade_api::ResultsReply, brigade_store::Changes)> {
    Ok(store
        .report(worker, results, now)
        .await?
        .ok_or("report: worker unknown")?)
}

/// A far-off time when every retry of the tests is due.
pub const LATER: i64 = T0 + 24 * 3_600_000;
