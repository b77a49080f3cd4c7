//! Operators' changes to the configuration made while serving: a budget
//! scope's limits, a rollout's overrides and its analysis. Each is a
//! [`SettingRecord`] whose value has the config file's own shape, checked by
//! the config's own build step ([`parse`]), then stored, then applied to the
//! running layers ([`apply`]). At start-up the stored changes are applied
//! over the config file, and instances sharing a store apply each other's.

use budget::{Limit, Period, Scope};
use gateway_client::Analysis;

use crate::config::{AnalysisConfig, ConfigError, LimitConfig, OverridesConfig};
use crate::state::AppState;
use crate::store::{SettingKind, SettingRecord};

/// A change, checked and ready to apply.
#[derive(Debug)]
pub(crate) enum Setting {
    /// The limits of one scope (periods not listed are removed).
    Limits {
        /// The scope.
        scope: Scope,
        /// Its limits, one per period given.
        limits: Vec<Limit>,
    },
    /// A rollout's overrides.
    Overrides {
        /// The rollout's baseline model.
        model: String,
        /// Its new overrides.
        overrides: canary::Overrides,
    },
    /// A rollout's analysis.
    Analysis {
        /// The rollout's baseline model.
        model: String,
        /// Its new analysis.
        analysis: Analysis,
    },
}

/// A scope's name in settings: `global`, `team:…`, `key:…` or `model:…`.
pub(crate) fn scope_name(scope: &Scope) -> String {
    match scope {
        Scope::Global => "global".into(),
        Scope::Team(n) => format!("team:{n}"),
        Scope::Key(n) => format!("key:{n}"),
        Scope::Model(n) => format!("model:{n}"),
    }
}

/// The scope [`scope_name`] names.
pub(crate) fn scope_named(name: &str) -> Option<Scope> {
    if name == "global" {
        return Some(Scope::Global);
    }
    let (kind, rest) = name.split_once(':')?;
    let rest = rest.to_owned();
    match kind {
        "team" => Some(Scope::Team(rest)),
        "key" => Some(Scope::Key(rest)),
        "model" => Some(Scope::Model(rest)),
        _ => None,
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    field: &str,
    value: &serde_json::Value,
) -> Result<T, ConfigError> {
    T::deserialize(value).map_err(|e| ConfigError::new(field, e.to_string()))
}

/// Checks `record` against the running layers: the value's shape and
/// values (by the config's own build step), that the rollout exists, that
/// a limit's fallback has a price.
pub(crate) fn parse(s: &AppState, record: &SettingRecord) -> Result<Setting, ConfigError> {
    let name = record.name.as_str();
    let value = record.value.as_ref();
    match record.kind {
        SettingKind::BudgetLimit => {
            let scope = scope_named(name)
                .ok_or_else(|| ConfigError::new("scope", format!("no budget scope {name:?}")))?;
            let limits = match value {
                Some(v) => decode::<LimitConfig>("limit", v)?.build("limit")?,
                None => Vec::new(),
            };
            check_limits(s, &limits)?;
            Ok(Setting::Limits { scope, limits })
        }
        SettingKind::CanaryOverrides => {
            let candidates = candidates(s, name)?;
            let config: OverridesConfig =
                value.map_or(Ok(OverridesConfig::default()), |v| decode("overrides", v))?;
            let overrides = config.build("overrides", &candidates)?;
            Ok(Setting::Overrides {
                model: name.to_owned(),
                overrides,
            })
        }
        SettingKind::CanaryAnalysis => {
            candidates(s, name)?;
            let config: AnalysisConfig =
                value.map_or(Ok(AnalysisConfig::default()), |v| decode("analysis", v))?;
            Ok(Setting::Analysis {
                model: name.to_owned(),
                analysis: config.build("analysis")?,
            })
        }
    }
}

/// The candidates of the rollout of `model`.
fn candidates(s: &AppState, model: &str) -> Result<Vec<String>, ConfigError> {
    s.client
        .with_rollout(model, |r, _| {
            r.candidates().iter().map(|c| c.model.to_string()).collect()
        })
        .ok_or_else(|| ConfigError::new("model", format!("no canary rollout for {model:?}")))
}

/// Limits need a budget, an amount, and a priced fallback.
fn check_limits(s: &AppState, limits: &[Limit]) -> Result<(), ConfigError> {
    let checked = s.client.with_ledger(|l, _| {
        for limit in limits {
            if limit.hard.micros() == 0 {
                return Err(ConfigError::new("limit", "an amount must be more than $0"));
            }
            if let Some(f) = &limit.fallback
                && l.prices().resolve(f).is_err()
            {
                let message = format!("{f:?} has no price");
                return Err(ConfigError::new("limit.fallback_model", message));
            }
        }
        Ok(())
    });
    checked.unwrap_or_else(|| {
        Err(ConfigError::new(
            "budget",
            "this gateway has no [budget] section: add one (with its prices) to set limits",
        ))
    })
}

/// Applies a checked change to the running layers.
pub(crate) fn apply(s: &AppState, setting: Setting) -> Result<(), String> {
    match setting {
        Setting::Limits { scope, limits } => s
            .client
            .with_ledger(|l, now| {
                for period in [Period::Daily, Period::Weekly, Period::Monthly] {
                    match limits.iter().find(|x| x.period == period) {
                        Some(limit) => {
                            l.set_limit(limit.clone(), now).map_err(|e| e.to_string())?;
                        }
                        None => drop(l.remove_limit(&scope, period, now)),
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|| Err("this gateway has no budget".into())),
        Setting::Overrides { model, overrides } => s
            .client
            .with_rollout(&model, |r, _| r.set_overrides(overrides))
            .ok_or_else(|| format!("no canary rollout for {model:?}"))?
            .map_err(|e| e.to_string()),
        Setting::Analysis { model, analysis } => {
            let enabled = analysis.enabled;
            if !s.client.set_analysis(&model, analysis) {
                return Err(format!("no canary rollout for {model:?}"));
            }
            s.client
                .with_rollout(&model, |r, _| r.set_promote_on_verdicts(enabled));
            Ok(())
        }
    }
}

/// Applies stored changes (at start-up, or another instance's), logging
/// those that no longer fit; returns how many applied.
pub(crate) fn apply_stored(s: &AppState, records: &[SettingRecord]) -> usize {
    let mut n = 0;
    for r in records {
        let applied = parse(s, r)
            .map_err(|e| e.to_string())
            .and_then(|setting| apply(s, setting));
        match applied {
            Ok(()) => n += 1,
            Err(e) => tracing::warn!(
                "the stored {} setting {:?} no longer applies: {e}",
                r.kind.as_str(),
                r.name
            ),
        }
    }
    n
}
