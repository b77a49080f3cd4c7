//! `/admin/upstream-keys`: the upstream pool, operated while serving. Keys
//! are addressed by their stable id (`uk_…`), never by name: two keys share
//! a name during a rotation's grace period.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keypool_core::{KeyId, Limits, NewKey};
use serde::{Deserialize, Serialize};

use super::{audit, millis, verb};
use crate::http::error::ApiError;
use crate::http::extract::{Admin, JsonBody};
use crate::keys::{self, KeyEntry};
use crate::state::AppState;
use crate::store::KeyOrigin;
use crate::views::{AdminUpstreamKeyView, List, ProviderView, UpstreamKeyView};

/// An upstream key's rotation grace period when the call gives none.
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// `GET /admin/upstream-keys`: every provider and its keys.
pub(super) async fn list(State(s): State<Arc<AppState>>, _: Admin) -> Json<List<ProviderView>> {
    Json(List::of(ProviderView::all(&s.client.snapshot(), &s.keys)))
}

/// The key `entry` names, as the API shows it, if it is still in its pool.
fn view(s: &AppState, entry: &KeyEntry) -> Option<AdminUpstreamKeyView> {
    let key = s
        .client
        .read_pool(&entry.provider, |pool| pool.key_snapshot(entry.key))??;
    Some(AdminUpstreamKeyView::of(&key, Some(entry.id.clone())))
}

fn no_key(id: &str) -> ApiError {
    ApiError::not_found(format!("no upstream key {id:?}"))
}

/// The live key `id`.
fn find(s: &AppState, id: &str) -> Result<KeyEntry, ApiError> {
    s.keys
        .get(id)
        .filter(|e| !e.removed)
        .ok_or_else(|| no_key(id))
}

/// What audit entries keep of a key: its view without the redacted secret.
fn audited(v: &AdminUpstreamKeyView) -> &UpstreamKeyView {
    &v.key
}

/// What seals secrets for the store: `None` when the store keeps no
/// state; refused without a secrets key, since an unsealed secret must
/// never be stored.
pub(super) fn sealer(s: &AppState) -> Result<Option<&crate::secrets::Sealer>, ApiError> {
    if !s.store.is_durable() {
        return Ok(None);
    }
    s.sealer.as_ref().map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "no_secrets_key",
            "keys added or rotated in at runtime are stored with their secrets sealed: set \
             [storage] secrets_key (64 hex digits) to do this, or put the key in the config file",
        )
    })
}

