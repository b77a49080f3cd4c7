//! `[telemetry]`: traces exported over OTLP.

use serde::Deserialize;

use super::ConfigError;

/// `[telemetry]`. Off unless `otlp_endpoint` is set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Where spans go, over OTLP/HTTP with protobuf bodies, e.g.
    /// `http://127.0.0.1:4318/v1/traces`. Default: no traces.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the spans. Default `keypool-gateway`.
    pub service_name: Option<String>,
}

impl TelemetryConfig {
    /// The endpoint, checked to be an `http` or `https` URL.
    pub fn endpoint(&self) -> Result<Option<&str>, ConfigError> {
        let Some(url) = self.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.parse::<http::Uri>().is_err() {
            return Err(ConfigError::new(
                "telemetry.otlp_endpoint",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        Ok(Some(url))
    }

    /// What `gateway check` says of traces: where they go (the endpoint's
    /// scheme, host and port only, since a URL may hold credentials).
    pub(super) fn check(&self) -> Result<Option<String>, ConfigError> {
        let Some(url) = self.endpoint()? else {
            return Ok(None);
        };
        let shown = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| {
                Some(format!(
                    "{}://{}",
                    u.scheme_str()?,
                    u.authority()?.as_str().rsplit('@').next()?
                ))
            })
            .unwrap_or_default();
        Ok(Some(format!(
            "traces: exported over OTLP to {shown} as {:?}",
            self.service_name()
        )))
    }

    /// The service's name in the spans.
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or("keypool-gateway")
    }
}
