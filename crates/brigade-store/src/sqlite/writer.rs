//! The single SQLite writer: a thread of its own that commits requests in groups.
//!
//! SQLite has one writer at a time. Every write goes to one thread that takes
//! whatever requests are waiting, runs each in its own savepoint inside one
//! transaction, commits once (one fsync), and only then answers them all. A
//! failing request rolls back to its savepoint without hurting the others.
//! The thread owns the connection and runs every statement itself, so a whole
//! group costs one hand-off from the async side and back, however many
//! statements its requests run.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// Delivers a request's result once the group it ran in is committed (or not).
type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// One write request: runs on the writer's connection (or, when `run` is
/// false, only fails), says whether it succeeded.
type Op = Box<dyn FnOnce(&mut Connection, bool) -> (bool, Deliver) + Send>;

/// Most requests committed together.
const MAX_GROUP: usize = 512;

/// Handle to the writer thread.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    /// Start the writer thread on `conn`.
    pub(crate) fn start(conn: Connection) -> Result<Self> {
        let (tx, rx) = mpsc::channel(4096);
        std::thread::Builder::new()
            .name("brigade-sqlite-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self { tx })
    }

    /// Run `f` in the next group commit; returns its result once committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let request: Op = Box::new(move |conn, run| {
            let result = if run {
                f(conn)
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

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Op>) {
    let mut group: Vec<Op> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let (delivers, error) = match commit_group(&mut conn, &mut group) {
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
}

type GroupOutcome = std::result::Result<Vec<Deliver>, (Vec<Deliver>, StoreError)>;

/// Fail every request left in `rest` without running it.
fn refuse(conn: &mut Connection, rest: impl Iterator<Item = Op>, delivers: &mut Vec<Deliver>) {
    for request in rest {
        let (_, deliver) = request(conn, false);
        delivers.push(deliver);
    }
}

fn sql(conn: &Connection, statement: &str) -> Result<()> {
    conn.prepare_cached(statement)?.execute([])?;
    Ok(())
}

/// Open the group's transaction. A connection still inside a transaction
/// (SQLite rolls back on its own after some errors, such as a full disk, and
/// a ROLLBACK of ours may have failed too) is rolled back first, so one bad
/// moment never leaves the writer refusing everything after it.
fn begin(conn: &Connection) -> Result<()> {
    if !conn.is_autocommit() {
        tracing::warn!("the writer was left in a transaction; rolling it back");
        sql(conn, "ROLLBACK")?;
    }
    sql(conn, "BEGIN IMMEDIATE")
}

fn commit_group(conn: &mut Connection, group: &mut Vec<Op>) -> GroupOutcome {
    let mut delivers = Vec::with_capacity(group.len());
    if let Err(e) = begin(conn) {
        refuse(conn, group.drain(..), &mut delivers);
        return Err((delivers, e));
    }
    if group.len() == 1 {
        // A lone request needs no savepoint: commit it or roll it back.
        if let Some(request) = group.pop() {
            let (ok, deliver) = request(conn, true);
            delivers.push(deliver);
            if !ok {
                return match sql(conn, "ROLLBACK") {
                    Ok(()) => Ok(delivers),
                    Err(e) => Err((delivers, e)),
                };
            }
        }
    } else {
        let mut requests = group.drain(..);
        while let Some(request) = requests.next() {
            if let Err(e) = sql(conn, "SAVEPOINT request") {
                let _ = sql(conn, "ROLLBACK");
                refuse(
                    conn,
                    std::iter::once(request).chain(requests),
                    &mut delivers,
                );
                return Err((delivers, e));
            }
            let (ok, deliver) = request(conn, true);
            delivers.push(deliver);
            let end = if ok {
                sql(conn, "RELEASE request")
            } else {
                sql(conn, "ROLLBACK TO request").and_then(|()| sql(conn, "RELEASE request"))
            };
            if let Err(e) = end {
                let _ = sql(conn, "ROLLBACK");
                refuse(conn, requests, &mut delivers);
                return Err((delivers, e));
            }
        }
    }
    match sql(conn, "COMMIT") {
        Ok(()) => Ok(delivers),
        Err(e) => {
            let _ = sql(conn, "ROLLBACK");
            Err((delivers, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::Writer;
    use crate::{Result, StoreError};

    async fn insert(w: &Writer, bytes: i64) -> Result<()> {
        w.write(move |c| {
            c.execute("INSERT INTO t VALUES (zeroblob(?1))", [bytes])?;
            Ok(())
        })
        .await
    }

    /// A full database fails the requests that need room, with DiskFull,
    /// and the writer goes on committing the others, alone or in groups.
    #[tokio::test]
    async fn a_full_database_fails_requests_not_the_writer() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE t (b BLOB); PRAGMA max_page_count = 16;")?;
        let w = Writer::start(conn)?;
        assert!(matches!(
            insert(&w, 1_000_000).await,
            Err(StoreError::DiskFull(_))
        ));
        insert(&w, 10).await?;
        // In one group: SQLite may roll the whole transaction back on a full
        // disk, taking the others with it. Whatever happens, a request is told
        // it succeeded only if its row is committed, and the others' failures
        // are transient (503), never a 500.
        let (a, b, c) = tokio::join!(insert(&w, 10), insert(&w, 1_000_000), insert(&w, 10));
        assert!(matches!(b, Err(StoreError::DiskFull(_))), "{b:?}");
        for r in [&a, &c] {
            assert!(
                r.as_ref().is_ok() || r.as_ref().is_err_and(|e| e.is_transient()),
                "{r:?}"
            );
        }
        let committed = 1 + [&a, &c].iter().filter(|r| r.is_ok()).count() as i64;
        insert(&w, 10).await?;
        let n: i64 = w
            .write(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await?;
        assert_eq!(n, committed + 1);
        Ok(())
    }
}
