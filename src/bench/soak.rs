//! Soak: steady `echo` load for a long while with worker churn (a worker is
//! SIGKILLed now and then and a new one started), to find what grows — server
//! memory, open files, latency — and to prove no task is lost.
//!
//! Prints a progress line every `--report-every-s` seconds and, at the end, the
//! first and last memory, a verdict, and the count of tasks that did not succeed.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brigade_api::JobSubmit;
use brigade_client::Client;

use super::cluster::Cluster;
use super::procfs;
use super::stats::Samples;
use super::{BenchArgs, job_of, kv};

/// How often a load job is submitted.
const SUBMIT_EVERY: Duration = Duration::from_millis(100);
/// How often a one-task probe measures the round trip under load.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Attempts per task: a task on a killed worker is requeued (its attempt counts as lost).
const MAX_ATTEMPTS: u32 = 10;
/// Longest the end waits for the last jobs (a killed worker's tasks wait out the lease TTL).
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);
/// Memory growth over the second half of the run (from the report at half
/// time to the last) that counts as growing: both this fraction and
/// [`GROWTH_MIB`]. The first half is left out: SQLite's page caches fill
/// as the database grows, up to their fixed size. Tight enough to catch a
/// steady climb: metrics samples that were never folded (fixed) grew the
/// server 0.65 MiB a minute, +9.9 MiB (+27 %) over a 30-minute run's second
/// half, which the first thresholds (+16 MiB and +25 %) let pass.
const GROWTH_FRACTION: f64 = 0.10;
/// See [`GROWTH_FRACTION`].
const GROWTH_MIB: f64 = 4.0;
/// Growth of the database file (with its WAL) over the second half that
/// counts as growing, with `--soak-retention`: both this fraction and
/// [`DB_GROWTH_MIB`]. With retention the file must level off once the
/// first jobs expire.
const DB_GROWTH_FRACTION: f64 = 0.10;
/// See [`DB_GROWTH_FRACTION`].
const DB_GROWTH_MIB: f64 = 1.0;

/// The size of an SQLite database (the file, its WAL and shared memory) in
/// MiB; `None` for other engines.
fn db_mib(url: &str) -> Option<f64> {
    let path = url.strip_prefix("sqlite://")?;
    let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bytes = size(path) + size(&format!("{path}-wal")) + size(&format!("{path}-shm"));
    Some(bytes as f64 / (1024.0 * 1024.0))
}

/// The server arguments of a soak: `--retention` when one is asked for.
pub fn server_args(args: &BenchArgs) -> Vec<String> {
    match &args.soak_retention {
        Some(r) => vec![
            "--retention".into(),
            r.clone(),
            "--prune-every-ms".into(),
            "2000".into(),
        ],
        None => Vec::new(),
    }
}

/// Counts shared by the load and its waiters.
#[derive(Default)]
struct Tally {
    submitted: AtomicU64,
    succeeded: AtomicU64,
    not_succeeded: AtomicU64,
    jobs_submitted: AtomicU64,
    jobs_finished: AtomicU64,
    submit_errors: AtomicU64,
}

