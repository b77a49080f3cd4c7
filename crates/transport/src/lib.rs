//! The I/O boundary: sends requests to OpenAI-compatible upstreams, and the
//! one function that turns their answers into outcomes the key pool understands.
//!
//! - [`Transport`]: an async trait that sends one request ([`Transport::send`]),
//!   a stream ([`Transport::send_stream`]), or a request passed on as the
//!   client made it ([`Transport::send_raw`]). Backends: [`HyperTransport`]
//!   (feature `hyper`: hyper-util's pooled client, the leanest per request;
//!   no proxy support), [`ReqwestTransport`] (feature `reqwest`: proxies from
//!   the environment), both set up by one [`HttpConfig`], and
//!   [`MockTransport`] (feature `mock`), which the layers above use in their
//!   tests.
//! - [`classify`]: status, headers and body to a [`Class`], the
//!   [`keypool_core::Outcome`] to report, usage, OpenAI's rate-limit headers and
//!   the upstream's own error. Pure, and the only code that knows HTTP.
//! - [`TransportError`]: one error type with `is_timeout()`-style predicates
//!   that never holds a secret.
//!
//! # Key design decision: classification is a pure function
//!
//! Everything the pool, budget and client decide depends on reading answers
//! right: a 429 with `insufficient_quota` is not a rate limit, a 400 about the
//! context length is not the key's fault. So that reading is one pure
//! function, tested against every case and fuzzed with arbitrary input, and
//! the backends only move bytes.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use transport::{Answer, Class, classify};
//! use keypool_core::Outcome;
//!
//! let answer = Answer {
//!     status: 429,
//!     headers: [(http::header::RETRY_AFTER, http::HeaderValue::from_static("20"))].into_iter().collect(),
//!     body: r#"{"error":{"type":"requests","code":"rate_limit_exceeded","message":"slow down"}}"#.into(),
//! };
//! let c = classify(&answer, Duration::from_millis(120), SystemTime::now());
//! assert_eq!(c.class, Class::RateLimited { retry_after: Some(Duration::from_secs(20)) });
//! assert_eq!(c.outcome, Outcome::RateLimited { retry_after: Some(Duration::from_secs(20)) });
//! ```

mod classify;
mod error;
#[cfg(any(feature = "reqwest", feature = "hyper"))]
mod http_config;
#[cfg(feature = "hyper")]
mod hyper_backend;
#[cfg(feature = "mock")]
mod mock;
mod probe;
mod raw;
#[cfg(feature = "reqwest")]
mod reqwest_backend;
mod rules;
mod transport;

pub use classify::{
    Answer, Class, Classification, RateLimits, UpstreamError, classify, parse_duration,
    rate_limits, retry_after, stream_error_outcome, usage_of,
};
pub use error::{ErrorKind, TransportError};
#[cfg(any(feature = "reqwest", feature = "hyper"))]
pub use http_config::HttpConfig;
#[cfg(feature = "hyper")]
pub use hyper_backend::{HyperTransport, tls_client_config};
#[cfg(feature = "mock")]
pub use mock::{MockReply, MockTransport, Recorded};
pub use raw::{ByteStream, RawAnswer, RawRequest, passes_upstream};
#[cfg(feature = "reqwest")]
pub use reqwest_backend::ReqwestTransport;
pub use rules::{ErrorRule, RuleAction, classify_with};
pub use transport::{
    ChatStream, DEFAULT_MAX_BODY, RawEvents, Request, StreamEvent, StreamStart, Transport,
    chat_stream,
};
