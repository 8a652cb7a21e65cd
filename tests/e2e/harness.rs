//! A real cluster for tests: the `brigade` binary as a server process and
//! worker processes, HTTP on 127.0.0.1, a real SQLite file — or a fresh
//! PostgreSQL database when `BRIGADE_TEST_POSTGRES` names a server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brigade_api::{JobSubmit, JobView, TaskSpec, TaskView, WorkerState, WorkerView};
use brigade_client::Client;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_brigade");

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A server and its workers, stopped when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub db_url: String,
    pub port: u16,
    pub url: String,
    pub client: Client,
    pub server: Option<Child>,
    pub workers: Vec<(String, Child)>,
    server_args: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A database URL for a new cluster: a fresh PostgreSQL database when
/// `BRIGADE_TEST_POSTGRES` is set, else an SQLite file in `dir`.
async fn database_url(dir: &std::path::Path) -> String {
    match std::env::var("BRIGADE_TEST_POSTGRES") {
        Ok(admin) if !admin.is_empty() => {
            use sqlx::Connection;
            let name = format!("brigade_e2e_{}", uuid::Uuid::now_v7().simple());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("BRIGADE_TEST_POSTGRES={admin} does not answer: {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let base = admin
                .rsplit_once('/')
                .map_or(admin.as_str(), |(b, _)| b)
                .to_owned();
            format!("{base}/{name}")
        }
        _ => format!("sqlite://{}", dir.join("brigade.db").display()),
    }
}

impl Cluster {
    /// A server with default timings.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A server with extra arguments (e.g. a short lease TTL).
    pub async fn start_with(server_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_url = database_url(dir.path()).await;
        Self::start_on(dir, db_url, server_args).await
    }

    /// A server on a database of the test's choosing (its own PostgreSQL, an
    /// SQLite file on a small disk); logs go to `dir`.
    pub async fn start_on(dir: tempfile::TempDir, db_url: String, server_args: &[&str]) -> Self {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(&url, None).unwrap();
        let mut c = Cluster {
            dir,
            db_url,
            port,
            url,
            client,
            server: None,
            workers: Vec::new(),
            server_args: server_args.iter().map(|s| s.to_string()).collect(),
        };
        c.start_server().await;
        c
    }

    fn log(&self, name: &str) -> Stdio {
        let path: PathBuf = self.dir.path().join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Stdio::from(f)
    }

    /// (Re)start the server on the same port and database.
    pub async fn start_server(&mut self) {
        let child = Command::new(BIN)
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--database-url",
                &self.db_url,
            ])
            .args(&self.server_args)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(self.log("server"))
            .stderr(self.log("server"))
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while self.client.ready().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "server did not become ready; log:\n{}",
                self.read_log("server")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether this cluster runs on PostgreSQL (several servers may share it).
    pub fn shared_database(&self) -> bool {
        self.db_url.starts_with("postgres")
    }

    /// Start another server process on the same database; returns its URL.
    pub async fn spawn_peer_server(&mut self, name: &str) -> String {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                &self.db_url,
            ])
            .args(&self.server_args)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(self.log(name))
            .stderr(self.log(name))
            .spawn()
            .unwrap();
        self.workers.push((name.to_owned(), child));
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(&url, None).unwrap();
        let deadline = Instant::now() + DEADLINE;
        while client.ready().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "peer server did not become ready:\n{}",
                self.read_log(name)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        url
    }

    /// Start a worker process talking to `servers` (comma-separated, for failover).
    pub fn spawn_worker_on(&mut self, name: &str, servers: &str, capacity: u32) {
        let child = Command::new(BIN)
            .args([
                "worker",
                "--server",
                servers,
                "--name",
                name,
                "--capacity",
                &capacity.to_string(),
                "--no-code",
            ])
            .env("RUST_LOG", "info")
            .stdout(self.log(name))
            .stderr(self.log(name))
            .spawn()
            .unwrap();
        self.workers.push((name.to_owned(), child));
    }

    /// Kill the server with SIGKILL: no chance to flush anything.
    pub fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill().unwrap();
            s.wait().unwrap();
        }
    }

    /// The log of a process of this cluster.
    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Start a worker process named `name`.
    pub fn spawn_worker(&mut self, name: &str, capacity: u32, extra: &[&str]) {
        let child = Command::new(BIN)
            .args([
                "worker",
                "--server",
                &self.url,
                "--name",
                name,
                "--capacity",
                &capacity.to_string(),
            ])
            .args(extra)
            // The code kind's start-up probe runs a sandbox; only tests of that kind need it.
            .args(if extra.contains(&"--code-cache") {
                &[][..]
            } else {
                &["--no-code"][..]
            })
            .env("RUST_LOG", "info")
            .stdout(self.log(name))
            .stderr(self.log(name))
            .spawn()
            .unwrap();
        self.workers.push((name.to_owned(), child));
    }

    /// Start workers and wait until they are active.
    pub async fn with_workers(mut self, names: &[&str], capacity: u32, extra: &[&str]) -> Self {
        for n in names {
            self.spawn_worker(n, capacity, extra);
        }
        for n in names {
            self.worker_named(n).await;
        }
        self
    }

    /// The active worker called `name`, once it has joined.
    pub async fn worker_named(&self, name: &str) -> WorkerView {
        self.until(&format!("worker {name} active"), || async {
            let ws = self.client.workers().await.ok()?;
            ws.into_iter()
                .find(|w| w.name == name && w.state == WorkerState::Active)
        })
        .await
    }

    /// Send a signal to the worker process called `name`.
    pub fn signal_worker(&mut self, name: &str, sig: Signal) {
        let (_, child) = self.workers.iter().find(|(n, _)| n == name).unwrap();
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    }

    /// Wait for the worker process called `name` to exit.
    pub async fn wait_worker_exit(&mut self, name: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, child) = self.workers.iter_mut().find(|(n, _)| n == name).unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "worker {name} did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Poll `f` until it yields a value, failing the test after [`DEADLINE`].
    pub async fn until<T, F, Fut>(&self, what: &str, mut f: F) -> T
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
                "timed out waiting for: {what}\nserver log:\n{}",
                self.read_log("server")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Submit a job of `tasks`.
    pub async fn submit(&self, tasks: Vec<TaskSpec>) -> JobView {
        let job = JobSubmit::new(tasks).named("test");
        self.client.submit(&job, None).await.unwrap()
    }

    /// Wait until job `id` is finished.
    pub async fn finished(&self, id: &str) -> JobView {
        self.until(&format!("job {id} finished"), || async {
            let j = self
                .client
                .wait_job(id, Duration::from_millis(500))
                .await
                .ok()?;
            j.state.is_finished().then_some(j)
        })
        .await
    }

    /// All tasks of job `id`.
    pub async fn tasks(&self, id: &str) -> Vec<TaskView> {
        self.client.job_tasks(id, None).await.unwrap()
    }

    /// Make the typed client send `token` as its bearer token.
    pub fn use_token(&mut self, token: Option<&str>) {
        self.client = Client::new(&self.url, token.map(str::to_owned)).unwrap();
    }

    /// A raw HTTP client for requests the typed client would not send.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, w) in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(s) = &mut self.server {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// A task of `kind` with `input`.
pub fn task(kind: &str, input: serde_json::Value) -> TaskSpec {
    TaskSpec::new(kind, input)
}
