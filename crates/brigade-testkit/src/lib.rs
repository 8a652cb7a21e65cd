//! The test kit: a real brigade cluster for tests.
//!
//! [`Cluster`] runs the `brigade` binary as a server process and worker
//! processes, over HTTP on 127.0.0.1, on a real SQLite file or a fresh
//! PostgreSQL database ([`pg`]), with each process's log in the cluster's
//! temp dir. The e2e suite, the chaos suite and `tests/code.rs` use it; the
//! processes themselves are started by `brigade-launch`, which `brigade up`
//! and `brigade bench` use too, so that code exists once.
//!
//! A dev crate (`publish = false`): a failed expectation panics, because a
//! panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is a failed test

mod cluster;
pub mod pg;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use brigade_launch::{free_port, server_command, worker_command};
pub use cluster::{Cluster, task};

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The `brigade` binary under test.
///
/// Cargo (1.94 and later) and nextest put `CARGO_BIN_EXE_brigade` in the
/// environment of the brigade package's integration tests (and build the
/// binary first), so the kit finds it without every test passing it in. No
/// guess in `target/` as a fallback: that could run a stale binary.
pub fn bin() -> PathBuf {
    match std::env::var_os("CARGO_BIN_EXE_brigade") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "CARGO_BIN_EXE_brigade is not set: run the brigade package's integration tests \
             with `cargo test` (1.94 or later) or `cargo nextest run`, or set it to the binary"
        ),
    }
}

/// Wait until the server behind `client` is ready, failing the test after
/// [`DEADLINE`].
pub async fn wait_ready(client: &brigade_client::Client) {
    if let Err(e) = brigade_launch::wait_ready(client, DEADLINE).await {
        panic!("{e}");
    }
}

/// Serve `app` on a free port of 127.0.0.1 for the rest of the test (a
/// receiver of webhooks or traces that the real binary sends to); its port.
pub async fn serve_on_loopback(app: axum::Router) -> u16 {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("binding a loopback port: {e}"),
    };
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => panic!("the loopback port: {e}"),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

/// Poll `f` until it yields a value; after [`DEADLINE`] the test fails with
/// `what` and whatever `context` says then (a log, say).
pub async fn until<T, F, Fut>(what: &str, context: impl Fn() -> String, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A process started by a test, killed (SIGKILL) and reaped when dropped, so
/// a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
