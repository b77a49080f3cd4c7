//! The gateway's configuration file: TOML, every field documented in
//! docs/configuration.md, unknown fields rejected, errors naming the field.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    fn new(context: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            context: context.into(),
            message: message.into(),
        }
    }
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
    /// `[budget]`.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    /// `[auth]`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// `[retry]`.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[transport]`.
    #[serde(default)]
    pub transport: TransportConfig,
}

/// `[transport]`: how the gateway talks to upstreams. Certificate
/// verification cannot be switched off.
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

/// `[storage]`: where state that survives restarts is kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The SQLite database file (created if missing). Without it, state is
    /// kept in memory only and lost when the gateway stops.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Usage records older than this many days are deleted (hourly). At
    /// least 32, so that a month's budget can always be rebuilt. Default:
    /// kept forever.
    #[serde(default)]
    pub usage_retention_days: Option<u32>,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:9000`.
    pub listen: String,
    /// Largest request body in bytes. Default 10 MiB.
    pub body_limit_bytes: usize,
    /// On SIGTERM, in-flight requests get this long to finish. Default 10 s.
    pub shutdown_grace_secs: u64,
    /// Threads serving requests, each with a single-threaded runtime of its
    /// own (`gateway serve`). Default: one per core.
    pub workers: Option<std::num::NonZeroUsize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:9000".into(),
            body_limit_bytes: 10 * 1024 * 1024,
            shutdown_grace_secs: 10,
            workers: None,
        }
    }
}

/// `[[providers]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A name for logs, metrics and headers.
    pub name: String,
    /// The OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// 0 is tried first. Default 0.
    #[serde(default)]
    pub priority: u32,
    /// `least-used` (default), `round-robin`, `weighted`, `power-of-two`.
    #[serde(default)]
    pub strategy: keypool_core::Strategy,
    /// Accepted secret prefixes. Default `["sk-"]`.
    #[serde(default)]
    pub key_prefixes: Option<Vec<String>>,
    /// The keys.
    pub keys: Vec<KeyConfig>,
}

/// One upstream key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A human label, shown everywhere instead of the secret.
    pub name: String,
    /// `${ENV_VAR}`, or a literal secret (accepted with a warning).
    pub secret: Option<String>,
    /// A file holding the secret (trailing whitespace trimmed).
    pub secret_file: Option<PathBuf>,
    /// 0 = primary; higher tiers serve only when lower ones cannot.
    #[serde(default)]
    pub tier: u8,
    /// Weight for the weighted strategy. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Tokens per day.
    pub tokens_per_day: Option<u64>,
    /// Requests per day.
    pub requests_per_day: Option<u32>,
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub max_in_flight: Option<u32>,
}

impl KeyConfig {
    /// A key named `name` whose secret is read from the environment variable
    /// `var` (`secret = "${VAR}"`), with no limits.
    pub fn from_env(name: impl Into<String>, var: &str) -> Self {
        KeyConfig {
            name: name.into(),
            secret: Some(format!("${{{var}}}")),
            secret_file: None,
            tier: 0,
            weight: 1,
            tokens_per_day: None,
            requests_per_day: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            max_in_flight: None,
        }
    }
}

fn one() -> u32 {
    1
}

/// `[[canary]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The baseline model.
    pub model: String,
    /// The candidate model.
    pub candidate: String,
    /// Percent of users on the candidate (0 to 100, decimals allowed).
    pub percent: f64,
    /// Salt for the assignment. Default: the baseline's name.
    pub salt: Option<String>,
}

/// `[budget]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// `+07:00`-style offset for day, week and month boundaries. Default `+00:00`.
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// The limits.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// A TOML price table file to merge over the defaults.
    pub prices_file: Option<PathBuf>,
    /// `reject` (default) or `charge` models without a price.
    pub unknown_model: Option<String>,
    /// With `unknown_model = "charge"`: dollars per million tokens.
    pub unknown_model_usd_per_mtok: Option<f64>,
}

/// One budget limit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// `global`, `team`, `key` or `model`.
    pub scope: String,
    /// The team, key or model name (not for `global`).
    pub name: Option<String>,
    /// Dollars per day.
    pub daily_usd: Option<f64>,
    /// Dollars per week.
    pub weekly_usd: Option<f64>,
    /// Dollars per month.
    pub monthly_usd: Option<f64>,
    /// Above this fraction of a limit, dearer models go to `fallback_model`.
    pub soft_fraction: Option<f64>,
    /// The cheaper model used above the soft limit.
    pub fallback_model: Option<String>,
}

/// `[auth]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `keys` (the default when keys are given) or `none` (loopback only).
    pub mode: Option<String>,
    /// Client keys.
    #[serde(default)]
    pub keys: Vec<ClientKeyConfig>,
    /// The master key for the management API (`${ENV_VAR}`).
    pub master_key: Option<String>,
}

/// A client key, stored hashed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyConfig {
    /// Its name.
    pub name: String,
    /// SHA-256 of the key, in hex (`gateway hash-key` prints it).
    pub key_sha256: String,
    /// Its team.
    pub team: Option<String>,
    /// Models it may use; empty means all.
    #[serde(default)]
    pub models: Vec<String>,
    /// `chat:write`, `embeddings:read`. Default both.
    pub scopes: Option<Vec<String>>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
}

/// `[retry]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Upstream attempts per request. Default 4.
    pub max_attempts: Option<u32>,
    /// Seconds a whole request may take. Default 60.
    pub deadline_secs: Option<u64>,
    /// Seconds one attempt may take. Default 30.
    pub attempt_timeout_secs: Option<u64>,
}

impl Config {
    /// Parses a config file's text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            ConfigError::new(path.display().to_string(), e.to_string().trim().to_owned())
        })
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        Self::parse(&text, path)
    }

    /// The listen address.
    pub fn listen(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:9000",
                    self.server.listen
                ),
            )
        })
    }

    /// The HTTP transport's settings.
    pub fn http(&self) -> transport::HttpConfig {
        let t = &self.transport;
        let d = transport::HttpConfig::default();
        transport::HttpConfig {
            connect_timeout: t
                .connect_timeout_secs
                .map_or(d.connect_timeout, Duration::from_secs),
            extra_ca_file: t.extra_ca_file.clone(),
            use_env_proxy: t.use_env_proxy.unwrap_or(d.use_env_proxy),
            max_body_bytes: t.max_body_bytes.unwrap_or(d.max_body_bytes),
            ..d
        }
    }

    /// How long SIGTERM waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_grace_secs)
    }
}

/// Where a secret came from, for the warning about literal secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `${ENV_VAR}`.
    Env,
    /// `secret_file`.
    File,
    /// Written in the file.
    Literal,
}

/// Resolves a `secret` (`${VAR}` or literal) or `secret_file` through `env`.
pub fn resolve_secret(
    field: &str,
    secret: Option<&str>,
    file: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<(String, SecretSource), ConfigError> {
    match (secret, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            field,
            "give either secret or secret_file, not both",
        )),
        (None, None) => Err(ConfigError::new(
            field,
            "needs secret = \"${ENV_VAR}\" or secret_file = \"path\"",
        )),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    format!("{field}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Ok((text.trim_end().to_owned(), SecretSource::File))
        }
        (Some(s), None) => match s.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
            Some(var) => env
                .get(var)
                .filter(|v| !v.is_empty())
                .map(|v| (v.clone(), SecretSource::Env))
                .ok_or_else(|| {
                    ConfigError::new(field, format!("environment variable {var} is not set"))
                }),
            None => Ok((s.to_owned(), SecretSource::Literal)),
        },
    }
}
