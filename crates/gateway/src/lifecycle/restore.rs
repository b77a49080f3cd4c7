//! Start-up: what the store holds, applied to freshly built layers.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use budget::{Money, Scopes, Tokens};
use keypool_core::{KeyState, SavedKey, Timestamp};

use crate::auth::ClientKey;
use crate::keys::KeyEntry;
use crate::state::AppState;
use crate::store::{
    KeyOrigin, Loaded, RolloutRecord, SpendLine, StoreError, StoredClientKey, UpstreamKeyRecord,
};

/// How far back usage is replayed into the budget: the longest period (a
/// month) and a day to spare for time zones.
const REPLAY: Duration = Duration::from_secs(32 * 86_400);

/// Applies what the store holds to freshly built layers: client keys,
/// upstream key states, rollout states, and usage replayed into the budget's
/// periods and the keys' daily counters.
pub(crate) async fn restore(s: &AppState, loaded: Loaded) -> Result<(), StoreError> {
    let keys = client_keys(s, &loaded.client_keys);
    let states = upstream_keys(s, &loaded.upstream_keys)?;
    let rollouts = rollouts(s, &loaded.rollouts);
    let now_ms = s.now_ms();
    let from = now_ms.saturating_sub(i64::try_from(REPLAY.as_millis()).unwrap_or(0));
    let lines = s.store.spend_since(from).await?;
    replay_budget(s, &lines);
    replay_key_counters(s, &lines, now_ms);
    // After the replay: a limit set at runtime counts this period's spend.
    let settings = crate::settings::apply_stored(s, &loaded.settings);
    let spent: u64 = lines.iter().map(|l| l.totals.cost_micros).sum();
    tracing::info!(
        "restored {keys} client keys, {states} upstream key states, {rollouts} canary states, {settings} operators' settings, ${} of spend in the last 32 days",
        Money::from_micros(spent).decimal()
    );
    Ok(())
}

fn client_keys(s: &AppState, stored: &[StoredClientKey]) -> usize {
    let mut n = 0;
    for k in stored {
        match ClientKey::from_stored(k) {
            Ok(key) => {
                s.auth.add(key);
                n += 1;
            }
            Err(e) => tracing::warn!("stored client key {} is unusable: {e}", k.id),
        }
    }
    n
}

/// Applies the stored upstream keys: the states of configured keys (unless
/// the file changed their secret), their removals, and the keys added or
/// rotated in at runtime, added back with their sealed secrets. After a
/// restart the pools are as they were. A stored key whose secret cannot be
/// opened stops the start: serving without it would not be the same pool.
fn upstream_keys(s: &AppState, stored: &[UpstreamKeyRecord]) -> Result<usize, StoreError> {
    let mut n = 0;
    for record in stored {
        let applied = match record.origin {
            KeyOrigin::Config => configured(s, record),
            KeyOrigin::Runtime => added_at_runtime(s, record)?,
        };
        n += usize::from(applied);
    }
    Ok(n)
}

/// A configured key's stored state; whether it applied.
fn configured(s: &AppState, record: &UpstreamKeyRecord) -> bool {
    let (provider, name) = (&record.provider, &record.name);
    let Some(entry) = s.keys.get(&record.id) else {
        tracing::warn!("{provider}/{name} has a saved state but is no longer configured");
        return false;
    };
    if !record.fingerprint.is_empty()
        && record.fingerprint != crate::keys::fingerprint_hex(&entry.fingerprint)
    {
        tracing::info!(
            "{provider}/{name}: the file gives a new secret; its saved state is set aside"
        );
        return false;
    }
    let done = s.client.with_pool(provider, |pool, now| {
        if record.removed {
            pool.remove(entry.key, now).map_err(|e| e.to_string())
        } else {
            record.saved.as_ref().map_or(Ok(()), |saved| {
                pool.restore(entry.key, saved, now)
                    .map_err(|e| e.to_string())
            })
        }
    });
    if record.removed {
        s.keys.mark_removed(&record.id);
    }
    match done {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            tracing::warn!("{provider}/{name}: {e}");
            false
        }
        None => false,
    }
}

