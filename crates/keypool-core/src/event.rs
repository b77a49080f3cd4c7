//! Events the pool emits, drained with [`KeyPool::poll_event`](crate::KeyPool::poll_event).

use std::sync::Arc;

use crate::state::{CooldownCause, DisableCause, KeyId, LeaseId, LimitKind};
use crate::time::Timestamp;

/// Something that happened to the pool. Every event that concerns a key
/// carries its id and name (never its secret), so it can be logged as is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
pub enum Event {
    /// A key was added.
    Added {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
    },
    /// A key stopped being selected until `until`.
    CoolingDown {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
        /// When it may serve again.
        until: Timestamp,
        /// Why.
        cause: CooldownCause,
    },
    /// A key became Active again (cooldown ended, daily reset, enabled, breaker closed).
    Recovered {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
    },
    /// A key was disabled.
    Disabled {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
        /// Why.
        cause: DisableCause,
    },
    /// A key's quota is used up until the daily reset.
    Exhausted {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
        /// The next daily reset.
        until: Timestamp,
    },
    /// A key's usage crossed 75% or 90% of a daily limit.
    UsageWarning {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
        /// Which limit.
        limit: LimitKind,
        /// 75 or 90.
        percent: u8,
    },
    /// A key's circuit breaker opened.
    BreakerOpened {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
        /// When a probe may test it.
        until: Timestamp,
    },
    /// A key's breaker cooldown ended: one probe may test it.
    BreakerHalfOpen {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
    },
    /// A key's circuit breaker closed after a successful probe.
    BreakerClosed {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
    },
    /// A key was rotated: `new` serves, `old` drains until `revoke_at`.
    Rotated {
        /// The key being replaced.
        old: KeyId,
        /// The replacement.
        new: KeyId,
        /// Their (shared) name.
        name: Arc<str>,
        /// When the old key is revoked.
        revoke_at: Timestamp,
    },
    /// A key was scheduled for revocation and is draining.
    RevokeScheduled {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
        /// When it leaves the pool.
        at: Timestamp,
    },
    /// A key left the pool (scheduled revocation or removal).
    Revoked {
        /// The key.
        key: KeyId,
        /// Its name.
        name: Arc<str>,
    },
    /// A lease was not reported within the lease timeout and was released.
    LeaseExpired {
        /// The lease.
        lease: LeaseId,
        /// Its key.
        key: KeyId,
        /// The key's name.
        name: Arc<str>,
    },
    /// No key is healthy any more (all cooling, exhausted or disabled).
    PoolEmpty {
        /// The earliest time a key becomes usable by itself, if any.
        retry_at: Option<Timestamp>,
    },
    /// At least one key is healthy again after [`Event::PoolEmpty`].
    PoolRecovered,
}

/// One line, naming keys by name (never by secret): what logs, dashboards
/// and audit trails show, e.g. `alpha: cooling down (rate limited) until
/// 2026-11-22T04:41:12.000Z`.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Added { name, .. } => write!(f, "{name}: added"),
            Event::CoolingDown {
                name, until, cause, ..
            } => write!(f, "{name}: cooling down ({cause}) until {until}"),
            Event::Recovered { name, .. } => write!(f, "{name}: recovered"),
            Event::Disabled { name, cause, .. } => write!(f, "{name}: disabled ({cause})"),
            Event::Exhausted { name, until, .. } => {
                write!(f, "{name}: quota exhausted until {until}")
            }
            Event::UsageWarning {
                name,
                limit,
                percent,
                ..
            } => write!(f, "{name}: {percent}% of its {limit} used"),
            Event::BreakerOpened { name, until, .. } => {
                write!(f, "{name}: breaker opened until {until}")
            }
            Event::BreakerHalfOpen { name, .. } => write!(f, "{name}: breaker half-open"),
            Event::BreakerClosed { name, .. } => write!(f, "{name}: breaker closed"),
            Event::Rotated {
                name, revoke_at, ..
            } => write!(
                f,
                "{name}: rotated (the old secret drains until {revoke_at})"
            ),
            Event::RevokeScheduled { name, at, .. } => {
                write!(f, "{name}: revocation scheduled at {at}")
            }
            Event::Revoked { name, .. } => write!(f, "{name}: revoked"),
            Event::LeaseExpired { name, lease, .. } => {
                write!(f, "{name}: lease {} expired unreported", lease.as_u64())
            }
            Event::PoolEmpty { retry_at: Some(at) } => {
                write!(f, "no key can serve (until {at} at the earliest)")
            }
            Event::PoolEmpty { retry_at: None } => f.write_str("no key can serve"),
            Event::PoolRecovered => f.write_str("serving again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_one_line_naming_the_key() {
        let name: Arc<str> = Arc::from("alpha");
        let key = KeyId::from_u64(7);
        let until = Timestamp::from_unix_millis(1_795_322_472_000);
        let cooling = Event::CoolingDown {
            key,
            name: name.clone(),
            until,
            cause: CooldownCause::RateLimited,
        };
        assert_eq!(
            cooling.to_string(),
            "alpha: cooling down (rate limited) until 2026-11-22T04:41:12.000Z"
        );
        let disabled = Event::Disabled {
            key,
            name,
            cause: DisableCause::Unauthorized,
        };
        assert_eq!(disabled.to_string(), "alpha: disabled (unauthorized)");
        assert_eq!(
            Event::PoolEmpty { retry_at: None }.to_string(),
            "no key can serve"
        );
    }
}
