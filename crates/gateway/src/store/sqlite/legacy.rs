//! Schema version 1 kept key and rollout states as JSON documents; version 2
//! reads them into typed rows. A document that cannot be read is reported
//! and dropped: its key or rollout starts from the configuration.

use std::sync::Arc;

use rusqlite::Transaction;
use serde_json::Value;

use rusqlite::params;

use super::write;
use crate::store::columns;
use crate::store::records::{KeyOrigin, KeySettings, RolloutRecord, UpstreamKeyRecord};
use crate::store::{StoreError, config_key_id};

/// Moves every version-1 document into the typed tables.
pub(super) fn convert_v1_documents(tx: &Transaction<'_>) -> Result<(), StoreError> {
    for (provider, name, doc) in documents(tx, "SELECT provider, name, state FROM upstream_keys")? {
        match serde_json::from_str::<keypool_core::SavedKey>(&doc) {
            Ok(saved) => v2_key_state(tx, &provider, &name, &saved)?,
            Err(e) => {
                tracing::warn!("the saved state of {provider}/{name} is unreadable ({e}); dropped");
            }
        }
    }
    for (model, _, doc) in documents(tx, "SELECT model, '', state FROM canaries")? {
        match rollout(&doc) {
            Some(saved) => write::rollout(tx, &RolloutRecord { model, saved })?,
            None => tracing::warn!("the saved state of rollout {model} is unreadable; dropped"),
        }
    }
    Ok(())
}

fn documents(tx: &Transaction<'_>, sql: &str) -> Result<Vec<(String, String, String)>, StoreError> {
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A version-1 rollout document: `{"shares_bp": {model: bp}, "phase":
/// {"running": null} | {"full_rollout": model} | {"rolled_back": reason},
/// "enabled": bool}`. Version 1 served one candidate per rollout, whose
/// buckets were always `0..share`.
fn rollout(doc: &str) -> Option<canary::SavedRollout> {
    let v: Value = serde_json::from_str(doc).ok()?;
    let mut start = 0u16;
    let mut arms = Vec::new();
    for (model, bp) in v.get("shares_bp")?.as_object()? {
        let end = start.checked_add(u16::try_from(bp.as_u64()?).ok()?)?;
        arms.push(canary::SavedArm {
            model: Arc::from(model.as_str()),
            buckets: if end > start {
                vec![(start, end)]
            } else {
                vec![]
            },
        });
        start = end;
    }
    let phase = if let Some(model) = v.pointer("/phase/full_rollout").and_then(Value::as_str) {
        canary::Phase::FullRollout {
            model: Arc::from(model),
        }
    } else if let Some(reason) = v.pointer("/phase/rolled_back").and_then(Value::as_str) {
        canary::Phase::RolledBack {
            reason: reason.to_owned(),
        }
    } else {
        canary::Phase::Running
    };
    Some(canary::SavedRollout {
        arms,
        phase,
        enabled: v.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        step: 0,
        step_started: None,
        promoted: false,
    })
}

/// Writes a key state as schema version 2 kept it (the table version 3
/// reads into `upstream_keys`).
fn v2_key_state(
    tx: &Transaction<'_>,
    provider: &str,
    name: &str,
    saved: &keypool_core::SavedKey,
) -> Result<(), StoreError> {
    let (state, until_ms, cause) = columns::key_state(&saved.state);
    tx.execute(
        "INSERT OR REPLACE INTO key_states (provider, name, state, until_ms, cause, day,
         requests_today, tokens_today) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            provider,
            name,
            state,
            until_ms,
            cause,
            saved.day,
            saved.requests_today,
            columns::int(saved.tokens_today)
        ],
    )?;
    Ok(())
}

/// Version 2's key states, by provider and name, become the records of the
/// configured keys they named (their secrets' fingerprints unknown).
pub(super) fn convert_v2_key_states(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let mut stmt = tx.prepare(
        "SELECT provider, name, state, until_ms, cause, day, requests_today, tokens_today
         FROM key_states",
    )?;
    let rows = stmt.query_map([], |r| {
        let (provider, name, state): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let (until, cause): (Option<i64>, Option<String>) = (r.get(3)?, r.get(4)?);
        let (day, requests_today, tokens_today): (i64, u32, i64) =
            (r.get(5)?, r.get(6)?, r.get(7)?);
        Ok((
            provider,
            name,
            state,
            until,
            cause,
            day,
            requests_today,
            tokens_today,
        ))
    })?;
    let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    drop(stmt);
    for (provider, name, state, until, cause, day, requests_today, tokens_today) in rows {
        let Ok(state) = columns::key_state_from(&state, until, cause.as_deref()) else {
            tracing::warn!("the saved state of {provider}/{name} is unreadable; dropped");
            continue;
        };
        let saved = keypool_core::SavedKey {
            state,
            day,
            requests_today,
            tokens_today: columns::count(tokens_today),
        };
        let record = UpstreamKeyRecord {
            id: config_key_id(&provider, &name),
            provider,
            name,
            origin: KeyOrigin::Config,
            fingerprint: String::new(),
            sealed_secret: None,
            settings: KeySettings::default(),
            saved: Some(saved),
            removed: false,
        };
        write::apply(tx, &write::Write::UpstreamKey(Box::new(record)))?;
    }
    Ok(())
}
