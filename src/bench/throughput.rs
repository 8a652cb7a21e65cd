//! Throughput: N `noop` tasks submitted in batches, then waited for; the
//! server's memory is sampled throughout and the CPU time of the server and
//! the workers is read before and after.
//!
//! `cpu_us_per_task` (server + workers CPU per task) depends little on how
//! busy the rest of the machine is, unlike tasks/s: use it to compare changes
//! to the hot path on a noisy machine.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::procfs::{self, RssSampler};
use super::{BenchArgs, job_of, kv, wait_succeeded};

/// How often the server's memory is sampled.
const RSS_EVERY: Duration = Duration::from_millis(50);

/// Run it and print its figures.
pub async fn run(
    c: &mut Cluster,
    args: &BenchArgs,
    workers: u32,
    capacity: u32,
) -> anyhow::Result<ExitCode> {
    kv("tasks", args.tasks);
    kv("workers", workers);
    kv("capacity", capacity);

    let server = c.server_pid();
    let worker_pids = c.worker_pids();
    let me = std::process::id();
    let server_cpu0 = procfs::cpu_seconds(server).unwrap_or(0.0);
    let workers_cpu0 = procfs::cpu_seconds_sum(&worker_pids);
    let client_cpu0 = procfs::cpu_seconds(me).unwrap_or(0.0);
    // A local PostgreSQL does much of the work: count its processes' CPU too.
    let local_pg = is_local_postgres(&c.db.url);
    let pg_cpu0 = procfs::cpu_seconds_of_command("postgres");
    let rss_before = procfs::rss_kib(server).unwrap_or(0);
    let sampler = RssSampler::start(server, RSS_EVERY);

    // Submit everything (in requests of `batch` tasks), then wait for all.
    let start = Instant::now();
    let mut jobs = Vec::new();
    let mut left = args.tasks;
    while left > 0 {
        let n = left.min(args.batch());
        let job = job_of("bench", "noop", serde_json::Value::Null, n);
        jobs.push(c.client.submit(&job, None).await?.id);
        left -= n;
    }
    let submitted = start.elapsed();
    for id in &jobs {
        wait_succeeded(&c.client, id).await?;
    }
    let all_done = start.elapsed();

    let rss_peak = sampler.stop();
    let server_cpu = procfs::cpu_seconds(server).unwrap_or(0.0) - server_cpu0;
    let workers_cpu = procfs::cpu_seconds_sum(&worker_pids) - workers_cpu0;
    let client_cpu = procfs::cpu_seconds(me).unwrap_or(0.0) - client_cpu0;
    let pg_cpu = procfs::cpu_seconds_of_command("postgres") - pg_cpu0;
    let tasks = f64::from(args.tasks.max(1));

    kv(
        "submit_tasks_per_s",
        format!("{:.0}", f64::from(args.tasks) / submitted.as_secs_f64()),
    );
    kv(
        "throughput_tasks_per_s",
        format!("{:.0}", f64::from(args.tasks) / all_done.as_secs_f64()),
    );
    kv(
        "throughput_wall_s",
        format!("{:.3}", all_done.as_secs_f64()),
    );
    kv(
        "server_rss_before_mib",
        format!("{:.1}", procfs::mib(rss_before)),
    );
    kv(
        "server_rss_peak_mib",
        format!("{:.1}", procfs::mib(rss_peak)),
    );
    if let Some(hwm) = procfs::hwm_kib(server) {
        kv("server_vmhwm_mib", format!("{:.1}", procfs::mib(hwm)));
    }
    kv("server_cpu_s", format!("{server_cpu:.2}"));
    kv("workers_cpu_s", format!("{workers_cpu:.2}"));
    kv("client_cpu_s", format!("{client_cpu:.2}"));
    kv(
        "cpu_us_per_task",
        format!("{:.1}", (server_cpu + workers_cpu) / tasks * 1e6),
    );
    kv(
        "server_cpu_us_per_task",
        format!("{:.1}", server_cpu / tasks * 1e6),
    );
    kv(
        "workers_cpu_us_per_task",
        format!("{:.1}", workers_cpu / tasks * 1e6),
    );
    if local_pg {
        kv("postgres_cpu_s", format!("{pg_cpu:.2}"));
        kv(
            "cpu_us_per_task_with_postgres",
            format!("{:.1}", (server_cpu + workers_cpu + pg_cpu) / tasks * 1e6),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `url` names a PostgreSQL on this machine (its processes' CPU can be read).
fn is_local_postgres(url: &str) -> bool {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    url.starts_with("postgres")
        && ["127.0.0.1", "localhost", "[::1]", "/"]
            .iter()
            .any(|h| host.starts_with(h))
}

#[cfg(test)]
mod tests {
    use super::is_local_postgres;

    #[test]
    fn local_postgres_urls() {
        assert!(is_local_postgres("postgres://postgres@127.0.0.1:5432/db"));
        assert!(is_local_postgres("postgresql://u:p@localhost/db"));
        assert!(!is_local_postgres("postgres://u@db.example:5432/db"));
        assert!(!is_local_postgres("sqlite:///tmp/x.db"));
    }
}