/// A key added or rotated in at runtime, added back; whether it was.
pub(crate) fn added_at_runtime(
    s: &AppState,
    record: &UpstreamKeyRecord,
) -> Result<bool, StoreError> {
    if record.removed {
        return Ok(false);
    }
    let (provider, name) = (&record.provider, &record.name);
    let unreadable = |reason: String| StoreError::Corrupt {
        what: "upstream key",
        reason: format!("{provider}/{name} ({}): {reason}", record.id),
    };
    let Some(sealed) = &record.sealed_secret else {
        return Err(unreadable("its secret was not stored".into()));
    };
    let Some(sealer) = &s.sealer else {
        return Err(unreadable(
            "its secret is sealed: set [storage] secrets_key to the key that sealed it".into(),
        ));
    };
    let secret = sealer
        .open(&record.id, sealed)
        .map_err(|e| unreadable(e.to_string()))?;
    let key = keypool_core::NewKey::new(name.clone(), secret)
        .group(provider.clone())
        .tier(record.settings.tier)
        .weight(record.settings.weight)
        .limits(record.settings.limits);
    let key = match &record.settings.models {
        Some(models) => key.models(models),
        None => key,
    };
    let added = s.client.with_pool(provider, |pool, now| {
        let id = pool.add(key, now).map_err(|e| e.to_string())?;
        if let Some(saved) = &record.saved {
            pool.restore(id, saved, now).map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(id)
    });
    let key = match added {
        Some(Ok(key)) => key,
        Some(Err(e)) => return Err(unreadable(e)),
        None => {
            return Err(unreadable(format!(
                "provider {provider:?} is no longer configured"
            )));
        }
    };
    s.keys.insert(KeyEntry {
        id: record.id.clone(),
        provider: provider.as_str().into(),
        name: name.as_str().into(),
        key,
        origin: KeyOrigin::Runtime,
        fingerprint: crate::keys::parse_fingerprint(&record.fingerprint),
        sealed_secret: record.sealed_secret.clone(),
        removed: false,
    });
    Ok(true)
}

fn rollouts(s: &AppState, stored: &[RolloutRecord]) -> usize {
    let mut n = 0;
    for RolloutRecord { model, saved } in stored {
        match s.client.with_rollout(model, |r, _| r.restore(saved)) {
            Some(Ok(())) => n += 1,
            Some(Err(e)) => tracing::warn!(
                "the saved state of rollout {model} does not fit its configuration ({e}); \
                 it starts from the file"
            ),
            None => tracing::warn!("rollout {model} has a saved state but is not in the config"),
        }
    }
    // A rollout with a schedule and nothing saved starts its ramp now.
    for model in s.client.rollout_models() {
        if !stored.iter().any(|r| r.model == model) {
            s.client.with_rollout(&model, |r, now| r.start(now));
        }
    }
    n
}

fn at(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Books stored spend into the budget's periods.
fn replay_budget(s: &AppState, lines: &[SpendLine]) {
    s.client.with_ledger(|ledger, now| {
        for l in lines {
            let scopes = Scopes {
                team: l.team.as_deref(),
                key: l.key_name.as_deref(),
            };
            ledger.restore(
                &scopes,
                &l.model,
                l.totals.requests,
                Tokens::new(l.totals.prompt_tokens, l.totals.completion_tokens),
                Money::from_micros(l.totals.cost_micros),
                at(l.hour),
                now,
            );
        }
    });
}

/// Sets each upstream key's counters for today (its pool's local day) from
/// stored usage.
fn replay_key_counters(s: &AppState, lines: &[SpendLine], now_ms: i64) {
    let now = Timestamp::from_unix_millis(u64::try_from(now_ms).unwrap_or(0));
    let mut counters: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for l in lines {
        let c = counters
            .entry((l.provider.as_str(), l.upstream_key.as_str()))
            .or_default();
        let Some(today) = s.client.read_pool(&l.provider, |pool| {
            let offset = pool.config().utc_offset;
            offset.day_start(offset.day_index(now))
        }) else {
            continue;
        };
        if u64::try_from(l.hour).unwrap_or(0) >= today.as_unix_millis() {
            c.0 += l.totals.requests;
            c.1 += l.totals.prompt_tokens + l.totals.completion_tokens;
        }
    }
    for ((provider, name), (requests, tokens)) in counters {
        s.client.with_pool(provider, |pool, now| {
            let saved = SavedKey {
                state: KeyState::Active,
                day: pool.config().utc_offset.day_index(now),
                requests_today: u32::try_from(requests).unwrap_or(u32::MAX),
                tokens_today: tokens,
            };
            pool.find(name).map(|id| pool.restore(id, &saved, now))
        });
    }
}
