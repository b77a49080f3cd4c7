//! Why a store call failed.

/// A store call failed. Messages name what (a file, a table, a record) and
/// never hold a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be opened or set up.
    #[error("cannot open {what}: {reason}")]
    Open {
        /// What: a file's path, a database's host.
        what: String,
        /// Why.
        reason: String,
    },
    /// Another process holds the store exclusively.
    #[error("{what} is in use by another process (another gateway?)")]
    InUse {
        /// The file.
        what: String,
    },
    /// The store was written by a newer gateway whose schema this one does
    /// not know.
    #[error(
        "{what} has schema version {found}, newer than this gateway knows ({known}): run a newer gateway"
    )]
    SchemaTooNew {
        /// The store.
        what: String,
        /// The version found.
        found: u32,
        /// The newest version this gateway knows.
        known: u32,
    },
    /// A schema migration failed; the store was left at the version before it.
    #[error("migrating {what} to schema version {version} failed: {reason}")]
    Migration {
        /// The store.
        what: String,
        /// The version being migrated to.
        version: u32,
        /// Why.
        reason: String,
    },
    /// A stored record could not be read back.
    #[error("a stored {what} is unreadable: {reason}")]
    Corrupt {
        /// The kind of record.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The database engine refused an operation.
    #[error("store: {0}")]
    Engine(String),
    /// The database did not answer in time, or its connection broke; the
    /// call may be tried again.
    #[error("{what} is unavailable: {reason}")]
    Unavailable {
        /// The database's host.
        what: String,
        /// Why.
        reason: String,
    },
    /// The store has been shut down.
    #[error("the store has stopped")]
    Stopped,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}
