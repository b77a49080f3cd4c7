//! State that survives restarts: client keys, usage, upstream key states,
//! canary state and the audit log.
//!
//! [`Store`] is shaped by what the gateway needs, not by SQL, so that a
//! store shared by several gateway instances (Redis, say) can follow without
//! touching the handlers. [`SqliteStore`] keeps everything in one SQLite file
//! (WAL mode); [`MemoryStore`] keeps it in memory, for a gateway started
//! without `[storage] path`.
//!
//! A store sits behind a [`StoreHandle`], which commits in groups: writes
//! queue, and whichever writer finds the store free commits everything queued
//! in one transaction and answers each writer. A handler that awaits
//! [`StoreHandle::write`] therefore knows its record is committed (it
//! survives a `kill -9`), while a commit's cost is shared by every request
//! that arrived meanwhile, and no thread hand-off (two context switches per
//! request, measured as most of the cost) sits on the request path.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use serde::{Deserialize, Serialize};

/// A store failed.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// A client (team) key as stored: its hash, never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredClientKey {
    /// Stable id (`key_…`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its team.
    pub team: Option<String>,
    /// SHA-256 of the secret, lowercase hex.
    pub hash: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Allowed models; empty = all.
    pub models: Vec<String>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Refused from this time on (Unix milliseconds), if set.
    pub revoke_at: Option<i64>,
    /// The key that replaced it, after a rotation.
    pub rotated_to: Option<String>,
}

/// One settled request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// When it was answered (Unix milliseconds).
    pub at: i64,
    /// The client key's id (`None` without authentication or for a config key).
    pub key_id: Option<String>,
    /// The client key's name.
    pub key_name: Option<String>,
    /// The client's team.
    pub team: Option<String>,
    /// The provider that answered.
    pub provider: String,
    /// The upstream key that answered, by name.
    pub upstream_key: String,
    /// The model that answered.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
}

/// One line of `GET /v1/usage`: totals per client key, team and model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageLine {
    /// The client key's id (`None` for a key from the config file).
    pub key_id: Option<String>,
    /// The client key's name.
    pub key_name: Option<String>,
    /// The team.
    pub team: Option<String>,
    /// The model.
    pub model: String,
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
}

/// What `GET /v1/usage` filters on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct UsageQuery {
    /// One client key.
    pub key_id: Option<String>,
    /// One team.
    pub team: Option<String>,
    /// One model.
    pub model: Option<String>,
    /// From (Unix milliseconds, inclusive).
    pub from: Option<i64>,
    /// To (Unix milliseconds, exclusive).
    pub to: Option<i64>,
}

/// Spend since a time, per upstream key, client key, team, model and local
/// hour: enough to restore the budget's periods and the keys' daily counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendLine {
    /// The start of the hour (Unix milliseconds).
    pub hour: i64,
    /// The provider.
    pub provider: String,
    /// The upstream key.
    pub upstream_key: String,
    /// The client key's name.
    pub key_name: Option<String>,
    /// The team.
    pub team: Option<String>,
    /// The model.
    pub model: String,
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
}

/// One management action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (Unix milliseconds).
    pub at: i64,
    /// Who: the master key, or an admin client key's name.
    pub actor: String,
    /// What, e.g. `client_key.create`.
    pub action: String,
    /// On what (an id or a name).
    pub target: String,
    /// The state before (JSON; never a secret).
    pub before: Option<serde_json::Value>,
    /// The state after (JSON; never a secret).
    pub after: Option<serde_json::Value>,
}

/// What a store loads at start-up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// Client keys created through the API.
    pub client_keys: Vec<StoredClientKey>,
    /// Upstream key states by (provider, key name), as JSON.
    pub upstream_keys: BTreeMap<(String, String), serde_json::Value>,
    /// Canary states by baseline model, as JSON.
    pub canaries: BTreeMap<String, serde_json::Value>,
}

