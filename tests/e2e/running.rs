//! Jobs run: in parallel, retried, timed out, cancelled.

use std::collections::BTreeSet;
use std::time::Duration;

use brigade_api::{Backoff, ErrorKind, JobState, TaskState};
use serde_json::json;

use brigade_testkit::{Cluster, task};

#[tokio::test]
async fn a_job_runs_in_parallel_over_both_workers_with_exact_results() {
    let c = Cluster::start()
        .await
        .with_workers(&["w1", "w2"], 8, &[])
        .await;
    let w1 = c.worker_named("w1").await.id;
    let w2 = c.worker_named("w2").await.id;
    let mut tasks: Vec<_> = (0..100)
        .map(|i| task("echo", json!({ "i": i, "text": format!("n{i}") })))
        .collect();
    tasks.extend((0..24).map(|_| task("sleep", json!({ "ms": 300 }))));
    let job = c.submit(tasks).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.progress.total, 124);

    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.progress.succeeded, 124);
    assert!(done.duration_ms.is_some() && done.wall_ms.is_some());

    let all = c.tasks(&job.id).await;
    assert_eq!(
        all.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        job.task_ids.clone().unwrap()
    );
    for (i, t) in all.iter().take(100).enumerate() {
        assert_eq!(
            t.output,
            json!({ "i": i, "text": format!("n{i}") }),
            "task {i}"
        );
        assert_eq!((t.state, t.attempt), (TaskState::Succeeded, 1));
    }
    for t in &all[100..] {
        assert_eq!(t.output, json!({ "slept_ms": 300 }));
    }
    let used: BTreeSet<_> = all.iter().filter_map(|t| t.worker_id.clone()).collect();
    assert_eq!(
        used,
        BTreeSet::from([w1.clone(), w2.clone()]),
        "both workers took tasks"
    );
    // Parallel, not one after the other: some sleeps on different workers overlapped.
    let sleeps = &all[100..];
    let overlap = sleeps.iter().any(|a| {
        sleeps.iter().any(|b| {
            a.worker_id != b.worker_id
                && a.started_at.unwrap() < b.finished_at.unwrap()
                && b.started_at.unwrap() < a.finished_at.unwrap()
        })
    });
    assert!(overlap, "tasks on the two workers ran at the same time");
}

fn quick_backoff() -> Backoff {
    Backoff {
        initial_ms: 50,
        factor: 2.0,
        max_ms: 200,
        jitter: false,
    }
}

#[tokio::test]
async fn flaky_tasks_are_retried_until_they_succeed_and_failing_ones_exhaust_their_attempts() {
    let c = Cluster::start()
        .await
        .with_workers(&["w1", "w2"], 4, &[])
        .await;
    let mut flaky = task("flaky", json!({ "fail_attempts": 2 }));
    flaky.max_attempts = Some(3);
    flaky.backoff = Some(quick_backoff());
    let mut failing = task("fail", json!({ "message": "always" }));
    failing.max_attempts = Some(2);
    failing.backoff = Some(quick_backoff());
    let mut permanent = task("fail", json!({ "message": "give up", "retryable": false }));
    permanent.max_attempts = Some(5);

    let flaky_job = c.submit(vec![flaky]).await;
    let failing_job = c.submit(vec![failing, permanent]).await;

    let done = c.finished(&flaky_job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    let t = c
        .client
        .task(&flaky_job.task_ids.unwrap()[0])
        .await
        .unwrap();
    assert_eq!((t.state, t.attempt), (TaskState::Succeeded, 3));
    assert_eq!(t.output, json!({ "attempt": 3 }));
    let outcomes: Vec<_> = t
        .history
        .unwrap()
        .iter()
        .map(|h| (h.attempt, h.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1, "failed".into()),
            (2, "failed".into()),
            (3, "succeeded".into())
        ]
    );

    let done = c.finished(&failing_job.id).await;
    assert_eq!(done.state, JobState::Failed);
    let ids = failing_job.task_ids.unwrap();
    let t = c.client.task(&ids[0]).await.unwrap();
    assert_eq!((t.state, t.attempt), (TaskState::Failed, 2));
    let err = t.error.unwrap();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (ErrorKind::Handler, "always")
    );
    let t = c.client.task(&ids[1]).await.unwrap();
    assert_eq!(
        (t.state, t.attempt),
        (TaskState::Failed, 1),
        "a non-retryable failure is not retried"
    );

    // A failed task can be retried by hand with a fresh budget.
    let again = c.client.retry_task(&ids[1]).await.unwrap();
    assert_eq!(again.state, TaskState::Queued);
    let done = c.finished(&failing_job.id).await;
    assert_eq!(done.state, JobState::Failed);
    let t = c.client.task(&ids[1]).await.unwrap();
    assert_eq!((t.state, t.attempt), (TaskState::Failed, 2));
}

