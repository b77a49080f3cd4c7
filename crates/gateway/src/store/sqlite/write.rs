//! One write to the database, and how each is applied in a transaction.

use rusqlite::{Transaction, params};

use std::collections::HashMap;

use crate::store::HOUR_MS;
use crate::store::columns;
use crate::store::records::{
    AuditEntry, PinRecord, RolloutRecord, SettingRecord, StoredClientKey, Totals,
    UpstreamKeyRecord, UsageRecord,
};

/// One write, queued for the next group commit.
#[derive(Clone, Debug)]
pub(super) enum Write {
    Usage(UsageRecord),
    Audit(AuditEntry),
    ClientKey(StoredClientKey),
    UpstreamKey(Box<UpstreamKeyRecord>),
    Rollout(RolloutRecord),
    Setting(SettingRecord),
    Pin(PinRecord),
}

/// Applies a whole batch in one transaction.
pub(super) fn commit_all(
    conn: &mut rusqlite::Connection,
    writes: &[Write],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for w in writes {
        apply(&tx, w)?;
    }
    add_hours(
        &tx,
        writes.iter().filter_map(|w| match w {
            Write::Usage(u) => Some(u),
            _ => None,
        }),
    )?;
    tx.commit()
}

/// Applies `w` inside `tx` (a usage record's hourly totals are added by
/// [`add_hours`], once per batch).
pub(super) fn apply(tx: &Transaction<'_>, w: &Write) -> rusqlite::Result<()> {
    match w {
        Write::Usage(u) => usage(tx, u),
        Write::Audit(a) => audit(tx, a),
        Write::ClientKey(k) => client_key(tx, k),
        Write::UpstreamKey(k) => upstream_key(tx, k),
        Write::Rollout(r) => rollout(tx, r),
        Write::Setting(s) => setting(tx, s),
        Write::Pin(p) => pin(tx, p),
    }
}

/// Inserts one usage record (the store's `usage` table and the outbox's
/// have the same columns).
pub(super) fn usage(tx: &Transaction<'_>, u: &UsageRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO usage (at, key_id, key_name, team, provider, upstream_key, model,
         prompt_tokens, completion_tokens, cost_micros, cached_tokens, cache_write_tokens,
         reasoning_tokens)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        u.at,
        u.key_id,
        u.key_name,
        u.team,
        u.provider,
        u.upstream_key,
        u.model,
        columns::int(u.prompt_tokens),
        columns::int(u.completion_tokens),
        columns::int(u.cost_micros),
        columns::int(u.cached_tokens),
        columns::int(u.cache_write_tokens),
        columns::int(u.reasoning_tokens),
    ])
    .map(drop)
}

/// (hour, client key id, client key name, team, model, provider, upstream key).
type HourKey<'a> = (i64, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

/// Adds `records` into the hourly totals: one upsert per hour and line, not
/// per record (a group commit's records mostly share both).
pub(super) fn add_hours<'a>(
    tx: &Transaction<'_>,
    records: impl Iterator<Item = &'a UsageRecord>,
) -> rusqlite::Result<()> {
    let mut hours: HashMap<HourKey<'a>, Totals> = HashMap::new();
    for u in records {
        let key = (
            u.at.div_euclid(HOUR_MS) * HOUR_MS,
            u.key_id.as_deref().unwrap_or_default(),
            u.key_name.as_deref().unwrap_or_default(),
            u.team.as_deref().unwrap_or_default(),
            u.model.as_str(),
            u.provider.as_str(),
            u.upstream_key.as_str(),
        );
        hours.entry(key).or_default().add(u.into());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO usage_hours (hour, key_id, key_name, team, model, provider, upstream_key,
         requests, prompt_tokens, completion_tokens, cost_micros, cached_tokens,
         cache_write_tokens, reasoning_tokens)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT DO UPDATE SET requests = requests + ?8,
         prompt_tokens = prompt_tokens + ?9, completion_tokens = completion_tokens + ?10,
         cost_micros = cost_micros + ?11, cached_tokens = cached_tokens + ?12,
         cache_write_tokens = cache_write_tokens + ?13,
         reasoning_tokens = reasoning_tokens + ?14",
    )?;
    for ((hour, key_id, key_name, team, model, provider, upstream_key), t) in hours {
        stmt.execute(params![
            hour,
            key_id,
            key_name,
            team,
            model,
            provider,
            upstream_key,
            columns::int(t.requests),
            columns::int(t.prompt_tokens),
            columns::int(t.completion_tokens),
            columns::int(t.cost_micros),
            columns::int(t.cached_tokens),
            columns::int(t.cache_write_tokens),
            columns::int(t.reasoning_tokens),
        ])?;
    }
    Ok(())
}

