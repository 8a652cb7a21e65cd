//! The single SQLite writer: requests queue up and are committed in groups.
//!
//! SQLite has one writer at a time. Instead of many connections fighting for
//! the lock with small transactions, every write goes through one task that
//! takes whatever requests are waiting, runs each in its own savepoint inside
//! one transaction, commits once (one fsync), and only then answers them all.
//! A failing request rolls back to its savepoint without hurting the others.

use futures::future::BoxFuture;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// Delivers a request's result once the group it ran in is committed (or not).
type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// One write request: runs against the writer's connection (or, when `run` is
/// false, only fails), says whether it succeeded.
type Op = Box<
    dyn for<'c> FnOnce(&'c mut SqliteConnection, bool) -> BoxFuture<'c, (bool, Deliver)> + Send,
>;

/// Most requests committed together.
const MAX_GROUP: usize = 512;

/// Handle to the writer task.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Op>,
}

fn op<F>(f: F) -> Op
where
    F: for<'c> FnOnce(&'c mut SqliteConnection, bool) -> BoxFuture<'c, (bool, Deliver)>
        + Send
        + 'static,
{
    Box::new(f)
}

impl Writer {
    /// Start the writer task on `conn`.
    pub(crate) fn start(conn: SqliteConnection) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(conn, rx));
        Self { tx }
    }

    /// Run `f` in the next group commit; returns its result once committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let request = op(move |conn, run| {
            Box::pin(async move {
                let result = if run {
                    f(conn).await
                } else {
                    Err(StoreError::Unavailable(
                        "not run: the group commit it was queued in failed".into(),
                    ))
                };
                let ok = result.is_ok();
                let deliver: Deliver = Box::new(move |commit_error: Option<&StoreError>| {
                    let result = match (commit_error, result) {
                        (Some(e), Ok(_)) => Err(group_failed(e)),
                        (_, r) => r,
                    };
                    let _ = reply.send(result);
                });
                (ok, deliver)
            })
        });
        self.tx
            .send(request)
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer dropped a request".into()))?
    }
}

/// What a request whose own work went well gets when its group could not commit.
fn group_failed(e: &StoreError) -> StoreError {
    match e {
        StoreError::DiskFull(m) => StoreError::DiskFull(format!("commit failed: {m}")),
        other => StoreError::Unavailable(format!("commit failed: {other}")),
    }
}

async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Op>) {
    let mut group: Vec<Op> = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (delivers, error) = match commit_group(&mut conn, &mut group).await {
            Ok(delivers) => (delivers, None),
            Err((delivers, e)) => {
                tracing::error!(error = %e, "group commit failed");
                (delivers, Some(e))
            }
        };
        for deliver in delivers {
            deliver(error.as_ref());
        }
    }
    let _ = conn.close().await;
}

type GroupOutcome = std::result::Result<Vec<Deliver>, (Vec<Deliver>, StoreError)>;

/// Fail every request left in `rest` without running it.
async fn refuse(
    conn: &mut SqliteConnection,
    rest: impl Iterator<Item = Op> + Send,
    delivers: &mut Vec<Deliver>,
) {
    for request in rest {
        let (_, deliver) = request(&mut *conn, false).await;
        delivers.push(deliver);
    }
}

/// Open the group's transaction. A connection still inside a transaction
/// (SQLite rolls back on its own after some errors, such as a full disk, and
/// a ROLLBACK of ours may have failed too) is rolled back first, so one bad
/// moment never leaves the writer refusing everything after it.
async fn begin(conn: &mut SqliteConnection) -> Result<()> {
    match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(first) => {
            if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                return Err(first.into());
            }
            tracing::warn!(error = %first, "the writer was left in a transaction; rolled it back");
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            Ok(())
        }
    }
}

// Boxed so the spawned writer's future is provably Send (rustc cannot see
// through sqlx's higher-ranked Executor bounds otherwise).
fn commit_group<'a>(
    conn: &'a mut SqliteConnection,
    group: &'a mut Vec<Op>,
) -> BoxFuture<'a, GroupOutcome> {
    Box::pin(commit_group_inner(conn, group))
}

