//! `brigade server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

/// Where a server listens and which database it uses: `brigade server` and
/// `brigade up` take the same two options.
#[derive(Debug, Clone, Args)]
pub struct Endpoint {
    /// Address to listen on.
    #[arg(long, env = "BRIGADE_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Database: `sqlite://FILE` (created on first start) or `postgres://USER@HOST/DB` (shared by several servers).
    #[arg(
        long,
        env = "BRIGADE_DATABASE_URL",
        default_value = "sqlite://brigade.db"
    )]
    pub database_url: String,
}

/// Options of `brigade server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// A `brigade.toml` whose `[server]` section sets any of these options (default:
    /// ./brigade.toml when present); the command line and the environment win.
    #[arg(long, env = "BRIGADE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the configuration in effect, each value with where it came from, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// A task whose lease is not extended within this is requeued; a silent worker is lost.
    #[arg(long, default_value_t = 15_000)]
    pub lease_ttl_ms: u64,
    /// How often workers heartbeat.
    #[arg(long, default_value_t = 5_000)]
    pub heartbeat_ms: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Largest output of one task result in bytes (JSON); a larger result is
    /// recorded as a failed attempt of kind `result_too_large`.
    #[arg(long, default_value_t = brigade_api::MAX_RESULT_BYTES)]
    pub max_result_bytes: usize,
    /// Tokens (TOML `[[token]]` entries with name, role, secret or secret_hash).
    /// Without it the server runs open: everyone is an admin.
    #[arg(long, env = "BRIGADE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Allow running open (no tokens) on an address other than loopback.
    #[arg(long)]
    pub insecure: bool,
    /// Serve /metrics without a token.
    #[arg(long)]
    pub public_metrics: bool,
    /// HMAC key for access tokens (at least 32 bytes); default: random at each start,
    /// so issued tokens die with the process.
    #[arg(long, env = "BRIGADE_TOKEN_SIGNING_KEY_FILE")]
    pub token_signing_key_file: Option<PathBuf>,
    /// Lifetime of access tokens from /v1/auth/token.
    #[arg(long, default_value_t = 3600, hide = true)]
    pub access_token_ttl_s: u64,
    /// Requests per second per client or admin token (bursts of twice that); 0 = no limit.
    #[arg(long, default_value_t = 1000)]
    pub rate_limit_per_s: u32,
    /// Requests per second per worker token; 0 = no limit.
    #[arg(long, default_value_t = 20_000)]
    pub worker_rate_limit_per_s: u32,
    /// Long-polls (lease, job wait) held at once; more are answered 503.
    #[arg(long, default_value_t = 10_000)]
    pub max_long_polls: usize,
    /// Time limit of a request that does not long-poll, body included.
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Time a client has to send its request headers (and finish a TLS handshake).
    #[arg(long, default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "BRIGADE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "BRIGADE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Keep finished jobs this long, then delete them with their tasks, history and logs
    /// (`7d`, `12h`, `30m`, `60s`, `500ms`; `off` keeps them forever). A job's own
    /// `keep_ms` wins.
    #[arg(long, env = "BRIGADE_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub retention: Retention,
    /// How often the pruner looks for expired jobs, in ms.
    #[arg(long, default_value_t = 10_000, hide = true)]
    pub prune_every_ms: u64,
    /// Fail a task as `poison` after this many attempts in a row ended `lost` or
    /// `crash` (its worker died, its handler panicked), whatever its `max_attempts`;
    /// 0 never does.
    #[arg(long, default_value_t = brigade_core::transition::DEFAULT_POISON_AFTER)]
    pub poison_after: u32,
    /// Hosts a job's `callback.url` may name, comma-separated (`host` for any port,
    /// `host:port` for one). None by default: no job may have a callback.
    #[arg(long, env = "BRIGADE_CALLBACK_ALLOW", value_delimiter = ',')]
    pub callback_allow: Vec<String>,
    /// Key callbacks are signed with (header `Brigade-Signature`), at least 16 bytes;
    /// needed with --callback-allow. Prefer the environment variable to the flag.
    #[arg(long, env = "BRIGADE_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
    /// Wait before a failed callback delivery is tried again, in ms; doubled after each
    /// failure, at most an hour apart, for up to 24 hours.
    #[arg(long, default_value_t = 5_000)]
    pub callback_backoff_ms: u64,
    /// How long a server's claim on a callback delivery holds, in ms (a server that
    /// dies mid-delivery leaves it to others for this long); for tests.
    #[arg(long, default_value_t = 60_000, hide = true)]
    pub callback_claim_ms: u64,
    /// Export traces (one per job: its submit, each task's lease and result) over
    /// OTLP/HTTP to URL/v1/traces, e.g. `http://127.0.0.1:4318`. Off by default.
    #[arg(long, env = "BRIGADE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// A parsed `--retention`: milliseconds, `None` for keeping jobs forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<u64>);

