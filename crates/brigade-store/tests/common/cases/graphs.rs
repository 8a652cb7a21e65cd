//! Jobs as graphs: waiting, release, dependency cancels, spawn, progress.

use std::sync::Arc;

use brigade_api::{ErrorKind, JobState, LeasedTask, RunIf, TaskSpec, TaskState};
use brigade_core::NewTask;
use brigade_store::Store;
use serde_json::json;

use crate::common::{
    T0, TTL, TestResult, ensure, failed, ids_of, job_view, job_with, join, kinds, ok, report, task,
    task_state, task_view,
};

/// An `echo` task keyed `key` waiting for `after`.
fn node(key: Option<&str>, after: &[&str], run_if: Option<RunIf>) -> NewTask {
    let mut t = task(1);
    t.key = key.map(str::to_owned);
    t.after = after.iter().map(|s| (*s).to_owned()).collect();
    t.run_if = if after.is_empty() {
        None
    } else {
        Some(run_if.unwrap_or_default())
    };
    t
}

async fn lease(store: &dyn Store, worker: &str, now: i64) -> TestResult<Vec<LeasedTask>> {
    Ok(store.lease(worker, 100, now, TTL).await?.ok_or("worker")?.0)
}

fn ids(leased: &[LeasedTask]) -> Vec<String> {
    leased.iter().map(|t| t.id.clone()).collect()
}

fn with_output(id: &str, attempt: u32, output: serde_json::Value) -> brigade_api::TaskResult {
    brigade_api::TaskResult {
        output,
        ..ok(id, attempt)
    }
}

pub async fn a_diamond_runs_each_task_after_its_parents(store: Arc<dyn Store>) -> TestResult {
    let sub = store
        .submit(
            "owner",
            job_with(vec![
                node(Some("a"), &[], None),
                node(Some("b"), &["a"], None),
                node(Some("c"), &["a"], None),
                node(Some("d"), &["b", "c"], None),
            ]),
            None,
            T0,
        )
        .await?;
    let t = ids_of(&sub)?;
    ensure(
        sub.job.progress.waiting == 3 && sub.job.progress.queued == 1,
        format!("progress at submit {:?}", sub.job.progress),
    )?;
    let w = join(&*store, "w", T0).await?;
    let first = lease(&*store, &w, T0 + 1).await?;
    ensure(ids(&first) == vec![t[0].clone()], "only a is leasable")?;
    ensure(first[0].parents.is_none(), "a waits for nothing")?;
    let (_, changes) = report(&*store, &w, vec![ok(&t[0], 1)], T0 + 2).await?;
    ensure(changes.ready, "releasing b and c wakes the workers")?;
    let second = lease(&*store, &w, T0 + 3).await?;
    ensure(
        ids(&second) == vec![t[1].clone(), t[2].clone()],
        format!("b and c next, got {:?}", ids(&second)),
    )?;
    let parents = second[0].parents.clone().ok_or("b carries its parents")?;
    ensure(
        parents.len() == 1 && parents[0].task_id == t[0] && parents[0].key.as_deref() == Some("a"),
        format!("b's parents {parents:?}"),
    )?;
    report(&*store, &w, vec![with_output(&t[1], 1, json!("B"))], T0 + 4).await?;
    ensure(
        task_state(&*store, &t[3]).await? == TaskState::Waiting,
        "d waits for c still",
    )?;
    ensure(
        lease(&*store, &w, T0 + 5).await?.is_empty(),
        "nothing leasable",
    )?;
    report(&*store, &w, vec![with_output(&t[2], 1, json!("C"))], T0 + 6).await?;
    let last = lease(&*store, &w, T0 + 7).await?;
    ensure(ids(&last) == vec![t[3].clone()], "d last")?;
    let parents = last[0].parents.clone().ok_or("d carries its parents")?;
    let seen: Vec<(String, serde_json::Value)> = parents
        .iter()
        .map(|p| (p.task_id.clone(), p.output.clone()))
        .collect();
    ensure(
        seen == vec![(t[1].clone(), json!("B")), (t[2].clone(), json!("C"))],
        format!("d sees b and c in order: {seen:?}"),
    )?;
    ensure(!last[0].parents_truncated, "small outputs ride inline")?;
    report(&*store, &w, vec![ok(&t[3], 1)], T0 + 8).await?;
    ensure(
        job_view(&*store, &sub.job.id).await?.state == JobState::Succeeded,
        "the diamond succeeded",
    )
}

