//! `brigade worker`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cli::server::shutdown_signal;

/// Options of `brigade worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Server URL; several, comma-separated, for failover.
    #[arg(long, env = "BRIGADE_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// API token.
    #[arg(long, env = "BRIGADE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust this CA certificate (PEM) for an https:// server.
    #[arg(long, env = "BRIGADE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// A name for this worker (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 8)]
    pub capacity: u32,
    /// Queues to serve, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "default")]
    pub queues: Vec<String>,
    /// Labels `key=value` matched against tasks' `requires` (repeat or comma-separate).
    #[arg(long = "labels", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Allow the `exec` kind (runs commands on this host as this user).
    #[arg(long)]
    pub allow_exec: bool,
    /// On shutdown, how long running tasks may finish before they are handed back.
    #[arg(long, default_value_t = 30_000)]
    pub shutdown_grace_ms: u64,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected key=value")),
    }
}

impl WorkerArgs {
    /// Build the worker these options describe.
    pub fn worker(&self) -> anyhow::Result<brigade_worker::Worker> {
        anyhow::ensure!(
            (1..=10_000).contains(&self.capacity),
            "--capacity must be 1 to 10000"
        );
        let client = brigade_client::Client::with_options(
            &self.server,
            self.token.clone(),
            crate::cli::client_options(self.ca_cert.as_deref())?,
        )?;
        let registry = brigade_worker::executors::builtins(self.allow_exec);
        // Comma-separated values of one key accumulate ("any of").
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &self.labels {
            labels
                .entry(k.clone())
                .and_modify(|old| *old = format!("{old},{v}"))
                .or_insert_with(|| v.clone());
        }
        let config = brigade_worker::WorkerConfig {
            name: self
                .name
                .clone()
                .unwrap_or_else(brigade_worker::runtime::hostname),
            capacity: self.capacity,
            queues: self.queues.clone(),
            labels,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            ..Default::default()
        };
        Ok(brigade_worker::Worker::new(client, registry, config))
    }
}

/// Run a worker until Ctrl-C / SIGTERM or until drained.
pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let worker = args.worker()?;
    worker.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
