//! Reads: what is loaded at start-up, reports, and replays.

use rusqlite::{Connection, Row, params};

use crate::store::columns;
use crate::store::records::{
    AuditEntry, KeySettings, Loaded, PinRecord, RolloutRecord, SpendLine, StoredClientKey, Totals,
    UpstreamKeyRecord, UsageLine, UsageQuery,
};
use crate::store::{HOUR_MS, StoreError};

/// Everything applied at start-up. A row whose values cannot be decoded is
/// skipped with a warning (and left in place), so one bad row does not stop
/// the gateway.
pub(super) fn load(conn: &Connection) -> Result<Loaded, StoreError> {
    Ok(Loaded {
        client_keys: decoded(
            "client key",
            rows(
                conn,
                "SELECT id, name, team, hash, scopes, models, rate_limit, created_at, revoke_at,
                        rotated_to
                 FROM client_keys ORDER BY created_at, id",
                client_key,
            )?,
        ),
        upstream_keys: decoded(
            "upstream key",
            rows(
                conn,
                "SELECT id, provider, name, origin, fingerprint, secret, tier, weight,
                        tokens_per_day, requests_per_day, requests_per_minute, tokens_per_minute,
                        max_in_flight, removed, state, until_ms, cause, day, requests_today,
                        tokens_today, models
                 FROM upstream_keys ORDER BY provider, rowid",
                upstream_key,
            )?,
        ),
        rollouts: rollouts(conn)?,
        settings: decoded(
            "setting",
            rows(
                conn,
                "SELECT kind, name, value, at FROM settings ORDER BY kind, name",
                |r| {
                    let kind: String = r.get(0)?;
                    Ok(columns::setting(&kind, r.get(1)?, r.get(2)?, r.get(3)?))
                },
            )?,
        ),
    })
}

/// The rows of `sql`, each read by `read` (whose inner error is a value that
/// could not be decoded).
fn rows<T>(
    conn: &Connection,
    sql: &str,
    read: impl Fn(&Row<'_>) -> rusqlite::Result<Result<T, String>>,
) -> Result<Vec<Result<T, String>>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| read(r))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Keeps the decoded rows, warning about the others.
fn decoded<T>(what: &str, rows: Vec<Result<T, String>>) -> Vec<T> {
    rows.into_iter()
        .filter_map(|r| {
            r.map_err(|e| tracing::warn!("a stored {what} is unreadable ({e}); ignored"))
                .ok()
        })
        .collect()
}

fn client_key(r: &Row<'_>) -> rusqlite::Result<Result<StoredClientKey, String>> {
    let (scopes, models): (String, String) = (r.get(4)?, r.get(5)?);
    let key = StoredClientKey {
        id: r.get(0)?,
        name: r.get(1)?,
        team: r.get(2)?,
        hash: r.get(3)?,
        scopes: Vec::new(),
        models: Vec::new(),
        rate_limit: r.get(6)?,
        created_at: r.get(7)?,
        revoke_at: r.get(8)?,
        rotated_to: r.get(9)?,
    };
    Ok((|| {
        Ok(StoredClientKey {
            scopes: columns::list_from(&scopes)?,
            models: columns::list_from(&models)?,
            ..key
        })
    })())
}

fn upstream_key(r: &Row<'_>) -> rusqlite::Result<Result<UpstreamKeyRecord, String>> {
    let origin: String = r.get(3)?;
    let models = match columns::models_from(r.get::<_, Option<String>>(20)?.as_deref()) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let settings = KeySettings {
        models,
        tier: r.get(6)?,
        weight: r.get(7)?,
        limits: keypool_core::Limits {
            tokens_per_day: r.get::<_, Option<i64>>(8)?.map(columns::count),
            requests_per_day: r.get(9)?,
            requests_per_minute: r.get(10)?,
            tokens_per_minute: r.get(11)?,
            max_in_flight: r.get(12)?,
        },
    };
    let saved = saved_key(r, 14)?;
    let record = |origin, saved| UpstreamKeyRecord {
        id: r.get(0).unwrap_or_default(),
        provider: r.get(1).unwrap_or_default(),
        name: r.get(2).unwrap_or_default(),
        origin,
        fingerprint: r.get(4).unwrap_or_default(),
        sealed_secret: r.get(5).unwrap_or_default(),
        settings,
        saved,
        removed: r.get(13).unwrap_or_default(),
    };
    Ok(saved.and_then(|saved| Ok(record(columns::key_origin_from(&origin)?, saved))))
}

/// The saved state in the columns from `first` on (state, until, cause, day,
/// requests today, tokens today), if one was saved.
fn saved_key(
    r: &Row<'_>,
    first: usize,
) -> rusqlite::Result<Result<Option<keypool_core::SavedKey>, String>> {
    let state: Option<String> = r.get(first)?;
    let Some(state) = state else {
        return Ok(Ok(None));
    };
    let (until, cause): (Option<i64>, Option<String>) = (r.get(first + 1)?, r.get(first + 2)?);
    let (day, requests_today, tokens_today): (Option<i64>, Option<u32>, Option<i64>) =
        (r.get(first + 3)?, r.get(first + 4)?, r.get(first + 5)?);
    Ok(
        columns::key_state_from(&state, until, cause.as_deref()).map(|state| {
            Some(keypool_core::SavedKey {
                state,
                day: day.unwrap_or_default(),
                requests_today: requests_today.unwrap_or_default(),
                tokens_today: columns::count(tokens_today.unwrap_or_default()),
            })
        }),
    )
}

