//! A built-in simulated upstream: OpenAI-compatible, in-process, on a free
//! loopback port, with demo keys that behave as real keys do on a bad day.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;

mod cache;
mod stateful;
mod surfaces;

/// How a demo key behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Always answers.
    Healthy,
    /// Two requests in three get 429 with `Retry-After: 15`.
    RateLimited,
    /// Always 401: the key was revoked.
    Revoked,
    /// Every other request gets 503.
    Flaky,
    /// Streams its first chunk, then stalls for ever (a stream a client
    /// cuts short). Plain requests are answered normally.
    Stalls,
    /// Writes as long an answer as it may: `max_tokens` (or
    /// `max_completion_tokens`) output tokens, 100 000 without a cap.
    Verbose,
}

/// The demo keys: (name, secret, behaviour). The secrets are not secret: they
/// exist only for the simulated upstream.
pub const DEMO_KEYS: [(&str, &str, Behavior); 4] = [
    (
        "demo-healthy",
        "sk-sim-healthy-0000000000000001",
        Behavior::Healthy,
    ),
    (
        "demo-rate-limited",
        "sk-sim-limited-0000000000000002",
        Behavior::RateLimited,
    ),
    (
        "demo-revoked",
        "sk-sim-revoked-0000000000000003",
        Behavior::Revoked,
    ),
    (
        "demo-flaky",
        "sk-sim-flaky-00000000000000004",
        Behavior::Flaky,
    ),
];

struct Sim {
    keys: HashMap<String, (Behavior, AtomicU64)>,
    /// Models answered with 503 whatever the key.
    down: std::sync::Mutex<std::collections::HashSet<String>>,
    /// What each key made (responses, files): only that key can use it.
    owned: std::sync::Mutex<HashMap<String, stateful::Owned>>,
    /// Each key's prompt cache (off unless turned on).
    prompts: cache::PromptCache,
}

/// A running simulated upstream.
#[derive(Debug)]
pub struct SimUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    sim: Arc<Sim>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl SimUpstream {
    /// Its base URL, e.g. `http://127.0.0.1:41234/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// From now on, every request for `model` gets a 503 (`down`), or is
    /// served again.
    pub fn set_model_down(&self, model: &str, down: bool) {
        let mut set = self
            .sim
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if down {
            set.insert(model.to_owned());
        } else {
            set.remove(model);
        }
    }

    /// Turns the keys' prompt caches on (or off): chat answers then report
    /// as `prompt_tokens_details.cached_tokens` the leading messages the
    /// same key saw within five minutes.
    pub fn set_prompt_cache(&self, on: bool) {
        self.sim.prompts.set(on);
    }
}

impl Drop for SimUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the simulated upstream on a free loopback port, with `keys`.
pub async fn start(keys: &[(&str, &str, Behavior)]) -> std::io::Result<SimUpstream> {
    start_on("127.0.0.1:0", keys).await
}

/// Starts the simulated upstream on `listen`, with `keys`.
pub async fn start_on(
    listen: &str,
    keys: &[(&str, &str, Behavior)],
) -> std::io::Result<SimUpstream> {
    let sim = Arc::new(Sim {
        keys: keys
            .iter()
            .map(|(_, s, b)| ((*s).to_owned(), (*b, AtomicU64::new(0))))
            .collect(),
        down: std::sync::Mutex::default(),
        owned: std::sync::Mutex::default(),
        prompts: cache::PromptCache::default(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/completions", post(surfaces::completions))
        .route("/v1/responses", post(surfaces::responses))
        .route(
            "/v1/responses/{id}",
            get(stateful::get_response).delete(stateful::delete),
        )
        .route("/v1/responses/{id}/cancel", post(stateful::cancel_response))
        .route("/v1/responses/{id}/input_items", get(stateful::input_items))
        .route("/v1/files", post(stateful::upload_file))
        .route(
            "/v1/files/{id}",
            get(stateful::get_file).delete(stateful::delete),
        )
        .route("/v1/files/{id}/content", get(stateful::file_content))
        .route(
            "/v1/models",
            get(|| async { axum::Json(serde_json::json!({"object": "list", "data": []})) }),
        )
        .with_state(sim.clone());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(SimUpstream { addr, sim, task })
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))).into_response()
}

