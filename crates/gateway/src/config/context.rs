//! `[context]`: what to do with a request that does not fit its model.

use std::collections::BTreeMap;

use gateway_client::ContextPolicy;
use serde::Deserialize;

use super::ConfigError;

/// `[context]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    /// Drop the oldest turns that do not fit the model's window (from the
    /// price table), keeping the system and developer messages and never
    /// separating a tool call from its answers; again, once, on a
    /// context-length error. Default `false`.
    #[serde(default)]
    pub truncate: bool,
    /// On a context-length error, retry once with the larger model mapped
    /// here (`{ "gpt-4o-mini" = "gpt-4.1" }`).
    #[serde(default)]
    pub fallback_models: BTreeMap<String, String>,
}

impl ContextConfig {
    /// The client's context policy, and a line for `gateway check`.
    pub(super) fn build(&self) -> Result<(ContextPolicy, Option<String>), ConfigError> {
        for (from, to) in &self.fallback_models {
            let field = format!("context.fallback_models.{from:?}");
            if from.trim().is_empty() || to.trim().is_empty() {
                return Err(ConfigError::new(field, "model names must not be empty"));
            }
            if from == to {
                return Err(ConfigError::new(
                    field,
                    "a model cannot fall back to itself",
                ));
            }
        }
        let policy = ContextPolicy {
            truncate: self.truncate,
            fallback_models: self
                .fallback_models
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
        };
        let mut parts = Vec::new();
        if self.truncate {
            parts.push("oldest turns dropped to fit".to_owned());
        }
        parts.extend(
            self.fallback_models
                .iter()
                .map(|(a, b)| format!("{a} → {b}")),
        );
        let line = (!parts.is_empty()).then(|| format!("context: {}", parts.join(", ")));
        Ok((policy, line))
    }
}
