//! What every store does before and around the rest: a fresh store is empty,
//! leases match a worker's queues and kinds in priority order, values come
//! back as they went in, and large batches are whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use brigade_api::{ErrorKind, JobState, LogBatch, TaskError, TaskState};
use brigade_core::{NewJob, from_ms};
use brigade_store::{JobFilter, Store};

use crate::common::{
    T0, TTL, TestResult, ensure, ids_of, job, job_view, job_with, join, join_to, lease_ids, ok,
    report, task, task_in, task_view,
};

/// A fresh store answers and holds nothing.
pub async fn a_fresh_store_is_empty(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    store.ping().await?;
    ensure(!store.has_queued().await?, "nothing queued")?;
    let jobs = store.jobs(&JobFilter::default(), 10, None).await?;
    ensure(
        jobs.items.is_empty() && jobs.next_cursor.is_none(),
        "no jobs",
    )?;
    ensure(store.workers().await?.is_empty(), "no workers")?;
    ensure(
        store.queues().await?.iter().all(|q| {
            q.queued == 0 && q.scheduled == 0 && q.running == 0 && q.workers == 0 && !q.paused
        }),
        "no queue holds anything",
    )?;
    ensure(store.promote_due(T0).await? == (0, None), "nothing due")?;
    let reaped = store.reap(T0, TTL).await?;
    ensure(reaped.events.is_empty() && !reaped.ready, "nothing to reap")?;
    ensure(store.job("nope").await?.is_none(), "no job")?;
    ensure(store.task("nope").await?.is_none(), "no task")?;
    ensure(store.worker("nope").await?.is_none(), "no worker")?;
    ensure(
        store.task_logs("nope", None, 10).await?.is_empty(),
        "no logs",
    )?;
    Ok(())
}

/// A worker leases only tasks of its queues and kinds, highest priority
/// first then oldest, at most `max`; the lease says what to run and until when.
pub async fn lease_matches_queues_kinds_and_priority(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let mut other_kind = task(1);
    other_kind.kind = "resize".into();
    let mut urgent = task(1);
    urgent.priority = 5;
    urgent.timeout_ms = 1234;
    let mut low = task(1);
    low.priority = -5;
    let first = store
        .submit(
            "owner",
            job_with(vec![task(1), other_kind, task_in("elsewhere", 1), low]),
            None,
            T0,
        )
        .await?;
    let first_ids = ids_of(&first)?;
    let second = store
        .submit("owner", job_with(vec![task(1), urgent]), None, T0 + 1)
        .await?;
    let second_ids = ids_of(&second)?;

    // A worker of another kind, and one of another queue, get nothing of these.
    let (resizer, _) = store
        .join_worker(
            "owner",
            brigade_api::WorkerJoin {
                kinds: vec!["resize".into()],
                ..crate::common::worker_join("resizer", &["default"])
            },
            T0,
        )
        .await?;
    let nowhere = join_to(store, "owner", "nowhere", &["empty"], T0).await?;
    ensure(
        lease_ids(store, &nowhere, 10, T0 + 2).await?.is_empty(),
        "another queue",
    )?;
    ensure(
        store
            .lease(&resizer.id, 0, T0 + 2, TTL)
            .await?
            .is_some_and(|(l, _)| l.is_empty()),
        "max 0 leases nothing",
    )?;

    let w = join(store, "w", T0).await?;
    let (leased, _) = store.lease(&w, 2, T0 + 2, TTL).await?.ok_or("w")?;
    let got: Vec<&str> = leased.iter().map(|t| t.id.as_str()).collect();
    ensure(
        got == [second_ids[1].as_str(), first_ids[0].as_str()],
        format!("the urgent task, then the oldest: {got:?}"),
    )?;
    let urgent = &leased[0];
    ensure(
        urgent.job_id == second.job.id
            && urgent.kind == "echo"
            && urgent.attempt == 1
            && urgent.timeout_ms == 1234
            && urgent.lease_expires_at == from_ms(T0 + 2 + TTL),
        format!("lease {urgent:?}"),
    )?;
    let view = task_view(store, &urgent.id).await?;
    ensure(
        view.state == TaskState::Running
            && view.worker_id.as_deref() == Some(w.as_str())
            && view.started_at == Some(from_ms(T0 + 2)),
        format!("running {view:?}"),
    )?;
    let job = job_view(store, &second.job.id).await?;
    ensure(
        job.state == JobState::Running && job.started_at == Some(from_ms(T0 + 2)),
        format!("job started {job:?}"),
    )?;
    let got: Vec<String> = lease_ids(store, &w, 10, T0 + 3)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ensure(
        got == [second_ids[0].clone(), first_ids[3].clone()],
        format!("the rest of its queue and kind, low priority last: {got:?}"),
    )?;
    let got = lease_ids(store, &resizer.id, 10, T0 + 4).await?;
    ensure(
        got == [(first_ids[1].clone(), 1)],
        format!("the resizer gets its kind: {got:?}"),
    )?;
    ensure(
        task_view(store, &first_ids[2]).await?.state == TaskState::Queued,
        "nobody serves the other queue",
    )?;
    Ok(())
}

