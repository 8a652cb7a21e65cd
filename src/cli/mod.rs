//! Command-line interface: argument definitions and the client commands.

pub mod logs;
pub mod server;
pub mod status;
pub mod submit;
pub mod watch;
pub mod worker;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::bench::BenchArgs;
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

/// Options of every client command.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Server URL; several, comma-separated, are tried in turn.
    #[arg(
        long,
        global = true,
        env = "BRIGADE_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// API token.
    #[arg(long, global = true, env = "BRIGADE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// More logging (-v, -vv).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Output format of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

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
    /// Show a job's state and progress.
    Status {
        /// Job id.
        job: String,
    },
    /// List a job's tasks.
    Tasks {
        /// Job id.
        job: String,
        /// Only tasks in this state.
        #[arg(long)]
        state: Option<String>,
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
    /// Demonstrations.
    #[command(subcommand)]
    Demo(Demo),
    /// Measure throughput and latency on this machine.
    Bench(BenchArgs),
    /// Apply the database migrations (servers also check the schema version at start).
    Migrate {
        /// Database URL.
        #[arg(
            long,
            env = "BRIGADE_DATABASE_URL",
            default_value = "sqlite://brigade.db"
        )]
        database_url: String,
    },
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
pub fn init_tracing(command: &Command, verbose: u8) {
    let long_running = matches!(
        command,
        Command::Server(_) | Command::Worker(_) | Command::Up(_)
    );
    let default = match (long_running, verbose) {
        (_, 2..) => "debug",
        (true, _) | (false, 1) => "info,sqlx=warn,tower_http=warn",
        (false, 0) => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A client for the global options.
pub fn client(global: &Global) -> anyhow::Result<brigade_client::Client> {
    Ok(brigade_client::Client::new(
        &global.server,
        global.token.clone(),
    )?)
}

/// Turn a client error into advice.
pub fn explain(e: brigade_client::ClientError) -> anyhow::Error {
    use brigade_client::ClientError;
    match &e {
        ClientError::Unreachable { url, .. } => anyhow::anyhow!(
            "{e}\n  Is a server running there? Start one with `brigade up` (or `brigade server`), \
             or point --server / BRIGADE_SERVER at it (tried {url})."
        ),
        ClientError::Api { status, .. } if status.as_u16() == 401 => {
            anyhow::anyhow!("{e}\n  Pass a token with --token or BRIGADE_TOKEN.")
        }
        ClientError::Api { status, .. } if status.as_u16() == 404 => {
            anyhow::anyhow!(
                "{e}\n  Check the id; `brigade status` takes a job id as printed by `brigade submit`."
            )
        }
        ClientError::Api { problem, .. } if !problem.errors.is_empty() => {
            let fields: Vec<String> = problem
                .errors
                .iter()
                .map(|f| format!("  - {}: {}", f.field, f.message))
                .collect();
            anyhow::anyhow!("{e}\n{}", fields.join("\n"))
        }
        _ => anyhow::Error::new(e),
    }
}

/// Print `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
