//! The PostgreSQL engine: several brigade servers share one database.
//!
//! Every write is one transaction on a pooled connection (no single-writer
//! funnel: PostgreSQL handles concurrent writers). Leasing picks rows with
//! `FOR UPDATE SKIP LOCKED`, so servers leasing at once never hand out the same
//! task and never wait for each other; results lock the rows they apply to and
//! re-check attempt, worker and state exactly like the SQLite engine. A write
//! that fails on a deadlock or serialization conflict is retried from the start.
//!
//! Changes made through one server reach the others by `LISTEN`/`NOTIFY`
//! (see [`notify`] and [`Store::remote`]).

mod conn;
mod notify;

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use brigade_api::QueueView;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::model::{Changes, Pruned, Remote};
use crate::sql::write;
use crate::{Result, StoreError};
pub(crate) use conn::Pg;

/// Migrations of the PostgreSQL engine, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Key of the advisory lock held while checking and applying migrations
/// ("brigade" in ASCII), so servers starting together take turns.
const MIGRATION_LOCK: i64 = 0x0062_7269_6761_6465;

/// How often the reaper looks for stranded jobs (see `reap`).
const STRANDED_SWEEP_MS: i64 = 60_000;

/// How many times a write is retried after a deadlock or serialization failure.
const MAX_RETRIES: u32 = 5;

/// Options of [`PostgresStore::connect`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Apply pending migrations (default). When off, the schema must already be
    /// exactly this binary's.
    pub migrate: bool,
    /// Connections in the pool (one more is held for notifications).
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            migrate: true,
            max_connections: 16,
        }
    }
}

/// Brigade's state in a PostgreSQL database, possibly shared by several servers.
pub struct PostgresStore {
    pool: PgPool,
    /// This server's random id, to recognise its own notifications.
    origin: String,
    remote: broadcast::Sender<Remote>,
    listener: JoinHandle<()>,
    /// When the reaper last looked for stranded jobs (ms; see `reap`).
    last_sweep: AtomicI64,
    /// `--poison-after` (see [`Store::set_poison_after`]).
    poison_after: std::sync::atomic::AtomicU32,
    /// The server's clock (see [`Store::set_clock`]).
    clock: std::sync::OnceLock<std::sync::Arc<dyn brigade_core::Clock>>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Whether an error is a conflict worth retrying the whole transaction for.
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Db(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// Run `$body` (an expression using `$conn: &mut PgConnection`) in a
/// transaction; `$changes` maps its value to the changes to announce to the
/// other servers. Deadlocks and serialization failures are retried.
macro_rules! write_tx {
    ($store:expr, |$conn:ident| $body:expr, |$value:ident| $changes:expr) => {{
        let store: &PostgresStore = $store;
        let mut tries = 0u32;
        loop {
            let result = async {
                let mut tx = store.pool.begin().await?;
                let value = {
                    let mut pg = conn::Pg(&mut *tx, store.clock.get().map(|c| &**c));
                    let $conn = &mut pg;
                    $body.await?
                };
                {
                    let $value = &value;
                    let changes: Option<&Changes> = $changes;
                    if let Some(changes) = changes {
                        notify::send(&mut tx, &store.origin, changes).await?;
                    }
                }
                tx.commit().await?;
                Ok::<_, StoreError>(value)
            }
            .await;
            match result {
                Err(e) if tries < MAX_RETRIES && retryable(&e) => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "retrying a conflicting transaction");
                    tokio::time::sleep(Duration::from_millis(u64::from(tries) * 5)).await;
                }
                other => break other,
            }
        }
    }};
}

