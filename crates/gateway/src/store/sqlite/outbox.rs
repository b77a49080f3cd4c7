//! [`Outbox`]: records committed locally before they are answered for, and
//! shipped to a shared database later.
//!
//! A gateway on a shared database answers a request once its usage record
//! is in the outbox, a SQLite file of its own (WAL, group commits, as the
//! single-instance store): no request waits for a network round trip, a
//! database that is down costs nothing but a longer queue, and a process
//! killed with `kill -9` finds its records again when it restarts with the
//! same file. Each record gets a sequence number that is never reused
//! (`AUTOINCREMENT`), and the outbox a random origin id made when the file
//! is created: `(origin, seq)` names a record everywhere, so shipping it
//! twice (a crash between the shared commit and the local delete) stores
//! it once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;

use super::group::Writer;
use super::{open_error, take_lock, write};
use crate::store::StoreError;
use crate::store::columns;
use crate::store::records::{AuditEntry, UsageRecord};

/// The outbox's schema version (`PRAGMA user_version`).
const VERSION: u32 = 2;

/// One record waiting to be shipped.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// A settled request.
    Usage(UsageRecord),
    /// A management action.
    Audit(AuditEntry),
}

/// What waits to be shipped, oldest first, each with its sequence number.
#[derive(Clone, Debug, Default)]
pub(crate) struct Waiting {
    /// Usage records.
    pub(crate) usage: Vec<(i64, UsageRecord)>,
    /// Audit entries.
    pub(crate) audit: Vec<(i64, AuditEntry)>,
}

impl Waiting {
    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.usage.is_empty() && self.audit.is_empty()
    }
}

/// A local SQLite file of records waiting for the shared database.
#[derive(Clone)]
pub(crate) struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    origin: String,
    writer: Writer<Entry>,
    /// The lock file, held until [`Outbox::release`] (or the end).
    lock: std::sync::Mutex<Option<File>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.inner.path)
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `path`; refused if another
    /// process has it open or a newer gateway wrote it.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let lock = take_lock(path)?;
        let mut conn = Connection::open(path).map_err(|e| open_error(path, e))?;
        let origin = set_up(&mut conn).map_err(|e| match e {
            SetUp::TooNew(found) => StoreError::SchemaTooNew {
                what: path.display().to_string(),
                found,
                known: VERSION,
            },
            SetUp::Sqlite(e) => open_error(path, e),
        })?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                origin,
                writer: Writer::new(conn, commit_all),
                lock: std::sync::Mutex::new(Some(lock)),
            }),
        })
    }

    /// The origin id that, with a record's sequence number, names it.
    pub(crate) fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends `entry`; returns once it is committed to the file. Refused
    /// once the outbox is [released](Self::release).
    pub(crate) async fn append(&self, entry: Entry) -> Result<(), StoreError> {
        if self.is_released() {
            return Err(StoreError::Stopped);
        }
        self.inner.writer.write(entry).await
    }

    fn is_released(&self) -> bool {
        self.inner
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none()
    }

    /// Gives up the file for good (the store is closing): its lock is
    /// released at once, so that a new store in this process (a restart)
    /// can open it even while work of this one finishes.
    pub(crate) fn release(&self) {
        self.inner
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    /// Up to `limit` records of each kind waiting, oldest first.
    pub(crate) async fn waiting(&self, limit: usize) -> Result<Waiting, StoreError> {
        self.blocking(move |c| read_waiting(c, limit)).await
    }

    /// Forgets the records shipped: usage up to `usage_seq` and audit
    /// entries up to `audit_seq` (inclusive).
    pub(crate) async fn forget(&self, usage_seq: i64, audit_seq: i64) -> Result<(), StoreError> {
        self.blocking(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM usage WHERE seq <= ?1", [usage_seq])?;
            tx.execute("DELETE FROM audit WHERE seq <= ?1", [audit_seq])?;
            tx.commit()
        })
        .await
    }

    /// How many records wait.
    pub(crate) async fn len(&self) -> Result<u64, StoreError> {
        self.blocking(|c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM usage) + (SELECT count(*) FROM audit)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(columns::count)
        })
        .await
    }

    /// Runs `f` on the connection between group commits, on a blocking
    /// thread.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.writer.with_connection(f))
            .await
            .map_err(|_| StoreError::Stopped)?
            .map_err(StoreError::from)
    }
}

enum SetUp {
    TooNew(u32),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for SetUp {
    fn from(e: rusqlite::Error) -> Self {
        SetUp::Sqlite(e)
    }
}

/// WAL with `synchronous = NORMAL` (a commit survives the process being
/// killed), the tables, and the origin id (made once); returns the id.
fn set_up(conn: &mut Connection) -> Result<String, SetUp> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(SetUp::TooNew(found));
    }
    let tx = conn.transaction()?;
    if found == 1 {
        // Version 2 keeps the prompt tokens read from and written to a
        // provider's cache, and the completion tokens spent reasoning.
        tx.execute_batch(
            "ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE usage ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE usage ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;",
        )?;
        tx.pragma_update(None, "user_version", VERSION)?;
    } else if found < VERSION {
        tx.execute_batch(
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE usage (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 at INTEGER NOT NULL, key_id TEXT, key_name TEXT, team TEXT,
                 provider TEXT NOT NULL, upstream_key TEXT NOT NULL, model TEXT NOT NULL,
                 prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
                 cost_micros INTEGER NOT NULL, cached_tokens INTEGER NOT NULL DEFAULT 0,
                 cache_write_tokens INTEGER NOT NULL DEFAULT 0,
                 reasoning_tokens INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE audit (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
                 target TEXT NOT NULL, before TEXT, after TEXT);",
        )?;
        let origin = format!(
            "ob_{}",
            crate::ids::random_hex::<16>()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?
        );
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('origin', ?1)",
            [&origin],
        )?;
        tx.pragma_update(None, "user_version", VERSION)?;
    }
    let origin: String = tx.query_row("SELECT value FROM meta WHERE name = 'origin'", [], |r| {
        r.get(0)
    })?;
    tx.commit()?;
    Ok(origin)
}

