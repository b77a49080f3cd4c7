//! Errors. Each names the key by name or id, never by secret.

use std::fmt;

use crate::state::KeyId;
use crate::time::Timestamp;

/// A configuration field is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid pool config: {field} {reason}")]
pub struct ConfigError {
    /// The field, e.g. `breaker.cooldown`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A key could not be added (or rotated in). Never contains the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddKeyError {
    /// The name is empty or only whitespace.
    #[error("key name must not be empty")]
    EmptyName,
    /// The secret does not start with an accepted prefix.
    #[error("key {name:?}: secret must start with one of {expected:?}")]
    MissingPrefix {
        /// The key's name.
        name: String,
        /// The accepted prefixes.
        expected: Vec<String>,
    },
    /// The secret is too short.
    #[error("key {name:?}: secret must be at least {min_len} characters long")]
    TooShort {
        /// The key's name.
        name: String,
        /// The minimum length.
        min_len: usize,
    },
    /// The secret contains whitespace (often a copy-paste accident).
    #[error("key {name:?}: secret must not contain whitespace")]
    Whitespace {
        /// The key's name.
        name: String,
    },
    /// The same secret is already in the pool.
    #[error("key {name:?}: the same secret is already in the pool as {existing:?}")]
    DuplicateSecret {
        /// The new key's name.
        name: String,
        /// The name of the key that already has it.
        existing: String,
    },
    /// Weight zero would never be selected.
    #[error("key {name:?}: weight must be at least 1")]
    ZeroWeight {
        /// The key's name.
        name: String,
    },
    /// A limit of zero would never be selected; leave it unset for "no limit".
    #[error("key {name:?}: {limit} must be at least 1 (leave it unset for no limit)")]
    ZeroLimit {
        /// The key's name.
        name: String,
        /// Which limit.
        limit: &'static str,
    },
    /// The key to rotate is not in the pool.
    #[error("{0} is not in the pool")]
    UnknownKey(KeyId),
    /// The pool holds `u32::MAX` keys already.
    #[error("the pool is full")]
    PoolFull,
}

/// The key named by an operation is not in the pool (never added, or revoked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not in the pool")]
pub struct UnknownKey(pub KeyId);

/// How many keys could not serve, by reason. Part of [`NoKeyAvailable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Unavailable {
    /// Cooling down after a 429.
    pub cooling_down: u32,
    /// Circuit breaker open, or half-open with its probe in flight.
    pub breaker_open: u32,
    /// Quota exhausted until the daily reset.
    pub exhausted: u32,
    /// Disabled after a 401.
    pub unauthorized: u32,
    /// Disabled after a 403.
    pub forbidden: u32,
    /// Disabled by an operator.
    pub disabled: u32,
    /// At their maximum of requests in flight.
    pub busy: u32,
    /// At a per-minute limit until the minute ends.
    pub minute_limited: u32,
    /// At the soft threshold of a daily limit until the daily reset.
    pub daily_limited: u32,
    /// Could serve, but the caller excluded them.
    pub excluded: u32,
    /// Could serve, but not the model asked for ([`NewKey::models`](crate::NewKey::models)).
    pub other_models: u32,
}

impl Unavailable {
    /// Total keys counted.
    pub fn total(&self) -> u32 {
        self.cooling_down
            + self.breaker_open
            + self.exhausted
            + self.unauthorized
            + self.forbidden
            + self.disabled
            + self.busy
            + self.minute_limited
            + self.daily_limited
            + self.excluded
            + self.other_models
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.cooling_down, "cooling down (rate limited)"),
            (self.breaker_open, "breaker open"),
            (self.exhausted, "exhausted until the daily reset"),
            (self.unauthorized, "disabled: unauthorized"),
            (self.forbidden, "disabled: forbidden"),
            (self.disabled, "disabled by an operator"),
            (self.busy, "at max in flight"),
            (self.minute_limited, "at a per-minute limit"),
            (self.daily_limited, "near a daily limit"),
            (self.excluded, "excluded by the caller"),
            (self.other_models, "not for this model"),
        ];
        let mut first = true;
        for (n, what) in parts {
            if n > 0 {
                if !first {
                    f.write_str(", ")?;
                }
                write!(f, "{n} {what}")?;
                first = false;
            }
        }
        if first {
            f.write_str("the pool has no keys")?;
        }
        Ok(())
    }
}

/// No key can serve now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub struct NoKeyAvailable {
    /// Why, by reason.
    pub unavailable: Unavailable,
    /// The earliest time a key becomes usable by itself (a cooldown or minute
    /// ends, the day resets), if any. Busy keys free up when a lease is reported.
    pub retry_at: Option<Timestamp>,
}

impl fmt::Display for NoKeyAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no key available: {}", self.unavailable)?;
        if let Some(t) = self.retry_at {
            write!(f, "; retry at {t}")?;
        }
        Ok(())
    }
}
