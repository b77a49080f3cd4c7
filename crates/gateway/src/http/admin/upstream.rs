//! `/admin/upstream-keys`: the upstream pool, operated while serving.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keypool_core::{Limits, NewKey};
use serde::{Deserialize, Serialize};

use super::{audit, millis, verb};
use crate::http::error::ApiError;
use crate::http::extract::{Admin, JsonBody};
use crate::state::AppState;
use crate::views::{AdminUpstreamKeyView, List, ProviderView, UpstreamKeyView};

/// An upstream key's rotation grace period when the call gives none.
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// `GET /admin/upstream-keys`: every provider and its keys.
pub(super) async fn list(State(s): State<Arc<AppState>>, _: Admin) -> Json<List<ProviderView>> {
    Json(List::of(ProviderView::all(&s.client.snapshot())))
}

/// The first key of `provider` named `name`, as the API shows it.
fn one_key(s: &AppState, provider: &str, name: &str) -> Option<AdminUpstreamKeyView> {
    let key = s.client.read_pool(provider, |pool| {
        pool.find(name).and_then(|id| pool.key_snapshot(id))
    })??;
    Some(AdminUpstreamKeyView::of(&key))
}

/// Every key of `provider` named `name` (two during a rotation's grace).
fn keys_named(s: &AppState, provider: &str, name: &str) -> Vec<AdminUpstreamKeyView> {
    s.client
        .read_pool(provider, |pool| {
            pool.key_ids()
                .filter(|&id| pool.name(id).is_some_and(|n| &**n == name))
                .filter_map(|id| pool.key_snapshot(id))
                .map(|k| AdminUpstreamKeyView::of(&k))
                .collect()
        })
        .unwrap_or_default()
}

fn no_provider(p: &str) -> ApiError {
    ApiError::not_found(format!("no provider {p:?}"))
}

fn no_key(provider: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("no key {name:?} in provider {provider:?}"))
}

/// What audit entries keep of a key: its view without the redacted secret.
fn audited(v: &AdminUpstreamKeyView) -> &UpstreamKeyView {
    &v.key
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddUpstream {
    provider: String,
    name: String,
    secret: String,
    #[serde(default)]
    tier: u8,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    tokens_per_day: Option<u64>,
    #[serde(default)]
    requests_per_day: Option<u32>,
    #[serde(default)]
    requests_per_minute: Option<u32>,
}

fn one() -> u32 {
    1
}

/// `POST /admin/upstream-keys`: a key added to a provider's pool.
pub(super) async fn add(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(a): JsonBody<AddUpstream>,
) -> Result<(StatusCode, Json<Option<AdminUpstreamKeyView>>), ApiError> {
    let _change = s.one_change_at_a_time().await;
    let limits = Limits {
        tokens_per_day: a.tokens_per_day,
        requests_per_day: a.requests_per_day,
        requests_per_minute: a.requests_per_minute,
        ..Limits::default()
    };
    let key = NewKey::new(a.name.clone(), a.secret)
        .group(a.provider.clone())
        .tier(a.tier)
        .weight(a.weight)
        .limits(limits);
    s.client
        .with_pool(&a.provider, |pool, now| pool.add(key, now))
        .ok_or_else(|| no_provider(&a.provider))?
        .map_err(|e| ApiError::bad_request("invalid_key", e.to_string()))?;
    let after = one_key(&s, &a.provider, &a.name);
    let target = format!("{}/{}", a.provider, a.name);
    let audited_after = after.as_ref().map(audited);
    audit(
        &s,
        &admin,
        "upstream_key.add",
        &target,
        None::<&()>,
        audited_after,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(after)))
}

/// What an operator does to one upstream key (the last path segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum KeyAction {
    /// Out of service until enabled.
    Disable,
    /// Back in service.
    Enable,
    /// A new secret; the old one drains (body `{"secret", "grace_seconds"?}`).
    Rotate,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    grace_seconds: Option<i64>,
}