async fn commit_group_inner(conn: &mut SqliteConnection, group: &mut Vec<Op>) -> GroupOutcome {
    let mut delivers = Vec::with_capacity(group.len());
    if let Err(e) = begin(conn).await {
        refuse(conn, group.drain(..), &mut delivers).await;
        return Err((delivers, e));
    }
    if group.len() == 1 {
        // A lone request needs no savepoint: commit it or roll it back.
        if let Some(request) = group.pop() {
            let (ok, deliver) = request(&mut *conn, true).await;
            delivers.push(deliver);
            if !ok {
                return match sqlx::query("ROLLBACK").execute(&mut *conn).await {
                    Ok(_) => Ok(delivers),
                    Err(e) => Err((delivers, StoreError::from(e))),
                };
            }
        }
    } else {
        let mut requests = group.drain(..);
        while let Some(request) = requests.next() {
            if let Err(e) = sqlx::query("SAVEPOINT request").execute(&mut *conn).await {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                refuse(
                    conn,
                    std::iter::once(request).chain(requests),
                    &mut delivers,
                )
                .await;
                return Err((delivers, StoreError::from(e)));
            }
            let (ok, deliver) = request(&mut *conn, true).await;
            delivers.push(deliver);
            let end = if ok {
                sqlx::query("RELEASE request").execute(&mut *conn).await
            } else {
                match sqlx::query("ROLLBACK TO request").execute(&mut *conn).await {
                    Ok(_) => sqlx::query("RELEASE request").execute(&mut *conn).await,
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = end {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                refuse(conn, requests, &mut delivers).await;
                return Err((delivers, StoreError::from(e)));
            }
        }
    }
    match sqlx::query("COMMIT").execute(&mut *conn).await {
        Ok(_) => Ok(delivers),
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err((delivers, StoreError::from(e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, SqliteConnection};

    use super::Writer;
    use crate::{Result, StoreError};

    async fn insert(w: &Writer, bytes: i64) -> Result<()> {
        w.write(move |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t VALUES (zeroblob(?))")
                    .bind(bytes)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// A full database fails the requests that need room, with DiskFull,
    /// and the writer goes on committing the others, alone or in groups.
    #[tokio::test]
    async fn a_full_database_fails_requests_not_the_writer() -> Result<()> {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await?;
        sqlx::query("CREATE TABLE t (b BLOB)")
            .execute(&mut conn)
            .await?;
        sqlx::query("PRAGMA max_page_count = 16")
            .execute(&mut conn)
            .await?;
        let w = Writer::start(conn);
        assert!(matches!(
            insert(&w, 1_000_000).await,
            Err(StoreError::DiskFull(_))
        ));
        insert(&w, 10).await?;
        // In one group: SQLite may roll the whole transaction back on a full
        // disk (it did here), taking the others with it. Whatever happens, a
        // request is told it succeeded only if its row is committed, and the
        // others' failures are transient (503), never a 500.
        let (a, b, c) = tokio::join!(insert(&w, 10), insert(&w, 1_000_000), insert(&w, 10));
        assert!(matches!(b, Err(StoreError::DiskFull(_))), "{b:?}");
        for r in [&a, &c] {
            assert!(
                r.as_ref().is_ok() || r.as_ref().is_err_and(|e| e.is_transient()),
                "{r:?}"
            );
        }
        let committed = 1 + [&a, &c].iter().filter(|r| r.is_ok()).count() as i64;
        // And the writer goes on.
        insert(&w, 10).await?;
        let n: i64 = w
            .write(|c| {
                Box::pin(async move {
                    Ok(sqlx::query_scalar("SELECT count(*) FROM t")
                        .fetch_one(&mut *c)
                        .await?)
                })
            })
            .await?;
        assert_eq!(n, committed + 1);
        Ok(())
    }
}
