//! The worker loop: join, lease for free slots, run, report in batches,
//! heartbeat with load, and leave cleanly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brigade_api::{
    ErrorKind, Heartbeat, LeasedTask, Load, Outcome, TaskError, TaskResult, WorkerJoin,
    WorkerJoined,
};
use brigade_client::{Client, ClientError};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handler::LogMsg;
use crate::load::{LoadSampler, memory};
use crate::trace::RunOutcome;
use crate::{Registry, TaskContext, TaskFailure, TaskFlow, TaskLog};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// A name for humans.
    pub name: String,
    /// Tasks run at once.
    pub capacity: u32,
    /// Queues served.
    pub queues: Vec<String>,
    /// Labels matched against tasks' `requires`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Longest lease long-poll.
    pub lease_wait: Duration,
    /// On shutdown, how long running tasks may take to finish before they are handed back.
    pub shutdown_grace: Duration,
    /// Most results in one report.
    pub max_batch: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: hostname(),
            capacity: 8,
            queues: vec!["default".into()],
            labels: Default::default(),
            lease_wait: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            max_batch: 1000,
        }
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The server refused to let it join.
    #[error("the server refused the worker: {0}")]
    Join(ClientError),
}

struct Running {
    attempt: u32,
    cancel: CancellationToken,
    /// Told to stop by the server: its result is not wanted.
    abandoned: bool,
}

/// No lease request is in flight.
const NO_LEASE: u8 = 0;
/// A lease request without results is in flight.
const LEASE_BARE: u8 = 1;
/// A lease request carrying results is in flight.
const LEASE_CARRYING: u8 = 2;

struct Shared {
    client: Client,
    registry: Registry,
    config: WorkerConfig,
    worker_id: Mutex<String>,
    running: Mutex<HashMap<String, Running>>,
    /// Finished tasks whose result the server has not taken yet: their
    /// leases are still extended by heartbeats, so a server that could not
    /// take results for a while does not requeue work that is done.
    unreported: Mutex<std::collections::HashSet<String>>,
    slots: Arc<Semaphore>,
    /// Finished results not sent yet: the next lease request carries them,
    /// or the reporter sends them when no lease request is about to go.
    outbox: Mutex<Vec<TaskResult>>,
    /// A result was put in the outbox.
    outbox_filled: Notify,
    /// Whether a lease request is in flight, and whether it carries results
    /// (one of the `LEASE_*` values): results that finish while one without
    /// results is in flight (a long-poll, likely) go by the reporter, which
    /// waits on this for the moment that happens rather than polling.
    lease_in_flight: watch::Sender<u8>,
    /// Shutting down: the reporter sends everything, then says so.
    finishing: AtomicBool,
    /// Log lines of running tasks, to the log shipper.
    logs: mpsc::UnboundedSender<LogMsg>,
    /// Stop leasing (drain or shutdown).
    stop_leasing: CancellationToken,
    /// The server counts an idle worker's held long-poll as its heartbeat.
    long_poll_keepalive: AtomicBool,
    /// A lease long-poll for all the slots is in flight.
    idle_polling: AtomicBool,
}

