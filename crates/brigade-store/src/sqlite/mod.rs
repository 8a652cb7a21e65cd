//! The SQLite engine: one file, WAL, synchronous commits, one writer thread
//! that commits groups of requests together, and a few read connections.
//!
//! The SQL is the shared layer's ([`crate::sql`]); this engine runs it on
//! rusqlite connections, each call on the thread that owns the connection.

mod conn;
mod migrate;
mod space;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use brigade_api::ScheduleView;
use brigade_api::{
    Heartbeat, HeartbeatReply, JobView, LeasedTask, LogBatch, LogLine, LogsReply, Page, QueueView,
    ResultsReply, TaskResult, TaskState, TaskView, WorkerJoin, WorkerView,
};
use brigade_core::schedule::NewSchedule;
use brigade_core::{Limits, NewJob};
use futures::FutureExt;
use rusqlite::{Connection, OpenFlags};

use crate::model::{
    Bulk, Changes, DeleteOutcome, HandOff, Idempotency, JobFilter, Pruned, RetryOutcome,
    StoredSchedule, Submitted, TaskFilter, TriggerOutcome,
};
use crate::sql::{read, schedules, write};
use crate::{Result, Store, StoreError};
pub(crate) use conn::Lite;
use writer::Writer;

/// Most read connections kept open.
const READERS: usize = 4;

/// Where a `sqlite:` URL points.
#[derive(Debug, Clone)]
struct Target {
    /// A file path, or a shared-cache URI for an in-memory database.
    path: String,
    memory: bool,
}

fn target(url: &str) -> Result<Target> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Url(format!("{url}: expected sqlite://PATH")))?;
    // Options after `?` (sqlx's `mode=rwc` and the like) mean nothing here.
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(StoreError::Url(format!("{url}: no file named")));
    }
    if path == ":memory:" {
        // Readers must see the writer's database: one shared in-memory cache.
        return Ok(Target {
            path: format!(
                "file:brigade-{}?mode=memory&cache=shared",
                brigade_core::ids::new_id()
            ),
            memory: true,
        });
    }
    Ok(Target {
        path: path.to_owned(),
        memory: false,
    })
}

/// Open a connection with the settings every brigade connection uses.
fn connect(t: &Target, read_only: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    flags |= if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    };
    let conn = Connection::open_with_flags(&t.path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Statements are prepared once per connection; the hot path has a few
    // dozen, the reads some more.
    conn.set_prepared_statement_cache_capacity(256);
    // A modest page cache: SQLite scans the writer's whole cache at every
    // commit (after a b-tree rebalance moves a page to the lock page's
    // number) and a reader drops its cache whenever the file changed, so a
    // large cache costs CPU on every commit and buys little; the OS page
    // cache holds the file anyway.
    conn.execute_batch("PRAGMA cache_size = -8192; PRAGMA temp_store = memory;")?;
    if !read_only {
        // Before the first table, or never (see `space`).
        space::prepare_new(&conn)?;
    }
    if !t.memory && !read_only {
        // A 201 means the fsync happened.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    }
    Ok(conn)
}

fn create_dir_for(t: &Target) -> Result<()> {
    if t.memory {
        return Ok(());
    }
    if let Some(dir) = std::path::Path::new(&t.path).parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
    }
    Ok(())
}

/// A plain connection to the database file at `url` (not in memory), for
/// whole-database work such as copying it.
pub(crate) fn raw_connection(url: &str, read_only: bool) -> Result<Connection> {
    let t = target(url)?;
    if t.memory {
        return Err(StoreError::Url(format!(
            "{url}: an in-memory database cannot be copied"
        )));
    }
    connect(&t, read_only)
}

/// Apply pending migrations to the SQLite database at `url` (created if missing).
pub async fn migrate(url: &str) -> Result<()> {
    let t = target(url)?;
    tokio::task::spawn_blocking(move || {
        create_dir_for(&t)?;
        let mut conn = connect(&t, false)?;
        migrate::run(&mut conn)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("migration thread: {e}")))?
}

