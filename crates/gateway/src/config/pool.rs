//! `[pool]`: how every provider's key pool behaves.

use std::time::Duration;

use keypool_core::{BreakerConfig, KeyRule, PoolConfig, UtcOffset};
use serde::Deserialize;

use super::ConfigError;

/// `[pool]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Where keys' days begin (their daily quotas reset at this midnight),
    /// e.g. `"+07:00"`. Default: `[budget] utc_offset`, else UTC.
    pub utc_offset: Option<String>,
    /// The longest an upstream can bench a key with `Retry-After` or
    /// rate-limit headers, in seconds; longer waits are cut. Default 3600.
    pub max_cooldown_secs: Option<u64>,
    /// The fraction of a key's daily limits at which it stops being
    /// picked, in (0, 1]. Default 0.9.
    pub soft_fraction: Option<f64>,
    /// How long a key rests after a 429 that says no wait, in seconds.
    /// Default 30.
    pub rate_limit_cooldown_secs: Option<u64>,
    /// A lease not reported within this many seconds is released as
    /// cancelled. Default 600.
    pub lease_timeout_secs: Option<u64>,
    /// The fewest characters a key's secret may have. Default 20.
    pub key_min_length: Option<usize>,
    /// The per-key circuit breaker.
    #[serde(default)]
    pub breaker: BreakerSection,
}

/// `[pool.breaker]`: opens a key's circuit on server errors, timeouts and
/// connection failures.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Opens after this many failures in a row. Default 5.
    pub consecutive_failures: Option<u32>,
    /// The rolling window of the failure rate, in seconds. Default 60.
    pub window_secs: Option<u64>,
    /// The rate is judged over at least this many requests. Default 10.
    pub min_requests: Option<u32>,
    /// Opens when at least this percent of the window failed. Default 50.
    pub failure_rate_percent: Option<u8>,
    /// The first opening's cooldown, in seconds. Default 300.
    pub cooldown_secs: Option<u64>,
    /// The cooldown doubles with each reopening up to this, in seconds.
    /// Default 900.
    pub max_cooldown_secs: Option<u64>,
}

fn secs(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_secs)
}

impl BreakerSection {
    fn build(&self) -> BreakerConfig {
        let d = BreakerConfig::default();
        BreakerConfig {
            consecutive_failures: self.consecutive_failures.unwrap_or(d.consecutive_failures),
            window: secs(self.window_secs, d.window),
            min_requests: self.min_requests.unwrap_or(d.min_requests),
            failure_rate_percent: self.failure_rate_percent.unwrap_or(d.failure_rate_percent),
            cooldown: secs(self.cooldown_secs, d.cooldown),
            max_cooldown: secs(self.max_cooldown_secs, d.max_cooldown),
        }
    }
}

impl PoolSection {
    /// The pools' configuration; `budget_offset` is `[budget] utc_offset`.
    pub(super) fn build(&self, budget_offset: Option<&str>) -> Result<PoolConfig, ConfigError> {
        let defaults = PoolConfig::default();
        let config = PoolConfig {
            utc_offset: self.offset(budget_offset)?,
            max_cooldown: secs(self.max_cooldown_secs, defaults.max_cooldown),
            soft_limit: self.soft_fraction.unwrap_or(defaults.soft_limit),
            rate_limit_cooldown: secs(self.rate_limit_cooldown_secs, defaults.rate_limit_cooldown),
            lease_timeout: secs(self.lease_timeout_secs, defaults.lease_timeout),
            key_rule: KeyRule {
                min_len: self.key_min_length.unwrap_or(defaults.key_rule.min_len),
                ..defaults.key_rule.clone()
            },
            breaker: self.breaker.build(),
            ..defaults
        };
        if config.key_rule.min_len == 0 {
            return Err(ConfigError::new(
                "pool.key_min_length",
                "must be at least 1",
            ));
        }
        config
            .validate()
            .map_err(|e| ConfigError::new(format!("pool.{}", pool_field(e.field)), e.reason))?;
        Ok(config)
    }

    fn offset(&self, budget_offset: Option<&str>) -> Result<UtcOffset, ConfigError> {
        let (field, offset) = match (&self.utc_offset, budget_offset) {
            (Some(o), _) => ("pool.utc_offset", Some(o.as_str())),
            (None, Some(o)) => ("budget.utc_offset", Some(o)),
            (None, None) => ("pool.utc_offset", None),
        };
        match offset {
            Some(o) => o.parse().map_err(|e: keypool_core::ParseOffsetError| {
                ConfigError::new(field, e.to_string())
            }),
            None => Ok(UtcOffset::UTC),
        }
    }
}

/// The file's name of a pool setting.
fn pool_field(field: &str) -> &str {
    match field {
        "max_cooldown" => "max_cooldown_secs",
        "soft_limit" => "soft_fraction",
        "rate_limit_cooldown" => "rate_limit_cooldown_secs",
        "lease_timeout" => "lease_timeout_secs",
        "breaker.window" => "breaker.window_secs",
        "breaker.cooldown" => "breaker.cooldown_secs",
        "breaker.max_cooldown" => "breaker.max_cooldown_secs",
        other => other,
    }
}
