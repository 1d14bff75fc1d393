//! The one error type of the store.

/// What went wrong in the store, coarse enough for the server to map onto an HTTP status
/// (`Conflict` → 409, `Invalid` → 422, `Unavailable` → 503, everything else → 500).
///
/// Messages never contain secrets: token secrets and their hashes are never put into an error,
/// and connection URLs are not echoed back.
///
/// Deliberately not `#[non_exhaustive]`: the server maps every variant to an HTTP answer with a
/// match that has no wildcard, so adding a variant must fail to compile there until it is mapped.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule held against the write even after retrying.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller passed something the store cannot persist.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The database cannot be reached right now (pool timeout, closed pool, I/O, locked file).
    /// Worth retrying later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Any other database error, including writes rejected by the immutability triggers.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Embedded migrations could not be applied at open.
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A file-system operation on the data directory failed.
    #[error("storage I/O error at {path}: {source}")]
    Io {
        /// The path that was being worked on.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data does not have the shape the store wrote.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A controller write made under a leadership epoch that is no longer the current one: a
    /// newer leader exists, so nothing was written.
    #[error(
        "fenced: written under leadership epoch {epoch} but epoch {current} is current (a newer leader exists)"
    )]
    Fenced {
        /// The writer's epoch.
        epoch: i64,
        /// The store's current epoch.
        current: i64,
    },
    /// The release changed since the caller read it (its revision moved on), so the write,
    /// decided from the older state, was refused and nothing was written.
    #[error(
        "release {id} changed since it was read (revision {current} is stored, {expected} was read)"
    )]
    Stale {
        id: String,
        /// The revision the writer read.
        expected: i64,
        /// The revision stored now.
        current: i64,
    },
}

impl StoreError {
    /// True when the same call may succeed later without any change by the caller.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// True when the database rejected the write because of a unique constraint.
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Conflict(_) => true,
            StoreError::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => {
                StoreError::Unavailable("timed out waiting for a database connection".into())
            }
            sqlx::Error::PoolClosed => StoreError::Unavailable("the store is closed".into()),
            sqlx::Error::Io(io) => StoreError::Unavailable(format!("database I/O error: {io}")),
            sqlx::Error::Tls(tls) => StoreError::Unavailable(format!("database TLS error: {tls}")),
            sqlx::Error::Database(db) if is_busy(db.as_ref()) => {
                StoreError::Unavailable(format!("database is busy: {}", db.message()))
            }
            other => StoreError::Database(other),
        }
    }
}

/// SQLite `SQLITE_BUSY`/`SQLITE_LOCKED` (and their extended codes), PostgreSQL
/// `admin_shutdown`/`cannot_connect_now`/`too_many_connections`.
fn is_busy(db: &dyn sqlx::error::DatabaseError) -> bool {
    let code = db.code();
    let code = code.as_deref().unwrap_or("");
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        code.parse::<i64>()
            .map(|n| matches!(n & 0xff, 5 | 6))
            .unwrap_or(false)
    } else {
        matches!(code, "57P01" | "57P03" | "53300")
    }
}