pub async fn a_failure_cancels_down_the_graph_and_runs_its_handlers(
    store: Arc<dyn Store>,
) -> TestResult {
    let sub = store
        .submit(
            "owner",
            job_with(vec![
                node(Some("a"), &[], None),
                node(Some("b"), &["a"], None),
                node(Some("c"), &["b"], None),
                node(Some("d"), &["c"], None),
                node(Some("on-error"), &["a"], Some(RunIf::Failed)),
                node(None, &["d"], Some(RunIf::Finished)),
            ]),
            None,
            T0,
        )
        .await?;
    let t = ids_of(&sub)?;
    let w = join(&*store, "w", T0).await?;
    lease(&*store, &w, T0 + 1).await?;
    let (_, changes) = report(&*store, &w, vec![failed(&t[0], 1, false)], T0 + 2).await?;
    for (i, name) in [(1, "b"), (2, "c"), (3, "d")] {
        let v = task_view(&*store, &t[i]).await?;
        ensure(
            v.state == TaskState::Cancelled
                && v.error.as_ref().map(|e| e.kind) == Some(ErrorKind::Dependency),
            format!(
                "{name} cancelled by dependency: {:?} {:?}",
                v.state, v.error
            ),
        )?;
    }
    ensure(
        kinds(&changes)
            .iter()
            .filter(|k| **k == "task.cancelled")
            .count()
            == 3,
        format!("three cancel events: {:?}", kinds(&changes)),
    )?;
    let next = lease(&*store, &w, T0 + 3).await?;
    ensure(
        ids(&next) == vec![t[4].clone(), t[5].clone()],
        format!("the error handler and the finally run: {:?}", ids(&next)),
    )?;
    let finally_parents = next[1].parents.clone().ok_or("parents")?;
    ensure(
        finally_parents.len() == 1 && finally_parents[0].state == TaskState::Cancelled,
        format!("the finally sees d cancelled: {finally_parents:?}"),
    )?;
    report(&*store, &w, vec![ok(&t[4], 1), ok(&t[5], 1)], T0 + 4).await?;
    let job = job_view(&*store, &sub.job.id).await?;
    ensure(
        job.state == JobState::Failed,
        format!("a failure and its cancels: failed, got {:?}", job.state),
    )
}

pub async fn a_skipped_error_handler_leaves_the_job_succeeded(store: Arc<dyn Store>) -> TestResult {
    let sub = store
        .submit(
            "owner",
            job_with(vec![
                node(Some("a"), &[], None),
                node(None, &["a"], Some(RunIf::Failed)),
            ]),
            None,
            T0,
        )
        .await?;
    let t = ids_of(&sub)?;
    let w = join(&*store, "w", T0).await?;
    lease(&*store, &w, T0 + 1).await?;
    report(&*store, &w, vec![ok(&t[0], 1)], T0 + 2).await?;
    let handler = task_view(&*store, &t[1]).await?;
    ensure(
        handler.state == TaskState::Cancelled
            && handler.error.map(|e| e.kind) == Some(ErrorKind::Dependency),
        "nothing failed: the handler is skipped",
    )?;
    let job = job_view(&*store, &sub.job.id).await?;
    ensure(
        job.state == JobState::Succeeded && job.finished_at.is_some(),
        format!("the job succeeded: {:?}", job.state),
    )
}

pub async fn cancelling_a_parent_cascades_and_the_job_ends(store: Arc<dyn Store>) -> TestResult {
    let sub = store
        .submit(
            "owner",
            job_with(vec![
                node(Some("a"), &[], None),
                node(Some("b"), &["a"], None),
                node(None, &["b"], None),
            ]),
            None,
            T0,
        )
        .await?;
    let t = ids_of(&sub)?;
    store.cancel_task(&t[0], T0 + 1).await?.ok_or("task")?;
    for id in &t[1..] {
        ensure(
            task_state(&*store, id).await? == TaskState::Cancelled,
            "waiters below a cancelled task are cancelled",
        )?;
    }
    let job = job_view(&*store, &sub.job.id).await?;
    ensure(
        job.state == JobState::Cancelled && job.finished_at.is_some(),
        format!("the job ends cancelled: {:?}", job.state),
    )
}

