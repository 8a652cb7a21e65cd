//! What a task kind is to the worker: a [`Handler`] registered under its name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use brigade_api::logs::{MAX_LOG_BYTES_PER_ATTEMPT, MAX_LOG_LINE_BYTES, TRUNCATED};
use brigade_api::{ErrorKind, ParentResult, TaskError, TaskSpec};
use tokio_util::sync::CancellationToken;

/// One attempt of a task, as a handler sees it.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Task id.
    pub id: String,
    /// Its job.
    pub job_id: String,
    /// Handler name.
    pub kind: String,
    /// Input.
    pub input: serde_json::Value,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The attempt's time limit (the runtime enforces it too).
    pub timeout: Duration,
    /// Fires when the task is cancelled, timed out or the worker stops hard.
    pub cancel: CancellationToken,
    /// Where the handler writes log lines (shipped to the server; see [`TaskLog`]).
    pub log: TaskLog,
    /// For a task with `after`: the tasks it waited for, with their results,
    /// as the lease carried them (see [`TaskContext::parents`]).
    pub parents: Vec<ParentResult>,
    /// The lease carried the parents' ids only (their outputs were over its
    /// payload bound): [`TaskContext::parents`] fetches them.
    pub parents_truncated: bool,
    /// Spawning and progress (see [`TaskFlow`]).
    pub flow: TaskFlow,
}

impl TaskContext {
    /// Add `task` to this task's job when this attempt succeeds (in the
    /// transaction that records the result: a result the server rejects
    /// spawns nothing). Spawned tasks join this task's groups: a task
    /// waiting for this one's key waits for them too.
    pub fn spawn(&self, task: TaskSpec) {
        if let Ok(mut v) = self.flow.spawned.lock() {
            v.push(task);
        }
    }

    /// [`spawn`](Self::spawn) each of `tasks`.
    pub fn spawn_all(&self, tasks: impl IntoIterator<Item = TaskSpec>) {
        if let Ok(mut v) = self.flow.spawned.lock() {
            v.extend(tasks);
        }
    }

    /// Report how far this attempt got: `done` of `total` units, with a
    /// line for people. Shown in the task's view and published as a
    /// `task.progress` event. Whether the server took it (it refuses
    /// reports of an attempt that is no longer current); `false` outside a
    /// worker.
    pub async fn progress(
        &self,
        done: u64,
        total: impl Into<Option<u64>>,
        message: impl Into<String>,
    ) -> bool {
        let Some(link) = &self.flow.link else {
            return false;
        };
        let message: String = message.into();
        let report = brigade_api::ProgressReport {
            task_id: self.id.clone(),
            attempt: self.attempt,
            done,
            total: total.into(),
            message: (!message.is_empty()).then_some(message),
        };
        match link.client.progress(&link.worker_id, vec![report]).await {
            Ok(reply) => !reply.accepted.is_empty(),
            Err(e) => {
                tracing::debug!(task = %self.id, error = %e, "progress not reported");
                false
            }
        }
    }

    /// The tasks this one waited for, with their outputs, in submission
    /// (then spawn) order. When the lease carried ids only, they are
    /// fetched from the server.
    pub async fn parents(&self) -> Result<Vec<ParentResult>, brigade_client::ClientError> {
        match (&self.flow.link, self.parents_truncated) {
            (Some(link), true) => link.client.task_parents(&link.worker_id, &self.id).await,
            _ => Ok(self.parents.clone()),
        }
    }
}

/// A task's way back to the server while it runs: what it spawns, and the
/// client its progress reports go through. The default one (tests,
/// handlers run outside a worker) keeps spawns and sends nothing.
#[derive(Clone, Default)]
pub struct TaskFlow {
    pub(crate) spawned: Arc<std::sync::Mutex<Vec<TaskSpec>>>,
    link: Option<Arc<Link>>,
}

struct Link {
    client: brigade_client::Client,
    worker_id: String,
}

impl std::fmt::Debug for TaskFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFlow")
            .field(
                "spawned",
                &self.spawned.lock().map(|v| v.len()).unwrap_or(0),
            )
            .finish()
    }
}

impl TaskFlow {
    /// A flow whose progress reports go to `worker_id` through `client`.
    pub(crate) fn new(client: brigade_client::Client, worker_id: String) -> Self {
        Self {
            spawned: Arc::default(),
            link: Some(Arc::new(Link { client, worker_id })),
        }
    }

