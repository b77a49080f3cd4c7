//! The OpenAI routes: `/v1/chat/completions`, `/v1/completions` (legacy)
//! and `/v1/responses` (plain and streamed), `/v1/embeddings`, and
//! `/v1/models` (what is servable, aliases included).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use gateway_client::{Endpoint, ResponseMeta};
use serde::Serialize;
use tracing::Instrument as _;

use super::admission::{Admitted, admit, admit_shared, surface};
use super::error::ApiError;
use super::extract::{Body, Caller, REQUEST_ID, request_id};
use super::meta::meta_headers;
use super::stream;
use crate::state::AppState;
use crate::views::List;

/// The routes that carry the traffic. They set `x-request-id` themselves:
/// a middleware's boxing and extra service calls were about a tenth of a
/// proxied request's allocations.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/completions", post(completions))
        .route("/v1/responses", post(responses))
        .route("/v1/{*rest}", any(super::pass::passthrough))
}

/// `GET /v1/models`.
pub(super) async fn models(State(s): State<Arc<AppState>>) -> Response {
    #[derive(Serialize)]
    struct Model<'a> {
        id: &'a str,
        object: &'static str,
        owned_by: &'static str,
    }
    // What the providers list and some key may serve; when a provider
    // serves any model, the models the gateway knows of.
    let listed = s.client.listed_models();
    let data = listed
        .as_deref()
        .unwrap_or(&s.models)
        .iter()
        .map(|m| Model {
            id: m,
            object: "model",
            owned_by: "gateway",
        })
        .collect();
    axum::Json(List::of(data)).into_response()
}

async fn chat(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    body: Result<Body, ApiError>,
) -> Response {
    let r = serve(s, &headers, caller, body, Endpoint::ChatCompletions).await;
    with_request_id(&headers, r)
}

async fn embeddings(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    body: Result<Body, ApiError>,
) -> Response {
    let r = serve(s, &headers, caller, body, Endpoint::Embeddings).await;
    with_request_id(&headers, r)
}

async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    body: Result<Body, ApiError>,
) -> Response {
    let r = serve(s, &headers, caller, body, Endpoint::Completions).await;
    with_request_id(&headers, r)
}

async fn responses(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
    body: Result<Body, ApiError>,
) -> Response {
    let r = serve(s, &headers, caller, body, Endpoint::Responses).await;
    with_request_id(&headers, r)
}

fn with_request_id(headers: &HeaderMap, mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id(headers));
    response
}

async fn serve(
    s: Arc<AppState>,
    headers: &HeaderMap,
    caller: Result<Caller, ApiError>,
    body: Result<Body, ApiError>,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    let (name, scope) = surface(endpoint);
    let admitted = match admit(headers, caller, body, scope) {
        Ok(a) => match admit_shared(&s.auth, &a, s.now_ms()).await {
            Ok(()) => Ok(a),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let mut admitted = match admitted {
        Ok(a) => a,
        Err(e) => {
            s.count_request(name, "", e.status.as_u16(), started.elapsed(), None);
            return e.into_response();
        }
    };
    // An id the body names (`previous_response_id`, a `file_id`) goes to
    // the key that made it.
    let ids = crate::pins::in_body(admitted.request.body());
    if !ids.is_empty() {
        admitted.ctx.pinned = s
            .pins
            .find(ids.iter().map(String::as_str), s.now_ms())
            .await;
    }
    let model = admitted.request.model().to_owned();
    let span = crate::telemetry::request_span(name, &model, admitted.ctx.team.as_deref());
    let result = if admitted.stream && endpoint != Endpoint::Embeddings {
        stream::serve(&s, admitted, endpoint, span.clone())
            .instrument(span.clone())
            .await
    } else {
        answer(&s, admitted, endpoint)
            .instrument(span.clone())
            .await
    };
    match &result {
        Ok((_, meta)) => crate::telemetry::answered(&span, 200, Some(meta)),
        Err(e) => crate::telemetry::answered(&span, e.status.as_u16(), None),
    }
    match result {
        Ok((r, meta)) => {
            s.count_request(name, &model, 200, started.elapsed(), Some(&meta));
            r
        }
        Err(e) => {
            s.count_request(name, &model, e.status.as_u16(), started.elapsed(), None);
            e.into_response()
        }
    }
}

/// A plain answer: the upstream's bytes, unchanged (nothing re-serialised,
/// field order and numbers exactly as it sent them), once its usage is
/// committed.
async fn answer(
    s: &AppState,
    a: Admitted,
    endpoint: Endpoint,
) -> Result<(Response, ResponseMeta), ApiError> {
    let answer = s.client.send(endpoint, a.request, &a.ctx).await?;
    if endpoint == Endpoint::Responses
        && let Some(id) = crate::pins::made_by(&answer.raw)
    {
        let m = &answer.meta;
        s.pins.learn(id, &m.provider, &m.key, s.now_ms()).await;
    }
    s.record_usage(a.key.as_deref(), &answer.meta).await;
    let mut r = ([(header::CONTENT_TYPE, "application/json")], answer.raw).into_response();
    meta_headers(&mut r, &answer.meta, true);
    Ok((r, answer.meta))
}