#[tokio::test]
async fn waiting_on_a_task_answers_at_its_finish_not_between_its_retries() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let wait = Duration::from_secs(30);

    // Two failed attempts in between are not the end: one request, the final answer.
    let mut flaky = task("flaky", json!({ "fail_attempts": 2 }));
    flaky.max_attempts = Some(3);
    flaky.backoff = Some(quick_backoff());
    let job = c.submit(vec![flaky]).await;
    let id = &job.task_ids.unwrap()[0];
    let t = c.client.wait_task(id, wait).await.unwrap();
    assert_eq!((t.state, t.attempt), (TaskState::Succeeded, 3));
    assert_eq!(t.output, json!({ "attempt": 3 }));

    // The wait is the task's, not its job's: the job still runs a long sleep.
    let job = c
        .submit(vec![
            task("sleep", json!({ "ms": 5000 })),
            task("echo", json!({ "x": 1 })),
        ])
        .await;
    let ids = job.task_ids.unwrap();
    let t = c.client.wait_task(&ids[1], wait).await.unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(t.output, json!({ "x": 1 }));
    assert!(!c.client.job(&job.id).await.unwrap().state.is_finished());

    // A cancel through another request ends the wait with the cancelled task.
    let job = c.submit(vec![task("nobody-runs-this", json!({}))]).await;
    let id = job.task_ids.unwrap()[0].clone();
    let waiter = {
        let client = c.client.clone();
        let id = id.clone();
        tokio::spawn(async move { client.wait_task(&id, wait).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.client.cancel_task(&id).await.unwrap();
    let t = waiter.await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Cancelled);

    // A wait that runs out answers with the task as it is.
    let job = c.submit(vec![task("nobody-runs-this", json!({}))]).await;
    let t = c
        .client
        .wait_task(&job.task_ids.unwrap()[0], Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(t.state, TaskState::Queued);
}

#[tokio::test]
async fn a_task_past_its_timeout_fails_with_kind_timeout() {
    let c = Cluster::start().await.with_workers(&["w1"], 2, &[]).await;
    let mut slow = task("sleep", json!({ "ms": 30_000 }));
    slow.timeout_ms = Some(300);
    slow.max_attempts = Some(1);
    let job = c.submit(vec![slow]).await;
    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Failed);
    let t = c.client.task(&job.task_ids.unwrap()[0]).await.unwrap();
    assert_eq!(t.error.unwrap().kind, ErrorKind::Timeout);
    assert_eq!(t.history.unwrap()[0].outcome, "timeout");
    // The slot is free again.
    let w = c
        .until("worker idle", || async {
            c.client
                .workers()
                .await
                .ok()?
                .into_iter()
                .find(|w| w.running == 0)
        })
        .await;
    assert_eq!(w.name, "w1");
}

fn sleep_processes(marker: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_tasks_on_the_worker() {
    let c = Cluster::start_with(&["--heartbeat-ms", "200", "--lease-ttl-ms", "5000"])
        .await
        .with_workers(&["w1", "w2"], 4, &["--allow-exec"])
        .await;
    // A duration no other test uses, to find exactly these processes.
    let marker = "sleep 41.731";
    let tasks = (0..4)
        .map(|_| task("exec", json!({ "argv": ["sleep", "41.731"] })))
        .collect();
    let job = c.submit(tasks).await;
    c.until("all four running", || async {
        let j = c.client.job(&job.id).await.ok()?;
        (j.progress.running == 4 && sleep_processes(marker) == 4).then_some(())
    })
    .await;

    let cancelled = c.client.cancel_job(&job.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.progress.cancelled, 4);
    c.until("the processes are gone", || async {
        (sleep_processes(marker) == 0).then_some(())
    })
    .await;
    c.until("slots freed", || async {
        let ws = c.client.workers().await.ok()?;
        ws.iter().all(|w| w.running == 0).then_some(())
    })
    .await;
    for t in c.tasks(&job.id).await {
        assert_eq!(t.state, TaskState::Cancelled);
        assert_eq!(t.error.unwrap().kind, ErrorKind::Cancelled);
    }
}

#[tokio::test]
async fn code_runs_sandboxed_on_a_worker_that_has_the_language() {
    let mut c = Cluster::start().await;
    let cache = c.dir.path().join("code-cache");
    let cache = cache.to_str().unwrap().to_owned();
    c.spawn_worker("coder", 2, &["--code-cache", &cache]);
    let w = c.worker_named("coder").await;
    let langs = w.labels.get("lang").cloned().unwrap_or_default();
    assert!(
        langs.split(',').any(|l| l == "python"),
        "lang label {langs:?}"
    );
    let mut t = task(
        "code",
        json!({ "language": "python", "source": "print(input()[::-1])", "stdin": "stressed", "expected_output": "desserts" }),
    );
    t.requires = [("lang".to_owned(), "python".to_owned())].into();
    let mut wrong = task(
        "code",
        json!({ "language": "python", "source": "print('no')", "expected_output": "yes" }),
    );
    wrong.requires = t.requires.clone();
    let job = c.submit(vec![t, wrong]).await;
    let done = c.finished(&job.id).await;
    assert_eq!(
        done.state,
        JobState::Succeeded,
        "a program's own failure is a succeeded task"
    );
    let all = c.tasks(&job.id).await;
    assert_eq!(all[0].output["verdict"], "accepted");
    assert_eq!(all[0].output["stdout"], "desserts\n");
    assert_eq!(all[1].output["verdict"], "wrong_answer");
}

/// A busy worker's results ride on its next lease request (recorded in the
/// same transaction, the reply saying so), and while all its slots are busy
/// it holds a lease request for no tasks, which a cancel of a task it runs
/// answers at once — not at its next heartbeat, here a minute away.
#[tokio::test]
async fn results_ride_on_the_lease_and_a_cancel_answers_a_held_long_poll() {
    use std::time::Duration;

    use brigade_api::{RejectionCode, WorkerJoin};

    let c = Cluster::start_with(&["--heartbeat-ms", "60000", "--lease-ttl-ms", "120000"]).await;
    let joined = c
        .client
        .join(&WorkerJoin {
            name: "by-hand".into(),
            hostname: String::new(),
            queues: Vec::new(),
            kinds: vec!["noop".into()],
            labels: Default::default(),
            capacity: 2,
            version: String::new(),
        })
        .await
        .unwrap();
    let job = c
        .submit(vec![task("noop", json!(1)), task("noop", json!(2))])
        .await;
    let first = c
        .client
        .lease(&joined.id, 2, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first.tasks.len(), 2);
    let (done, other) = (&first.tasks[0], &first.tasks[1]);
    let ok = |t: &brigade_api::LeasedTask| brigade_api::TaskResult {
        task_id: t.id.clone(),
        attempt: t.attempt,
        outcome: brigade_api::Outcome::Succeeded,
        output: json!({ "done": t.id }),
        error: None,
        retryable: None,
        retry_in_ms: None,
        duration_ms: None,
        spawn: Vec::new(),
    };
    // One result, and the same one again: the second is refused, by code.
    let held = c
        .client
        .report_and_lease(&joined.id, vec![ok(done)], 0, Duration::from_secs(30));
    let canceller = async {
        c.until("the result is recorded", || async {
            let t = c.client.task(&done.id).await.ok()?;
            (t.state == TaskState::Succeeded).then_some(())
        })
        .await;
        c.client.cancel_task(&other.id).await.unwrap()
    };
    let (reply, cancelled) = tokio::join!(held, canceller);
    let reply = reply.unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert_eq!(reply.cancel, vec![other.id.clone()], "{reply:?}");
    assert!(reply.tasks.is_empty());
    let recorded = reply
        .results
        .expect("the reply says what became of the results");
    assert_eq!(recorded.accepted, vec![done.id.clone()]);
    let t = c.client.task(&done.id).await.unwrap();
    assert_eq!(t.output, json!({ "done": done.id }));
    let again = c
        .client
        .report_and_lease(&joined.id, vec![ok(done)], 0, Duration::ZERO)
        .await
        .unwrap();
    let rejected = again.results.unwrap().rejected;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].code, RejectionCode::NotRunning);
    assert_eq!(job.progress.total, 2);
}

