//! `GET /dashboard` (also `/console`): the operator console, one HTML page
//! served from the binary with no build step. It refreshes its overview from
//! `GET /dashboard.json` (for any viewer) and, signed in with the master key
//! or an admin key, works through the same management API as any other
//! client: upstream keys, team keys, the canary, budget limits, usage and
//! the audit log. No view it reads shows a secret, not even a redacted one,
//! and the page writes none into itself except a new team key's secret,
//! shown once until the operator dismisses it. The key it signs in with is
//! kept for the browser tab's session only, never in the page.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::extract::{Viewer, authorization};
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
        .route("/console", get(page))
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

/// What the page shows, at one moment; `can_manage` says whether the
/// viewer may use the management API (the page offers its actions then).
fn view(s: &AppState, can_manage: bool) -> DashboardView {
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
        can_manage,
    }
}

async fn data(State(s): State<Arc<AppState>>, _: Viewer, headers: HeaderMap) -> Response {
    let can_manage = s.auth.admin(authorization(&headers), s.now_ms()).is_ok();
    let body = axum::Json(view(&s, can_manage));
    ([(header::CACHE_CONTROL, "no-cache")], body).into_response()
}
