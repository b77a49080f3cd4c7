//! Requests passed on as the client made them (any method, path, query,
//! content type and body, multipart included), and answers passed back as
//! they come: the head at once, the body as a stream.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keypool_core::Secret;

use crate::classify::Answer;
use crate::error::{ErrorKind, TransportError};

/// An answer's body as it arrives.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, TransportError>> + Send>>;

/// A request passed on as the client made it.
#[derive(Clone, Debug)]
pub struct RawRequest {
    /// The upstream's base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: Arc<str>,
    /// The method.
    pub method: Method,
    /// The path under the base URL with its query, e.g. `/files?purpose=batch`.
    pub path: String,
    /// The key's secret, sent as `Authorization: Bearer …` and nowhere else.
    pub secret: Secret,
    /// The client's headers passed on (content type, accept, `OpenAI-Beta`, …),
    /// never its own authorization.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, whole (so that another key can be tried with it).
    pub body: Bytes,
    /// Time allowed until the answer's head, and then between its chunks.
    pub timeout: Duration,
}

impl RawRequest {
    /// The full URL.
    pub fn url(&self) -> String {
        format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            self.path.trim_start_matches('/')
        )
    }
}

/// An upstream's answer to a [`RawRequest`].
pub struct RawAnswer {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as it arrives.
    pub body: ByteStream,
}

impl fmt::Debug for RawAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAnswer")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl RawAnswer {
    /// Reads the whole body (at most `max` bytes) into an [`Answer`], to
    /// classify it.
    pub async fn read(self, max: usize) -> Result<Answer, TransportError> {
        let mut body = bytes::BytesMut::new();
        let mut stream = self.body;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > max {
                return Err(TransportError::new(
                    ErrorKind::BodyTooLarge,
                    format!("upstream answer is larger than {max} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status: self.status,
            headers: self.headers,
            body: body.freeze(),
        })
    }
}

/// A body stream that fails when no chunk arrives for `idle`.
pub(crate) fn idle_limited<S, B, E>(
    body: S,
    idle: Duration,
    error: fn(E) -> TransportError,
) -> ByteStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: Into<Bytes>,
    E: Send + 'static,
{
    let stream = futures_util::stream::unfold(Some(Box::pin(body)), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Err(_) => Some((
                Err(TransportError::new(
                    ErrorKind::Timeout,
                    "upstream answer went idle",
                )),
                None,
            )),
            Ok(None) => None,
            Ok(Some(Ok(chunk))) => Some((Ok(chunk.into()), Some(body))),
            Ok(Some(Err(e))) => Some((Err(error(e)), None)),
        }
    });
    Box::pin(stream)
}

/// Whether a client's header may be passed on upstream: not its
/// authorization (the key's replaces it), not the hop's own (host,
/// length, connection, encodings the backend sets itself), not its cookies.
pub fn passes_upstream(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization"
            | "x-api-key"
            | "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "proxy-authorization"
            | "cookie"
            | "accept-encoding"
    ) && !name.as_str().starts_with("x-gateway-")
}