fn commit_all(conn: &mut Connection, entries: &[Entry]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for e in entries {
        match e {
            Entry::Usage(u) => write::usage(&tx, u)?,
            Entry::Audit(a) => write::audit(&tx, a)?,
        }
    }
    tx.commit()
}

fn read_waiting(c: &mut Connection, limit: usize) -> rusqlite::Result<Waiting> {
    let limit = columns::int(limit as u64);
    let mut stmt = c.prepare_cached(
        "SELECT seq, at, key_id, key_name, team, provider, upstream_key, model,
                prompt_tokens, completion_tokens, cost_micros, cached_tokens,
                cache_write_tokens, reasoning_tokens
         FROM usage ORDER BY seq LIMIT ?1",
    )?;
    let usage = stmt
        .query_map([limit], |r| {
            Ok((
                r.get(0)?,
                UsageRecord {
                    at: r.get(1)?,
                    key_id: r.get(2)?,
                    key_name: r.get(3)?,
                    team: r.get(4)?,
                    provider: r.get(5)?,
                    upstream_key: r.get(6)?,
                    model: r.get(7)?,
                    prompt_tokens: columns::count(r.get(8)?),
                    completion_tokens: columns::count(r.get(9)?),
                    cost_micros: columns::count(r.get(10)?),
                    cached_tokens: columns::count(r.get(11)?),
                    cache_write_tokens: columns::count(r.get(12)?),
                    reasoning_tokens: columns::count(r.get(13)?),
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = c.prepare_cached(
        "SELECT seq, at, actor, action, target, before, after FROM audit ORDER BY seq LIMIT ?1",
    )?;
    let audit = stmt
        .query_map([limit], |r| {
            Ok((
                r.get(0)?,
                AuditEntry {
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    before: columns::json_from(r.get(5)?),
                    after: columns::json_from(r.get(6)?),
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Waiting { usage, audit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::usage_record;

    #[tokio::test]
    async fn an_outbox_of_the_first_version_keeps_its_records_and_gains_cached_tokens() {
        let dir =
            std::env::temp_dir().join(format!("outbox-{}", crate::ids::random_hex::<8>().unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("outbox.db");
        {
            // A version 1 outbox, as an earlier gateway left it, with a record waiting.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('origin', 'ob_old');
                 CREATE TABLE usage (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     at INTEGER NOT NULL, key_id TEXT, key_name TEXT, team TEXT,
                     provider TEXT NOT NULL, upstream_key TEXT NOT NULL, model TEXT NOT NULL,
                     prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
                     cost_micros INTEGER NOT NULL);
                 CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
                     target TEXT NOT NULL, before TEXT, after TEXT);
                 INSERT INTO usage (at, provider, upstream_key, model, prompt_tokens,
                     completion_tokens, cost_micros) VALUES (7, 'relay', 'k', 'm', 10, 2, 30);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.origin(), "ob_old");
        let mut r = usage_record(9, "key_1", "m", 5);
        r.cached_tokens = 4;
        r.reasoning_tokens = 2;
        r.cache_write_tokens = 1;
        outbox.append(Entry::Usage(r.clone())).await.unwrap();
        let waiting = outbox.waiting(10).await.unwrap();
        assert_eq!(waiting.usage.len(), 2);
        assert_eq!(
            (
                waiting.usage[0].1.prompt_tokens,
                waiting.usage[0].1.cached_tokens
            ),
            (10, 0)
        );
        assert_eq!(waiting.usage[1].1, r);
        drop(outbox);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn records_keep_their_numbers_and_the_origin_outlives_a_reopen() {
        let dir =
            std::env::temp_dir().join(format!("outbox-{}", crate::ids::random_hex::<8>().unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("outbox.db");
        let outbox = Outbox::open(&path).unwrap();
        let origin = outbox.origin().to_owned();
        assert!(origin.starts_with("ob_"));
        assert!(
            matches!(Outbox::open(&path), Err(StoreError::InUse { .. })),
            "one process at a time"
        );
        for i in 0..3 {
            let r = usage_record(i, "key_1", "m", 5);
            outbox.append(Entry::Usage(r)).await.unwrap();
        }
        let waiting = outbox.waiting(10).await.unwrap();
        let seqs: Vec<i64> = waiting.usage.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(waiting.usage[2].1, usage_record(2, "key_1", "m", 5));
        outbox.forget(3, 0).await.unwrap();
        assert_eq!(outbox.len().await.unwrap(), 0);
        drop(outbox);
        // Emptied and reopened: numbers go on, never reused; same origin.
        let outbox = Outbox::open(&path).unwrap();
        assert_eq!(outbox.origin(), origin);
        let r = usage_record(9, "key_1", "m", 5);
        outbox.append(Entry::Usage(r)).await.unwrap();
        let waiting = outbox.waiting(10).await.unwrap();
        assert_eq!(waiting.usage[0].0, 4);
        drop(outbox);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
