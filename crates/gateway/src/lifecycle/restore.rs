//! Start-up: what the store holds, applied to freshly built layers.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use budget::{Money, Scopes, Tokens};
use keypool_core::{KeyState, SavedKey, Timestamp};

use crate::auth::ClientKey;
use crate::state::AppState;
use crate::store::{KeyStateRecord, Loaded, RolloutRecord, SpendLine, StoreError, StoredClientKey};

/// How far back usage is replayed into the budget: the longest period (a
/// month) and a day to spare for time zones.
const REPLAY: Duration = Duration::from_secs(32 * 86_400);

/// Applies what the store holds to freshly built layers: client keys,
/// upstream key states, rollout states, and usage replayed into the budget's
/// periods and the keys' daily counters.
pub(crate) async fn restore(s: &AppState, loaded: Loaded) -> Result<(), StoreError> {
    let keys = client_keys(s, &loaded.client_keys);
    let states = key_states(s, &loaded.key_states);
    let rollouts = rollouts(s, &loaded.rollouts);
    let now_ms = s.now_ms();
    let from = now_ms.saturating_sub(i64::try_from(REPLAY.as_millis()).unwrap_or(0));
    let lines = s.store.spend_since(from).await?;
    replay_budget(s, &lines);
    replay_key_counters(s, &lines, now_ms);
    let spent: u64 = lines.iter().map(|l| l.totals.cost_micros).sum();
    tracing::info!(
        "restored {keys} client keys, {states} upstream key states, {rollouts} canary states, ${} of spend in the last 32 days",
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

fn key_states(s: &AppState, stored: &[KeyStateRecord]) -> usize {
    let mut n = 0;
    for KeyStateRecord {
        provider,
        name,
        saved,
    } in stored
    {
        let done = s.client.with_pool(provider, |pool, now| {
            pool.find(name).map(|id| pool.restore(id, saved, now))
        });
        match done {
            Some(Some(Ok(()))) => n += 1,
            Some(None) | None => tracing::warn!(
                "{provider}/{name} has a saved state but is not in the config (keys added \
                 through the API are not kept across restarts: add it to the file)"
            ),
            Some(Some(Err(e))) => tracing::warn!("{provider}/{name}: {e}"),
        }
    }
    n
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
