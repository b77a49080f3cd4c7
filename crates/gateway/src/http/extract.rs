//! Extractors: who is calling (an admin, a client), what they sent (a JSON
//! body), and the request's id. Taking one is the check: a handler that
//! takes [`Admin`] runs only for an admin.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::{ClientKey, Denied};
use crate::state::AppState;

/// The `Authorization` header's value, if it is text.
pub(super) fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The caller of a management endpoint: the master key or a client key with
/// the `admin` scope, named as the audit log names it. Checked before the
/// body is read (401 or 403 otherwise).
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub(crate) String);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<AppState>) -> Result<Self, ApiError> {
        s.auth
            .admin(authorization(&parts.headers), s.now_ms())
            .map(Admin)
            .map_err(|d| match d {
                Denied::Unauthenticated => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "invalid_api_key",
                    "the management API needs the master key or an admin key",
                ),
                d => d.into(),
            })
    }
}

/// A caller allowed to read the operators' views: anyone where they are
/// public (a loopback address, or `[server] public_status`), else the
/// master key or a client key with `status:read`.
#[derive(Debug, Clone)]
pub(crate) struct Viewer;

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<AppState>) -> Result<Self, ApiError> {
        if s.public_status {
            return Ok(Viewer);
        }
        s.auth
            .viewer(authorization(&parts.headers), s.now_ms())
            .map(|_| Viewer)
            .map_err(|d| match d {
                Denied::Unauthenticated => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "invalid_api_key",
                    "this view needs the master key or a key with the status:read scope",
                ),
                d => d.into(),
            })
    }
}

/// The client key of an API request (`None` when authentication is off).
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Option<Arc<ClientKey>>);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<AppState>) -> Result<Self, ApiError> {
        Ok(Caller(
            s.auth
                .authenticate(authorization(&parts.headers), s.now_ms())?,
        ))
    }
}

/// How much of an oversized body is read (and thrown away) past the limit
/// before the 413 is sent: enough that a client still sending gets the
/// answer instead of a connection reset.
const DRAIN: u64 = 64 * 1024 * 1024;

/// A request body within `[server] body_limit_bytes`. A body whose
/// `Content-Length` passes the limit is refused with 413 only once it has
/// been read (up to [`DRAIN`] past the limit): answering early and closing
/// while the client still sends makes it see the connection reset instead
/// of the answer. A body without a length is cut at the limit (413 too).
#[derive(Debug)]
pub(crate) struct Body(pub(crate) Bytes);

impl FromRequest<Arc<AppState>> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &Arc<AppState>) -> Result<Self, ApiError> {
        let limit = s.body_limit as u64;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let Some(length) = declared.filter(|&n| n > limit) else {
            return Ok(Body(Bytes::from_request(req, s).await?));
        };
        if length <= limit.saturating_add(DRAIN) {
            let mut body = req.into_body().into_data_stream();
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut body).await {}
        }
        Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the body is {length} bytes; the limit is {limit}"),
        ))
    }
}

/// A JSON body parsed into `T`, whatever its content type (`curl -d` sends
/// a form type); an empty body reads as `{}`. Errors name what is wrong.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &Arc<AppState>) -> Result<Self, ApiError> {
        let Body(bytes) = Body::from_request(req, s).await?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
    }
}

pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// The request's id: the caller's `x-request-id` when it is printable and
/// at most 128 bytes long, or a new one.
pub(super) fn request_id(headers: &HeaderMap) -> HeaderValue {
    let given = headers
        .get(REQUEST_ID)
        .filter(|v| v.to_str().is_ok() && v.len() <= 128 && !v.is_empty());
    match given {
        Some(v) => v.clone(),
        None => {
            let n = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            HeaderValue::from_str(&format!("req-{t:x}-{n:x}"))
                .unwrap_or_else(|_| HeaderValue::from_static("req-0"))
        }
    }
}
