//! The operators' routes: health, readiness, metrics and status.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::ApiError;
use super::extract::Viewer;
use crate::state::AppState;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status_text))
        .route("/status.json", get(status_json))
}

/// Ready while a key can serve; a store working in a degraded way (its
/// shared database out of reach) is said, but does not make the instance
/// unready: it serves from what it holds.
async fn readyz(State(s): State<Arc<AppState>>) -> Result<String, ApiError> {
    if s.client.ready() {
        Ok(match s.store.degraded() {
            None => "ready".into(),
            Some(why) => format!("ready (degraded: {why})"),
        })
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "no_key_ready",
            "no key can serve right now",
        ))
    }
}

async fn metrics(State(s): State<Arc<AppState>>, _: Viewer) -> Response {
    let text = s.metrics.render(&s.client.snapshot(), s.store.statements());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn status_text(State(s): State<Arc<AppState>>, _: Viewer) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        s.client.status_report(),
    )
        .into_response()
}

async fn status_json(State(s): State<Arc<AppState>>, _: Viewer) -> Response {
    axum::Json(s.client.snapshot()).into_response()
}
