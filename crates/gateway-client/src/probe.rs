//! Probing a key: the cheapest request that proves it works.

use std::time::Duration;

use keypool_core::Secret;
use transport::Class;

use crate::client::Client;

/// The longest a probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a probe of a key learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The upstream answered: how (`Class::Success` when the key works).
    Answered(Class),
    /// No answer (connection, timeout): nothing is known of the key.
    NoAnswer(String),
}

impl ProbeOutcome {
    /// Whether the key served the probe.
    pub fn works(&self) -> bool {
        matches!(self, ProbeOutcome::Answered(Class::Success))
    }
}

impl std::fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let class = match self {
            ProbeOutcome::NoAnswer(e) => return write!(f, "no answer: {e}"),
            ProbeOutcome::Answered(class) => class,
        };
        match class {
            Class::Success => f.write_str("the key works"),
            Class::RateLimited { .. } => f.write_str("the upstream rate-limits the key"),
            Class::QuotaExhausted => f.write_str("the key's quota is spent"),
            Class::Unauthorized => f.write_str("the upstream does not accept the key (401)"),
            Class::Forbidden => f.write_str("the key may not call this model (403)"),
            Class::ContextLengthExceeded { .. } => f.write_str("the probe was too long"),
            Class::ClientError { status } => write!(f, "the upstream refused the probe ({status})"),
            Class::ServerError { status } => write!(f, "the upstream failed ({status})"),
            Class::Timeout => f.write_str("the upstream timed out"),
        }
    }
}

impl Client {
    /// Sends the cheapest request that proves a key works (a chat
    /// completion of `model` with one output token) to `provider` with
    /// `secret`, outside the pool: nothing is leased, counted or learned.
    /// `None` for an unknown provider.
    pub async fn probe(&self, provider: &str, secret: Secret, model: &str) -> Option<ProbeOutcome> {
        let base_url = self
            .inner
            .providers
            .iter()
            .find(|p| &*p.name == provider)?
            .base_url
            .clone();
        let body = serde_json::json!({
            "model": model,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "ping"}],
        });
        let mut request =
            transport::Request::with_json(base_url, "/chat/completions", secret, &body).ok()?;
        request.timeout = PROBE_TIMEOUT.min(self.inner.retry.attempt_timeout);
        let sent = tokio::time::Instant::now();
        Some(match self.inner.transport.send(request).await {
            Ok(answer) => {
                let now = self.inner.clock.now();
                let c = transport::classify(&answer, sent.elapsed(), now);
                ProbeOutcome::Answered(c.class)
            }
            Err(e) => ProbeOutcome::NoAnswer(e.to_string()),
        })
    }
}
