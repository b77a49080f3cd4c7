//! `[retry]`: how hard a request tries.

use std::time::Duration;

use gateway_client::RetryPolicy;
use serde::Deserialize;

use super::ConfigError;

/// `[retry]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Upstream attempts per request. Default 4.
    pub max_attempts: Option<u32>,
    /// Seconds a whole request may take. Default 60.
    pub deadline_secs: Option<u64>,
    /// Seconds one attempt may take. Default 30.
    pub attempt_timeout_secs: Option<u64>,
    /// The first backoff's ceiling in milliseconds; it doubles with each
    /// retry (full jitter). Default 100.
    pub base_backoff_ms: Option<u64>,
    /// The largest backoff ceiling in milliseconds. Default 2000.
    pub max_backoff_ms: Option<u64>,
}

impl RetryConfig {
    /// The client's retry policy: the defaults, with what the file sets.
    pub(super) fn build(&self) -> Result<RetryPolicy, ConfigError> {
        let defaults = RetryPolicy::default();
        let secs = |field: &str, v: Option<u64>, default: Duration| match v {
            Some(0) => Err(ConfigError::new(
                format!("retry.{field}"),
                "must be at least 1 second",
            )),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(default),
        };
        let policy = RetryPolicy {
            max_attempts: match self.max_attempts {
                Some(0) => {
                    return Err(ConfigError::new("retry.max_attempts", "must be at least 1"));
                }
                Some(n) => n,
                None => defaults.max_attempts,
            },
            deadline: secs("deadline_secs", self.deadline_secs, defaults.deadline)?,
            attempt_timeout: secs(
                "attempt_timeout_secs",
                self.attempt_timeout_secs,
                defaults.attempt_timeout,
            )?,
            base_backoff: self
                .base_backoff_ms
                .map_or(defaults.base_backoff, Duration::from_millis),
            max_backoff: self
                .max_backoff_ms
                .map_or(defaults.max_backoff, Duration::from_millis),
            ..defaults
        };
        if policy.max_backoff < policy.base_backoff {
            return Err(ConfigError::new(
                "retry.max_backoff_ms",
                format!(
                    "must be at least base_backoff_ms ({} ms)",
                    policy.base_backoff.as_millis()
                ),
            ));
        }
        Ok(policy)
    }
}
