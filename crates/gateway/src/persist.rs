//! Between the layers and the store: restoring state at start-up, and saving
//! upstream key states as they change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use budget::{Money, Scopes, Tokens};
use gateway_client::ClientEvent;
use keypool_core::{Event, KeyState, SavedKey};

use crate::auth::ClientKey;
use crate::manage;
use crate::server::AppState;
use crate::store::{Loaded, StoreError, Write};

const DAY_MS: i64 = 86_400_000;

/// How far back usage is replayed into the budget: the longest period (a
/// month) and a day to spare for time zones.
const REPLAY: Duration = Duration::from_secs(32 * 86_400);

fn at(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Applies what the store holds to freshly built layers: client keys, upstream
/// key states, canary states, the budget's periods and the keys' daily counters.
pub(crate) async fn restore(s: &AppState, loaded: Loaded) -> Result<(), StoreError> {
    let mut keys = 0;
    for k in &loaded.client_keys {
        match ClientKey::from_stored(k) {
            Ok(key) => {
                s.auth.add(key);
                keys += 1;
            }
            Err(e) => tracing::warn!("stored client key {} is unusable: {e}", k.id),
        }
    }
    let mut states = 0;
    for ((provider, name), v) in &loaded.upstream_keys {
        let Ok(saved) = serde_json::from_value::<SavedKey>(v.clone()) else {
            tracing::warn!("the stored state of {provider}/{name} is unreadable; ignored");
            continue;
        };
        let done = s.client.with_pool(provider, |pool, now| {
            pool.find(name).map(|id| pool.restore(id, &saved, now))
        });
        match done {
            Some(Some(Ok(()))) => states += 1,
            Some(None) | None => tracing::warn!(
                "{provider}/{name} has a saved state but is not in the config (keys added \
                 through the API are not kept across restarts: add it to the file)"
            ),
            Some(Some(Err(e))) => tracing::warn!("{provider}/{name}: {e}"),
        }
    }
    for (model, state) in &loaded.canaries {
        s.client
            .with_rollout(model, |r, _| manage::restore_canary(r, state));
    }

    let now_ms = s.now_ms();
    let from = now_ms.saturating_sub(i64::try_from(REPLAY.as_millis()).unwrap_or(0));
    let lines = s.store.query(move |st| st.spend_since(from)).await?;
    let today = now_ms - now_ms.rem_euclid(DAY_MS);
    let mut counters: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut spent = 0u64;
    s.client.with_ledger(|ledger, now| {
        for l in &lines {
            let scopes = Scopes {
                team: l.team.as_deref(),
                key: l.key_name.as_deref(),
            };
            ledger.restore(
                &scopes,
                &l.model,
                l.requests,
                Tokens::new(l.prompt_tokens, l.completion_tokens),
                Money::from_micros(l.cost_micros),
                at(l.hour),
                now,
            );
        }
    });
    for l in &lines {
        spent = spent.saturating_add(l.cost_micros);
        if l.hour >= today {
            let c = counters
                .entry((l.provider.clone(), l.upstream_key.clone()))
                .or_default();
            c.0 += l.requests;
            c.1 += l.prompt_tokens + l.completion_tokens;
        }
    }
    for ((provider, name), (requests, tokens)) in counters {
        let saved = SavedKey {
            state: KeyState::Active,
            day: today.div_euclid(DAY_MS),
            requests_today: u32::try_from(requests).unwrap_or(u32::MAX),
            tokens_today: tokens,
        };
        s.client.with_pool(&provider, |pool, now| {
            pool.find(&name).map(|id| pool.restore(id, &saved, now))
        });
    }
    tracing::info!(
        "restored {keys} client keys, {states} upstream key states, {} canary states, ${} of spend in the last 32 days",
        loaded.canaries.len(),
        Money::from_micros(spent).decimal()
    );
    Ok(())
}

/// A short line for the dashboard's event list (names only, never secrets).
fn describe(event: &ClientEvent) -> Option<String> {
    Some(match event {
        ClientEvent::Pool { provider, event } => match event {
            Event::Added { name, .. } => format!("{provider}/{name}: added"),
            Event::CoolingDown { name, cause, .. } => {
                format!("{provider}/{name}: cooling down ({cause:?})")
            }
            Event::Recovered { name, .. } => format!("{provider}/{name}: recovered"),
            Event::Disabled { name, cause, .. } => format!("{provider}/{name}: disabled ({cause})"),
            Event::Exhausted { name, .. } => format!("{provider}/{name}: quota exhausted"),
            Event::BreakerOpened { name, .. } => format!("{provider}/{name}: breaker opened"),
            Event::Rotated { name, .. } => format!("{provider}/{name}: rotated"),
            Event::RevokeScheduled { name, .. } => {
                format!("{provider}/{name}: revocation scheduled")
            }
            Event::Revoked { name, .. } => format!("{provider}/{name}: revoked"),
            Event::PoolEmpty { .. } => format!("{provider}: no key can serve"),
            Event::PoolRecovered => format!("{provider}: serving again"),
            _ => return None,
        },
        ClientEvent::Budget(e) => format!("budget: {e:?}"),
        ClientEvent::Canary { rollout, event } => format!("canary {rollout}: {event:?}"),
    })
}

/// The key an event changes, if it changes one's state.
fn changed_key(event: &Event) -> Option<&str> {
    match event {
        Event::CoolingDown { name, .. }
        | Event::Recovered { name, .. }
        | Event::Disabled { name, .. }
        | Event::Exhausted { name, .. }
        | Event::BreakerOpened { name, .. }
        | Event::RevokeScheduled { name, .. } => Some(name),
        _ => None,
    }
}

/// Follows the client's events: saves upstream key states as they change,
/// and keeps recent events for the dashboard.
pub(crate) fn spawn_saver(s: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    let mut events = s.client.subscribe();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} events were missed by the state saver");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let secs = s.now_ms().div_euclid(1000);
            if let Some(text) = describe(&event) {
                s.recent().event(secs, text);
            }
            match &event {
                ClientEvent::Pool { provider, event } => {
                    if let Some(name) = changed_key(event) {
                        // Read and queued under the management lock, so an
                        // older state never lands after an operator's newer one.
                        let _one_at_a_time = s.manage_lock.lock().await;
                        let state = manage::saved_state(&s, provider, name);
                        s.store.write_later(Write::UpstreamKey {
                            provider: provider.to_string(),
                            name: name.to_owned(),
                            state,
                        });
                    }
                }
                // An automatic step or rollback: keep it across a restart.
                ClientEvent::Canary { rollout, .. } => manage::save_canary(&s, rollout),
                ClientEvent::Budget(_) => {}
            }
        }
    })
}

/// Deletes usage records older than `days`.
pub(crate) async fn prune(s: &AppState, days: u32) {
    let before = s.now_ms().saturating_sub(i64::from(days) * DAY_MS);
    match s.store.query(move |st| st.prune_usage(before)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("deleted {n} usage records older than {days} days"),
        Err(e) => tracing::warn!("usage records could not be pruned: {e}"),
    }
}

/// Prunes usage every hour.
pub(crate) fn spawn_pruner(s: Arc<AppState>, days: u32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            s.client.clock().sleep(Duration::from_secs(3600)).await;
            prune(&s, days).await;
        }
    })
}