pub async fn spawned_tasks_join_their_spawners_group(store: Arc<dyn Store>) -> TestResult {
    let sub = store
        .submit(
            "owner",
            job_with(vec![
                node(Some("split"), &[], None),
                node(Some("reduce"), &["split"], None),
            ]),
            None,
            T0,
        )
        .await?;
    let t = ids_of(&sub)?;
    let w = join(&*store, "w", T0).await?;
    lease(&*store, &w, T0 + 1).await?;
    let maps: Vec<TaskSpec> = (0..3).map(|i| TaskSpec::new("echo", json!(i))).collect();
    let spawning = brigade_api::TaskResult {
        spawn: maps,
        ..with_output(&t[0], 1, json!("chunks"))
    };
    let (reply, changes) = report(&*store, &w, vec![spawning], T0 + 2).await?;
    ensure(reply.accepted == vec![t[0].clone()], format!("{reply:?}"))?;
    ensure(changes.ready, "the maps are ready")?;
    let split = task_view(&*store, &t[0]).await?;
    let children = split.children.clone().unwrap_or_default();
    ensure(
        children.len() == 3,
        format!("split has 3 children: {children:?}"),
    )?;
    ensure(
        task_state(&*store, &t[1]).await? == TaskState::Waiting,
        "reduce waits for the maps split spawned",
    )?;
    let maps = lease(&*store, &w, T0 + 3).await?;
    ensure(ids(&maps) == children, "the maps are leased in spawn order")?;
    let map = task_view(&*store, &children[0]).await?;
    ensure(
        map.spawned_by.as_deref() == Some(t[0].as_str()),
        "a map names its spawner",
    )?;
    let results = maps
        .iter()
        .enumerate()
        .map(|(i, m)| with_output(&m.id, m.attempt, json!(i * 10)))
        .collect();
    report(&*store, &w, results, T0 + 4).await?;
    let reduce = lease(&*store, &w, T0 + 5).await?;
    ensure(ids(&reduce) == vec![t[1].clone()], "reduce runs last")?;
    let parents = reduce[0].parents.clone().ok_or("parents")?;
    let outputs: Vec<serde_json::Value> = parents.iter().map(|p| p.output.clone()).collect();
    ensure(
        outputs == vec![json!("chunks"), json!(0), json!(10), json!(20)],
        format!("reduce sees split, then every map: {outputs:?}"),
    )?;
    let job = job_view(&*store, &sub.job.id).await?;
    ensure(job.progress.total == 5, format!("{:?}", job.progress))
}

pub async fn a_rejected_result_spawns_nothing(store: Arc<dyn Store>) -> TestResult {
    let sub = store
        .submit(
            "owner",
            job_with(vec![node(Some("split"), &[], None)]),
            None,
            T0,
        )
        .await?;
    let t = ids_of(&sub)?;
    let w = join(&*store, "w", T0).await?;
    lease(&*store, &w, T0 + 1).await?;
    let stale = brigade_api::TaskResult {
        spawn: vec![TaskSpec::new("echo", json!(1))],
        ..ok(&t[0], 7)
    };
    let (reply, _) = report(&*store, &w, vec![stale], T0 + 2).await?;
    ensure(reply.rejected.len() == 1, "a stale attempt is rejected")?;
    let job = job_view(&*store, &sub.job.id).await?;
    ensure(
        job.progress.total == 1,
        format!("and spawned nothing: {:?}", job.progress),
    )?;
    let good = brigade_api::TaskResult {
        spawn: vec![TaskSpec::new("echo", json!(1))],
        ..ok(&t[0], 1)
    };
    report(&*store, &w, vec![good.clone()], T0 + 3).await?;
    let (again, _) = report(&*store, &w, vec![good], T0 + 4).await?;
    ensure(again.rejected.len() == 1, "a replay is rejected")?;
    ensure(
        job_view(&*store, &sub.job.id).await?.progress.total == 2,
        "the children exist once",
    )
}

