//! The `x-gateway-*` headers every answer carries.

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use gateway_client::ResponseMeta;

/// The `x-gateway-*` headers: which key, provider and model answered, in
/// how many attempts, and (for a plain answer) at what cost.
pub(super) fn meta_headers(r: &mut Response, meta: &ResponseMeta, cost: bool) {
    let h = r.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-gateway-key", &meta.key);
    set("x-gateway-provider", &meta.provider);
    set("x-gateway-model", &meta.model_used);
    if cost {
        // Integer arithmetic: money never passes through floating point.
        set("x-gateway-cost-usd", &meta.cost.decimal());
    }
    h.insert(
        HeaderName::from_static("x-gateway-attempts"),
        HeaderValue::from(meta.attempts),
    );
    if let Some(cap) = meta.max_tokens {
        // The budget could not pay for all the request may write: its output
        // was capped here.
        h.insert(
            HeaderName::from_static("x-gateway-max-tokens"),
            HeaderValue::from(cap),
        );
    }
}
