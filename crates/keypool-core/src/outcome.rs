//! What the caller reports about a lease: the outcome of one upstream attempt.

use std::time::Duration;

/// Tokens an upstream answer says it used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Usage {
    /// Input tokens, cached ones (read or written) included.
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    pub completion_tokens: u64,
    /// Of the input tokens, how many were served from the upstream's cache.
    pub cached_tokens: u64,
    /// Of the input tokens, how many the upstream wrote to its cache (a
    /// provider that charges for it says so: Anthropic's
    /// `cache_creation_input_tokens`).
    pub cache_write_tokens: u64,
    /// Of the output tokens, how many were reasoning the caller does not see.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Usage with the given prompt and completion tokens and no cached tokens.
    pub const fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
        }
    }

    /// Prompt plus completion tokens: what counts against a key's token limits.
    pub const fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// The outcome of one attempt made with a leased key.
///
/// The transport crate is the one place that maps HTTP answers to these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
pub enum Outcome {
    /// The upstream answered; usage counts and the failure streak resets.
    Success {
        /// Tokens the answer used.
        usage: Usage,
        /// Time from sending to the full answer; feeds the latency EWMA.
        latency: Duration,
    },
    /// 429 rate limited: the key cools down until `retry_after` (or the policy default).
    RateLimited {
        /// The upstream's Retry-After, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Quota or billing used up: Exhausted until the next daily reset.
    QuotaExhausted,
    /// 401, invalid or revoked key: Disabled at once until an operator enables it.
    Unauthorized,
    /// 403: Disabled at once until an operator enables it.
    Forbidden,
    /// 5xx or overloaded: counts toward the circuit breaker.
    ServerError,
    /// The attempt timed out: counts toward the circuit breaker.
    Timeout,
    /// Connection refused or reset: counts toward the circuit breaker.
    Connect,
    /// The caller's fault (400, 404, 413, 422, context length): no penalty.
    /// The key answered, so for the breaker it counts as a healthy answer.
    ClientError,
    /// The caller gave up: the lease is released with no penalty.
    Cancelled,
}

impl Outcome {
    /// Every outcome's [`label`](Self::label), in declaration order.
    pub const LABELS: [&'static str; 10] = [
        "success",
        "rate_limited",
        "quota_exhausted",
        "unauthorized",
        "forbidden",
        "server_error",
        "timeout",
        "connect",
        "client_error",
        "cancelled",
    ];

    /// A short snake-case name for metrics and logs, e.g. `rate_limited`.
    pub const fn label(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::QuotaExhausted => "quota_exhausted",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Forbidden => "forbidden",
            Outcome::ServerError => "server_error",
            Outcome::Timeout => "timeout",
            Outcome::Connect => "connect",
            Outcome::ClientError => "client_error",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The outcome's position in [`LABELS`](Self::LABELS).
    pub const fn index(&self) -> usize {
        match self {
            Outcome::Success { .. } => 0,
            Outcome::RateLimited { .. } => 1,
            Outcome::QuotaExhausted => 2,
            Outcome::Unauthorized => 3,
            Outcome::Forbidden => 4,
            Outcome::ServerError => 5,
            Outcome::Timeout => 6,
            Outcome::Connect => 7,
            Outcome::ClientError => 8,
            Outcome::Cancelled => 9,
        }
    }

    /// A success with the given usage and latency.
    pub const fn success(prompt_tokens: u64, completion_tokens: u64, latency: Duration) -> Self {
        Outcome::Success {
            usage: Usage::new(prompt_tokens, completion_tokens),
            latency,
        }
    }

    /// Whether this outcome counts as a failure for the circuit breaker.
    pub const fn is_breaker_failure(&self) -> bool {
        matches!(
            self,
            Outcome::ServerError | Outcome::Timeout | Outcome::Connect
        )
    }

    /// Whether another key may succeed where this one did not.
    pub const fn is_retryable(&self) -> bool {
        matches!(
            self,
            Outcome::RateLimited { .. }
                | Outcome::QuotaExhausted
                | Outcome::Unauthorized
                | Outcome::Forbidden
                | Outcome::ServerError
                | Outcome::Timeout
                | Outcome::Connect
        )
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn labels_match_their_index() {
        let all = [
            Outcome::success(1, 1, Duration::ZERO),
            Outcome::RateLimited { retry_after: None },
            Outcome::QuotaExhausted,
            Outcome::Unauthorized,
            Outcome::Forbidden,
            Outcome::ServerError,
            Outcome::Timeout,
            Outcome::Connect,
            Outcome::ClientError,
            Outcome::Cancelled,
        ];
        for (i, o) in all.iter().enumerate() {
            assert_eq!(o.index(), i);
            assert_eq!(Outcome::LABELS.get(i), Some(&o.label()));
        }
    }
}
