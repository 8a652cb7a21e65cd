//! Parallel speed-up: `sleep` tasks spread over every slot; the wall time from
//! submit to the job finished, against the ideal (all slots busy from the start).

use std::process::ExitCode;
use std::time::Instant;

use super::cluster::Cluster;
use super::{BenchArgs, job_of, kv, wait_succeeded};

/// Run it and print its figures.
pub async fn run(
    c: &mut Cluster,
    args: &BenchArgs,
    workers: u32,
    capacity: u32,
) -> anyhow::Result<ExitCode> {
    let n = args.speedup_tasks.max(1);
    let ms = args.sleep_ms;
    let slots = u64::from(workers * capacity).max(1);
    let ideal_s = u64::from(n).div_ceil(slots) as f64 * ms as f64 / 1000.0;
    let job = job_of("speedup", "sleep", serde_json::json!({ "ms": ms }), n);
    let start = Instant::now();
    let id = c.client.submit(&job, None).await?.id;
    wait_succeeded(&c.client, &id).await?;
    let wall = start.elapsed().as_secs_f64();
    kv("speedup_workers", workers);
    kv("speedup_capacity", capacity);
    kv(&format!("speedup_{n}x{ms}ms_wall_s"), format!("{wall:.3}"));
    kv("speedup_ideal_s", format!("{ideal_s:.3}"));
    kv(
        "speedup_x",
        format!("{:.2}", f64::from(n) * ms as f64 / 1000.0 / wall),
    );
    kv("speedup_wall_over_ideal", format!("{:.3}", wall / ideal_s));
    Ok(ExitCode::SUCCESS)
}
