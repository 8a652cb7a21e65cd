//! `brigade worker`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cli::server::shutdown_signal;

/// Options of `brigade worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// A `brigade.toml` whose `[worker]` section sets any of these options (default:
    /// ./brigade.toml when present); the command line and the environment win.
    #[arg(long, env = "BRIGADE_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the configuration in effect, each value with where it came from, and exit.
    #[arg(long)]
    pub print_config: bool,
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
    /// Do not offer the `code` kind (sandboxed compile-and-run).
    #[arg(long)]
    pub no_code: bool,
    /// Where compiled `code` artefacts are cached (default: a directory under $TMPDIR).
    #[arg(long)]
    pub code_cache: Option<std::path::PathBuf>,
    /// Print which sandbox protections this host gives the `code` kind, and exit.
    #[arg(long)]
    pub sandbox_check: bool,
    /// Export a span for each task run, in its job's trace, over OTLP/HTTP to
    /// URL/v1/traces, e.g. `http://127.0.0.1:4318`. Off by default.
    #[arg(long, env = "BRIGADE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
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
        let mut registry = brigade_worker::executors::builtins(self.allow_exec);
        // Comma-separated values of one key accumulate ("any of").
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &self.labels {
            labels
                .entry(k.clone())
                .and_modify(|old| *old = format!("{old},{v}"))
                .or_insert_with(|| v.clone());
        }
        if !self.no_code {
            self.add_code(&mut registry, &mut labels)?;
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

impl WorkerArgs {
    /// Offer the `code` kind, advertising the languages whose toolchains exist as label `lang`.
    fn add_code(
        &self,
        registry: &mut brigade_worker::Registry,
        labels: &mut BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        use brigade_worker::executors::code::CodeHandler;
        let exe = std::env::current_exe()?;
        let languages = brigade_worker::sandbox::detect_languages();
        if languages.is_empty() {
            tracing::warn!(
                "no toolchain found for the code kind (python, gcc, g++, javac, rustc, node, bash); not offering it"
            );
            return Ok(());
        }
        let handler = match &self.code_cache {
            Some(dir) => CodeHandler::new(exe.clone(), dir.clone())?,
            None => CodeHandler::with_defaults()?,
        };
        // One line when all is well; every protection that is off is named.
        let report = brigade_worker::sandbox::sandbox_check_report(&exe);
        let on = report.lines().filter(|l| l.contains("[on ]")).count();
        let off: Vec<&str> = report.lines().filter(|l| l.contains("[OFF]")).collect();
        tracing::info!(
            languages = %languages.join(","),
            "code sandbox: {on} protections on, {} off (brigade worker --sandbox-check lists them)",
            off.len()
        );
        for line in off {
            tracing::warn!("code sandbox: {}", line.trim());
        }
        for line in report.lines() {
            tracing::debug!("code sandbox: {line}");
        }
        registry.register("code", handler);
        labels
            .entry("lang".into())
            .or_insert_with(|| languages.join(","));
        // Versions for `GET /v1/languages` (labels ride in the join body).
        for (lang, version) in brigade_worker::sandbox::detect_language_versions() {
            if !version.is_empty() {
                labels
                    .entry(format!("{}{lang}", brigade_api::code::LANG_VERSION_LABEL))
                    .or_insert(version);
            }
        }
        Ok(())
    }
}

/// Run a worker until Ctrl-C / SIGTERM or until drained.
pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if args.sandbox_check {
        let exe = std::env::current_exe()?;
        println!("{}", brigade_worker::sandbox::sandbox_check_report(&exe));
        println!(
            "languages: {}",
            brigade_worker::sandbox::detect_languages().join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let worker = args.worker()?;
    worker.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
