//! Idle round trip: one `noop` task at a time on an idle cluster, from submit
//! until the job reads finished (a long-poll on the job, `?wait_ms=`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::stats::Samples;
use super::{BenchArgs, job_of, kv};

/// Run it and print its figures.
pub async fn run(c: &mut Cluster, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let one = job_of("latency", "noop", serde_json::Value::Null, 1);
    let mut samples = Samples::with_capacity(args.latency_runs as usize);
    for i in 0..=args.latency_runs {
        let t = Instant::now();
        let job = c.client.submit(&one, None).await?;
        let done = c.client.wait_job(&job.id, Duration::from_secs(30)).await?;
        anyhow::ensure!(
            done.state.is_finished(),
            "a latency task did not finish within 30 s"
        );
        // The first round warms connections up; it is not counted.
        if i > 0 {
            samples.push(t.elapsed());
        }
    }
    kv("latency_runs", samples.len());
    kv("latency_p50_ms", format!("{:.3}", samples.percentile(0.50)));
    kv("latency_p99_ms", format!("{:.3}", samples.percentile(0.99)));
    Ok(ExitCode::SUCCESS)
}
