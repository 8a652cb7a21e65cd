//! `brigade bench`: measure a real cluster on this machine.
//!
//! Every scenario starts a real server process (and, where it says so, real
//! worker processes) on a fresh database, measures one thing, and prints
//! `key=value` lines; `scripts/bench-vs-celery` puts them beside Celery's.
//! BENCHMARKS.md says what each figure means and how to run them.

mod cluster;
mod deep_queue;
mod flow;
mod idle_workers;
mod latency;
mod procfs;
mod soak;
mod speedup;
mod stats;
mod throughput;
mod workflow;

use std::fmt::Display;
use std::process::ExitCode;

use brigade_api::{JobSubmit, TaskSpec};
use clap::Args;

use cluster::{Cluster, Database};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// throughput, latency, speedup, idle-workers and deep-queue, in that order.
    #[value(alias = "cluster")]
    All,
    /// N `noop` tasks through the workers: tasks/s, server memory, CPU per task.
    Throughput,
    /// Idle round trip of one `noop` task, submit to result: p50/p99.
    Latency,
    /// 16 × `sleep` 500 ms on 2 workers × 4 slots: wall time against the ideal 1 s.
    Speedup,
    /// Many idle workers long-polling one server: its memory and CPU.
    IdleWorkers,
    /// Lease latency with an empty queue and with a million tasks queued; submit rate as it fills.
    DeepQueue,
    /// Steady `echo` load with worker churn for --minutes: memory, fds, latency, lost tasks.
    Soak,
    /// The `code` sandbox: per-run overhead against running the program directly.
    Code,
    /// Graphs: a chord against a flat job of as many tasks, the reduce's start
    /// after the last map, and a chain's links/s. Not in `all`.
    Workflow,
    /// Limits and fairness: unlimited work beside a limited backlog, a rate
    /// limit's accuracy, a late tenant's wait. Not in `all`.
    Flow,
}

/// Options of `brigade bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure (`all` when not given).
    #[arg(value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// Database (default: a fresh SQLite file in a temp dir for each scenario).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Tasks in the throughput run.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: u32,
    /// Worker processes (default 2).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Slots per worker (default 64; speedup 4; soak 8). In `all`, the speed-up
    /// keeps 2 workers × 4 slots whatever --workers and --capacity say.
    #[arg(long)]
    pub capacity: Option<u32>,
    /// Round trips in the latency run; lease samples of each deep-queue phase.
    #[arg(long, default_value_t = 500)]
    pub latency_runs: u32,
    /// Tasks per submit request.
    #[arg(long, default_value_t = 10_000)]
    pub batch: u32,
    /// Tasks of the speedup run.
    #[arg(long, default_value_t = 16)]
    pub speedup_tasks: u32,
    /// Milliseconds each speedup task sleeps.
    #[arg(long, default_value_t = 500)]
    pub sleep_ms: u64,
    /// Idle workers simulated by idle-workers (each long-polls, and heartbeats when it must, like `brigade worker`).
    #[arg(long, default_value_t = 1000)]
    pub idle_workers: u32,
    /// Seconds over which idle-workers measures the server, once the workers
    /// settled; the default spans a whole long-poll cycle (30 s), so every
    /// worker's long-poll is renewed within it.
    #[arg(long, default_value_t = 35)]
    pub idle_measure_s: u64,
    /// Tasks queued by deep-queue.
    #[arg(long, default_value_t = 1_000_000)]
    pub deep_tasks: u32,
    /// Length of the soak run.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// `echo` tasks per second submitted during the soak.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Seconds between worker kills (SIGKILL, then a new worker) during the soak; 0 = none.
    #[arg(long, default_value_t = 30)]
    pub churn_s: u64,
    /// The soak server's `--retention` (`60s`, say): the database file must
    /// then level off (verdict `db_growing` if it grows over the second half).
    #[arg(long)]
    pub soak_retention: Option<String>,
    /// Seconds between the soak's progress lines.
    #[arg(long, default_value_t = 60)]
    pub report_every_s: u64,
    /// Tasks in each job of the workflow run: the flat job, and the chord's
    /// maps and its reduce (at most 10 000, one submit).
    #[arg(long, default_value_t = 10_000)]
    pub workflow_tasks: u32,
    /// Flat jobs and chords of the workflow run (each figure is their median).
    #[arg(long, default_value_t = 3)]
    pub workflow_runs: u32,
    /// Links of the workflow run's chain.
    #[arg(long, default_value_t = 1000)]
    pub chain_links: u32,
    /// Tasks of the flow run: 90 % unlimited beside 10 % limited, and the
    /// backlog of the first tenant of the fairness run.
    #[arg(long, default_value_t = 100_000)]
    pub flow_tasks: u32,
    /// Seconds over which the flow run measures its rate limit.
    #[arg(long, default_value_t = 30)]
    pub flow_rate_s: u32,
}

impl BenchArgs {
    fn workers(&self) -> u32 {
        self.workers.unwrap_or(2).max(1)
    }

    fn capacity_or(&self, default: u32) -> u32 {
        self.capacity.unwrap_or(default).max(1)
    }

    fn batch(&self) -> u32 {
        self.batch.clamp(1, 10_000)
    }
}

/// Print one `key=value` line.
pub(crate) fn kv(key: &str, value: impl Display) {
    println!("{key}={value}");
}

