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
}

/// The shortest retention: a month's budget is rebuilt from 32 days of usage.
const MIN_RETENTION_DAYS: u32 = 32;

impl StorageConfig {
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
