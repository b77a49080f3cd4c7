//! Pool configuration: strategy, rules, thresholds and policy defaults.

use std::time::Duration;

use crate::error::ConfigError;
use crate::secret::KeyRule;
use crate::time::UtcOffset;

/// How the pool chooses among the keys that can serve now.
///
/// Every strategy first restricts itself to the best class: the lowest tier,
/// with Draining keys after every other key. Each pick is `O(log n)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Strategy {
    /// Fewest tokens used today, counting tokens reserved by leases in flight;
    /// ties go to the key with fewer requests in flight (the first seed's rule).
    #[default]
    LeastUsed,
    /// Round robin among the keys with the fewest requests today (the second seed's rule).
    RoundRobin,
    /// Smooth weighted round robin by each key's weight, deterministic.
    ///
    /// Implemented as stride scheduling: each key advances a virtual clock by
    /// `1/weight` per pick, and the smallest clock goes next. Over any window a
    /// key's share is proportional to its weight and picks are interleaved, as
    /// with nginx's smooth weighted round robin, in `O(log n)` instead of `O(n)`.
    Weighted,
    /// Power of two choices: two keys sampled with the pool's seeded RNG, the
    /// one with the lower `(in flight + 1) × latency EWMA` wins.
    PowerOfTwo,
}

/// The per-key circuit breaker for server errors, timeouts and connection failures.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct BreakerConfig {
    /// Opens after this many consecutive failures. Default 5.
    pub consecutive_failures: u32,
    /// Length of the rolling window for the failure rate. Default 60 s.
    pub window: Duration,
    /// The failure rate is judged only over at least this many requests. Default 10.
    pub min_requests: u32,
    /// Opens when at least this percentage of the window's requests failed. Default 50.
    pub failure_rate_percent: u8,
    /// Cooldown after the first opening. Default 5 minutes.
    pub cooldown: Duration,
    /// The cooldown doubles on each reopening up to this. Default 15 minutes.
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            window: Duration::from_secs(60),
            min_requests: 10,
            failure_rate_percent: 50,
            cooldown: Duration::from_secs(5 * 60),
            max_cooldown: Duration::from_secs(15 * 60),
        }
    }
}

/// Everything a [`KeyPool`](crate::KeyPool) is configured with. Start from
/// `PoolConfig::default()` and change fields; [`KeyPool::new`](crate::KeyPool::new)
/// validates the whole.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct PoolConfig {
    /// Selection strategy. Default [`Strategy::LeastUsed`].
    pub strategy: Strategy,
    /// What a secret must look like to be added.
    pub key_rule: KeyRule,
    /// Fraction of any daily limit at which a key stops being selected. Default 0.90.
    pub soft_limit: f64,
    /// Cooldown after a 429 that carried no Retry-After. Default 30 s.
    pub rate_limit_cooldown: Duration,
    /// The longest an upstream can bench a key with a Retry-After or
    /// rate-limit headers ([`KeyPool::defer`](crate::KeyPool::defer)): a
    /// longer wait is cut to this. Default 1 hour.
    pub max_cooldown: Duration,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// A lease not reported within this time is released as if cancelled. Default 10 minutes.
    pub lease_timeout: Duration,
    /// Daily counters reset at midnight of this offset. Default UTC.
    pub utc_offset: UtcOffset,
    /// Seed for the power-of-two-choices RNG. Default 0; same seed, same picks.
    pub seed: u64,
    /// Events kept until drained; past this the oldest are dropped and counted. Default 1024.
    pub event_capacity: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            strategy: Strategy::default(),
            key_rule: KeyRule::default(),
            soft_limit: 0.90,
            rate_limit_cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(3600),
            breaker: BreakerConfig::default(),
            lease_timeout: Duration::from_secs(600),
            utc_offset: UtcOffset::UTC,
            seed: 0,
            event_capacity: 1024,
        }
    }
}

impl PoolConfig {
    /// Checks every field; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, reason: &'static str| Err(ConfigError { field, reason });
        if !(self.soft_limit > 0.0 && self.soft_limit <= 1.0) {
            return err("soft_limit", "must be a fraction in (0, 1]");
        }
        if self.rate_limit_cooldown.is_zero() {
            return err("rate_limit_cooldown", "must be greater than zero");
        }
        if self.max_cooldown < self.rate_limit_cooldown {
            return err("max_cooldown", "must be at least rate_limit_cooldown");
        }
        if self.lease_timeout.is_zero() {
            return err("lease_timeout", "must be greater than zero");
        }
        if self.event_capacity == 0 {
            return err("event_capacity", "must be at least 1");
        }
        let b = &self.breaker;
        if b.consecutive_failures == 0 {
            return err("breaker.consecutive_failures", "must be at least 1");
        }
        if b.window < Duration::from_secs(1) {
            return err("breaker.window", "must be at least one second");
        }
        if b.min_requests == 0 {
            return err("breaker.min_requests", "must be at least 1");
        }
        if b.failure_rate_percent == 0 || b.failure_rate_percent > 100 {
            return err("breaker.failure_rate_percent", "must be in 1..=100");
        }
        if b.cooldown.is_zero() {
            return err("breaker.cooldown", "must be greater than zero");
        }
        if b.max_cooldown < b.cooldown {
            return err("breaker.max_cooldown", "must be at least breaker.cooldown");
        }
        Ok(())
    }

    /// The soft limit in parts per million, for integer comparisons.
    pub(crate) fn soft_limit_ppm(&self) -> u64 {
        // Validated to (0, 1]; the cast cannot overflow.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ppm = (self.soft_limit * 1_000_000.0).round() as u64;
        ppm.clamp(1, 1_000_000)
    }
}
