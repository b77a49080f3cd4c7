//! Reads: what is loaded at start-up, reports, and replays.

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use crate::store::columns;
use crate::store::records::{
    AuditEntry, KeySettings, Loaded, RolloutRecord, SettingRecord, SpendLine, StoredClientKey,
    Totals, UpstreamKeyRecord, UsageLine, UsageQuery,
};
use crate::store::{HOUR_MS, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// A column that does not have the type the schema gives it.
#[allow(clippy::needless_pass_by_value)] // the shape `map_err` takes
fn column(e: tokio_postgres::Error) -> String {
    format!("a column cannot be read: {e}")
}

/// Everything applied at start-up. A row whose values cannot be decoded is
/// skipped with a warning (and left in place).
pub(super) async fn load(c: &impl GenericClient) -> Result<Loaded> {
    let keys = c
        .query(
            "SELECT id, name, team, hash, scopes, models, rate_limit, created_at, revoke_at,
                    rotated_to
             FROM client_keys ORDER BY created_at, id",
            &[],
        )
        .await
        .map_err(StoreError::from)?;
    let upstream = c
        .query(
            &format!("SELECT {UPSTREAM_COLUMNS} FROM upstream_keys ORDER BY provider, added"),
            &[],
        )
        .await
        .map_err(StoreError::from)?;
    Ok(Loaded {
        client_keys: decoded("client key", keys.iter().map(client_key)),
        upstream_keys: decoded("upstream key", upstream.iter().map(upstream_key)),
        rollouts: rollouts(c).await?,
        settings: settings(c, i64::MIN).await?,
    })
}

/// The settings changed after change number `after`, oldest change first.
pub(super) async fn settings(c: &impl GenericClient, after: i64) -> Result<Vec<SettingRecord>> {
    let rows = c
        .query(
            "SELECT kind, name, value, at FROM settings WHERE version > $1 ORDER BY version",
            &[&after],
        )
        .await
        .map_err(StoreError::from)?;
    let decode = |r: &Row| -> std::result::Result<SettingRecord, String> {
        columns::setting(
            r.try_get(0).map_err(column)?,
            r.try_get(1).map_err(column)?,
            r.try_get(2).map_err(column)?,
            r.try_get(3).map_err(column)?,
        )
    };
    Ok(decoded("setting", rows.iter().map(decode)))
}

/// The columns [`upstream_key`] reads, in its order.
pub(super) const UPSTREAM_COLUMNS: &str =
    "id, provider, name, origin, fingerprint, secret, tier, weight, tokens_per_day,
     requests_per_day, requests_per_minute, tokens_per_minute, max_in_flight, removed, state,
     until_ms, cause, day, requests_today, tokens_today, models";

/// Keeps the decoded rows, warning about the others.
pub(super) fn decoded<T>(
    what: &str,
    rows: impl Iterator<Item = std::result::Result<T, String>>,
) -> Vec<T> {
    rows.filter_map(|r| {
        r.map_err(|e| tracing::warn!("a stored {what} is unreadable ({e}); ignored"))
            .ok()
    })
    .collect()
}

/// A client key from its row (its first ten columns).
pub(super) fn client_key(r: &Row) -> std::result::Result<StoredClientKey, String> {
    let rate_limit: Option<i64> = r.try_get(6).map_err(column)?;
    Ok(StoredClientKey {
        id: r.try_get(0).map_err(column)?,
        name: r.try_get(1).map_err(column)?,
        team: r.try_get(2).map_err(column)?,
        hash: r.try_get(3).map_err(column)?,
        scopes: columns::list_from(r.try_get(4).map_err(column)?)?,
        models: columns::list_from(r.try_get(5).map_err(column)?)?,
        rate_limit: rate_limit.map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        created_at: r.try_get(7).map_err(column)?,
        revoke_at: r.try_get(8).map_err(column)?,
        rotated_to: r.try_get(9).map_err(column)?,
    })
}

fn small(v: Option<i64>) -> Option<u32> {
    v.map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

/// An upstream key from its row ([`UPSTREAM_COLUMNS`]).
pub(super) fn upstream_key(r: &Row) -> std::result::Result<UpstreamKeyRecord, String> {
    let get_i64 = |i| r.try_get::<_, Option<i64>>(i).map_err(column);
    let origin = columns::key_origin_from(r.try_get::<_, &str>(3).map_err(column)?)?;
    let tier: i16 = r.try_get(6).map_err(column)?;
    let weight: i64 = r.try_get(7).map_err(column)?;
    let models = columns::models_from(r.try_get::<_, Option<&str>>(20).map_err(column)?)?;
    let settings = KeySettings {
        models,
        tier: u8::try_from(tier).unwrap_or(u8::MAX),
        weight: u32::try_from(weight).unwrap_or(u32::MAX),
        limits: keypool_core::Limits {
            tokens_per_day: get_i64(8)?.map(columns::count),
            requests_per_day: small(get_i64(9)?),
            requests_per_minute: small(get_i64(10)?),
            tokens_per_minute: small(get_i64(11)?),
            max_in_flight: small(get_i64(12)?),
        },
    };
    let state: Option<&str> = r.try_get(14).map_err(column)?;
    let saved = match state {
        None => None,
        Some(state) => {
            let cause: Option<&str> = r.try_get(16).map_err(column)?;
            Some(keypool_core::SavedKey {
                state: columns::key_state_from(state, get_i64(15)?, cause)?,
                day: get_i64(17)?.unwrap_or_default(),
                requests_today: small(get_i64(18)?).unwrap_or_default(),
                tokens_today: columns::count(get_i64(19)?.unwrap_or_default()),
            })
        }
    };
    Ok(UpstreamKeyRecord {
        id: r.try_get(0).map_err(column)?,
        provider: r.try_get(1).map_err(column)?,
        name: r.try_get(2).map_err(column)?,
        origin,
        fingerprint: r.try_get(4).map_err(column)?,
        sealed_secret: r.try_get(5).map_err(column)?,
        settings,
        saved,
        removed: r.try_get(13).map_err(column)?,
    })
}

/// Every rollout with its arms.
pub(super) async fn rollouts(c: &impl GenericClient) -> Result<Vec<RolloutRecord>> {
    let heads = c
        .query(
            "SELECT model, phase, phase_model, phase_reason, enabled, step, step_started_ms,
                    promoted
             FROM rollouts ORDER BY model",
            &[],
        )
        .await
        .map_err(StoreError::from)?;
    let arms = c
        .query(
            "SELECT model, candidate, buckets FROM rollout_arms ORDER BY model, position",
            &[],
        )
        .await
        .map_err(StoreError::from)?;
    let decode = |r: &Row| -> std::result::Result<RolloutRecord, String> {
        let model: String = r.try_get(0).map_err(column)?;
        let phase = columns::phase_from(
            r.try_get(1).map_err(column)?,
            r.try_get(2).map_err(column)?,
            r.try_get(3).map_err(column)?,
        )?;
        let step: i64 = r.try_get(5).map_err(column)?;
        let started: Option<i64> = r.try_get(6).map_err(column)?;
        let mut saved_arms = Vec::new();
        for a in arms
            .iter()
            .filter(|a| a.try_get::<_, &str>(0).is_ok_and(|m| m == model))
        {
            saved_arms.push(canary::SavedArm {
                model: a.try_get::<_, String>(1).map_err(column)?.into(),
                buckets: columns::buckets_from(a.try_get(2).map_err(column)?)?,
            });
        }
        Ok(RolloutRecord {
            saved: canary::SavedRollout {
                arms: saved_arms,
                phase,
                enabled: r.try_get(4).map_err(column)?,
                step: u32::try_from(step).unwrap_or(u32::MAX),
                step_started: started.map(columns::time),
                promoted: r.try_get(7).map_err(column)?,
            },
            model,
        })
    };
    Ok(decoded("rollout", heads.iter().map(decode)))
}

/// Column `i` of a report's row; a type the schema does not give it is an
/// error, not a panic.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(|e| StoreError::Corrupt {
        what: "report row",
        reason: e.to_string(),
    })
}