/// `brigade_tasks_handed_off_total` as the server reports it now.
async fn handed_off(c: &Cluster) -> f64 {
    use crate::observability::{scrape, total};
    total(&scrape(c).await, "brigade_tasks_handed_off_total", &[])
}

#[tokio::test]
async fn a_task_submitted_while_a_worker_waits_is_handed_to_it_by_the_submit() {
    use std::time::Duration;

    use brigade_api::WorkerJoin;

    let c = Cluster::start().await;
    let joined = c
        .client
        .join(&WorkerJoin {
            name: "by-hand".into(),
            hostname: String::new(),
            queues: Vec::new(),
            kinds: vec!["noop".into()],
            labels: Default::default(),
            capacity: 1,
            version: String::new(),
        })
        .await
        .unwrap();
    // Each round: a long-poll waits, a one-task job comes; the worker gets
    // it once, with attempt 1, whichever way it went. The first round whose
    // long-poll was already waiting at the submit goes by hand-off.
    let mut rounds = 0;
    while handed_off(&c).await < 1.0 {
        rounds += 1;
        assert!(
            rounds <= 50,
            "no submit handed its task to the waiting worker"
        );
        let poll = c.client.lease(&joined.id, 1, Duration::from_secs(20));
        let submit = async { c.submit(vec![task("noop", json!(rounds))]).await };
        let (leased, job) = tokio::join!(poll, submit);
        let leased = leased.unwrap();
        let ids = job.task_ids.clone().unwrap();
        assert_eq!(leased.tasks.len(), 1, "round {rounds}: {leased:?}");
        assert_eq!(leased.tasks[0].id, ids[0]);
        assert_eq!(leased.tasks[0].attempt, 1);
        let t = c.client.task(&ids[0]).await.unwrap();
        assert_eq!(t.state, TaskState::Running);
        c.client
            .results(
                &joined.id,
                vec![brigade_api::TaskResult {
                    task_id: ids[0].clone(),
                    attempt: 1,
                    outcome: brigade_api::Outcome::Succeeded,
                    output: json!(rounds),
                    error: None,
                    retryable: None,
                    retry_in_ms: None,
                    duration_ms: None,
                    spawn: Vec::new(),
                }],
            )
            .await
            .unwrap();
        assert_eq!(c.finished(&job.id).await.state, JobState::Succeeded);
    }
}
