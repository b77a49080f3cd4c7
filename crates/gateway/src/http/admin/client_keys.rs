//! `/v1/keys`: team (client) keys created, listed, rotated and revoked.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{audit, millis};
use crate::auth::{self, ClientKey};
use crate::http::error::ApiError;
use crate::http::extract::{Admin, JsonBody};
use crate::state::AppState;
use crate::store::StoredClientKey;
use crate::views::{ClientKeyView, IssuedKeyView, List, RotationView, SecretOnce};

/// A client key's rotation grace period when the call gives none.
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKey {
    name: String,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    rate_limit: Option<u32>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    models: Vec<String>,
}

impl CreateKey {
    /// The key to store, without id, hash or dates yet.
    fn template(self) -> Result<StoredClientKey, ApiError> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(ApiError::bad_request(
                "invalid_name",
                "name must be 1 to 128 characters",
            ));
        }
        if self.rate_limit == Some(0) {
            return Err(ApiError::bad_request(
                "invalid_rate_limit",
                "rate_limit must be at least 1",
            ));
        }
        let scopes = self
            .scopes
            .unwrap_or_else(|| vec![auth::CHAT_WRITE.into(), auth::EMBEDDINGS_READ.into()]);
        auth::check_scopes(&scopes).map_err(|m| ApiError::bad_request("invalid_scope", m))?;
        Ok(StoredClientKey {
            id: String::new(),
            name: self.name,
            team: self.team,
            hash: String::new(),
            scopes,
            models: self.models,
            rate_limit: self.rate_limit,
            created_at: 0,
            revoke_at: None,
            rotated_to: None,
        })
    }
}

fn no_randomness(e: getrandom::Error) -> ApiError {
    ApiError::internal(format!("no randomness: {e}"))
}

/// Creates a key from `template` with a new id and secret; saves it and
/// makes it work at once. Returns the key and its secret.
async fn issue(
    s: &AppState,
    template: StoredClientKey,
) -> Result<(Arc<ClientKey>, SecretOnce), ApiError> {
    let secret = auth::new_secret().map_err(no_randomness)?;
    let record = StoredClientKey {
        id: auth::new_id().map_err(no_randomness)?,
        hash: auth::hash_key(&secret),
        created_at: s.now_ms(),
        revoke_at: None,
        rotated_to: None,
        ..template
    };
    let key =
        ClientKey::from_stored(&record).map_err(|m| ApiError::bad_request("invalid_key", m))?;
    save(s, record).await?;
    Ok((s.auth.add(key), SecretOnce(secret)))
}

/// Saves a client key's record; a change takes effect only once it is saved.
async fn save(s: &AppState, record: StoredClientKey) -> Result<(), ApiError> {
    s.store
        .save_client_key(record)
        .await
        .map_err(|e| ApiError::internal(format!("the key could not be saved: {e}")))
}

fn no_key(id: &str) -> ApiError {
    ApiError::not_found(format!("no client key {id:?}"))
}

/// The API key `id` and its stored record.
fn find(s: &AppState, id: &str) -> Result<(Arc<ClientKey>, StoredClientKey), ApiError> {
    let key = s.auth.by_id(id).ok_or_else(|| no_key(id))?;
    let record = key.record().ok_or_else(|| no_key(id))?;
    Ok((key, record))
}

/// When a key is refused if asked to be refused from `wanted`: an earlier
/// schedule is kept.
fn revoke_time(k: &ClientKey, wanted: i64) -> i64 {
    k.revoke_at().map_or(wanted, |t| t.min(wanted))
}

/// `POST /v1/keys`.
pub(super) async fn create(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(c): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<IssuedKeyView>), ApiError> {
    let _change = s.one_change_at_a_time().await;
    let (key, secret) = issue(&s, c.template()?).await?;
    let view = ClientKeyView::of(&key, s.now_ms());
    let id = key.id.as_deref().unwrap_or_default();
    audit(
        &s,
        &admin,
        "client_key.create",
        id,
        None::<&()>,
        Some(&view),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedKeyView {
            key: view,
            secret,
            rotated_from: None,
            old_key_revoke_at: None,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateKey {
    key_id: String,
    #[serde(default)]
    grace_seconds: Option<i64>,
}

/// `POST /v1/keys/rotate`: a new key with the same name, team, scopes and
/// limits; the old one works until the grace period ends.
pub(super) async fn rotate(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(r): JsonBody<RotateKey>,
) -> Result<Json<IssuedKeyView>, ApiError> {
    let _change = s.one_change_at_a_time().await;
    let grace_ms = match r.grace_seconds {
        Some(g) => millis("grace_seconds", g)?,
        None => i64::try_from(DEFAULT_GRACE.as_millis()).unwrap_or(i64::MAX),
    };
    let now = s.now_ms();
    let (old, mut old_record) = find(&s, &r.key_id)?;
    if old.is_revoked(now) {
        return Err(ApiError::bad_request(
            "key_revoked",
            format!("client key {:?} is revoked", r.key_id),
        ));
    }
    let before = ClientKeyView::of(&old, now);
    let (new_key, secret) = issue(&s, old_record.clone()).await?;
    let new_id = new_key.id.clone().unwrap_or_default();
    let revoke_at = revoke_time(&old, now.saturating_add(grace_ms));
    old_record.revoke_at = Some(revoke_at);
    old_record.rotated_to = Some(new_id.clone());
    save(&s, old_record).await?;
    old.revoke_from(revoke_at);
    old.set_rotated_to(&new_id);
    let after = RotationView {
        old: ClientKeyView::of(&old, now),
        new: ClientKeyView::of(&new_key, now),
    };
    audit(
        &s,
        &admin,
        "client_key.rotate",
        &r.key_id,
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(Json(IssuedKeyView {
        key: after.new,
        secret,
        rotated_from: Some(r.key_id),
        old_key_revoke_at: Some(revoke_at.div_euclid(1000)),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleRevoke {
    delay_seconds: i64,
}

/// `POST /v1/keys/{id}/schedule-revoke`.
pub(super) async fn schedule_revoke(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
    JsonBody(r): JsonBody<ScheduleRevoke>,
) -> Result<Json<ClientKeyView>, ApiError> {
    let _change = s.one_change_at_a_time().await;
    let delay = millis("delay_seconds", r.delay_seconds)?;
    revoke(&s, &admin, &id, delay, "client_key.schedule_revoke").await
}

/// `DELETE /v1/keys/{id}`: revoked at once.
pub(super) async fn revoke_now(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<ClientKeyView>, ApiError> {
    let _change = s.one_change_at_a_time().await;
    revoke(&s, &admin, &id, 0, "client_key.revoke").await
}

async fn revoke(
    s: &AppState,
    admin: &Admin,
    id: &str,
    delay_ms: i64,
    action: &str,
) -> Result<Json<ClientKeyView>, ApiError> {
    let now = s.now_ms();
    let (key, mut record) = find(s, id)?;
    let before = ClientKeyView::of(&key, now);
    let at = revoke_time(&key, now.saturating_add(delay_ms));
    record.revoke_at = Some(at);
    save(s, record).await?;
    key.revoke_from(at);
    let after = ClientKeyView::of(&key, now);
    audit(s, admin, action, id, Some(&before), Some(&after)).await?;
    Ok(Json(after))
}

/// `GET /v1/keys`: every key, never a secret or a hash.
pub(super) async fn list(State(s): State<Arc<AppState>>, _: Admin) -> Json<List<ClientKeyView>> {
    let now = s.now_ms();
    Json(List::of(
        s.auth
            .all()
            .iter()
            .map(|k| ClientKeyView::of(k, now))
            .collect(),
    ))
}
