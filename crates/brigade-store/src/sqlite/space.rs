//! SQLite file space: freed pages go back to the file system a share at a time.
//!
//! A new database is created with `auto_vacuum = INCREMENTAL`, so the pages
//! that retention frees can be cut off the end of the file (`PRAGMA
//! incremental_vacuum`). A database created before that keeps
//! `auto_vacuum = NONE`: SQLite still reuses its free pages for new rows, so
//! its file stops growing once retention prunes as much as is written, but it
//! never shrinks until `brigade migrate --vacuum` rebuilds it (one `VACUUM`,
//! the server stopped).

use rusqlite::Connection;

use crate::Result;

/// Free pages kept for new rows rather than given back: at least this many…
const SLACK_PAGES: i64 = 256;
/// …or this fraction of the file (1/8), whichever is more, so a steady load
/// reuses pages instead of growing and shrinking the file at every prune.
const SLACK_SHARE: i64 = 8;
/// Most pages given back by one call, so one call stays a short write.
const MAX_PAGES_PER_CALL: i64 = 2048;

fn pragma_int(conn: &Connection, pragma: &str) -> Result<i64> {
    Ok(conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))?)
}

/// Whether the database can give pages back (`auto_vacuum = INCREMENTAL`).
pub(crate) fn incremental(conn: &Connection) -> Result<bool> {
    Ok(pragma_int(conn, "auto_vacuum")? == 2)
}

/// On a database with no tables yet, choose incremental auto-vacuum (it can
/// only be chosen before the first table, or by a `VACUUM`).
pub(crate) fn prepare_new(conn: &Connection) -> Result<()> {
    let tables = pragma_int(conn, "page_count")?;
    if tables == 0 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
    }
    Ok(())
}

/// Give back the free pages beyond the slack kept for new rows, a bounded
/// number at a time; nothing on a database without incremental auto-vacuum.
pub(crate) fn give_back(conn: &mut Connection) -> Result<()> {
    if !incremental(conn)? {
        return Ok(());
    }
    let free = pragma_int(conn, "freelist_count")?;
    let pages = pragma_int(conn, "page_count")?;
    let excess = free - SLACK_PAGES.max(pages / SLACK_SHARE);
    if excess > 0 {
        let n = excess.min(MAX_PAGES_PER_CALL);
        let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({n})"))?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(())
}

/// Rebuild the database with incremental auto-vacuum (`VACUUM`): for a file
/// made before brigade chose it. Needs the server stopped and free disk
/// space of about the file's size. Says whether it changed anything.
pub(crate) fn convert(conn: &Connection) -> Result<bool> {
    if incremental(conn)? {
        return Ok(false);
    }
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    incremental(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(conn: &Connection, rows: i64) -> Result<()> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (x TEXT)")?;
        for _ in 0..rows {
            conn.execute("INSERT INTO t VALUES (hex(randomblob(512)))", [])?;
        }
        Ok(())
    }

    #[test]
    fn freed_pages_go_back_beyond_the_slack() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        prepare_new(&conn)?;
        assert!(incremental(&conn)?);
        fill(&conn, 4000)?;
        let before = pragma_int(&conn, "page_count")?;
        conn.execute("DELETE FROM t", [])?;
        let mut conn = conn;
        for _ in 0..10 {
            give_back(&mut conn)?;
        }
        let after = pragma_int(&conn, "page_count")?;
        let free = pragma_int(&conn, "freelist_count")?;
        assert!(after < before / 2, "{before} → {after}");
        assert!(
            free <= SLACK_PAGES.max(after / SLACK_SHARE),
            "{free} free of {after}"
        );
        Ok(())
    }

    #[test]
    fn an_old_database_is_converted_by_a_vacuum() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        fill(&conn, 10)?;
        prepare_new(&conn)?;
        assert!(!incremental(&conn)?, "too late once a table exists");
        assert!(convert(&conn)?);
        assert!(incremental(&conn)?);
        assert!(!convert(&conn)?);
        Ok(())
    }
}
