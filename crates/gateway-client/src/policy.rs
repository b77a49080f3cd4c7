//! Retry and context-length policies, as small values tested without I/O.

use std::collections::HashMap;
use std::time::Duration;

/// How hard the client tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upstream attempts at most per request. Default 4.
    pub max_attempts: u32,
    /// The whole request (waits included) must finish within this. Default 60 s.
    pub deadline: Duration,
    /// One attempt's timeout (capped by what is left of the deadline). Default 30 s.
    pub attempt_timeout: Duration,
    /// The first backoff's ceiling; it doubles per retry. Default 100 ms.
    pub base_backoff: Duration,
    /// The largest backoff ceiling. Default 2 s.
    pub max_backoff: Duration,
    /// Output tokens reserved when a request sets no cap. Default `None`:
    /// the model's most (`budget::ModelPrice::max_output`), so that a
    /// reservation is an upper bound of what the answer can cost.
    pub default_max_output_tokens: Option<u64>,
    /// Seed for the backoff jitter. Default 0.
    pub seed: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            deadline: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(30),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            default_max_output_tokens: None,
            seed: 0,
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1 for the first retry):
    /// "full jitter", a uniform draw from zero to `min(max, base × 2^(retry-1))`,
    /// given a uniform `draw` in `0..=u64::MAX`.
    pub fn backoff(&self, retry: u32, draw: u64) -> Duration {
        let ceiling = self
            .base_backoff
            .checked_mul(1u32 << (retry.saturating_sub(1)).min(20))
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = (u128::from(draw) * u128::from(nanos) / u128::from(u64::MAX)) as u64;
        Duration::from_nanos(jittered)
    }
}

/// What to do when a prompt may not fit a model's context window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextPolicy {
    /// Drop the oldest non-system messages that do not fit the model's window
    /// (from the price table) before sending, and again on a context-length
    /// error (once).
    pub truncate: bool,
    /// On a context-length error, retry once with this larger model.
    pub fallback_models: HashMap<String, String>,
}

/// How a rollout's first candidate is judged against its baseline
/// ([`Client::analyze`](crate::Client::analyze)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analysis {
    /// Judge the candidate at all. When `false` no verdict is ever reached
    /// for the rollout (build its schedule with
    /// `RolloutBuilder::promote_on_verdicts(false)` to ramp on time alone).
    pub enabled: bool,
    /// How often; `None`: the monitor's interval.
    pub interval: Option<Duration>,
    /// The gates; `None`: the client's ([`ClientBuilder::gates`](crate::ClientBuilder::gates)).
    pub gates: Option<canary::Gates>,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            enabled: true,
            interval: None,
            gates: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_backoff_doubles_to_a_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, u64::MAX), Duration::from_millis(100));
        assert_eq!(p.backoff(2, u64::MAX), Duration::from_millis(200));
        assert_eq!(p.backoff(5, u64::MAX), Duration::from_millis(1600));
        assert_eq!(p.backoff(6, u64::MAX), Duration::from_secs(2));
        assert_eq!(p.backoff(60, u64::MAX), Duration::from_secs(2));
        assert_eq!(p.backoff(3, 0), Duration::ZERO);
        assert_eq!(
            p.backoff(1, u64::MAX / 2),
            Duration::from_nanos(49_999_999),
            "rounded down"
        );
    }
}