/// One write.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// A settled request.
    Usage(UsageRecord),
    /// A client key created or changed.
    ClientKey(StoredClientKey),
    /// An upstream key's state (`None`: the key was removed).
    UpstreamKey {
        /// The provider.
        provider: String,
        /// The key's name.
        name: String,
        /// Its state as JSON.
        state: Option<serde_json::Value>,
    },
    /// A rollout's state.
    Canary {
        /// The baseline model.
        model: String,
        /// Its state as JSON.
        state: serde_json::Value,
    },
    /// A management action.
    Audit(AuditEntry),
}

/// What the gateway needs from persistent storage. Calls block: writes run
/// on the task that leads a group commit (so they should take microseconds,
/// as an append does), queries on a blocking thread.
pub trait Store: Send + 'static {
    /// Everything needed at start-up.
    fn load(&mut self) -> Result<Loaded, StoreError>;
    /// Applies `batch` atomically: all of it or none.
    fn write(&mut self, batch: &[Write]) -> Result<(), StoreError>;
    /// Usage totals matching `query`, dearest first.
    fn usage(&mut self, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError>;
    /// Spend since `from` (Unix milliseconds), per hour. (A store that is
    /// never replayed, one in memory, may leave the upstream key out.)
    fn spend_since(&mut self, from: i64) -> Result<Vec<SpendLine>, StoreError>;
    /// The newest `limit` audit entries, newest first.
    fn audit(&mut self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Deletes usage records older than `before` (Unix milliseconds);
    /// returns how many went.
    fn prune_usage(&mut self, before: i64) -> Result<u64, StoreError>;
    /// A line for the start-up log: where state lives.
    fn describe(&self) -> String;
    /// Whether a commit costs enough that writers should wait a moment to
    /// share one (true by default). A store in memory says no: its writes
    /// commit at once, without the yield that lets others join.
    fn group_commit(&self) -> bool {
        true
    }
}

const HOUR_MS: i64 = 3_600_000;

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Everything in one SQLite file, in WAL mode.
pub struct SqliteStore {
    conn: rusqlite::Connection,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS client_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    team TEXT,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    models TEXT NOT NULL,
    rate_limit INTEGER,
    created_at INTEGER NOT NULL,
    revoke_at INTEGER,
    rotated_to TEXT
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    key_id TEXT,
    key_name TEXT,
    team TEXT,
    provider TEXT NOT NULL,
    upstream_key TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL
);
-- no index on usage: each would add a page to every commit; queries scan
CREATE TABLE IF NOT EXISTS upstream_keys (
    provider TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (provider, name)
);
CREATE TABLE IF NOT EXISTS canaries (
    model TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT
);
";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let setup = || -> rusqlite::Result<()> {
            // One gateway owns its database: exclusive locking takes the file
            // lock once (a second gateway on the same file is refused) instead
            // of at every transaction, and keeps the WAL index in memory.
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            conn.busy_timeout(std::time::Duration::from_millis(500))?;
            // WAL: appends only; NORMAL: a commit survives the process being
            // killed (not a power cut, which would need FULL).
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(SCHEMA)
        };
        setup().map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy => {
                StoreError(format!(
                    "{} is in use by another process (another gateway?)",
                    path.display()
                ))
            }
            e => StoreError(format!("cannot set up {}: {e}", path.display())),
        })?;
        Ok(SqliteStore {
            conn,
            path: path.to_owned(),
        })
    }
}

fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