fn totals(r: &Row, first: usize) -> Result<Totals> {
    let n = |i: usize| get::<i64>(r, first + i).map(columns::count);
    Ok(Totals {
        requests: n(0)?,
        prompt_tokens: n(1)?,
        completion_tokens: n(2)?,
        cost_micros: n(3)?,
        cached_tokens: n(4)?,
        cache_write_tokens: n(5)?,
        reasoning_tokens: n(6)?,
    })
}

/// Usage totals per client key, team and model, dearest first, added up
/// from the hourly totals: an hour counts when it overlaps `from..to`.
pub(super) async fn usage(c: &impl GenericClient, q: &UsageQuery) -> Result<Vec<UsageLine>> {
    let from = q.from.map(|f| f.saturating_sub(HOUR_MS));
    let params: [&(dyn ToSql + Sync); 5] = [&q.key_id, &q.team, &q.model, &from, &q.to];
    let rows = c
        .query(
            "SELECT nullif(key_id, ''), nullif(key_name, ''), nullif(team, ''), model,
                    SUM(requests)::bigint, SUM(prompt_tokens)::bigint,
                    SUM(completion_tokens)::bigint, SUM(cost_micros)::bigint,
                    SUM(cached_tokens)::bigint, SUM(cache_write_tokens)::bigint,
                    SUM(reasoning_tokens)::bigint
             FROM usage_hours
             WHERE ($1::text IS NULL OR key_id = $1) AND ($2::text IS NULL OR team = $2)
               AND ($3::text IS NULL OR model = $3) AND ($4::bigint IS NULL OR hour > $4)
               AND ($5::bigint IS NULL OR hour < $5)
             GROUP BY key_id, key_name, team, model
             ORDER BY SUM(cost_micros) DESC, model, key_id",
            &params,
        )
        .await
        .map_err(StoreError::from)?;
    rows.iter()
        .map(|r| {
            Ok(UsageLine {
                key_id: get(r, 0)?,
                key_name: get(r, 1)?,
                team: get(r, 2)?,
                model: get(r, 3)?,
                totals: totals(r, 4)?,
            })
        })
        .collect()
}

