//! Idle workers: N workers joined to one server, each holding a lease
//! long-poll and heartbeating at the interval the server gives, like
//! `brigade worker` with nothing to do. N worker processes would not fit on a
//! small machine, so they are simulated here: N HTTP loops in this process,
//! on one connection pool that keeps a connection per worker alive.
//! Once they settle, the server's CPU time and memory are read over a window.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use brigade_api::{Heartbeat, LeaseRequest, Load, WorkerJoin, WorkerJoined};
use futures::StreamExt;

use super::cluster::Cluster;
use super::procfs;
use super::{BenchArgs, kv};

/// The server's default `--max-long-polls`; more concurrent long-polls are answered 503.
pub const DEFAULT_MAX_LONG_POLLS: u32 = 10_000;
/// Slots each simulated worker offers.
const CAPACITY: u32 = 4;
/// The long-poll wait `brigade worker` asks for (its `lease_wait`).
const LEASE_WAIT: Duration = Duration::from_secs(30);
/// Joins (and leaves) in flight at once.
const CONCURRENT_JOINS: usize = 64;

/// Server arguments for `n` idle workers: raise the long-poll cap only when
/// `n` would pass the default.
pub fn server_args(n: u32) -> Vec<String> {
    if n + 100 > DEFAULT_MAX_LONG_POLLS {
        vec!["--max-long-polls".into(), (n + 1000).to_string()]
    } else {
        Vec::new()
    }
}

/// What the simulated workers saw.
#[derive(Default)]
struct Counters {
    /// Lease long-polls being held by the server now.
    polling: AtomicU64,
    leases: AtomicU64,
    lease_errors: AtomicU64,
    heartbeats: AtomicU64,
    heartbeat_errors: AtomicU64,
    /// Heartbeats not sent: the held long-poll stood for them.
    skipped: AtomicU64,
}

/// Raw HTTP for the simulated workers: `brigade-client` keeps 64 idle
/// connections per host, and a worker between two long-polls must not lose
/// its connection.
struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .timeout(timeout)
            .send()
            .await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(serde_json::from_slice(&bytes)?)
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let res = self
            .client
            .delete(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "{}", res.status());
        Ok(())
    }
}

