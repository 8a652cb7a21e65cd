//! Starting `brigade server` and `brigade worker` processes of a given binary,
//! and waiting until they serve.
//!
//! This is the one copy of that code: `brigade up` and `brigade bench` (the
//! product binary) and `brigade-testkit` (the e2e and chaos suites) all start
//! their processes through it. It is a normal crate, not a dev crate, because
//! the product binary uses it; it stays small and knows nothing of temp dirs,
//! logs or test databases (those are the test kit's).
//!
//! Commands come back as [`std::process::Command`] so that each caller picks
//! its own stdio and environment and spawns it the way it needs: tests keep a
//! [`std::process::Child`], async callers convert with
//! `tokio::process::Command::from`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use brigade_api::{WorkerState, WorkerView};
use brigade_client::Client;

/// How often readiness is polled: short, because tests and benchmarks wait on it.
const POLL: Duration = Duration::from_millis(20);

/// Why a process could not be started or did not come up in time.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The process could not be spawned.
    #[error("starting {what}: {source}")]
    Spawn {
        /// What was being started.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// It was started but did not become ready within the time allowed.
    #[error("{what} did not come up within {within:?} (last: {last})")]
    NotReady {
        /// What was awaited.
        what: String,
        /// How long it was given.
        within: Duration,
        /// The last thing seen while waiting.
        last: String,
    },
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
///
/// The OS picks it (bind to port 0) and it is free again once the probe
/// closes, so a server started next can bind it.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// This program's own executable: what `brigade up` and `brigade bench` run
/// their servers and workers from.
pub fn current_exe() -> Result<PathBuf, LaunchError> {
    std::env::current_exe().map_err(|source| LaunchError::Spawn {
        what: "this program (its path is unknown)".into(),
        source,
    })
}

/// `EXE server --listen LISTEN --database-url URL`, ready for more arguments,
/// environment and stdio.
pub fn server_command(exe: &Path, listen: &str, database_url: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(["server", "--listen", listen, "--database-url", database_url]);
    cmd
}

/// `EXE worker --server SERVERS --name NAME --capacity N`; `servers` may list
/// several comma-separated URLs (the worker fails over between them).
pub fn worker_command(exe: &Path, servers: &str, name: &str, capacity: u32) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args([
        "worker",
        "--server",
        servers,
        "--name",
        name,
        "--capacity",
        &capacity.to_string(),
    ]);
    cmd
}

/// Start `count` worker processes of `exe` against `url`, named
/// `PREFIX-1` … `PREFIX-count`, with `extra` arguments; `quiet` logs
/// warnings only unless `RUST_LOG` says otherwise. They are killed if their
/// handles are dropped; [`stop_children`] stops them gracefully.
pub fn spawn_workers(
    exe: &Path,
    url: &str,
    count: u32,
    capacity: u32,
    prefix: &str,
    extra: &[&str],
    quiet: bool,
) -> Result<Vec<tokio::process::Child>, LaunchError> {
    (1..=count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let mut cmd = worker_command(exe, url, &name, capacity);
            cmd.args(extra);
            if quiet && std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            tokio::process::Command::from(cmd)
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| LaunchError::Spawn {
                    what: format!("worker {name}"),
                    source,
                })
        })
        .collect()
}

/// Ask children to stop (SIGTERM: workers hand back their tasks and leave, a
/// server answers its long-polls), then wait up to 10 s for each and kill it
/// if it is still there.
pub async fn stop_children(children: &mut [tokio::process::Child]) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for c in children.iter() {
        if let Some(pid) = c.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for c in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), c.wait())
            .await
            .is_err()
        {
            let _ = c.kill().await;
        }
    }
}

/// Wait until the server behind `client` answers its readiness probe.
pub async fn wait_ready(client: &Client, within: Duration) -> Result<(), LaunchError> {
    let deadline = Instant::now() + within;
    loop {
        match client.ready().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(LaunchError::NotReady {
                    what: "the server".into(),
                    within,
                    last: e.to_string(),
                });
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Wait until a worker of each name in `names` is active; returns them in
/// the order of `names`.
pub async fn wait_active(
    client: &Client,
    names: &[&str],
    within: Duration,
) -> Result<Vec<WorkerView>, LaunchError> {
    let deadline = Instant::now() + within;
    loop {
        let last = match client.workers().await {
            Ok(ws) => {
                let active: Vec<WorkerView> = names
                    .iter()
                    .filter_map(|n| {
                        ws.iter()
                            .find(|w| w.name == *n && w.state == WorkerState::Active)
                            .cloned()
                    })
                    .collect();
                if active.len() == names.len() {
                    return Ok(active);
                }
                format!("{} of {} active", active.len(), names.len())
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(LaunchError::NotReady {
                what: format!("workers {}", names.join(", ")),
                within,
                last,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn commands_carry_the_options_every_caller_needs() {
        let exe = Path::new("/bin/brigade");
        let s = server_command(exe, "127.0.0.1:1", "sqlite://x.db");
        assert_eq!(s.get_program(), "/bin/brigade");
        assert_eq!(
            args(&s),
            [
                "server",
                "--listen",
                "127.0.0.1:1",
                "--database-url",
                "sqlite://x.db"
            ]
        );
        let w = worker_command(exe, "http://a,http://b", "w-1", 4);
        assert_eq!(
            args(&w),
            [
                "worker",
                "--server",
                "http://a,http://b",
                "--name",
                "w-1",
                "--capacity",
                "4"
            ]
        );
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().unwrap_or(0);
        assert_ne!(port, 0);
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
