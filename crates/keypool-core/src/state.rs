//! Identifiers, key states and their causes.

use std::fmt;

use crate::time::Timestamp;

/// A key's stable identity, assigned by the pool and never reused for another key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KeyId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl KeyId {
    /// A compact number for logs and URLs: generation in the high half, slot in the low.
    pub fn as_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.slot)
    }

    /// The inverse of [`KeyId::as_u64`].
    pub fn from_u64(v: u64) -> Self {
        KeyId {
            slot: (v & 0xffff_ffff) as u32,
            generation: (v >> 32) as u32,
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key#{}", self.as_u64())
    }
}

/// A lease's identity, unique within one pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LeaseId(pub(crate) u64);

impl LeaseId {
    /// The lease number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// Why a key is cooling down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum CooldownCause {
    /// The upstream answered 429.
    RateLimited,
    /// The circuit breaker opened.
    BreakerOpen,
    /// The upstream said the key has nothing left until then (rate-limit
    /// headers), so it rests before paying for a 429.
    Deferred,
}

/// Why a key is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum DisableCause {
    /// The upstream answered 401: the key is invalid or revoked.
    Unauthorized,
    /// The upstream answered 403.
    Forbidden,
    /// An operator disabled it.
    Manual,
}

impl fmt::Display for CooldownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CooldownCause::RateLimited => "rate limited",
            CooldownCause::BreakerOpen => "breaker open",
            CooldownCause::Deferred => "out of requests or tokens",
        })
    }
}

impl fmt::Display for DisableCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DisableCause::Unauthorized => "unauthorized",
            DisableCause::Forbidden => "forbidden",
            DisableCause::Manual => "manual",
        })
    }
}

/// A key's state, as reported in snapshots.
///
/// | state | selected? | left by |
/// |---|---|---|
/// | `Active` | yes | any penalising outcome |
/// | `CoolingDown { until, cause }` | no | time reaching `until` (→ `Active`, or `HalfOpen` after a breaker opening) |
/// | `HalfOpen` | one probe lease at a time | probe success (→ `Active`) or failure (→ `CoolingDown`, longer) |
/// | `Exhausted { until }` | no | the daily reset at `until` |
/// | `Disabled { cause }` | no | an operator's `enable` |
/// | `Draining { revoke_at }` | only when no other key can serve | revocation at `revoke_at` (the key leaves the pool) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "state", rename_all = "snake_case"))]
pub enum KeyState {
    /// Serving normally.
    Active,
    /// Not selected until `until`.
    CoolingDown {
        /// When the cooldown ends.
        until: Timestamp,
        /// Why it started.
        cause: CooldownCause,
    },
    /// The breaker's cooldown ended: one probe lease may test the key.
    HalfOpen,
    /// Quota used up until the next daily reset.
    Exhausted {
        /// The next daily reset.
        until: Timestamp,
    },
    /// Out of service until an operator enables it.
    Disabled {
        /// Why.
        cause: DisableCause,
    },
    /// Rotated out or scheduled for revocation: serves only as a last resort.
    Draining {
        /// When it leaves the pool.
        revoke_at: Timestamp,
    },
}

impl KeyState {
    /// Whether the state itself allows selection (limits may still prevent it).
    pub fn is_usable(&self) -> bool {
        matches!(
            self,
            KeyState::Active | KeyState::HalfOpen | KeyState::Draining { .. }
        )
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyState::Active => f.write_str("active"),
            KeyState::CoolingDown { until, cause } => {
                write!(f, "cooling down ({cause}) until {until}")
            }
            KeyState::HalfOpen => f.write_str("half-open"),
            KeyState::Exhausted { until } => write!(f, "exhausted until {until}"),
            KeyState::Disabled { cause } => write!(f, "disabled: {cause}"),
            KeyState::Draining { revoke_at } => write!(f, "draining until {revoke_at}"),
        }
    }
}

/// A daily limit a usage warning refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum LimitKind {
    /// Tokens per day.
    TokensPerDay,
    /// Requests per day.
    RequestsPerDay,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::TokensPerDay => "tokens per day",
            LimitKind::RequestsPerDay => "requests per day",
        })
    }
}

/// What of a key outlives a restart of the process that holds its pool: see
/// [`KeyPool::saved`](crate::KeyPool::saved) and
/// [`KeyPool::restore`](crate::KeyPool::restore).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SavedKey {
    /// Its state.
    pub state: KeyState,
    /// The pool's local day the counters belong to (days since the epoch).
    pub day: i64,
    /// Requests started that day.
    pub requests_today: u32,
    /// Tokens used that day.
    pub tokens_today: u64,
}
