//! `[storage]`: where state that survives restarts is kept.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[storage]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The SQLite database file (created if missing). Without it (or
    /// `url`), state is kept in memory only and lost when the gateway
    /// stops.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Postgres database shared by several gateway instances:
    /// `"${DATABASE_URL}"` holding `postgres://user:password@host:5432/db`
    /// (`?sslmode=verify-full` for TLS, `&sslrootcert=ca.pem` for a private
    /// CA). A secret: never logged or echoed.
    #[serde(default)]
    pub url: Option<String>,
    /// How long any call to Postgres may take, connecting included, in
    /// milliseconds (default 2000): a database that stops answering never
    /// holds a request or a start longer.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Connections to Postgres (default 8).
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// How often usage records waiting in the outbox are shipped to
    /// Postgres, in milliseconds (default 250).
    #[serde(default)]
    pub ship_every_ms: Option<u64>,
    /// Usage records older than this many days are deleted (hourly). At
    /// least 32, so that a month's budget can always be rebuilt. Default:
    /// kept forever.
    #[serde(default)]
    pub usage_retention_days: Option<u32>,
    /// The key that seals the secrets of upstream keys added or rotated in
    /// over the API before they are stored: 64 hex digits, as
    /// `"${ENV_VAR}"` (or a literal, warned about). Without it (or
    /// `secrets_key_file`), a gateway that stores its state refuses to add
    /// or rotate keys at runtime.
    #[serde(default)]
    pub secrets_key: Option<String>,
    /// A file holding the secrets key.
    #[serde(default)]
    pub secrets_key_file: Option<PathBuf>,
}

/// The shortest retention: a month's budget is rebuilt from 32 days of usage.
const MIN_RETENTION_DAYS: u32 = 32;

/// Where state is kept, as configured.
#[derive(Debug)]
pub enum Backend {
    /// In memory, lost when the gateway stops.
    Memory,
    /// One SQLite file.
    Sqlite(PathBuf),
    /// Postgres, shared with other instances.
    Postgres(crate::store::PostgresOptions),
}

impl StorageConfig {
    /// The sealer for runtime keys' secrets, if a key is given.
    pub(super) fn sealer(
        &self,
        env: &std::collections::HashMap<String, String>,
        u: &mut super::Understood,
    ) -> Result<Option<crate::secrets::Sealer>, ConfigError> {
        if self.secrets_key.is_none() && self.secrets_key_file.is_none() {
            return Ok(None);
        }
        let (hex, source) = super::resolve_secret(
            "storage.secrets_key",
            self.secrets_key.as_deref(),
            self.secrets_key_file.as_deref(),
            env,
        )?;
        if source == super::SecretSource::Literal {
            u.warnings.push(
                "storage.secrets_key is a literal secret in the config file; prefer \"${ENV_VAR}\""
                    .into(),
            );
        }
        let sealer = crate::secrets::Sealer::from_hex(&hex)
            .map_err(|e| ConfigError::new("storage.secrets_key", e.to_string()))?;
        u.lines
            .push("storage: secrets of keys added at runtime are sealed".into());
        Ok(Some(sealer))
    }

    /// Where state is kept: SQLite at `path`, Postgres at `url` (its URL
    /// read through `env`; the outbox in `[cluster] data_dir`), or memory.
    pub fn backend(
        &self,
        cluster: &super::ClusterConfig,
        env: &std::collections::HashMap<String, String>,
    ) -> Result<Backend, ConfigError> {
        match (&self.path, &self.url) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                "storage",
                "give either path (SQLite) or url (Postgres), not both",
            )),
            (Some(path), None) => Ok(Backend::Sqlite(path.clone())),
            (None, None) => Ok(Backend::Memory),
            (None, Some(url)) => {
                let (url, _) = super::resolve_secret("storage.url", Some(url), None, env)?;
                Ok(Backend::Postgres(crate::store::PostgresOptions {
                    url,
                    outbox: cluster.data_dir().join("outbox.db"),
                    pool_size: self.pool_size.unwrap_or(8).max(1),
                    timeout: Duration::from_millis(self.timeout_ms.unwrap_or(2_000).max(1)),
                    ship_every: Duration::from_millis(self.ship_every_ms.unwrap_or(250).max(1)),
                }))
            }
        }
    }

    /// Checks the section; returns the lines `gateway check` prints.
    pub(super) fn check(&self) -> Result<Vec<String>, ConfigError> {
        let mut lines = Vec::new();
        if let Some(days) = self.usage_retention_days {
            if days < MIN_RETENTION_DAYS {
                return Err(ConfigError::new(
                    "storage.usage_retention_days",
                    format!(
                        "{days} is too short: a month's budget is rebuilt from {MIN_RETENTION_DAYS} days of usage"
                    ),
                ));
            }
            lines.push(format!("storage: usage kept {days} days"));
        }
        lines.push(match (&self.path, &self.url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "storage",
                    "give either path (SQLite) or url (Postgres), not both",
                ));
            }
            (Some(p), None) => format!("storage: {} (SQLite)", p.display()),
            (None, Some(_)) => "storage: Postgres (shared by every instance)".into(),
            (None, None) => "storage: in memory only (lost when the gateway stops)".into(),
        });
        Ok(lines)
    }
}
