//! The management API: team (client) keys and usage under `/v1/keys` and
//! `/v1/usage`, as the second seed calls them, and the upstream pool, the
//! canary, budget limits and the audit log under `/admin`. Every call needs the master key
//! or a client key with the `admin` scope ([`Admin`]); every change is
//! saved, then audited, then answered, one change at a time.

mod canary;
mod client_keys;
mod import;
mod reports;
mod settings;
mod upstream;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::routing::{delete, get, post};
use serde::Serialize;

use super::error::ApiError;
use super::extract::Admin;
use crate::state::AppState;
use crate::store::AuditEntry;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/keys", post(client_keys::create).get(client_keys::list))
        .route("/v1/keys/rotate", post(client_keys::rotate))
        .route(
            "/v1/keys/{key_id}/schedule-revoke",
            post(client_keys::schedule_revoke),
        )
        .route("/v1/keys/{key_id}", delete(client_keys::revoke_now))
        .route("/v1/usage", get(reports::usage))
        .route(
            "/admin/upstream-keys",
            get(upstream::list).post(upstream::add),
        )
        .route("/admin/upstream-keys/import", post(import::import))
        .route("/admin/upstream-keys/{id}", delete(upstream::remove))
        .route("/admin/upstream-keys/{id}/{action}", post(upstream::act))
        .route("/admin/canary", get(canary::list))
        .route("/admin/canary/{model}", get(settings::rollout))
        .route(
            "/admin/canary/{model}/{command}",
            post(canary::command).put(settings::put_rollout),
        )
        .route(
            "/admin/budget/limits",
            get(settings::list_limits).put(settings::put_limit),
        )
        .route(
            "/admin/budget/limits/{scope}",
            delete(settings::delete_limit),
        )
        .route(
            "/admin/budget/limits/{scope}/{name}",
            delete(settings::delete_limit),
        )
        .route("/admin/audit", get(reports::audit))
}

/// Records a management action in the audit log (and the log). `before`
/// and `after` are views, which hold no secret.
async fn audit(
    s: &AppState,
    Admin(actor): &Admin,
    action: &str,
    target: &str,
    before: Option<&impl Serialize>,
    after: Option<&impl Serialize>,
) -> Result<(), ApiError> {
    fn json(v: Option<&impl Serialize>) -> Option<serde_json::Value> {
        v.and_then(|v| serde_json::to_value(v).ok())
    }
    let entry = AuditEntry {
        at: s.now_ms(),
        actor: actor.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        before: json(before),
        after: json(after),
    };
    tracing::info!(actor, action, target, "management action");
    s.store
        .append_audit(entry)
        .await
        .map_err(|e| ApiError::internal(format!("the audit log could not be written: {e}")))
}

/// A path whose last segment is a verb: an unknown verb is a 400 naming the
/// ones there are.
fn verb<T>(path: Result<Path<T>, PathRejection>, code: &str, known: &str) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(code, format!("{} (known: {known})", e.body_text())))
}

/// Milliseconds of `seconds` given by a caller, refused if negative or too large.
fn millis(field: &str, seconds: i64) -> Result<i64, ApiError> {
    if seconds < 0 {
        return Err(ApiError::bad_request(
            "invalid_delay",
            format!("{field} must not be negative"),
        ));
    }
    seconds
        .checked_mul(1000)
        .ok_or_else(|| ApiError::bad_request("invalid_delay", format!("{field} is too large")))
}
