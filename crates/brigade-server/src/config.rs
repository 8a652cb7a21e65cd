//! Server configuration.

use std::net::SocketAddr;

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
        }
    }
}
