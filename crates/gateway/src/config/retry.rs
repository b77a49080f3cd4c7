//! `[retry]`: how hard a request tries.

use std::time::Duration;

use gateway_client::RetryPolicy;
use serde::Deserialize;

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
}

impl RetryConfig {
    /// The client's retry policy: the defaults, with what the file sets.
    pub(super) fn build(&self) -> RetryPolicy {
        let defaults = RetryPolicy::default();
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(defaults.max_attempts).max(1),
            deadline: self
                .deadline_secs
                .map_or(defaults.deadline, Duration::from_secs),
            attempt_timeout: self
                .attempt_timeout_secs
                .map_or(defaults.attempt_timeout, Duration::from_secs),
            ..defaults
        }
    }
}
