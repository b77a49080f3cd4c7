//! The transport's one error type. It never holds a secret: request URLs are
//! stripped from backend errors and headers are never copied into it.

use std::fmt;

use keypool_core::Outcome;

/// What went wrong, for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The attempt took longer than its timeout (or a stream went idle).
    Timeout,
    /// The connection could not be made, or was refused or reset.
    Connect,
    /// The answer's body was larger than the configured maximum.
    BodyTooLarge,
    /// The body could not be read.
    Body,
    /// The stream was malformed or ended without `[DONE]`.
    Stream,
    /// The request could not be built (bad URL, bad header, bad body).
    Request,
    /// The transport could not be configured (e.g. an unreadable CA bundle).
    Config,
}

/// What an upstream's error event in a stream said of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Said {
    RateLimited,
    QuotaExhausted,
    Unauthorized,
    Forbidden,
    ClientError,
    Timeout,
    ServerError,
}

/// An error sending a request or reading its answer.
///
/// `Send + Sync`, small, and free of secrets: it carries a kind, a short
/// lowercase message and, for backend errors, their text with the URL removed.
#[derive(Debug, thiserror::Error)]
pub struct TransportError {
    kind: ErrorKind,
    message: Box<str>,
    /// What the upstream's own error in a stream says of the key (one byte:
    /// the error stays small).
    said: Option<Said>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl TransportError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            message: message.into().into_boxed_str(),
            said: None,
            source: None,
        }
    }

    /// The upstream's error in a stream, which says what became of the key
    /// (a quota spent, a rate limit, an overload). A rate limit's wait is
    /// not kept: an error event carries none.
    pub(crate) fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.said = Some(match outcome {
            Outcome::RateLimited { .. } => Said::RateLimited,
            Outcome::QuotaExhausted => Said::QuotaExhausted,
            Outcome::Unauthorized => Said::Unauthorized,
            Outcome::Forbidden => Said::Forbidden,
            Outcome::ClientError => Said::ClientError,
            Outcome::Timeout => Said::Timeout,
            _ => Said::ServerError,
        });
        self
    }

    #[cfg_attr(not(any(feature = "reqwest", feature = "hyper")), allow(dead_code))]
    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    #[cfg(feature = "hyper")]
    pub(crate) fn with_boxed_source(
        mut self,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        self.source = Some(source);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The attempt timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// The connection failed.
    pub fn is_connect(&self) -> bool {
        self.kind == ErrorKind::Connect
    }

    /// The body passed the size limit.
    pub fn is_body_too_large(&self) -> bool {
        self.kind == ErrorKind::BodyTooLarge
    }

    /// The stream was malformed or incomplete.
    pub fn is_stream(&self) -> bool {
        self.kind == ErrorKind::Stream
    }

    /// The request itself was invalid (never the key's fault).
    pub fn is_request(&self) -> bool {
        self.kind == ErrorKind::Request
    }

    /// What the key pool should be told about the attempt.
    pub fn outcome(&self) -> Outcome {
        if let Some(said) = self.said {
            return match said {
                Said::RateLimited => Outcome::RateLimited { retry_after: None },
                Said::QuotaExhausted => Outcome::QuotaExhausted,
                Said::Unauthorized => Outcome::Unauthorized,
                Said::Forbidden => Outcome::Forbidden,
                Said::ClientError => Outcome::ClientError,
                Said::Timeout => Outcome::Timeout,
                Said::ServerError => Outcome::ServerError,
            };
        }
        match self.kind {
            ErrorKind::Timeout => Outcome::Timeout,
            ErrorKind::Connect => Outcome::Connect,
            ErrorKind::Request | ErrorKind::Config => Outcome::ClientError,
            ErrorKind::BodyTooLarge | ErrorKind::Body | ErrorKind::Stream => Outcome::ServerError,
        }
    }
}

#[cfg(feature = "reqwest")]
impl From<reqwest::Error> for TransportError {
    fn from(e: reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else if e.is_connect() {
            ErrorKind::Connect
        } else if e.is_builder() || e.is_request() && !e.is_body() {
            ErrorKind::Request
        } else {
            ErrorKind::Body
        };
        let e = e.without_url();
        let message = match kind {
            ErrorKind::Timeout => "upstream timed out",
            ErrorKind::Connect => "could not connect to the upstream",
            ErrorKind::Request => "invalid upstream request",
            _ => "could not read the upstream's answer",
        };
        TransportError::new(kind, message).with_source(e)
    }
}