/// Options for a URL, with statement logging at trace level.
fn connect_options(url: &str) -> Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Url(format!("{url}: {e}")))?
        .application_name("brigade")
        // A queue table's hot indexes fill with entries of rows that just left
        // the state they index. Plain index scans mark those entries dead as
        // they pass them, so the next lease skips them; bitmap scans never do,
        // and the planner picks them on stale statistics, making every lease
        // walk all the tasks ever leased since the last vacuum.
        //
        // Plans are made for each execution's real arrays: a generic plan of a
        // join against `unnest($n)` guesses its size and may scan a whole table.
        .options([
            ("enable_bitmapscan", "off"),
            ("plan_cache_mode", "force_custom_plan"),
        ])
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// The newest migration this binary knows.
fn known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest migration applied to the database, 0 when none.
async fn applied_version(conn: &mut PgConnection) -> Result<i64> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?;
    Ok(v.unwrap_or(0))
}

/// Refuse a database migrated by a newer brigade (and, when not migrating,
/// one not yet migrated to this brigade's schema).
async fn check_version(conn: &mut PgConnection, migrating: bool) -> Result<()> {
    let db = applied_version(conn).await?;
    let ours = known_version();
    if db > ours {
        return Err(StoreError::Schema(format!(
            "database schema version {db} is newer than this brigade ({ours}); upgrade brigade"
        )));
    }
    if !migrating && db < ours {
        return Err(StoreError::Schema(format!(
            "database schema version {db} is older than this brigade ({ours}); run `brigade migrate`"
        )));
    }
    Ok(())
}

/// Check the schema version and apply pending migrations, holding an advisory
/// lock so that servers starting together do it one at a time. (sqlx's
/// migrator also takes an advisory lock of its own; ours covers the check too.)
pub(crate) async fn migrate_conn(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let result: Result<()> = async {
        check_version(conn, true).await?;
        MIGRATOR
            .run(&mut *conn)
            .await
            .map_err(crate::error::schema_error_for(&MIGRATOR))?;
        Ok(())
    }
    .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    result?;
    unlocked?;
    Ok(())
}

/// A plain connection to the database at `url`, for whole-database work.
pub(crate) async fn raw_connection(url: &str) -> Result<PgConnection> {
    Ok(connect_options(url)?.connect().await?)
}

/// Apply pending migrations to the database at `url`.
pub async fn migrate(url: &str) -> Result<()> {
    let mut conn = connect_options(url)?.connect().await?;
    let result = migrate_conn(&mut conn).await;
    let _ = conn.close().await;
    result
}

