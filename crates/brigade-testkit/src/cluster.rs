//! A server and its workers, as real processes of the binary under test.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use brigade_api::{JobSubmit, JobView, TaskSpec, TaskView, WorkerView};
use brigade_client::Client;
use brigade_launch::{free_port, server_command, wait_active, worker_command};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::pg::{Postgres, TestDatabase};
use crate::{DEADLINE, bin};

/// A server and its workers, stopped (SIGKILL) when dropped. Each process
/// logs to `NAME.log` in [`Cluster::dir`].
pub struct Cluster {
    /// Temp dir of the cluster: logs, the SQLite file, anything a test puts there.
    pub dir: tempfile::TempDir,
    /// The server's `--database-url`.
    pub db_url: String,
    /// The server's port on 127.0.0.1.
    pub port: u16,
    /// The server's base URL.
    pub url: String,
    /// A typed client of the server.
    pub client: Client,
    /// The server process, while it runs.
    pub server: Option<Child>,
    /// Worker (and peer server) processes by name.
    pub workers: Vec<(String, Child)>,
    server_args: Vec<String>,
    /// The PostgreSQL database the cluster made for itself, dropped after
    /// the processes are gone.
    database: Option<TestDatabase>,
}

/// A database URL for a new cluster: a fresh PostgreSQL database when
/// `BRIGADE_TEST_POSTGRES` is set (the suite's PostgreSQL pass), else an
/// SQLite file in `dir`.
async fn database(dir: &std::path::Path) -> (String, Option<TestDatabase>) {
    match crate::pg::requested() {
        Some(admin) => {
            let db = match Postgres::at(&admin).await {
                Ok(pg) => pg.create_database().await,
                Err(why) => Err(why),
            }
            .unwrap_or_else(|why| panic!("BRIGADE_TEST_POSTGRES={admin}: {why}"));
            (db.url.clone(), Some(db))
        }
        None => (
            format!("sqlite://{}", dir.join("brigade.db").display()),
            None,
        ),
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
        let (db_url, database) = database(dir.path()).await;
        let mut c = Self::new(dir, db_url, server_args);
        c.database = database;
        c.start_server().await;
        c
    }

    /// A server on a database of the test's choosing (its own PostgreSQL, an
    /// SQLite file on a small disk); logs go to `dir`.
    pub async fn start_on(dir: tempfile::TempDir, db_url: String, server_args: &[&str]) -> Self {
        let mut c = Self::new(dir, db_url, server_args);
        c.start_server().await;
        c
    }

    fn new(dir: tempfile::TempDir, db_url: String, server_args: &[&str]) -> Self {
        let port = free_port().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(&url, None).unwrap();
        Cluster {
            dir,
            db_url,
            port,
            url,
            client,
            server: None,
            workers: Vec::new(),
            server_args: server_args.iter().map(|s| s.to_string()).collect(),
            database: None,
        }
    }

    /// Where a process called `name` logs (stdout and stderr, appended).
    fn log(&self, name: &str) -> Stdio {
        let path: PathBuf = self.dir.path().join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Stdio::from(f)
    }

    /// A server process on `port` and this cluster's database, logging as `name`.
    fn spawn_server(&self, port: u16, name: &str) -> Child {
        server_command(&bin(), &format!("127.0.0.1:{port}"), &self.db_url)
            .args(&self.server_args)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(self.log(name))
            .stderr(self.log(name))
            .spawn()
            .unwrap()
    }

    /// Wait until the server at `client` is ready, failing with `name`'s log.
    async fn ready(&self, client: &Client, name: &str) {
        if let Err(e) = brigade_launch::wait_ready(client, DEADLINE).await {
            panic!("{name}: {e}; log:\n{}", self.read_log(name));
        }
    }

    /// (Re)start the server on the same port and database.
    pub async fn start_server(&mut self) {
        self.server = Some(self.spawn_server(self.port, "server"));
        self.ready(&self.client, "server").await;
    }

    /// Whether this cluster runs on PostgreSQL (several servers may share it).
    pub fn shared_database(&self) -> bool {
        self.db_url.starts_with("postgres")
    }

    /// Start another server process on the same database; returns its URL.
    pub async fn spawn_peer_server(&mut self, name: &str) -> String {
        let port = free_port().unwrap();
        let child = self.spawn_server(port, name);
        self.workers.push((name.to_owned(), child));
        let url = format!("http://127.0.0.1:{port}");
        self.ready(&Client::new(&url, None).unwrap(), name).await;
        url
    }

    /// Start a worker process called `name` talking to `servers`
    /// (comma-separated, for failover), with `extra` arguments.
    fn spawn_worker_process(&mut self, name: &str, servers: &str, capacity: u32, extra: &[&str]) {
        let child = worker_command(&bin(), servers, name, capacity)
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

    /// Start a worker process talking to `servers` (comma-separated, for failover).
    pub fn spawn_worker_on(&mut self, name: &str, servers: &str, capacity: u32) {
        self.spawn_worker_process(name, servers, capacity, &[]);
    }

    /// Start a worker process talking to `servers` with `extra` arguments
    /// (say `--queues`).
    pub fn spawn_worker_on_with(
        &mut self,
        name: &str,
        servers: &str,
        capacity: u32,
        extra: &[&str],
    ) {
        self.spawn_worker_process(name, servers, capacity, extra);
    }

    /// Start a worker process named `name` with `extra` arguments (the code
    /// kind only when they include `--code-cache`).
    pub fn spawn_worker(&mut self, name: &str, capacity: u32, extra: &[&str]) {
        let url = self.url.clone();
        self.spawn_worker_process(name, &url, capacity, extra);
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

    /// Start workers and wait until they are active.
    pub async fn with_workers(mut self, names: &[&str], capacity: u32, extra: &[&str]) -> Self {
        for n in names {
            self.spawn_worker(n, capacity, extra);
        }
        self.active(names).await;
        self
    }

    /// Wait until a worker of each name is active, failing with the server's log.
    async fn active(&self, names: &[&str]) -> Vec<WorkerView> {
        match wait_active(&self.client, names, DEADLINE).await {
            Ok(ws) => ws,
            Err(e) => panic!("{e}\nserver log:\n{}", self.read_log("server")),
        }
    }

    /// The active worker called `name`, once it has joined.
    pub async fn worker_named(&self, name: &str) -> WorkerView {
        self.active(&[name]).await.remove(0)
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

    /// Poll `f` until it yields a value, failing the test after [`DEADLINE`]
    /// with the server's log.
    pub async fn until<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        crate::until(
            what,
            || format!("server log:\n{}", self.read_log("server")),
            f,
        )
        .await
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
        // `database` is dropped after this, with no server left holding it.
    }
}

/// A task of `kind` with `input`.
pub fn task(kind: &str, input: serde_json::Value) -> TaskSpec {
    TaskSpec::new(kind, input)
}
