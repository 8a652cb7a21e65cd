//! Upgrades: a database written by an earlier release (`tests/fixtures/`,
//! made once by that release's binary) opens in this build, which migrates it
//! forward and serves every job in it.

use std::collections::BTreeMap;

use brigade_api::{JobState, JobSubmit, TaskState};
use brigade_client::JobQuery;

use brigade_testkit::{Cluster, task};

/// The schema version 4 fixture (brigade of 2 December 2026), in a temp dir
/// of its own: the server migrates the copy, never the fixture.
fn fixture_copy() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("brigade.db");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/brigade-v4.db");
    std::fs::copy(&fixture, &path).unwrap();
    (dir, format!("sqlite://{}", path.display()))
}

#[tokio::test]
async fn a_database_of_schema_4_opens_and_serves_its_jobs() {
    let (dir, url) = fixture_copy();
    let path = url.trim_start_matches("sqlite://").to_owned();
    // Finished fixture jobs are old: keep them for the test.
    let mut c = Cluster::start_on(dir, url, &["--retention", "off"]).await;
    let jobs = c
        .client
        .jobs(&JobQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    let by_name: BTreeMap<String, _> = jobs
        .iter()
        .map(|j| (j.name.clone().unwrap_or_default(), j.clone()))
        .collect();
    let states: BTreeMap<&str, JobState> =
        by_name.iter().map(|(n, j)| (n.as_str(), j.state)).collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("fixture-cancelled", JobState::Cancelled),
            ("fixture-failed", JobState::Failed),
            ("fixture-idempotent", JobState::Succeeded),
            ("fixture-logs", JobState::Succeeded),
            ("fixture-queued", JobState::Queued),
            ("fixture-scheduled", JobState::Queued),
            ("fixture-succeeded", JobState::Succeeded),
        ])
    );
    for j in &jobs {
        assert_eq!(j.keep_ms, None);
        assert_eq!(j.expires_at, None, "--retention off");
    }
    let succeeded = &by_name["fixture-succeeded"];
    assert_eq!(succeeded.labels["team"], "kitchen");
    let tasks = c.tasks(&succeeded.id).await;
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[0].output, serde_json::json!({"n": 1}));
    assert_eq!(tasks[1].output, serde_json::json!([1, 2, 3]));

    // History and logs came through.
    let failed = &c.tasks(&by_name["fixture-failed"].id).await[0];
    let history = c.client.task(&failed.id).await.unwrap().history.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|h| h.outcome.as_str())
            .collect::<Vec<_>>(),
        vec!["failed", "failed"]
    );
    let logged = &c.tasks(&by_name["fixture-logs"].id).await[0];
    let lines: Vec<String> = c
        .client
        .task_logs(&logged.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(lines, vec!["first-line", "second-line"]);

    // The idempotency key still answers with its job.
    let again = c
        .http()
        .post(format!("{}/v1/jobs", c.url))
        .header("content-type", "application/json")
        .header("idempotency-key", "fixture-key-1")
        .body(r#"{"name":"fixture-idempotent","tasks":[{"kind":"noop"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], by_name["fixture-idempotent"].id.as_str());

    // The queued job runs once its queue is resumed; new work runs too.
    let queues = c.client.queues().await.unwrap();
    assert!(queues.iter().any(|q| q.name == "held" && q.paused));
    c.spawn_worker("w1", 4, &["--queues", "default,held"]);
    c.client.resume_queue("held").await.unwrap();
    let queued = c.finished(&by_name["fixture-queued"].id).await;
    assert_eq!(queued.state, JobState::Succeeded);
    let new = c
        .client
        .submit(
            &JobSubmit::new(vec![task("noop", serde_json::json!(null))]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(c.finished(&new.id).await.state, JobState::Succeeded);
    let scheduled = c.tasks(&by_name["fixture-scheduled"].id).await;
    assert_eq!(scheduled[0].state, TaskState::Scheduled);

    // The schema moved forward; the versions it had are kept as they were.
    let db = rusqlite::Connection::open(&path).unwrap();
    let versions: Vec<i64> = db
        .prepare("SELECT version FROM _sqlx_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(&versions[..4], &[1, 2, 3, 4]);
    assert!(versions.len() > 4, "migrated forward: {versions:?}");
}

#[tokio::test]
async fn migrate_applies_the_upgrade_without_a_server() {
    let (_dir, url) = fixture_copy();
    let out = std::process::Command::new(brigade_testkit::bin())
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And again: nothing left to do.
    let out = std::process::Command::new(brigade_testkit::bin())
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