fn parse_json(s: Option<String>) -> Option<serde_json::Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        let mut stmt = self.conn.prepare(
            "SELECT id, name, team, hash, scopes, models, rate_limit, created_at, revoke_at, rotated_to
             FROM client_keys ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredClientKey {
                id: r.get(0)?,
                name: r.get(1)?,
                team: r.get(2)?,
                hash: r.get(3)?,
                scopes: parse_list(&r.get::<_, String>(4)?),
                models: parse_list(&r.get::<_, String>(5)?),
                rate_limit: r.get(6)?,
                created_at: r.get(7)?,
                revoke_at: r.get(8)?,
                rotated_to: r.get(9)?,
            })
        })?;
        for row in rows {
            loaded.client_keys.push(row?);
        }
        drop(stmt);
        let mut stmt = self
            .conn
            .prepare("SELECT provider, name, state FROM upstream_keys")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (provider, name, state) = row?;
            if let Some(v) = parse_json(Some(state)) {
                loaded.upstream_keys.insert((provider, name), v);
            }
        }
        drop(stmt);
        let mut stmt = self.conn.prepare("SELECT model, state FROM canaries")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (model, state) = row?;
            if let Some(v) = parse_json(Some(state)) {
                loaded.canaries.insert(model, v);
            }
        }
        Ok(loaded)
    }

    fn write(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for w in batch {
            match w {
                Write::Usage(u) => {
                    tx.prepare_cached(
                        "INSERT INTO usage (at, key_id, key_name, team, provider, upstream_key, model,
                         prompt_tokens, completion_tokens, cost_micros)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )?
                    .execute(rusqlite::params![
                        u.at,
                        u.key_id,
                        u.key_name,
                        u.team,
                        u.provider,
                        u.upstream_key,
                        u.model,
                        to_i64(u.prompt_tokens),
                        to_i64(u.completion_tokens),
                        to_i64(u.cost_micros),
                    ])?;
                }
                Write::ClientKey(k) => {
                    tx.prepare_cached(
                        "INSERT INTO client_keys (id, name, team, hash, scopes, models, rate_limit,
                         created_at, revoke_at, rotated_to)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                         ON CONFLICT(id) DO UPDATE SET name = ?2, team = ?3, scopes = ?5,
                         models = ?6, rate_limit = ?7, revoke_at = ?9, rotated_to = ?10",
                    )?
                    .execute(rusqlite::params![
                        k.id,
                        k.name,
                        k.team,
                        k.hash,
                        json_list(&k.scopes),
                        json_list(&k.models),
                        k.rate_limit,
                        k.created_at,
                        k.revoke_at,
                        k.rotated_to,
                    ])?;
                }
                Write::UpstreamKey {
                    provider,
                    name,
                    state: Some(state),
                } => {
                    tx.prepare_cached(
                        "INSERT INTO upstream_keys (provider, name, state) VALUES (?1, ?2, ?3)
                         ON CONFLICT(provider, name) DO UPDATE SET state = ?3",
                    )?
                    .execute(rusqlite::params![
                        provider,
                        name,
                        json_text(state)
                    ])?;
                }
                Write::UpstreamKey {
                    provider,
                    name,
                    state: None,
                } => {
                    tx.prepare_cached(
                        "DELETE FROM upstream_keys WHERE provider = ?1 AND name = ?2",
                    )?
                    .execute(rusqlite::params![provider, name])?;
                }
                Write::Canary { model, state } => {
                    tx.prepare_cached(
                        "INSERT INTO canaries (model, state) VALUES (?1, ?2)
                         ON CONFLICT(model) DO UPDATE SET state = ?2",
                    )?
                    .execute(rusqlite::params![model, json_text(state)])?;
                }
                Write::Audit(a) => {
                    tx.prepare_cached(
                        "INSERT INTO audit (at, actor, action, target, before, after)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(rusqlite::params![
                        a.at,
                        a.actor,
                        a.action,
                        a.target,
                        a.before.as_ref().map(json_text),
                        a.after.as_ref().map(json_text),
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn usage(&mut self, q: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key_id, key_name, team, model, COUNT(*), SUM(prompt_tokens),
                    SUM(completion_tokens), SUM(cost_micros)
             FROM usage
             WHERE (?1 IS NULL OR key_id = ?1) AND (?2 IS NULL OR team = ?2)
               AND (?3 IS NULL OR model = ?3) AND (?4 IS NULL OR at >= ?4)
               AND (?5 IS NULL OR at < ?5)
             GROUP BY key_id, key_name, team, model
             ORDER BY SUM(cost_micros) DESC, model",
        )?;
        let rows = stmt.query_map(
            rusqlite::params![q.key_id, q.team, q.model, q.from, q.to],
            |r| {
                Ok(UsageLine {
                    key_id: r.get(0)?,
                    key_name: r.get(1)?,
                    team: r.get(2)?,
                    model: r.get(3)?,
                    requests: to_u64(r.get(4)?),
                    prompt_tokens: to_u64(r.get(5)?),
                    completion_tokens: to_u64(r.get(6)?),
                    cost_micros: to_u64(r.get(7)?),
                })
            },
        )?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    fn spend_since(&mut self, from: i64) -> Result<Vec<SpendLine>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT (at / ?2) * ?2 AS hour, provider, upstream_key, key_name, team, model, COUNT(*),
                    SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros)
             FROM usage WHERE at >= ?1
             GROUP BY hour, provider, upstream_key, key_name, team, model
             ORDER BY hour",
        )?;
        let rows = stmt.query_map(rusqlite::params![from, HOUR_MS], |r| {
            Ok(SpendLine {
                hour: r.get(0)?,
                provider: r.get(1)?,
                upstream_key: r.get(2)?,
                key_name: r.get(3)?,
                team: r.get(4)?,
                model: r.get(5)?,
                requests: to_u64(r.get(6)?),
                prompt_tokens: to_u64(r.get(7)?),
                completion_tokens: to_u64(r.get(8)?),
                cost_micros: to_u64(r.get(9)?),
            })
        })?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    fn audit(&mut self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, actor, action, target, before, after FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([to_i64(limit as u64)], |r| {
            Ok(AuditEntry {
                at: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                target: r.get(3)?,
                before: parse_json(r.get(4)?),
                after: parse_json(r.get(5)?),
            })
        })?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    fn prune_usage(&mut self, before: i64) -> Result<u64, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM usage WHERE at < ?1", [before])?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn describe(&self) -> String {
        format!("state is stored in {} (SQLite, WAL)", self.path.display())
    }
}

