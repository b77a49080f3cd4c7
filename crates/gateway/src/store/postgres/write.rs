//! Writes: saved states (upserts, each stamped with a new change number for
//! the instances that follow changes) and shipped outbox batches.

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::store::columns;
use crate::store::records::{
    PinRecord, RolloutRecord, SettingRecord, StoredClientKey, UpstreamKeyRecord,
};
use crate::store::sqlite::Waiting;

type Result<T> = std::result::Result<T, tokio_postgres::Error>;

/// Creates or updates a client key.
pub(super) async fn client_key(c: &impl GenericClient, k: &StoredClientKey) -> Result<()> {
    c.execute(
        "INSERT INTO client_keys (id, name, team, hash, scopes, models, rate_limit,
         created_at, revoke_at, rotated_to)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET name = $2, team = $3, scopes = $5, models = $6,
         rate_limit = $7, revoke_at = $9, rotated_to = $10,
         version = nextval('keypool_changes')",
        &[
            &k.id,
            &k.name,
            &k.team,
            &k.hash,
            &columns::list(&k.scopes),
            &columns::list(&k.models),
            &k.rate_limit.map(i64::from),
            &k.created_at,
            &k.revoke_at,
            &k.rotated_to,
        ],
    )
    .await
    .map(drop)
}

/// Creates or replaces an upstream key's record.
pub(super) async fn upstream_key(c: &impl GenericClient, k: &UpstreamKeyRecord) -> Result<()> {
    let (state, until_ms, cause) = columns::saved_key_state(k.saved.as_ref());
    let origin = columns::key_origin(k.origin);
    let l = &k.settings.limits;
    let opt = |v: Option<u32>| v.map(i64::from);
    let models = columns::models(k.settings.models.as_ref());
    let values: [&(dyn ToSql + Sync); 21] = [
        &k.id,
        &k.provider,
        &k.name,
        &origin,
        &k.fingerprint,
        &k.sealed_secret,
        &i16::from(k.settings.tier),
        &i64::from(k.settings.weight),
        &l.tokens_per_day.map(columns::int),
        &opt(l.requests_per_day),
        &opt(l.requests_per_minute),
        &opt(l.tokens_per_minute),
        &opt(l.max_in_flight),
        &k.removed,
        &state,
        &until_ms,
        &cause,
        &k.saved.as_ref().map(|s| s.day),
        &k.saved.as_ref().map(|s| i64::from(s.requests_today)),
        &k.saved.as_ref().map(|s| columns::int(s.tokens_today)),
        &models,
    ];
    c.execute(
        "INSERT INTO upstream_keys (id, provider, name, origin, fingerprint, secret,
         tier, weight, tokens_per_day, requests_per_day, requests_per_minute, tokens_per_minute,
         max_in_flight, removed, state, until_ms, cause, day, requests_today, tokens_today,
         models)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
         $18, $19, $20, $21)
         ON CONFLICT (id) DO UPDATE SET provider = $2, name = $3, origin = $4,
         fingerprint = $5, secret = $6, tier = $7, weight = $8, tokens_per_day = $9,
         requests_per_day = $10, requests_per_minute = $11, tokens_per_minute = $12,
         max_in_flight = $13, removed = $14, state = $15, until_ms = $16, cause = $17,
         day = $18, requests_today = $19, tokens_today = $20, models = $21,
         version = nextval('keypool_changes')",
        &values,
    )
    .await
    .map(drop)
}

/// Saves an operator's change to the configuration.
pub(super) async fn setting(c: &impl GenericClient, s: &SettingRecord) -> Result<()> {
    let value = s.value.as_ref().map(serde_json::Value::to_string);
    c.execute(
        "INSERT INTO settings (kind, name, value, at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (kind, name) DO UPDATE SET value = $3, at = $4,
         version = nextval('keypool_changes')",
        &[&s.kind.as_str(), &s.name, &value, &s.at],
    )
    .await
    .map(drop)
}

/// Records which key made an upstream id.
pub(super) async fn pin(c: &impl GenericClient, p: &PinRecord) -> Result<()> {
    c.execute(
        "INSERT INTO pins (id, provider, key, at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET provider = $2, key = $3, at = $4",
        &[&p.id, &p.provider, &p.key, &p.at],
    )
    .await
    .map(drop)
}

