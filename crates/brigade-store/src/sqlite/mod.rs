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

use brigade_api::QueueView;
use futures::FutureExt;
use rusqlite::{Connection, OpenFlags};

use crate::model::{Changes, Pruned};
use crate::sql::write;
use crate::{Result, StoreError};
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

    fn poison_after(&self) -> u32 {
        self.poison_after.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Nothing to do: SQLite has one writer, and a result's transaction
    /// locks its job before it looks at the job's tasks, so no job is left
    /// for a second look (see `sql::write::finish_jobs`).
    async fn settle(&self, _changes: &mut Changes, _now: i64) {}
}

/// Run `$body` on a read connection, on a blocking thread.
macro_rules! lite_read {
    ($store:expr, |$c:ident| $body:expr) => {
        $store.readers.read(move |$c| at_once($body)).await
    };
}

/// Run `$body` on the writer thread, committed with its group; there are no
/// other servers to announce changes to.
macro_rules! lite_write {
    ($store:expr, |$c:ident| $body:expr, |$v:ident| $announce:expr) => {
        $store.write(move |$c| at_once($body)).await
    };
}

crate::delegate::store_impl! { SqliteStore, lite_read, lite_write;
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
        let poison = self.poison_after();
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
}
