//! `[routing]`: what to try when a model cannot be served, and how long a
//! conversation stays on the key that served it.

use std::collections::BTreeMap;

use gateway_client::{Catalog, Fallbacks};
use serde::Deserialize;

use super::ConfigError;

/// `[routing]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Per model, the models to try in turn when no key of any provider
    /// can serve it (`{ "gpt-4.1" = ["deepseek-chat"] }`).
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// How long after each request a conversation prefers the key that
    /// served it, so that the provider's prompt cache for that key holds
    /// its prefix (default 300; 0 turns affinity off).
    #[serde(default = "default_cache_affinity_secs")]
    pub cache_affinity_secs: u64,
}

/// Five minutes: about as long as providers keep a prompt prefix cached.
fn default_cache_affinity_secs() -> u64 {
    300
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            fallbacks: BTreeMap::new(),
            cache_affinity_secs: default_cache_affinity_secs(),
        }
    }
}

impl RoutingConfig {
    /// The fallbacks, checked against what the providers serve: a model
    /// nobody serves cannot be fallen back to.
    pub(super) fn build(
        &self,
        catalogs: &[Catalog],
    ) -> Result<(Fallbacks, Vec<String>), ConfigError> {
        let mut fallbacks = Fallbacks::none();
        let mut lines = Vec::new();
        for (model, then) in &self.fallbacks {
            let field = format!("routing.fallbacks.{model:?}");
            if model.trim().is_empty() {
                return Err(ConfigError::new(field, "model names must not be empty"));
            }
            if then.is_empty() {
                return Err(ConfigError::new(
                    field,
                    "list at least one model to fall back to",
                ));
            }
            for (i, next) in then.iter().enumerate() {
                let field = format!("{field}[{i}]");
                if next == model {
                    return Err(ConfigError::new(
                        field,
                        "a model cannot fall back to itself",
                    ));
                }
                if !catalogs.iter().any(|c| c.serves(next)) {
                    return Err(ConfigError::new(
                        field,
                        format!("no provider serves {next:?}"),
                    ));
                }
            }
            lines.push(format!(
                "routing: {model} falls back to {}",
                then.join(", ")
            ));
            fallbacks = fallbacks.with(model.clone(), then.iter().cloned());
        }
        if self.cache_affinity_secs > 0 {
            lines.push(format!(
                "routing: a conversation prefers its last key for {} s (prompt-cache affinity)",
                self.cache_affinity_secs
            ));
        }
        Ok((fallbacks, lines))
    }
}
