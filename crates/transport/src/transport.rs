//! The transport trait, its request and answer types, and chat streams.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use keypool_core::{Secret, Usage};
use wire::JsonBody;

use crate::classify::{Answer, stream_error_outcome, usage_of};
use crate::error::{ErrorKind, TransportError};
use crate::raw::{RawAnswer, RawRequest};

/// The default largest body read from an upstream: 16 MiB.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

/// One request to an upstream.
#[derive(Clone, Debug)]
pub struct Request {
    /// The upstream's base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: Arc<str>,
    /// The path under it, e.g. `/chat/completions`.
    pub path: Arc<str>,
    /// The key's secret, sent as `Authorization: Bearer …` and nowhere else.
    pub secret: Secret,
    /// The JSON body as the caller sent it, with the client's edits
    /// pending; shared, so that retries do not copy it.
    pub body: JsonBody,
    /// The time allowed for this attempt (for a stream: until the first byte,
    /// and then between chunks).
    pub timeout: Duration,
    /// Extra headers (never logged).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The method: `POST` for every API call the client makes itself (the
    /// backends send [`send`](Transport::send) and
    /// [`send_stream`](Transport::send_stream) as `POST`); what a passed
    /// through request used, as the mock's scripts see it.
    pub method: http::Method,
    /// Whether a stream asks for its usage with
    /// `stream_options.include_usage` (chat and legacy completions; the
    /// Responses API reports usage in `response.completed` and refuses the
    /// option). Default true.
    pub include_usage: bool,
}

impl Request {
    /// A POST of `body` to `base_url` + `path` with `secret`, 60 s timeout, no extra headers.
    pub fn new(
        base_url: impl Into<Arc<str>>,
        path: impl Into<Arc<str>>,
        secret: Secret,
        body: JsonBody,
    ) -> Self {
        Request {
            base_url: base_url.into(),
            path: path.into(),
            secret,
            body,
            timeout: Duration::from_secs(60),
            headers: Vec::new(),
            include_usage: true,
            method: http::Method::POST,
        }
    }

    /// The full URL.
    pub fn url(&self) -> String {
        format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            self.path.trim_start_matches('/')
        )
    }

    /// A request whose body is `body` (for tests, probes and examples).
    pub fn with_json(
        base_url: impl Into<Arc<str>>,
        path: impl Into<Arc<str>>,
        secret: Secret,
        body: &serde_json::Value,
    ) -> Result<Self, TransportError> {
        let bytes = serde_json::to_vec(body).map_err(|_| not_json())?;
        let body = JsonBody::parse(bytes).map_err(|_| not_json())?;
        Ok(Self::new(base_url, path, secret, body))
    }

    /// The bytes sent for a plain request: the body with its edits.
    pub fn body_bytes(&self) -> Bytes {
        self.body.to_bytes()
    }

    /// The bytes sent for a stream: the body with `stream: true` and (with
    /// [`include_usage`](Self::include_usage))
    /// `stream_options.include_usage: true` spliced in, so that the final
    /// chunk carries the usage.
    pub fn streaming_body(&self) -> Bytes {
        let mut body = self.body.clone();
        body.set("stream", "true");
        if self.include_usage {
            body.set_in("stream_options", "include_usage", "true");
        }
        body.to_bytes()
    }

    /// The body as it is sent, as a JSON tree (for mocks and tests; `null`
    /// if it could not be read).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body.to_bytes()).unwrap_or(serde_json::Value::Null)
    }
}

fn not_json() -> TransportError {
    TransportError::new(ErrorKind::Request, "the request body is not a JSON object")
}

/// One server-sent event's payload as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A chunk's `data` (JSON text), passed on as it arrives.
    Chunk(String),
    /// `[DONE]`: the stream ended properly; the usage from its last chunk.
    Done {
        /// Usage, if a chunk carried it.
        usage: Option<Usage>,
    },
}

/// A stream of chat chunks: yields each as it arrives, then `Done` with the
/// usage, or an error (a stream that ends without `[DONE]`, goes idle past
/// its timeout, carries an error, or passes the size limit). Nothing follows
/// `Done` or an error.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, TransportError>> + Send>>;

