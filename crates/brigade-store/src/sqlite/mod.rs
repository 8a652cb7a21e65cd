//! The SQLite engine: one file, WAL, synchronous commits, one group-committing writer.

mod read;
mod rows;
mod write;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use brigade_api::{
    Heartbeat, HeartbeatReply, JobView, LeasedTask, LogBatch, LogLine, LogsReply, Page, QueueView,
    ResultsReply, TaskResult, TaskState, TaskView, WorkerJoin, WorkerView,
};
use brigade_core::NewJob;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use crate::model::{Changes, DeleteOutcome, Idempotency, JobFilter, RetryOutcome, Submitted};
use crate::{Result, Store, StoreError};
use writer::Writer;

/// Migrations of the SQLite engine, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Apply pending migrations to the SQLite database at `url` (created if missing).
pub async fn migrate(url: &str) -> Result<()> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Url(format!("{url}: {e}")))?
        .create_if_missing(true);
    let mut conn = options.connect().await?;
    let result = MIGRATOR
        .run(&mut conn)
        .await
        .map_err(crate::error::schema_error_for(&MIGRATOR));
    let _ = conn.close().await;
    result
}

/// Brigade's state in one SQLite file.
pub struct SqliteStore {
    writer: Writer,
    read: SqlitePool,
}