/// Inputs, outputs, errors, names, labels and log lines come back as they
/// went in: nested JSON, large and fractional numbers, non-ASCII text,
/// escapes, NUL characters.
pub async fn values_round_trip(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let input = serde_json::json!({
        "text": "héllo wörld ✓ 😀 \"quoted\" \\ back\nslash\ttab",
        "nested": {"list": [1, -2, 3.5, null, true, false, {"deep": []}], "empty": {}},
        "big": 9_007_199_254_740_993_i64,
        "max": u64::MAX,
        "small": -1e-7,
    });
    let mut t = task(1);
    t.input = input.to_string();
    t.name = Some("naïve-task ✓".into());
    t.requires = BTreeMap::from([("région".to_owned(), "ÎLE".to_owned())]);
    let labels = BTreeMap::from([
        ("équipe".to_owned(), "rouge ✓".to_owned()),
        ("quote".to_owned(), "it's \"here\"".to_owned()),
    ]);
    let sub = store
        .submit(
            "owner",
            NewJob {
                name: Some("jöb ✓".into()),
                queue: "default".into(),
                labels: labels.clone(),
                tasks: vec![t, task(1)],
                keep_ms: None,
                unique: None,
                callback: None,
                traceparent: None,
            },
            None,
            T0,
        )
        .await?;
    let ids = ids_of(&sub)?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.name.as_deref() == Some("jöb ✓") && view.labels == labels,
        format!("job {view:?}"),
    )?;
    let found = store
        .jobs(
            &JobFilter {
                label: Some(("équipe".into(), "rouge ✓".into())),
                ..JobFilter::default()
            },
            10,
            None,
        )
        .await?;
    ensure(found.items.len() == 1, "found by a non-ASCII label")?;
    let tv = task_view(store, &ids[0]).await?;
    ensure(
        tv.input == input
            && tv.name.as_deref() == Some("naïve-task ✓")
            && tv.requires.get("région").map(String::as_str) == Some("ÎLE"),
        format!("task {tv:?}"),
    )?;

    let (w, _) = store
        .join_worker(
            "owner",
            brigade_api::WorkerJoin {
                labels: BTreeMap::from([("région".to_owned(), "ÎLE".to_owned())]),
                ..crate::common::worker_join("wörker ✓", &["default"])
            },
            T0,
        )
        .await?;
    let (leased, _) = store.lease(&w.id, 2, T0, TTL).await?.ok_or("w")?;
    ensure(leased.len() == 2, "a non-ASCII label requirement is met")?;
    ensure(
        leased[0].input == input,
        "the lease carries the input as sent",
    )?;
    ensure(
        store.worker(&w.id).await?.map(|v| v.name) == Some("wörker ✓".into()),
        "worker name",
    )?;

    let output = serde_json::json!({
        "result": "ünïcödé ✓ 😀",
        "nul": "a\u{0}b",
        "numbers": [0, -1, 1.25, u64::MAX],
        "none": null,
    });
    let message = "Zeile 3: ungültig ✓ \"x\"";
    let (reply, _) = report(
        store,
        &w.id,
        vec![
            brigade_api::TaskResult {
                output: output.clone(),
                ..ok(&ids[0], 1)
            },
            brigade_api::TaskResult {
                error: Some(TaskError::new(ErrorKind::BadInput, message)),
                ..crate::common::failed(&ids[1], 1, false)
            },
        ],
        T0 + 1,
    )
    .await?;
    ensure(reply.accepted == ids, format!("{reply:?}"))?;
    let tv = task_view(store, &ids[0]).await?;
    ensure(tv.output == output, format!("output {:?}", tv.output))?;
    let tv = task_view(store, &ids[1]).await?;
    ensure(
        tv.error == Some(TaskError::new(ErrorKind::BadInput, message)),
        format!("error {:?}", tv.error),
    )?;
    let history = tv.history.ok_or("history")?;
    ensure(
        history
            .first()
            .and_then(|h| h.error.as_ref())
            .map(|e| e.message.as_str())
            == Some(message),
        "the attempt keeps the error",
    )?;
    Ok(())
}