/// Raw server-sent events, as a backend produces them.
pub type RawEvents = Pin<Box<dyn Stream<Item = Result<String, TransportError>> + Send>>;

/// The start of a streamed answer.
pub enum StreamStart {
    /// 2xx: chunks follow.
    Events {
        /// The status.
        status: u16,
        /// The headers (rate limits among them).
        headers: HeaderMap,
        /// The chunks.
        events: ChatStream,
    },
    /// Not 2xx: the whole (error) answer, to classify.
    Answered(Answer),
}

impl fmt::Debug for StreamStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamStart::Events { status, .. } => f
                .debug_struct("Events")
                .field("status", status)
                .finish_non_exhaustive(),
            StreamStart::Answered(a) => f.debug_tuple("Answered").field(&a.status).finish(),
        }
    }
}

/// Sends requests upstream. The only I/O in the workspace's libraries.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Sends a request and reads the whole answer (up to the body limit).
    async fn send(&self, request: Request) -> Result<Answer, TransportError>;

    /// Sends a streaming request ([`Request::streaming_body`]) and returns
    /// chunks as they arrive.
    async fn send_stream(&self, request: Request) -> Result<StreamStart, TransportError>;

    /// Sends a request as the client made it and returns the answer's head
    /// once it arrives, its body as it comes. A transport that cannot
    /// answers with an error of kind [`ErrorKind::Request`].
    async fn send_raw(&self, request: RawRequest) -> Result<RawAnswer, TransportError> {
        let _ = request;
        Err(TransportError::new(
            ErrorKind::Request,
            "this transport does not pass requests through",
        ))
    }
}

/// Wraps raw SSE data into a [`ChatStream`]: tracks `[DONE]` and the usage,
/// applies the idle timeout between chunks and the total size limit.
pub fn chat_stream(raw: RawEvents, idle: Duration, max_bytes: usize) -> ChatStream {
    struct State {
        raw: RawEvents,
        usage: Option<Usage>,
        bytes: usize,
        finished: bool,
        /// A Responses stream's last event passed: `Done` comes next.
        ended: bool,
    }
    let state = State {
        raw,
        usage: None,
        bytes: 0,
        finished: false,
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, move |mut st| async move {
        if st.finished {
            return None;
        }
        if st.ended {
            st.finished = true;
            let usage = st.usage;
            return Some((Ok(StreamEvent::Done { usage }), st));
        }
        let fail = |mut st: State, kind, msg: &str| {
            st.finished = true;
            Some((Err(TransportError::new(kind, msg)), st))
        };
        let data = match tokio::time::timeout(idle, st.raw.next()).await {
            Err(_) => return fail(st, ErrorKind::Timeout, "upstream stream went idle"),
            Ok(None) => {
                return fail(
                    st,
                    ErrorKind::Stream,
                    "upstream stream ended without [DONE]",
                );
            }
            Ok(Some(Err(e))) => {
                st.finished = true;
                return Some((Err(e), st));
            }
            Ok(Some(Ok(data))) => data,
        };
        st.bytes = st.bytes.saturating_add(data.len());
        if st.bytes > max_bytes {
            return fail(
                st,
                ErrorKind::BodyTooLarge,
                "upstream stream passed the body size limit",
            );
        }
        if data.trim() == "[DONE]" {
            st.finished = true;
            let usage = st.usage;
            return Some((Ok(StreamEvent::Done { usage }), st));
        }
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&data) {
            let kind = json.get("type").and_then(serde_json::Value::as_str);
            if json.get("error").is_some_and(|e| !e.is_null())
                || matches!(kind, Some("error" | "response.failed"))
            {
                st.finished = true;
                let outcome = stream_error_outcome(&json, std::time::SystemTime::now());
                let e =
                    TransportError::new(ErrorKind::Stream, "upstream sent an error in the stream")
                        .with_outcome(outcome);
                return Some((Err(e), st));
            }
            if let Some(u) = usage_of(&json) {
                st.usage = Some(u);
            }
            // The Responses API ends its stream with its last event, not `[DONE]`.
            st.ended = matches!(kind, Some("response.completed" | "response.incomplete"));
        }
        Some((Ok(StreamEvent::Chunk(data)), st))
    });
    Box::pin(stream)
}