/// (hour, client key id, client key name, team, model).
type UsageKey = (i64, Option<String>, Option<String>, Option<String>, String);

/// Everything in memory: lost when the process ends. Usage is kept as
/// hourly totals per client key, team and model (not per upstream key: a
/// memory store is never replayed), for 32 days, so memory stays bounded.
#[derive(Debug, Default)]
pub struct MemoryStore {
    client_keys: BTreeMap<String, StoredClientKey>,
    upstream_keys: BTreeMap<(String, String), serde_json::Value>,
    canaries: BTreeMap<String, serde_json::Value>,
    usage: BTreeMap<UsageKey, Totals>,
    audit: std::collections::VecDeque<AuditEntry>,
}

/// Requests, tokens and cost added up.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_micros: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_micros += other.cost_micros;
    }
}

impl From<&UsageRecord> for Totals {
    fn from(u: &UsageRecord) -> Self {
        Totals {
            requests: 1,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_micros: u.cost_micros,
        }
    }
}

/// How long a memory store keeps usage.
const MEMORY_USAGE_MS: i64 = 32 * 86_400_000;

/// The audit entries a memory store keeps.
const MEMORY_AUDIT: usize = 10_000;

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        Ok(Loaded {
            client_keys: self.client_keys.values().cloned().collect(),
            upstream_keys: self.upstream_keys.clone(),
            canaries: self.canaries.clone(),
        })
    }

    fn write(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        for w in batch {
            match w {
                Write::Usage(u) => {
                    let hour = u.at.div_euclid(HOUR_MS) * HOUR_MS;
                    if self.usage.last_key_value().is_none_or(|(k, _)| k.0 < hour) {
                        // A new hour: forget what is older than the window.
                        while self
                            .usage
                            .first_key_value()
                            .is_some_and(|(k, _)| k.0 < hour - MEMORY_USAGE_MS)
                        {
                            self.usage.pop_first();
                        }
                    }
                    let k = (
                        hour,
                        u.key_id.clone(),
                        u.key_name.clone(),
                        u.team.clone(),
                        u.model.clone(),
                    );
                    self.usage.entry(k).or_default().add(u.into());
                }
                Write::ClientKey(k) => {
                    self.client_keys.insert(k.id.clone(), k.clone());
                }
                Write::UpstreamKey {
                    provider,
                    name,
                    state,
                } => {
                    let k = (provider.clone(), name.clone());
                    match state {
                        Some(s) => self.upstream_keys.insert(k, s.clone()),
                        None => self.upstream_keys.remove(&k),
                    };
                }
                Write::Canary { model, state } => {
                    self.canaries.insert(model.clone(), state.clone());
                }
                Write::Audit(a) => {
                    if self.audit.len() == MEMORY_AUDIT {
                        self.audit.pop_front();
                    }
                    self.audit.push_back(a.clone());
                }
            }
        }
        Ok(())
    }

    fn usage(&mut self, q: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
        let mut lines: BTreeMap<UsageKey, Totals> = BTreeMap::new();
        for ((hour, key_id, key_name, team, model), t) in &self.usage {
            let keep = q.key_id.as_ref().is_none_or(|k| key_id.as_ref() == Some(k))
                && q.team.as_ref().is_none_or(|x| team.as_ref() == Some(x))
                && q.model.as_ref().is_none_or(|m| m == model)
                && q.from.is_none_or(|f| *hour + HOUR_MS > f)
                && q.to.is_none_or(|to| *hour < to);
            if keep {
                lines
                    .entry((
                        0,
                        key_id.clone(),
                        key_name.clone(),
                        team.clone(),
                        model.clone(),
                    ))
                    .or_default()
                    .add(*t);
            }
        }
        let mut v: Vec<UsageLine> = lines
            .into_iter()
            .map(|((_, key_id, key_name, team, model), t)| UsageLine {
                key_id,
                key_name,
                team,
                model,
                requests: t.requests,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                cost_micros: t.cost_micros,
            })
            .collect();
        v.sort_by(|a, b| {
            b.cost_micros
                .cmp(&a.cost_micros)
                .then(a.model.cmp(&b.model))
        });
        Ok(v)
    }

    fn spend_since(&mut self, from: i64) -> Result<Vec<SpendLine>, StoreError> {
        Ok(self
            .usage
            .iter()
            .filter(|(k, _)| k.0 + HOUR_MS > from)
            .map(|((hour, _, key_name, team, model), t)| SpendLine {
                hour: *hour,
                provider: String::new(),
                upstream_key: String::new(),
                key_name: key_name.clone(),
                team: team.clone(),
                model: model.clone(),
                requests: t.requests,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                cost_micros: t.cost_micros,
            })
            .collect())
    }

    fn audit(&mut self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.audit.iter().rev().take(limit).cloned().collect())
    }

    fn prune_usage(&mut self, before: i64) -> Result<u64, StoreError> {
        let old = self.usage.len();
        self.usage.retain(|k, _| k.0 + HOUR_MS > before);
        Ok((old - self.usage.len()) as u64)
    }

    fn describe(&self) -> String {
        "state is in memory only: it is lost when the gateway stops (set [storage] path to keep it)"
            .into()
    }

    fn group_commit(&self) -> bool {
        false
    }
}

