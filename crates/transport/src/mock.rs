//! A scripted transport for the tests of the layers above.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use keypool_core::Secret;
use wire::JsonBody;

use crate::classify::Answer;
use crate::error::{ErrorKind, TransportError};
use crate::raw::{RawAnswer, RawRequest};
use crate::transport::{DEFAULT_MAX_BODY, Request, StreamStart, Transport, chat_stream};

/// One scripted reply.
#[derive(Clone, Debug)]
pub struct MockReply {
    kind: ReplyKind,
    latency: Duration,
}

#[derive(Clone, Debug)]
enum ReplyKind {
    Answer(Answer),
    Stream {
        headers: HeaderMap,
        chunks: Vec<String>,
        done: bool,
        gap: Duration,
    },
    Error(ErrorKind),
}

impl MockReply {
    /// An answer with a status and a JSON body (and its content type).
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        let body = bytes::Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        MockReply {
            kind: ReplyKind::Answer(Answer {
                status,
                headers,
                body,
            }),
            latency: Duration::ZERO,
        }
    }

    /// An answer with a status and a raw body.
    pub fn raw(status: u16, body: impl Into<bytes::Bytes>) -> Self {
        MockReply {
            kind: ReplyKind::Answer(Answer {
                status,
                headers: HeaderMap::new(),
                body: body.into(),
            }),
            latency: Duration::ZERO,
        }
    }

    /// A 200 chat completion saying `content`, with usage.
    pub fn chat(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self::json(
            200,
            &serde_json::json!({
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "model": "mock",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
            }),
        )
    }

    /// An OpenAI-shaped error answer.
    pub fn error(status: u16, kind: &str, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({"error": {"message": message, "type": kind, "code": code}}),
        )
    }

    /// A streamed answer: these `data` payloads, then `[DONE]` if `done`.
    pub fn stream(chunks: Vec<String>, done: bool) -> Self {
        MockReply {
            kind: ReplyKind::Stream {
                headers: HeaderMap::new(),
                chunks,
                done,
                gap: Duration::ZERO,
            },
            latency: Duration::ZERO,
        }
    }

    /// A streamed chat answer: one chunk per piece of text, a final usage chunk, `[DONE]`.
    pub fn chat_stream(pieces: &[&str], prompt_tokens: u64, completion_tokens: u64) -> Self {
        let mut chunks: Vec<String> = pieces
            .iter()
            .map(|p| serde_json::json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}}]}).to_string())
            .collect();
        chunks.push(
            serde_json::json!({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}})
                .to_string(),
        );
        Self::stream(chunks, true)
    }

    /// A Responses API answer (`POST /responses`): one output message with
    /// `text`, and usage with `cached` of the `input` tokens from the cache.
    pub fn response(text: &str, input: u64, cached: u64, output: u64) -> Self {
        Self::json(
            200,
            &response_object(text, "completed", Some((input, cached, output))),
        )
    }

    /// A streamed Responses API answer: `response.created`, one
    /// `response.output_text.delta` per piece, and `response.completed`
    /// with the usage; no `[DONE]` (the API sends none).
    pub fn response_stream(pieces: &[&str], input: u64, cached: u64, output: u64) -> Self {
        let text: String = pieces.concat();
        let event = |kind: &str, extra: serde_json::Value| {
            let mut e = serde_json::json!({"type": kind});
            if let (Some(o), serde_json::Value::Object(x)) = (e.as_object_mut(), extra) {
                o.extend(x);
            }
            e.to_string()
        };
        let mut chunks = vec![event(
            "response.created",
            serde_json::json!({"response": response_object("", "in_progress", None)}),
        )];
        chunks.extend(pieces.iter().map(|p| {
            event(
                "response.output_text.delta",
                serde_json::json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": p}),
            )
        }));
        chunks.push(event(
            "response.completed",
            serde_json::json!({"response": response_object(&text, "completed", Some((input, cached, output)))}),
        ));
        Self::stream(chunks, false)
    }

    /// The attempt times out.
    pub fn timeout() -> Self {
        MockReply {
            kind: ReplyKind::Error(ErrorKind::Timeout),
            latency: Duration::ZERO,
        }
    }

    /// The connection is refused.
    pub fn connect_error() -> Self {
        MockReply {
            kind: ReplyKind::Error(ErrorKind::Connect),
            latency: Duration::ZERO,
        }
    }

    /// Adds a header to the answer.
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        let headers = match &mut self.kind {
            ReplyKind::Answer(a) => &mut a.headers,
            ReplyKind::Stream { headers, .. } => headers,
            ReplyKind::Error(_) => return self,
        };
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
        self
    }

    /// Waits this long (in the runtime's time, so paused-time tests do not wait) before answering.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// For streams: waits this long between chunks.
    pub fn gap(mut self, d: Duration) -> Self {
        if let ReplyKind::Stream { gap, .. } = &mut self.kind {
            *gap = d;
        }
        self
    }
}

