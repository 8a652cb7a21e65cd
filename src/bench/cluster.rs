//! The system under test: a real `brigade server` process on a free port and
//! real `brigade worker` processes of this same binary, on a fresh database.

use std::time::Duration;

use anyhow::Context;
use brigade_client::Client;
use brigade_launch::{
    current_exe, free_port, server_command, spawn_workers, stop_children, wait_active, wait_ready,
};
use tokio::process::Child;

/// Longest a server or a worker may take to come up.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Where a scenario's server keeps its data.
pub struct Database {
    /// The server's `--database-url`.
    pub url: String,
    /// The temp dir holding a fresh SQLite file (deleted on drop), if the
    /// database was not given.
    dir: Option<tempfile::TempDir>,
}

impl Database {
    /// `given`, or a fresh SQLite file in a new temp dir.
    pub fn new(given: Option<&str>) -> anyhow::Result<Self> {
        match given {
            Some(url) => Ok(Self {
                url: url.to_owned(),
                dir: None,
            }),
            None => {
                let dir = tempfile::tempdir().context("creating a temp dir for the database")?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                Ok(Self {
                    url,
                    dir: Some(dir),
                })
            }
        }
    }

    /// Whether the data outlives the run (a database the user named): then a
    /// scenario cleans up what it leaves behind.
    pub fn is_persistent(&self) -> bool {
        self.dir.is_none()
    }
}

/// `sqlite` or `postgres`, from a database URL.
pub fn engine(url: &str) -> &'static str {
    if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}

/// A server process and its worker processes; they are killed if this is
/// dropped without [`Cluster::stop`].
pub struct Cluster {
    /// The server's base URL.
    pub url: String,
    /// A client of the server.
    pub client: Client,
    /// The database the server uses.
    pub db: Database,
    server: Child,
    workers: Vec<Child>,
    /// Worker names start with this: unique per cluster, so workers of an
    /// earlier run on the same database never count as ours.
    prefix: String,
    generation: u32,
}

impl Cluster {
    /// Start a server on `db` with `extra` server arguments; wait until it is ready.
    pub async fn start(db: Database, extra: &[String]) -> anyhow::Result<Self> {
        let port = free_port().context("finding a free port")?;
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = server_command(&current_exe()?, &format!("127.0.0.1:{port}"), &db.url);
        cmd.args(extra).env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let server = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .context("starting the server")?;
        let client = Client::new(&url, None)?;
        let cluster = Self {
            url,
            client,
            db,
            server,
            workers: Vec::new(),
            prefix: format!("bench-{:04x}", rand::random::<u16>()),
            generation: 0,
        };
        wait_ready(&cluster.client, START_DEADLINE).await?;
        Ok(cluster)
    }

    /// Start `count` worker processes of `capacity` slots; wait until all are active.
    pub async fn add_workers(&mut self, count: u32, capacity: u32) -> anyhow::Result<()> {
        self.generation += 1;
        let prefix = format!("{}-g{}", self.prefix, self.generation);
        // The scenarios run built-in kinds only: no code sandbox (its start-up
        // probe would also touch the host's sandbox cgroups, which the sandbox
        // tests check are left clean).
        let exe = current_exe()?;
        let mut started = spawn_workers(
            &exe,
            &self.url,
            count,
            capacity,
            &prefix,
            &["--no-code"],
            true,
        )?;
        self.workers.append(&mut started);
        let names: Vec<String> = (1..=count).map(|i| format!("{prefix}-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        wait_active(&self.client, &names, START_DEADLINE).await?;
        Ok(())
    }

    /// Process id of the server.
    pub fn server_pid(&self) -> u32 {
        self.server.id().unwrap_or(0)
    }

    /// Process ids of the worker processes still running.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(Child::id).collect()
    }

    /// Worker processes started and not killed.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// SIGKILL worker `i` (no goodbye: the server finds out when its lease TTL passes).
    pub async fn kill_worker(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(i < self.workers.len(), "no worker {i}");
        let mut child = self.workers.swap_remove(i);
        child.kill().await.context("killing a worker")?;
        Ok(())
    }

    /// Stop the workers (SIGTERM: they say goodbye), then the server.
    pub async fn stop(mut self) {
        stop_children(&mut self.workers).await;
        stop_children(std::slice::from_mut(&mut self.server)).await;
    }
}