/// Wait for a job to finish and count its tasks.
async fn settle(client: Client, id: String, tally: Arc<Tally>) {
    loop {
        match client.wait_job(&id, Duration::from_secs(60)).await {
            Ok(j) if j.state.is_finished() => {
                tally
                    .succeeded
                    .fetch_add(j.progress.succeeded, Ordering::Relaxed);
                tally
                    .not_succeeded
                    .fetch_add(j.progress.total - j.progress.succeeded, Ordering::Relaxed);
                tally.jobs_finished.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Submit a job of `per_submit` echo tasks every [`SUBMIT_EVERY`] until stopped.
async fn load(
    client: Client,
    per_submit: u32,
    tally: Arc<Tally>,
    waiters: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
) {
    let mut job: JobSubmit = job_of(
        "soak",
        "echo",
        serde_json::json!({"payload": "x".repeat(64)}),
        per_submit,
    );
    for t in &mut job.tasks {
        t.max_attempts = Some(MAX_ATTEMPTS);
    }
    let mut tick = tokio::time::interval(SUBMIT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match client.submit(&job, None).await {
            Ok(view) => {
                tally
                    .submitted
                    .fetch_add(u64::from(per_submit), Ordering::Relaxed);
                tally.jobs_submitted.fetch_add(1, Ordering::Relaxed);
                let w = tokio::spawn(settle(client.clone(), view.id, tally.clone()));
                if let Ok(mut v) = waiters.lock() {
                    v.retain(|h| !h.is_finished());
                    v.push(w);
                }
            }
            Err(_) => {
                tally.submit_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Time one-task round trips under the load, into `samples`.
async fn probe(client: Client, samples: Arc<Mutex<Samples>>) {
    let mut job = job_of("soak-probe", "echo", serde_json::Value::Null, 1);
    job.tasks[0].max_attempts = Some(MAX_ATTEMPTS);
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let t = Instant::now();
        let Ok(view) = client.submit(&job, None).await else {
            continue;
        };
        loop {
            match client.wait_job(&view.id, Duration::from_secs(60)).await {
                Ok(j) if j.state.is_finished() => break,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        if let Ok(mut s) = samples.lock() {
            s.push(t.elapsed());
        }
    }
}

/// Run it and print its figures.
pub async fn run(c: &mut Cluster, args: &BenchArgs, capacity: u32) -> anyhow::Result<ExitCode> {
    let total = Duration::from_secs_f64((args.minutes.max(0.0) * 60.0).max(1.0));
    let every = Duration::from_secs(args.report_every_s.max(1)).min(total);
    let churn = (args.churn_s > 0).then(|| Duration::from_secs(args.churn_s));
    let per_submit = (args.rate as f64 * SUBMIT_EVERY.as_secs_f64())
        .round()
        .max(1.0) as u32;
    let workers = c.worker_count();
    kv("soak_minutes", args.minutes);
    kv(
        "soak_rate_tasks_per_s",
        per_submit as f64 / SUBMIT_EVERY.as_secs_f64(),
    );
    kv("soak_workers", workers);
    kv("soak_capacity", capacity);
    kv("soak_churn_s", args.churn_s);
    kv(
        "soak_retention",
        args.soak_retention.as_deref().unwrap_or("default"),
    );

    let tally = Arc::new(Tally::default());
    let waiters = Arc::new(Mutex::new(Vec::new()));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let loader = tokio::spawn(load(
        c.client.clone(),
        per_submit,
        tally.clone(),
        waiters.clone(),
    ));
    let prober = tokio::spawn(probe(c.client.clone(), samples.clone()));

    let server = c.server_pid();
    let start = Instant::now();
    let mut next_report = start + every;
    let mut next_kill = churn.map(|d| start + d);
    let mut reports: Vec<(f64, usize)> = Vec::new();
    let mut db_sizes: Vec<f64> = Vec::new();
    let mut killed = 0u32;
    while start.elapsed() < total {
        let now = Instant::now();
        let wake = next_kill.map_or(next_report, |k| k.min(next_report));
        if wake > now {
            tokio::time::sleep(wake - now).await;
        }
        if next_kill.is_some_and(|k| Instant::now() >= k) {
            if c.worker_count() > 0 {
                let i = rand::random_range(0..c.worker_count());
                c.kill_worker(i).await?;
                killed += 1;
                c.add_workers(1, capacity).await?;
            }
            next_kill = churn.map(|d| Instant::now() + d);
        }
        if Instant::now() >= next_report {
            let rss = procfs::mib(procfs::rss_kib(server).unwrap_or(0));
            let fds = procfs::open_fds(server).unwrap_or(0);
            let (p50, p99, n) = match samples.lock() {
                Ok(mut s) => {
                    let r = (s.percentile(0.5), s.percentile(0.99), s.len());
                    *s = Samples::default();
                    r
                }
                Err(_) => (0.0, 0.0, 0),
            };
            let db = db_mib(&c.db.url);
            println!(
                "minute={:.1} server_rss_mib={rss:.1} server_fds={fds} tasks_done={} tasks_submitted={} \
                 latency_p50_ms={p50:.3} latency_p99_ms={p99:.3} latency_samples={n} workers_killed={killed}{}",
                start.elapsed().as_secs_f64() / 60.0,
                tally.succeeded.load(Ordering::Relaxed),
                tally.submitted.load(Ordering::Relaxed),
                db.map(|m| format!(" db_mib={m:.2}")).unwrap_or_default(),
            );
            db_sizes.extend(db);
            reports.push((rss, fds));
            next_report += every;
        }
    }
    loader.abort();
    prober.abort();

    // Every job submitted must finish, every task succeed.
    let pending: Vec<_> = match waiters.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => Vec::new(),
    };
    let drained = tokio::time::timeout(DRAIN_DEADLINE, futures::future::join_all(pending))
        .await
        .is_ok();
    let submitted = tally.submitted.load(Ordering::Relaxed);
    let succeeded = tally.succeeded.load(Ordering::Relaxed);
    let jobs = tally.jobs_submitted.load(Ordering::Relaxed);
    let jobs_finished = tally.jobs_finished.load(Ordering::Relaxed);
    let lost = submitted.saturating_sub(succeeded);
    let (first_rss, first_fds) = reports.first().copied().unwrap_or_default();
    let (last_rss, last_fds) = reports.last().copied().unwrap_or_default();
    let growth = last_rss - first_rss;
    let (half_rss, _) = reports
        .get(reports.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default();
    let late_growth = last_rss - half_rss;
    let growing = late_growth > GROWTH_MIB && late_growth > half_rss * GROWTH_FRACTION;
    let db_half = db_sizes
        .get(db_sizes.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default();
    let db_last = db_sizes.last().copied().unwrap_or_default();
    let db_growth = db_last - db_half;
    let db_growing = args.soak_retention.is_some()
        && db_growth > DB_GROWTH_MIB
        && db_growth > db_half * DB_GROWTH_FRACTION;

    kv("soak_tasks_submitted", submitted);
    kv("soak_tasks_succeeded", succeeded);
    kv(
        "soak_tasks_not_succeeded",
        tally.not_succeeded.load(Ordering::Relaxed),
    );
    kv("soak_tasks_lost", lost);
    kv("soak_jobs_submitted", jobs);
    kv("soak_jobs_unfinished", jobs - jobs_finished.min(jobs));
    kv(
        "soak_submit_errors",
        tally.submit_errors.load(Ordering::Relaxed),
    );
    kv("soak_workers_killed", killed);
    kv("soak_rss_first_mib", format!("{first_rss:.1}"));
    kv("soak_rss_last_mib", format!("{last_rss:.1}"));
    kv("soak_rss_growth_mib", format!("{growth:.1}"));
    kv("soak_rss_half_mib", format!("{half_rss:.1}"));
    kv(
        "soak_rss_growth_second_half_mib",
        format!("{late_growth:.1}"),
    );
    if !db_sizes.is_empty() {
        kv("soak_db_half_mib", format!("{db_half:.2}"));
        kv("soak_db_last_mib", format!("{db_last:.2}"));
        kv("soak_db_growth_second_half_mib", format!("{db_growth:.2}"));
    }
    kv("soak_fds_first", first_fds);
    kv("soak_fds_last", last_fds);
    let verdict = if lost > 0 || !drained {
        "lost_tasks"
    } else if growing {
        "rss_growing"
    } else if db_growing {
        "db_growing"
    } else {
        "stable"
    };
    kv("soak_verdict", verdict);
    Ok(if verdict == "stable" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