/// Inserts one audit entry (the store's and the outbox's tables alike).
pub(super) fn audit(tx: &Transaction<'_>, a: &AuditEntry) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, before, after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        a.at,
        a.actor,
        a.action,
        a.target,
        columns::json(a.before.as_ref()),
        columns::json(a.after.as_ref())
    ])
    .map(drop)
}

fn client_key(tx: &Transaction<'_>, k: &StoredClientKey) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO client_keys (id, name, team, hash, scopes, models, rate_limit,
         created_at, revoke_at, rotated_to)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(id) DO UPDATE SET name = ?2, team = ?3, scopes = ?5,
         models = ?6, rate_limit = ?7, revoke_at = ?9, rotated_to = ?10",
    )?
    .execute(params![
        k.id,
        k.name,
        k.team,
        k.hash,
        columns::list(&k.scopes),
        columns::list(&k.models),
        k.rate_limit,
        k.created_at,
        k.revoke_at,
        k.rotated_to,
    ])
    .map(drop)
}

fn upstream_key(tx: &Transaction<'_>, k: &UpstreamKeyRecord) -> rusqlite::Result<()> {
    let (state, until_ms, cause) = columns::saved_key_state(k.saved.as_ref());
    let origin = columns::key_origin(k.origin);
    let l = &k.settings.limits;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO upstream_keys (id, provider, name, origin, fingerprint, secret,
         tier, weight, tokens_per_day, requests_per_day, requests_per_minute, tokens_per_minute,
         max_in_flight, removed, state, until_ms, cause, day, requests_today, tokens_today,
         models)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
         ?18, ?19, ?20, ?21)",
    )?
    .execute(params![
        k.id,
        k.provider,
        k.name,
        origin,
        k.fingerprint,
        k.sealed_secret,
        k.settings.tier,
        k.settings.weight,
        l.tokens_per_day.map(columns::int),
        l.requests_per_day,
        l.requests_per_minute,
        l.tokens_per_minute,
        l.max_in_flight,
        k.removed,
        state,
        until_ms,
        cause,
        k.saved.as_ref().map(|s| s.day),
        k.saved.as_ref().map(|s| s.requests_today),
        k.saved.as_ref().map(|s| columns::int(s.tokens_today)),
        columns::models(k.settings.models.as_ref()),
    ])
    .map(drop)
}

pub(super) fn rollout(tx: &Transaction<'_>, r: &RolloutRecord) -> rusqlite::Result<()> {
    let s = &r.saved;
    let (phase, phase_model, phase_reason) = columns::phase(&s.phase);
    tx.prepare_cached(
        "INSERT INTO rollouts (model, phase, phase_model, phase_reason, enabled, step,
         step_started_ms, promoted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(model) DO UPDATE SET phase = ?2, phase_model = ?3, phase_reason = ?4,
         enabled = ?5, step = ?6, step_started_ms = ?7, promoted = ?8",
    )?
    .execute(params![
        r.model,
        phase,
        phase_model,
        phase_reason,
        s.enabled,
        s.step,
        s.step_started.map(columns::millis),
        s.promoted,
    ])?;
    tx.prepare_cached("DELETE FROM rollout_arms WHERE model = ?1")?
        .execute([&r.model])?;
    for (position, arm) in s.arms.iter().enumerate() {
        tx.prepare_cached(
            "INSERT INTO rollout_arms (model, position, candidate, buckets)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            r.model,
            columns::int(position as u64),
            &*arm.model,
            columns::buckets(&arm.buckets)
        ])?;
    }
    Ok(())
}

fn pin(tx: &Transaction<'_>, p: &PinRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO pins (id, provider, key, at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET provider = ?2, key = ?3, at = ?4",
    )?
    .execute(params![p.id, p.provider, p.key, p.at])
    .map(drop)
}

fn setting(tx: &Transaction<'_>, s: &SettingRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO settings (kind, name, value, at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(kind, name) DO UPDATE SET value = ?3, at = ?4",
    )?
    .execute(params![
        s.kind.as_str(),
        s.name,
        s.value.as_ref().map(serde_json::Value::to_string),
        s.at
    ])
    .map(drop)
}
