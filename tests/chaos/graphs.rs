//! A graph job under faults: workers die while layers wait for layers.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;
use time::OffsetDateTime;

use crate::load::{Load, submit_graph};

/// How far a child's recorded start may precede its parent's recorded end:
/// the lease that started it read the clock just before the parent's result
/// committed (it could not see the child before). A child released early
/// would start while its parent ran, by far more than this.
const CLOCK_SLACK_MS: i128 = 5;

/// Scenario: graph jobs (5 layers of 12 `echo` tasks, each layer after the
/// one before) while workers are SIGKILLed and replaced. Nothing lost,
/// nothing run twice, and no attempt of a task started before every task of
/// the layer it waits for had finished.
#[tokio::test]
async fn graph_jobs_while_workers_die() {
    const LAYERS: usize = 5;
    const WIDTH: usize = 12;
    let mut l = Load::start(4, 8).await;
    let mut graphs = Vec::new();
    for _ in 0..12 {
        graphs.push(
            submit_graph(&l.c.client, &l.tracker, LAYERS, WIDTH)
                .await
                .unwrap()
                .id,
        );
    }
    let mut kills = 0;
    for round in 0..5 {
        let pause = rand::rng().random_range(100..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // More graphs keep arriving while the faults go on.
        graphs.push(
            submit_graph(&l.c.client, &l.tracker, LAYERS, WIDTH)
                .await
                .unwrap()
                .id,
        );
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
    let report = l
        .finish("graph_worker_kills", &format!("kills={kills}"))
        .await;

    // Order: every attempt of a layer-i task started after layer i-1 ended.
    let mut early = Vec::new();
    let mut checked = 0;
    for id in &graphs {
        let tasks = l.c.client.job_tasks(id, None).await.unwrap();
        let layer_of = |k: &Option<String>| -> usize {
            k.as_deref()
                .and_then(|k| k.strip_prefix('l'))
                .and_then(|n| n.parse().ok())
                .unwrap()
        };
        let mut ends: Vec<Option<OffsetDateTime>> = vec![None; LAYERS];
        for t in &tasks {
            let f = report.tasks[&t.id].finished_at.unwrap();
            let e = &mut ends[layer_of(&t.key)];
            *e = Some(e.map_or(f, |x: OffsetDateTime| x.max(f)));
        }
        for t in &tasks {
            let layer = layer_of(&t.key);
            if layer == 0 {
                continue;
            }
            let parents_done = ends[layer - 1].unwrap();
            for h in report.tasks[&t.id].history.clone().unwrap_or_default() {
                let Some(s) = h.started_at else { continue };
                checked += 1;
                if (parents_done - s).whole_milliseconds() > CLOCK_SLACK_MS {
                    early.push(format!(
                        "task {} (layer {layer}) attempt {} started at {s}, its parents ended at {parents_done}",
                        t.id, h.attempt
                    ));
                }
            }
        }
    }
    eprintln!(
        "graph order: {checked} attempts of waiting tasks checked, {} early",
        early.len()
    );
    assert!(
        early.is_empty(),
        "tasks ran before their parents:\n{}",
        early.join("\n")
    );
}
