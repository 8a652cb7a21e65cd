//! Durable state of brigade: one [`Store`] trait, two engines.
//!
//! This is the only crate that knows SQL. [`sqlite`] is the embedded default
//! (one file, WAL, a single writer that commits groups of requests together);
//! the PostgreSQL engine lets several servers share one database. Both apply
//! the rules of `brigade-core` inside their transactions, and every state
//! change of a task checks the attempt it belongs to, so a result is recorded
//! exactly once.

mod error;
mod events;
pub mod model;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use brigade_api::{
    Heartbeat, HeartbeatReply, JobView, LeasedTask, Page, QueueView, ResultsReply, TaskResult,
    TaskState, TaskView, WorkerJoin, WorkerView,
};
use brigade_core::NewJob;

pub use error::StoreError;
pub use model::{Changes, DeleteOutcome, Idempotency, JobFilter, RetryOutcome, Submitted};

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything brigade keeps. Times are milliseconds since the Unix epoch, passed in
/// by the caller (one clock, owned by the server).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the database answers.
    async fn ping(&self) -> Result<()>;

    /// Store a validated job and all its tasks in one transaction.
    async fn submit(
        &self,
        owner: &str,
        job: NewJob,
        idem: Option<Idempotency>,
        now: i64,
    ) -> Result<Submitted>;
    /// One job, `None` when unknown.
    async fn job(&self, id: &str) -> Result<Option<JobView>>;
    /// Jobs, newest first.
    async fn jobs(
        &self,
        filter: &JobFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<JobView>>;
    /// A job's tasks in submission order; `None` when the job is unknown.
    async fn job_tasks(
        &self,
        job_id: &str,
        state: Option<TaskState>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Option<Page<TaskView>>>;
    /// The owner of a job (for authorization), `None` when unknown.
    async fn job_owner(&self, id: &str) -> Result<Option<String>>;
    /// Cancel every unfinished task of a job; `None` when unknown.
    async fn cancel_job(&self, id: &str, now: i64) -> Result<Option<Changes>>;
    /// Delete a finished job and its tasks.
    async fn delete_job(&self, id: &str) -> Result<DeleteOutcome>;

    /// One task with its history, `None` when unknown.
    async fn task(&self, id: &str) -> Result<Option<TaskView>>;
    /// Cancel one unfinished task; `None` when unknown.
    async fn cancel_task(&self, id: &str, now: i64) -> Result<Option<Changes>>;
    /// Put a failed or cancelled task back in the queue with a fresh attempt budget.
    async fn retry_task(&self, id: &str) -> Result<RetryOutcome>;

    /// Register a worker.
    async fn join_worker(
        &self,
        owner: &str,
        join: WorkerJoin,
        now: i64,
    ) -> Result<(WorkerView, Changes)>;
    /// One worker, `None` when unknown.
    async fn worker(&self, id: &str) -> Result<Option<WorkerView>>;
    /// The token name that registered a worker (for authorization), `None` when unknown.
    async fn worker_owner(&self, id: &str) -> Result<Option<String>>;
    /// All workers, most recently joined first.
    async fn workers(&self) -> Result<Vec<WorkerView>>;
    /// Hand up to `max` runnable tasks to a worker, leased until `now + ttl`.
    /// `None` when the worker is unknown; an empty list when it may not lease
    /// (draining, left) or nothing matches.
    async fn lease(
        &self,
        worker_id: &str,
        max: u32,
        now: i64,
        ttl: i64,
    ) -> Result<Option<(Vec<LeasedTask>, Changes)>>;
    /// Record a heartbeat: extend the leases of the tasks it names, say which to cancel.
    async fn heartbeat(
        &self,
        worker_id: &str,
        hb: Heartbeat,
        now: i64,
        ttl: i64,
    ) -> Result<Option<HeartbeatReply>>;
    /// Apply a batch of results; each only for the task's current attempt on this worker.
    async fn report(
        &self,
        worker_id: &str,
        results: Vec<TaskResult>,
        now: i64,
    ) -> Result<Option<(ResultsReply, Changes)>>;
    /// A worker leaves: its running tasks go back to the queue at once.
    async fn leave(&self, worker_id: &str, now: i64) -> Result<Option<Changes>>;
    /// Ask a worker to drain.
    async fn drain_worker(&self, worker_id: &str) -> Result<Option<WorkerView>>;

    /// Queues with their counts.
    async fn queues(&self) -> Result<Vec<QueueView>>;
    /// Pause or resume a queue (created if unknown).
    async fn set_queue_paused(&self, name: &str, paused: bool) -> Result<QueueView>;

    /// Move scheduled tasks whose time has come to `queued`; returns how many
    /// and when the next one is due.
    async fn promote_due(&self, now: i64) -> Result<(u64, Option<i64>)>;
    /// Mark silent workers lost and requeue (or fail) tasks whose lease expired.
    async fn reap(&self, now: i64, ttl: i64) -> Result<Changes>;
}

/// Open the store a URL names (`sqlite://path` or `sqlite::memory:`), creating
/// and migrating it as needed.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else {
        Err(StoreError::Url(format!("{url}: expected sqlite://PATH")))
    }
}