impl SqliteStore {
    /// Open (creating and migrating when needed) the database at `url`.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(format!("{url}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A 201 means the fsync happened.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // A modest page cache: SQLite scans the writer's whole cache at
            // every commit (after a b-tree rebalance moves a page to the lock
            // page's number) and a reader drops its cache whenever the file
            // changed, so a large cache costs CPU on every commit and buys
            // little; the OS page cache holds the file anyway.
            .pragma("cache_size", "-8192")
            .pragma("temp_store", "memory")
            .log_statements(tracing::log::LevelFilter::Trace);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let mut conn = options.connect().await?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(crate::error::schema_error_for(&MIGRATOR))?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.clone().read_only(true))
            .await?;
        Ok(Self {
            writer: Writer::start(conn),
            read,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        let mut c = self.read.acquire().await?;
        c.ping().await?;
        Ok(())
    }

    async fn has_queued(&self) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM tasks INDEXED BY tasks_ready WHERE state = 'queued' LIMIT 1",
        )
        .fetch_optional(&mut *self.read.acquire().await?)
        .await?;
        Ok(found.is_some())
    }

    async fn submit(
        &self,
        owner: &str,
        job: NewJob,
        idem: Option<Idempotency>,
        now: i64,
    ) -> Result<Submitted> {
        let owner = owner.to_owned();
        self.writer
            .write(move |c| Box::pin(write::submit(c, owner, job, idem, now)))
            .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>> {
        read::job(&mut *self.read.acquire().await?, id).await
    }

    async fn jobs(
        &self,
        filter: &JobFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<JobView>> {
        read::jobs(&mut *self.read.acquire().await?, filter, limit, cursor).await
    }

    async fn job_tasks(
        &self,
        job_id: &str,
        state: Option<TaskState>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Option<Page<TaskView>>> {
        read::job_tasks(
            &mut *self.read.acquire().await?,
            job_id,
            state,
            limit,
            cursor,
        )
        .await
    }

    async fn job_owner(&self, id: &str) -> Result<Option<String>> {
        read::job_owner(&mut *self.read.acquire().await?, id).await
    }

    async fn cancel_job(&self, id: &str, now: i64) -> Result<Option<Changes>> {
        let id = id.to_owned();
        self.writer
            .write(move |c| Box::pin(write::cancel_job(c, id, now)))
            .await
    }

    async fn delete_job(&self, id: &str) -> Result<DeleteOutcome> {
        let id = id.to_owned();
        self.writer
            .write(move |c| Box::pin(write::delete_job(c, id)))
            .await
    }

    async fn task(&self, id: &str) -> Result<Option<TaskView>> {
        read::task(&mut *self.read.acquire().await?, id).await
    }

    async fn cancel_task(&self, id: &str, now: i64) -> Result<Option<Changes>> {
        let id = id.to_owned();
        self.writer
            .write(move |c| Box::pin(write::cancel_task(c, id, now)))
            .await
    }

    async fn retry_task(&self, id: &str, now: i64) -> Result<RetryOutcome> {
        let id = id.to_owned();
        self.writer
            .write(move |c| Box::pin(write::retry_task(c, id, now)))
            .await
    }

    async fn join_worker(
        &self,
        owner: &str,
        join: WorkerJoin,
        now: i64,
    ) -> Result<(WorkerView, Changes)> {
        let owner = owner.to_owned();
        self.writer
            .write(move |c| Box::pin(write::join_worker(c, owner, join, now)))
            .await
    }

    async fn worker(&self, id: &str) -> Result<Option<WorkerView>> {
        read::worker(&mut *self.read.acquire().await?, id).await
    }

    async fn worker_owner(&self, id: &str) -> Result<Option<String>> {
        read::worker_owner(&mut *self.read.acquire().await?, id).await
    }

    async fn workers(&self) -> Result<Vec<WorkerView>> {
        read::workers(&mut *self.read.acquire().await?).await
    }

    async fn lease(
        &self,
        worker_id: &str,
        max: u32,
        now: i64,
        ttl: i64,
    ) -> Result<Option<(Vec<LeasedTask>, Changes)>> {
        let id = worker_id.to_owned();
        self.writer
            .write(move |c| Box::pin(write::lease(c, id, max, now, ttl)))
            .await
    }

    async fn heartbeats(
        &self,
        batch: Vec<(String, Heartbeat)>,
        now: i64,
        ttl: i64,
    ) -> Result<Vec<Option<HeartbeatReply>>> {
        self.writer
            .write(move |c| Box::pin(write::heartbeats(c, batch, now, ttl)))
            .await
    }

    async fn report(
        &self,
        worker_id: &str,
        results: Vec<TaskResult>,
        now: i64,
    ) -> Result<Option<(ResultsReply, Changes)>> {
        let id = worker_id.to_owned();
        self.writer
            .write(move |c| Box::pin(write::report(c, id, results, now)))
            .await
    }

    async fn append_logs(
        &self,
        worker_id: &str,
        logs: Vec<LogBatch>,
        now: i64,
    ) -> Result<Option<LogsReply>> {
        let id = worker_id.to_owned();
        self.writer
            .write(move |c| Box::pin(write::append_logs(c, id, logs, now)))
            .await
    }

    async fn task_logs(
        &self,
        task_id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, LogLine)>> {
        read::task_logs(&mut *self.read.acquire().await?, task_id, after, limit).await
    }

    async fn leave(&self, worker_id: &str, now: i64) -> Result<Option<Changes>> {
        let id = worker_id.to_owned();
        self.writer
            .write(move |c| Box::pin(write::leave(c, id, now)))
            .await
    }

    async fn drain_worker(&self, worker_id: &str) -> Result<Option<WorkerView>> {
        let id = worker_id.to_owned();
        self.writer
            .write(move |c| Box::pin(write::drain_worker(c, id)))
            .await
    }

    async fn queues(&self) -> Result<Vec<QueueView>> {
        read::queues(&mut *self.read.acquire().await?).await
    }

    async fn set_queue_paused(&self, name: &str, paused: bool) -> Result<QueueView> {
        let name = name.to_owned();
        self.writer
            .write(move |c| Box::pin(write::set_queue_paused(c, name, paused)))
            .await
    }

    async fn promote_due(&self, now: i64) -> Result<(u64, Option<i64>)> {
        self.writer
            .write(move |c| Box::pin(write::promote_due(c, now)))
            .await
    }

    async fn reap(&self, now: i64, ttl: i64) -> Result<Changes> {
        self.writer
            .write(move |c| Box::pin(write::reap(c, now, ttl)))
            .await
    }
}
