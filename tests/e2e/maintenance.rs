//! Keeping a server for months: retention prunes finished jobs, an online
//! backup holds everything acknowledged, a migration moves a database to
//! PostgreSQL and the API answers the same there.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brigade_api::{JobState, JobSubmit, TaskSpec};
use brigade_client::JobQuery;
use serde_json::{Value, json};

use brigade_testkit::pg::TestDatabase;
use brigade_testkit::{Cluster, bin, task};

use crate::observability::{scrape, total};

#[tokio::test]
async fn finished_jobs_are_deleted_after_their_retention() {
    let c = Cluster::start_with(&["--retention", "2s", "--prune-every-ms", "100"])
        .await
        .with_workers(&["w1"], 4, &[])
        .await;
    let plain = c.submit(vec![task("echo", json!({"n": 1})); 3]).await;
    let kept = c
        .client
        .submit(
            &JobSubmit {
                keep_ms: Some(3_600_000),
                ..JobSubmit::new(vec![task("echo", json!(2))])
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(kept.keep_ms, Some(3_600_000));
    let running = c.submit(vec![task("sleep", json!({"ms": 60_000}))]).await;

    let plain_done = c.finished(&plain.id).await;
    let finished = plain_done.finished_at.unwrap();
    assert_eq!(
        plain_done.expires_at,
        Some(finished + Duration::from_secs(2)),
        "the server's retention"
    );
    let kept_done = c.finished(&kept.id).await;
    assert_eq!(
        kept_done.expires_at,
        Some(kept_done.finished_at.unwrap() + Duration::from_secs(3600)),
        "the job's own keep_ms"
    );
    let task_id = plain.task_ids.clone().unwrap()[0].clone();
    assert!(c.client.task(&task_id).await.is_ok());

    c.until("the plain job is pruned", || async {
        match c.client.job(&plain.id).await {
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => Some(()),
            _ => None,
        }
    })
    .await;
    let gone = c.client.task(&task_id).await.unwrap_err();
    assert_eq!(gone.status(), Some(reqwest::StatusCode::NOT_FOUND));
    assert!(c.client.job(&kept.id).await.is_ok(), "kept for an hour");
    let still = c.client.job(&running.id).await.unwrap();
    assert_eq!(still.state, JobState::Running);
    assert_eq!(still.expires_at, None, "a running job does not expire");
    assert_eq!(
        total(
            &scrape(&c).await,
            "brigade_pruned_rows_total",
            &[("table", "jobs")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &scrape(&c).await,
            "brigade_pruned_rows_total",
            &[("table", "tasks")]
        ),
        3.0
    );
}

#[tokio::test]
async fn retention_off_keeps_jobs_and_shows_no_expiry() {
    let c = Cluster::start_with(&["--retention", "off"])
        .await
        .with_workers(&["w1"], 2, &[])
        .await;
    let job = c.submit(vec![task("noop", json!(null))]).await;
    let done = c.finished(&job.id).await;
    assert_eq!(done.expires_at, None);
    let bad = c
        .http()
        .post(format!("{}/v1/jobs", c.url))
        .header("content-type", "application/json")
        .body(r#"{"keep_ms": 99999999999999999, "tasks": [{"kind": "noop"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "keep_ms");
}

/// The copy a backup made while clients kept submitting holds every job
/// acknowledged before it started, and a server runs on it.
#[tokio::test]
async fn a_backup_under_load_holds_every_acknowledged_job() {
    let c = Cluster::start().await;
    if c.shared_database() {
        return; // SQLite's backup; PostgreSQL's is pg_dump (docs/operations).
    }
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = Vec::new();
    for i in 0..4 {
        let client = c.client.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                let job = JobSubmit::new(vec![TaskSpec::new("noop", json!(n)); 20])
                    .named(format!("load-{i}"));
                if let Ok(view) = client.submit(&job, None).await {
                    acked.lock().unwrap().push(view.id);
                }
                n += 1;
            }
        }));
    }
    c.until("some jobs acknowledged", || async {
        (acked.lock().unwrap().len() >= 40).then_some(())
    })
    .await;
    let before: Vec<String> = acked.lock().unwrap().clone();
    let out = c.dir.path().join("backup.db");
    let backup = tokio::process::Command::new(bin())
        .args(["backup", "--database-url", &c.db_url, "--out"])
        .arg(&out)
        .output()
        .await
        .unwrap();
    let during = acked.lock().unwrap().len();
    stop.cancel();
    for l in load {
        l.await.unwrap();
    }
    assert!(
        backup.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert!(
        during > before.len(),
        "clients kept submitting during the backup"
    );
    assert!(
        String::from_utf8_lossy(&backup.stdout).contains("backup.db"),
        "{}",
        String::from_utf8_lossy(&backup.stdout)
    );

    // A server on the copy serves every job acknowledged before the backup.
    let dir = tempfile::tempdir().unwrap();
    let restored = Cluster::start_on(dir, format!("sqlite://{}", out.display()), &[]).await;
    for id in &before {
        let job = restored.client.job(id).await.unwrap();
        assert_eq!(job.progress.total, 20);
    }
    // Writing the same file again is refused: a backup never overwrites.
    let again = Command::new(bin())
        .args(["backup", "--database-url", &c.db_url, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
}

/// Everything a user can read through the API, in one value, to compare two
/// servers by.
async fn everything(c: &Cluster) -> Value {
    let mut out = BTreeMap::new();
    let mut jobs = Vec::new();
    let mut cursor = None;
    loop {
        let page = c
            .client
            .jobs(&JobQuery {
                limit: Some(2),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        jobs.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    for job in &jobs {
        let tasks = c.client.job_tasks(&job.id, None).await.unwrap();
        let mut views = Vec::new();
        for t in &tasks {
            let view = c.client.task(&t.id).await.unwrap();
            let logs = c.client.task_logs(&t.id).await.unwrap();
            views.push(json!({"task": view, "logs": logs}));
        }
        out.insert(
            job.id.clone(),
            json!({"job": c.client.job(&job.id).await.unwrap(), "tasks": tasks, "views": views}),
        );
    }
    json!({
        "pages": jobs,
        "jobs": out,
        "queues": c.client.queues().await.unwrap(),
        "workers": c.client.workers().await.unwrap(),
    })
}

/// `brigade migrate --from sqlite://… --to postgres://…` copies everything;
/// a server on PostgreSQL then answers exactly as the SQLite one did.
#[tokio::test]
async fn migrate_moves_sqlite_to_postgres_and_the_api_answers_the_same() {
    let Some(pg) = TestDatabase::create().await.unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("a.db").display());
    let mut c = Cluster::start_on(dir, sqlite.clone(), &["--retention", "off"])
        .await
        .with_workers(&["w1"], 4, &["--allow-exec"])
        .await;
    c.client.pause_queue("held").await.unwrap();
    let ok = c
        .client
        .submit(
            &JobSubmit::new(vec![task("echo", json!({"a": [1, 2]})); 3])
                .named("ok")
                .in_queue("default"),
            Some("key-1"),
        )
        .await
        .unwrap();
    let mut failing = TaskSpec::new("fail", json!({"message": "no", "retryable": true}));
    failing.max_attempts = Some(2);
    failing.backoff = Some(brigade_api::Backoff {
        initial_ms: 10,
        max_ms: 10,
        factor: 1.0,
        jitter: false,
    });
    let failed = c
        .client
        .submit(&JobSubmit::new(vec![failing]), None)
        .await
        .unwrap();
    let logs = c
        .client
        .submit(
            &JobSubmit::new(vec![task(
                "exec",
                json!({"argv": ["sh", "-c", "echo one >&2; echo two >&2"]}),
            )]),
            None,
        )
        .await
        .unwrap();
    let held = c
        .client
        .submit(
            &JobSubmit::new(vec![task("noop", json!(null))]).in_queue("held"),
            None,
        )
        .await
        .unwrap();
    let kept = c
        .client
        .submit(
            &JobSubmit {
                keep_ms: Some(86_400_000),
                ..JobSubmit::new(vec![task("noop", json!(null))])
            },
            None,
        )
        .await
        .unwrap();
    for id in [&ok.id, &failed.id, &logs.id, &kept.id] {
        c.finished(id).await;
    }
    c.until("log lines stored", || async {
        (c.client
            .task_logs(&logs.task_ids.clone()?[0])
            .await
            .ok()?
            .len()
            == 2)
            .then_some(())
    })
    .await;
    c.signal_worker("w1", nix::sys::signal::Signal::SIGTERM);
    c.wait_worker_exit("w1").await;
    let on_sqlite = everything(&c).await;
    c.kill_server();

    let migrate = |to: &str| {
        Command::new(bin())
            .args(["migrate", "--from", &sqlite, "--to", to])
            .output()
            .unwrap()
    };
    let copied = migrate(&pg.url);
    let said = String::from_utf8_lossy(&copied.stdout).into_owned();
    assert!(
        copied.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert!(said.contains("tasks") && said.contains("7"), "{said}");
    let refused = migrate(&pg.url);
    assert!(
        !refused.status.success(),
        "a second copy into a full database"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let pg_dir = tempfile::tempdir().unwrap();
    let on_pg = Cluster::start_on(pg_dir, pg.url.clone(), &["--retention", "off"]).await;
    assert_eq!(everything(&on_pg).await, on_sqlite);
    // Idempotency keys came along: the same request answers with the same job.
    let again = on_pg
        .client
        .submit(
            &JobSubmit::new(vec![task("echo", json!({"a": [1, 2]})); 3])
                .named("ok")
                .in_queue("default"),
            Some("key-1"),
        )
        .await
        .unwrap();
    assert_eq!(again.id, ok.id);
    // New rows continue after the copied ones: the newest job is listed first.
    let new = on_pg
        .client
        .submit(&JobSubmit::new(vec![task("noop", json!(null))]), None)
        .await
        .unwrap();
    let first = on_pg.client.jobs(&JobQuery::default()).await.unwrap();
    assert_eq!(first.items[0].id, new.id);
    assert_eq!(
        on_pg.client.job(&held.id).await.unwrap().state,
        JobState::Queued
    );
}