fn parse_retention(s: &str) -> Result<Retention, String> {
    brigade_core::retention::parse_retention(s).map(Retention)
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
        let tokens = match &self.auth_file {
            Some(path) => brigade_server::auth::load_auth_file(path)?,
            None => Vec::new(),
        };
        let key = match &self.token_signing_key_file {
            Some(path) => {
                let key = std::fs::read(path).with_context(|| {
                    format!("reading --token-signing-key-file {}", path.display())
                })?;
                anyhow::ensure!(
                    key.len() >= 32,
                    "--token-signing-key-file must hold at least 32 bytes"
                );
                Some(key)
            }
            None => None,
        };
        let callback_allow: Vec<String> = self
            .callback_allow
            .iter()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(secret) = &self.callback_secret {
            anyhow::ensure!(
                secret.len() >= 16,
                "--callback-secret must be at least 16 bytes"
            );
        }
        anyhow::ensure!(
            callback_allow.is_empty() || self.callback_secret.is_some(),
            "--callback-allow needs --callback-secret (or BRIGADE_CALLBACK_SECRET): callbacks are signed"
        );
        let mut auth = brigade_server::auth::AuthConfig::new(tokens, key);
        auth.access_token_ttl_s = self.access_token_ttl_s;
        Ok(brigade_server::ServerConfig {
            listen: self.endpoint.listen,
            database_url: self.endpoint.database_url.clone(),
            lease_ttl_ms: self.lease_ttl_ms,
            heartbeat_ms: self.heartbeat_ms,
            max_body_bytes: self.max_body_bytes,
            max_result_bytes: self.max_result_bytes,
            auth,
            insecure: self.insecure,
            public_metrics: self.public_metrics,
            rate_limit_per_s: self.rate_limit_per_s,
            worker_rate_limit_per_s: self.worker_rate_limit_per_s,
            max_long_polls: self.max_long_polls.max(1),
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(100)),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.max(100)),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(brigade_server::config::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            retention_ms: self.retention.0,
            prune_every: Duration::from_millis(self.prune_every_ms.max(10)),
            poison_after: self.poison_after,
            callback_allow,
            callback_secret: self.callback_secret.clone(),
            callback_backoff_ms: self.callback_backoff_ms.max(1),
            callback_claim_ms: self.callback_claim_ms.max(100),
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
    let open = config.auth.is_open();
    let tokens = config.auth.tokens.len();
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = match brigade_server::start(config, shutdown_signal()).await {
        Ok(s) => s,
        Err(e @ brigade_server::StartError::Insecure(_)) => return Err(e.into()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("starting on {url}"))),
    };
    tracing::info!(addr = %server.addr, database = %url, "brigade server listening on {scheme}://{}", server.addr);
    if open {
        tracing::warn!(
            "no tokens configured: running open, every caller is an admin{}",
            if server.addr.ip().is_loopback() {
                " (loopback only)"
            } else {
                " (--insecure)"
            }
        );
    } else {
        tracing::info!(tokens, "token authentication on");
    }
    server
        .task
        .await
        .context("server task")?
        .context("serving")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