type Waiter = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Writes waiting for the next commit.
#[derive(Default)]
struct Pending {
    writes: Vec<Write>,
    /// (index in `writes`, who waits for it).
    waiters: Vec<(usize, Waiter)>,
}

struct Shared {
    store: Mutex<Box<dyn Store>>,
    pending: Mutex<Pending>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Group commit without a thread of its own: whoever finds the store free
    /// commits everything queued, for everyone, until the queue is empty;
    /// whoever finds it busy leaves its write to the holder. The holder looks
    /// at the queue again after letting go, so no write is left behind.
    fn lead(&self) {
        loop {
            let mut store = match self.store.try_lock() {
                Ok(s) => s,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            self.drain(store.as_mut());
            drop(store);
            if lock(&self.pending).writes.is_empty() {
                return;
            }
        }
    }

    /// Commits what is queued, batch after batch, until nothing is.
    fn drain(&self, store: &mut dyn Store) {
        loop {
            let batch = std::mem::take(&mut *lock(&self.pending));
            if batch.writes.is_empty() {
                return;
            }
            commit(store, batch);
        }
    }
}

fn commit(store: &mut dyn Store, batch: Pending) {
    match store.write(&batch.writes) {
        Ok(()) => {
            for (_, done) in batch.waiters {
                let _ = done.send(Ok(()));
            }
        }
        // One bad write must not cost the others: retry them one by one.
        Err(e) => {
            tracing::warn!(
                "a batch of {} writes failed ({e}); retrying each",
                batch.writes.len()
            );
            let mut answers: std::collections::HashMap<usize, Waiter> =
                batch.waiters.into_iter().collect();
            for (i, w) in batch.writes.iter().enumerate() {
                let result = store.write(std::slice::from_ref(w)).map_err(|e| e.0);
                if let Err(e) = &result {
                    tracing::error!("a write was not saved: {e}");
                }
                if let Some(done) = answers.remove(&i) {
                    let _ = done.send(result);
                }
            }
        }
    }
}

/// Leads a group commit when dropped, however the task holding it ends.
struct Lead<'a>(&'a Shared);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.0.lead();
    }
}