/// Replaces a rollout's state and arms (inside the caller's transaction).
pub(super) async fn rollout(c: &impl GenericClient, r: &RolloutRecord) -> Result<()> {
    let s = &r.saved;
    let (phase, phase_model, phase_reason) = columns::phase(&s.phase);
    c.execute(
        "INSERT INTO rollouts (model, phase, phase_model, phase_reason, enabled, step,
         step_started_ms, promoted)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (model) DO UPDATE SET phase = $2, phase_model = $3, phase_reason = $4,
         enabled = $5, step = $6, step_started_ms = $7, promoted = $8,
         version = nextval('keypool_changes')",
        &[
            &r.model,
            &phase,
            &phase_model,
            &phase_reason,
            &s.enabled,
            &i64::from(s.step),
            &s.step_started.map(columns::millis),
            &s.promoted,
        ],
    )
    .await?;
    c.execute("DELETE FROM rollout_arms WHERE model = $1", &[&r.model])
        .await?;
    for (position, arm) in s.arms.iter().enumerate() {
        c.execute(
            "INSERT INTO rollout_arms (model, position, candidate, buckets)
             VALUES ($1, $2, $3, $4)",
            &[
                &r.model,
                &columns::int(position as u64),
                &&*arm.model,
                &columns::buckets(&arm.buckets),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Stores a batch from the outbox of `origin` in two statements: usage
/// records (with their hourly totals, counted only for the records not
/// stored before) and audit entries. A record shipped twice is stored once.
pub(super) async fn ship(c: &impl GenericClient, origin: &str, batch: &Waiting) -> Result<u64> {
    let mut stored = 0;
    if !batch.usage.is_empty() {
        stored += ship_usage(c, origin, batch).await?;
    }
    if !batch.audit.is_empty() {
        stored += ship_audit(c, origin, batch).await?;
    }
    Ok(stored)
}

async fn ship_usage(c: &impl GenericClient, origin: &str, batch: &Waiting) -> Result<u64> {
    let col = |f: fn(&crate::store::UsageRecord) -> Option<String>| -> Vec<Option<String>> {
        batch.usage.iter().map(|(_, u)| f(u)).collect()
    };
    let num = |f: fn(&crate::store::UsageRecord) -> i64| -> Vec<i64> {
        batch.usage.iter().map(|(_, u)| f(u)).collect()
    };
    let seqs: Vec<i64> = batch.usage.iter().map(|(s, _)| *s).collect();
    let row = c
        .query_one(
            "WITH batch AS (
                 SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                     $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[])
                 AS b(seq, at, key_id, key_name, team, provider, upstream_key, model,
                     prompt_tokens, completion_tokens, cost_micros, cached_tokens,
                     cache_write_tokens, reasoning_tokens)
             ), stored AS (
                 INSERT INTO usage (origin, seq, at, key_id, key_name, team, provider,
                     upstream_key, model, prompt_tokens, completion_tokens, cost_micros,
                     cached_tokens, cache_write_tokens, reasoning_tokens)
                 SELECT $1::text, * FROM batch
                 ON CONFLICT (origin, seq) DO NOTHING
                 RETURNING *
             ), hours AS (
                 INSERT INTO usage_hours (hour, key_id, key_name, team, model, provider,
                     upstream_key, requests, prompt_tokens, completion_tokens, cost_micros,
                     cached_tokens, cache_write_tokens, reasoning_tokens)
                 SELECT at - at % 3600000, coalesce(key_id, ''), coalesce(key_name, ''),
                     coalesce(team, ''), model, provider, upstream_key, count(*),
                     sum(prompt_tokens), sum(completion_tokens), sum(cost_micros),
                     sum(cached_tokens), sum(cache_write_tokens), sum(reasoning_tokens)
                 FROM stored
                 GROUP BY 1, 2, 3, 4, 5, 6, 7
                 ORDER BY 1, 2, 3, 4, 5, 6, 7
                 ON CONFLICT (hour, key_id, key_name, team, model, provider, upstream_key)
                 DO UPDATE SET requests = usage_hours.requests + EXCLUDED.requests,
                     prompt_tokens = usage_hours.prompt_tokens + EXCLUDED.prompt_tokens,
                     completion_tokens = usage_hours.completion_tokens
                         + EXCLUDED.completion_tokens,
                     cost_micros = usage_hours.cost_micros + EXCLUDED.cost_micros,
                     cached_tokens = usage_hours.cached_tokens + EXCLUDED.cached_tokens,
                     cache_write_tokens = usage_hours.cache_write_tokens
                         + EXCLUDED.cache_write_tokens,
                     reasoning_tokens = usage_hours.reasoning_tokens + EXCLUDED.reasoning_tokens
             )
             SELECT count(*) FROM stored",
            &[
                &origin,
                &seqs,
                &num(|u| u.at),
                &col(|u| u.key_id.clone()),
                &col(|u| u.key_name.clone()),
                &col(|u| u.team.clone()),
                &col(|u| Some(u.provider.clone())),
                &col(|u| Some(u.upstream_key.clone())),
                &col(|u| Some(u.model.clone())),
                &num(|u| columns::int(u.prompt_tokens)),
                &num(|u| columns::int(u.completion_tokens)),
                &num(|u| columns::int(u.cost_micros)),
                &num(|u| columns::int(u.cached_tokens)),
                &num(|u| columns::int(u.cache_write_tokens)),
                &num(|u| columns::int(u.reasoning_tokens)),
            ],
        )
        .await?;
    Ok(columns::count(row.get(0)))
}

async fn ship_audit(c: &impl GenericClient, origin: &str, batch: &Waiting) -> Result<u64> {
    let seqs: Vec<i64> = batch.audit.iter().map(|(s, _)| *s).collect();
    let at: Vec<i64> = batch.audit.iter().map(|(_, a)| a.at).collect();
    let text = |f: fn(&crate::store::AuditEntry) -> Option<String>| -> Vec<Option<String>> {
        batch.audit.iter().map(|(_, a)| f(a)).collect()
    };
    let n = c
        .execute(
            "INSERT INTO audit (origin, seq, at, actor, action, target, before, after)
             SELECT $1::text, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[])
             ON CONFLICT (origin, seq) DO NOTHING",
            &[
                &origin,
                &seqs,
                &at,
                &text(|a| Some(a.actor.clone())),
                &text(|a| Some(a.action.clone())),
                &text(|a| Some(a.target.clone())),
                &text(|a| columns::json(a.before.as_ref())),
                &text(|a| columns::json(a.after.as_ref())),
            ],
        )
        .await?;
    Ok(n)
}