/// Spend per hour in the hours that end after `from`, oldest first.
pub(super) async fn spend_since(c: &impl GenericClient, from: i64) -> Result<Vec<SpendLine>> {
    let rows = c
        .query(
            "SELECT hour, provider, upstream_key, nullif(key_name, ''), nullif(team, ''), model,
                    SUM(requests)::bigint, SUM(prompt_tokens)::bigint,
                    SUM(completion_tokens)::bigint, SUM(cost_micros)::bigint,
                    SUM(cached_tokens)::bigint, SUM(cache_write_tokens)::bigint,
                    SUM(reasoning_tokens)::bigint
             FROM usage_hours WHERE hour > $1
             GROUP BY hour, provider, upstream_key, key_name, team, model
             ORDER BY hour",
            &[&from.saturating_sub(HOUR_MS)],
        )
        .await
        .map_err(StoreError::from)?;
    rows.iter()
        .map(|r| {
            Ok(SpendLine {
                hour: get(r, 0)?,
                provider: get(r, 1)?,
                upstream_key: get(r, 2)?,
                key_name: get(r, 3)?,
                team: get(r, 4)?,
                model: get(r, 5)?,
                totals: totals(r, 6)?,
            })
        })
        .collect()
}

/// The newest `limit` audit entries, newest first.
pub(super) async fn audit(c: &impl GenericClient, limit: usize) -> Result<Vec<AuditEntry>> {
    let rows = c
        .query(
            "SELECT at, actor, action, target, before, after FROM audit
             ORDER BY at DESC, seq DESC LIMIT $1",
            &[&columns::int(limit as u64)],
        )
        .await
        .map_err(StoreError::from)?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at: get(r, 0)?,
                actor: get(r, 1)?,
                action: get(r, 2)?,
                target: get(r, 3)?,
                before: columns::json_from(get(r, 4)?),
                after: columns::json_from(get(r, 5)?),
            })
        })
        .collect()
}
