//! The SQLite schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! Each migration runs in its own transaction together with the version
//! bump, so a database is always at exactly one version. A database whose
//! version is newer than [`LATEST`] was written by a newer gateway and is
//! refused rather than misread.

use rusqlite::{Connection, Transaction};

use super::legacy;
use crate::store::StoreError;

/// One step of the schema.
struct Migration {
    version: u32,
    up: fn(&Transaction<'_>) -> Result<(), StoreError>,
}

const MIGRATIONS: [Migration; 6] = [
    Migration {
        version: 1,
        up: v1_base,
    },
    Migration {
        version: 2,
        up: v2_typed_states_and_usage_indexes,
    },
    Migration {
        version: 3,
        up: v3_upstream_keys_by_id,
    },
    Migration {
        version: 4,
        up: v4_settings,
    },
    Migration {
        version: 5,
        up: v5_pins,
    },
    Migration {
        version: 6,
        up: v6_cache_and_reasoning_tokens,
    },
];

/// The newest schema version this gateway knows.
pub(super) const LATEST: u32 = 6;

/// Brings the database to [`LATEST`], one migration at a time.
pub(super) fn migrate(conn: &mut Connection, what: &str) -> Result<(), StoreError> {
    let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > LATEST {
        return Err(StoreError::SchemaTooNew {
            what: what.to_owned(),
            found,
            known: LATEST,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let failed = |reason: String| StoreError::Migration {
            what: what.to_owned(),
            version: m.version,
            reason,
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| failed(e.to_string()))?;
        (m.up)(&tx).map_err(|e| failed(e.to_string()))?;
        tx.pragma_update(None, "user_version", m.version)
            .map_err(|e| failed(e.to_string()))?;
        tx.commit().map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

/// The tables of the first gateways (which did not set a version): created
/// if missing, left as they are if present.
fn v1_base(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS client_keys (
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
        );",
    )?;
    Ok(())
}

/// Key and rollout states in typed columns instead of JSON documents (the
/// documents of version 1 are converted, then dropped), and usage added up
/// by the hour (`usage_hours`, filled from the records already there), which
/// reports and replays read instead of every record. Absent names are
/// stored as `''` there, so that they take part in its primary key.
fn v2_typed_states_and_usage_indexes(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE key_states (
            provider TEXT NOT NULL,
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            until_ms INTEGER,
            cause TEXT,
            day INTEGER NOT NULL,
            requests_today INTEGER NOT NULL,
            tokens_today INTEGER NOT NULL,
            PRIMARY KEY (provider, name)
        );
        CREATE TABLE rollouts (
            model TEXT PRIMARY KEY,
            phase TEXT NOT NULL,
            phase_model TEXT,
            phase_reason TEXT,
            enabled INTEGER NOT NULL,
            step INTEGER NOT NULL,
            step_started_ms INTEGER,
            promoted INTEGER NOT NULL
        );
        CREATE TABLE rollout_arms (
            model TEXT NOT NULL,
            position INTEGER NOT NULL,
            candidate TEXT NOT NULL,
            buckets TEXT NOT NULL,
            PRIMARY KEY (model, position)
        );
        CREATE TABLE usage_hours (
            hour INTEGER NOT NULL,
            key_id TEXT NOT NULL,
            key_name TEXT NOT NULL,
            team TEXT NOT NULL,
            model TEXT NOT NULL,
            provider TEXT NOT NULL,
            upstream_key TEXT NOT NULL,
            requests INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cost_micros INTEGER NOT NULL,
            PRIMARY KEY (hour, key_id, key_name, team, model, provider, upstream_key)
        ) WITHOUT ROWID;
        INSERT INTO usage_hours
            SELECT (at / 3600000) * 3600000, ifnull(key_id, ''), ifnull(key_name, ''),
                   ifnull(team, ''), model, provider, upstream_key, COUNT(*),
                   SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros)
            FROM usage
            GROUP BY 1, 2, 3, 4, 5, 6, 7;",
    )?;
    legacy::convert_v1_documents(tx)?;
    tx.execute_batch("DROP TABLE upstream_keys; DROP TABLE canaries;")?;
    Ok(())
}

/// Upstream keys by a stable id instead of (provider, name), with the keys
/// added or rotated in at runtime (their secrets sealed); version 2's key
/// states become the records of the configured keys they named.
fn v3_upstream_keys_by_id(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE upstream_keys (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            name TEXT NOT NULL,
            origin TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            secret BLOB,
            tier INTEGER NOT NULL,
            weight INTEGER NOT NULL,
            tokens_per_day INTEGER,
            requests_per_day INTEGER,
            requests_per_minute INTEGER,
            tokens_per_minute INTEGER,
            max_in_flight INTEGER,
            removed INTEGER NOT NULL,
            state TEXT,
            until_ms INTEGER,
            cause TEXT,
            day INTEGER,
            requests_today INTEGER,
            tokens_today INTEGER,
            -- Added by version 6 where this table predates it: the legacy
            -- conversions below write keys with today's columns.
            models TEXT
        );",
    )?;
    legacy::convert_v2_key_states(tx)?;
    tx.execute_batch("DROP TABLE key_states;")?;
    Ok(())
}

/// Operators' changes to the configuration (budget limits, canary overrides
/// and analysis), by kind and name; `value` is JSON in the config file's
/// shape, NULL for a removed entry.
fn v4_settings(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE settings (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            value TEXT,
            at INTEGER NOT NULL,
            PRIMARY KEY (kind, name)
        );",
    )?;
    Ok(())
}

/// Which key made each upstream id, kept 30 days.
fn v5_pins(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE pins (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            key TEXT NOT NULL,
            at INTEGER NOT NULL
        );
        CREATE INDEX pins_at ON pins (at);",
    )?;
    Ok(())
}

/// The prompt tokens a provider served from or wrote to its cache, and the
/// completion tokens spent reasoning, per record and per hour (0 for what
/// was recorded before); the models an upstream key is kept to.
fn v6_cache_and_reasoning_tokens(tx: &Transaction<'_>) -> Result<(), StoreError> {
    for table in ["usage", "usage_hours"] {
        for column in ["cached_tokens", "cache_write_tokens", "reasoning_tokens"] {
            tx.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0;"
            ))?;
        }
    }
    // The models a key added at runtime is kept to (a JSON array; NULL:
    // all); a table version 3 made lately has it already.
    let has_models: i64 = tx.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('upstream_keys') WHERE name = 'models'",
        [],
        |r| r.get(0),
    )?;
    if has_models == 0 {
        tx.execute_batch("ALTER TABLE upstream_keys ADD COLUMN models TEXT;")?;
    }
    Ok(())
}
