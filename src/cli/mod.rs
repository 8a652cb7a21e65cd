//! Command-line interface: argument definitions and the client commands.

pub mod logs;
pub mod run;
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
    /// Trust this CA certificate (PEM) for https:// servers (e.g. a self-signed server).
    #[arg(long, global = true, env = "BRIGADE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
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
    /// Judge a program on the cluster: `brigade run sum.py --tests tests/` prints a verdict per
    /// test. The language comes from the extension; the exit status is 0 only when accepted.
    Run(run::RunArgs),
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
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `brigade token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new random secret; prints it once and the auth-file entry holding only its hash.
    Create {
        /// Token name: owns the jobs and workers made with it.
        #[arg(long)]
        name: String,
        /// admin, client or worker.
        #[arg(long)]
        role: brigade_server::auth::Role,
    },
}

/// Run a token command.
pub fn token(cmd: &TokenCommand, output: Output) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name, role } => {
            anyhow::ensure!(
                !name.is_empty() && name.len() <= 128 && !name.contains(['"', '\\', '\n']),
                "--name must be 1 to 128 characters without quotes, backslashes or newlines"
            );
            let (secret, hash) = brigade_server::auth::generate_secret();
            let entry = format!(
                "[[token]]\nname = \"{name}\"\nrole = \"{}\"\nsecret_hash = \"{hash}\"\n",
                role.as_str()
            );
            match output {
                Output::Json => print_json(&serde_json::json!({
                    "name": name, "role": role.as_str(), "secret": secret,
                    "secret_hash": hash, "toml": entry,
                }))?,
                Output::Text => {
                    println!("secret (shown once; give it to the token's user as BRIGADE_TOKEN):");
                    println!("  {secret}");
                    println!();
                    println!("add to the server's auth file:");
                    print!("{entry}");
                }
            }
            Ok(())
        }
    }
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
    Ok(brigade_client::Client::with_options(
        &global.server,
        global.token.clone(),
        client_options(global.ca_cert.as_deref())?,
    )?)
}

/// Client options for an optional `--ca-cert` file.
pub fn client_options(
    ca_cert: Option<&std::path::Path>,
) -> anyhow::Result<brigade_client::ClientOptions> {
    Ok(match ca_cert {
        Some(p) => brigade_client::ClientOptions::with_ca_cert_file(p)?,
        None => brigade_client::ClientOptions::default(),
    })
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
