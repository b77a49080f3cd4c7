//! The one place that knows HTTP: an upstream's answer becomes an outcome the
//! key pool understands. Pure: no I/O, and the time is passed in.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use keypool_core::{Outcome, Usage};

use crate::probe::{Probe, UsageProbe};

/// What an upstream answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (JSON, usually).
    pub body: bytes::Bytes,
}

/// The class of an answer: finer than [`Outcome`], for the layers above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// 2xx with a usable body.
    Success,
    /// 429: rate limited; retry after this long, if the upstream said.
    RateLimited {
        /// From `retry-after-ms` or `Retry-After` (seconds or an HTTP date).
        retry_after: Option<Duration>,
    },
    /// 402, or `insufficient_quota` / billing errors: retrying is useless today.
    QuotaExhausted,
    /// 401, `invalid_api_key`, `authentication_error`: the key is bad.
    Unauthorized,
    /// 403: the key may not do this.
    Forbidden,
    /// The prompt is longer than the model's window; the limit, when the message gives it.
    ContextLengthExceeded {
        /// The model's context length in tokens, if stated.
        limit: Option<u64>,
    },
    /// Another 4xx: the caller's fault, never the key's.
    ClientError {
        /// The status.
        status: u16,
    },
    /// 5xx, 529, `overloaded_error`, or an answer that cannot be read.
    ServerError {
        /// The status.
        status: u16,
    },
    /// 408: the upstream timed out.
    Timeout,
}

/// OpenAI's `x-ratelimit-*` headers, when present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-requests`: until the request budget refills.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-reset-tokens`: until the token budget refills.
    pub reset_tokens: Option<Duration>,
}

impl RateLimits {
    /// If the answer says the key has (about) nothing left, how long until it
    /// has: the key can be skipped until then instead of paying for a 429.
    pub fn exhausted_for(&self) -> Option<Duration> {
        let requests = self
            .remaining_requests
            .filter(|&r| r == 0)
            .and(self.reset_requests);
        let tokens = self
            .remaining_tokens
            .filter(|&t| t == 0)
            .and(self.reset_tokens);
        match (requests, tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The error an upstream described in its body (OpenAI's or Anthropic's shape).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamError {
    /// `error.type`.
    pub kind: Option<String>,
    /// `error.code`.
    pub code: Option<String>,
    /// `error.message`.
    pub message: Option<String>,
    /// `error.retry_after` (seconds), as some relays say when to come back
    /// (`{"error": {"code": "rate_limit_exceeded", "retry_after": 60}}`).
    pub retry_after: Option<Duration>,
    /// `error.max`, a context-length error's limit in tokens
    /// (`{"error": {"code": "context_length_exceeded", "max": 64000}}`).
    pub max: Option<u64>,
}

/// Everything read from an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    /// The class.
    pub class: Class,
    /// The outcome to report to the key pool.
    pub outcome: Outcome,
    /// Usage, from a 2xx body.
    pub usage: Option<Usage>,
    /// Rate-limit headers.
    pub rate_limits: RateLimits,
    /// The upstream's own error, if the body had one.
    pub error: Option<UpstreamError>,
}

impl Class {
    /// The outcome the key pool needs, given the attempt's latency and usage.
    pub fn outcome(&self, usage: Usage, latency: Duration) -> Outcome {
        match *self {
            Class::Success => Outcome::Success { usage, latency },
            Class::RateLimited { retry_after } => Outcome::RateLimited { retry_after },
            Class::QuotaExhausted => Outcome::QuotaExhausted,
            Class::Unauthorized => Outcome::Unauthorized,
            Class::Forbidden => Outcome::Forbidden,
            Class::ContextLengthExceeded { .. } | Class::ClientError { .. } => Outcome::ClientError,
            Class::ServerError { .. } => Outcome::ServerError,
            Class::Timeout => Outcome::Timeout,
        }
    }
}

/// Classifies an answer. `latency` is what the attempt took (for the
/// success outcome); `now` turns an HTTP-date `Retry-After` into a wait.
/// Never panics, whatever the status, headers or body.
pub fn classify(answer: &Answer, latency: Duration, now: SystemTime) -> Classification {
    let probe: Option<Probe> = serde_json::from_slice(&answer.body).ok();
    let error = probe
        .as_ref()
        .and_then(|p| p.error.as_ref())
        .and_then(upstream_error);
    let rate_limits = rate_limits(&answer.headers);
    let status = answer.status;
    let code = error.as_ref().and_then(|e| e.code.as_deref()).unwrap_or("");
    let kind = error.as_ref().and_then(|e| e.kind.as_deref()).unwrap_or("");
    let message = error
        .as_ref()
        .and_then(|e| e.message.as_deref())
        .unwrap_or("");
    let is = |s: &str| code == s || kind == s;

    let class = if (200..300).contains(&status) {
        if probe.is_some() {
            Class::Success
        } else {
            Class::ServerError { status }
        }
    } else if is("insufficient_quota") || is("billing_hard_limit_reached") || status == 402 {
        Class::QuotaExhausted
    } else if status == 401 || is("invalid_api_key") || is("authentication_error") {
        Class::Unauthorized
    } else if status == 403 || is("permission_error") {
        Class::Forbidden
    } else if status == 429 {
        Class::RateLimited {
            retry_after: retry_after(&answer.headers, now)
                .or_else(|| error.as_ref().and_then(|e| e.retry_after)),
        }
    } else if status == 529 || is("overloaded_error") || status >= 500 {
        Class::ServerError { status }
    } else if status == 408 {
        Class::Timeout
    } else if is("context_length_exceeded") || mentions_context_length(message) {
        Class::ContextLengthExceeded {
            limit: error
                .as_ref()
                .and_then(|e| e.max)
                .or_else(|| context_limit(message)),
        }
    } else if (400..500).contains(&status) {
        Class::ClientError { status }
    } else {
        // 1xx or 3xx: not an answer a client of this API should get.
        Class::ServerError { status }
    };
    let usage = if class == Class::Success {
        probe
            .as_ref()
            .and_then(|p| p.usage.as_ref())
            .and_then(UsageProbe::usage)
    } else {
        None
    };
    Classification {
        outcome: class.outcome(usage.unwrap_or_default(), latency),
        class,
        usage,
        rate_limits,
        error,
    }
}

/// What an error event in a stream says of the key: `{"error": …}` in a
/// chat chunk, the Responses API's `{"type": "error", "code", …}` or
/// `{"type": "response.failed", "response": {"error": …}}`, classified as
/// if it had come with a status (429 for a rate limit, else 500), so a
/// spent quota or a revoked key mid-stream counts as such.
pub fn stream_error_outcome(event: &serde_json::Value, now: SystemTime) -> Outcome {
    let error = event
        .get("error")
        .filter(|e| !e.is_null())
        .or_else(|| event.get("response")?.get("error"))
        .unwrap_or(event);
    let said = |f: &str| {
        error
            .get(f)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .contains("rate_limit")
    };
    let status = if said("code") || said("type") {
        429
    } else {
        500
    };
    let answer = Answer {
        status,
        headers: HeaderMap::new(),
        body: serde_json::json!({ "error": error }).to_string().into(),
    };
    classify(&answer, Duration::ZERO, now).outcome
}

/// Reads the `error` value of `{"error": {"type", "code", "message"}}`
/// (OpenAI) or Anthropic's `{"type": "error", "error": {"type", "message"}}`;
/// a bare string error too.
fn upstream_error(e: &serde_json::Value) -> Option<UpstreamError> {
    if let Some(message) = e.as_str() {
        return Some(UpstreamError {
            message: Some(message.to_owned()),
            ..UpstreamError::default()
        });
    }
    let text = |k: &str| match e.get(k) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let seconds = e
        .get("retry_after")
        .and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_WAIT_SECS)));
    Some(UpstreamError {
        kind: text("type"),
        code: text("code"),
        message: text("message"),
        retry_after: seconds,
        max: e.get("max").and_then(serde_json::Value::as_u64),
    })
}

