//! [`SqliteStore`]: everything in one SQLite file, in WAL mode.

mod group;
mod legacy;
mod outbox;
mod read;
mod schema;
mod write;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags};

use self::group::Writer;
use self::write::Write;
use super::records::{
    AuditEntry, Loaded, PinRecord, RolloutRecord, SettingRecord, SpendLine, StoredClientKey,
    UpstreamKeyRecord, UsageLine, UsageQuery, UsageRecord,
};
use super::{Store, StoreError};

pub(crate) use self::outbox::{Entry, Outbox, Waiting};

/// Usage records deleted per transaction when pruning: small enough that
/// the commits of answered requests waiting behind one are not held up for
/// long.
const PRUNE_BATCH: i64 = 5_000;

/// Everything in one SQLite file, in WAL mode, with two connections: one
/// writes (group commits, see `group.rs`), one reads, so that a report over
/// a million records never holds up the commit an answered request waits
/// for. One gateway owns the file: a lock file beside it (`<path>.lock`)
/// refuses a second one.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer<Write>,
    reader: Mutex<Connection>,
    /// Held (locked) while the store is open.
    _lock: File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

pub(super) fn open_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        what: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Takes the lock file beside the database, or says who holds it.
pub(super) fn take_lock(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| open_error(path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            what: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(open_error(path, e)),
    }
}

/// The write connection: WAL (appends only) with `synchronous = NORMAL`, so
/// a commit survives the process being killed (not a power cut, which
/// would need FULL), and the schema brought up to date.
fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(|e| open_error(path, e))?;
    let setup = |c: &Connection| -> rusqlite::Result<()> {
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")
    };
    setup(&conn).map_err(|e| open_error(path, e))?;
    schema::migrate(&mut conn, &path.display().to_string())?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_error(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date. Refused if another process has it open, or if a
    /// newer gateway wrote it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let lock = take_lock(path)?;
        let writer = open_writer(path)?;
        let reader = open_reader(path)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Writer::new(writer, write::commit_all),
                reader: Mutex::new(reader),
                _lock: lock,
            }),
        })
    }

    /// Runs `f` on the read connection, on a blocking thread.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.reader.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Stopped)?
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.inner.writer.queued()
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        self.read(read::load).await
    }

    async fn append_usage(&self, record: UsageRecord) -> Result<(), StoreError> {
        self.inner.writer.write(Write::Usage(record)).await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.inner.writer.write(Write::Audit(entry)).await
    }

    async fn save_client_key(&self, key: StoredClientKey) -> Result<(), StoreError> {
        self.inner.writer.write(Write::ClientKey(key)).await
    }

    async fn save_upstream_key(&self, key: UpstreamKeyRecord) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(Write::UpstreamKey(Box::new(key)))
            .await
    }

    async fn save_rollout(&self, rollout: RolloutRecord) -> Result<(), StoreError> {
        self.inner.writer.write(Write::Rollout(rollout)).await
    }

    async fn save_setting(&self, setting: SettingRecord) -> Result<(), StoreError> {
        self.inner.writer.write(Write::Setting(setting)).await
    }

    async fn save_pin(&self, pin: PinRecord) -> Result<(), StoreError> {
        self.inner.writer.write(Write::Pin(pin)).await
    }

    async fn find_pin(&self, id: &str, since: i64) -> Result<Option<PinRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| read::pin(c, &id, since)).await
    }

    async fn prune_pins(&self, before: i64) -> Result<u64, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let n = inner.writer.with_connection(|c| {
                c.prepare_cached("DELETE FROM pins WHERE at < ?1")?
                    .execute([before])
            })?;
            Ok(n as u64)
        })
        .await
        .map_err(|_| StoreError::Stopped)?
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
        let q = query.clone();
        self.read(move |c| read::usage(c, &q)).await
    }

    async fn spend_since(&self, from: i64) -> Result<Vec<SpendLine>, StoreError> {
        self.read(move |c| read::spend_since(c, from)).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |c| read::audit(c, limit)).await
    }

    async fn prune_usage(&self, before: i64) -> Result<u64, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || prune(&inner.writer, before))
            .await
            .map_err(|_| StoreError::Stopped)?
    }

    fn describe(&self) -> String {
        format!(
            "state is stored in {} (SQLite, WAL, schema version {})",
            self.inner.path.display(),
            schema::LATEST
        )
    }
}

/// Deletes old usage in batches of [`PRUNE_BATCH`] (records are found in
/// the order they were written, which is their time order, so no index on
/// time is kept up on every commit for this hourly job), letting queued
/// commits through between batches; then the hourly totals of the hours
/// that ended before `before`.
fn prune(writer: &Writer<Write>, before: i64) -> Result<u64, StoreError> {
    let mut total = 0u64;
    loop {
        let n = writer.with_connection(|c| {
            c.prepare_cached(
                "DELETE FROM usage WHERE id IN
                 (SELECT id FROM usage WHERE at < ?1 ORDER BY id LIMIT ?2)",
            )?
            .execute(rusqlite::params![before, PRUNE_BATCH])
        })?;
        total += n as u64;
        if (n as i64) < PRUNE_BATCH {
            break;
        }
    }
    writer.with_connection(|c| {
        c.prepare_cached("DELETE FROM usage_hours WHERE hour <= ?1")?
            .execute([before.saturating_sub(super::HOUR_MS)])
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests;