impl Shared {
    fn id(&self) -> String {
        self.worker_id.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn running_ids(&self) -> Vec<String> {
        self.running
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The server said to drain (in a heartbeat or a lease reply): stop leasing.
    fn drain_if_asked(&self, drain: bool) {
        if drain && !self.stop_leasing.is_cancelled() {
            tracing::info!("the server asked this worker to drain");
            self.stop_leasing.cancel();
        }
    }

    fn running_count(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Stop the tasks the server cancelled; their results are not wanted.
    fn cancel_tasks(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        if let Ok(mut m) = self.running.lock() {
            for tid in ids {
                if let Some(r) = m.get_mut(tid) {
                    tracing::info!(task = %tid, "cancelled by the server");
                    r.abandoned = true;
                    r.cancel.cancel();
                }
            }
        }
    }

    /// Take up to `max` results from the outbox.
    fn take_results(&self, max: usize) -> Vec<TaskResult> {
        let Ok(mut out) = self.outbox.lock() else {
            return Vec::new();
        };
        let n = out.len().min(max);
        out.drain(..n).collect()
    }

    /// Put results back at the front of the outbox (they could not be sent).
    fn put_back(&self, mut results: Vec<TaskResult>) {
        if let Ok(mut out) = self.outbox.lock() {
            results.append(&mut out);
            *out = results;
        }
    }

    fn set_lease_in_flight(&self, on: bool, carrying: bool) {
        let state = match (on, carrying) {
            (false, _) => NO_LEASE,
            (true, false) => LEASE_BARE,
            (true, true) => LEASE_CARRYING,
        };
        self.lease_in_flight.send_replace(state);
    }

    /// Whether a lease request that carries no results is in flight: it left
    /// without what finishes now, and may be a long-poll holding for seconds.
    /// (One that carries results returns as soon as they are recorded and the
    /// lease is served; the next one will carry what finishes meanwhile, so
    /// a busy worker keeps one transaction in flight, not two.)
    fn bare_lease_in_flight(&self) -> bool {
        *self.lease_in_flight.borrow() == LEASE_BARE
    }

    fn outbox_len(&self) -> usize {
        self.outbox.lock().map_or(0, |o| o.len())
    }

    /// The server took these results (recorded or rejected): their leases
    /// need no more extending.
    fn answered(&self, batch: &[TaskResult]) {
        if let Ok(mut u) = self.unreported.lock() {
            for r in batch {
                u.remove(&r.task_id);
            }
        }
    }
}

/// A worker: a registry of handlers and a connection to the servers.
pub struct Worker {
    client: Client,
    registry: Registry,
    config: WorkerConfig,
}

impl Worker {
    /// A worker running `registry`'s kinds for the servers `client` talks to.
    pub fn new(client: Client, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            client,
            registry,
            config,
        }
    }

    async fn join(
        client: &Client,
        registry: &Registry,
        config: &WorkerConfig,
    ) -> Result<WorkerJoined, ClientError> {
        let join = WorkerJoin {
            name: config.name.clone(),
            hostname: hostname(),
            queues: config.queues.clone(),
            kinds: registry.kinds(),
            labels: config.labels.clone(),
            capacity: config.capacity,
            version: brigade_api::VERSION.into(),
        };
        let mut delay = Duration::from_millis(200);
        loop {
            match client.join(&join).await {
                Ok(joined) => return Ok(joined),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "cannot join yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Join and work until `shutdown` completes (or the server drains this
    /// worker); then stop leasing, let running tasks finish within the grace
    /// period, report every result, and leave (handing back what still runs).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), WorkerError> {
        let joined = Self::join(&self.client, &self.registry, &self.config)
            .await
            .map_err(WorkerError::Join)?;
        let (id, heartbeat_every) = (
            joined.id,
            Duration::from_millis(joined.heartbeat_ms.max(100)),
        );
        tracing::info!(worker = %id, name = %self.config.name, capacity = self.config.capacity, kinds = ?self.registry.kinds(), "joined");
        let (logs_tx, logs_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            registry: self.registry,
            slots: Arc::new(Semaphore::new(self.config.capacity as usize)),
            config: self.config,
            worker_id: Mutex::new(id),
            running: Mutex::new(HashMap::new()),
            unreported: Mutex::new(Default::default()),
            outbox: Mutex::new(Vec::new()),
            outbox_filled: Notify::new(),
            lease_in_flight: watch::Sender::new(NO_LEASE),
            finishing: AtomicBool::new(false),
            logs: logs_tx,
            stop_leasing: CancellationToken::new(),
            long_poll_keepalive: AtomicBool::new(joined.long_poll_keepalive),
            idle_polling: AtomicBool::new(false),
        });
        let (reporter_done_tx, reporter_done) = watch::channel(false);
        let reporter = tokio::spawn(report_loop(shared.clone(), reporter_done_tx));
        let heartbeats = tokio::spawn(heartbeat_loop(shared.clone(), heartbeat_every));
        let log_shipper = tokio::spawn(log_loop(shared.clone(), logs_rx));
        let leasing = tokio::spawn(lease_loop(shared.clone()));

        tokio::select! {
            _ = shutdown => tracing::info!("shutting down: no more leases; finishing running tasks"),
            _ = shared.stop_leasing.cancelled() => tracing::info!("draining: finishing running tasks"),
        }
        shared.stop_leasing.cancel();
        let _ = leasing.await;

        // Let running tasks finish within the grace period.
        let deadline = Instant::now() + shared.config.shutdown_grace;
        while shared.running_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left_running = shared.running_count();
        if left_running > 0 {
            tracing::warn!(
                tasks = left_running,
                "grace period over: handing running tasks back"
            );
            if let Ok(mut m) = shared.running.lock() {
                for r in m.values_mut() {
                    r.abandoned = true;
                    r.cancel.cancel();
                }
            }
        }
        heartbeats.abort();
        // Report what is waiting, then stop the reporter.
        wait_reported(&shared, reporter_done).await;
        reporter.abort();
        log_shipper.abort();
        let id = shared.id();
        match shared.client.leave(&id).await {
            Ok(()) => tracing::info!(worker = %id, "left"),
            Err(e) => {
                tracing::warn!(worker = %id, error = %e, "could not say goodbye; the server will notice")
            }
        }
        Ok(())
    }
}

async fn wait_reported(shared: &Shared, mut done: watch::Receiver<bool>) {
    shared.finishing.store(true, Ordering::Relaxed);
    shared.outbox_filled.notify_one();
    // Wake a reporter waiting for the lease loop.
    shared.lease_in_flight.send_modify(|_| {});
    let _ = tokio::time::timeout(Duration::from_secs(30), done.wait_for(|d| *d)).await;
}

async fn lease_loop(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    // Whether the server takes lease requests for no tasks (older ones do not).
    let mut zero_polls = true;
    // Whether results may ride on the next lease request (not right after a
    // request carrying them was refused: the reporter sorts those out).
    let mut ride = true;
    loop {
        // Wait for at least one free slot, then take every free one. While
        // every slot is busy, hold a long-poll for no tasks: the server
        // answers it at once when a task this worker runs is cancelled.
        let first = if zero_polls {
            match hold_for_cancels(&shared).await {
                Held::Slot(p) => p,
                Held::Stop => return,
                Held::Unsupported => {
                    zero_polls = false;
                    continue;
                }
            }
        } else {
            tokio::select! {
                p = shared.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shared.stop_leasing.cancelled() => return,
            }
        };
        let Some(mut permits) = gather_slots(&shared, first).await else {
            return;
        };
        let results = if ride {
            shared.take_results(shared.config.max_batch)
        } else {
            Vec::new()
        };
        ride = true;
        let id = shared.id();
        shared.set_lease_in_flight(true, !results.is_empty());
        let lease = shared.client.report_and_lease(
            &id,
            results.clone(),
            permits.len() as u32,
            shared.config.lease_wait,
        );
        let idle = permits.len() >= shared.config.capacity as usize && results.is_empty();
        shared.idle_polling.store(idle, Ordering::Relaxed);
        let reply = tokio::select! {
            r = lease => r,
            _ = shared.stop_leasing.cancelled() => {
                shared.set_lease_in_flight(false, false);
                shared.put_back(results);
                return;
            }
        };
        shared.idle_polling.store(false, Ordering::Relaxed);
        shared.set_lease_in_flight(false, false);
        match reply {
            Ok(resp) => {
                backoff = Duration::from_millis(100);
                if let Some(reply) = &resp.results {
                    shared.answered(&results);
                    for r in &reply.rejected {
                        tracing::info!(task = %r.task_id, reason = %r.reason, "result not recorded");
                    }
                } else if !results.is_empty() {
                    // A server that does not know results in a lease request.
                    shared.put_back(results);
                    ride = false;
                }
                shared.cancel_tasks(&resp.cancel);
                shared.drain_if_asked(resp.drain);
                for task in resp.tasks {
                    let Some(permit) = permits.pop() else {
                        tracing::error!(task = %task.id, "the server sent more tasks than asked for");
                        break;
                    };
                    start_task(&shared, task, permit);
                }
            }
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                tracing::warn!("the server does not know this worker any more; joining again");
                // Results of the old registration cannot be recorded any more.
                if !results.is_empty() {
                    shared.answered(&results);
                    tracing::warn!(
                        results = results.len(),
                        "dropping results of the forgotten registration"
                    );
                }
                rejoin(&shared).await;
            }
            Err(e) if e.is_transient() => {
                shared.put_back(results);
                tracing::warn!(error = %e, "lease failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                // Refused (a 422 naming one of the results, say): the reporter
                // sends them on their own and splits the batch to find it.
                if !results.is_empty() {
                    shared.put_back(results);
                    shared.outbox_filled.notify_one();
                    ride = false;
                    continue;
                }
                tracing::warn!(error = %e, "lease failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// What holding a long-poll for no tasks ended with.
enum Held {
    /// A slot is free.
    Slot(tokio::sync::OwnedSemaphorePermit),
    /// Leasing stops.
    Stop,
    /// The server does not take lease requests for no tasks.
    Unsupported,
}

/// Wait for a free slot; meanwhile, when every slot is busy, hold lease
/// requests for no tasks so cancels and drains arrive at once. Such a request
/// can lease nothing, so dropping it when a slot frees loses nothing.
async fn hold_for_cancels(shared: &Shared) -> Held {
    loop {
        if let Ok(p) = shared.slots.clone().try_acquire_owned() {
            return Held::Slot(p);
        }
        let id = shared.id();
        let poll = shared
            .client
            .report_and_lease(&id, Vec::new(), 0, shared.config.lease_wait);
        tokio::select! {
            p = shared.slots.clone().acquire_owned() => {
                return match p { Ok(p) => Held::Slot(p), Err(_) => Held::Stop };
            }
            _ = shared.stop_leasing.cancelled() => return Held::Stop,
            r = poll => match r {
                Ok(resp) => {
                    shared.cancel_tasks(&resp.cancel);
                    shared.drain_if_asked(resp.drain);
                }
                Err(e) if e.status() == Some(reqwest::StatusCode::UNPROCESSABLE_ENTITY) => {
                    return Held::Unsupported;
                }
                Err(e) => {
                    // Heartbeats still carry cancels; wait for a slot a while.
                    tracing::debug!(error = %e, "holding a cancel long-poll failed");
                    tokio::select! {
                        p = shared.slots.clone().acquire_owned() => {
                            return match p { Ok(p) => Held::Slot(p), Err(_) => Held::Stop };
                        }
                        _ = shared.stop_leasing.cancelled() => return Held::Stop,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

/// Longest a busy worker waits for more slots to free before leasing.
const LEASE_GATHER: Duration = Duration::from_millis(2);

/// The free slots to lease for, starting with `first`. When more than half
/// the slots are busy, wait up to [`LEASE_GATHER`] for more to free, so a
/// worker running many short tasks leases (and commits) in batches rather
/// than one slot at a time. An idle or mostly idle worker leases at once.
/// `None` when leasing should stop.
async fn gather_slots(
    shared: &Shared,
    first: tokio::sync::OwnedSemaphorePermit,
) -> Option<Vec<tokio::sync::OwnedSemaphorePermit>> {
    let capacity = (shared.config.capacity as usize).clamp(1, 1000);
    let mut permits = vec![first];
    let deadline = tokio::time::Instant::now() + LEASE_GATHER;
    loop {
        while permits.len() < capacity {
            match shared.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        if permits.len() * 2 >= capacity {
            return Some(permits);
        }
        tokio::select! {
            p = shared.slots.clone().acquire_owned() => match p {
                Ok(p) => permits.push(p),
                Err(_) => return None,
            },
            _ = tokio::time::sleep_until(deadline) => return Some(permits),
            _ = shared.stop_leasing.cancelled() => return None,
        }
    }
}

async fn rejoin(shared: &Shared) {
    match Worker::join(&shared.client, &shared.registry, &shared.config).await {
        Ok(joined) => {
            tracing::info!(worker = %joined.id, "joined again");
            shared
                .long_poll_keepalive
                .store(joined.long_poll_keepalive, Ordering::Relaxed);
            if let Ok(mut g) = shared.worker_id.lock() {
                *g = joined.id;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot join again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn start_task(shared: &Arc<Shared>, task: LeasedTask, permit: tokio::sync::OwnedSemaphorePermit) {
    let cancel = CancellationToken::new();
    if let Ok(mut m) = shared.running.lock() {
        m.insert(
            task.id.clone(),
            Running {
                attempt: task.attempt,
                cancel: cancel.clone(),
                abandoned: false,
            },
        );
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let log = TaskLog::new(&task.id, task.attempt, shared.logs.clone());
        let flow = TaskFlow::new(shared.client.clone(), shared.id());
        let span = crate::trace::run_span(&task);
        let outcome = run_one(&shared, &task, cancel, log.clone(), flow.clone())
            .instrument(span.clone())
            .await;
        let abandoned = shared
            .running
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&task.id))
            .is_some_and(|r| r.abandoned && r.attempt == task.attempt);
        drop(permit);
        let ended = match &outcome {
            None => RunOutcome::Cancelled,
            Some(_) if abandoned => RunOutcome::Abandoned,
            Some(Ok(_)) => RunOutcome::Succeeded,
            Some(Err(_)) => RunOutcome::Failed,
        };
        crate::trace::record_outcome(&span, ended);
        drop(span);
        let Some(outcome) = outcome else { return };
        if abandoned {
            return;
        }
        let duration_ms = Some(started.elapsed().as_millis() as u64);
        let result = match outcome {
            Ok(output) => TaskResult {
                task_id: task.id,
                attempt: task.attempt,
                outcome: Outcome::Succeeded,
                output,
                error: None,
                retryable: None,
                retry_in_ms: None,
                duration_ms,
                spawn: flow.take_spawned(),
            },
            Err(f) => TaskResult {
                task_id: task.id,
                attempt: task.attempt,
                outcome: Outcome::Failed,
                output: serde_json::Value::Null,
                error: Some(f.error),
                retryable: Some(f.retryable),
                retry_in_ms: None,
                duration_ms,
                spawn: Vec::new(),
            },
        };
        // The attempt's log lines reach the server before its result.
        if log.wrote_any() {
            flush_logs(&shared).await;
        }
        if let Ok(mut u) = shared.unreported.lock() {
            u.insert(result.task_id.clone());
        }
        if let Ok(mut out) = shared.outbox.lock() {
            out.push(result);
        }
        shared.outbox_filled.notify_one();
    });
}

/// Run one attempt under its time limit. `None` when it was cancelled (nothing to report).
async fn run_one(
    shared: &Shared,
    task: &LeasedTask,
    cancel: CancellationToken,
    log: TaskLog,
    flow: TaskFlow,
) -> Option<Result<serde_json::Value, TaskFailure>> {
    let Some(handler) = shared.registry.get(&task.kind) else {
        return Some(Err(TaskFailure {
            error: TaskError::new(
                ErrorKind::UnknownKind,
                format!("this worker has no handler for {:?}", task.kind),
            ),
            retryable: true,
        }));
    };
    let timeout = Duration::from_millis(task.timeout_ms.max(1));
    let ctx = TaskContext {
        id: task.id.clone(),
        job_id: task.job_id.clone(),
        kind: task.kind.clone(),
        input: task.input.clone(),
        attempt: task.attempt,
        timeout,
        cancel: cancel.clone(),
        log,
        parents: task.parents.clone().unwrap_or_default(),
        parents_truncated: task.parents_truncated,
        flow,
    };
    // Its own task, so a panic is caught and an overrun can be aborted.
    let mut handle = tokio::spawn(async move { handler.run(ctx).await });
    tokio::select! {
        joined = &mut handle => Some(match joined {
            Ok(outcome) => outcome,
            Err(e) => Err(TaskFailure {
                error: TaskError::new(ErrorKind::Crash, format!("the handler crashed: {e}")),
                retryable: true,
            }),
        }),
        _ = tokio::time::sleep(timeout) => {
            cancel.cancel();
            handle.abort();
            Some(Err(TaskFailure {
                error: TaskError::new(ErrorKind::Timeout, format!("ran past its timeout of {} ms", task.timeout_ms)),
                retryable: true,
            }))
        }
        _ = cancel.cancelled() => {
            handle.abort();
            None
        }
    }
}

/// How long a result may wait in the outbox for a lease request to carry it
/// before the reporter sends it on its own.
const RIDE_WAIT: Duration = Duration::from_millis(10);

/// Sends the results no lease request carries: those that finish while a
/// lease request is in flight (a long-poll may hold for seconds), those left
/// waiting longer than [`RIDE_WAIT`], and everything when shutting down.
/// Results survive an unreachable server and are sent when it is back.
async fn report_loop(shared: Arc<Shared>, done: watch::Sender<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let finishing = shared.finishing.load(Ordering::Relaxed);
        if shared.outbox_len() == 0 {
            if finishing {
                let _ = done.send(true);
                return;
            }
            shared.outbox_filled.notified().await;
            continue;
        }
        // Give the lease loop the chance to carry them: it will when a lease
        // request is about to go (it is gathering free slots) or returns soon
        // (one carrying results). Send them now when a request without
        // results is in flight (it may be a long-poll holding for seconds),
        // or when they waited too long.
        let deadline = tokio::time::Instant::now() + RIDE_WAIT;
        let mut lease = shared.lease_in_flight.subscribe();
        loop {
            lease.mark_unchanged();
            if shared.finishing.load(Ordering::Relaxed)
                || shared.outbox_len() == 0
                || shared.bare_lease_in_flight()
            {
                break;
            }
            // Woken the moment the lease loop sends (carrying them or not)
            // or its request returns.
            if !matches!(
                tokio::time::timeout_at(deadline, lease.changed()).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
        let batch = shared.take_results(shared.config.max_batch);
        if batch.is_empty() {
            continue;
        }
        if let Err(kept) = send_results(&shared, batch).await {
            tracing::warn!(
                results = kept.len(),
                "cannot report results; keeping them and retrying in {backoff:?}"
            );
            shared.put_back(kept);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(100);
        }
    }
}

/// Send a batch of results. A batch the server refuses (a 4xx naming one
/// result, say) is split in halves until the refused result stands alone;
/// that one is reported instead as a failure saying why, so no result is
/// dropped for another's sake and none goes unanswered. `Err` gives back
/// what could not be sent for a transient reason.
async fn send_results(shared: &Shared, batch: Vec<TaskResult>) -> Result<(), Vec<TaskResult>> {
    let mut work = vec![batch];
    let mut kept = Vec::new();
    while let Some(batch) = work.pop() {
        let id = shared.id();
        match shared.client.results(&id, batch.clone()).await {
            Ok(reply) => {
                shared.answered(&batch);
                for r in reply.rejected {
                    tracing::info!(task = %r.task_id, reason = %r.reason, "result not recorded");
                }
            }
            Err(e) if e.is_transient() => kept.extend(batch),
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                shared.answered(&batch);
                tracing::warn!(error = %e, results = batch.len(), "the server forgot this worker; its results cannot be recorded");
            }
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, results = batch.len(), "the server refused a batch of results; splitting it");
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                work.push(second);
                work.push(first);
            }
            Err(e) => {
                let Some(refused) = batch.into_iter().next() else {
                    continue;
                };
                if refused.outcome == Outcome::Failed && refused.output.is_null() {
                    // Even the failure report was refused: nothing smaller to say.
                    shared.answered(std::slice::from_ref(&refused));
                    tracing::error!(task = %refused.task_id, error = %e, "the server refused this task's failure report");
                    continue;
                }
                tracing::warn!(task = %refused.task_id, error = %e, "the server refused this result; reporting the task failed instead");
                let failure = TaskResult {
                    task_id: refused.task_id,
                    attempt: refused.attempt,
                    outcome: Outcome::Failed,
                    output: serde_json::Value::Null,
                    error: Some(TaskError::new(
                        if e.status() == Some(reqwest::StatusCode::PAYLOAD_TOO_LARGE) {
                            ErrorKind::ResultTooLarge
                        } else {
                            ErrorKind::Handler
                        },
                        format!(
                            "the server refused the task's result: {}",
                            short(&e.to_string())
                        ),
                    )),
                    retryable: Some(false),
                    retry_in_ms: None,
                    duration_ms: refused.duration_ms,
                    spawn: Vec::new(),
                };
                work.push(vec![failure]);
            }
        }
    }
    if kept.is_empty() { Ok(()) } else { Err(kept) }
}

/// At most 1000 bytes of `s`, cut on a character boundary.
fn short(s: &str) -> &str {
    let mut end = s.len().min(1000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn heartbeat_loop(shared: Arc<Shared>, every: Duration) {
    let mut sampler = LoadSampler::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut running = shared.running_ids();
        // Idle and waiting in a long-poll the server counts as a heartbeat:
        // nothing to say (a thousand idle workers cost the server nothing).
        let unreported = shared.unreported.lock().map_or(0, |u| u.len());
        if running.is_empty()
            && unreported == 0
            && shared.idle_polling.load(Ordering::Relaxed)
            && shared.long_poll_keepalive.load(Ordering::Relaxed)
        {
            continue;
        }
        let load = Load {
            cpu: sampler.cpu(),
            memory: memory(),
            running: running.len() as u32,
            capacity: shared.config.capacity,
        };
        if let Ok(u) = shared.unreported.lock() {
            running.extend(u.iter().cloned());
        }
        let id = shared.id();
        match shared
            .client
            .heartbeat(&id, &Heartbeat { running, load })
            .await
        {
            Ok(reply) => {
                shared.cancel_tasks(&reply.cancel);
                shared.drain_if_asked(reply.drain);
            }
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => rejoin(&shared).await,
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Most log lines in one request.
const MAX_LOG_BATCH: usize = 5000;
/// Longest a finished task's result waits for its log lines to be shipped.
const LOG_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// Wait until the log lines written so far are shipped (or given up on).
async fn flush_logs(shared: &Shared) {
    let (done, shipped) = tokio::sync::oneshot::channel();
    if shared.logs.send(LogMsg::Flush(done)).is_ok() {
        let _ = tokio::time::timeout(LOG_FLUSH_WAIT, shipped).await;
    }
}

/// Ships log lines in batches: whatever was written while the previous request
/// was in flight goes in the next one. Lines the server cannot take after a few
/// tries are dropped (logs are best effort; results are not).
async fn log_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<LogMsg>) {
    while let Some(first) = rx.recv().await {
        let mut batches: Vec<brigade_api::LogBatch> = Vec::new();
        let mut flushes = Vec::new();
        let mut lines = 0usize;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                LogMsg::Line {
                    task_id,
                    attempt,
                    line,
                } => {
                    lines += 1;
                    match batches
                        .iter_mut()
                        .rev()
                        .find(|b| b.task_id == task_id && b.attempt == attempt)
                    {
                        Some(b) => b.lines.push(line),
                        None => batches.push(brigade_api::LogBatch {
                            task_id,
                            attempt,
                            lines: vec![line],
                        }),
                    }
                }
                LogMsg::Flush(done) => flushes.push(done),
            }
            if lines < MAX_LOG_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batches.is_empty() {
            let mut backoff = Duration::from_millis(100);
            for _ in 0..3 {
                match shared.client.logs(&shared.id(), batches.clone()).await {
                    Ok(reply) => {
                        for r in reply.rejected {
                            tracing::debug!(task = %r.task_id, reason = %r.reason, "log lines not stored");
                        }
                        break;
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "cannot ship log lines; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, lines, "the server refused log lines; dropping them");
                        break;
                    }
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
