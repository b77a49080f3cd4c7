//! `[transport]`: how the gateway talks to upstreams. Certificate
//! verification cannot be switched off.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use transport::{HttpConfig, Transport, TransportError};

/// `[transport]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// Seconds allowed to connect. Default 10.
    #[serde(default)]
    pub connect_timeout_secs: Option<u64>,
    /// A PEM bundle of extra roots to trust besides Mozilla's (a corporate CA).
    #[serde(default)]
    pub extra_ca_file: Option<PathBuf>,
    /// Whether `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` apply. Default true.
    #[serde(default)]
    pub use_env_proxy: Option<bool>,
    /// The largest upstream answer read, in bytes. Default 16 MiB.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

impl TransportConfig {
    /// The HTTP transport's settings.
    pub fn http(&self) -> HttpConfig {
        let d = HttpConfig::default();
        HttpConfig {
            connect_timeout: self
                .connect_timeout_secs
                .map_or(d.connect_timeout, Duration::from_secs),
            extra_ca_file: self.extra_ca_file.clone(),
            use_env_proxy: self.use_env_proxy.unwrap_or(d.use_env_proxy),
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            ..d
        }
    }
}

/// The transport to the upstreams: hyper's client, one per serving thread
/// (the leanest per request), or reqwest's when `[transport] use_env_proxy`
/// is on and `env` names a proxy (`HTTPS_PROXY`, `HTTP_PROXY` or
/// `ALL_PROXY`, in either case), since only reqwest goes through one. The
/// second value says which, for the start-up log and `gateway check`.
pub fn upstream_transport(
    config: &TransportConfig,
    env: &HashMap<String, String>,
) -> Result<(Arc<dyn Transport>, &'static str), TransportError> {
    let http = config.http();
    let proxy = ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"]
        .iter()
        .any(|name| {
            [name.to_string(), name.to_lowercase()]
                .iter()
                .any(|n| env.get(n).is_some_and(|v| !v.trim().is_empty()))
        });
    Ok(if http.use_env_proxy && proxy {
        (
            Arc::new(transport::ReqwestTransport::new(&http)?),
            "reqwest (through the proxy the environment names)",
        )
    } else {
        (
            Arc::new(crate::local_transport::ThreadLocalHyper::new(http)?),
            "hyper (a client per serving thread)",
        )
    })
}
