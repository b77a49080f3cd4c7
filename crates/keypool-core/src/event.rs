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
