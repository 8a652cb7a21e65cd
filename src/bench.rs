//! `brigade bench`: a real server process and real worker processes on this
//! machine, N `noop` tasks through them, and an idle round-trip latency run.

use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use brigade_api::{JobSubmit, TaskSpec, WorkerState};
use brigade_client::Client;
use clap::Args;
use tokio::process::{Child, Command};

use crate::up::{spawn_workers, stop_children};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchTarget {
    /// The cluster: submit, throughput and round-trip latency of `noop` tasks.
    Cluster,
    /// The `code` sandbox: per-run overhead against running the program directly.
    Code,
}

/// Options of `brigade bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value_t = BenchTarget::Cluster)]
    pub target: BenchTarget,
    /// Tasks in the throughput run.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: u32,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 64)]
    pub capacity: u32,
    /// Database (default: a fresh SQLite file in a temp dir).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Round trips in the latency run.
    #[arg(long, default_value_t = 500)]
    pub latency_runs: u32,
    /// Tasks per submit request.
    #[arg(long, default_value_t = 10_000)]
    pub batch: u32,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn wait_ready(client: &Client, workers: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ws) = client.workers().await
            && ws.iter().filter(|w| w.state == WorkerState::Active).count() >= workers
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server and {workers} workers did not come up within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run the benchmark and print `key=value` lines.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.target == BenchTarget::Code {
        let exe = std::env::current_exe()?;
        let runs = args.latency_runs.clamp(5, 1000);
        let lines = brigade_worker::executors::code::bench_code(&exe, runs)
            .await
            .map_err(anyhow::Error::msg)?;
        println!("{}", lines.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let dir = tempfile::tempdir().context("temp dir")?;
    let db = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let exe = std::env::current_exe()?;
    let server: Child = Command::new(&exe)
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &db,
        ])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("starting the server")?;
    let mut children = vec![server];
    let result = measure(&args, &url, &db, &mut children).await;
    // Workers first, so they can say goodbye to a server that is still there.
    let mut server = children.remove(0);
    stop_children(&mut children).await;
    stop_children(std::slice::from_mut(&mut server)).await;
    result
}

async fn measure(
    args: &BenchArgs,
    url: &str,
    db: &str,
    children: &mut Vec<Child>,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(url, None)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.ready().await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut workers = spawn_workers(url, args.workers, args.capacity, "bench", &[], true)?;
    children.append(&mut workers);
    wait_ready(&client, args.workers as usize).await?;

    println!(
        "database={}",
        if db.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        }
    );
    println!("tasks={}", args.tasks);
    println!("workers={}", args.workers);
    println!("capacity={}", args.capacity);

    // Throughput: submit everything (in requests of `batch` tasks), then wait for all.
    let start = Instant::now();
    let mut jobs = Vec::new();
    let mut left = args.tasks;
    while left > 0 {
        let n = left.min(args.batch.clamp(1, 10_000));
        let job = JobSubmit {
            name: Some("bench".into()),
            queue: None,
            labels: Default::default(),
            tasks: vec![TaskSpec::new("noop", serde_json::Value::Null); n as usize],
        };
        jobs.push(client.submit(&job, None).await?.id);
        left -= n;
    }
    let submitted = start.elapsed();
    for id in &jobs {
        loop {
            let j = client.wait_job(id, Duration::from_secs(60)).await?;
            if j.state.is_finished() {
                anyhow::ensure!(
                    j.progress.succeeded == j.progress.total,
                    "job {id} ended {}",
                    j.state.as_str()
                );
                break;
            }
        }
    }
    let all_done = start.elapsed();
    println!(
        "submit_tasks_per_s={:.0}",
        f64::from(args.tasks) / submitted.as_secs_f64()
    );
    println!(
        "throughput_tasks_per_s={:.0}",
        f64::from(args.tasks) / all_done.as_secs_f64()
    );
    println!("throughput_wall_s={:.3}", all_done.as_secs_f64());

    // Latency: one task at a time on an idle cluster, submit to result.
    let one = JobSubmit {
        name: Some("latency".into()),
        queue: None,
        labels: Default::default(),
        tasks: vec![TaskSpec::new("noop", serde_json::Value::Null)],
    };
    let mut samples = Vec::with_capacity(args.latency_runs as usize);
    for i in 0..=args.latency_runs {
        let t = Instant::now();
        let job = client.submit(&one, None).await?;
        let done = client.wait_job(&job.id, Duration::from_secs(30)).await?;
        anyhow::ensure!(
            done.state.is_finished(),
            "a latency task did not finish within 30 s"
        );
        // The first round warms connections up; it is not counted.
        if i > 0 {
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    println!("latency_runs={}", samples.len());
    println!("latency_p50_ms={:.3}", percentile(&samples, 0.50));
    println!("latency_p99_ms={:.3}", percentile(&samples, 0.99));
    Ok(ExitCode::SUCCESS)
}