fn rollouts(conn: &Connection) -> Result<Vec<RolloutRecord>, StoreError> {
    let heads = rows(
        conn,
        "SELECT model, phase, phase_model, phase_reason, enabled, step, step_started_ms, promoted
         FROM rollouts ORDER BY model",
        |r| {
            let phase: String = r.get(1)?;
            let step_started: Option<i64> = r.get(6)?;
            let saved = columns::phase_from(&phase, r.get(2)?, r.get(3)?).map(|phase| {
                canary::SavedRollout {
                    arms: Vec::new(),
                    phase,
                    enabled: true,
                    step: 0,
                    step_started: step_started.map(columns::time),
                    promoted: false,
                }
            });
            let (model, enabled, step, promoted): (String, bool, u32, bool) =
                (r.get(0)?, r.get(4)?, r.get(5)?, r.get(7)?);
            Ok(saved.map(|saved| RolloutRecord {
                model,
                saved: canary::SavedRollout {
                    enabled,
                    step,
                    promoted,
                    ..saved
                },
            }))
        },
    )?;
    let mut out = Vec::with_capacity(heads.len());
    for head in heads {
        out.push(match head {
            Ok(mut r) => arms(conn, &r.model)?.map(|arms| {
                r.saved.arms = arms;
                r
            }),
            Err(e) => Err(e),
        });
    }
    Ok(decoded("rollout", out))
}

fn arms(
    conn: &Connection,
    model: &str,
) -> Result<Result<Vec<canary::SavedArm>, String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT candidate, buckets FROM rollout_arms WHERE model = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map([model], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .map(|(candidate, buckets)| {
            Ok(canary::SavedArm {
                model: candidate.into(),
                buckets: columns::buckets_from(&buckets)?,
            })
        })
        .collect())
}

fn totals(r: &Row<'_>, first: usize) -> rusqlite::Result<Totals> {
    Ok(Totals {
        requests: columns::count(r.get(first)?),
        prompt_tokens: columns::count(r.get(first + 1)?),
        completion_tokens: columns::count(r.get(first + 2)?),
        cost_micros: columns::count(r.get(first + 3)?),
        cached_tokens: columns::count(r.get(first + 4)?),
        cache_write_tokens: columns::count(r.get(first + 5)?),
        reasoning_tokens: columns::count(r.get(first + 6)?),
    })
}

/// Usage totals per client key, team and model, dearest first, added up
/// from the hourly totals: an hour counts when it overlaps `from..to`. The
/// query names only the filters given.
pub(super) fn usage(conn: &Connection, q: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let mut filter = |condition: &'static str, value: Option<rusqlite::types::Value>| {
        if let Some(v) = value {
            conditions.push(condition);
            values.push(v);
        }
    };
    let text = |v: &Option<String>| v.clone().map(rusqlite::types::Value::Text);
    filter("key_id = ?", text(&q.key_id));
    filter("team = ?", text(&q.team));
    filter("model = ?", text(&q.model));
    filter(
        "hour > ?",
        q.from
            .map(|f| rusqlite::types::Value::Integer(f.saturating_sub(HOUR_MS))),
    );
    filter("hour < ?", q.to.map(rusqlite::types::Value::Integer));
    let filters = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT nullif(key_id, ''), nullif(key_name, ''), nullif(team, ''), model,
                SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros),
                SUM(cached_tokens), SUM(cache_write_tokens), SUM(reasoning_tokens)
         FROM usage_hours {filters}
         GROUP BY key_id, key_name, team, model
         ORDER BY SUM(cost_micros) DESC, model, key_id"
    ))?;
    let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
        Ok(UsageLine {
            key_id: r.get(0)?,
            key_name: r.get(1)?,
            team: r.get(2)?,
            model: r.get(3)?,
            totals: totals(r, 4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Spend per hour in the hours that end after `from`, oldest first.
pub(super) fn spend_since(conn: &Connection, from: i64) -> Result<Vec<SpendLine>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT hour, provider, upstream_key, nullif(key_name, ''), nullif(team, ''), model,
                SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros),
                SUM(cached_tokens), SUM(cache_write_tokens), SUM(reasoning_tokens)
         FROM usage_hours WHERE hour > ?1
         GROUP BY hour, provider, upstream_key, key_name, team, model
         ORDER BY hour",
    )?;
    let rows = stmt.query_map(params![from.saturating_sub(HOUR_MS)], |r| {
        Ok(SpendLine {
            hour: r.get(0)?,
            provider: r.get(1)?,
            upstream_key: r.get(2)?,
            key_name: r.get(3)?,
            team: r.get(4)?,
            model: r.get(5)?,
            totals: totals(r, 6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The newest `limit` audit entries, newest first.
pub(super) fn audit(conn: &Connection, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, actor, action, target, before, after FROM audit ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([columns::int(limit as u64)], |r| {
        Ok(AuditEntry {
            at: r.get(0)?,
            actor: r.get(1)?,
            action: r.get(2)?,
            target: r.get(3)?,
            before: columns::json_from(r.get(4)?),
            after: columns::json_from(r.get(5)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The key that made `id`, recorded at `since` or later.
pub(super) fn pin(
    conn: &Connection,
    id: &str,
    since: i64,
) -> Result<Option<PinRecord>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT provider, key, at FROM pins WHERE id = ?1 AND at >= ?2")?;
    let mut rows = stmt.query_map(rusqlite::params![id, since], |r| {
        Ok(PinRecord {
            id: id.to_owned(),
            provider: r.get(0)?,
            key: r.get(1)?,
            at: r.get(2)?,
        })
    })?;
    Ok(rows.next().transpose()?)
}
