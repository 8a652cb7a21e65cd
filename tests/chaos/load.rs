//! Load for a scenario: a cluster, a big job of `echo` tasks and a stream of
//! small jobs submitted while faults happen, every acknowledged task tracked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brigade_api::{JobSubmit, JobView, TaskSpec, WorkerState, WorkerView};
use brigade_client::{Client, ClientError};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::invariants::{self, Acked, Report};
use brigade_testkit::Cluster;

/// Server options of every scenario: a short lease so faults are noticed in
/// seconds, no rate limit (the checker reads every task), and no poison
/// rule: here the faults, not the tasks, kill workers, and a task lost three
/// times in a row by bad luck must still end `succeeded` for "finished
/// once" to be checkable.
pub const SERVER_ARGS: &[&str] = &[
    "--lease-ttl-ms",
    "2000",
    "--heartbeat-ms",
    "250",
    "--rate-limit-per-s",
    "0",
    "--poison-after",
    "0",
];

/// Tasks of the big job submitted at the start.
pub const BIG_JOB: usize = 2000;
/// Tasks submitted by the stream during the faults, at most.
pub const STREAM_TASKS: u64 = 1500;
/// Tasks per job of the stream.
const STREAM_JOB: usize = 10;
/// Attempts per task: generous, so a task lost again and again by killed
/// workers still ends `succeeded` and "finished once" is checkable.
pub const MAX_ATTEMPTS: u32 = 25;
/// Longest wait for a scenario's work to finish after the faults.
const FINISH_DEADLINE: Duration = Duration::from_secs(180);

/// What every submitted task is tracked in.
#[derive(Default)]
pub struct Tracker {
    acked: Mutex<Vec<Acked>>,
    next_input: AtomicU64,
    refused: AtomicU64,
}

impl Tracker {
    fn inputs(&self, n: usize, pad: usize) -> Vec<Value> {
        let first = self.next_input.fetch_add(n as u64, Ordering::Relaxed);
        (0..n as u64)
            .map(|k| {
                if pad == 0 {
                    json!({ "i": first + k })
                } else {
                    json!({ "i": first + k, "pad": "x".repeat(pad) })
                }
            })
            .collect()
    }

    /// Jobs acknowledged so far.
    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap().clone()
    }

    /// Tasks acknowledged so far.
    pub fn acked_tasks(&self) -> usize {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.tasks.len())
            .sum()
    }
}

