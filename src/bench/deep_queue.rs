//! Deep queue: does leasing stay fast, and submitting keep its rate, when a
//! queue holds a million tasks?
//!
//! A worker-like client (joined through the API, heartbeating, no worker
//! processes) serves one queue of its own. Each sample submits one `noop`
//! task to that queue, then times a lease of one task and reports its result
//! (timed apart). First with the queue empty; then `--deep-tasks` tasks are
//! submitted into the same queue (per-request rates recorded as it fills);
//! then the same samples again, each lease now picking from the deep index.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use brigade_api::{Heartbeat, Outcome, TaskResult, WorkerJoin};
use brigade_client::Client;

use super::cluster::Cluster;
use super::procfs;
use super::stats::Samples;
use super::{BenchArgs, job_in, kv};

/// Tasks per window of the submit rate printed for the start and the end of the filling.
const RATE_WINDOW: u64 = 100_000;

/// Lease, result and submit times of one phase.
struct Phase {
    lease: Samples,
    report: Samples,
    submit_one: Samples,
}

/// Rounds run before the samples are counted (connections, caches and plans warm up).
const WARM_UP: u32 = 5;

/// Take `runs` samples: submit one task, lease one (timed), report it (timed).
async fn sample(client: &Client, worker: &str, queue: &str, runs: u32) -> anyhow::Result<Phase> {
    let one = job_in(
        "deep-probe",
        Some(queue),
        "noop",
        serde_json::Value::Null,
        1,
    );
    let mut p = Phase {
        lease: Samples::with_capacity(runs as usize),
        report: Samples::with_capacity(runs as usize),
        submit_one: Samples::with_capacity(runs as usize),
    };
    for i in 0..runs + WARM_UP {
        let t = Instant::now();
        client.submit(&one, None).await?;
        let submitted = t.elapsed();
        let t = Instant::now();
        let leased = client.lease(worker, 1, Duration::from_secs(5)).await?;
        let leased_in = t.elapsed();
        let task = leased
            .tasks
            .into_iter()
            .next()
            .context("a lease found no task although one was just submitted")?;
        let t = Instant::now();
        let reply = client
            .results(
                worker,
                vec![TaskResult {
                    task_id: task.id,
                    attempt: task.attempt,
                    outcome: Outcome::Succeeded,
                    output: serde_json::Value::Null,
                    error: None,
                    retryable: None,
                    retry_in_ms: None,
                    duration_ms: Some(0),
                    spawn: Vec::new(),
                }],
            )
            .await?;
        let reported = t.elapsed();
        anyhow::ensure!(
            reply.rejected.is_empty(),
            "a result was rejected: {:?}",
            reply.rejected
        );
        if i >= WARM_UP {
            p.lease.push(leased_in);
            p.report.push(reported);
            p.submit_one.push(submitted);
        }
    }
    Ok(p)
}

fn print_phase(name: &str, p: &mut Phase) {
    kv(
        &format!("lease_p50_ms_{name}"),
        format!("{:.3}", p.lease.percentile(0.50)),
    );
    kv(
        &format!("lease_p99_ms_{name}"),
        format!("{:.3}", p.lease.percentile(0.99)),
    );
    kv(
        &format!("report_p50_ms_{name}"),
        format!("{:.3}", p.report.percentile(0.50)),
    );
    kv(
        &format!("submit_one_p50_ms_{name}"),
        format!("{:.3}", p.submit_one.percentile(0.50)),
    );
}

/// Run it and print its figures.
pub async fn run(c: &mut Cluster, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let client = c.client.clone();
    let queue = format!("bench-deep-{:04x}", rand::random::<u16>());
    let joined = client
        .join(&WorkerJoin {
            name: format!("{queue}-prober"),
            hostname: "bench".into(),
            queues: vec![queue.clone()],
            kinds: vec!["noop".into()],
            labels: Default::default(),
            capacity: 1,
            version: brigade_api::VERSION.into(),
        })
        .await?;
    let worker = joined.id.clone();
    // Keep the prober alive while the queue fills (it takes longer than a lease TTL).
    let heartbeats = {
        let client = client.clone();
        let worker = worker.clone();
        let every = Duration::from_millis(joined.heartbeat_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let hb = Heartbeat {
                    running: Vec::new(),
                    load: Default::default(),
                };
                let _ = client.heartbeat(&worker, &hb).await;
            }
        })
    };
    let result = measure(c, args, &client, &worker, &queue).await;
    heartbeats.abort();
    let _ = client.leave(&worker).await;
    result
}

async fn measure(
    c: &Cluster,
    args: &BenchArgs,
    client: &Client,
    worker: &str,
    queue: &str,
) -> anyhow::Result<ExitCode> {
    let runs = args.latency_runs.max(1);
    let mut empty = sample(client, worker, queue, runs).await?;

    // Fill the queue, one request of `batch` tasks at a time.
    let total = args.deep_tasks;
    let mut batches: Vec<(u32, Duration)> = Vec::new();
    let mut jobs = Vec::new();
    let mut left = total;
    let fill_start = Instant::now();
    while left > 0 {
        let n = left.min(args.batch());
        let job = job_in("deep", Some(queue), "noop", serde_json::Value::Null, n);
        let t = Instant::now();
        jobs.push(client.submit(&job, None).await?.id);
        batches.push((n, t.elapsed()));
        left -= n;
    }
    let fill = fill_start.elapsed();
    let rss_deep = procfs::rss_kib(c.server_pid()).unwrap_or(0);

    let mut deep = sample(client, worker, queue, runs).await?;

    kv("deep_tasks", total);
    kv("deep_lease_samples", runs);
    kv("deep_submit_s", format!("{:.2}", fill.as_secs_f64()));
    kv(
        "submit_tasks_per_s_overall",
        format!("{:.0}", f64::from(total) / fill.as_secs_f64()),
    );
    kv(
        "submit_tasks_per_s_first_100k",
        format!("{:.0}", window_rate(batches.iter())),
    );
    kv(
        "submit_tasks_per_s_last_100k",
        format!("{:.0}", window_rate(batches.iter().rev())),
    );
    print_phase("empty", &mut empty);
    print_phase("deep", &mut deep);
    let (e, d) = (empty.lease.percentile(0.5), deep.lease.percentile(0.5));
    kv(
        "lease_p50_ratio_deep_empty",
        format!("{:.2}", if e > 0.0 { d / e } else { 0.0 }),
    );
    kv(
        "deep_server_rss_mib",
        format!("{:.1}", procfs::mib(rss_deep)),
    );

    if c.db.is_persistent() {
        // Leave nothing queued in a database that outlives the run.
        for id in &jobs {
            client.cancel_job(id).await?;
            let _ = client.delete_job(id).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Tasks per second over the first requests adding up to [`RATE_WINDOW`] tasks
/// (or all of them) in the order given.
fn window_rate<'a>(batches: impl Iterator<Item = &'a (u32, Duration)>) -> f64 {
    let (mut tasks, mut secs) = (0u64, 0.0);
    for (n, d) in batches {
        tasks += u64::from(*n);
        secs += d.as_secs_f64();
        if tasks >= RATE_WINDOW {
            break;
        }
    }
    if secs > 0.0 { tasks as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rate_stops_at_the_window() {
        let b = [
            (50_000, Duration::from_secs(1)),
            (50_000, Duration::from_secs(1)),
            (50_000, Duration::from_secs(10)),
        ];
        assert_eq!(window_rate(b.iter()), 50_000.0);
        assert_eq!(window_rate(b.iter().rev()), 100_000.0 / 11.0);
        assert_eq!(window_rate([].iter()), 0.0);
    }
}
