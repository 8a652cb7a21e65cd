//! Several servers on one PostgreSQL database (runs in the PostgreSQL pass;
//! one SQLite file serves one server, so the SQLite pass has nothing to check).

use std::collections::BTreeSet;
use std::time::Duration;

use brigade_api::{JobState, TaskState};
use futures::StreamExt;
use serde_json::json;

use brigade_testkit::{Cluster, task};

#[tokio::test]
async fn two_servers_share_one_database_and_the_job_survives_one_dying() {
    let mut c = Cluster::start_with(&["--lease-ttl-ms", "3000", "--heartbeat-ms", "300"]).await;
    if !c.shared_database() {
        eprintln!("skipped: needs PostgreSQL (BRIGADE_TEST_POSTGRES)");
        return;
    }
    let a = c.url.clone();
    let b = c.spawn_peer_server("server-b").await;
    // Live events on B must show what happens through A.
    let events = reqwest::get(format!("{b}/v1/events")).await.unwrap();
    let mut stream = events.bytes_stream();

    // w1 talks to A first and fails over to B; w2 talks to B.
    c.spawn_worker_on("w1", &format!("{a},{b}"), 4);
    c.spawn_worker_on("w2", &b, 4);
    c.worker_named("w1").await;
    c.worker_named("w2").await;

    let tasks = (0..40)
        .map(|i| task("sleep", json!({ "ms": 150 + i })))
        .collect();
    let job = c.submit(tasks).await; // through A
    let mut seen = String::new();
    let created = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("job.created") && seen.contains(&job.id) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(
        created,
        "server B streamed job.created of a job submitted through A; got:\n{seen}"
    );

    c.until("the job is under way", || async {
        let j = c.client.job(&job.id).await.ok()?;
        (j.progress.succeeded >= 4).then_some(())
    })
    .await;
    c.kill_server(); // A dies, SIGKILL

    let through_b = brigade_client::Client::new(&b, None).unwrap();
    let done = c
        .until("the job finished through B", || async {
            let j = through_b
                .wait_job(&job.id, Duration::from_millis(500))
                .await
                .ok()?;
            j.state.is_finished().then_some(j)
        })
        .await;
    assert_eq!(done.state, JobState::Succeeded);
    let all = through_b.job_tasks(&job.id, None).await.unwrap();
    assert_eq!(all.len(), 40);
    let mut workers = BTreeSet::new();
    for (i, t) in all.iter().enumerate() {
        assert_eq!(t.state, TaskState::Succeeded);
        assert_eq!(t.output, json!({ "slept_ms": 150 + i }));
        let t = through_b.task(&t.id).await.unwrap();
        let history = t.history.unwrap();
        let successes = history.iter().filter(|h| h.outcome == "succeeded").count();
        assert_eq!(successes, 1, "task {} recorded once: {history:?}", t.id);
        workers.insert(t.worker_id.unwrap());
    }
    assert_eq!(workers.len(), 2, "both workers, on both servers, ran tasks");
}
