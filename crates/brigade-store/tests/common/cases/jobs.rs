//! Jobs: listing and paging, filters, a job's tasks, owners, deleting, and
//! the state a job ends in.

use std::collections::BTreeMap;
use std::sync::Arc;

use brigade_api::{JobState, JobView, LogBatch, TaskState};
use brigade_core::{NewJob, from_ms};
use brigade_store::{DeleteOutcome, JobFilter, Store};

use crate::common::{
    T0, TestResult, ensure, failed, ids_of, job, job_view, join, join_to, kinds, lease_ids, ok,
    report, task,
};

fn named(name: &str, labels: &[(&str, &str)]) -> NewJob {
    NewJob {
        name: Some(name.into()),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        ..job(1, 1)
    }
}

fn job_ids(page: &[JobView]) -> Vec<&str> {
    page.iter().map(|j| j.id.as_str()).collect()
}

/// `jobs` lists newest first; a page of `limit` carries a cursor to the
/// next while there are more, and the last page none.
pub async fn jobs_pages_newest_first(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let mut made = Vec::new();
    for i in 0..5 {
        let sub = store
            .submit("owner", named(&format!("j{i}"), &[]), None, T0 + i)
            .await?;
        made.push(sub.job.id);
    }
    made.reverse();
    let all = JobFilter::default();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.jobs(&all, 2, cursor.as_deref()).await?;
        pages += 1;
        ensure(page.items.len() <= 2, "a page holds at most limit jobs")?;
        seen.extend(page.items.iter().map(|j| j.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        ensure(pages < 10, "paging does not end")?;
    }
    ensure(pages == 3, format!("5 jobs in pages of 2: {pages} pages"))?;
    ensure(seen == made, format!("newest first, each once: {seen:?}"))?;
    // A page holding exactly the rest has no cursor.
    let exact = store.jobs(&all, 5, None).await?;
    ensure(
        exact.items.len() == 5 && exact.next_cursor.is_none(),
        "an exact page ends the list",
    )?;
    let first = store.jobs(&all, 1, None).await?;
    ensure(
        first.items.first().and_then(|j| j.name.as_deref()) == Some("j4"),
        "the newest job first",
    )?;
    Ok(())
}

/// Filters by name, label, owner and state, alone, together and across pages.
pub async fn jobs_filters(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let a = store
        .submit("alice", named("build", &[("team", "red")]), None, T0)
        .await?;
    let a_task = ids_of(&a)?.remove(0);
    let a = a.job.id;
    let b = store
        .submit("bob", named("build", &[("team", "blue")]), None, T0 + 1)
        .await?
        .job
        .id;
    let c = store
        .submit(
            "alice",
            named("deploy", &[("team", "red"), ("env", "prod")]),
            None,
            T0 + 2,
        )
        .await?
        .job
        .id;
    let list = |filter: JobFilter| async move {
        let page = store.jobs(&filter, 10, None).await?;
        TestResult::Ok(
            job_ids(&page.items)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    };
    let by_name = JobFilter {
        name: Some("build".into()),
        ..JobFilter::default()
    };
    ensure(
        list(by_name.clone()).await? == [b.as_str(), a.as_str()],
        "by name",
    )?;
    let by_owner = JobFilter {
        owner: Some("alice".into()),
        ..JobFilter::default()
    };
    ensure(
        list(by_owner.clone()).await? == [c.as_str(), a.as_str()],
        "by owner",
    )?;
    let label = |k: &str, v: &str| JobFilter {
        label: Some((k.into(), v.into())),
        ..JobFilter::default()
    };
    ensure(
        list(label("team", "red")).await? == [c.as_str(), a.as_str()],
        "by label",
    )?;
    ensure(
        list(label("env", "prod")).await? == [c.as_str()],
        "by a second label",
    )?;
    ensure(
        list(label("team", "green")).await?.is_empty(),
        "no such label value",
    )?;
    ensure(
        list(label("red", "team")).await?.is_empty(),
        "key and value differ",
    )?;
    ensure(
        list(JobFilter {
            owner: Some("alice".into()),
            ..by_name.clone()
        })
        .await?
            == [a.as_str()],
        "name and owner",
    )?;
    ensure(
        list(JobFilter {
            owner: Some("carol".into()),
            ..JobFilter::default()
        })
        .await?
        .is_empty(),
        "an owner without jobs",
    )?;

    // States: the oldest task goes first, a's, and succeeds.
    let w = join(store, "w", T0).await?;
    let leased = lease_ids(store, &w, 1, T0 + 3).await?;
    ensure(
        leased == [(a_task.clone(), 1)],
        format!("leased {leased:?}"),
    )?;
    let by_state = |s: JobState| JobFilter {
        state: Some(s),
        ..JobFilter::default()
    };
    ensure(
        list(by_state(JobState::Running)).await? == [a.as_str()],
        "running",
    )?;
    report(store, &w, vec![ok(&a_task, 1)], T0 + 4).await?;
    ensure(
        list(by_state(JobState::Succeeded)).await? == [a.as_str()],
        "succeeded",
    )?;
    ensure(
        list(by_state(JobState::Queued)).await? == [c.as_str(), b.as_str()],
        "queued",
    )?;
    ensure(
        list(by_state(JobState::Failed)).await?.is_empty(),
        "none failed",
    )?;
    ensure(
        list(JobFilter {
            state: Some(JobState::Queued),
            ..by_owner.clone()
        })
        .await?
            == [c.as_str()],
        "state and owner",
    )?;

    // A filter pages like the whole list.
    let page = store.jobs(&by_owner, 1, None).await?;
    ensure(job_ids(&page.items) == [c.as_str()], "first page")?;
    let cursor = page.next_cursor.ok_or("a cursor to the second page")?;
    let page = store.jobs(&by_owner, 1, Some(&cursor)).await?;
    ensure(job_ids(&page.items) == [a.as_str()], "second page")?;
    // The last item may carry a cursor to an empty page or none; either way nothing follows.
    if let Some(cursor) = page.next_cursor {
        let page = store.jobs(&by_owner, 1, Some(&cursor)).await?;
        ensure(page.items.is_empty() && page.next_cursor.is_none(), "end")?;
    }
    Ok(())
}

/// Filtering by state returns exactly the jobs whose view has that state,
/// whatever moved them there: one of two tasks cancelled before anything ran
/// (the view says running), a worker leaving with the job's only task (the
/// view says queued again), a job nothing happened to.
pub async fn jobs_state_filter_agrees_with_the_view(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let cancelled_one = store.submit("owner", job(2, 1), None, T0).await?;
    let first = ids_of(&cancelled_one)?.remove(0);
    store.cancel_task(&first, T0 + 1).await?.ok_or("task")?;

    let handed_back = store
        .submit(
            "owner",
            crate::common::job_with(vec![crate::common::task_in("side", 1)]),
            None,
            T0 + 2,
        )
        .await?;
    let gone = join_to(store, "owner", "gone", &["side"], T0).await?;
    let leased = lease_ids(store, &gone, 1, T0 + 3).await?;
    ensure(
        leased.iter().map(|(id, _)| id).eq(&ids_of(&handed_back)?),
        format!("leased {leased:?}"),
    )?;
    store.leave(&gone, T0 + 4).await?.ok_or("gone")?;
    let untouched = store.submit("owner", job(1, 1), None, T0 + 7).await?;

    let mut wrong = Vec::new();
    for (what, id) in [
        ("one of two tasks cancelled", &cancelled_one.job.id),
        ("its task handed back", &handed_back.job.id),
        ("nothing happened yet", &untouched.job.id),
    ] {
        let state = job_view(store, id).await?.state;
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            let filter = JobFilter {
                state: Some(s),
                ..JobFilter::default()
            };
            let page = store.jobs(&filter, 10, None).await?;
            let listed = page.items.iter().any(|j| j.id == *id);
            if listed != (s == state) {
                wrong.push(format!(
                    "job ({what}) in state {state:?} {} by the {s:?} filter",
                    if listed { "listed" } else { "not listed" }
                ));
            }
        }
    }
    ensure(wrong.is_empty(), wrong.join("; "))
}

/// A job's tasks in submission order, paged, filtered by state; unknown job: `None`.
pub async fn job_tasks_page_in_submission_order(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let mut tasks: Vec<_> = (0..5).map(|_| task(1)).collect();
    // Priority changes the lease order, not the listing order.
    tasks[4].priority = 9;
    let sub = store
        .submit("owner", crate::common::job_with(tasks), None, T0)
        .await?;
    let all = ids_of(&sub)?;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = store
            .job_tasks(&sub.job.id, None, 2, cursor.as_deref())
            .await?
            .ok_or("job known")?;
        ensure(page.items.len() <= 2, "at most limit")?;
        ensure(
            page.items.iter().all(|t| t.job_id == sub.job.id),
            "the job's tasks",
        )?;
        seen.extend(page.items.into_iter().map(|t| t.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    ensure(
        seen == all,
        format!("submission order: {seen:?} vs {all:?}"),
    )?;

    let w = join(store, "w", T0).await?;
    let leased = lease_ids(store, &w, 2, T0 + 1).await?;
    ensure(
        leased.iter().map(|(id, _)| id).eq([&all[4], &all[0]]),
        format!("priority first: {leased:?}"),
    )?;
    let running = store
        .job_tasks(&sub.job.id, Some(TaskState::Running), 10, None)
        .await?
        .ok_or("job")?;
    let running: Vec<_> = running.items.into_iter().map(|t| t.id).collect();
    ensure(
        running == [all[0].as_str(), all[4].as_str()],
        format!("running {running:?}"),
    )?;
    let queued = store
        .job_tasks(&sub.job.id, Some(TaskState::Queued), 10, None)
        .await?
        .ok_or("job")?;
    let queued: Vec<_> = queued.items.into_iter().map(|t| t.id).collect();
    ensure(queued == all[1..4], format!("queued {queued:?}"))?;
    let page = store
        .job_tasks(&sub.job.id, Some(TaskState::Queued), 2, None)
        .await?
        .ok_or("job")?;
    let cursor = page.next_cursor.ok_or("more queued")?;
    let rest = store
        .job_tasks(&sub.job.id, Some(TaskState::Queued), 2, Some(&cursor))
        .await?
        .ok_or("job")?;
    ensure(
        rest.items.len() == 1 && rest.items[0].id == all[3] && rest.next_cursor.is_none(),
        "the state filter pages",
    )?;
    ensure(
        store
            .job_tasks(&sub.job.id, Some(TaskState::Failed), 10, None)
            .await?
            .is_some_and(|p| p.items.is_empty()),
        "known job, no failed task: an empty page",
    )?;
    ensure(
        store.job_tasks("nope", None, 10, None).await?.is_none(),
        "unknown job",
    )?;
    Ok(())
}

/// The owners of jobs and workers, for authorization.
pub async fn owners(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let a = store.submit("alice", job(1, 1), None, T0).await?.job.id;
    let b = store.submit("bob", job(1, 1), None, T0).await?.job.id;
    ensure(
        store.job_owner(&a).await?.as_deref() == Some("alice"),
        "alice's job",
    )?;
    ensure(
        store.job_owner(&b).await?.as_deref() == Some("bob"),
        "bob's job",
    )?;
    ensure(store.job_owner("nope").await?.is_none(), "unknown job")?;
    let w = join_to(store, "ci-token", "w", &["default"], T0).await?;
    let v = join_to(store, "ops-token", "v", &["default"], T0).await?;
    ensure(
        store.worker_owner(&w).await?.as_deref() == Some("ci-token"),
        "w's token",
    )?;
    ensure(
        store.worker_owner(&v).await?.as_deref() == Some("ops-token"),
        "v's token",
    )?;
    ensure(
        store.worker_owner("nope").await?.is_none(),
        "unknown worker",
    )?;
    Ok(())
}

/// Only a finished job is deleted, with its tasks, history and logs; others
/// stay as they were.
pub async fn delete_job_only_when_finished(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(2, 1), None, T0).await?;
    let ids = ids_of(&sub)?;
    let keep = store.submit("owner", job(1, 1), None, T0 + 1).await?;
    ensure(
        store.delete_job(&sub.job.id).await? == DeleteOutcome::Unfinished,
        "a queued job is kept",
    )?;
    let w = join(store, "w", T0).await?;
    // Its two tasks, submitted first, go first.
    let leased = lease_ids(store, &w, 2, T0 + 2).await?;
    ensure(
        leased.iter().map(|(id, _)| id).eq(&ids),
        format!("leased {leased:?}"),
    )?;
    store
        .append_logs(
            &w,
            vec![LogBatch {
                task_id: ids[0].clone(),
                attempt: 1,
                lines: vec!["hello".into()],
            }],
            T0 + 3,
        )
        .await?
        .ok_or("w")?;
    report(store, &w, vec![ok(&ids[0], 1)], T0 + 4).await?;
    ensure(
        store.delete_job(&sub.job.id).await? == DeleteOutcome::Unfinished,
        "a running job is kept",
    )?;
    ensure(store.job(&sub.job.id).await?.is_some(), "still there")?;
    report(store, &w, vec![failed(&ids[1], 1, false)], T0 + 5).await?;
    ensure(
        job_view(store, &sub.job.id).await?.state == JobState::Failed,
        "finished",
    )?;
    ensure(
        store.delete_job(&sub.job.id).await? == DeleteOutcome::Deleted,
        "a finished job is deleted",
    )?;
    ensure(store.job(&sub.job.id).await?.is_none(), "the job is gone")?;
    for id in &ids {
        ensure(store.task(id).await?.is_none(), "its tasks are gone")?;
    }
    ensure(
        store.task_logs(&ids[0], None, 10).await?.is_empty(),
        "its logs are gone",
    )?;
    ensure(store.job_owner(&sub.job.id).await?.is_none(), "no owner")?;
    ensure(
        store
            .job_tasks(&sub.job.id, None, 10, None)
            .await?
            .is_none(),
        "no task list",
    )?;
    let listed = store.jobs(&JobFilter::default(), 10, None).await?;
    ensure(
        job_ids(&listed.items) == [keep.job.id.as_str()],
        "only the other job is listed",
    )?;
    ensure(
        store.delete_job(&sub.job.id).await? == DeleteOutcome::NotFound,
        "deleting again: not found",
    )?;
    ensure(
        store.delete_job("nope").await? == DeleteOutcome::NotFound,
        "unknown job",
    )?;
    ensure(
        job_view(store, &keep.job.id).await?.state == JobState::Queued,
        "the other job is untouched",
    )?;
    Ok(())
}

/// When its last task ends a job is over: succeeded when all succeeded,
/// failed when one failed, cancelled when cancelled; `finished_at` is when
/// its last task ended, and `job.finished` is published once.
pub async fn job_ends_in_the_state_of_its_tasks(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let w = join(store, "w", T0).await?;

    // All succeed.
    let sub = store.submit("owner", job(2, 1), None, T0).await?;
    let ids = ids_of(&sub)?;
    lease_ids(store, &w, 2, T0 + 10).await?;
    let (_, changes) = report(store, &w, vec![ok(&ids[0], 1)], T0 + 20).await?;
    ensure(kinds(&changes) == ["task.succeeded"], "not over yet")?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.state == JobState::Running && view.finished_at.is_none(),
        format!("half done: {view:?}"),
    )?;
    let (_, changes) = report(store, &w, vec![ok(&ids[1], 1)], T0 + 30).await?;
    ensure(
        kinds(&changes) == ["task.succeeded", "job.finished"],
        format!("events {:?}", kinds(&changes)),
    )?;
    let finished = changes
        .events
        .iter()
        .find(|e| e.kind == "job.finished")
        .ok_or("job.finished")?;
    ensure(
        finished.job_id.as_deref() == Some(sub.job.id.as_str())
            && finished.state == Some(JobState::Succeeded),
        format!("job.finished {finished:?}"),
    )?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(view.state == JobState::Succeeded, "succeeded")?;
    ensure(
        view.started_at == Some(from_ms(T0 + 10)) && view.finished_at == Some(from_ms(T0 + 30)),
        format!("times {:?} {:?}", view.started_at, view.finished_at),
    )?;
    ensure(
        view.duration_ms == Some(20) && view.wall_ms == Some(30),
        format!("durations {:?} {:?}", view.duration_ms, view.wall_ms),
    )?;
    ensure(
        view.progress.succeeded == 2 && view.progress.total == 2,
        format!("progress {:?}", view.progress),
    )?;

    // One fails for good, one succeeds: failed.
    let sub = store.submit("owner", job(2, 1), None, T0 + 40).await?;
    let ids = ids_of(&sub)?;
    lease_ids(store, &w, 2, T0 + 41).await?;
    let (_, changes) = report(
        store,
        &w,
        vec![failed(&ids[0], 1, false), ok(&ids[1], 1)],
        T0 + 42,
    )
    .await?;
    ensure(
        kinds(&changes) == ["task.failed", "task.succeeded", "job.finished"],
        format!("events {:?}", kinds(&changes)),
    )?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.state == JobState::Failed && view.finished_at == Some(from_ms(T0 + 42)),
        format!("failed: {view:?}"),
    )?;
    ensure(
        view.progress.failed == 1 && view.progress.succeeded == 1,
        "progress",
    )?;

    // Cancelled before anything ran: cancelled, never started.
    let sub = store.submit("owner", job(2, 1), None, T0 + 50).await?;
    let changes = store.cancel_job(&sub.job.id, T0 + 51).await?.ok_or("job")?;
    ensure(
        kinds(&changes) == ["task.cancelled", "task.cancelled", "job.finished"],
        format!("events {:?}", kinds(&changes)),
    )?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.state == JobState::Cancelled
            && view.started_at.is_none()
            && view.finished_at == Some(from_ms(T0 + 51))
            && view.progress.cancelled == 2,
        format!("cancelled: {view:?}"),
    )?;

    // One task succeeded, the other cancelled by itself: cancelled.
    let sub = store.submit("owner", job(2, 1), None, T0 + 60).await?;
    let ids = ids_of(&sub)?;
    lease_ids(store, &w, 1, T0 + 61).await?;
    report(store, &w, vec![ok(&ids[0], 1)], T0 + 62).await?;
    let changes = store.cancel_task(&ids[1], T0 + 63).await?.ok_or("task")?;
    ensure(
        kinds(&changes) == ["task.cancelled", "job.finished"],
        format!("events {:?}", kinds(&changes)),
    )?;
    ensure(
        job_view(store, &sub.job.id).await?.state == JobState::Cancelled,
        "a cancelled task makes the job cancelled",
    )?;

    // A failure and a cancelled task: failed.
    let sub = store.submit("owner", job(2, 1), None, T0 + 70).await?;
    let ids = ids_of(&sub)?;
    lease_ids(store, &w, 1, T0 + 71).await?;
    report(store, &w, vec![failed(&ids[0], 1, false)], T0 + 72).await?;
    store.cancel_task(&ids[1], T0 + 73).await?.ok_or("task")?;
    ensure(
        job_view(store, &sub.job.id).await?.state == JobState::Failed,
        "a failure outweighs a cancelled task",
    )?;

    // The job's end is recorded once: nothing later republishes it.
    let again = store.cancel_job(&sub.job.id, T0 + 80).await?.ok_or("job")?;
    ensure(
        again.events.is_empty() && again.cancelled.is_empty(),
        "cancelling a finished job changes nothing",
    )?;
    ensure(
        job_view(store, &sub.job.id).await?.state == JobState::Failed,
        "and keeps its state",
    )?;
    Ok(())
}
