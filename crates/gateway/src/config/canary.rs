//! `[[canary]]`: gray releases of a candidate model against a baseline.

use canary::{Rollout, Share};
use serde::Deserialize;

use super::ConfigError;

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

impl CanaryConfig {
    /// The rollout; `field` is where it is in the file (`canary[0]`).
    pub(super) fn build(&self, field: &str) -> Result<Rollout, ConfigError> {
        let share = Share::from_fraction(self.percent / 100.0)
            .map_err(|e| ConfigError::new(format!("{field}.percent"), e.to_string()))?;
        Rollout::builder(self.model.clone())
            .candidate(self.candidate.clone(), share)
            .salt(self.salt.clone().unwrap_or_else(|| self.model.clone()))
            .build()
            .map_err(|e| ConfigError::new(field, e.to_string()))
    }
}
