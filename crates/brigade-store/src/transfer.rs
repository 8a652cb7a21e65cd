//! Moving a whole database to another engine: `brigade migrate --from … --to …`.

use std::collections::BTreeMap;

use sqlx::{Connection, PgConnection};

use crate::sql::{Conn, copy};
use crate::{Result, StoreError, is_postgres};

/// What a copy moved: rows per table, checked equal on both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows of each table, by table name.
    pub rows: BTreeMap<String, i64>,
}

/// Copy everything in the database at `from` into the empty database at `to`
/// (any engine to any engine): jobs, tasks, their history and logs,
/// idempotency keys, workers and queues — every table this brigade's schema
/// has. Both are migrated to this brigade's schema first. The source is read
/// from one snapshot (a server may keep running on it, but what it writes
/// after the copy started stays behind); the target is written in one
/// transaction and its row counts checked against the source's before it
/// commits, so a failed copy leaves it empty. A target holding any row is
/// refused.
pub async fn copy_database(from: &str, to: &str) -> Result<CopyReport> {
    if from == to {
        return Err(StoreError::Refused(
            "--from and --to name the same database".into(),
        ));
    }
    crate::migrate(from).await?;
    crate::migrate(to).await?;
    let rows = match (is_postgres(from), is_postgres(to)) {
        (false, true) => {
            let mut src = crate::sqlite::raw_connection(from, true)?;
            let mut dst = pg(to).await?;
            lite_snapshot(&mut src)?;
            let mut tx = dst.begin().await?;
            let rows = copy_all(
                &mut crate::sqlite::Lite(&mut src),
                &mut crate::postgres::Pg(&mut tx, None),
            )
            .await?;
            tx.commit().await?;
            rows
        }
        (true, false) => {
            let mut src = pg(from).await?;
            let mut dst = crate::sqlite::raw_connection(to, false)?;
            let mut snap = pg_snapshot(&mut src).await?;
            dst.execute_batch("BEGIN IMMEDIATE")?;
            let rows = copy_all(
                &mut crate::postgres::Pg(&mut snap, None),
                &mut crate::sqlite::Lite(&mut dst),
            )
            .await;
            finish_lite(&dst, rows)?
        }
        (false, false) => {
            let mut src = crate::sqlite::raw_connection(from, true)?;
            let mut dst = crate::sqlite::raw_connection(to, false)?;
            lite_snapshot(&mut src)?;
            dst.execute_batch("BEGIN IMMEDIATE")?;
            let rows = copy_all(
                &mut crate::sqlite::Lite(&mut src),
                &mut crate::sqlite::Lite(&mut dst),
            )
            .await;
            finish_lite(&dst, rows)?
        }
        (true, true) => {
            let mut src = pg(from).await?;
            let mut dst = pg(to).await?;
            let mut snap = pg_snapshot(&mut src).await?;
            let mut tx = dst.begin().await?;
            let rows = copy_all(
                &mut crate::postgres::Pg(&mut snap, None),
                &mut crate::postgres::Pg(&mut tx, None),
            )
            .await?;
            tx.commit().await?;
            rows
        }
    };
    Ok(CopyReport { rows })
}

async fn pg(url: &str) -> Result<PgConnection> {
    crate::postgres::raw_connection(url).await
}

/// One read snapshot of a SQLite source for the whole copy.
fn lite_snapshot(conn: &mut rusqlite::Connection) -> Result<()> {
    conn.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_master;")?;
    Ok(())
}

/// One read snapshot of a PostgreSQL source for the whole copy.
async fn pg_snapshot(conn: &mut PgConnection) -> Result<sqlx::Transaction<'_, sqlx::Postgres>> {
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

fn finish_lite(
    dst: &rusqlite::Connection,
    rows: Result<BTreeMap<String, i64>>,
) -> Result<BTreeMap<String, i64>> {
    match rows {
        Ok(rows) => {
            dst.execute_batch("COMMIT")?;
            Ok(rows)
        }
        Err(e) => {
            let _ = dst.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

async fn copy_all<S: Conn, D: Conn>(src: &mut S, dst: &mut D) -> Result<BTreeMap<String, i64>> {
    let target = copy::tables(dst).await?;
    let source = copy::tables(src).await?;
    copy::same_schema(&source, &target)?;
    let present = copy::counts(dst, &target).await?;
    if let Some((table, n)) = present.iter().find(|(_, n)| **n > 0) {
        return Err(StoreError::Refused(format!(
            "the target database is not empty ({table} has {n} rows); migrate into an empty one"
        )));
    }
    let expected = copy::counts(src, &source).await?;
    for table in &target {
        copy::copy_table(src, dst, table).await?;
    }
    let copied = copy::counts(dst, &target).await?;
    if copied != expected {
        return Err(StoreError::Corrupt(format!(
            "the copy's counts {copied:?} differ from the source's {expected:?}; nothing was committed"
        )));
    }
    Ok(copied)
}
