//! Flow control over HTTP: unique jobs, poison tasks, finding and replaying tasks.

use brigade_api::{ErrorKind, JobSubmit, TaskState, Unique, UniqueWhile};
use brigade_client::Client;
use serde_json::json;

use brigade_testkit::{Cluster, task};

fn unique_job(key: &str) -> JobSubmit {
    JobSubmit {
        unique: Some(Unique {
            key: key.into(),
            for_ms: None,
            while_: Some(UniqueWhile::Unfinished),
        }),
        ..JobSubmit::new(vec![task("sleep", json!({ "ms": 60_000 }))])
    }
}

#[tokio::test]
async fn a_unique_job_is_submitted_once_and_duplicates_answer_200_with_the_header() {
    let mut c = Cluster::start().await;
    // On PostgreSQL the duplicates go through a second server too.
    let other = if c.shared_database() {
        Client::new(&c.spawn_peer_server("server2").await, None).unwrap()
    } else {
        c.client.clone()
    };
    let first = c
        .client
        .submit_outcome(&unique_job("reindex:42"), None)
        .await
        .unwrap();
    assert!(first.created && first.duplicate_of.is_none());
    for client in [&c.client, &other] {
        let again = client
            .submit_outcome(&unique_job("reindex:42"), None)
            .await
            .unwrap();
        assert!(!again.created, "200, not 201");
        assert_eq!(again.duplicate_of.as_deref(), Some(first.job.id.as_str()));
        assert_eq!(again.job.id, first.job.id);
    }
    // Raw HTTP: the status and the header as the contract names them.
    let res = c
        .http()
        .post(format!("{}/v1/jobs", c.url))
        .json(&unique_job("reindex:42"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["brigade-duplicate-of"].to_str().unwrap(),
        first.job.id
    );
    // Another key makes another job; cancelling the holder frees the key.
    let other_key = c
        .client
        .submit_outcome(&unique_job("reindex:43"), None)
        .await
        .unwrap();
    assert!(other_key.created);
    c.client.cancel_job(&first.job.id).await.unwrap();
    let next = c
        .client
        .submit_outcome(&unique_job("reindex:42"), None)
        .await
        .unwrap();
    assert!(next.created && next.job.id != first.job.id);

    // Bad `unique` is a 422 naming the field.
    for (body, field) in [
        (
            json!({"unique": {"key": "k", "for_ms": 0}, "tasks": [{"kind": "noop"}]}),
            "unique.for_ms",
        ),
        (
            json!({"unique": {"key": "", "while": "unfinished"}, "tasks": [{"kind": "noop"}]}),
            "unique.key",
        ),
        (
            json!({"unique": {"key": "k"}, "tasks": [{"kind": "noop"}]}),
            "unique",
        ),
    ] {
        let res = c
            .http()
            .post(format!("{}/v1/jobs", c.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{body}");
        let problem: serde_json::Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
}

#[tokio::test]
async fn a_task_that_kills_its_worker_every_time_fails_as_poison_after_three_deaths() {
    let mut c = Cluster::start_with(&["--lease-ttl-ms", "1000", "--heartbeat-ms", "200"]).await;
    // `kill -9 $PPID`: the shell's parent is the worker itself.
    let mut killer = task(
        "exec",
        json!({ "argv": ["sh", "-c", "kill -9 $PPID; sleep 30"] }),
    );
    killer.max_attempts = Some(10);
    let job = c.submit(vec![killer]).await;
    let id = job.task_ids.unwrap()[0].clone();
    let mut deaths = 0;
    loop {
        let name = format!("w{deaths}");
        c.spawn_worker(&name, 1, &["--allow-exec"]);
        let status = c.wait_worker_exit(&name).await;
        assert!(
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
            "the task killed worker {name}: {status:?}"
        );
        deaths += 1;
        assert!(deaths <= 3, "still not poison after {deaths} deaths");
        // The dead worker's lease runs out; then the task is queued again or poison.
        let t = c
            .until("the lost attempt recorded", || async {
                let t = c.client.task(&id).await.ok()?;
                (t.state != TaskState::Running).then_some(t)
            })
            .await;
        if t.state == TaskState::Failed {
            break;
        }
        assert_eq!(t.state, TaskState::Queued, "requeued after death {deaths}");
    }
    assert_eq!(deaths, 3);
    let t = c.client.task(&id).await.unwrap();
    assert_eq!(
        (t.state, t.attempt, t.max_attempts),
        (TaskState::Failed, 3, 10)
    );
    assert_eq!(t.error.as_ref().unwrap().kind, ErrorKind::Poison);
    let history = t.history.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|h| h.outcome == "lost"), "{history:?}");
    assert_eq!(
        c.finished(&job.id).await.state,
        brigade_api::JobState::Failed
    );
}

/// `brigade` with `args` against the cluster's server; its stdout.
fn cli(c: &Cluster, args: &[&str]) -> String {
    let out = std::process::Command::new(brigade_testkit::bin())
        .arg("--server")
        .arg(&c.url)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "brigade {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn five_hundred_failed_tasks_are_found_and_retried_in_bulk() {
    let c = Cluster::start()
        .await
        .with_workers(&["w1", "w2"], 50, &[])
        .await;
    // 500 tasks fail their only attempt and succeed on the next; 20 others
    // of another kind fail for good and must not be retried.
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let mut t = task("flaky", json!({ "fail_attempts": 1 }));
        t.max_attempts = Some(1);
        tasks.push(t);
    }
    for _ in 0..20 {
        let mut t = task("fail", json!({ "retryable": false }));
        t.max_attempts = Some(1);
        tasks.push(t);
    }
    let job = c.submit(tasks).await;
    assert_eq!(c.finished(&job.id).await.progress.failed, 520);

    let found: Vec<brigade_api::TaskView> = serde_json::from_str(&cli(
        &c,
        &[
            "-o", "json", "tasks", "--state", "failed", "--kind", "flaky", "--limit", "1000",
        ],
    ))
    .unwrap();
    assert_eq!(found.len(), 500);
    assert!(
        found
            .iter()
            .all(|t| t.kind == "flaky" && t.state == TaskState::Failed)
    );
    let page = c
        .client
        .tasks(&brigade_client::TaskQuery {
            state: Some("failed".into()),
            error_kind: Some("handler".into()),
            job: Some(job.id.clone()),
            limit: Some(300),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 300);
    assert!(page.next_cursor.is_some(), "520 failed: more than a page");

    // A bare `brigade retry` would replay every failure: it wants a filter or --all.
    let bare = std::process::Command::new(brigade_testkit::bin())
        .args(["--server", &c.url, "retry"])
        .output()
        .unwrap();
    assert!(!bare.status.success());
    assert!(String::from_utf8_lossy(&bare.stderr).contains("--all"));
    let out = cli(&c, &["retry", "--kind", "flaky"]);
    assert_eq!(out.trim(), "retried 500 tasks");
    let done = c.finished(&job.id).await;
    assert_eq!((done.progress.succeeded, done.progress.failed), (500, 20));
    for t in c.tasks(&job.id).await {
        match t.kind.as_str() {
            "flaky" => assert_eq!((t.state, t.attempt), (TaskState::Succeeded, 2)),
            _ => assert_eq!((t.state, t.attempt), (TaskState::Failed, 1)),
        }
    }
    // Nothing failed of that kind is left; a cancel by filter ends the rest.
    let again = c
        .client
        .retry_tasks(&brigade_api::TaskFilterSpec {
            kind: Some("flaky".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again, 0);

    // Bad filters are 422 naming the field.
    for (query, field) in [
        ("state=nope", "state"),
        ("error_kind=nope", "error_kind"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
    ] {
        let res = c
            .http()
            .get(format!("{}/v1/tasks?{query}", c.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{query}");
        let problem: serde_json::Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let res = c
        .http()
        .post(format!("{}/v1/tasks/cancel", c.url))
        .json(&json!({ "state": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
}

#[tokio::test]
async fn a_filtered_cancel_stops_only_the_matching_tasks() {
    let c = Cluster::start().await.with_workers(&["w1"], 4, &[]).await;
    let long = c
        .submit(vec![task("sleep", json!({ "ms": 60_000 })); 2])
        .await;
    let mut other = task("sleep", json!({ "ms": 60_000 }));
    other.queue = Some("elsewhere".into());
    let kept = c.submit(vec![other]).await;
    c.until("two running", || async {
        let j = c.client.job(&long.id).await.ok()?;
        (j.progress.running == 2).then_some(())
    })
    .await;
    let cancelled = c
        .client
        .cancel_tasks(&brigade_api::TaskFilterSpec {
            kind: Some("sleep".into()),
            queue: Some("default".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cancelled, 2);
    assert_eq!(
        c.finished(&long.id).await.state,
        brigade_api::JobState::Cancelled
    );
    let k = c.client.job(&kept.id).await.unwrap();
    assert!(
        !k.state.is_finished(),
        "the other queue's task is untouched"
    );
}
