//! `GET /dashboard`: one HTML page, served from the binary, that refreshes
//! itself from `GET /dashboard.json`. Neither shows a secret, not even a
//! redacted one: keys appear by name only. The page holds no data; the data
//! needs a viewer where the views are not public (the page asks for a key
//! and keeps it for the browser tab's session only).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::extract::Viewer;
use crate::activity::BUCKET_SECS;
use crate::state::AppState;
use crate::views::{
    BucketView, DashboardKeyView, DashboardView, EventView, LimitView, RolloutView,
};

/// The page: no build step, no external resources.
const PAGE: &str = include_str!("dashboard.html");

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard.json", get(data))
}

async fn page() -> Response {
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
fn view(s: &AppState) -> DashboardView {
    let snap = s.client.snapshot();
    let activity = s.activity();
    DashboardView {
        now: s.now_ms().div_euclid(1000),
        bucket_secs: BUCKET_SECS,
        keys: DashboardKeyView::all(&snap, &s.keys),
        canary: RolloutView::all(&snap, &s.client.last_verdicts()),
        budget: LimitView::all(&snap),
        series: activity
            .buckets()
            .map(|(t, ok, errors)| BucketView { t, ok, errors })
            .collect(),
        events: activity
            .events()
            .map(|(t, text)| EventView {
                t,
                text: text.to_owned(),
            })
            .collect(),
        requests: snap.stats.total.requests,
        errors: snap.stats.total.failures,
    }
}

async fn data(State(s): State<Arc<AppState>>, _: Viewer) -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(view(&s))).into_response()
}