/// The way to a store. Writes are committed in groups: a write waits for the
/// commit that holds it, and one commit serves every write queued meanwhile.
/// Cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    shared: Arc<Shared>,
    describe: Arc<str>,
    group_commit: bool,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("store", &self.describe)
            .finish()
    }
}

fn stopped() -> StoreError {
    StoreError("the store has stopped".into())
}

impl StoreHandle {
    /// Takes `store` and loads what it holds.
    pub fn start(mut store: Box<dyn Store>) -> Result<(Self, Loaded), StoreError> {
        let loaded = store.load()?;
        let describe: Arc<str> = store.describe().into();
        let group_commit = store.group_commit();
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            pending: Mutex::new(Pending::default()),
        });
        Ok((
            StoreHandle {
                shared,
                describe,
                group_commit,
            },
            loaded,
        ))
    }

    /// Where state lives, for the start-up log.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Writes `w` and waits until it is committed.
    pub async fn write(&self, w: Write) -> Result<(), StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        {
            let mut p = lock(&self.shared.pending);
            let i = p.writes.len();
            p.writes.push(w);
            p.waiters.push((i, done));
        }
        // Let the tasks ready on this worker queue their writes first: one
        // commit then serves them all. Should this task be dropped while it
        // yields (its client went away), the guard still commits the write.
        let lead = Lead(&self.shared);
        if self.group_commit {
            tokio::task::yield_now().await;
        }
        drop(lead);
        match wait.await {
            Ok(r) => r.map_err(StoreError),
            Err(_) => Err(stopped()),
        }
    }

    /// Queues `w` without waiting for its commit (state snapshots that a
    /// later one supersedes).
    pub fn write_later(&self, w: Write) {
        lock(&self.shared.pending).writes.push(w);
        self.shared.lead();
    }

    /// Runs `f` on the store (on a blocking thread) after every write queued
    /// before it.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = lock(&shared.store);
            shared.drain(store.as_mut());
            let r = f(store.as_mut());
            shared.drain(store.as_mut());
            drop(store);
            shared.lead();
            r
        })
        .await
        .map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(at: i64, key: &str, model: &str, cost: u64) -> Write {
        Write::Usage(UsageRecord {
            at,
            key_id: Some(key.into()),
            key_name: Some(format!("name-{key}")),
            team: Some("search".into()),
            provider: "relay".into(),
            upstream_key: "prod-1".into(),
            model: model.into(),
            prompt_tokens: 10,
            completion_tokens: 5,
            cost_micros: cost,
        })
    }

    fn exercise(store: &mut dyn Store) {
        let key = StoredClientKey {
            id: "key_1".into(),
            name: "web".into(),
            team: Some("search".into()),
            hash: "ab".repeat(32),
            scopes: vec!["chat:write".into()],
            models: vec![],
            rate_limit: Some(200),
            created_at: 1,
            revoke_at: None,
            rotated_to: None,
        };
        store
            .write(&[
                Write::ClientKey(key.clone()),
                usage(1_000, "key_1", "gpt-4o", 300),
                usage(2_000, "key_1", "gpt-4o", 200),
                usage(HOUR_MS * 5, "key_2", "gpt-4o-mini", 7),
                Write::UpstreamKey {
                    provider: "relay".into(),
                    name: "prod-1".into(),
                    state: Some(serde_json::json!({"state": "disabled"})),
                },
                Write::Canary {
                    model: "gpt-4.1".into(),
                    state: serde_json::json!({"percent": 20}),
                },
                Write::Audit(AuditEntry {
                    at: 3,
                    actor: "master".into(),
                    action: "client_key.create".into(),
                    target: "key_1".into(),
                    before: None,
                    after: Some(serde_json::json!({"name": "web"})),
                }),
            ])
            .unwrap();
        let revoked = StoredClientKey {
            revoke_at: Some(99),
            ..key
        };
        store.write(&[Write::ClientKey(revoked.clone())]).unwrap();

        let loaded = store.load().unwrap();
        assert_eq!(loaded.client_keys, vec![revoked]);
        assert_eq!(
            loaded.upstream_keys[&("relay".to_owned(), "prod-1".to_owned())]["state"],
            "disabled"
        );
        assert_eq!(loaded.canaries["gpt-4.1"]["percent"], 20);

        let all = store.usage(&UsageQuery::default()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].requests, all[0].cost_micros), (2, 500));
        assert_eq!(all[0].prompt_tokens, 20);
        let one = store
            .usage(&UsageQuery {
                model: Some("gpt-4o-mini".into()),
                ..UsageQuery::default()
            })
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].key_id.as_deref(), Some("key_2"));
        let late = store
            .usage(&UsageQuery {
                from: Some(HOUR_MS),
                ..UsageQuery::default()
            })
            .unwrap();
        assert_eq!(late.len(), 1);
        let spend = store.spend_since(0).unwrap();
        assert_eq!(spend.iter().map(|s| s.cost_micros).sum::<u64>(), 507);
        assert_eq!(spend.iter().map(|s| s.requests).sum::<u64>(), 3);
        assert_eq!(store.audit(10).unwrap()[0].action, "client_key.create");
        store.prune_usage(HOUR_MS).unwrap();
        let left = store.usage(&UsageQuery::default()).unwrap();
        assert_eq!(left.len(), 1, "the records of the first hour are gone");
        assert_eq!(left[0].key_id.as_deref(), Some("key_2"));

        store
            .write(&[Write::UpstreamKey {
                provider: "relay".into(),
                name: "prod-1".into(),
                state: None,
            }])
            .unwrap();
        assert!(store.load().unwrap().upstream_keys.is_empty());
    }

    #[test]
    fn memory_store_keeps_everything() {
        exercise(&mut MemoryStore::default());
    }

    #[test]
    fn a_database_in_use_is_refused_with_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("gateway-store-busy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("busy.db");
        let first = SqliteStore::open(&path).unwrap();
        let e = SqliteStore::open(&path).unwrap_err();
        assert!(e.to_string().contains("in use by another process"), "{e}");
        drop(first);
        assert!(SqliteStore::open(&path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sqlite_store_keeps_everything_across_reopening() {
        let dir = std::env::temp_dir().join(format!("gateway-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("unit.db");
        let _ = std::fs::remove_file(&path);
        exercise(&mut SqliteStore::open(&path).unwrap());
        let mut again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.load().unwrap().client_keys.len(), 1);
        assert_eq!(again.usage(&UsageQuery::default()).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_failed_batch_writes_nothing_and_is_retried_one_by_one() {
        let dir = std::env::temp_dir().join(format!("gateway-store-tx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tx.db");
        let _ = std::fs::remove_file(&path);
        let mut s = SqliteStore::open(&path).unwrap();
        let key = |id: &str| StoredClientKey {
            id: id.into(),
            name: "n".into(),
            team: None,
            hash: "same".into(),
            scopes: vec![],
            models: vec![],
            rate_limit: None,
            created_at: 0,
            revoke_at: None,
            rotated_to: None,
        };
        // The second key repeats the first one's hash: the whole batch fails.
        let r = s.write(&[
            usage(1, "a", "m", 1),
            Write::ClientKey(key("a")),
            Write::ClientKey(key("b")),
        ]);
        assert!(r.is_err());
        assert!(s.usage(&UsageQuery::default()).unwrap().is_empty());
        assert!(s.load().unwrap().client_keys.is_empty());

        // Through the handle, the good writes of a failed batch still land.
        let (h, _) = StoreHandle::start(Box::new(s)).unwrap();
        h.write_later(Write::ClientKey(key("a")));
        let bad = h.write(Write::ClientKey(key("b")));
        let good = h.write(usage(1, "a", "m", 1));
        let (bad, good) = futures_util::join!(bad, good);
        assert!(bad.is_err() && good.is_ok());
        let loaded = h.query(|s| s.load()).await.unwrap();
        assert_eq!(loaded.client_keys.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store in memory that asks for group commits, as a database does.
    #[derive(Default)]
    struct Grouped(MemoryStore);

    impl Store for Grouped {
        fn load(&mut self) -> Result<Loaded, StoreError> {
            self.0.load()
        }
        fn write(&mut self, batch: &[Write]) -> Result<(), StoreError> {
            self.0.write(batch)
        }
        fn usage(&mut self, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
            self.0.usage(query)
        }
        fn spend_since(&mut self, from: i64) -> Result<Vec<SpendLine>, StoreError> {
            self.0.spend_since(from)
        }
        fn audit(&mut self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
            self.0.audit(limit)
        }
        fn prune_usage(&mut self, before: i64) -> Result<u64, StoreError> {
            self.0.prune_usage(before)
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }

    /// Polls `f` once.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        Future::poll(f, &mut cx)
    }

    #[tokio::test]
    async fn a_store_in_memory_commits_at_once_a_database_waits_for_company() {
        let (memory, _) = StoreHandle::start(Box::new(MemoryStore::default())).unwrap();
        let write = std::pin::pin!(memory.write(usage(1, "k", "m", 1)));
        assert!(
            poll_once(write).is_ready(),
            "no yield before a memory commit"
        );
        let (grouped, _) = StoreHandle::start(Box::new(Grouped::default())).unwrap();
        let mut write = std::pin::pin!(grouped.write(usage(1, "k", "m", 1)));
        assert!(
            poll_once(write.as_mut()).is_pending(),
            "yields once for company"
        );
        assert!(poll_once(write).is_ready());
    }

    #[tokio::test]
    async fn a_write_whose_task_is_dropped_is_still_committed() {
        let (h, _) = StoreHandle::start(Box::new(Grouped::default())).unwrap();
        {
            let write = std::pin::pin!(h.write(usage(1, "k", "m", 1)));
            // Polled once (queued, now yielding), then dropped.
            assert!(poll_once(write).is_pending());
            assert_eq!(lock(&h.shared.pending).writes.len(), 1, "queued");
        }
        assert!(
            lock(&h.shared.pending).writes.is_empty(),
            "committed when the task was dropped, not left for the next writer"
        );
        let lines = h.query(|s| s.usage(&UsageQuery::default())).await.unwrap();
        assert_eq!(lines.first().map(|l| l.requests), Some(1));
    }

    #[tokio::test]
    async fn the_handle_commits_before_answering() {
        let (h, loaded) = StoreHandle::start(Box::new(MemoryStore::default())).unwrap();
        assert_eq!(loaded, Loaded::default());
        let writes: Vec<_> = (0..100)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.write(usage(i, "k", "m", 1)).await })
            })
            .collect();
        for w in writes {
            w.await.unwrap().unwrap();
        }
        let lines = h.query(|s| s.usage(&UsageQuery::default())).await.unwrap();
        assert_eq!(lines[0].requests, 100);
    }
}