/// Submit a job of `n` echo tasks with distinct inputs (padded with `pad`
/// bytes); tracked when acknowledged.
pub async fn submit_echo(
    client: &Client,
    tracker: &Tracker,
    n: usize,
    priority: i32,
    pad: usize,
) -> Result<JobView, ClientError> {
    let inputs = tracker.inputs(n, pad);
    let tasks = inputs
        .iter()
        .map(|input| {
            let mut t = TaskSpec::new("echo", input.clone());
            t.max_attempts = Some(MAX_ATTEMPTS);
            t.priority = Some(priority);
            t
        })
        .collect();
    let job = JobSubmit::new(tasks).named("chaos");
    match client.submit(&job, None).await {
        Ok(view) => {
            let ids = view.task_ids.clone().unwrap_or_default();
            assert_eq!(ids.len(), n, "a 201 names every task");
            tracker.acked.lock().unwrap().push(Acked {
                job_id: view.id.clone(),
                tasks: ids.into_iter().zip(inputs).collect(),
            });
            Ok(view)
        }
        Err(e) => {
            tracker.refused.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// Submit a graph job of `layers` × `width` echo tasks with distinct inputs:
/// the tasks of layer `i` are keyed `l<i>` and wait for every task of layer
/// `i - 1`. Tracked when acknowledged, with each task's layer.
pub async fn submit_graph(
    client: &Client,
    tracker: &Tracker,
    layers: usize,
    width: usize,
) -> Result<JobView, ClientError> {
    let inputs = tracker.inputs(layers * width, 0);
    let tasks = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let layer = i / width;
            let mut t = TaskSpec::new("echo", input.clone()).keyed(format!("l{layer}"));
            if layer > 0 {
                t = t.after([format!("l{}", layer - 1)]);
            }
            t.max_attempts = Some(MAX_ATTEMPTS);
            t
        })
        .collect();
    let job = JobSubmit::new(tasks).named("chaos-graph");
    match client.submit(&job, None).await {
        Ok(view) => {
            let ids = view.task_ids.clone().unwrap_or_default();
            assert_eq!(ids.len(), layers * width, "a 201 names every task");
            tracker.acked.lock().unwrap().push(Acked {
                job_id: view.id.clone(),
                tasks: ids.into_iter().zip(inputs).collect(),
            });
            Ok(view)
        }
        Err(e) => {
            tracker.refused.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// A cluster under load.
pub struct Load {
    pub c: Cluster,
    pub tracker: Arc<Tracker>,
    pub recoveries: Vec<f64>,
    /// Workers started so far (names are `w<n>`).
    spawned: usize,
    stream: Option<(CancellationToken, JoinHandle<()>)>,
}

/// `sqlite` or `postgres`.
pub fn engine(c: &Cluster) -> &'static str {
    if c.shared_database() {
        "postgres"
    } else {
        "sqlite"
    }
}

impl Load {
    /// A cluster on the suite's database with `workers` workers of `capacity`.
    pub async fn start(workers: usize, capacity: u32) -> Self {
        let c = Cluster::start_with(SERVER_ARGS).await;
        Self::on(c, workers, capacity).await
    }

    /// Load on an already started cluster.
    pub async fn on(c: Cluster, workers: usize, capacity: u32) -> Self {
        let mut load = Self {
            c,
            tracker: Arc::new(Tracker::default()),
            recoveries: Vec::new(),
            spawned: 0,
            stream: None,
        };
        for _ in 0..workers {
            let url = load.c.url.clone();
            load.spawn_worker(&url, capacity);
        }
        for i in 0..workers {
            load.c.worker_named(&format!("w{i}")).await;
        }
        load
    }

    /// Start another worker talking to `servers`; returns its name.
    pub fn spawn_worker(&mut self, servers: &str, capacity: u32) -> String {
        let name = format!("w{}", self.spawned);
        self.spawned += 1;
        self.c.spawn_worker_on(&name, servers, capacity);
        name
    }

    /// The worker process called `name` (its pid).
    pub fn pid(&self, name: &str) -> nix::unistd::Pid {
        let (_, child) = self.c.workers.iter().find(|(n, _)| n == name).unwrap();
        nix::unistd::Pid::from_raw(child.id() as i32)
    }

    /// The worker called `name` as the API shows it.
    pub async fn worker(&self, name: &str) -> Option<WorkerView> {
        let ws = self.c.client.workers().await.ok()?;
        // The latest registration of that name.
        ws.into_iter()
            .filter(|w| w.name == name)
            .max_by_key(|w| w.joined_at)
    }

    /// Wait until the API shows worker `name` lost with nothing left running.
    pub async fn until_lost_and_reaped(&self, name: &str) -> WorkerView {
        self.c
            .until(
                &format!("worker {name} lost and its tasks requeued"),
                || async {
                    let w = self.worker(name).await?;
                    (w.state == WorkerState::Lost && w.running == 0).then_some(w)
                },
            )
            .await
    }

    /// Submit the big job and start the stream of small jobs.
    pub async fn begin(&mut self) {
        let client = self.c.client.clone();
        submit_echo(&client, &self.tracker, BIG_JOB, 0, 0)
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let tracker = self.tracker.clone();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            let mut sent = 0u64;
            while sent < STREAM_TASKS && !token.is_cancelled() {
                if submit_echo(&client, &tracker, STREAM_JOB, 0, 0)
                    .await
                    .is_ok()
                {
                    sent += STREAM_JOB as u64;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = token.cancelled() => {}
                }
            }
        });
        self.stream = Some((stop, handle));
    }

    /// Stop the stream of small jobs.
    pub async fn stop_stream(&mut self) {
        if let Some((stop, handle)) = self.stream.take() {
            stop.cancel();
            handle.await.unwrap();
        }
    }

    /// Time from `since` (a heal, a restart) until the cluster does new work
    /// again: a high-priority probe task submitted (retrying while the server
    /// refuses) and finished. Recorded and returned in seconds.
    pub async fn recovery(&mut self, since: Instant) -> f64 {
        let deadline = Instant::now() + FINISH_DEADLINE;
        let job = loop {
            match submit_echo(&self.c.client, &self.tracker, 1, 1000, 0).await {
                Ok(j) => break j,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the cluster never accepted work again: {e}\nserver log:\n{}",
                        self.c.read_log("server")
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        loop {
            if let Ok(j) = self
                .c
                .client
                .wait_job(&job.id, Duration::from_millis(1000))
                .await
                && j.state.is_finished()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never made progress again\nserver log:\n{}",
                self.c.read_log("server")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = since.elapsed().as_secs_f64();
        self.recoveries.push(s);
        s
    }

    /// Stop the stream, wait for every acknowledged job to finish, and check
    /// the invariants; prints the scenario's summary line.
    pub async fn finish(&mut self, scenario: &str, extra: &str) -> Report {
        self.stop_stream().await;
        let deadline = Instant::now() + FINISH_DEADLINE;
        for a in self.tracker.acked() {
            loop {
                if let Ok(j) = self
                    .c
                    .client
                    .wait_job(&a.job_id, Duration::from_millis(1000))
                    .await
                    && j.state.is_finished()
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{scenario}: job {} never finished\nserver log (tail):\n{}",
                    a.job_id,
                    tail(&self.c.read_log("server"), 60)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let report = invariants::check(&self.c.client, &self.tracker.acked()).await;
        // Faults of the surroundings answer 503; a 500 would be a bug to look at.
        let errors_500: usize = ["server", "server-b"]
            .iter()
            .map(|n| {
                self.c
                    .read_log(n)
                    .matches("500 Internal Server Error")
                    .count()
            })
            .sum();
        let extra = format!(
            "{extra}{}submits_refused={} http_500={errors_500}",
            if extra.is_empty() { "" } else { " " },
            self.tracker.refused.load(Ordering::Relaxed)
        );
        report.print(scenario, engine(&self.c), &self.recoveries, &extra);
        report.assert_clean(scenario);
        assert_eq!(
            errors_500,
            0,
            "{scenario}: faults of the surroundings are 503s, never 500s; server log (tail):\n{}",
            tail(&self.c.read_log("server"), 60)
        );
        report
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