/// Usage from a body or a stream event, at its top level (`usage`) or in
/// the response an event of the Responses API carries (`response.usage`):
/// in chat's shape (`prompt_tokens`, `completion_tokens`,
/// `prompt_tokens_details.cached_tokens`), the Responses API's
/// (`input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`)
/// or Anthropic's (`input_tokens`, `output_tokens`, `cache_read_input_tokens`).
pub fn usage_of(json: &serde_json::Value) -> Option<Usage> {
    use serde::Deserialize;
    let usage = json
        .get("usage")
        .or_else(|| json.get("response")?.get("usage"))?;
    UsageProbe::deserialize(usage).ok()?.usage()
}

fn mentions_context_length(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("maximum context length")
        || m.contains("context length")
        || m.contains("prompt is too long")
}

/// The limit in messages such as "This model's maximum context length is
/// 128000 tokens." or Anthropic's "prompt is too long: 210000 tokens > 200000 maximum".
fn context_limit(message: &str) -> Option<u64> {
    let numbers = || {
        message
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse::<u64>().ok())
    };
    if let Some(after) = message
        .to_ascii_lowercase()
        .split("context length is")
        .nth(1)
    {
        return after
            .split(|c: char| !c.is_ascii_digit())
            .find_map(|w| w.parse().ok());
    }
    if message.contains('>') {
        return message.split('>').nth(1).and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .find_map(|w| w.parse().ok())
        });
    }
    numbers().next()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The longest wait read from an answer (a year); the key pool caps what
/// it honours far lower (`PoolConfig::max_cooldown`).
const MAX_WAIT_SECS: f64 = 86_400.0 * 365.0;

/// `retry-after-ms`, else `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(MAX_WAIT_SECS)));
    }
    let v = header(headers, "retry-after")?;
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(MAX_WAIT_SECS)));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// OpenAI's rate-limit headers.
pub fn rate_limits(headers: &HeaderMap) -> RateLimits {
    let count = |name| header(headers, name).and_then(|v| v.parse::<u64>().ok());
    let reset = |name| header(headers, name).and_then(parse_duration);
    RateLimits {
        remaining_requests: count("x-ratelimit-remaining-requests"),
        remaining_tokens: count("x-ratelimit-remaining-tokens"),
        reset_requests: reset("x-ratelimit-reset-requests"),
        reset_tokens: reset("x-ratelimit-reset-tokens"),
    }
}

/// Parses Go-style durations as OpenAI sends them: `1s`, `6m0s`, `20ms`,
/// `1h2m3.5s`, `150us`. A bare number is seconds. `None` if malformed.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest.get(..num_len)?.parse().ok()?;
        rest = rest.get(num_len..)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest.get(..unit_len)?;
        rest = rest.get(unit_len..)?;
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * seconds;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(1e9)))
}
