//! Server configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::AuthConfig;

/// Certificate chain and private key files (PEM) to serve HTTPS with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// `sqlite://path` (default `sqlite://brigade.db`).
    pub database_url: String,
    /// A lease not extended within this is lost.
    pub lease_ttl_ms: u64,
    /// Heartbeat period workers are told.
    pub heartbeat_ms: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Tasks per job.
    pub max_tasks_per_job: usize,
    /// Bytes of one task's input.
    pub max_input_bytes: usize,
    /// Bytes of one result's output (JSON); a larger one is recorded as a
    /// failed attempt of kind `result_too_large`. Keep `max_body_bytes`
    /// above it, so a result this big still fits a request.
    pub max_result_bytes: usize,
    /// Tokens and access-token signing; no tokens means open mode.
    pub auth: AuthConfig,
    /// Allow open mode on a non-loopback address.
    pub insecure: bool,
    /// Serve `/metrics` without a token.
    pub public_metrics: bool,
    /// Requests per second per client/admin token (bursts of twice that); 0 = no limit.
    pub rate_limit_per_s: u32,
    /// Requests per second per worker token; 0 = no limit.
    pub worker_rate_limit_per_s: u32,
    /// Long-polls (lease, job wait) held at once; more get 503.
    pub max_long_polls: usize,
    /// Time limit of a request that does not long-poll (reading its body included).
    pub request_timeout: Duration,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Serve HTTPS with these.
    pub tls: Option<TlsFiles>,
    /// Keep finished jobs this long (a job's own `keep_ms` wins), then delete
    /// them with their tasks, history and logs; `None` keeps them forever.
    pub retention_ms: Option<u64>,
    /// How often the pruner looks for expired jobs.
    pub prune_every: Duration,
    /// Most tasks one pruning transaction deletes.
    pub prune_batch: u32,
    /// Attempts in a row ending `lost` or `crash` after which a task fails
    /// as `poison` (0: never).
    pub poison_after: u32,
    /// Hosts a job's `callback.url` may name (`host` or `host:port`); empty:
    /// no callbacks.
    pub callback_allow: Vec<String>,
    /// Key callbacks are signed with (`Brigade-Signature`); without one this
    /// server sends none.
    pub callback_secret: Option<String>,
    /// Wait before a failed callback is tried again, doubled after each
    /// failure (at most an hour), for up to 24 hours.
    pub callback_backoff_ms: u64,
    /// How long a server's claim on a delivery holds: if it dies mid-delivery,
    /// another server (or it, restarted) tries again after this. Delivery
    /// requests time out at half of it (at most 10 s).
    pub callback_claim_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            database_url: "sqlite://brigade.db".into(),
            lease_ttl_ms: 15_000,
            heartbeat_ms: 5_000,
            max_body_bytes: 16 << 20,
            max_tasks_per_job: 10_000,
            max_input_bytes: 1 << 20,
            max_result_bytes: brigade_api::MAX_RESULT_BYTES,
            auth: AuthConfig::default(),
            insecure: false,
            public_metrics: false,
            rate_limit_per_s: 1000,
            worker_rate_limit_per_s: 20_000,
            max_long_polls: 10_000,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            tls: None,
            retention_ms: Some(brigade_core::retention::DEFAULT_RETENTION_MS),
            prune_every: Duration::from_secs(10),
            prune_batch: 500,
            poison_after: brigade_core::transition::DEFAULT_POISON_AFTER,
            callback_allow: Vec::new(),
            callback_secret: None,
            callback_backoff_ms: brigade_core::callback::DEFAULT_BASE_DELAY_MS,
            callback_claim_ms: 60_000,
        }
    }
}