/// Copy the SQLite database at `url` into the new file `out` while servers
/// keep using it: `VACUUM INTO` reads one snapshot (a WAL read transaction,
/// which no writer waits for), so the copy holds every transaction committed
/// before it started and none of those after. The copy is written next to
/// `out` and renamed into place once synced, so `out` is never half a
/// database. Returns its size in bytes.
pub async fn backup(url: &str, out: &std::path::Path) -> Result<u64> {
    let t = target(url)?;
    if t.memory {
        return Err(StoreError::Url(format!(
            "{url}: an in-memory database has no file to back up"
        )));
    }
    if !std::path::Path::new(&t.path).exists() {
        return Err(StoreError::Url(format!("{url}: no such database file")));
    }
    let out = out.to_owned();
    tokio::task::spawn_blocking(move || {
        let io = |what: &str, e: std::io::Error| StoreError::Unavailable(format!("{what}: {e}"));
        if out.exists() {
            return Err(StoreError::Refused(format!(
                "{}: already exists; a backup never overwrites a file",
                out.display()
            )));
        }
        let mut partial = out.clone().into_os_string();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let _ = std::fs::remove_file(&partial);
        let conn = connect(&t, true)?;
        let dest = partial
            .to_str()
            .ok_or_else(|| StoreError::Url(format!("{}: not UTF-8", partial.display())))?;
        conn.execute("VACUUM INTO ?1", [dest])?;
        drop(conn);
        let file = std::fs::File::open(&partial).map_err(|e| io("opening the copy", e))?;
        file.sync_all().map_err(|e| io("syncing the copy", e))?;
        let size = file.metadata().map_err(|e| io("the copy", e))?.len();
        std::fs::rename(&partial, &out).map_err(|e| io("renaming the copy", e))?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(size)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("backup thread: {e}")))?
}

/// Rebuild the SQLite database at `url` so that retention's freed pages can
/// be given back to the file system (a database made before brigade chose
/// incremental auto-vacuum only reuses them). One `VACUUM`: run it with the
/// server stopped. Says whether the file was rebuilt.
pub async fn vacuum(url: &str) -> Result<bool> {
    let t = target(url)?;
    tokio::task::spawn_blocking(move || {
        let mut conn = connect(&t, false)?;
        migrate::run(&mut conn)?;
        space::convert(&conn)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("vacuum thread: {e}")))?
}

/// Run a shared-layer future that completes at once (every statement of a
/// rusqlite [`Lite`] connection runs when it is called).
fn at_once<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    f.now_or_never().unwrap_or_else(|| {
        Err(StoreError::Unavailable(
            "a SQLite statement waited (a bug: they run at once)".into(),
        ))
    })
}

/// Read connections, used from the blocking pool.
struct Readers {
    target: Target,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Lite<'_>) -> Result<T> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = me.idle.lock().ok().and_then(|mut v| v.pop());
            let mut conn = match taken {
                Some(c) => c,
                None => connect(&me.target, true)?,
            };
            let result = f(&mut Lite(&mut conn));
            if let Ok(mut idle) = me.idle.lock()
                && idle.len() < READERS
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read thread: {e}")))?
    }
}

/// Brigade's state in one SQLite file.
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
    /// Holds an in-memory database open while the store lives (in a Mutex
    /// only so the store is Sync; nobody locks it).
    _keep: Option<Mutex<Connection>>,
    /// `--poison-after` (see [`Store::set_poison_after`]).
    poison_after: std::sync::atomic::AtomicU32,
}

