//! `brigade server`.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

/// Options of `brigade server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "BRIGADE_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Database: `sqlite://FILE` (created on first start).
    #[arg(
        long,
        env = "BRIGADE_DATABASE_URL",
        default_value = "sqlite://brigade.db"
    )]
    pub database_url: String,
    /// A task whose lease is not extended within this is requeued; a silent worker is lost.
    #[arg(long, default_value_t = 15_000)]
    pub lease_ttl_ms: u64,
    /// How often workers heartbeat.
    #[arg(long, default_value_t = 5_000)]
    pub heartbeat_ms: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
}

impl ServerArgs {
    /// The server configuration these options describe.
    pub fn config(&self) -> anyhow::Result<brigade_server::ServerConfig> {
        anyhow::ensure!(
            self.lease_ttl_ms >= 100,
            "--lease-ttl-ms must be at least 100"
        );
        anyhow::ensure!(
            self.heartbeat_ms >= 10 && self.heartbeat_ms < self.lease_ttl_ms,
            "--heartbeat-ms must be at least 10 and less than --lease-ttl-ms"
        );
        Ok(brigade_server::ServerConfig {
            listen: self.listen,
            database_url: self.database_url.clone(),
            lease_ttl_ms: self.lease_ttl_ms,
            heartbeat_ms: self.heartbeat_ms,
            max_body_bytes: self.max_body_bytes,
            ..Default::default()
        })
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Run the server until Ctrl-C / SIGTERM.
pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let url = config.database_url.clone();
    let server = brigade_server::start(config, shutdown_signal())
        .await
        .with_context(|| format!("starting on {url}"))?;
    tracing::info!(addr = %server.addr, database = %url, "brigade server listening on http://{}", server.addr);
    if server.addr.ip().is_loopback() {
        tracing::info!("no tokens configured: running open on loopback");
    }
    server
        .task
        .await
        .context("server task")?
        .context("serving")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
