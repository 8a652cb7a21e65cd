//! Workflows: what waiting for other tasks costs.
//!
//! - A chord (many `noop` tasks keyed `map`, one `flow` task `reduce` after
//!   `map`) against a flat job of as many `noop` tasks: the wall times, and
//!   how long after the last map finished the reduce started (from the
//!   tasks' own `finished_at` and `started_at`, so the client's polling does
//!   not count).
//! - A chain (each `noop` after the one before): links per second, which is
//!   one "parent finished → child leased" hop after another.
//!
//! One submit holds at most 10 000 tasks, so the chord is `--workflow-tasks - 1`
//! maps and its reduce: both jobs have the same number of tasks.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use brigade_api::{JobSubmit, TaskSpec, TaskView};
use serde_json::{Value, json};

use super::cluster::Cluster;
use super::stats::percentile;
use super::{BenchArgs, job_of, kv, wait_succeeded};

/// Run it and print its figures.
pub async fn run(
    c: &mut Cluster,
    args: &BenchArgs,
    workers: u32,
    capacity: u32,
) -> anyhow::Result<ExitCode> {
    let tasks = args.workflow_tasks.clamp(2, 10_000);
    let runs = args.workflow_runs.max(1);
    let links = args.chain_links.max(1);
    kv("workers", workers);
    kv("capacity", capacity);
    kv("workflow_tasks", tasks);
    kv("workflow_chord_maps", tasks - 1);
    kv("workflow_runs", runs);

    // A warm-up round (not counted): the first job pays for cold caches.
    flat(c, tasks.min(1000)).await?;

    // Flat and chord alternate, so a slower stretch of the machine falls on both.
    let mut flat_s = Vec::new();
    let mut chord_s = Vec::new();
    let mut gaps_ms = Vec::new();
    for _ in 0..runs {
        flat_s.push(flat(c, tasks).await?);
        let (wall, gap) = chord(c, tasks - 1).await?;
        chord_s.push(wall);
        gaps_ms.push(gap);
    }
    for v in [&mut flat_s, &mut chord_s, &mut gaps_ms] {
        v.sort_by(f64::total_cmp);
    }
    let flat_p50 = percentile(&flat_s, 0.5);
    let chord_p50 = percentile(&chord_s, 0.5);
    kv("workflow_flat_wall_s", format!("{flat_p50:.3}"));
    kv("workflow_chord_wall_s", format!("{chord_p50:.3}"));
    kv(
        "workflow_chord_ratio",
        format!("{:.3}", chord_p50 / flat_p50.max(1e-9)),
    );
    kv(
        "workflow_reduce_start_p50_ms",
        format!("{:.0}", percentile(&gaps_ms, 0.5)),
    );
    kv(
        "workflow_reduce_start_max_ms",
        format!("{:.0}", gaps_ms.last().copied().unwrap_or(0.0)),
    );

    let chain_s = chain(c, links).await?;
    kv("workflow_chain_links", links);
    kv("workflow_chain_wall_s", format!("{chain_s:.3}"));
    kv(
        "workflow_chain_links_per_s",
        format!("{:.0}", f64::from(links) / chain_s.max(1e-9)),
    );
    Ok(ExitCode::SUCCESS)
}

/// A flat job of `n` `noop` tasks, submit to finished: seconds.
async fn flat(c: &Cluster, n: u32) -> anyhow::Result<f64> {
    let job = job_of("bench-flat", "noop", Value::Null, n);
    let start = Instant::now();
    let id = c.client.submit(&job, None).await?.id;
    wait_succeeded(&c.client, &id).await?;
    Ok(start.elapsed().as_secs_f64())
}

/// A chord of `maps` `noop` tasks into one `flow` reduce: seconds from
/// submit to finished, and milliseconds from the last map's end to the
/// reduce's start.
async fn chord(c: &Cluster, maps: u32) -> anyhow::Result<(f64, f64)> {
    let mut specs = vec![TaskSpec::new("noop", Value::Null).keyed("map"); maps as usize];
    // `flow` reads its parents, as a real reduce would.
    specs.push(
        TaskSpec::new("flow", json!({ "value": "reduce" }))
            .keyed("reduce")
            .after(["map"]),
    );
    let job = JobSubmit::new(specs).named("bench-chord");
    let start = Instant::now();
    let id = c.client.submit(&job, None).await?.id;
    wait_succeeded(&c.client, &id).await?;
    let wall = start.elapsed().as_secs_f64();

    let tasks = c.client.job_tasks(&id, None).await?;
    let (reduce, maps): (Vec<&TaskView>, Vec<&TaskView>) = tasks
        .iter()
        .partition(|t| t.key.as_deref() == Some("reduce"));
    let started = reduce
        .first()
        .and_then(|t| t.started_at)
        .context("the reduce has no started_at")?;
    let last_map = maps
        .iter()
        .filter_map(|t| t.finished_at)
        .max()
        .context("no map has a finished_at")?;
    let gap_ms = (started - last_map).as_seconds_f64() * 1000.0;
    Ok((wall, gap_ms))
}

/// A chain of `links` `noop` tasks, each after the one before: seconds from
/// submit to finished.
async fn chain(c: &Cluster, links: u32) -> anyhow::Result<f64> {
    let specs: Vec<TaskSpec> = (0..links)
        .map(|i| {
            let t = TaskSpec::new("noop", Value::Null).keyed(format!("l{i}"));
            if i == 0 {
                t
            } else {
                t.after([format!("l{}", i - 1)])
            }
        })
        .collect();
    let job = JobSubmit::new(specs).named("bench-chain");
    let start = Instant::now();
    let id = c.client.submit(&job, None).await?.id;
    wait_succeeded(&c.client, &id).await?;
    Ok(start.elapsed().as_secs_f64())
}
