//! The management API: team (client) keys and usage under `/v1/keys` and
//! `/v1/usage`, as the second seed calls them, and the upstream pool, the
//! canary and the audit log under `/admin`. Every call needs the master key
//! or a client key with the `admin` scope; every change is audited.

// Handlers' errors are the HTTP answers themselves.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use keypool_core::{Limits, NewKey};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::{self, ClientKey, Denied};
use crate::server::{AppState, error_response};
use crate::store::{AuditEntry, StoredClientKey, UsageQuery, Write};

/// A client key's rotation grace period when the call gives none.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A handler's answer: a response either way (axum sends the error as it is).
type Answer = Result<Response, Response>;

fn bad_request(code: &str, message: &str) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        code,
        message,
    )
}

fn not_found(what: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        what,
    )
}

fn internal(message: &str) -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        "internal",
        message,
    )
}

/// The caller, if it may manage; the error is the answer.
fn admin(s: &AppState, headers: &HeaderMap) -> Result<String, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    s.auth
        .admin(authorization, s.now_ms())
        .map_err(|d| match d {
            Denied::Unauthenticated => error_response(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "the management API needs the master key or an admin key",
            ),
            Denied::Forbidden(m) => {
                error_response(StatusCode::FORBIDDEN, "permission_error", "forbidden", &m)
            }
        })
}

/// The caller of a management endpoint: the master key or a client key with
/// the `admin` scope, named as the audit log names it. Taking it is the
/// check (401 or 403 otherwise), and it runs before the body is read.
pub(crate) struct Admin(pub(crate) String);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        s: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        admin(s, &parts.headers).map(Admin)
    }
}

/// Held by each change: one at a time, so that a change and its record
/// (stored state, audit entry) cannot interleave with another's.
async fn one_change_at_a_time(s: &AppState) -> tokio::sync::MutexGuard<'_, ()> {
    s.manage_lock.lock().await
}

/// Parses a JSON body into `T`, naming what is wrong.
fn body<T: DeserializeOwned>(b: Result<Bytes, BytesRejection>) -> Result<T, Response> {
    let b = b.map_err(|r| {
        error_response(
            r.status(),
            "invalid_request_error",
            "invalid_body",
            &r.body_text(),
        )
    })?;
    let b: &[u8] = if b.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &b
    };
    serde_json::from_slice(b).map_err(|e| bad_request("invalid_json", &format!("{e}")))
}

async fn audit(
    s: &AppState,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), Response> {
    let entry = AuditEntry {
        at: s.now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        before: before.map(scrub),
        after: after.map(scrub),
    };
    tracing::info!(actor, action, target, "management action");
    s.store
        .write(Write::Audit(entry))
        .await
        .map_err(|e| internal(&format!("the audit log could not be written: {e}")))
}

