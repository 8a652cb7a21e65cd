//! The store against a real PostgreSQL: every conformance case of
//! `common::cases`, and the tests only PostgreSQL has (several servers on one
//! database, notifications, migrations).
//!
//! The server comes from `BRIGADE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own
//! database with a random name and drops it afterwards. When the server does
//! not answer the tests fail, unless `BRIGADE_SKIP_POSTGRES=1`.

mod common;

use std::str::FromStr;
use std::sync::Arc;

use brigade_store::postgres::{PgOptions, PostgresStore};
use brigade_store::{Store, StoreError};
use common::{TestResult, ensure};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A throwaway database, dropped when this goes away.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    /// Create a database; `None` when PostgreSQL is unreachable and skipping is allowed.
    async fn create() -> TestResult<Option<Self>> {
        let admin = std::env::var("BRIGADE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.into());
        let mut conn = match PgConnectOptions::from_str(&admin)?.connect().await {
            Ok(c) => c,
            Err(e) if std::env::var("BRIGADE_SKIP_POSTGRES").as_deref() == Ok("1") => {
                eprintln!("skipped: PostgreSQL at {admin} does not answer ({e})");
                return Ok(None);
            }
            Err(e) => {
                return Err(format!(
                    "PostgreSQL at {admin} does not answer ({e}). Start one, point \
                     BRIGADE_TEST_POSTGRES at it, or set BRIGADE_SKIP_POSTGRES=1 to skip"
                )
                .into());
            }
        };
        let name = format!("brigade_t_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let url = with_database(&admin, &name)?;
        Ok(Some(Self { admin, name, url }))
    }

    async fn open(&self) -> TestResult<Arc<dyn Store>> {
        Ok(brigade_store::open(&self.url).await?)
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> TestResult<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").ok_or("URL without scheme")? + 3;
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut conn = PgConnectOptions::from_str(&admin)?.connect().await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                TestResult::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A fresh store on a database of its own, for the conformance cases.
async fn fresh() -> TestResult<Option<(TestDb, Arc<dyn Store>)>> {
    let Some(db) = TestDb::create().await? else {
        return Ok(None);
    };
    let store = db.open().await?;
    Ok(Some((db, store)))
}

common::conformance_tests!(fresh);

/// Run `body` on a fresh database.
macro_rules! with_db {
    (|$db:ident| $body:expr) => {{
        let Some($db) = TestDb::create().await? else {
            return Ok(());
        };
        $body
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_never_lease_a_task_twice() -> TestResult {
    with_db!(|db| {
        let stores = vec![db.open().await?, db.open().await?];
        common::concurrent_lease(stores, 2000).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_fire_a_schedule_once_per_fire() -> TestResult {
    with_db!(|db| {
        let stores = vec![db.open().await?, db.open().await?, db.open().await?];
        common::cases::schedules::fire_once(stores).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_make_one_unique_job() -> TestResult {
    with_db!(|db| common::cases::flow::unique_race(vec![db.open().await?, db.open().await?]).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_reapers_requeue_once() -> TestResult {
    with_db!(|db| common::reap_once(db.open().await?, db.open().await?).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_notifications_reach_the_other_server() -> TestResult {
    with_db!(|db| common::remote_notifications(db.open().await?, db.open().await?).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_starting_together_migrate_once() -> TestResult {
    with_db!(|db| {
        let opens = (0..4).map(|_| PostgresStore::open(&db.url));
        for store in futures::future::join_all(opens).await {
            store?;
        }
        brigade_store::migrate(&db.url).await?;
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn newer_schema_is_refused() -> TestResult {
    with_db!(|db| {
        brigade_store::migrate(&db.url).await?;
        let mut conn = PgConnectOptions::from_str(&db.url)?.connect().await?;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from the future', TRUE, '\\x00', 0)",
        )
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        let refused = PostgresStore::open(&db.url).await;
        let message = match refused {
            Err(StoreError::Schema(m)) => m,
            Err(other) => return Err(format!("wrong error: {other}").into()),
            Ok(_) => return Err("a newer schema was accepted".into()),
        };
        ensure(
            message.contains("99990101000000 is newer than this brigade"),
            message,
        )?;
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmigrated_database_is_refused_without_migrate() -> TestResult {
    with_db!(|db| {
        let opened = PostgresStore::connect(
            &db.url,
            PgOptions {
                migrate: false,
                ..PgOptions::default()
            },
        )
        .await;
        ensure(
            matches!(opened, Err(StoreError::Schema(_))),
            "an unmigrated database was accepted",
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listener_reconnects_and_wakes_waiters() -> TestResult {
    use brigade_store::Remote;
    with_db!(|db| {
        let a = db.open().await?;
        let b = db.open().await?;
        let mut on_b = b.remote().ok_or("remote")?;
        // Kill every notification connection of this database.
        let mut conn = PgConnectOptions::from_str(&db.url)?.connect().await?;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%') AS t",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        ensure(killed == 2, format!("killed {killed} listeners"))?;
        // The listener comes back and makes waiters look again ...
        common::expect_remote(&mut on_b, "ready after reconnect", |r| {
            matches!(r, Remote::Ready)
        })
        .await?;
        // ... and hears changes again.
        let sub = a
            .submit("owner", common::job(1, 1), None, common::T0)
            .await?;
        common::expect_remote(
            &mut on_b,
            "job.created after reconnect",
            |r| matches!(r, Remote::Event(e) if e.job_id.as_deref() == Some(sub.job.id.as_str())),
        )
        .await
    })
}

/// A job whose tasks all ended but whose end was never recorded (its server
/// died between committing the last result and looking again) is found and
/// recorded by a reaper, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reaper_records_the_end_of_a_stranded_job() -> TestResult {
    use common::{T0, TTL, ids_of, job, join, lease_ids, ok};
    with_db!(|db| {
        let store = db.open().await?;
        let sub = store.submit("owner", job(1, 1), None, T0).await?;
        let id = ids_of(&sub)?.remove(0);
        let w = join(&*store, "w", T0).await?;
        ensure(lease_ids(&*store, &w, 1, T0).await?.len() == 1, "leased")?;
        store
            .report(&w, vec![ok(&id, 1)], T0 + 1)
            .await?
            .ok_or("w")?;
        // Undo the job's recorded end, as if its server died before it.
        let mut conn = PgConnectOptions::from_str(&db.url)?.connect().await?;
        sqlx::query("UPDATE jobs SET finished_at = NULL, state = 'running' WHERE id = $1")
            .bind(&sub.job.id)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        // A fresh server's first reap looks for such jobs.
        let other = db.open().await?;
        let reaped = other.reap(T0 + 2, TTL).await?;
        let finished: Vec<_> = reaped
            .events
            .iter()
            .filter(|e| e.kind == "job.finished")
            .collect();
        ensure(finished.len() == 1, format!("events {:?}", reaped.events))?;
        let view = store.job(&sub.job.id).await?.ok_or("job")?;
        ensure(
            view.finished_at.is_some(),
            format!("job {:?} finished {:?}", view.state, view.finished_at),
        )?;
        let again = other.reap(T0 + 70_000, TTL).await?;
        ensure(
            !again.events.iter().any(|e| e.kind == "job.finished"),
            "recorded once",
        )?;
        Ok(())
    })
}
