//! The HTTP layer: the router and one module per surface (the OpenAI
//! routes, the management API, the operators' routes, the dashboard),
//! with the errors ([`error`]) and extractors ([`extract`]) they share.
//! Only the runtime imports it.

mod admin;
mod admission;
mod dashboard;
mod error;
mod extract;
mod meta;
mod openai;
mod ops;
mod pass;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use self::error::ApiError;
use self::extract::{REQUEST_ID, request_id};
use crate::state::AppState;

/// Every route, with the body limit.
pub(crate) fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    let rest = Router::new()
        .route("/v1/models", get(openai::models))
        .merge(ops::routes())
        .merge(dashboard::routes())
        .merge(admin::routes())
        .fallback(|| async { ApiError::not_found("no such route").into_response() })
        .layer(middleware::from_fn(with_request_id));
    openai::routes()
        .merge(rest)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Gives every answer an `x-request-id` (the caller's, or a new one), on
/// the routes that do not set it themselves.
async fn with_request_id(request: Request, next: Next) -> Response {
    let id = request_id(request.headers());
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}