type Responder = Arc<dyn Fn(&Request) -> MockReply + Send + Sync>;

enum Script {
    /// Replies in order; the last one repeats.
    Sequence(VecDeque<MockReply>),
    /// A reply computed from the request.
    Respond(Responder),
}

/// A request the mock received. The secret is kept (for assertions on which
/// key was used) and, like everywhere, prints redacted.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The key's secret.
    pub secret: Secret,
    /// The full URL.
    pub url: String,
    /// The body as sent (with streaming fields for streams).
    pub body: serde_json::Value,
    /// Whether it was a streaming request.
    pub stream: bool,
    /// The method (`POST` but for requests passed through).
    pub method: http::Method,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, Script>,
    fallback: Option<Responder>,
    log: Vec<Recorded>,
}

/// A [`Transport`] that answers from scripts, per key secret, and records
/// every request. Unscripted keys get the fallback, or a connection error.
#[derive(Clone, Default)]
pub struct MockTransport {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockTransport")
            .field("requests", &self.requests().len())
            .finish_non_exhaustive()
    }
}

impl MockTransport {
    /// A mock with no scripts.
    pub fn new() -> Self {
        MockTransport::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replies to requests with `secret` in order; the last reply repeats.
    pub fn script(&self, secret: &str, replies: impl IntoIterator<Item = MockReply>) -> &Self {
        self.lock().scripts.insert(
            secret.to_owned(),
            Script::Sequence(replies.into_iter().collect()),
        );
        self
    }

    /// Replies to requests with `secret` by calling `f`.
    pub fn respond(
        &self,
        secret: &str,
        f: impl Fn(&Request) -> MockReply + Send + Sync + 'static,
    ) -> &Self {
        self.lock()
            .scripts
            .insert(secret.to_owned(), Script::Respond(Arc::new(f)));
        self
    }

    /// Replies to requests with unscripted keys by calling `f`.
    pub fn fallback(&self, f: impl Fn(&Request) -> MockReply + Send + Sync + 'static) -> &Self {
        self.lock().fallback = Some(Arc::new(f));
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// How many requests used `secret`.
    pub fn count(&self, secret: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.secret.expose() == secret)
            .count()
    }

    fn next_reply(&self, request: &Request, body: serde_json::Value, stream: bool) -> MockReply {
        let mut state = self.lock();
        state.log.push(Recorded {
            secret: request.secret.clone(),
            url: request.url(),
            body,
            stream,
            method: request.method.clone(),
        });
        let reply = match state.scripts.get_mut(request.secret.expose()) {
            Some(Script::Sequence(replies)) => {
                if replies.len() > 1 {
                    replies.pop_front()
                } else {
                    replies.front().cloned()
                }
            }
            Some(Script::Respond(f)) => Some(f(request)),
            None => state.fallback.as_ref().map(|f| f(request)),
        };
        reply.unwrap_or_else(MockReply::connect_error)
    }
}

async fn wait(reply: &MockReply, request: &Request) -> Result<(), TransportError> {
    if reply.latency > request.timeout {
        tokio::time::sleep(request.timeout).await;
        return Err(TransportError::new(
            ErrorKind::Timeout,
            "upstream timed out",
        ));
    }
    tokio::time::sleep(reply.latency).await;
    Ok(())
}

fn error(kind: ErrorKind) -> TransportError {
    let message = match kind {
        ErrorKind::Timeout => "upstream timed out",
        ErrorKind::Connect => "could not connect to the upstream",
        _ => "mock transport error",
    };
    TransportError::new(kind, message)
}

#[async_trait::async_trait]
impl Transport for MockTransport {
    async fn send(&self, request: Request) -> Result<Answer, TransportError> {
        let reply = self.next_reply(&request, request.json(), false);
        wait(&reply, &request).await?;
        match reply.kind {
            ReplyKind::Answer(a) => Ok(a),
            ReplyKind::Error(kind) => Err(error(kind)),
            ReplyKind::Stream { .. } => Err(TransportError::new(
                ErrorKind::Request,
                "mock: a stream reply to a non-streaming request",
            )),
        }
    }

