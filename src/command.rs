//! The whole command line: every subcommand and its arguments, and the
//! logging each one starts with.
//!
//! It sits above the modules that implement the commands (`cli`, `up`,
//! `bench`, `demo`) and only `main` uses it, so those modules depend on one
//! another in one direction only.

use clap::{CommandFactory, Parser, Subcommand};
use tracing_subscriber::filter::Directive;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::bench::BenchArgs;
use crate::cli::{Global, TokenCommand, run, server, submit, worker};
use crate::demo::Demo;
use crate::up::UpArgs;

/// brigade runs work in parallel across many machines over plain HTTP/JSON.
#[derive(Debug, Parser)]
#[command(name = "brigade", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator.
    Server(server::ServerArgs),
    /// Run a worker that leases and runs tasks.
    Worker(worker::WorkerArgs),
    /// A server and local workers in one command, for a first try.
    Up(UpArgs),
    /// Submit a job.
    Submit(submit::SubmitArgs),
    /// Judge a program on the cluster: `brigade run sum.py --tests tests/` prints a verdict per
    /// test. The language comes from the extension; the exit status is 0 only when accepted.
    Run(run::RunArgs),
    /// Show a job's state and progress.
    Status {
        /// Job id.
        job: String,
    },
    /// List a job's tasks, or find tasks across jobs: `brigade tasks --state failed --kind K`.
    Tasks {
        /// Job id (without it: tasks of every job you may see, newest first).
        job: Option<String>,
        #[command(flatten)]
        filter: crate::cli::status::TaskFilterArgs,
        /// Most tasks listed when searching across jobs.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print the job's graph: each task under the tasks it waits for (`after`)
        /// and the task that spawned it; a task met again is marked `(*)`.
        #[arg(long, requires = "job", conflicts_with = "state")]
        tree: bool,
    },
    /// Retry every failed or cancelled task matching the filters (admin):
    /// `brigade retry --kind K`.
    Retry {
        #[command(flatten)]
        filter: crate::cli::status::TaskFilterArgs,
        /// Only tasks of this job.
        #[arg(long)]
        job: Option<String>,
        /// Retry every failed or cancelled task (needed when no filter is given).
        #[arg(long)]
        all: bool,
    },
    /// Follow a job with a live progress bar until it finishes.
    Watch {
        /// Job id.
        job: String,
    },
    /// Print a task's log lines; with --follow, keep printing new ones until it finishes.
    Logs {
        /// Task id.
        task: String,
        /// Stream new lines as they are written, until the task is finished.
        #[arg(short, long)]
        follow: bool,
    },
    /// List the workers with their load.
    Workers,
    /// List the queues with their depth.
    Queues,
    /// Cancel a job (running tasks are told to stop).
    Cancel {
        /// Job id.
        job: String,
    },
    /// Concurrency and rate limits per key: list, set, rm.
    #[command(subcommand_required = false)]
    Limits {
        #[command(subcommand)]
        cmd: Option<crate::cli::limits::LimitsCommand>,
    },
    /// Jobs on a clock: add, list, pause, resume, trigger, rm.
    #[command(subcommand)]
    Schedule(crate::cli::schedule::ScheduleCommand),
    /// Demonstrations.
    #[command(subcommand)]
    Demo(Demo),
    /// Measure throughput and latency on this machine.
    Bench(BenchArgs),
    /// Apply the database migrations (servers also check the schema version at start), or
    /// copy a whole database into an empty one: `--from sqlite://a.db --to postgres://…`.
    Migrate(crate::cli::ops::MigrateArgs),
    /// Copy a SQLite database to a new file while servers keep using it (a consistent
    /// snapshot). Restore by starting a server on the copy. For PostgreSQL use `pg_dump`.
    Backup(crate::cli::ops::BackupArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Print completions for `shell`.
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "brigade", &mut std::io::stdout());
}

/// Logging: info for long-running processes, warnings for client commands; `RUST_LOG` wins.
///
/// With `--otlp-endpoint` (server and worker), jobs' traces are exported
/// too: the exporter returned is to be shut down at exit, while `runtime`
/// still runs. The spans of traces never reach the log.
pub fn init_tracing(
    command: &Command,
    verbose: u8,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Option<crate::otlp::Otlp>> {
    let long_running = matches!(
        command,
        Command::Server(_) | Command::Worker(_) | Command::Up(_)
    );
    let default = match (long_running, verbose) {
        (_, 2..) => "debug",
        (true, _) | (false, 1) => "info,sqlx=warn,tower_http=warn",
        (false, 0) => "warn",
    };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if let Ok(off) = format!("{}=off", crate::otlp::TARGET).parse::<Directive>() {
        filter = filter.add_directive(off);
    }
    let otlp = match command {
        Command::Server(a) => a.otlp_endpoint.as_deref().map(|e| (e, "brigade-server")),
        Command::Worker(a) => a.otlp_endpoint.as_deref().map(|e| (e, "brigade-worker")),
        // Its server runs in this process; its workers are given the flag.
        Command::Up(a) => a.otlp_endpoint.as_deref().map(|e| (e, "brigade-server")),
        _ => None,
    };
    let Some((endpoint, service)) = otlp else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        return Ok(None);
    };
    let (layer, exporter) = crate::otlp::layer(endpoint, service, runtime.clone())?;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(layer)
        .try_init();
    Ok(Some(exporter))
}