impl PostgresStore {
    /// Open the database at `url` (`postgres://…`), applying pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        Self::connect(url, PgOptions::default()).await
    }

    /// Open the database at `url` with `options`.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self> {
        let connect = connect_options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1) + 1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        {
            let mut conn = pool.acquire().await?;
            if options.migrate {
                migrate_conn(&mut conn).await?;
            } else {
                check_version(&mut conn, false).await?;
            }
        }
        let listener = notify::listen(&pool).await?;
        let origin = brigade_core::ids::new_id();
        let (remote, _) = broadcast::channel(4096);
        let listener = tokio::spawn(notify::run(
            pool.clone(),
            listener,
            origin.clone(),
            remote.clone(),
        ));
        Ok(Self {
            pool,
            origin,
            remote,
            listener,
            last_sweep: AtomicI64::new(i64::MIN),
            clock: std::sync::OnceLock::new(),
            poison_after: std::sync::atomic::AtomicU32::new(
                brigade_core::transition::DEFAULT_POISON_AFTER,
            ),
        })
    }

    /// The second look at the jobs a committed change left unsettled (see
    /// `write::finish_jobs`): those whose tasks have all ended now are
    /// recorded as over, and their events join `changes`. The change itself
    /// is committed, so a failure here is only logged; the reaper's sweep
    /// finds what it leaves.
    async fn settle(&self, changes: &mut Changes, now: i64) {
        if changes.unsettled.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut changes.unsettled);
        let settled: Result<Changes> = async {
            let ended = {
                let mut conn = self.pool.acquire().await?;
                write::ended_jobs(&mut Pg(&mut conn, None), &jobs).await?
            };
            if ended.is_empty() {
                return Ok(Changes::default());
            }
            write_tx!(self, |c| write::settle_jobs(c, &ended, now), |v| Some(v))
        }
        .await;
        match settled {
            Ok(more) => {
                changes.merge(more);
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording the end of jobs failed; the reaper will")
            }
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn poison_after(&self) -> u32 {
        self.poison_after.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Run `$body` on a pooled connection, outside a transaction.
macro_rules! pg_read {
    ($store:expr, |$c:ident| $body:expr) => {{
        let mut conn = $store.pool.acquire().await?;
        let $c = &mut Pg(&mut conn, None);
        $body.await
    }};
}

/// Run `$body` in a transaction that also notifies the other servers of
/// what `$announce` returns (see `write_tx!`).
macro_rules! pg_write {
    ($store:expr, |$c:ident| $body:expr, |$v:ident| $announce:expr) => {
        write_tx!($store, |$c| $body, |$v| $announce)
    };
}

crate::delegate::store_impl! { PostgresStore, pg_read, pg_write;
    fn set_clock(&self, clock: std::sync::Arc<dyn brigade_core::Clock>) {
        let _ = self.clock.set(clock);
    }

    fn set_poison_after(&self, after: u32) {
        self.poison_after
            .store(after, std::sync::atomic::Ordering::Relaxed);
    }

    async fn ping(&self) -> Result<()> {
        let mut c = self.pool.acquire().await?;
        c.ping().await?;
        Ok(())
    }

    async fn set_queue_paused(&self, name: &str, paused: bool) -> Result<QueueView> {
        // Resuming a queue makes its tasks leasable on every server.
        let resumed = Changes {
            ready: !paused,
            ..Changes::default()
        };
        write_tx!(self, |c| write::set_queue_paused(c, name, paused), |_v| {
            Some(&resumed)
        })
    }

    async fn set_limit(
        &self,
        key: &str,
        limit: brigade_core::limits::Limit,
        now: i64,
    ) -> Result<brigade_api::LimitView> {
        // Tasks it let go of are leasable on every server.
        let ready = Changes {
            ready: true,
            ..Changes::default()
        };
        write_tx!(
            self,
            |c| crate::sql::limits::set(c, key, limit, now),
            |_v| { Some(&ready) }
        )
    }

    async fn delete_limit(&self, key: &str) -> Result<bool> {
        let ready = Changes {
            ready: true,
            ..Changes::default()
        };
        write_tx!(self, |c| crate::sql::limits::delete(c, key), |_v| {
            Some(&ready)
        })
    }

    async fn promote_due(&self, now: i64) -> Result<(u64, Option<i64>)> {
        let promoted = Changes {
            ready: true,
            ..Changes::default()
        };
        write_tx!(self, |c| write::promote_due(c, now), |v| (v.0 > 0)
            .then_some(&promoted))
    }

    async fn reap(&self, now: i64, ttl: i64) -> Result<Changes> {
        let poison = self.poison_after();
        let mut changes = write_tx!(self, |c| write::reap(c, now, ttl, poison), |v| Some(v))?;
        self.settle(&mut changes, now).await;
        // A server that died between a change and its second look left jobs
        // whose tasks all ended unrecorded: look for them now and then.
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= STRANDED_SWEEP_MS {
            self.last_sweep.store(now, Ordering::Relaxed);
            let stranded = {
                let mut conn = self.pool.acquire().await?;
                write::stranded_jobs(&mut Pg(&mut conn, None), 1000).await?
            };
            changes.unsettled = stranded;
            self.settle(&mut changes, now).await;
        }
        Ok(changes)
    }

    async fn prune(
        &self,
        now: i64,
        default_keep_ms: Option<u64>,
        max_tasks: u32,
    ) -> Result<Pruned> {
        // Dead rows are autovacuum's: PostgreSQL reuses their space by itself.
        write_tx!(
            self,
            |c| write::prune(c, now, default_keep_ms, max_tasks),
            |_v| None
        )
    }

    fn remote(&self) -> Option<broadcast::Receiver<Remote>> {
        Some(self.remote.subscribe())
    }
}