/// One simulated worker: keep a lease long-poll open, and heartbeat every
/// `every` (starting at a random point of the period, as workers that joined
/// at different times would) — except, like `brigade worker`, while its
/// long-poll is held by a server that counts that as its heartbeat
/// (`keepalive`).
async fn idle_worker(
    http: Arc<Http>,
    id: String,
    every: Duration,
    keepalive: bool,
    counters: Arc<Counters>,
) {
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heartbeat = Heartbeat {
        running: Vec::new(),
        load: Load {
            cpu: 0.0,
            memory: 0.0,
            running: 0,
            capacity: CAPACITY,
        },
    };
    let hb_path = format!("/v1/workers/{id}/heartbeat");
    let heartbeats = {
        let http = http.clone();
        let counters = counters.clone();
        let polling = polling.clone();
        async move {
            let offset = every.mul_f64(rand::random::<f64>());
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if keepalive && polling.load(Ordering::Relaxed) {
                    counters.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let r: anyhow::Result<serde_json::Value> = http
                    .post(&hb_path, &heartbeat, Duration::from_secs(30))
                    .await;
                let c = if r.is_ok() {
                    &counters.heartbeats
                } else {
                    &counters.heartbeat_errors
                };
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let lease_path = format!("/v1/workers/{id}/lease");
    let body = LeaseRequest::new(CAPACITY, Some(LEASE_WAIT.as_millis() as u64));
    let leases = async move {
        loop {
            counters.polling.fetch_add(1, Ordering::Relaxed);
            polling.store(true, Ordering::Relaxed);
            let r: anyhow::Result<serde_json::Value> = http
                .post(&lease_path, &body, LEASE_WAIT + Duration::from_secs(15))
                .await;
            polling.store(false, Ordering::Relaxed);
            counters.polling.fetch_sub(1, Ordering::Relaxed);
            match r {
                Ok(_) => counters.leases.fetch_add(1, Ordering::Relaxed),
                Err(_) => {
                    counters.lease_errors.fetch_add(1, Ordering::Relaxed);
                    // The real worker backs off too.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    0
                }
            };
        }
    };
    tokio::join!(heartbeats, leases);
}

/// Run it and print its figures.
pub async fn run(c: &mut Cluster, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let n = args.idle_workers.max(1);
    let server = c.server_pid();
    let rss_empty = procfs::rss_kib(server).unwrap_or(0);
    let http = Arc::new(Http {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(n as usize + 64)
            .pool_idle_timeout(None)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?,
        base: c.url.clone(),
    });

    // Join them all.
    let joined: Vec<anyhow::Result<WorkerJoined>> = futures::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            async move {
                let join = WorkerJoin {
                    name: format!("idle-{i}"),
                    hostname: "bench".into(),
                    queues: vec!["default".into()],
                    kinds: vec!["noop".into()],
                    labels: Default::default(),
                    capacity: CAPACITY,
                    version: brigade_api::VERSION.into(),
                };
                http.post("/v1/workers", &join, Duration::from_secs(30))
                    .await
            }
        })
        .buffer_unordered(CONCURRENT_JOINS)
        .collect()
        .await;
    let joined: Vec<WorkerJoined> = joined
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .context("joining the idle workers")?;

    let counters = Arc::new(Counters::default());
    let mut loops = tokio::task::JoinSet::new();
    for w in &joined {
        loops.spawn(idle_worker(
            http.clone(),
            w.id.clone(),
            Duration::from_millis(w.heartbeat_ms.max(100)),
            w.long_poll_keepalive,
            counters.clone(),
        ));
    }
    let heartbeat_ms = joined.first().map_or(0, |w| w.heartbeat_ms);

    // Settle: every worker holds a long-poll, and a heartbeat period has passed.
    let settle_deadline = Instant::now() + Duration::from_secs(60);
    while counters.polling.load(Ordering::Relaxed) < u64::from(n)
        && Instant::now() < settle_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(heartbeat_ms.max(1000))).await;

    // Measure.
    let window = Duration::from_secs(args.idle_measure_s.max(1));
    let cpu0 = procfs::cpu_seconds(server).unwrap_or(0.0);
    let me0 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let hb0 = counters.heartbeats.load(Ordering::Relaxed);
    let skipped0 = counters.skipped.load(Ordering::Relaxed);
    let errors0 = counters.lease_errors.load(Ordering::Relaxed)
        + counters.heartbeat_errors.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = procfs::cpu_seconds(server).unwrap_or(0.0) - cpu0;
    let me = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0) - me0;
    let rss = procfs::rss_kib(server).unwrap_or(0);
    let fds = procfs::open_fds(server).unwrap_or(0);
    let polling = counters.polling.load(Ordering::Relaxed);
    let heartbeats = counters.heartbeats.load(Ordering::Relaxed) - hb0;
    let skipped = counters.skipped.load(Ordering::Relaxed) - skipped0;
    let errors = counters.lease_errors.load(Ordering::Relaxed)
        + counters.heartbeat_errors.load(Ordering::Relaxed)
        - errors0;

    // The server still counts every one of them alive (none went `lost`).
    let ours: std::collections::HashSet<&str> = joined.iter().map(|w| w.id.as_str()).collect();
    let active = c
        .client
        .workers()
        .await
        .context("listing the workers")?
        .iter()
        .filter(|w| ours.contains(w.id.as_str()) && w.state == brigade_api::WorkerState::Active)
        .count();

    // Stop the loops (their long-polls are dropped) and leave.
    loops.abort_all();
    while loops.join_next().await.is_some() {}
    let left = futures::stream::iter(&joined)
        .map(|w| {
            let http = http.clone();
            async move { http.delete(&format!("/v1/workers/{}", w.id)).await }
        })
        .buffer_unordered(CONCURRENT_JOINS)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;

    kv("idle_workers", n);
    kv("idle_long_polls_held", polling);
    kv("idle_heartbeat_ms", heartbeat_ms);
    kv("idle_lease_wait_ms", LEASE_WAIT.as_millis());
    kv("idle_measure_s", format!("{wall:.1}"));
    kv("server_rss_mib", format!("{:.1}", procfs::mib(rss)));
    kv(
        "idle_server_rss_empty_mib",
        format!("{:.1}", procfs::mib(rss_empty)),
    );
    kv(
        "idle_server_kib_per_worker",
        format!("{:.1}", rss.saturating_sub(rss_empty) as f64 / f64::from(n)),
    );
    kv("server_cpu_pct", format!("{:.2}", cpu / wall * 100.0));
    kv("idle_server_fds", fds);
    kv(
        "idle_heartbeats_per_s",
        format!("{:.0}", heartbeats as f64 / wall),
    );
    kv(
        "idle_heartbeats_skipped_per_s",
        format!("{:.0}", skipped as f64 / wall),
    );
    kv(
        "idle_long_poll_keepalive",
        joined.first().is_some_and(|w| w.long_poll_keepalive),
    );
    kv("idle_workers_active", active);
    kv("idle_errors", errors);
    kv("idle_client_cpu_pct", format!("{:.2}", me / wall * 100.0));
    kv("idle_max_long_polls_default", DEFAULT_MAX_LONG_POLLS);
    kv("idle_workers_left", left);
    Ok(ExitCode::SUCCESS)
}
