//! What another instance changed, applied here.

use keypool_core::{KeyState, SavedKey, Timestamp};

use super::Cluster;
use crate::state::AppState;
use crate::store::columns;
use crate::store::{
    FactKind, KeyFact, KeyOrigin, RolloutRecord, StoredClientKey, UpstreamKeyRecord,
};

/// Client keys created, rotated or revoked elsewhere.
pub(super) fn client_keys(s: &AppState, keys: &[StoredClientKey]) {
    for k in keys {
        match s.auth.follow(k) {
            Ok(true) => tracing::debug!("client key {} changed on another instance", k.id),
            Ok(false) => {}
            Err(e) => tracing::warn!("client key {} from another instance is unusable: {e}", k.id),
        }
    }
}

/// Upstream keys added, rotated or removed elsewhere. Their states travel
/// as facts ([`fact`]), except a rotation's grace period, which is part of
/// the key's record.
pub(super) fn upstream_keys(s: &AppState, records: &[UpstreamKeyRecord]) {
    for record in records {
        let Some(entry) = s.keys.get(&record.id) else {
            if record.origin == KeyOrigin::Runtime && !record.removed {
                match crate::lifecycle::added_at_runtime(s, record) {
                    Ok(_) => tracing::info!(
                        "{}/{} was added on another instance",
                        record.provider,
                        record.name
                    ),
                    Err(e) => tracing::warn!("a key added on another instance is unusable: {e}"),
                }
            }
            continue;
        };
        if entry.removed {
            continue;
        }
        if record.removed {
            s.client
                .with_pool(&entry.provider, |pool, now| pool.remove(entry.key, now));
            s.keys.mark_removed(&record.id);
            continue;
        }
        if let Some(SavedKey {
            state: KeyState::Draining { revoke_at },
            ..
        }) = record.saved
        {
            s.client.with_pool(&entry.provider, |pool, now| {
                if !matches!(pool.state(entry.key), Some(KeyState::Draining { .. })) {
                    let _ = pool.schedule_revoke(entry.key, revoke_at, now);
                }
            });
        }
    }
}

/// Rollouts stepped, promoted or rolled back elsewhere (by the leader).
pub(super) fn rollouts(s: &AppState, records: &[RolloutRecord]) {
    for RolloutRecord { model, saved } in records {
        let applied = s.client.with_rollout(model, |r, _| {
            if r.saved() == *saved {
                Ok(false)
            } else {
                r.restore(saved).map(|()| true)
            }
        });
        match applied {
            Some(Ok(true)) => tracing::info!("rollout {model} changed on another instance"),
            Some(Err(e)) => tracing::warn!("rollout {model} from another instance: {e}"),
            _ => {}
        }
    }
}

/// The key state a fact puts a key in, if it is one.
fn fact_state(f: &KeyFact) -> Option<KeyState> {
    if f.kind == FactKind::Enabled {
        return None;
    }
    columns::key_state_from(f.kind.as_str(), f.until_ms, f.cause.as_deref()).ok()
}

/// Whether applying `fact` to a key in `state` changes it (monotonic
/// merges: a cooldown only extends, a disabled key stays disabled until an
/// operator enables it, a draining key keeps draining).
fn changes(state: &KeyState, fact: &KeyFact, now: Timestamp) -> bool {
    let until = fact
        .until_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Timestamp::from_unix_millis);
    match (fact.kind, state) {
        (FactKind::Enabled, KeyState::Disabled { .. }) => true,
        (FactKind::Enabled, _) => false,
        (_, KeyState::Disabled { .. } | KeyState::Draining { .. }) => false,
        (FactKind::Disabled, _) => true,
        (FactKind::Exhausted, KeyState::Exhausted { .. }) => false,
        (FactKind::Exhausted, _) => true,
        (FactKind::CoolingDown, KeyState::Exhausted { .. }) => false,
        (FactKind::CoolingDown, KeyState::CoolingDown { until: current, .. }) => {
            until.is_some_and(|u| u > *current)
        }
        (FactKind::CoolingDown, _) => until.is_some_and(|u| u > now),
    }
}

/// A fact another instance published about a key, applied if it changes
/// the key here; the event that causes is then not published again.
pub(super) fn fact(c: &Cluster, s: &AppState, fact: &KeyFact) {
    let Some(entry) = s.keys.get(&fact.key_id) else {
        return;
    };
    if entry.removed {
        return;
    }
    let target = fact_state(fact);
    s.client.with_pool(&entry.provider, |pool, now| {
        let Some(state) = pool.state(entry.key) else {
            return;
        };
        if !changes(&state, fact, now) {
            return;
        }
        c.learned().insert(super::Learned::of(fact));
        let applied = match target {
            None => pool.enable(entry.key, now),
            Some(state) => {
                let saved = SavedKey {
                    state,
                    day: pool.config().utc_offset.day_index(now),
                    requests_today: 0,
                    tokens_today: 0,
                };
                pool.restore(entry.key, &saved, now)
            }
        };
        if applied.is_err() {
            c.learned().remove(&super::Learned::of(fact));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    fn fact(kind: FactKind, until_ms: Option<i64>) -> KeyFact {
        KeyFact {
            key_id: "uk_0000000000000001".into(),
            kind,
            until_ms,
            cause: match kind {
                FactKind::CoolingDown => Some("rate_limited".into()),
                FactKind::Disabled => Some("unauthorized".into()),
                _ => None,
            },
        }
    }

    #[test]
    fn facts_merge_monotonically() {
        let now = at(1_000_000);
        let cooling = |ms| KeyState::CoolingDown {
            until: at(ms),
            cause: keypool_core::CooldownCause::RateLimited,
        };
        let disabled = KeyState::Disabled {
            cause: keypool_core::DisableCause::Manual,
        };
        let cool = |ms| fact(FactKind::CoolingDown, Some(ms));
        assert!(changes(&KeyState::Active, &cool(1_060_000), now));
        assert!(
            !changes(&KeyState::Active, &cool(900_000), now),
            "already over"
        );
        assert!(
            changes(&cooling(1_030_000), &cool(1_060_000), now),
            "extends"
        );
        assert!(
            !changes(&cooling(1_060_000), &cool(1_030_000), now),
            "never shortens"
        );
        assert!(!changes(&disabled, &cool(2_000_000), now));
        assert!(!changes(&disabled, &fact(FactKind::Disabled, None), now));
        assert!(changes(
            &cooling(1_030_000),
            &fact(FactKind::Disabled, None),
            now
        ));
        assert!(changes(&disabled, &fact(FactKind::Enabled, None), now));
        assert!(!changes(
            &KeyState::Active,
            &fact(FactKind::Enabled, None),
            now
        ));
        let draining = KeyState::Draining { revoke_at: at(5) };
        assert!(!changes(&draining, &fact(FactKind::Disabled, None), now));
        let exhausted = fact(FactKind::Exhausted, Some(2_000_000));
        assert!(changes(&cooling(1_030_000), &exhausted, now));
        assert!(!changes(
            &KeyState::Exhausted {
                until: at(2_000_000)
            },
            &exhausted,
            now
        ));
        assert_eq!(
            fact_state(&cool(1_060_000)),
            Some(cooling(1_060_000)),
            "a fact reads as the state it puts a key in"
        );
    }
}
