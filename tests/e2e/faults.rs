//! Machines die: nothing acknowledged is lost, every result is recorded once.

use std::collections::BTreeSet;

use brigade_api::{ErrorKind, JobState, Outcome, TaskResult, TaskState};
use nix::sys::signal::Signal;
use serde_json::json;

use brigade_testkit::{Cluster, task};

#[tokio::test]
async fn a_worker_killed_mid_task_loses_nothing_and_its_late_result_is_rejected() {
    let mut c = Cluster::start_with(&["--lease-ttl-ms", "1500", "--heartbeat-ms", "250"])
        .await
        .with_workers(&["doomed"], 4, &[])
        .await;
    let doomed = c.worker_named("doomed").await.id;

    let tasks = (0..4)
        .map(|_| task("sleep", json!({ "ms": 1000 })))
        .collect();
    let job = c.submit(tasks).await;
    c.until("all four running on the doomed worker", || async {
        let j = c.client.job(&job.id).await.ok()?;
        (j.progress.running == 4).then_some(())
    })
    .await;
    c.signal_worker("doomed", Signal::SIGKILL);
    c.wait_worker_exit("doomed").await;
    c.spawn_worker("survivor", 4, &[]);
    let survivor = c.worker_named("survivor").await.id;

    let done = c.finished(&job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.progress.succeeded, 4);
    for t in c.tasks(&job.id).await {
        let t = c.client.task(&t.id).await.unwrap();
        assert_eq!(
            (t.state, t.attempt),
            (TaskState::Succeeded, 2),
            "task {}",
            t.id
        );
        assert_eq!(t.worker_id.as_deref(), Some(survivor.as_str()));
        let history = t.history.unwrap();
        assert_eq!(
            history.len(),
            2,
            "one lost attempt, one success: recorded once"
        );
        assert_eq!(
            (history[0].outcome.as_str(), history[0].worker_id.as_deref()),
            ("lost", Some(doomed.as_str()))
        );
        assert_eq!(history[0].error.as_ref().unwrap().kind, ErrorKind::Lost);
        assert_eq!(history[1].outcome, "succeeded");
    }
    let workers = c.client.workers().await.unwrap();
    let w = workers.iter().find(|w| w.id == doomed).unwrap();
    assert_eq!(w.state, brigade_api::WorkerState::Lost);

    // The dead worker's result arrives late (say it was stuck in a network
    // buffer): its attempt is stale, so it is rejected and changes nothing.
    let first = job.task_ids.unwrap()[0].clone();
    let late = TaskResult {
        task_id: first.clone(),
        attempt: 1,
        outcome: Outcome::Failed,
        output: json!(null),
        error: Some(brigade_api::TaskError::new(ErrorKind::Handler, "late")),
        retryable: Some(false),
        retry_in_ms: None,
        duration_ms: None,
        spawn: Vec::new(),
    };
    let reply = c.client.results(&doomed, vec![late]).await.unwrap();
    assert!(reply.accepted.is_empty());
    assert_eq!(reply.rejected.len(), 1);
    assert!(
        reply.rejected[0].reason.contains("stale"),
        "{}",
        reply.rejected[0].reason
    );
    let t = c.client.task(&first).await.unwrap();
    assert_eq!((t.state, t.attempt), (TaskState::Succeeded, 2));
}

#[tokio::test]
async fn the_server_killed_mid_job_loses_nothing_acknowledged_and_the_job_finishes() {
    let mut c = Cluster::start()
        .await
        .with_workers(&["w1", "w2"], 4, &[])
        .await;
    let tasks = (0..40)
        .map(|i| task("sleep", json!({ "ms": 100 + i })))
        .collect();
    let big = c.submit(tasks).await;
    c.until("the job started", || async {
        let j = c.client.job(&big.id).await.ok()?;
        (j.progress.succeeded > 0).then_some(())
    })
    .await;

    // Submissions race with the kill: every one that got its 201 must survive.
    let client = c.client.clone();
    let submitter = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..400 {
            let job = brigade_api::JobSubmit::new(vec![task("echo", json!({ "i": i }))])
                .named(format!("race-{i}"));
            match client.submit(&job, None).await {
                Ok(j) => acked.push(j),
                Err(_) => break,
            }
        }
        acked
    });
    c.until("some racing submits acknowledged", || async {
        let page = c
            .client
            .jobs(&brigade_client::JobQuery {
                name: Some("race-5".into()),
                ..Default::default()
            })
            .await
            .ok()?;
        (!page.items.is_empty()).then_some(())
    })
    .await;
    c.kill_server();
    let acked = submitter.await.unwrap();
    assert!(!acked.is_empty());

    c.start_server().await;
    for j in &acked {
        let again = c
            .client
            .job(&j.id)
            .await
            .unwrap_or_else(|e| panic!("job {} acknowledged then lost: {e}", j.id));
        assert_eq!(again.progress.total, 1);
    }
    let done = c.finished(&big.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    let all = c.tasks(&big.id).await;
    assert_eq!(all.len(), 40);
    let ids: BTreeSet<_> = all.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, big.task_ids.unwrap().into_iter().collect());
    for (i, t) in all.iter().enumerate() {
        assert_eq!(t.output, json!({ "slept_ms": 100 + i }));
    }
    for j in &acked {
        let done = c.finished(&j.id).await;
        assert_eq!(done.state, JobState::Succeeded, "job {}", j.id);
    }
}
