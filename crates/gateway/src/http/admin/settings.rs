//! Configuration changed while serving: `/admin/budget/limits` and a
//! rollout's overrides and analysis (`/admin/canary/{model}`). A change is
//! checked by the config file's own build step, stored (so it outlives a
//! restart and reaches every instance sharing the store), applied, then
//! audited, one change at a time.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{audit, verb};
use crate::http::error::ApiError;
use crate::http::extract::{Admin, JsonBody};
use crate::settings::{self, Setting};
use crate::state::AppState;
use crate::store::{SettingKind, SettingRecord};
use crate::views::{BudgetLimitView, List, RolloutSettingsView};

fn limits(s: &AppState) -> List<BudgetLimitView> {
    let all = s.client.with_ledger(|l, _| {
        l.limits()
            .map(|(limit, spent, reserved)| BudgetLimitView::of(limit, spent, reserved))
            .collect()
    });
    List::of(all.unwrap_or_default())
}

/// `GET /admin/budget/limits`: every limit in force, with this period's spend.
pub(super) async fn list_limits(
    State(s): State<Arc<AppState>>,
    _: Admin,
) -> Json<List<BudgetLimitView>> {
    Json(limits(&s))
}

fn refused(e: &crate::config::ConfigError) -> ApiError {
    ApiError::bad_request("invalid_setting", e.to_string())
}

/// Checks, stores, applies and audits one change; `view` shows what it
/// changes, before and after.
async fn change<V: serde::Serialize>(
    s: &AppState,
    admin: &Admin,
    record: SettingRecord,
    view: impl Fn(&AppState) -> V,
) -> Result<(), ApiError> {
    let _change = s.one_change_at_a_time().await;
    let setting: Setting = settings::parse(s, &record).map_err(|e| match e.context.as_str() {
        "budget" => ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "no_budget",
            e.message.clone(),
        ),
        "model" => ApiError::not_found(e.message.clone()),
        _ => refused(&e),
    })?;
    let before = view(s);
    s.store
        .save_setting(record.clone())
        .await
        .map_err(|e| ApiError::internal(format!("the setting could not be saved: {e}")))?;
    settings::apply(s, setting).map_err(ApiError::internal)?;
    let action = format!("setting.{}", record.kind.as_str());
    audit(
        s,
        admin,
        &action,
        &record.name,
        Some(&before),
        Some(&view(s)),
    )
    .await
}

/// The scope a `PUT /admin/budget/limits` body names (as the config file
/// does: `scope`, and `name` but for `global`).
#[derive(Deserialize)]
struct ScopeOf {
    scope: crate::config::LimitScope,
    name: Option<String>,
}

fn scope_of(scope: crate::config::LimitScope, name: Option<&str>) -> Result<String, ApiError> {
    use crate::config::LimitScope as S;
    let named = |kind: &str| {
        name.filter(|n| !n.is_empty())
            .map(|n| format!("{kind}:{n}"))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_setting", format!("a {kind} limit needs a name"))
            })
    };
    match scope {
        S::Global => Ok("global".into()),
        S::Team => named("team"),
        S::Key => named("key"),
        S::Model => named("model"),
    }
}

/// `PUT /admin/budget/limits`: a `[[budget.limits]]` entry as JSON
/// (`{"scope": "team", "name": "eng", "daily_usd": 50}`); it replaces
/// that scope's limits (periods not given are removed).
pub(super) async fn put_limit(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<List<BudgetLimitView>>, ApiError> {
    let ScopeOf { scope, name } = ScopeOf::deserialize(&body)
        .map_err(|e| ApiError::bad_request("invalid_setting", e.to_string()))?;
    let record = SettingRecord {
        kind: SettingKind::BudgetLimit,
        name: scope_of(scope, name.as_deref())?,
        value: Some(body),
        at: s.now_ms(),
    };
    change(&s, &admin, record, limits).await?;
    Ok(Json(limits(&s)))
}

/// `DELETE /admin/budget/limits/{scope}[/{name}]`: removes a scope's limits,
/// the config file's included, until set again.
pub(super) async fn delete_limit(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    path: Result<Path<Vec<(String, String)>>, PathRejection>,
) -> Result<Json<List<BudgetLimitView>>, ApiError> {
    let params = verb(path, "invalid_setting", "global, team, key, model")?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let scope: crate::config::LimitScope = get("scope")
        .and_then(|v| serde_json::from_value(serde_json::Value::String(v)).ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_setting", "the scope is global, team, key or model")
        })?;
    let name = scope_of(scope, get("name").as_deref())?;
    let known = s
        .client
        .with_ledger(|l, _| {
            l.limits()
                .any(|(x, _, _)| settings::scope_name(&x.scope) == name)
        })
        .unwrap_or(false);
    if !known {
        return Err(ApiError::not_found(format!("no budget limit for {name:?}")));
    }
    let record = SettingRecord {
        kind: SettingKind::BudgetLimit,
        name,
        value: None,
        at: s.now_ms(),
    };
    change(&s, &admin, record, limits).await?;
    Ok(Json(limits(&s)))
}

fn rollout_settings(s: &AppState, model: &str) -> Option<RolloutSettingsView> {
    let overrides = s.client.with_rollout(model, |r, _| r.overrides())?;
    let analysis = s.client.analysis(model)?;
    Some(RolloutSettingsView::of(model, overrides, &analysis))
}

/// `GET /admin/canary/{model}`: a rollout's overrides and analysis.
pub(super) async fn rollout(
    State(s): State<Arc<AppState>>,
    _: Admin,
    Path(model): Path<String>,
) -> Result<Json<RolloutSettingsView>, ApiError> {
    rollout_settings(&s, &model)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no canary rollout for {model:?}")))
}

/// What of a rollout `PUT /admin/canary/{model}/{setting}` replaces.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RolloutSetting {
    /// `allow`, `deny` and `rules`, as in `[[canary]]`.
    Overrides,
    /// As `[canary] analysis`.
    Analysis,
}

/// `PUT /admin/canary/{model}/overrides` or `/analysis`.
pub(super) async fn put_rollout(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    path: Result<Path<(String, RolloutSetting)>, PathRejection>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<RolloutSettingsView>, ApiError> {
    let (model, which) = verb(path, "invalid_setting", "overrides, analysis")?;
    let kind = match which {
        RolloutSetting::Overrides => SettingKind::CanaryOverrides,
        RolloutSetting::Analysis => SettingKind::CanaryAnalysis,
    };
    let record = SettingRecord {
        kind,
        name: model.clone(),
        value: Some(body),
        at: s.now_ms(),
    };
    let view = |s: &AppState| rollout_settings(s, &model);
    change(&s, &admin, record, view).await?;
    rollout_settings(&s, &model)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no canary rollout for {model:?}")))
}
