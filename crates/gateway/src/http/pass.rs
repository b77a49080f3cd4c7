//! Everything else under `/v1/`: passed through the pool to an upstream
//! key with the client's method, path, query, headers and body (multipart
//! included), and answered with the upstream's own status, headers and
//! body as they come. A request naming a stateful id goes to the key that
//! made it; an answer that makes one teaches the gateway its key.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gateway_client::{PassAnswer, PassRequest};
use wire::JsonBody;

use super::admission::{admit_caller, context};
use super::error::ApiError;
use super::extract::{Body, Caller, REQUEST_ID, request_id};
use super::meta::meta_headers;
use crate::auth::CHAT_WRITE;
use crate::state::AppState;

/// The metric label of requests passed through.
const SURFACE: &str = "passthrough";

/// `ANY /v1/{*rest}`.
pub(super) async fn passthrough(
    State(s): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    body: Result<Body, ApiError>,
) -> Response {
    let started = Instant::now();
    let id = request_id(&headers);
    let (r, status, model) = match pass(&s, method, &uri, &headers, caller, body).await {
        Ok((r, model)) => {
            let status = r.status().as_u16();
            (r, status, model)
        }
        Err(e) => {
            let status = e.status.as_u16();
            (e.into_response(), status, String::new())
        }
    };
    s.count_request(SURFACE, &model, status, started.elapsed(), None);
    let mut r = r;
    r.headers_mut().insert(REQUEST_ID, id);
    r
}

async fn pass(
    s: &Arc<AppState>,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    caller: Result<Caller, ApiError>,
    body: Result<Body, ApiError>,
) -> Result<(Response, String), ApiError> {
    let Caller(key) = caller?;
    let Body(body) = body?;
    let json = read_json(headers, &body)?;
    let field = |name: &str| {
        let v = json.as_ref()?.get(name)?;
        v.as_str().map(std::borrow::Cow::into_owned)
    };
    let model = field("model");
    admit_caller(key.as_deref(), CHAT_WRITE, model.as_deref())?;
    let path = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .strip_prefix("/v1")
        .unwrap_or("/")
        .to_owned();
    let user = field("user");
    let mut ctx = context(headers, key.as_deref(), user);
    let named = json.as_ref().map(crate::pins::in_body).unwrap_or_default();
    let mut ids: Vec<&str> = crate::pins::in_path(uri.path()).collect();
    ids.extend(named.iter().map(String::as_str));
    if !ids.is_empty() {
        ctx.pinned = s.pins.find(ids, s.now_ms()).await;
    }
    let request = PassRequest {
        method,
        path,
        headers: headers
            .iter()
            .filter(|(n, _)| transport::passes_upstream(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        body,
        model: model.clone(),
    };
    let answer = s.client.pass(request, &ctx).await?;
    let label = model.unwrap_or_else(|| surface(uri.path()));
    Ok((answered(s, key.as_deref(), answer, &label).await, label))
}

/// The body as a JSON object when it says it is JSON (`None` otherwise:
/// multipart, audio, no body, JSON that is not an object); a JSON body
/// that does not parse is the caller's error.
fn read_json(headers: &HeaderMap, body: &Bytes) -> Result<Option<JsonBody>, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    if !is_json || body.is_empty() {
        return Ok(None);
    }
    match JsonBody::parse_watching(body.clone(), &crate::pins::ID_FIELDS) {
        Ok(json) => Ok(Some(json)),
        Err(_) if wire::validate(body).is_ok() => Ok(None),
        Err(e) => Err(ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// What usage lines call a request without a model: its surface (`/files`).
fn surface(path: &str) -> String {
    let first = path
        .trim_start_matches("/v1")
        .split('/')
        .find(|s| !s.is_empty())
        .unwrap_or("");
    format!("/{first}")
}

/// The upstream's answer passed back, after its usage is recorded and the
/// id it made (if any) is pinned to its key.
async fn answered(
    s: &AppState,
    key: Option<&crate::auth::ClientKey>,
    answer: PassAnswer,
    label: &str,
) -> Response {
    let PassAnswer {
        status,
        headers,
        body,
        read,
        mut meta,
    } = answer;
    if (200..300).contains(&status)
        && let Some(id) = read.as_deref().and_then(crate::pins::made_by)
    {
        s.pins
            .learn(id, &meta.provider, &meta.key, s.now_ms())
            .await;
    }
    label.clone_into(&mut meta.model_used);
    // An upstream's refusal is handed back, but not booked: nothing was served.
    if (200..300).contains(&status) {
        s.record_usage(key, &meta).await;
    }
    let mut r = Response::new(axum::body::Body::from_stream(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in &headers {
        if passes_back(name) {
            r.headers_mut().append(name, value.clone());
        }
    }
    meta_headers(&mut r, &meta, true);
    r
}

/// Whether an upstream's answer header goes back to the client: not the
/// connection's own, and nothing about the upstream account behind the key
/// (its organization and project, its rate limits, its cookies), which
/// belongs to the gateway's operator, not to its clients.
fn passes_back(name: &HeaderName) -> bool {
    let name = name.as_str();
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "trailer"
            | "set-cookie"
            | "openai-organization"
            | "openai-project"
            | "anthropic-organization-id"
    ) && !name.starts_with("x-ratelimit-")
        && !name.starts_with("anthropic-ratelimit-")
}
