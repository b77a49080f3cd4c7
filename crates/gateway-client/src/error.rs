//! The client's errors. Keys are named by name only.

use std::time::SystemTime;

use transport::{TransportError, UpstreamError};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No key of any provider can serve before the deadline.
    #[error("no key available: {detail}{}", retry_at.map(|t| format!("; retry after {}", httpdate_of(t))).unwrap_or_default())]
    NoKeyAvailable {
        /// Per provider, why its keys cannot serve.
        detail: String,
        /// The earliest time a key becomes usable, if any.
        retry_at: Option<SystemTime>,
    },
    /// No provider serves the model (nor any of its fallbacks); no key was
    /// tried.
    #[error("model {model:?} is not served here")]
    ModelNotFound {
        /// The model asked for (after the canary's choice).
        model: String,
    },
    /// The key an id the request names belongs to cannot serve (disabled,
    /// cooling down, exhausted, removed): no other key can, as the id is
    /// the other key's.
    #[error("the key that made {id:?} ({key}) cannot serve now: {detail}")]
    PinnedKeyUnavailable {
        /// The id.
        id: String,
        /// The key, by name.
        key: String,
        /// Why.
        detail: String,
        /// When it may serve again, if known.
        retry_at: Option<SystemTime>,
    },
    /// A budget limit refuses the request.
    #[error(transparent)]
    Budget(#[from] budget::BudgetError),
    /// The prompt does not fit the model, even after truncating or falling back.
    #[error("context length exceeded for model {model:?}{}", limit.map(|l| format!(" (limit {l} tokens)")).unwrap_or_default())]
    ContextLengthExceeded {
        /// The model.
        model: String,
        /// Its limit, if known.
        limit: Option<u64>,
    },
    /// The upstream refused the request itself (4xx): retrying cannot help.
    #[error("upstream refused the request ({status}): {}", error.as_ref().and_then(|e| e.message.clone()).unwrap_or_default())]
    Upstream {
        /// The status.
        status: u16,
        /// The upstream's error, if it sent one.
        error: Option<Box<UpstreamError>>,
        /// The key that sent it, by name.
        key: String,
    },
    /// Every attempt failed (or the deadline passed); the last failure.
    #[error("all {attempts} attempts failed; last: {last}")]
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
        /// What the last one got, by key name.
        last: String,
    },
    /// The stream failed after its first chunk (a stream cannot be replayed).
    #[error("stream failed: {0}")]
    Stream(TransportError),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The canary could not assign the request.
    #[error(transparent)]
    Canary(#[from] canary::CanaryError),
    /// The client is misconfigured.
    #[error("invalid client config: {0}")]
    Config(String),
}

fn httpdate_of(t: SystemTime) -> String {
    keypool_core::Timestamp::from_system_time(t).to_string()
}

impl ClientError {
    /// Whether no key could serve.
    pub fn is_no_key(&self) -> bool {
        matches!(self, ClientError::NoKeyAvailable { .. })
    }

    /// Whether a budget refused.
    pub fn is_budget(&self) -> bool {
        matches!(self, ClientError::Budget(_))
    }
}