impl SqliteStore {
    /// Open (creating and migrating when needed) the database at `url`.
    pub async fn open(url: &str) -> Result<Self> {
        let t = target(url)?;
        let (writer_conn, keep) = {
            let t = t.clone();
            tokio::task::spawn_blocking(move || -> Result<(Connection, Option<Connection>)> {
                create_dir_for(&t)?;
                let keep = if t.memory {
                    Some(connect(&t, false)?)
                } else {
                    None
                };
                let mut conn = connect(&t, false)?;
                migrate::run(&mut conn)?;
                if !t.memory && !space::incremental(&conn)? {
                    tracing::info!(
                        "{}: made before incremental auto-vacuum; pruned space is reused but the \
                         file will not shrink until `brigade migrate --vacuum` (server stopped)",
                        t.path
                    );
                }
                Ok((conn, keep))
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("open thread: {e}")))??
        };
        Ok(Self {
            writer: Writer::start(writer_conn)?,
            readers: Arc::new(Readers {
                target: t,
                idle: Mutex::new(Vec::new()),
            }),
            _keep: keep.map(Mutex::new),
            poison_after: std::sync::atomic::AtomicU32::new(
                brigade_core::transition::DEFAULT_POISON_AFTER,
            ),
        })
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Lite<'_>) -> Result<T> + Send + 'static,
    {
        self.writer.write(move |conn| f(&mut Lite(conn))).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn set_poison_after(&self, after: u32) {
        self.poison_after
            .store(after, std::sync::atomic::Ordering::Relaxed);
    }

    async fn ping(&self) -> Result<()> {
        self.readers
            .read(|c| {
                c.0.query_row("SELECT 1", [], |_| Ok(()))?;
                Ok(())
            })
            .await
    }

    async fn has_queued(&self) -> Result<bool> {
        self.readers.read(|c| at_once(read::has_queued(c))).await
    }

    async fn submit(
        &self,
        owner: &str,
        job: NewJob,
        idem: Option<Idempotency>,
        now: i64,
    ) -> Result<Submitted> {
        let owner = owner.to_owned();
        self.write(move |c| at_once(write::submit(c, &owner, &job, idem.as_ref(), now)))
            .await
    }

    async fn submit_and_lease(
        &self,
        owner: &str,
        job: NewJob,
        idem: Option<Idempotency>,
        now: i64,
        ttl: i64,
        waiting: Vec<HandOff>,
    ) -> Result<Submitted> {
        let owner = owner.to_owned();
        self.write(move |c| {
            at_once(write::submit_and_lease(
                c,
                &owner,
                &job,
                idem.as_ref(),
                now,
                ttl,
                &waiting,
            ))
        })
        .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>> {
        let id = id.to_owned();
        self.readers.read(move |c| at_once(read::job(c, &id))).await
    }

    async fn jobs(
        &self,
        filter: &JobFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<JobView>> {
        let filter = filter.clone();
        let cursor = cursor.map(str::to_owned);
        self.readers
            .read(move |c| at_once(read::jobs(c, &filter, limit, cursor.as_deref())))
            .await
    }

    async fn job_tasks(
        &self,
        job_id: &str,
        state: Option<TaskState>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Option<Page<TaskView>>> {
        let id = job_id.to_owned();
        let cursor = cursor.map(str::to_owned);
        self.readers
            .read(move |c| at_once(read::job_tasks(c, &id, state, limit, cursor.as_deref())))
            .await
    }

    async fn job_owner(&self, id: &str) -> Result<Option<String>> {
        let id = id.to_owned();
        self.readers
            .read(move |c| at_once(read::job_owner(c, &id)))
            .await
    }

    async fn cancel_job(&self, id: &str, now: i64) -> Result<Option<Changes>> {
        let id = id.to_owned();
        self.write(move |c| at_once(write::cancel_job(c, &id, now)))
            .await
    }

    async fn delete_job(&self, id: &str) -> Result<DeleteOutcome> {
        let id = id.to_owned();
        self.write(move |c| at_once(write::delete_job(c, &id)))
            .await
    }

    async fn task(&self, id: &str) -> Result<Option<TaskView>> {
        let id = id.to_owned();
        self.readers
            .read(move |c| at_once(read::task(c, &id)))
            .await
    }

    async fn cancel_task(&self, id: &str, now: i64) -> Result<Option<Changes>> {
        let id = id.to_owned();
        self.write(move |c| at_once(write::cancel_task(c, &id, now)))
            .await
    }

    async fn retry_task(&self, id: &str, now: i64) -> Result<RetryOutcome> {
        let id = id.to_owned();
        self.write(move |c| at_once(write::retry_task(c, &id, now)))
            .await
    }

    async fn tasks(
        &self,
        filter: &TaskFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<TaskView>> {
        let filter = filter.clone();
        let cursor = cursor.map(str::to_owned);
        self.readers
            .read(move |c| at_once(read::tasks(c, &filter, limit, cursor.as_deref())))
            .await
    }

    async fn retry_tasks(
        &self,
        filter: &TaskFilter,
        after: Option<i64>,
        max: u32,
        now: i64,
    ) -> Result<Bulk> {
        let filter = filter.clone();
        self.write(move |c| at_once(write::retry_tasks(c, &filter, after, max, now)))
            .await
    }

    async fn cancel_tasks(
        &self,
        filter: &TaskFilter,
        after: Option<i64>,
        max: u32,
        now: i64,
    ) -> Result<Bulk> {
        let filter = filter.clone();
        self.write(move |c| at_once(write::cancel_tasks(c, &filter, after, max, now)))
            .await
    }

    async fn join_worker(
        &self,
        owner: &str,
        join: WorkerJoin,
        now: i64,
    ) -> Result<(WorkerView, Changes)> {
        let owner = owner.to_owned();
        self.write(move |c| at_once(write::join_worker(c, &owner, &join, now)))
            .await
    }

    async fn worker(&self, id: &str) -> Result<Option<WorkerView>> {
        let id = id.to_owned();
        self.readers
            .read(move |c| at_once(read::worker(c, &id)))
            .await
    }

    async fn worker_owner(&self, id: &str) -> Result<Option<String>> {
        let id = id.to_owned();
        self.readers
            .read(move |c| at_once(read::worker_owner(c, &id)))
            .await
    }

    async fn workers(&self) -> Result<Vec<WorkerView>> {
        self.readers.read(|c| at_once(read::workers(c))).await
    }

    async fn lease(
        &self,
        worker_id: &str,
        max: u32,
        now: i64,
        ttl: i64,
    ) -> Result<Option<(Vec<LeasedTask>, Changes)>> {
        let id = worker_id.to_owned();
        self.write(move |c| at_once(write::lease(c, &id, max, now, ttl)))
            .await
    }

    async fn heartbeats(
        &self,
        batch: Vec<(String, Heartbeat)>,
        now: i64,
        ttl: i64,
    ) -> Result<Vec<Option<HeartbeatReply>>> {
        self.write(move |c| at_once(write::heartbeats(c, batch, now, ttl)))
            .await
    }

    async fn report(
        &self,
        worker_id: &str,
        results: Vec<TaskResult>,
        now: i64,
    ) -> Result<Option<(ResultsReply, Changes)>> {
        let id = worker_id.to_owned();
        let poison = self.poison_after.load(std::sync::atomic::Ordering::Relaxed);
        self.write(move |c| at_once(write::report(c, &id, &results, now, poison)))
            .await
    }

    async fn report_and_lease(
        &self,
        worker_id: &str,
        results: Vec<TaskResult>,
        max: u32,
        now: i64,
        ttl: i64,
    ) -> Result<Option<(ResultsReply, Vec<LeasedTask>, Changes)>> {
        let id = worker_id.to_owned();
        let poison = self.poison_after.load(std::sync::atomic::Ordering::Relaxed);
        self.write(move |c| {
            at_once(write::report_and_lease(
                c, &id, &results, max, now, ttl, poison,
            ))
        })
        .await
    }

    async fn append_logs(
        &self,
        worker_id: &str,
        logs: Vec<LogBatch>,
        now: i64,
    ) -> Result<Option<LogsReply>> {
        let id = worker_id.to_owned();
        self.write(move |c| at_once(write::append_logs(c, &id, &logs, now)))
            .await
    }

    async fn task_logs(
        &self,
        task_id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, LogLine)>> {
        let id = task_id.to_owned();
        self.readers
            .read(move |c| at_once(read::task_logs(c, &id, after, limit)))
            .await
    }

    async fn report_progress(
        &self,
        worker_id: &str,
        reports: Vec<brigade_api::ProgressReport>,
        now: i64,
    ) -> Result<Option<(ResultsReply, Changes)>> {
        let id = worker_id.to_owned();
        self.write(move |c| at_once(write::report_progress(c, &id, &reports, now)))
            .await
    }

    async fn task_parents(
        &self,
        task_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Option<Page<brigade_api::ParentResult>>> {
        let id = task_id.to_owned();
        let after = crate::rows::parse_cursor(cursor)?;
        self.readers
            .read(move |c| {
                Ok(
                    at_once(crate::sql::graph::parents_page(c, &id, after, limit))?
                        .map(|(items, next_cursor)| Page { items, next_cursor }),
                )
            })
            .await
    }

    async fn leave(&self, worker_id: &str, now: i64) -> Result<Option<Changes>> {
        let id = worker_id.to_owned();
        self.write(move |c| at_once(write::leave(c, &id, now)))
            .await
    }

    async fn drain_worker(&self, worker_id: &str) -> Result<Option<WorkerView>> {
        let id = worker_id.to_owned();
        self.write(move |c| at_once(write::drain_worker(c, &id)))
            .await
    }

    async fn queues(&self) -> Result<Vec<QueueView>> {
        self.readers.read(|c| at_once(read::queues(c))).await
    }

    async fn set_queue_paused(&self, name: &str, paused: bool) -> Result<QueueView> {
        let name = name.to_owned();
        self.write(move |c| at_once(write::set_queue_paused(c, &name, paused)))
            .await
    }

    async fn set_limit(
        &self,
        key: &str,
        limit: brigade_core::limits::Limit,
        now: i64,
    ) -> Result<brigade_api::LimitView> {
        let key = key.to_owned();
        self.write(move |c| at_once(crate::sql::limits::set(c, &key, limit, now)))
            .await
    }

    async fn limits(&self, now: i64) -> Result<Vec<brigade_api::LimitView>> {
        self.readers
            .read(move |c| at_once(crate::sql::limits::views(c, now)))
            .await
    }

    async fn delete_limit(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.write(move |c| at_once(crate::sql::limits::delete(c, &key)))
            .await
    }

    async fn promote_due(&self, now: i64) -> Result<(u64, Option<i64>)> {
        self.write(move |c| at_once(write::promote_due(c, now)))
            .await
    }

    async fn reap(&self, now: i64, ttl: i64) -> Result<Changes> {
        let poison = self.poison_after.load(std::sync::atomic::Ordering::Relaxed);
        self.write(move |c| at_once(write::reap(c, now, ttl, poison)))
            .await
    }

    async fn prune(
        &self,
        now: i64,
        default_keep_ms: Option<u64>,
        max_tasks: u32,
    ) -> Result<Pruned> {
        let pruned = self
            .write(move |c| at_once(write::prune(c, now, default_keep_ms, max_tasks)))
            .await?;
        if !pruned.is_empty() {
            // Its own small transaction, so the prune itself stays short.
            self.writer.write(space::give_back).await?;
        }
        Ok(pruned)
    }

    async fn create_schedule(
        &self,
        owner: &str,
        schedule: NewSchedule,
        now: i64,
    ) -> Result<ScheduleView> {
        let owner = owner.to_owned();
        self.write(move |c| at_once(schedules::create(c, &owner, &schedule, now)))
            .await
    }

    async fn schedule(&self, id: &str) -> Result<Option<StoredSchedule>> {
        let id = id.to_owned();
        self.readers
            .read(move |c| at_once(schedules::get(c, &id)))
            .await
    }

    async fn schedules(
        &self,
        owner: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<ScheduleView>> {
        let owner = owner.map(str::to_owned);
        let cursor = cursor.map(str::to_owned);
        self.readers
            .read(move |c| {
                at_once(schedules::list(
                    c,
                    owner.as_deref(),
                    limit,
                    cursor.as_deref(),
                ))
            })
            .await
    }

    async fn replace_schedule(
        &self,
        id: &str,
        schedule: NewSchedule,
        read_next: Option<i64>,
    ) -> Result<Option<ScheduleView>> {
        let id = id.to_owned();
        self.write(move |c| at_once(schedules::replace(c, &id, &schedule, read_next)))
            .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| at_once(schedules::delete(c, &id)))
            .await
    }

    async fn trigger_schedule(&self, id: &str, limits: Limits, now: i64) -> Result<TriggerOutcome> {
        let id = id.to_owned();
        self.write(move |c| at_once(schedules::trigger(c, &id, &limits, now)))
            .await
    }

    async fn fire_schedules(&self, limits: Limits, now: i64) -> Result<(Changes, Option<i64>)> {
        self.write(move |c| at_once(schedules::fire_due(c, &limits, now)))
            .await
    }

    async fn claim_callbacks(
        &self,
        claimer: &str,
        now: i64,
        claim_ms: i64,
        max: u32,
    ) -> Result<Vec<crate::DueCallback>> {
        let claimer = claimer.to_owned();
        self.write(move |c| {
            at_once(crate::sql::callbacks::claim(
                c, &claimer, now, claim_ms, max,
            ))
        })
        .await
    }

    async fn record_callback(&self, outcome: crate::CallbackOutcome) -> Result<()> {
        self.write(move |c| at_once(crate::sql::callbacks::record(c, &outcome)))
            .await
    }

    async fn callback_attempts(
        &self,
        job_id: &str,
    ) -> Result<Option<Vec<brigade_api::CallbackAttempt>>> {
        let id = job_id.to_owned();
        self.readers
            .read(move |c| at_once(crate::sql::callbacks::attempts(c, &id)))
            .await
    }
}
