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
}

/// A running simulated upstream.
#[derive(Debug)]
pub struct SimUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SimUpstream {
    /// Its base URL, e.g. `http://127.0.0.1:41234/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
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
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route(
            "/v1/models",
            get(|| async { axum::Json(serde_json::json!({"object": "list", "data": []})) }),
        )
        .with_state(sim);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(SimUpstream { addr, task })
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))).into_response()
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
        Behavior::Flaky => None,
    }
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
    let prompt_tokens = (prompt / 4 + 8) as u64;
    let answer = format!("Simulated answer from {model}.");
    let completion_tokens = 8u64;
    if req.get("stream").and_then(serde_json::Value::as_bool) == Some(true) {
        let mut events: Vec<String> = answer
            .split_inclusive(' ')
            .map(|w| serde_json::json!({"object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {"content": w}}]}).to_string())
            .collect();
        events.push(serde_json::json!({"object": "chat.completion.chunk", "model": model, "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}}).to_string());
        events.push("[DONE]".to_owned());
        let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        return (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from(body),
        )
            .into_response();
    }
    axum::Json(serde_json::json!({
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
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
