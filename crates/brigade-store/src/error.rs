//! Errors of the store.

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
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
    /// The writer is gone (the server is shutting down) or a commit failed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
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
