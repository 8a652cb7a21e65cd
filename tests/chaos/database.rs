//! Scenario 5: PostgreSQL itself restarts under load.

use std::time::{Duration, Instant};

use brigade_api::{JobSubmit, TaskSpec, WorkerState};
use futures::StreamExt;
use nix::sys::signal::Signal;
use serde_json::json;

use crate::load::{Load, SERVER_ARGS, submit_echo};
use brigade_testkit::Cluster;
use brigade_testkit::pg::Pg;

/// Two servers on a PostgreSQL of the test's own, restarted three times
/// mid-job (crash restart, clean stop and start, crash restart). The servers
/// reconnect and carry on; afterwards LISTEN/NOTIFY still carries events from
/// one server to the other, and the promoter and reaper still run.
#[tokio::test]
async fn postgres_restarted_under_load() {
    if brigade_testkit::pg::requested().is_none() {
        eprintln!(
            "SKIP postgres_restarted_under_load: PostgreSQL pass only (BRIGADE_TEST_POSTGRES unset)"
        );
        return;
    }
    let pg = match Pg::start() {
        Ok(pg) => pg,
        Err(why) => {
            println!(
                "SKIP postgres_restarted_under_load: cannot start a throwaway PostgreSQL: {why}"
            );
            eprintln!(
                "SKIP postgres_restarted_under_load: cannot start a throwaway PostgreSQL: {why}"
            );
            return;
        }
    };
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&pg.url("postgres"))
            .await
            .unwrap();
        sqlx::query("CREATE DATABASE brigade_chaos")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let c = Cluster::start_on(
        tempfile::tempdir().unwrap(),
        pg.url("brigade_chaos"),
        SERVER_ARGS,
    )
    .await;
    let mut l = Load::on(c, 2, 8).await;
    let peer = l.c.spawn_peer_server("server-b").await;
    let on_peer = l.spawn_worker(&peer, 8);
    l.c.worker_named(&on_peer).await;
    l.begin().await;
    let rounds = [
        "restart -m immediate",
        "stop -m fast; start",
        "restart -m immediate",
    ];
    for (round, how) in rounds.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if how.starts_with("stop") {
            pg.stop().unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            pg.start_again().unwrap();
        } else {
            pg.restart_immediate().unwrap();
        }
        let since = Instant::now();
        let s = l.recovery(since).await;
        eprintln!("round {round}: PostgreSQL {how}; progress after {s:.2}s");
    }
    let report_extra = "pg_restarts=3";
    l.stop_stream().await;
    // LISTEN survived: once B's notification connection is back (it notices
    // the restart only when its socket fails, then connects again), events of
    // jobs submitted through A reach B's stream. A job is submitted through A
    // every half second until B shows one of them.
    let events =
        l.c.http()
            .get(format!("{peer}/v1/events"))
            .send()
            .await
            .unwrap();
    assert!(events.status().is_success());
    let mut stream = events.bytes_stream();
    let mut seen = String::new();
    let mut sent: Vec<String> = Vec::new();
    let deadline = Instant::now() + brigade_testkit::DEADLINE;
    while !sent.iter().any(|id| seen.contains(id.as_str())) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "server B never heard of the jobs {sent:?} submitted through A after the restarts; B's log:\n{}",
                l.c.read_log("server-b")
            );
        }
        sent.push(
            submit_echo(&l.c.client, &l.tracker, 1, 0, 0)
                .await
                .unwrap()
                .id,
        );
        let until = left.min(Duration::from_millis(500));
        let wait_until = tokio::time::Instant::now() + until;
        loop {
            match tokio::time::timeout_at(wait_until, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    seen.push_str(&String::from_utf8_lossy(&chunk));
                    if sent.iter().any(|id| seen.contains(id.as_str())) {
                        break;
                    }
                }
                Err(_) => break,
                Ok(other) => panic!(
                    "server B's event stream ended ({other:?}); B's log:\n{}",
                    l.c.read_log("server-b")
                ),
            }
        }
    }
    // The promoter still runs: a task due in a second is promoted and run.
    let mut later = TaskSpec::new("echo", json!({ "later": true }));
    later.run_at = Some(time::OffsetDateTime::now_utc() + Duration::from_millis(1000));
    let due =
        l.c.client
            .submit(&JobSubmit::new(vec![later]).named("due"), None)
            .await
            .unwrap();
    l.c.finished(&due.id).await;
    // The reaper still runs: a killed worker is noticed.
    l.c.signal_worker(&on_peer, Signal::SIGKILL);
    l.c.wait_worker_exit(&on_peer).await;
    l.c.until("the killed worker marked lost", || async {
        let w = l.worker(&on_peer).await?;
        (w.state == WorkerState::Lost).then_some(())
    })
    .await;
    l.finish("pg_restart", report_extra).await;
    drop(l);
    drop(pg);
}
