//! Errors of the store.

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Db(sqlx::Error),
    /// SQLite refused or failed.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The same idempotency key came with a different request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict,
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The database URL is not one we know.
    #[error("unsupported database URL {0}")]
    Url(String),
    /// The database schema is not the one this binary was built for.
    #[error("{0}")]
    Schema(String),
    /// The writer is gone (the server is shutting down), a commit failed, or the
    /// database cannot be reached right now (connection lost, server restarting).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An operation was refused as it stands (a copy into a database that is
    /// not empty, a backup onto an existing file).
    #[error("{0}")]
    Refused(String),
    /// The disk under the database is full: nothing more can be written until
    /// space is freed; what was committed before is intact.
    #[error("the database's disk is full: {0}")]
    DiskFull(String),
}

impl StoreError {
    /// Whether trying again later may succeed without anyone changing the request.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::DiskFull(_))
    }
}

impl From<sqlx::Error> for StoreError {
    /// Conditions of the database's surroundings (disk full, connection lost,
    /// server restarting) become [`StoreError::DiskFull`] and
    /// [`StoreError::Unavailable`], which the server answers with 503 and
    /// `Retry-After`; everything else stays a [`StoreError::Db`].
    fn from(e: sqlx::Error) -> Self {
        match classify(&e) {
            Some(Condition::DiskFull) => StoreError::DiskFull(e.to_string()),
            Some(Condition::Unreachable) => StoreError::Unavailable(e.to_string()),
            None => StoreError::Db(e),
        }
    }
}

enum Condition {
    DiskFull,
    Unreachable,
}

/// SQLite's primary result codes (the low byte of an extended code).
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
/// `SQLITE_IOERR_*` extended codes that mean "no room": growing the WAL
/// index (`SHMSIZE`) or its memory map (`MMAP`).
const SQLITE_IOERR_NO_ROOM: [i64; 2] = [SQLITE_IOERR | (19 << 8), SQLITE_IOERR | (24 << 8)];

fn classify(e: &sqlx::Error) -> Option<Condition> {
    match e {
        sqlx::Error::Io(io) => Some(if io.kind() == std::io::ErrorKind::StorageFull {
            Condition::DiskFull
        } else {
            Condition::Unreachable
        }),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            Some(Condition::Unreachable)
        }
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            if let Ok(n) = code.parse::<i64>() {
                // SQLite: numeric (extended) result codes.
                return if n & 0xff == SQLITE_FULL || SQLITE_IOERR_NO_ROOM.contains(&n) {
                    Some(Condition::DiskFull)
                } else if n & 0xff == SQLITE_IOERR {
                    // Writing or syncing the file failed: the disk, not the request.
                    Some(Condition::Unreachable)
                } else {
                    None
                };
            }
            // PostgreSQL SQLSTATE: disk full, connection exceptions, the
            // server shutting down or starting up.
            match code.as_ref() {
                "53100" => Some(Condition::DiskFull),
                "57P01" | "57P02" | "57P03" => Some(Condition::Unreachable),
                c if c.starts_with("08") => Some(Condition::Unreachable),
                _ => None,
            }
        }
        _ => None,
    }
}

impl From<rusqlite::Error> for StoreError {
    /// As for sqlx: a full disk and I/O failures are conditions of the
    /// surroundings (503), anything else an error of the request.
    fn from(e: rusqlite::Error) -> Self {
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(i64::from(f.extended_code)),
            _ => None,
        };
        match code {
            Some(n) if n & 0xff == SQLITE_FULL || SQLITE_IOERR_NO_ROOM.contains(&n) => {
                StoreError::DiskFull(e.to_string())
            }
            Some(n) if n & 0xff == SQLITE_IOERR => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Sqlite(e),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Map a migration error of `migrator`, with a clear message when the database
/// was migrated by a newer brigade.
pub(crate) fn schema_error_for(
    migrator: &'static sqlx::migrate::Migrator,
) -> impl Fn(sqlx::migrate::MigrateError) -> StoreError {
    move |e| match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => StoreError::Schema(format!(
            "database schema version {v} is newer than this brigade ({}); upgrade brigade",
            migrator.iter().map(|m| m.version).max().unwrap_or(0)
        )),
        other => StoreError::Migrate(other),
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    /// A real SQLite "database or disk is full", from a database capped at a
    /// few pages, is a [`StoreError::DiskFull`] (503), not a 500.
    #[test]
    fn sqlite_full_is_disk_full() -> Result<(), StoreError> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE t (b BLOB); PRAGMA max_page_count = 4;")?;
        let full = conn
            .execute("INSERT INTO t VALUES (zeroblob(100000))", [])
            .map_err(StoreError::from);
        assert!(matches!(full, Err(StoreError::DiskFull(_))), "{full:?}");
        assert!(full.is_err_and(|e| e.is_transient()));
        // Another error of the request itself stays a database error.
        let bad = conn
            .execute("INSERT INTO nowhere VALUES (1)", [])
            .map_err(StoreError::from);
        assert!(matches!(bad, Err(StoreError::Sqlite(_))), "{bad:?}");
        Ok(())
    }

    #[test]
    fn lost_connections_are_unavailable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(StoreError::from(io), StoreError::Unavailable(_)));
        let full = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(matches!(StoreError::from(full), StoreError::DiskFull(_)));
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
    }
}