/// The key a request carries.
fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Applies the key's behaviour; `None` means answer normally.
fn misbehave(sim: &Sim, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some((behavior, count)) = token.and_then(|t| sim.keys.get(t)) else {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        ));
    };
    let n = count.fetch_add(1, Ordering::Relaxed);
    match behavior {
        Behavior::Healthy => None,
        Behavior::RateLimited if n % 3 != 0 => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("15"));
            Some(r)
        }
        Behavior::RateLimited => None,
        Behavior::Revoked => Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "This key has been revoked.",
        )),
        Behavior::Flaky if n % 2 == 1 => Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            "The server is overloaded.",
        )),
        Behavior::Flaky | Behavior::Stalls | Behavior::Verbose => None,
    }
}

/// A 503 if `model` is down.
fn model_down(sim: &Sim, model: &str) -> Option<Response> {
    let down = sim
        .down
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(model);
    down.then(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "model_overloaded",
            "The model is overloaded.",
        )
    })
}

/// The behaviour of the key a request carries.
fn behavior(sim: &Sim, headers: &HeaderMap) -> Option<Behavior> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    sim.keys.get(token).map(|(b, _)| *b)
}

/// Output tokens a `Verbose` key writes without a cap.
const VERBOSE_TOKENS: u64 = 100_000;

/// What a chat request asks for, as the simulator answers it.
struct Asked {
    model: String,
    prompt_tokens: u64,
    /// Of the prompt, what the key's cache held.
    cached_tokens: u64,
    completion_tokens: u64,
    stream: bool,
}

fn asked(req: &serde_json::Value, behavior: Option<Behavior>) -> Asked {
    let model = req
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or("unknown")
        .to_owned();
    let prompt: usize = req
        .get("messages")
        .and_then(|m| m.as_array())
        .map_or(0, |ms| {
            ms.iter()
                .filter_map(|m| m.get("content").and_then(|c| c.as_str()))
                .map(|c| c.chars().count())
                .sum()
        });
    let cap = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(serde_json::Value::as_u64));
    let completion_tokens = match behavior {
        Some(Behavior::Verbose) => cap.unwrap_or(VERBOSE_TOKENS),
        _ => cap.map_or(8, |c| c.min(8)),
    };
    Asked {
        model,
        prompt_tokens: (prompt / 4 + 8) as u64,
        cached_tokens: 0,
        completion_tokens,
        stream: req.get("stream").and_then(serde_json::Value::as_bool) == Some(true),
    }
}

/// A chat answer's usage.
fn usage(a: &Asked) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": a.cached_tokens},
    })
}

/// The answer as server-sent events; a `Stalls` key stops after the first.
fn stream(a: &Asked, answer: &str, stalls: bool) -> Response {
    let chunk = |delta: serde_json::Value| {
        serde_json::json!({"object": "chat.completion.chunk", "model": a.model, "choices": [{"index": 0, "delta": delta}]}).to_string()
    };
    let mut events: Vec<String> = answer
        .split_inclusive(' ')
        .map(|w| chunk(serde_json::json!({"content": w})))
        .collect();
    events.push(serde_json::json!({"object": "chat.completion.chunk", "model": a.model, "choices": [], "usage": usage(a)}).to_string());
    events.push("[DONE]".to_owned());
    let sse = |e: &String| bytes::Bytes::from(format!("data: {e}\n\n"));
    let body = if stalls {
        let first: Vec<Result<bytes::Bytes, std::convert::Infallible>> =
            events.iter().take(1).map(|e| Ok(sse(e))).collect();
        Body::from_stream(futures_util::stream::iter(first).chain(futures_util::stream::pending()))
    } else {
        Body::from(events.iter().map(sse).collect::<Vec<_>>().concat())
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

async fn chat(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: bytes::Bytes) -> Response {
    if let Some(r) = misbehave(&sim, &headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            "We could not parse the JSON body.",
        );
    };
    let behavior = behavior(&sim, &headers);
    let mut a = asked(&req, behavior);
    if let (Some(key), Some(messages)) = (
        token(&headers),
        req.get("messages").and_then(|m| m.as_array()),
    ) {
        let cached = sim.prompts.read(key, messages, std::time::Instant::now());
        a.cached_tokens = (cached / 4) as u64;
    }
    if let Some(r) = model_down(&sim, &a.model) {
        return r;
    }
    let answer = format!("Simulated answer from {}.", a.model);
    if a.stream {
        return stream(&a, &answer, behavior == Some(Behavior::Stalls));
    }
    axum::Json(serde_json::json!({
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "model": a.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": usage(&a)
    }))
    .into_response()
}

async fn embeddings(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    if let Some(r) = misbehave(&sim, &headers) {
        return r;
    }
    let model = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str().map(str::to_owned)))
        .unwrap_or_default();
    axum::Json(serde_json::json!({
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3, 0.0]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4}
    }))
    .into_response()
}
