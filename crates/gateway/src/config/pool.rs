//! `[pool]`: how every provider's key pool behaves.

use std::time::Duration;

use keypool_core::{PoolConfig, UtcOffset};
use serde::Deserialize;

use super::ConfigError;

/// `[pool]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Where keys' days begin (their daily quotas reset at this midnight),
    /// e.g. `"+07:00"`. Default: `[budget] utc_offset`, else UTC.
    pub utc_offset: Option<String>,
    /// The longest an upstream can bench a key with `Retry-After` or
    /// rate-limit headers, in seconds; longer waits are cut. Default 3600.
    pub max_cooldown_secs: Option<u64>,
}

impl PoolSection {
    /// The pools' configuration; `budget_offset` is `[budget] utc_offset`.
    pub(super) fn build(&self, budget_offset: Option<&str>) -> Result<PoolConfig, ConfigError> {
        let (field, offset) = match (&self.utc_offset, budget_offset) {
            (Some(o), _) => ("pool.utc_offset", Some(o.as_str())),
            (None, Some(o)) => ("budget.utc_offset", Some(o)),
            (None, None) => ("pool.utc_offset", None),
        };
        let utc_offset = match offset {
            Some(o) => o.parse().map_err(|e: keypool_core::ParseOffsetError| {
                ConfigError::new(field, e.to_string())
            })?,
            None => UtcOffset::UTC,
        };
        let defaults = PoolConfig::default();
        let config = PoolConfig {
            utc_offset,
            max_cooldown: self
                .max_cooldown_secs
                .map_or(defaults.max_cooldown, Duration::from_secs),
            ..defaults
        };
        config
            .validate()
            .map_err(|e| ConfigError::new(format!("pool.{}", pool_field(e.field)), e.reason))?;
        Ok(config)
    }
}

/// The file's name of a pool setting.
fn pool_field(field: &str) -> &str {
    match field {
        "max_cooldown" => "max_cooldown_secs",
        other => other,
    }
}