/// The secret sealed for the store, when the store keeps state.
fn seal(s: &AppState, id: &str, secret: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(sealer) = sealer(s)? else {
        return Ok(None);
    };
    sealer
        .seal(id, secret)
        .map(Some)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn save_failed(e: &crate::store::StoreError) -> ApiError {
    ApiError::internal(format!("the key could not be saved: {e}"))
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
    #[serde(default)]
    tokens_per_minute: Option<u32>,
    #[serde(default)]
    max_in_flight: Option<u32>,
    /// The only models the key is picked for.
    #[serde(default)]
    models: Option<Vec<String>>,
}

fn one() -> u32 {
    1
}

impl AddUpstream {
    fn new_key(&self) -> NewKey {
        let limits = Limits {
            tokens_per_day: self.tokens_per_day,
            requests_per_day: self.requests_per_day,
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            max_in_flight: self.max_in_flight,
        };
        let key = NewKey::new(self.name.clone(), self.secret.clone())
            .group(self.provider.clone())
            .tier(self.tier)
            .weight(self.weight)
            .limits(limits);
        with_models(key, self.models.as_ref())
    }
}

/// Registers a key just put in `provider`'s pool under the new `id`, and
/// saves it.
async fn register(
    s: &AppState,
    (id, provider, key): (&str, &str, KeyId),
    secret: &str,
    sealed_secret: Option<Vec<u8>>,
) -> Result<KeyEntry, ApiError> {
    let snapshot = s
        .client
        .read_pool(provider, |pool| pool.key_snapshot(key))
        .flatten()
        .ok_or_else(|| ApiError::internal("the new key left its pool at once"))?;
    let entry = KeyEntry {
        id: id.to_owned(),
        provider: provider.into(),
        name: snapshot.name.clone(),
        key,
        origin: KeyOrigin::Runtime,
        fingerprint: keys::fingerprint(secret),
        sealed_secret,
        removed: false,
    };
    s.keys.insert(entry.clone());
    s.save_upstream_key(id).await.map_err(|e| save_failed(&e))?;
    Ok(entry)
}

/// `key`, kept to `models` when given.
pub(super) fn with_models(key: NewKey, models: Option<&Vec<String>>) -> NewKey {
    match models {
        Some(m) => key.models(m),
        None => key,
    }
}

/// Refuses a `models` list that is empty or names a blank model.
pub(super) fn check_models(models: Option<&Vec<String>>) -> Result<(), ApiError> {
    match models {
        Some(m) if m.is_empty() || m.iter().any(|m| m.trim().is_empty()) => {
            Err(ApiError::bad_request(
                "invalid_models",
                "models: list the models the key is for (none blank), or leave it out for all",
            ))
        }
        _ => Ok(()),
    }
}

/// `POST /admin/upstream-keys`: a key added to a provider's pool, and
/// stored (its secret sealed) so that it is there after a restart.
pub(super) async fn add(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(a): JsonBody<AddUpstream>,
) -> Result<(StatusCode, Json<AdminUpstreamKeyView>), ApiError> {
    check_models(a.models.as_ref())?;
    let view = add_key(&s, &admin, &a.provider, &a.secret, a.new_key()).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Adds `key` (whose secret is `secret`) to `provider`'s pool under a new
/// id, stores it (its secret sealed) and audits it.
pub(super) async fn add_key(
    s: &AppState,
    admin: &Admin,
    provider: &str,
    secret: &str,
    key: NewKey,
) -> Result<AdminUpstreamKeyView, ApiError> {
    let _change = s.one_change_at_a_time().await;
    let id = keys::new_id().map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let sealed = seal(s, &id, secret)?;
    let added = s
        .client
        .with_pool(provider, |pool, now| pool.add(key, now))
        .ok_or_else(|| ApiError::not_found(format!("no provider {provider:?}")))?
        .map_err(|e| ApiError::bad_request("invalid_key", e.to_string()))?;
    let entry = register(s, (&id, provider, added), secret, sealed).await?;
    let after = view(s, &entry).ok_or_else(|| no_key(&id))?;
    audit(
        s,
        admin,
        "upstream_key.add",
        &id,
        None::<&()>,
        Some(audited(&after)),
    )
    .await?;
    Ok(after)
}

/// What an operator does to one upstream key (the last path segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum KeyAction {
    /// Out of service until enabled.
    Disable,
    /// Back in service.
    Enable,
    /// A new secret; the old one drains (body `{"secret", "grace_seconds"?}`).
    Rotate,
    /// Drains, then leaves the pool (body `{"delay_seconds"}`).
    ScheduleRevoke,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    grace_seconds: Option<i64>,
    #[serde(default)]
    delay_seconds: Option<i64>,
}

/// The answer to an action on a key.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum Changed {
    /// The key after the change.
    Key(AdminUpstreamKeyView),
    /// The key left the pool.
    Removed {
        /// Its id.
        removed: String,
    },
    /// After a rotation: the new key, and the old one draining.
    Rotated(List<AdminUpstreamKeyView>),
}

/// `POST /admin/upstream-keys/{id}/{action}`.
pub(super) async fn act(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    path: Result<Path<(String, KeyAction)>, PathRejection>,
    JsonBody(body): JsonBody<ActionBody>,
) -> Result<Json<Changed>, ApiError> {
    let (id, action) = verb(
        path,
        "invalid_command",
        "disable, enable, rotate, schedule-revoke",
    )?;
    let _change = s.one_change_at_a_time().await;
    let entry = find(&s, &id)?;
    match action {
        KeyAction::Rotate => rotate(&s, &admin, &entry, body).await,
        KeyAction::Disable => change(&s, &admin, &entry, Change::Disable).await,
        KeyAction::Enable => change(&s, &admin, &entry, Change::Enable).await,
        KeyAction::ScheduleRevoke => {
            let delay = body.delay_seconds.ok_or_else(|| {
                ApiError::bad_request("invalid_json", "schedule-revoke needs \"delay_seconds\"")
            })?;
            let at =
                Duration::from_millis(u64::try_from(millis("delay_seconds", delay)?).unwrap_or(0));
            change(&s, &admin, &entry, Change::RevokeIn(at)).await
        }
    }
}

