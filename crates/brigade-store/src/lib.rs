//! Durable state of brigade: one [`Store`] trait, two engines.
//!
//! This is the only crate that knows SQL. The SQL is written once, in a
//! shared layer (`sql`) over a small connection trait; [`sqlite`] (the
//! embedded default: one file, WAL, a writer thread that commits groups of
//! requests together) and [`postgres`] (several servers share one database)
//! run it, and differ only where the engines do: the lease, batched writes,
//! locking and notifications. The rules are `brigade-core`'s: the store asks
//! it what a result or a failure does and applies the answer; every state
//! change of a task checks the attempt it belongs to, so a result is recorded
//! exactly once.

mod delegate;
pub(crate) mod error;
mod events;
mod logs;
pub mod model;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;
mod transfer;

use std::sync::Arc;

use async_trait::async_trait;
use brigade_api::ScheduleView;
use brigade_api::{
    Heartbeat, HeartbeatReply, JobView, LeasedTask, LogBatch, LogLine, LogsReply, Page, QueueView,
    ResultsReply, TaskResult, TaskState, TaskView, WorkerJoin, WorkerView,
};
use brigade_core::schedule::NewSchedule;
use brigade_core::{Limits, NewJob};

pub use error::StoreError;
pub use model::{
    Bulk, CallbackOutcome, Changes, DeleteOutcome, DueCallback, HandOff, Idempotency, JobFilter,
    Phase, Pruned, Remote, RetryOutcome, StoredSchedule, Submitted, TaskFilter, Timing,
    TracedResult, TriggerOutcome,
};
pub use transfer::{CopyReport, copy_database};

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything brigade keeps. Times are milliseconds since the Unix epoch, passed in
/// by the caller (one clock, owned by the server).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// After this many attempts in a row that ended `lost` or `crash`, a
    /// task fails as poison (the server's `--poison-after`; 0: never;
    /// [`brigade_core::transition::DEFAULT_POISON_AFTER`] until set).
    fn set_poison_after(&self, after: u32);

    /// The server's clock. Times are still passed in; an engine whose
    /// transactions wait on each other (PostgreSQL) reads it again after a
    /// wait, so that a task leased once another's end freed its slot never
    /// seems to start before that end. Without it, the times passed in
    /// are used as they are.
    fn set_clock(&self, _clock: Arc<dyn brigade_core::Clock>) {}

    /// Whether the database answers.
    async fn ping(&self) -> Result<()>;

    /// Whether any task is queued (in any queue, for any kind): a cheap read
    /// that lets idle dispatchers skip leasing for every waiting worker.
    async fn has_queued(&self) -> Result<bool>;

    /// Store a validated job and all its tasks in one transaction.
    async fn submit(
        &self,
        owner: &str,
        job: NewJob,
        idem: Option<Idempotency>,
        now: i64,
    ) -> Result<Submitted>;
    /// [`Store::submit`], then lease for `waiting` workers in the same
    /// transaction (see [`Submitted::handed`]): a task submitted while a
    /// worker waits goes to it with one commit, not two.
    async fn submit_and_lease(
        &self,
        owner: &str,
        job: NewJob,
        idem: Option<Idempotency>,
        now: i64,
        ttl: i64,
        waiting: Vec<HandOff>,
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
    /// Put a failed or cancelled task back in the queue with a fresh attempt budget
    /// (ready from `now`).
    async fn retry_task(&self, id: &str, now: i64) -> Result<RetryOutcome>;

    /// Tasks across jobs matching `filter`, newest first.
    async fn tasks(
        &self,
        filter: &TaskFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<TaskView>>;
    /// Retry (as [`Store::retry_task`]) up to `max` failed or cancelled tasks
    /// matching `filter`, oldest first, after position `after` (from the start
    /// when `None`), in one transaction. Call again from [`Bulk::next`]: each
    /// task is looked at once per pass, even if it fails again meanwhile.
    async fn retry_tasks(
        &self,
        filter: &TaskFilter,
        after: Option<i64>,
        max: u32,
        now: i64,
    ) -> Result<Bulk>;
    /// Cancel (as [`Store::cancel_task`]) up to `max` unfinished tasks
    /// matching `filter`, oldest first, after position `after`.
    async fn cancel_tasks(
        &self,
        filter: &TaskFilter,
        after: Option<i64>,
        max: u32,
        now: i64,
    ) -> Result<Bulk>;

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
    /// Record a batch of heartbeats in one transaction: each extends the
    /// leases of the tasks it names and is answered with those to cancel and
    /// whether to drain (`None`: unknown worker). Replies in batch order.
    async fn heartbeats(
        &self,
        batch: Vec<(String, Heartbeat)>,
        now: i64,
        ttl: i64,
    ) -> Result<Vec<Option<HeartbeatReply>>>;
    /// Record one heartbeat (a batch of one).
    async fn heartbeat(
        &self,
        worker_id: &str,
        hb: Heartbeat,
        now: i64,
        ttl: i64,
    ) -> Result<Option<HeartbeatReply>> {
        let mut replies = self
            .heartbeats(vec![(worker_id.to_owned(), hb)], now, ttl)
            .await?;
        Ok(replies.pop().flatten())
    }
    /// Apply a batch of results; each only for the task's current attempt on this worker.
    async fn report(
        &self,
        worker_id: &str,
        results: Vec<TaskResult>,
        now: i64,
    ) -> Result<Option<(ResultsReply, Changes)>>;
    /// Apply a batch of results, then lease up to `max` tasks, in one
    /// transaction: a busy worker's results ride on its next lease request.
    /// `None` when the worker is unknown.
    async fn report_and_lease(
        &self,
        worker_id: &str,
        results: Vec<TaskResult>,
        max: u32,
        now: i64,
        ttl: i64,
    ) -> Result<Option<(ResultsReply, Vec<LeasedTask>, Changes)>>;
    /// Store log lines of tasks running on a worker; each batch only for the
    /// task's current attempt on this worker, at most
    /// [`brigade_api::logs::MAX_LOG_BYTES_PER_ATTEMPT`] bytes per attempt (then a
    /// final `[truncated]` line). `None` when the worker is unknown.
    async fn append_logs(
        &self,
        worker_id: &str,
        logs: Vec<LogBatch>,
        now: i64,
    ) -> Result<Option<LogsReply>>;
    /// A task's log lines after position `after` (from the start when `None`),
    /// oldest first, at most `limit`, each with its position (the cursor).
    async fn task_logs(
        &self,
        task_id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, LogLine)>>;
    /// Record progress reports of running tasks, each only for the task's
    /// current attempt on this worker (the rule of results); a
    /// `task.progress` event for each accepted. `None` when the worker is
    /// unknown.
    async fn report_progress(
        &self,
        worker_id: &str,
        reports: Vec<brigade_api::ProgressReport>,
        now: i64,
    ) -> Result<Option<(ResultsReply, Changes)>>;
    /// A page of the parents (what it waits for, with their results, in
    /// submission then spawn order) of a task, after the cursor; `None` when
    /// the task is unknown.
    async fn task_parents(
        &self,
        task_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Option<Page<brigade_api::ParentResult>>>;
    /// A worker leaves: its running tasks go back to the queue at once.
    async fn leave(&self, worker_id: &str, now: i64) -> Result<Option<Changes>>;
    /// Ask a worker to drain.
    async fn drain_worker(&self, worker_id: &str) -> Result<Option<WorkerView>>;

    /// Queues with their counts.
    async fn queues(&self) -> Result<Vec<QueueView>>;
    /// Pause or resume a queue (created if unknown).
    async fn set_queue_paused(&self, name: &str, paused: bool) -> Result<QueueView>;

    /// Set (create or replace) the limit `key` (a key, or a pattern ending
    /// in `*`): tasks parked under its old budget are looked at again.
    async fn set_limit(
        &self,
        key: &str,
        limit: brigade_core::limits::Limit,
        now: i64,
    ) -> Result<brigade_api::LimitView>;
    /// Every limit with what its keys use now.
    async fn limits(&self, now: i64) -> Result<Vec<brigade_api::LimitView>>;
    /// Remove the limit `key`; whether it existed.
    async fn delete_limit(&self, key: &str) -> Result<bool>;

    /// Move scheduled tasks whose time has come to `queued`; returns how many
    /// and when the next one is due.
    async fn promote_due(&self, now: i64) -> Result<(u64, Option<i64>)>;
    /// Mark silent workers lost and requeue (or fail) tasks whose lease expired.
    async fn reap(&self, now: i64, ttl: i64) -> Result<Changes>;

    /// Delete finished jobs whose retention ran out (their own `keep_ms`, else
    /// `default_keep_ms`; `None` keeps them forever) with their tasks, history
    /// and logs: at most `max_tasks` tasks in one short transaction. Call again
    /// while [`Pruned::more`]. SQLite then hands a share of the freed pages
    /// back to the file system.
    async fn prune(&self, now: i64, default_keep_ms: Option<u64>, max_tasks: u32)
    -> Result<Pruned>;
    /// Store a validated schedule.
    async fn create_schedule(
        &self,
        owner: &str,
        schedule: NewSchedule,
        now: i64,
    ) -> Result<ScheduleView>;
    /// One schedule as stored, `None` when unknown.
    async fn schedule(&self, id: &str) -> Result<Option<StoredSchedule>>;
    /// Schedules, oldest first (of one owner when given).
    async fn schedules(
        &self,
        owner: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<ScheduleView>>;
    /// Write a revised schedule over the one read with `next_fire_at ==
    /// read_next` (ms); `None` when it is gone or a fire moved it meanwhile.
    async fn replace_schedule(
        &self,
        id: &str,
        schedule: NewSchedule,
        read_next: Option<i64>,
    ) -> Result<Option<ScheduleView>>;
    /// Delete a schedule (its jobs stay); whether it existed.
    async fn delete_schedule(&self, id: &str) -> Result<bool>;
    /// Fire a schedule now, under its overlap policy.
    async fn trigger_schedule(&self, id: &str, limits: Limits, now: i64) -> Result<TriggerOutcome>;
    /// Fire every due schedule, each fire exactly once however many servers
    /// call this at once; what changed and when the next schedule is due.
    async fn fire_schedules(&self, limits: Limits, now: i64) -> Result<(Changes, Option<i64>)>;

    /// Claim up to `max` callback deliveries due at `now` for `claimer`
    /// until `now + claim_ms`: one server at a time works on a delivery
    /// (rows another transaction holds are skipped, claimed rows are left
    /// alone until the claim runs out).
    async fn claim_callbacks(
        &self,
        claimer: &str,
        now: i64,
        claim_ms: i64,
        max: u32,
    ) -> Result<Vec<DueCallback>>;
    /// Record an attempt of a delivery and what comes next for it.
    async fn record_callback(&self, outcome: CallbackOutcome) -> Result<()>;
    /// The delivery attempts of a job's callbacks, oldest first; `None`
    /// when the job does not exist.
    async fn callback_attempts(
        &self,
        job_id: &str,
    ) -> Result<Option<Vec<brigade_api::CallbackAttempt>>>;

    /// Changes other servers made to the shared database (PostgreSQL); `None`
    /// for engines with one server. Each call subscribes anew; a receiver that
    /// lags behind gets `RecvError::Lagged` and should re-check everything.
    fn remote(&self) -> Option<tokio::sync::broadcast::Receiver<Remote>> {
        None
    }
}

/// Whether `url` names a PostgreSQL database.
fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Open the store a URL names (`sqlite://path`, `sqlite::memory:`,
/// `postgres://…` or `postgresql://…`), creating and migrating it as needed.
///
/// A PostgreSQL database migrated by a newer brigade is refused with
/// [`StoreError::Schema`].
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if is_postgres(url) {
        Ok(Arc::new(postgres::PostgresStore::open(url).await?))
    } else {
        Err(StoreError::Url(format!(
            "{url}: expected sqlite://PATH or postgres://USER@HOST/DATABASE"
        )))
    }
}

/// Apply pending migrations to the database a URL names, without opening a store.
pub async fn migrate(url: &str) -> Result<()> {
    if url.starts_with("sqlite:") {
        sqlite::migrate(url).await
    } else if is_postgres(url) {
        postgres::migrate(url).await
    } else {
        Err(StoreError::Url(format!(
            "{url}: expected sqlite://PATH or postgres://USER@HOST/DATABASE"
        )))
    }
}