pub async fn a_spawn_that_would_wait_for_itself_fails_the_spawner(
    store: Arc<dyn Store>,
) -> TestResult {
    let sub = store
        .submit(
            "owner",
            job_with(vec![
                node(Some("split"), &[], None),
                node(Some("reduce"), &["split"], None),
            ]),
            None,
            T0,
        )
        .await?;
    let t = ids_of(&sub)?;
    let w = join(&*store, "w", T0).await?;
    lease(&*store, &w, T0 + 1).await?;
    let cyclic = brigade_api::TaskResult {
        spawn: vec![TaskSpec::new("echo", json!(1)).after(["reduce"])],
        ..ok(&t[0], 1)
    };
    let (reply, _) = report(&*store, &w, vec![cyclic], T0 + 2).await?;
    ensure(reply.accepted.len() == 1, "the result is recorded")?;
    let split = task_view(&*store, &t[0]).await?;
    ensure(
        split.state == TaskState::Failed
            && split.error.as_ref().map(|e| e.kind) == Some(ErrorKind::Spawn),
        format!("as a spawn failure: {:?} {:?}", split.state, split.error),
    )?;
    let job = job_view(&*store, &sub.job.id).await?;
    ensure(
        job.progress.total == 2 && job.state == JobState::Failed,
        format!(
            "nothing spawned, the job failed: {:?} {:?}",
            job.progress, job.state
        ),
    )
}

pub async fn large_parents_ride_as_ids_and_page_with_outputs(store: Arc<dyn Store>) -> TestResult {
    let sub = store
        .submit(
            "owner",
            job_with(vec![
                node(Some("big"), &[], None),
                node(Some("big"), &[], None),
                node(Some("big"), &[], None),
                node(None, &["big"], None),
            ]),
            None,
            T0,
        )
        .await?;
    let t = ids_of(&sub)?;
    let w = join(&*store, "w", T0).await?;
    let bigs = lease(&*store, &w, T0 + 1).await?;
    let blob = "x".repeat(400_000);
    let results = bigs
        .iter()
        .map(|b| with_output(&b.id, b.attempt, json!(blob)))
        .collect();
    report(&*store, &w, results, T0 + 2).await?;
    let reduce = lease(&*store, &w, T0 + 3).await?;
    ensure(reduce.len() == 1, "the reducer is leased")?;
    ensure(
        reduce[0].parents_truncated,
        "1.2 MB of outputs are over the bound",
    )?;
    let parents = reduce[0].parents.clone().ok_or("parents")?;
    ensure(
        parents.len() == 3 && parents.iter().all(|p| p.output.is_null()),
        "ids only",
    )?;
    let first = store
        .task_parents(&t[3], 2, None)
        .await?
        .ok_or("task known")?;
    ensure(
        first.items.len() == 2 && first.items[0].output == json!(blob),
        "a page with outputs",
    )?;
    let rest = store
        .task_parents(&t[3], 2, first.next_cursor.as_deref())
        .await?
        .ok_or("task known")?;
    ensure(
        rest.items.len() == 1 && rest.next_cursor.is_none() && rest.items[0].task_id == t[2],
        "and the rest",
    )
}

pub async fn progress_follows_the_attempt_rule(store: Arc<dyn Store>) -> TestResult {
    let sub = store
        .submit("owner", job_with(vec![task(2)]), None, T0)
        .await?;
    let t = ids_of(&sub)?;
    let w = join(&*store, "w", T0).await?;
    lease(&*store, &w, T0 + 1).await?;
    let report_of = |attempt: u32, done: u64| brigade_api::ProgressReport {
        task_id: t[0].clone(),
        attempt,
        done,
        total: Some(100),
        message: Some(format!("page {done}")),
    };
    let (reply, changes) = store
        .report_progress(&w, vec![report_of(1, 30), report_of(2, 50)], T0 + 2)
        .await?
        .ok_or("worker")?;
    ensure(
        reply.accepted == vec![t[0].clone()] && reply.rejected.len() == 1,
        format!("{reply:?}"),
    )?;
    ensure(
        kinds(&changes) == vec!["task.progress"],
        format!("{:?}", kinds(&changes)),
    )?;
    let view = task_view(&*store, &t[0]).await?;
    let p = view.progress.ok_or("progress in the view")?;
    ensure(
        p.done == 30 && p.total == Some(100) && p.message.as_deref() == Some("page 30"),
        format!("{p:?}"),
    )?;
    ensure(
        store
            .report_progress("nobody", vec![report_of(1, 1)], T0 + 3)
            .await?
            .is_none(),
        "an unknown worker",
    )
}