/// NUL characters (binary output of a handler, a careless client) are stored
/// like any other character, on every engine: in log lines, failure
/// messages, job and task names, labels. Each place is tried on its own and
/// every one that fails is named.
pub async fn nul_characters_are_stored(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let nul = "before\u{0}after";
    let mut wrong: Vec<String> = Vec::new();
    let mut note = |what: &str, r: TestResult| {
        if let Err(e) = r {
            wrong.push(format!("{what}: {e}"));
        }
    };

    let sub = store.submit("owner", job(2, 1), None, T0).await?;
    let ids = ids_of(&sub)?;
    let w = join(store, "w", T0).await?;
    lease_ids(store, &w, 2, T0).await?;
    let logged = async {
        let batch = LogBatch {
            task_id: ids[0].clone(),
            attempt: 1,
            lines: vec![nul.into()],
        };
        store
            .append_logs(&w, vec![batch], T0 + 1)
            .await?
            .ok_or("w")?;
        let lines = store.task_logs(&ids[0], None, 10).await?;
        ensure(
            lines.len() == 1
                && lines[0].1.line.starts_with("before")
                && lines[0].1.line.ends_with("after"),
            format!("stored {lines:?}"),
        )
    }
    .await;
    note("a log line", logged);
    let failed = async {
        let result = brigade_api::TaskResult {
            error: Some(TaskError::new(ErrorKind::Handler, nul)),
            ..crate::common::failed(&ids[1], 1, false)
        };
        let (reply, _) = report(store, &w, vec![result], T0 + 2).await?;
        ensure(reply.accepted.len() == 1, format!("{reply:?}"))?;
        let error = task_view(store, &ids[1]).await?.error.ok_or("no error")?;
        ensure(
            error.message.starts_with("before") && error.message.ends_with("after"),
            format!("stored {error:?}"),
        )
    }
    .await;
    note("a failure message", failed);
    let named = async {
        let mut t = task(1);
        t.name = Some(nul.into());
        let sub = store
            .submit(
                "owner",
                NewJob {
                    name: Some(nul.into()),
                    ..job_with(vec![t])
                },
                None,
                T0 + 3,
            )
            .await?;
        ensure(
            job_view(store, &sub.job.id)
                .await?
                .name
                .is_some_and(|n| n.ends_with("after")),
            "job name",
        )
    }
    .await;
    note("a job and task name", named);
    let labelled = async {
        let sub = store
            .submit(
                "owner",
                NewJob {
                    labels: BTreeMap::from([("k".to_owned(), nul.to_owned())]),
                    ..job(1, 1)
                },
                None,
                T0 + 4,
            )
            .await?;
        ensure(
            job_view(store, &sub.job.id)
                .await?
                .labels
                .get("k")
                .is_some_and(|v| v.ends_with("after")),
            "label",
        )
    }
    .await;
    note("a job label", labelled);
    ensure(wrong.is_empty(), wrong.join("; "))
}

/// Batches larger than one statement holds are whole: a job of 1201 tasks,
/// a lease and a report of 600, 1200 log lines in one batch.
pub async fn large_batches_are_whole(store: Arc<dyn Store>) -> TestResult {
    let store = &*store;
    let sub = store.submit("owner", job(1201, 1), None, T0).await?;
    let ids = ids_of(&sub)?;
    ensure(ids.len() == 1201, format!("{} task ids", ids.len()))?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.progress.total == 1201 && view.progress.queued == 1201,
        format!("progress {:?}", view.progress),
    )?;
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .job_tasks(&sub.job.id, None, 500, cursor.as_deref())
            .await?
            .ok_or("job")?;
        listed.extend(page.items.into_iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ensure(listed == ids, "every task listed once, in order")?;

    let w = join(store, "w", T0).await?;
    let leased = lease_ids(store, &w, 600, T0 + 1).await?;
    ensure(
        leased.len() == 600 && leased.iter().map(|(id, _)| id).eq(&ids[..600]),
        format!("leased {}", leased.len()),
    )?;
    let lines: Vec<String> = (0..1200).map(|i| format!("line {i}")).collect();
    let reply = store
        .append_logs(
            &w,
            vec![LogBatch {
                task_id: ids[0].clone(),
                attempt: 1,
                lines: lines.clone(),
            }],
            T0 + 2,
        )
        .await?
        .ok_or("w")?;
    ensure(reply.accepted.len() == 1, "logs accepted")?;
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = store.task_logs(&ids[0], after, 500).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(*last);
        got.extend(page.into_iter().map(|(_, l)| l.line));
    }
    ensure(
        got == lines,
        format!("{} of 1200 lines, in order", got.len()),
    )?;

    let results = leased.iter().map(|(id, n)| ok(id, *n)).collect();
    let (reply, changes) = report(store, &w, results, T0 + 3).await?;
    ensure(
        reply.accepted.len() == 600 && reply.rejected.is_empty(),
        format!("accepted {}", reply.accepted.len()),
    )?;
    ensure(changes.events.len() == 600, "one event each")?;
    let view = job_view(store, &sub.job.id).await?;
    ensure(
        view.progress.succeeded == 600 && view.progress.queued == 601,
        format!("progress {:?}", view.progress),
    )?;
    ensure(
        task_view(store, &ids[599]).await?.state == TaskState::Succeeded
            && task_view(store, &ids[600]).await?.state == TaskState::Queued,
        "the batch's edge",
    )?;
    Ok(())
}