/// `POST /admin/upstream-keys/{provider}/{name}/{action}`.
pub(super) async fn act(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    path: Result<Path<(String, String, KeyAction)>, PathRejection>,
    JsonBody(body): JsonBody<ActionBody>,
) -> Result<Json<Changed>, ApiError> {
    let (provider, name, action) = verb(path, "invalid_command", "disable, enable, rotate")?;
    let _change = s.one_change_at_a_time().await;
    match action {
        KeyAction::Rotate => rotate(&s, &admin, &provider, &name, body).await,
        KeyAction::Disable => change(&s, &admin, &provider, &name, Change::Disable).await,
        KeyAction::Enable => change(&s, &admin, &provider, &name, Change::Enable).await,
    }
}

/// `DELETE /admin/upstream-keys/{provider}/{name}`.
pub(super) async fn remove(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path((provider, name)): Path<(String, String)>,
) -> Result<Json<Changed>, ApiError> {
    let _change = s.one_change_at_a_time().await;
    change(&s, &admin, &provider, &name, Change::Remove).await
}

/// The answer to an action on a key.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum Changed {
    /// The key after the change.
    Key(AdminUpstreamKeyView),
    /// The key left the pool.
    Removed {
        /// `provider/name`.
        removed: String,
    },
    /// Every key of that name after a rotation (the new and the draining old).
    Rotated(List<AdminUpstreamKeyView>),
}

/// A change to one key's state.
#[derive(Clone, Copy, Debug)]
enum Change {
    Disable,
    Enable,
    Remove,
}

impl Change {
    fn label(self) -> &'static str {
        match self {
            Change::Disable => "upstream_key.disable",
            Change::Enable => "upstream_key.enable",
            Change::Remove => "upstream_key.remove",
        }
    }
}

/// Applies `change`, saves the key's state (before answering: a disabled
/// key stays disabled whatever happens next), audits, answers.
async fn change(
    s: &AppState,
    admin: &Admin,
    provider: &str,
    name: &str,
    change: Change,
) -> Result<Json<Changed>, ApiError> {
    let before = one_key(s, provider, name).ok_or_else(|| no_key(provider, name))?;
    let done = s
        .client
        .with_pool(provider, |pool, now| {
            let id = pool.find(name)?;
            match change {
                Change::Disable => pool.disable(id, now).ok(),
                Change::Enable => pool.enable(id, now).ok(),
                Change::Remove => pool.remove(id, now).ok(),
            }
        })
        .ok_or_else(|| no_provider(provider))?;
    done.ok_or_else(|| no_key(provider, name))?;
    s.save_key_state(provider, name)
        .await
        .map_err(|e| ApiError::internal(format!("the key's state could not be saved: {e}")))?;
    let after = match change {
        Change::Remove => None,
        Change::Disable | Change::Enable => one_key(s, provider, name),
    };
    let target = format!("{provider}/{name}");
    let audited_after = after.as_ref().map(audited);
    audit(
        s,
        admin,
        change.label(),
        &target,
        Some(audited(&before)),
        audited_after,
    )
    .await?;
    Ok(Json(match after {
        Some(view) => Changed::Key(view),
        None => Changed::Removed { removed: target },
    }))
}

async fn rotate(
    s: &AppState,
    admin: &Admin,
    provider: &str,
    name: &str,
    body: ActionBody,
) -> Result<Json<Changed>, ApiError> {
    let secret = body
        .secret
        .ok_or_else(|| ApiError::bad_request("invalid_json", "rotate needs a \"secret\""))?;
    let grace = match body.grace_seconds {
        Some(g) => Duration::from_millis(u64::try_from(millis("grace_seconds", g)?).unwrap_or(0)),
        None => DEFAULT_GRACE,
    };
    let before = one_key(s, provider, name).ok_or_else(|| no_key(provider, name))?;
    s.client
        .with_pool(provider, |pool, now| {
            let id = pool.find(name).ok_or(None)?;
            pool.rotate(id, secret, grace, now).map_err(Some)
        })
        .ok_or_else(|| no_provider(provider))?
        .map_err(|e| match e {
            Some(e) => ApiError::bad_request("invalid_key", e.to_string()),
            None => no_key(provider, name),
        })?;
    let after = keys_named(s, provider, name);
    let audited_after: Vec<&UpstreamKeyView> = after.iter().map(audited).collect();
    let target = format!("{provider}/{name}");
    audit(
        s,
        admin,
        "upstream_key.rotate",
        &target,
        Some(audited(&before)),
        Some(&audited_after),
    )
    .await?;
    Ok(Json(Changed::Rotated(List::of(after))))
}
