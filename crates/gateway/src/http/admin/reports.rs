//! Reports: `/v1/usage` (tokens and cost per key, team and model) and
//! `/admin/audit`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;

use crate::http::error::ApiError;
use crate::http::extract::Admin;
use crate::state::AppState;
use crate::store::UsageQuery;
use crate::views::{AuditView, List, UsageView};

/// `?key_id=&team=&model=&from=&to=`; `from` and `to` are Unix seconds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageParams {
    key_id: Option<String>,
    team: Option<String>,
    model: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
}

fn millis(field: &str, secs: Option<i64>) -> Result<Option<i64>, ApiError> {
    secs.map(|v| {
        v.checked_mul(1000).filter(|_| v >= 0).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("{field} must be Unix seconds"))
        })
    })
    .transpose()
}

/// `GET /v1/usage`.
pub(super) async fn usage(
    State(s): State<Arc<AppState>>,
    _: Admin,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<UsageView>, ApiError> {
    let Query(p) = params?;
    let q = UsageQuery {
        key_id: p.key_id,
        team: p.team,
        model: p.model,
        from: millis("from", p.from)?,
        to: millis("to", p.to)?,
    };
    let lines = s.store.usage(&q).await?;
    let saving = |model: &str, cached: u64| s.client.cache_saving(model, cached).micros();
    Ok(Json(UsageView::of(lines, saving)))
}

/// `?limit=` (default 100, at most 10 000).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    limit: Option<usize>,
}

/// `GET /admin/audit`: the newest entries first.
pub(super) async fn audit(
    State(s): State<Arc<AppState>>,
    _: Admin,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<List<AuditView>>, ApiError> {
    let Query(p) = params?;
    let limit = p.limit.unwrap_or(100).min(10_000);
    let entries = s.store.audit(limit).await?;
    Ok(Json(List::of(
        entries.into_iter().map(AuditView::of).collect(),
    )))
}
