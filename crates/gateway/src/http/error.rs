//! [`ApiError`]: every error the HTTP layer answers, in OpenAI's shape,
//! written in one place.

use std::time::{Duration, SystemTime};

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gateway_client::ClientError;
use serde::Serialize;

use crate::auth::Denied;
use crate::store::StoreError;

/// An error answer: a status and OpenAI's error object
/// (`{"error": {"message", "type", "param", "code"}}`), with a
/// `Retry-After` when the caller should come back later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    kind: String,
    code: String,
    message: String,
    retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<()>,
    code: &'a str,
}

impl ApiError {
    /// An error with this status, OpenAI error type, code and message.
    pub(crate) fn new(
        status: StatusCode,
        kind: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind: kind.into(),
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// What went wrong, for a caller that reports it beside others.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// 400 `invalid_request_error` with `code`.
    pub(crate) fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message,
        )
    }

    /// 500: something of ours failed (never the caller's fault).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal",
            message,
        )
    }

    /// Adds a `Retry-After` (whole seconds, at least 1).
    pub(crate) fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                message: &self.message,
                kind: &self.kind,
                param: None,
                code: &self.code,
            },
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

impl From<&ClientError> for ApiError {
    fn from(e: &ClientError) -> Self {
        let msg = e.to_string();
        match e {
            ClientError::NoKeyAvailable { retry_at, .. } => {
                let wait = retry_at
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or(Duration::from_secs(1));
                Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "no_key_available",
                    msg,
                )
                .retry_after(wait)
            }
            ClientError::PinnedKeyUnavailable { retry_at, .. } => {
                let e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    "pinned_key_unavailable",
                    msg,
                );
                match retry_at.and_then(|t| t.duration_since(SystemTime::now()).ok()) {
                    Some(wait) => e.retry_after(wait),
                    None => e,
                }
            }
            // OpenAI's own answer for a model it does not have.
            ClientError::ModelNotFound { model } => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("The model `{model}` does not exist or you do not have access to it."),
            ),
            ClientError::Budget(_) => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "budget_exceeded",
                msg,
            ),
            ClientError::ContextLengthExceeded { .. } => {
                Self::bad_request("context_length_exceeded", msg)
            }
            ClientError::Upstream { status, error, .. } => {
                let error = error.as_deref();
                Self::new(
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                    error
                        .and_then(|e| e.kind.clone())
                        .unwrap_or_else(|| "invalid_request_error".into()),
                    error.and_then(|e| e.code.clone()).unwrap_or_default(),
                    error.and_then(|e| e.message.clone()).unwrap_or(msg),
                )
            }
            ClientError::AttemptsExhausted { .. } | ClientError::Stream(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_unavailable",
                msg,
            ),
            ClientError::InvalidRequest(_) | ClientError::Canary(_) => {
                Self::bad_request("invalid_request", msg)
            }
            ClientError::Config(_) => Self::internal(msg),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        ApiError::from(&e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(format!("the store failed: {e}"))
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "missing or unknown API key",
            ),
            Denied::Forbidden(m) => {
                Self::new(StatusCode::FORBIDDEN, "permission_error", "forbidden", m)
            }
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_body"
        };
        Self::new(status, "invalid_request_error", code, r.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            _ => "invalid_json",
        };
        Self::new(r.status(), "invalid_request_error", code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request("invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(
            r.status(),
            "invalid_request_error",
            "invalid_path",
            r.body_text(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_shape_is_openais() {
        let r = ApiError::bad_request("invalid_json", "the body is not valid JSON")
            .retry_after(Duration::from_millis(1_500))
            .into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
