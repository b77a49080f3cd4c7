//! `GET /dashboard`: one HTML page, served from the binary, that refreshes
//! itself from `GET /dashboard.json`. Neither shows a secret, not even a
//! redacted one: keys appear by name only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::server::{AppState, BUCKET_SECS};

/// The page: no build step, no external resources.
const PAGE: &str = include_str!("dashboard.html");

pub(crate) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// What the page shows, at one moment.
pub(crate) fn view(s: &AppState) -> Value {
    let snap = s.client.snapshot();
    let keys: Vec<Value> = snap
        .providers
        .iter()
        .flat_map(|p| {
            p.pool.keys.iter().map(move |k| {
                json!({
                    "provider": p.name,
                    "name": k.name,
                    "tier": k.tier,
                    "state": k.state.to_string(),
                    "selectable": k.selectable,
                    "tokens_today": k.tokens_today,
                    "requests_today": k.requests_today,
                    "tokens_percent": k.tokens_percent,
                    "tokens_per_day": k.limits.tokens_per_day,
                    "errors_today": k.errors_today,
                })
            })
        })
        .collect();
    let canary = crate::manage::rollouts_view(s, &snap);
    let budget: Vec<Value> = snap
        .budget
        .iter()
        .map(|b| {
            json!({
                "scope": b.scope.to_string(),
                "period": b.period.to_string(),
                "limit_micros": b.limit.micros(),
                "spent_micros": b.spent.micros(),
                "reserved_micros": b.reserved.micros(),
            })
        })
        .collect();
    let recent = s.recent();
    let series: Vec<Value> = recent
        .buckets
        .iter()
        .map(|(t, ok, err)| json!({"t": t, "ok": ok, "errors": err}))
        .collect();
    let events: Vec<Value> = recent
        .events
        .iter()
        .rev()
        .map(|(t, text)| json!({"t": t, "text": text}))
        .collect();
    json!({
        "now": s.now_ms().div_euclid(1000),
        "bucket_secs": BUCKET_SECS,
        "keys": keys,
        "canary": canary,
        "budget": budget,
        "series": series,
        "events": events,
        "requests": snap.stats.total.requests,
        "errors": snap.stats.total.failures,
    })
}

pub(crate) async fn data(State(s): State<Arc<AppState>>) -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(view(&s))).into_response()
}
