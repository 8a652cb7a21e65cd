//! The SQLite engine's schema migrations, applied by brigade itself.
//!
//! They are recorded in the `_sqlx_migrations` table, in the format earlier
//! brigade releases (which used sqlx's migrator) wrote and still check: the
//! same versions, descriptions and SHA-384 checksums, so a database moves
//! between versions of brigade either way.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha384};

use crate::{Result, StoreError};

/// `(version, description, sql)` of every migration, oldest first.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "ready at",
        include_str!("../../migrations/sqlite/0002_ready_at.sql"),
    ),
    (
        3,
        "task logs",
        include_str!("../../migrations/sqlite/0003_task_logs.sql"),
    ),
    (
        4,
        "one running index",
        include_str!("../../migrations/sqlite/0004_one_running_index.sql"),
    ),
    (
        5,
        "workflows",
        include_str!("../../migrations/sqlite/0005_workflows.sql"),
    ),
    (
        6,
        "retention",
        include_str!("../../migrations/sqlite/0006_retention.sql"),
    ),
    (
        7,
        "schedules",
        include_str!("../../migrations/sqlite/0007_schedules.sql"),
    ),
    (
        8,
        "flow control",
        include_str!("../../migrations/sqlite/0008_flow_control.sql"),
    ),
    (
        9,
        "callbacks",
        include_str!("../../migrations/sqlite/0009_callbacks.sql"),
    ),
    (
        10,
        "limits",
        include_str!("../../migrations/sqlite/0010_limits.sql"),
    ),
    (
        11,
        "traceparent",
        include_str!("../../migrations/sqlite/0011_traceparent.sql"),
    ),
];

/// The newest schema version this binary knows.
pub(crate) fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Apply pending migrations; refuse a database migrated by a newer brigade.
pub(crate) fn run(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        );",
    )?;
    let applied: Option<i64> = conn
        .query_row(
            "SELECT max(version) FROM _sqlx_migrations WHERE success",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let applied = applied.unwrap_or(0);
    if applied > known_version() {
        return Err(StoreError::Schema(format!(
            "database schema version {applied} is newer than this brigade ({}); upgrade brigade",
            known_version()
        )));
    }
    check_applied(conn)?;
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        let started = std::time::Instant::now();
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            params![
                version,
                description,
                Sha384::digest(sql.as_bytes()).to_vec(),
                started.elapsed().as_nanos() as i64
            ],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Migrations are forward-only: one that shipped is never edited, a change
/// is a new migration. Refuse a database whose applied migrations differ
/// from this binary's of the same version (an edited file), rather than run
/// on a schema neither of them describes.
fn check_applied(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare("SELECT version, checksum FROM _sqlx_migrations WHERE success")?;
    let applied = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (version, checksum) in applied {
        if let Some((_, description, sql)) = MIGRATIONS.iter().find(|m| m.0 == version)
            && Sha384::digest(sql.as_bytes()).as_slice() != checksum.as_slice()
        {
            return Err(StoreError::Schema(format!(
                "migration {version} ({description}) applied to this database differs from this \
                 brigade's: migrations are forward-only and never edited once released"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_schema() -> Result<()> {
        let mut conn = Connection::open_in_memory()?;
        run(&mut conn)?;
        run(&mut conn)?;
        let n: i64 = conn.query_row("SELECT count(*) FROM _sqlx_migrations", [], |r| r.get(0))?;
        assert_eq!(n, MIGRATIONS.len() as i64);
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'future', TRUE, x'00', 0)",
            [],
        )?;
        assert!(matches!(run(&mut conn), Err(StoreError::Schema(_))));
        Ok(())
    }

    #[test]
    fn an_edited_migration_is_refused() -> Result<()> {
        let mut conn = Connection::open_in_memory()?;
        run(&mut conn)?;
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 1",
            [],
        )?;
        assert!(matches!(run(&mut conn), Err(StoreError::Schema(_))));
        Ok(())
    }
}
