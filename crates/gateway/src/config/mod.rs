//! The gateway's configuration file, and the layers built from it.
//!
//! The file is TOML, every field documented in docs/configuration.md,
//! unknown fields rejected, errors naming the field and line. Values are
//! typed where they are read (enums for scopes and modes, dollars parsed
//! exactly by `budget`), so nothing downstream interprets strings. Each
//! section has its own module with its build step; [`build()`] composes
//! them into a [`Client`](gateway_client::Client) and an
//! [`Auth`](crate::auth::Auth), the way linkerd's app composes its
//! subsystems' builds.

mod auth;
mod budget;
mod build;
mod canary;
mod cluster;
mod context;
mod pool;
mod providers;
mod retry;
mod routing;
mod secret;
mod server;
mod storage;
mod telemetry;
mod transport;

use std::path::Path;

use serde::Deserialize;

pub use self::auth::{AuthConfig, AuthMode, ClientKeyConfig};
pub use self::budget::{BudgetConfig, LimitConfig, LimitScope, UnknownModelPolicy};
pub use self::build::{Built, build};
pub use self::canary::{
    AnalysisConfig, CanaryConfig, CandidateConfig, OverridesConfig, RuleConfig, SchemeConfig,
    StepConfig,
};
pub use self::cluster::ClusterConfig;
pub use self::context::ContextConfig;
pub use self::pool::PoolSection;
pub use self::providers::{ErrorRuleConfig, KeyConfig, ProviderConfig, RuleActionConfig};
pub use self::retry::RetryConfig;
pub use self::routing::RoutingConfig;
pub use self::secret::{SecretSource, resolve_secret};
pub use self::server::ServerConfig;
pub use self::storage::{Backend, StorageConfig};
pub use self::telemetry::TelemetryConfig;
pub use self::transport::{TransportConfig, upstream_transport};
pub use ::budget::Dollars;

/// A configuration error: what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct ConfigError {
    /// The file, field or line concerned.
    pub context: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `context` (a field such as `budget.limits[0].scope`).
    pub fn new(context: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            context: context.into(),
            message: message.into(),
        }
    }
}

/// What the gateway was built from, for `gateway check` and logs.
#[derive(Debug, Default)]
pub struct Understood {
    /// Lines describing the config, secrets redacted.
    pub lines: Vec<String>,
    /// Warnings (e.g. literal secrets).
    pub warnings: Vec<String>,
    /// The models the gateway serves (for `/v1/models`), sorted.
    pub models: Vec<String>,
    /// Each configured upstream key: its provider, name, and its secret's
    /// fingerprint (SHA-256), by which a restart tells whether the file
    /// changed the key.
    pub configured_keys: Vec<(String, String, [u8; 32])>,
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[[providers]]`, tried by priority.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// `[[canary]]` rollouts.
    #[serde(default)]
    pub canary: Vec<CanaryConfig>,
    /// `[pool]`: every key pool's behaviour.
    #[serde(default)]
    pub pool: PoolSection,
    /// `[budget]`.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    /// `[auth]`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// `[retry]`.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[routing]`: fallbacks between models.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// `[context]`: requests that do not fit their model.
    #[serde(default)]
    pub context: ContextConfig,
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[cluster]`: this instance among several on one Postgres.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// `[transport]`.
    #[serde(default)]
    pub transport: TransportConfig,
    /// `[telemetry]`: traces over OTLP.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

impl Config {
    /// Parses a config file's text; `path` is only for messages. An error
    /// says where (line and column) and what, but never quotes the file: a
    /// line holding a literal secret must not reach a terminal or a log.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let place = e.span().map(|span| {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let column = before.len() - line_start + 1;
                let field = field_before(before.get(line_start..).unwrap_or_default())
                    .map(|f| format!(" (`{f}`)"))
                    .unwrap_or_default();
                format!("line {line}, column {column}{field}: ")
            });
            let message = secret::redact(e.message().trim(), text);
            ConfigError::new(
                path.display().to_string(),
                format!("{}{message}", place.unwrap_or_default()),
            )
        })
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        Self::parse(&text, path)
    }
}

/// The key whose value starts where `line_before` ends (`… tier = ` →
/// `tier`), to name the field in an error without quoting the line.
fn field_before(line_before: &str) -> Option<&str> {
    let key = line_before.trim_end().strip_suffix('=')?.trim_end();
    let start = key
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .map_or(0, |i| i + 1);
    Some(&key[start..]).filter(|k| !k.is_empty())
}
