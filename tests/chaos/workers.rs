//! Workers die and freeze: their tasks are redone elsewhere, once.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use rand::Rng;

use crate::load::{Load, submit_echo};

/// Scenario 1: SIGKILL random workers again and again, starting new ones;
/// at the end all of them at once.
#[tokio::test]
async fn workers_killed_again_and_again() {
    let mut l = Load::start(4, 8).await;
    l.begin().await;
    let mut kills = 0;
    for round in 0..8 {
        let pause = rand::rng().random_range(150..600);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let live: Vec<String> = l.c.workers.iter().map(|(n, _)| n.clone()).collect();
        let victim = live[rand::rng().random_range(0..live.len())].clone();
        l.c.signal_worker(&victim, Signal::SIGKILL);
        l.c.wait_worker_exit(&victim).await;
        l.c.workers.retain(|(n, _)| n != &victim);
        kills += 1;
        let url = l.c.url.clone();
        let fresh = l.spawn_worker(&url, 8);
        let since = Instant::now();
        l.c.worker_named(&fresh).await;
        let s = l.recovery(since).await;
        eprintln!("round {round}: killed {victim}, started {fresh}; progress after {s:.2}s");
    }
    // Everyone at once: only the reaper and new workers can finish the work.
    let live: Vec<String> = l.c.workers.iter().map(|(n, _)| n.clone()).collect();
    for n in &live {
        l.c.signal_worker(n, Signal::SIGKILL);
        kills += 1;
    }
    for n in &live {
        l.c.wait_worker_exit(n).await;
    }
    l.c.workers.clear();
    let since = Instant::now();
    let url = l.c.url.clone();
    for _ in 0..3 {
        l.spawn_worker(&url, 8);
    }
    l.recovery(since).await;
    l.finish("worker_kills", &format!("kills={kills}")).await;
}

/// Scenario 2: SIGSTOP a worker holding tasks past its lease, then SIGCONT:
/// its tasks were redone elsewhere and its late results are rejected.
#[tokio::test]
async fn a_frozen_worker_is_replaced_and_its_late_results_rejected() {
    let mut l = Load::start(3, 8).await;
    l.begin().await;
    let victim = "w0";
    let victim_id = l.c.worker_named(victim).await.id;
    let pid = l.pid(victim);
    // A round catches the worker holding leased tasks (in its memory or in a
    // lease answer it has not read yet); if the race let it hand in everything
    // just before the freeze, freeze it again.
    let mut rounds = 0;
    loop {
        rounds += 1;
        // A burst, so every worker is busy when the freeze comes.
        submit_echo(&l.c.client, &l.tracker, 300, 0, 0)
            .await
            .unwrap();
        l.c.until("the victim holds tasks", || async {
            let w = l.worker(victim).await?;
            (w.running > 0).then_some(())
        })
        .await;
        kill(pid, Signal::SIGSTOP).unwrap();
        // Past its lease: the reaper marks it lost and requeues its tasks.
        l.until_lost_and_reaped(victim).await;
        kill(pid, Signal::SIGCONT).unwrap();
        let since = Instant::now();
        l.recovery(since).await;
        // It comes back: its next heartbeat makes it active again.
        l.c.worker_named(victim).await;
        // Its late results, if it had any, arrive now and are turned down.
        let window = Instant::now() + Duration::from_secs(3);
        while rejected(&l, victim) == 0 && Instant::now() < window {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if (rounds >= 2 && rejected(&l, victim) > 0) || rounds >= 6 {
            break;
        }
    }
    let late = rejected(&l, victim);
    let report = l
        .finish("freeze", &format!("freezes={rounds} late_rejected={late}"))
        .await;
    let redone = report.redone_after(&victim_id, "lost");
    eprintln!(
        "freeze: {redone} tasks of the frozen worker redone elsewhere; {late} late results rejected"
    );
    assert!(
        redone > 0,
        "the frozen worker's tasks were requeued and redone by others"
    );
    assert!(late > 0, "the thawed worker's late results were rejected");
}

/// Results the worker `name` reported and the server turned down (its log).
fn rejected(l: &Load, name: &str) -> usize {
    l.c.read_log(name).matches("result not recorded").count()
}
