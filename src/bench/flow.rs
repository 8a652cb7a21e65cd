//! Flow control: what limits and fairness cost the work around them.
//!
//! - **Isolation.** `--flow-tasks` × 90 % unlimited `noop` tasks alone, then
//!   the same behind `--flow-tasks` × 10 % tasks under a concurrency limit
//!   of 5, all in one queue (the limited ones submitted first): the unlimited
//!   tasks' throughput in both runs. A limited task over budget must not
//!   hold up the others.
//! - **Rate.** A limit of 100 per second on a backlog of `noop` tasks for
//!   `--flow-rate-s` seconds: the starts per second over that window (from
//!   the tasks' own `started_at`), after the first second's burst.
//! - **Fairness.** `--flow-tasks` tasks queued for tenant A, then 100 for
//!   tenant B: how long after its submit B's last task finished.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use brigade_api::{JobState, LimitSpec, TaskView};
use brigade_client::Client;
use serde_json::Value;

use super::cluster::Cluster;
use super::{BenchArgs, job_of, kv, wait_succeeded};

/// One submit holds at most this many tasks.
const PER_SUBMIT: u32 = 10_000;

/// Submit `n` `noop` tasks as jobs of at most [`PER_SUBMIT`], each task
/// changed by `shape`; the job ids.
async fn submit(
    client: &Client,
    name: &str,
    n: u32,
    shape: impl Fn(&mut brigade_api::TaskSpec),
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(PER_SUBMIT);
        let mut job = job_of(name, "noop", Value::Null, k);
        job.tasks.iter_mut().for_each(&shape);
        ids.push(client.submit(&job, None).await?.id);
        left -= k;
    }
    Ok(ids)
}

async fn wait_all(client: &Client, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        wait_succeeded(client, id).await?;
    }
    Ok(())
}

/// Run it and print its figures.
pub async fn run(
    c: &mut Cluster,
    args: &BenchArgs,
    workers: u32,
    capacity: u32,
) -> anyhow::Result<ExitCode> {
    let total = args.flow_tasks.max(10);
    let limited = total / 10;
    let free = total - limited;
    kv("workers", workers);
    kv("capacity", capacity);
    kv("flow_unlimited_tasks", free);
    kv("flow_limited_tasks", limited);
    let client = c.client.clone();

    // Warm-up (not counted).
    wait_all(&client, &submit(&client, "bench-warm", 2000, |_| {}).await?).await?;

    let start = Instant::now();
    wait_all(&client, &submit(&client, "bench-free", free, |_| {}).await?).await?;
    let alone = f64::from(free) / start.elapsed().as_secs_f64();
    kv("flow_unlimited_alone_per_s", format!("{alone:.0}"));

    let five = LimitSpec {
        concurrency: Some(5),
        ..LimitSpec::default()
    };
    client.set_limit("bench:slow", &five).await?;
    let start = Instant::now();
    let slow = submit(&client, "bench-slow", limited, |t| {
        t.limits = vec!["bench:slow".into()];
    })
    .await?;
    wait_all(&client, &submit(&client, "bench-free", free, |_| {}).await?).await?;
    let beside = f64::from(free) / start.elapsed().as_secs_f64();
    kv(
        "flow_unlimited_beside_limited_per_s",
        format!("{beside:.0}"),
    );
    kv(
        "flow_unlimited_kept",
        format!("{:.3}", beside / alone.max(1e-9)),
    );
    let most = most_running(&client, &slow).await?;
    kv("flow_limited_most_at_once", most);
    for id in &slow {
        client.cancel_job(id).await?;
    }

    let secs = args.flow_rate_s.max(3);
    let hundred = LimitSpec {
        rate: Some(100),
        per_ms: Some(1000),
        ..LimitSpec::default()
    };
    client.set_limit("bench:rate", &hundred).await?;
    let backlog = 100 * (secs + 5);
    let rated = submit(&client, "bench-rate", backlog, |t| {
        t.limits = vec!["bench:rate".into()];
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(u64::from(secs) + 2)).await;
    let mut starts: Vec<i128> = Vec::new();
    for id in &rated {
        for t in client.job_tasks(id, None).await? {
            if let Some(s) = t.started_at {
                starts.push(s.unix_timestamp_nanos() / 1_000_000);
            }
        }
    }
    starts.sort_unstable();
    let first = starts.first().copied().unwrap_or(0);
    // After the first second, which spends the full bucket (the burst).
    let from = first + 1000;
    let to = from + i128::from(secs) * 1000;
    let inside = starts.iter().filter(|s| **s >= from && **s < to).count();
    let per_s = inside as f64 / f64::from(secs);
    kv("flow_rate_window_s", secs);
    kv("flow_rate_per_s", format!("{per_s:.1}"));
    kv("flow_rate_error", format!("{:+.3}", per_s / 100.0 - 1.0));
    for id in &rated {
        client.cancel_job(id).await?;
    }

    let a = submit(&client, "bench-tenant-a", total, |t| {
        t.fair_key = Some("tenant:a".into());
    })
    .await?;
    let start = Instant::now();
    let b = submit(&client, "bench-tenant-b", 100, |t| {
        t.fair_key = Some("tenant:b".into());
    })
    .await?;
    wait_all(&client, &b).await?;
    let b_ms = start.elapsed().as_secs_f64() * 1000.0;
    kv("flow_fair_a_queued", total);
    kv("flow_fair_b_last_done_ms", format!("{b_ms:.0}"));
    let a_left = client.job(&a[a.len() - 1]).await?;
    kv(
        "flow_fair_a_left_when_b_done",
        if a_left.state == JobState::Succeeded {
            0
        } else {
            a_left.progress.queued
        },
    );
    wait_all(&client, &a).await?;
    Ok(ExitCode::SUCCESS)
}

/// Most of the succeeded tasks of `jobs` that ran at one moment.
async fn most_running(client: &Client, jobs: &[String]) -> anyhow::Result<usize> {
    let mut edges: Vec<(time::OffsetDateTime, i32)> = Vec::new();
    for id in jobs {
        let tasks: Vec<TaskView> = client.job_tasks(id, Some("succeeded")).await?;
        for t in tasks {
            if let (Some(s), Some(f)) = (t.started_at, t.finished_at) {
                edges.push((s, 1));
                edges.push((f, -1));
            }
        }
    }
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    Ok(most.max(0) as usize)
}