/// Drops every `secret` and `key` field, at any depth: the audit log keeps
/// no secret, not even a redacted one.
fn scrub(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.remove("secret");
                o.remove("key");
                o.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Sets a field of a JSON object (a no-op on anything else).
fn set(v: &mut Value, field: &str, value: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(field.to_owned(), value);
    }
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// A client key as the API shows it: never its secret.
fn key_json(k: &ClientKey, now_ms: i64) -> Value {
    let status = match k.revoke_at() {
        Some(t) if t <= now_ms => "revoked",
        Some(_) => "revoking",
        None => "active",
    };
    json!({
        "id": k.id,
        "object": "client_key",
        "name": k.name,
        "team": k.team,
        "scopes": k.scopes,
        "models": k.models,
        "rate_limit": k.rate_limit,
        "created_at": secs(k.created_at),
        "revoke_at": k.revoke_at().map(secs),
        "status": status,
    })
}

// ----- client keys ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
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

/// Creates a key from `template` with a new id and secret; saves it and
/// makes it work at once. Returns the key and its secret.
async fn issue(
    s: &AppState,
    template: StoredClientKey,
) -> Result<(Arc<ClientKey>, String), Response> {
    let secret = auth::new_secret().map_err(|e| internal(&format!("no randomness: {e}")))?;
    let id = auth::new_id().map_err(|e| internal(&format!("no randomness: {e}")))?;
    let record = StoredClientKey {
        id,
        hash: auth::hash_key(&secret),
        created_at: s.now_ms(),
        revoke_at: None,
        rotated_to: None,
        ..template
    };
    let key = ClientKey::from_stored(&record).map_err(|m| bad_request("invalid_key", &m))?;
    save_key(s, record).await?;
    Ok((s.auth.add(key), secret))
}

/// Saves a client key's record; a change takes effect only once it is saved.
async fn save_key(s: &AppState, record: StoredClientKey) -> Result<(), Response> {
    s.store
        .write(Write::ClientKey(record))
        .await
        .map_err(|e| internal(&format!("the key could not be saved: {e}")))
}

/// When a key is refused if asked to be refused from `wanted`: an earlier
/// schedule is kept.
fn revoke_time(k: &ClientKey, wanted: i64) -> i64 {
    k.revoke_at().map_or(wanted, |t| t.min(wanted))
}

pub(crate) async fn create_key(
    State(s): State<Arc<AppState>>,
    Admin(actor): Admin,
    b: Result<Bytes, BytesRejection>,
) -> Answer {
    let s = &*s;
    let _change = one_change_at_a_time(s).await;
    let c: CreateKey = body(b)?;
    if c.name.trim().is_empty() || c.name.len() > 128 {
        return Err(bad_request(
            "invalid_name",
            "name must be 1 to 128 characters",
        ));
    }
    if c.rate_limit == Some(0) {
        return Err(bad_request(
            "invalid_rate_limit",
            "rate_limit must be at least 1",
        ));
    }
    let scopes = c
        .scopes
        .unwrap_or_else(|| vec![auth::CHAT_WRITE.into(), auth::EMBEDDINGS_READ.into()]);
    auth::check_scopes(&scopes).map_err(|m| bad_request("invalid_scope", &m))?;
    let template = StoredClientKey {
        id: String::new(),
        name: c.name,
        team: c.team,
        hash: String::new(),
        scopes,
        models: c.models,
        rate_limit: c.rate_limit,
        created_at: 0,
        revoke_at: None,
        rotated_to: None,
    };
    let (key, secret) = issue(s, template).await?;
    let shown = key_json(&key, s.now_ms());
    let id = key.id.as_deref().unwrap_or_default();
    audit(
        s,
        &actor,
        "client_key.create",
        id,
        None,
        Some(shown.clone()),
    )
    .await?;
    let mut answer = shown;
    set(&mut answer, "key", Value::String(secret));
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    key_id: String,
    #[serde(default)]
    grace_seconds: Option<i64>,
}

fn seconds(field: &str, v: i64) -> Result<i64, Response> {
    if v < 0 {
        return Err(bad_request(
            "invalid_delay",
            &format!("{field} must not be negative"),
        ));
    }
    v.checked_mul(1000)
        .ok_or_else(|| bad_request("invalid_delay", &format!("{field} is too large")))
}

pub(crate) async fn rotate_key(
    State(s): State<Arc<AppState>>,
    Admin(actor): Admin,
    b: Result<Bytes, BytesRejection>,
) -> Answer {
    let s = &*s;
    let _change = one_change_at_a_time(s).await;
    let r: RotateKey = body(b)?;
    let grace_ms = match r.grace_seconds {
        Some(g) => seconds("grace_seconds", g)?,
        None => i64::try_from(DEFAULT_GRACE.as_millis()).unwrap_or(i64::MAX),
    };
    let now = s.now_ms();
    let old = s
        .auth
        .by_id(&r.key_id)
        .ok_or_else(|| not_found(&format!("no client key {:?}", r.key_id)))?;
    if old.is_revoked(now) {
        return Err(bad_request(
            "key_revoked",
            &format!("client key {:?} is revoked", r.key_id),
        ));
    }
    let mut old_record = old
        .record()
        .ok_or_else(|| not_found(&format!("no client key {:?}", r.key_id)))?;
    let before = key_json(&old, now);
    let (new_key, secret) = issue(s, old_record.clone()).await?;
    let new_id = new_key.id.clone().unwrap_or_default();
    let revoke_at = revoke_time(&old, now.saturating_add(grace_ms));
    old_record.revoke_at = Some(revoke_at);
    old_record.rotated_to = Some(new_id.clone());
    save_key(s, old_record).await?;
    old.revoke_from(revoke_at);
    old.set_rotated_to(&new_id);
    let mut answer = key_json(&new_key, now);
    audit(
        s,
        &actor,
        "client_key.rotate",
        &r.key_id,
        Some(before),
        Some(json!({"old": key_json(&old, now), "new": answer.clone()})),
    )
    .await?;
    set(&mut answer, "key", Value::String(secret));
    set(&mut answer, "rotated_from", Value::String(r.key_id));
    set(&mut answer, "old_key_revoke_at", json!(secs(revoke_at)));
    Ok(axum::Json(answer).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleRevoke {
    delay_seconds: i64,
}

pub(crate) async fn schedule_revoke(
    State(s): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(id): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> Answer {
    let _change = one_change_at_a_time(&s).await;
    let r: ScheduleRevoke = body(b)?;
    let delay = seconds("delay_seconds", r.delay_seconds)?;
    revoke(&s, &actor, &id, delay, "client_key.schedule_revoke").await
}

pub(crate) async fn delete_key(
    State(s): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path(id): Path<String>,
) -> Answer {
    let _change = one_change_at_a_time(&s).await;
    revoke(&s, &actor, &id, 0, "client_key.revoke").await
}

async fn revoke(s: &AppState, actor: &str, id: &str, delay_ms: i64, action: &str) -> Answer {
    let now = s.now_ms();
    let key = s
        .auth
        .by_id(id)
        .ok_or_else(|| not_found(&format!("no client key {id:?}")))?;
    let mut record = key
        .record()
        .ok_or_else(|| not_found(&format!("no client key {id:?}")))?;
    let before = key_json(&key, now);
    let at = revoke_time(&key, now.saturating_add(delay_ms));
    record.revoke_at = Some(at);
    save_key(s, record).await?;
    key.revoke_from(at);
    let after = key_json(&key, now);
    audit(s, actor, action, id, Some(before), Some(after.clone())).await?;
    Ok(axum::Json(after).into_response())
}

pub(crate) async fn list_keys(State(s): State<Arc<AppState>>, _: Admin) -> Response {
    let now = s.now_ms();
    let data: Vec<Value> = s
        .auth
        .all()
        .iter()
        .map(|k| {
            let mut v = key_json(k, now);
            if k.id.is_none() {
                set(&mut v, "source", json!("config"));
            }
            v
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

// ----- usage ------------------------------------------------------------

/// `?from=&to=` are Unix seconds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageParams {
    key_id: Option<String>,
    team: Option<String>,
    model: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
}

fn dollars(micros: u64) -> Value {
    // Display only: the sum is exact integer micro-dollars, shown in dollars.
    serde_json::from_str(&budget::Money::from_micros(micros).decimal()).unwrap_or(Value::Null)
}

pub(crate) async fn usage(
    State(s): State<Arc<AppState>>,
    _: Admin,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let Query(p) = params.map_err(|e| bad_request("invalid_query", &e.body_text()))?;
    let ms = |field: &str, v: Option<i64>| -> Result<Option<i64>, Response> {
        v.map(|v| {
            v.checked_mul(1000).filter(|_| v >= 0).ok_or_else(|| {
                bad_request("invalid_query", &format!("{field} must be Unix seconds"))
            })
        })
        .transpose()
    };
    let q = UsageQuery {
        key_id: p.key_id,
        team: p.team,
        model: p.model,
        from: ms("from", p.from)?,
        to: ms("to", p.to)?,
    };
    let lines = s
        .store
        .query(move |st| st.usage(&q))
        .await
        .map_err(|e| internal(&e.to_string()))?;
    let total: u64 = lines.iter().map(|l| l.cost_micros).sum();
    let usage: Vec<Value> = lines
        .iter()
        .map(|l| {
            json!({
                "key_id": l.key_id,
                "key_name": l.key_name,
                "team": l.team,
                "model": l.model,
                "requests": l.requests,
                "prompt_tokens": l.prompt_tokens,
                "completion_tokens": l.completion_tokens,
                "total_tokens": l.prompt_tokens + l.completion_tokens,
                "estimated_cost": dollars(l.cost_micros),
                "estimated_cost_micros": l.cost_micros,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "usage": usage,
        "total_estimated_cost_usd": dollars(total),
        "total_estimated_cost_micros": total,
    }))
    .into_response())
}

// ----- the upstream pool --------------------------------------------------

fn key_view(k: &keypool_core::KeySnapshot) -> Value {
    json!({
        "name": k.name,
        "secret": k.secret,
        "tier": k.tier,
        "weight": k.weight,
        "state": k.state.to_string(),
        "selectable": k.selectable,
        "tokens_today": k.tokens_today,
        "requests_today": k.requests_today,
        "tokens_percent": k.tokens_percent,
        "errors_today": k.errors_today,
    })
}

fn upstream_view(s: &AppState) -> Value {
    let snap = s.client.snapshot();
    let providers: Vec<Value> = snap
        .providers
        .iter()
        .map(|p| {
            json!({
                "provider": p.name,
                "priority": p.priority,
                "keys": p.pool.keys.iter().map(key_view).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"object": "list", "data": providers})
}

fn one_key(s: &AppState, provider: &str, name: &str) -> Option<Value> {
    let key = s.client.read_pool(provider, |pool| {
        pool.find(name).and_then(|id| pool.key_snapshot(id))
    })??;
    Some(key_view(&key))
}

pub(crate) async fn list_upstream(State(s): State<Arc<AppState>>, _: Admin) -> Response {
    axum::Json(upstream_view(&s)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUpstream {
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

fn no_provider(p: &str) -> Response {
    not_found(&format!("no provider {p:?}"))
}

pub(crate) async fn add_upstream(
    State(s): State<Arc<AppState>>,
    Admin(actor): Admin,
    b: Result<Bytes, BytesRejection>,
) -> Answer {
    let _change = one_change_at_a_time(&s).await;
    let a: AddUpstream = body(b)?;
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
        .map_err(|e| bad_request("invalid_key", &e.to_string()))?;
    let after = one_key(&s, &a.provider, &a.name);
    let target = format!("{}/{}", a.provider, a.name);
    audit(&s, &actor, "upstream_key.add", &target, None, after.clone()).await?;
    Ok((StatusCode::CREATED, axum::Json(after)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateUpstream {
    secret: String,
    #[serde(default)]
    grace_seconds: Option<i64>,
}

/// What an operator does to one upstream key.
#[derive(Clone, Copy, Debug)]
enum KeyAction {
    Disable,
    Enable,
    Remove,
}

async fn act_on_upstream(
    s: &AppState,
    actor: &str,
    provider: &str,
    name: &str,
    action: KeyAction,
) -> Answer {
    let _change = one_change_at_a_time(s).await;
    let before = one_key(s, provider, name)
        .ok_or_else(|| not_found(&format!("no key {name:?} in provider {provider:?}")))?;
    let done = s
        .client
        .with_pool(provider, |pool, now| {
            let id = pool.find(name)?;
            match action {
                KeyAction::Disable => pool.disable(id, now).ok(),
                KeyAction::Enable => pool.enable(id, now).ok(),
                KeyAction::Remove => pool.remove(id, now).ok(),
            }
        })
        .ok_or_else(|| no_provider(provider))?;
    if done.is_none() {
        return Err(not_found(&format!(
            "no key {name:?} in provider {provider:?}"
        )));
    }
    let (label, after) = match action {
        KeyAction::Disable => ("upstream_key.disable", one_key(s, provider, name)),
        KeyAction::Enable => ("upstream_key.enable", one_key(s, provider, name)),
        KeyAction::Remove => ("upstream_key.remove", None),
    };
    // Saved before answering: a disabled key stays disabled whatever happens next.
    let state = match action {
        KeyAction::Remove => None,
        KeyAction::Disable | KeyAction::Enable => saved_state(s, provider, name),
    };
    s.store
        .write(Write::UpstreamKey {
            provider: provider.to_owned(),
            name: name.to_owned(),
            state,
        })
        .await
        .map_err(|e| internal(&format!("the key's state could not be saved: {e}")))?;
    let target = format!("{provider}/{name}");
    audit(s, actor, label, &target, Some(before), after.clone()).await?;
    Ok(axum::Json(after.unwrap_or_else(|| json!({"removed": target}))).into_response())
}

pub(crate) async fn remove_upstream(
    State(s): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path((provider, name)): Path<(String, String)>,
) -> Answer {
    act_on_upstream(&s, &actor, &provider, &name, KeyAction::Remove).await
}

/// `POST /admin/upstream-keys/{provider}/{name}/{action}`: `disable`,
/// `enable`, or `rotate` (with `{"secret", "grace_seconds"?}`).
pub(crate) async fn upstream_command(
    State(s): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path((provider, name, action)): Path<(String, String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> Answer {
    match action.as_str() {
        "disable" => act_on_upstream(&s, &actor, &provider, &name, KeyAction::Disable).await,
        "enable" => act_on_upstream(&s, &actor, &provider, &name, KeyAction::Enable).await,
        "rotate" => rotate_upstream(&s, &actor, &provider, &name, b).await,
        other => Err(bad_request(
            "invalid_command",
            &format!("unknown action {other:?} (disable, enable, rotate)"),
        )),
    }
}

/// Every key of `provider` named `name` (two during a rotation's grace).
fn keys_named(s: &AppState, provider: &str, name: &str) -> Vec<Value> {
    s.client
        .read_pool(provider, |pool| {
            pool.key_ids()
                .filter(|&id| pool.name(id).is_some_and(|n| &**n == name))
                .filter_map(|id| pool.key_snapshot(id))
                .map(|k| key_view(&k))
                .collect()
        })
        .unwrap_or_default()
}

async fn rotate_upstream(
    s: &AppState,
    actor: &str,
    provider: &str,
    name: &str,
    b: Result<Bytes, BytesRejection>,
) -> Answer {
    let _change = one_change_at_a_time(s).await;
    let r: RotateUpstream = body(b)?;
    let grace = match r.grace_seconds {
        Some(g) => Duration::from_millis(u64::try_from(seconds("grace_seconds", g)?).unwrap_or(0)),
        None => DEFAULT_GRACE,
    };
    let before = one_key(s, provider, name)
        .ok_or_else(|| not_found(&format!("no key {name:?} in provider {provider:?}")))?;
    s.client
        .with_pool(provider, |pool, now| {
            let id = pool.find(name).ok_or(None)?;
            pool.rotate(id, r.secret, grace, now).map_err(Some)
        })
        .ok_or_else(|| no_provider(provider))?
        .map_err(|e| match e {
            Some(e) => bad_request("invalid_key", &e.to_string()),
            None => not_found(&format!("no key {name:?} in provider {provider:?}")),
        })?;
    let after = keys_named(s, provider, name);
    let target = format!("{provider}/{name}");
    audit(
        s,
        actor,
        "upstream_key.rotate",
        &target,
        Some(before),
        Some(json!(after)),
    )
    .await?;
    Ok(axum::Json(json!({"object": "list", "data": after})).into_response())
}

// ----- the canary -------------------------------------------------------

/// Each rollout: split, phase and latest verdict (the API and the dashboard).
pub(crate) fn rollouts_view(s: &AppState, snap: &gateway_client::Snapshot) -> Vec<Value> {
    let verdicts = s.client.last_verdicts();
    snap.rollouts
        .iter()
        .map(|r| {
            json!({
                "model": r.model,
                "phase": r.phase.to_string(),
                "enabled": r.enabled,
                "candidates": r.candidates.iter().map(|c| json!({
                    "model": c.model,
                    "percent": f64::from(c.share.bp()) / 100.0,
                })).collect::<Vec<_>>(),
                "verdict": verdicts.get(&r.model).map(|(at, v)| json!({
                    "at": at.duration_since(std::time::SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                    "verdict": v,
                })),
            })
        })
        .collect()
}

fn canary_view(s: &AppState) -> Value {
    json!({"object": "list", "data": rollouts_view(s, &s.client.snapshot())})
}

pub(crate) async fn get_canary(State(s): State<Arc<AppState>>, _: Admin) -> Response {
    axum::Json(canary_view(&s)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryCommand {
    /// For `percent`: the candidate's new share, 0 to 100.
    #[serde(default)]
    percent: Option<f64>,
    /// Which candidate (default: the only one).
    #[serde(default)]
    candidate: Option<String>,
    /// For `rollback`: why.
    #[serde(default)]
    reason: Option<String>,
}

/// Saves a rollout's state so that a restart continues it (queued: for
/// changes the monitor makes by itself).
pub(crate) fn save_canary(s: &AppState, model: &str) {
    if let Some(state) = s.client.with_rollout(model, |r, _| canary_state(r)) {
        s.store.write_later(Write::Canary {
            model: model.to_owned(),
            state,
        });
    }
}

/// A rollout's state as stored.
pub(crate) fn canary_state(r: &canary::Rollout) -> Value {
    let shares: serde_json::Map<String, Value> = r
        .candidates()
        .iter()
        .map(|c| (c.model.to_string(), json!(c.share.bp())))
        .collect();
    let phase = match r.phase() {
        canary::Phase::Running => json!({"running": null}),
        canary::Phase::FullRollout { model } => json!({"full_rollout": model.to_string()}),
        canary::Phase::RolledBack { reason } => json!({"rolled_back": reason}),
    };
    json!({"shares_bp": shares, "phase": phase, "enabled": r.is_enabled()})
}

/// Applies a stored state to a rollout.
pub(crate) fn restore_canary(r: &mut canary::Rollout, state: &Value) {
    if let Some(shares) = state.get("shares_bp").and_then(Value::as_object) {
        for (model, bp) in shares {
            if let Some(share) = bp
                .as_u64()
                .and_then(|b| u32::try_from(b).ok())
                .and_then(|b| canary::Share::from_bp(b).ok())
            {
                let _ = r.set_share(model, share);
            }
        }
    }
    if let Some(model) = state.pointer("/phase/full_rollout").and_then(Value::as_str) {
        let _ = r.full_rollout(model);
    } else if let Some(reason) = state.pointer("/phase/rolled_back").and_then(Value::as_str) {
        r.rollback(reason.to_owned());
    }
    if let Some(enabled) = state.get("enabled").and_then(Value::as_bool) {
        r.set_enabled(enabled);
    }
}

pub(crate) async fn canary_command(
    State(s): State<Arc<AppState>>,
    Admin(actor): Admin,
    Path((model, command)): Path<(String, String)>,
    b: Result<Bytes, BytesRejection>,
) -> Answer {
    let _change = one_change_at_a_time(&s).await;
    let c: CanaryCommand = body(b)?;
    let before = s
        .client
        .with_rollout(&model, |r, _| canary_state(r))
        .ok_or_else(|| not_found(&format!("no canary rollout for {model:?}")))?;
    let result: Result<(), String> = s
        .client
        .with_rollout(&model, |r, now| {
            let candidate = match &c.candidate {
                Some(m) => m.clone(),
                None => r
                    .candidates()
                    .first()
                    .map(|c| c.model.to_string())
                    .unwrap_or_default(),
            };
            match command.as_str() {
                "percent" => {
                    let p = c.percent.ok_or("percent is needed")?;
                    if !(0.0..=100.0).contains(&p) || !p.is_finite() {
                        return Err(format!("percent must be between 0 and 100, not {p}"));
                    }
                    r.set_fraction(&candidate, p / 100.0)
                        .map_err(|e| e.to_string())
                }
                "rollout" => r.full_rollout(&candidate).map_err(|e| e.to_string()),
                "rollback" => {
                    r.rollback(c.reason.clone().unwrap_or_else(|| format!("by {actor}")));
                    Ok(())
                }
                "restart" => {
                    r.restart(now);
                    Ok(())
                }
                other => Err(format!(
                    "unknown command {other:?} (percent, rollout, rollback, restart)"
                )),
            }
        })
        .unwrap_or_else(|| Err("no rollout".into()));
    result.map_err(|m| bad_request("invalid_canary_command", &m))?;
    let after = s.client.with_rollout(&model, |r, _| canary_state(r));
    if let Some(state) = after.clone() {
        s.store
            .write(Write::Canary {
                model: model.clone(),
                state,
            })
            .await
            .map_err(|e| internal(&format!("the canary's state could not be saved: {e}")))?;
    }
    audit(
        &s,
        &actor,
        &format!("canary.{command}"),
        &model,
        Some(before),
        after,
    )
    .await?;
    Ok(axum::Json(canary_view(&s)).into_response())
}

// ----- audit ------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    limit: Option<usize>,
}

pub(crate) async fn get_audit(
    State(s): State<Arc<AppState>>,
    _: Admin,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let Query(p) = params.map_err(|e| bad_request("invalid_query", &e.body_text()))?;
    let limit = p.limit.unwrap_or(100).min(10_000);
    let entries = s
        .store
        .query(move |st| st.audit(limit))
        .await
        .map_err(|e| internal(&e.to_string()))?;
    let data: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "at": secs(e.at),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "before": e.before,
                "after": e.after,
            })
        })
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

/// The key's state for the store, by name.
pub(crate) fn saved_state(s: &AppState, provider: &str, name: &str) -> Option<Value> {
    let saved = s.client.read_pool(provider, |pool| {
        pool.find(name).and_then(|id| pool.saved(id))
    })??;
    serde_json::to_value(saved).ok()
}