    async fn send_raw(&self, raw: RawRequest) -> Result<RawAnswer, TransportError> {
        // The scripts see it as a request: its path, and its body when JSON.
        let body = serde_json::from_slice(&raw.body).unwrap_or(serde_json::Value::Null);
        let object = JsonBody::parse(raw.body.clone())
            .or_else(|_| JsonBody::parse(&b"{}"[..]))
            .map_err(|_| error(ErrorKind::Request))?;
        let mut request = Request::new(raw.base_url.clone(), raw.path.clone(), raw.secret, object);
        request.method = raw.method;
        request.timeout = raw.timeout;
        let reply = self.next_reply(&request, body, false);
        wait(&reply, &request).await?;
        let (status, headers, body) = raw_body(reply.kind)?;
        Ok(RawAnswer {
            status,
            headers,
            body: Box::pin(futures_util::stream::once(async move { Ok(body) })),
        })
    }

    async fn send_stream(&self, request: Request) -> Result<StreamStart, TransportError> {
        let reply = self.next_reply(
            &request,
            serde_json::from_slice(&request.streaming_body()).unwrap_or_default(),
            true,
        );
        wait(&reply, &request).await?;
        match reply.kind {
            ReplyKind::Answer(a) => Ok(StreamStart::Answered(a)),
            ReplyKind::Error(kind) => Err(error(kind)),
            ReplyKind::Stream {
                headers,
                chunks,
                done,
                gap,
            } => {
                let mut all = chunks;
                if done {
                    all.push("[DONE]".to_owned());
                }
                let raw = futures_util::stream::iter(all).then(move |c| async move {
                    tokio::time::sleep(gap).await;
                    Ok::<_, TransportError>(c)
                });
                let events = chat_stream(Box::pin(raw), request.timeout, DEFAULT_MAX_BODY);
                Ok(StreamStart::Events {
                    status: 200,
                    headers,
                    events,
                })
            }
        }
    }
}

/// A passed-through answer's body: the reply's, in one chunk (a stream's
/// events as server-sent events).
fn raw_body(kind: ReplyKind) -> Result<(u16, HeaderMap, bytes::Bytes), TransportError> {
    match kind {
        ReplyKind::Answer(a) => Ok((a.status, a.headers, a.body)),
        ReplyKind::Error(kind) => Err(error(kind)),
        ReplyKind::Stream {
            headers,
            chunks,
            done,
            ..
        } => {
            let mut text: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
            if done {
                text.push_str("data: [DONE]\n\n");
            }
            Ok((200, headers, text.into()))
        }
    }
}

/// A Responses API `response` object with `text` as its output, and its
/// usage `(input, cached, output)` once known.
fn response_object(text: &str, status: &str, usage: Option<(u64, u64, u64)>) -> serde_json::Value {
    let usage = usage.map(|(input, cached, output)| {
        serde_json::json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + output,
        })
    });
    serde_json::json!({
        "id": "resp_mock",
        "object": "response",
        "status": status,
        "output": [{"type": "message", "id": "msg_mock", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": usage,
    })
}
