//! `[storage]`: where state that survives restarts is kept.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// `[storage]`.
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
        lines.push(match &self.path {
            Some(p) => format!("storage: {} (SQLite)", p.display()),
            None => "storage: in memory only (lost when the gateway stops)".into(),
        });
        Ok(lines)
    }
}