/// Wait until job `id` is finished; an error unless every task of it succeeded.
pub(crate) async fn wait_succeeded(
    client: &brigade_client::Client,
    id: &str,
) -> anyhow::Result<brigade_api::JobView> {
    loop {
        let j = client
            .wait_job(id, std::time::Duration::from_secs(60))
            .await?;
        if j.state.is_finished() {
            anyhow::ensure!(
                j.progress.succeeded == j.progress.total,
                "job {id} ended {}",
                j.state.as_str()
            );
            return Ok(j);
        }
    }
}

/// A job of `n` tasks of `kind` with `input`.
pub(crate) fn job_of(name: &str, kind: &str, input: serde_json::Value, n: u32) -> JobSubmit {
    job_in(name, None, kind, input, n)
}

/// A job of `n` tasks of `kind` with `input`, in `queue` (default queue when `None`).
pub(crate) fn job_in(
    name: &str,
    queue: Option<&str>,
    kind: &str,
    input: serde_json::Value,
    n: u32,
) -> JobSubmit {
    let job = JobSubmit::new(vec![TaskSpec::new(kind, input); n as usize]).named(name);
    match queue {
        Some(q) => job.in_queue(q),
        None => job,
    }
}

/// Start a server on a fresh database (or the one given) with `extra` server
/// arguments, and `workers` × `capacity` worker processes.
async fn cluster(
    args: &BenchArgs,
    extra: &[String],
    workers: u32,
    capacity: u32,
) -> anyhow::Result<Cluster> {
    let db = Database::new(args.database_url.as_deref())?;
    let mut c = Cluster::start(db, extra).await?;
    if workers > 0 {
        c.add_workers(workers, capacity).await?;
    }
    Ok(c)
}

/// Run `scenario` on its own cluster, stopping the cluster whatever happens.
async fn on_cluster<F>(
    args: &BenchArgs,
    scenario: Scenario,
    extra: &[String],
    workers: u32,
    capacity: u32,
    body: F,
) -> anyhow::Result<ExitCode>
where
    F: AsyncFnOnce(&mut Cluster) -> anyhow::Result<ExitCode>,
{
    let mut c = cluster(args, extra, workers, capacity).await?;
    let result = body(&mut c).await;
    c.stop().await;
    result.map_err(|e| e.context(format!("scenario {scenario:?}")))
}

/// Run one scenario (not `all`); `alone`: it was asked for by name, so
/// `--workers`/`--capacity` apply to it even where it has defaults of its own.
async fn run_one(args: &BenchArgs, scenario: Scenario, alone: bool) -> anyhow::Result<ExitCode> {
    let workers = args.workers();
    match scenario {
        Scenario::Throughput => {
            let cap = args.capacity_or(64);
            on_cluster(args, scenario, &[], workers, cap, async |c| {
                throughput::run(c, args, workers, cap).await
            })
            .await
        }
        Scenario::Latency => {
            let cap = args.capacity_or(64);
            on_cluster(args, scenario, &[], workers, cap, async |c| {
                latency::run(c, args).await
            })
            .await
        }
        Scenario::Speedup => {
            // In `all`, the flags are the throughput run's: the speed-up keeps the
            // 2 × 4 slots its target is set for.
            let (workers, cap) = if alone {
                (workers, args.capacity_or(4))
            } else {
                (2, 4)
            };
            on_cluster(args, scenario, &[], workers, cap, async |c| {
                speedup::run(c, args, workers, cap).await
            })
            .await
        }
        Scenario::IdleWorkers => {
            let extra = idle_workers::server_args(args.idle_workers);
            on_cluster(args, scenario, &extra, 0, 0, async |c| {
                idle_workers::run(c, args).await
            })
            .await
        }
        Scenario::DeepQueue => {
            on_cluster(args, scenario, &[], 0, 0, async |c| {
                deep_queue::run(c, args).await
            })
            .await
        }
        Scenario::Soak => {
            let cap = args.capacity_or(8);
            let extra = soak::server_args(args);
            on_cluster(args, scenario, &extra, workers, cap, async |c| {
                soak::run(c, args, cap).await
            })
            .await
        }
        Scenario::Workflow => {
            let cap = args.capacity_or(64);
            on_cluster(args, scenario, &[], workers, cap, async |c| {
                workflow::run(c, args, workers, cap).await
            })
            .await
        }
        Scenario::Flow => {
            let cap = args.capacity_or(64);
            on_cluster(args, scenario, &[], workers, cap, async |c| {
                flow::run(c, args, workers, cap).await
            })
            .await
        }
        Scenario::Code => {
            let exe = std::env::current_exe()?;
            let runs = args.latency_runs.clamp(5, 1000);
            let lines = brigade_worker::executors::code::bench_code(&exe, runs)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{}", lines.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Scenario::All => anyhow::bail!("`all` is not one scenario"),
    }
}

/// Run the benchmark and print `key=value` lines.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    raise_fd_limit();
    if args.scenario != Scenario::Code {
        kv(
            "database",
            cluster::engine(args.database_url.as_deref().unwrap_or("sqlite")),
        );
        kv(
            "nproc",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
    }
    if args.scenario != Scenario::All {
        return run_one(&args, args.scenario, true).await;
    }
    let mut code = ExitCode::SUCCESS;
    for s in [
        Scenario::Throughput,
        Scenario::Latency,
        Scenario::Speedup,
        Scenario::IdleWorkers,
        Scenario::DeepQueue,
    ] {
        if run_one(&args, s, false).await? != ExitCode::SUCCESS {
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}

/// Let this process (and the server it starts, which inherits the limit) hold
/// a connection per simulated worker: raise the soft open-files limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
