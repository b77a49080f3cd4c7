//! Admission: who is calling, what they sent, and whether their key allows
//! it, before anything is sent upstream.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use gateway_client::{ApiRequest, Endpoint, RequestContext};
use wire::JsonBody;

use super::error::ApiError;
use super::extract::{Body, Caller};
use crate::auth::{Auth, CHAT_WRITE, ClientKey, EMBEDDINGS_READ};

/// A request that passed authentication and checks.
pub(super) struct Admitted {
    pub(super) request: ApiRequest,
    pub(super) ctx: RequestContext,
    pub(super) stream: bool,
    pub(super) key: Option<Arc<ClientKey>>,
}

/// The metric label and scope of an endpoint.
pub(super) fn surface(endpoint: Endpoint) -> (&'static str, &'static str) {
    match endpoint {
        Endpoint::ChatCompletions => ("chat", CHAT_WRITE),
        Endpoint::Embeddings => ("embeddings", EMBEDDINGS_READ),
        // They write, as chat does.
        Endpoint::Completions => ("completions", CHAT_WRITE),
        Endpoint::Responses => ("responses", CHAT_WRITE),
    }
}

/// Checks the caller and reads the request. Authentication comes first, so
/// unknown clients cost no body parsing.
pub(super) fn admit(
    headers: &HeaderMap,
    caller: Result<Caller, ApiError>,
    body: Result<Body, ApiError>,
    scope: &str,
) -> Result<Admitted, ApiError> {
    let Caller(key) = caller?;
    let Body(body) = body?;
    let json = JsonBody::parse_watching(body, &crate::pins::ID_FIELDS).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let stream = json.get("stream").and_then(|v| v.as_bool()) == Some(true);
    let user = json
        .get("user")
        .and_then(|v| v.as_str())
        .map(std::borrow::Cow::into_owned);
    let request = ApiRequest::from_body(json)
        .map_err(|e| ApiError::bad_request("missing_model", e.to_string()))?;
    if let Some(k) = &key {
        check_key(k, scope, Some(request.model()))?;
        k.check_rate().map_err(|wait| over_rate(k, wait))?;
    }
    let ctx = context(headers, key.as_deref(), user);
    Ok(Admitted {
        request,
        ctx,
        stream,
        key,
    })
}

/// Checks the caller of a request passed through (which may name no
/// model): the scope, the model if named, the rate.
pub(super) fn admit_caller(
    key: Option<&ClientKey>,
    scope: &str,
    model: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(k) = key {
        check_key(k, scope, model)?;
        k.check_rate().map_err(|wait| over_rate(k, wait))?;
    }
    Ok(())
}

/// Who a request is for: its user (the body's `user`, else `x-user-id`),
/// the client key's name and team, and the `x-` headers canary rules read.
pub(super) fn context(
    headers: &HeaderMap,
    key: Option<&ClientKey>,
    user: Option<String>,
) -> RequestContext {
    RequestContext {
        user: user.or_else(|| {
            headers
                .get("x-user-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        }),
        key_name: key.map(|k| k.name.clone()),
        team: key.and_then(|k| k.team.clone()),
        headers: headers
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("x-") && n.as_str() != "x-request-id")
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        ..RequestContext::default()
    }
}

/// Where instances share their client keys, takes one request from the
/// key's rate across them (a round trip at most, when this instance holds
/// no admission of it).
pub(super) async fn admit_shared(auth: &Auth, a: &Admitted, now_ms: i64) -> Result<(), ApiError> {
    match &a.key {
        Some(k) => auth
            .check_shared_rate(k, now_ms)
            .await
            .map_err(|wait| over_rate(k, wait)),
        None => Ok(()),
    }
}

fn over_rate(k: &ClientKey, wait: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "client_rate_limited",
        format!("key {:?} is over its rate limit", k.name),
    )
    .retry_after(wait)
}

/// What a client key must allow: the scope and the model (if named).
fn check_key(k: &ClientKey, scope: &str, model: Option<&str>) -> Result<(), ApiError> {
    if !k.has_scope(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "missing_scope",
            format!("key {:?} lacks the {scope} scope", k.name),
        ));
    }
    if let Some(model) = model.filter(|m| !k.allows_model(m)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "model_not_allowed",
            format!("key {:?} may not use model {model:?}", k.name),
        ));
    }
    Ok(())
}