/// `DELETE /admin/upstream-keys/{id}`.
pub(super) async fn remove(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Changed>, ApiError> {
    let _change = s.one_change_at_a_time().await;
    let entry = find(&s, &id)?;
    change(&s, &admin, &entry, Change::Remove).await
}

/// A change to one key's state.
#[derive(Clone, Copy, Debug)]
enum Change {
    Disable,
    Enable,
    Remove,
    RevokeIn(Duration),
}

impl Change {
    fn label(self) -> &'static str {
        match self {
            Change::Disable => "upstream_key.disable",
            Change::Enable => "upstream_key.enable",
            Change::Remove => "upstream_key.remove",
            Change::RevokeIn(_) => "upstream_key.schedule_revoke",
        }
    }
}

/// Applies `change`, saves the key (before answering: a disabled key stays
/// disabled whatever happens next), audits, answers.
async fn change(
    s: &AppState,
    admin: &Admin,
    entry: &KeyEntry,
    change: Change,
) -> Result<Json<Changed>, ApiError> {
    let before = view(s, entry).ok_or_else(|| no_key(&entry.id))?;
    s.client
        .with_pool(&entry.provider, |pool, now| match change {
            Change::Disable => pool.disable(entry.key, now),
            Change::Enable => pool.enable(entry.key, now),
            Change::Remove => pool.remove(entry.key, now),
            Change::RevokeIn(d) => pool
                .schedule_revoke(entry.key, now.saturating_add(d), now)
                .map(drop),
        })
        .ok_or_else(|| no_key(&entry.id))?
        .map_err(|_| no_key(&entry.id))?;
    if matches!(change, Change::Remove) {
        s.keys.mark_removed(&entry.id);
    }
    s.save_upstream_key(&entry.id)
        .await
        .map_err(|e| save_failed(&e))?;
    let after = view(s, entry).filter(|_| !matches!(change, Change::Remove));
    let audited_after = after.as_ref().map(audited);
    audit(
        s,
        admin,
        change.label(),
        &entry.id,
        Some(audited(&before)),
        audited_after,
    )
    .await?;
    Ok(Json(match after {
        Some(view) => Changed::Key(view),
        None => Changed::Removed {
            removed: entry.id.clone(),
        },
    }))
}

async fn rotate(
    s: &AppState,
    admin: &Admin,
    old: &KeyEntry,
    body: ActionBody,
) -> Result<Json<Changed>, ApiError> {
    let secret = body
        .secret
        .ok_or_else(|| ApiError::bad_request("invalid_json", "rotate needs a \"secret\""))?;
    let grace = match body.grace_seconds {
        Some(g) => Duration::from_millis(u64::try_from(millis("grace_seconds", g)?).unwrap_or(0)),
        None => DEFAULT_GRACE,
    };
    let before = view(s, old).ok_or_else(|| no_key(&old.id))?;
    let id = keys::new_id().map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let sealed = seal(s, &id, &secret)?;
    let key = s
        .client
        .with_pool(&old.provider, |pool, now| {
            pool.rotate(old.key, secret.clone(), grace, now)
        })
        .ok_or_else(|| no_key(&old.id))?
        .map_err(|e| ApiError::bad_request("invalid_key", e.to_string()))?;
    let new = register(s, (&id, &old.provider, key), &secret, sealed).await?;
    s.save_upstream_key(&old.id)
        .await
        .map_err(|e| save_failed(&e))?;
    let after: Vec<AdminUpstreamKeyView> = [&new, old].iter().filter_map(|e| view(s, e)).collect();
    let audited_after: Vec<&UpstreamKeyView> = after.iter().map(audited).collect();
    let label = "upstream_key.rotate";
    audit(
        s,
        admin,
        label,
        &old.id,
        Some(audited(&before)),
        Some(&audited_after),
    )
    .await?;
    Ok(Json(Changed::Rotated(List::of(after))))
}