    /// The tasks spawned so far, taken.
    pub fn take_spawned(&self) -> Vec<TaskSpec> {
        self.spawned
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// What the runtime's log shipper receives.
#[derive(Debug)]
pub(crate) enum LogMsg {
    /// A line of an attempt.
    Line {
        task_id: String,
        attempt: u32,
        line: String,
    },
    /// Ship everything received so far, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// A cheap, cloneable handle a handler writes its log lines to.
///
/// The worker ships the lines to the server in batches
/// (`GET /v1/tasks/{id}/logs` shows them). An attempt keeps at most
/// [`brigade_api::logs::MAX_LOG_BYTES_PER_ATTEMPT`] bytes; what comes after is
/// dropped, with one final `[truncated]` line. Lines longer than
/// [`brigade_api::logs::MAX_LOG_LINE_BYTES`] are cut. The default handle discards.
#[derive(Clone, Default)]
pub struct TaskLog {
    sink: Option<Arc<LogSink>>,
}

struct LogSink {
    task_id: String,
    attempt: u32,
    tx: tokio::sync::mpsc::UnboundedSender<LogMsg>,
    bytes: AtomicUsize,
    truncated: AtomicBool,
    /// Whether any line was sent (a finished attempt waits for its lines only then).
    wrote: AtomicBool,
}

impl std::fmt::Debug for TaskLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sink {
            Some(s) => write!(f, "TaskLog({}#{})", s.task_id, s.attempt),
            None => f.write_str("TaskLog(discard)"),
        }
    }
}

impl TaskLog {
    /// A log that keeps nothing (tests, handlers run outside a worker).
    pub fn discard() -> Self {
        Self::default()
    }

    /// A log of attempt `attempt` of `task_id`, sent to the runtime's shipper.
    pub(crate) fn new(
        task_id: &str,
        attempt: u32,
        tx: tokio::sync::mpsc::UnboundedSender<LogMsg>,
    ) -> Self {
        Self {
            sink: Some(Arc::new(LogSink {
                task_id: task_id.to_owned(),
                attempt,
                tx,
                bytes: AtomicUsize::new(0),
                truncated: AtomicBool::new(false),
                wrote: AtomicBool::new(false),
            })),
        }
    }

    /// Write one line (several, when it holds newlines).
    pub fn line(&self, text: impl AsRef<str>) {
        let Some(sink) = &self.sink else { return };
        for line in text.as_ref().lines() {
            let mut line = line.trim_end_matches('\r').to_owned();
            if line.len() > MAX_LOG_LINE_BYTES {
                let mut end = MAX_LOG_LINE_BYTES;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                line.truncate(end);
            }
            let before = sink.bytes.fetch_add(line.len(), Ordering::Relaxed);
            if before + line.len() > MAX_LOG_BYTES_PER_ATTEMPT {
                if !sink.truncated.swap(true, Ordering::Relaxed) {
                    sink.send(TRUNCATED.to_owned());
                }
                return;
            }
            sink.send(line);
        }
    }

    /// Whether lines go anywhere (handlers may skip building them otherwise).
    pub fn is_enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Whether any line was written to this log.
    pub(crate) fn wrote_any(&self) -> bool {
        self.sink
            .as_ref()
            .is_some_and(|s| s.wrote.load(Ordering::Relaxed))
    }
}

impl LogSink {
    fn send(&self, line: String) {
        self.wrote.store(true, Ordering::Relaxed);
        let _ = self.tx.send(LogMsg::Line {
            task_id: self.task_id.clone(),
            attempt: self.attempt,
            line,
        });
    }
}

/// Why an attempt failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    /// The error recorded on the task.
    pub error: TaskError,
    /// Whether the server may retry it.
    pub retryable: bool,
}

impl TaskFailure {
    /// A retryable handler error.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            error: TaskError::new(ErrorKind::Handler, message),
            retryable: true,
        }
    }

    /// A handler error that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            error: TaskError::new(ErrorKind::Handler, message),
            retryable: false,
        }
    }

    /// The input does not fit the handler (never retried).
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            error: TaskError::new(ErrorKind::BadInput, message),
            retryable: false,
        }
    }
}

/// Result of one attempt.
pub type TaskOutcome = Result<serde_json::Value, TaskFailure>;

/// A task kind's code.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Run one attempt. Long-running handlers should watch `ctx.cancel`.
    async fn run(&self, ctx: TaskContext) -> TaskOutcome;
}

/// A handler from an async function.
pub struct FnHandler<F>(pub F);

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = TaskOutcome> + Send + 'static,
{
    async fn run(&self, ctx: TaskContext) -> TaskOutcome {
        (self.0)(ctx).await
    }
}

/// Handlers by kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `handler` for `kind` (replacing any earlier one).
    pub fn register(&mut self, kind: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Register an async function for `kind`.
    pub fn register_fn<F, Fut>(&mut self, kind: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = TaskOutcome> + Send + 'static,
    {
        self.register(kind, FnHandler(f))
    }

    /// Register a blocking function for `kind`; it runs on the blocking pool.
    pub fn register_blocking<F>(&mut self, kind: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(TaskContext) -> TaskOutcome + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.register_fn(kind, move |ctx| {
            let f = f.clone();
            async move {
                match tokio::task::spawn_blocking(move || f(ctx)).await {
                    Ok(outcome) => outcome,
                    Err(e) => Err(TaskFailure {
                        error: TaskError::new(
                            ErrorKind::Crash,
                            format!("the handler panicked: {e}"),
                        ),
                        retryable: true,
                    }),
                }
            }
        })
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }

    /// Registered kinds.
    pub fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }
}
