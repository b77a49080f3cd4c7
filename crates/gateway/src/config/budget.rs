//! `[budget]`: prices and spending limits, built into the ledger.

use std::path::PathBuf;

use budget::{
    Calendar, Dollars, Ledger, LedgerConfig, Limit, ModelPrice, Period, PriceTable, Scope,
    UnknownModel,
};
use keypool_core::UtcOffset;
use serde::Deserialize;

use super::{ConfigError, Understood};

/// `[budget]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// `+07:00`-style offset for day, week and month boundaries. Default `+00:00`.
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// The limits.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// A price table file to merge over the defaults: this gateway's TOML,
    /// or `LiteLLM`'s `model_prices_and_context_window.json` (told apart by
    /// content).
    pub prices_file: Option<PathBuf>,
    /// What to do with models without a price. Default `reject`.
    #[serde(default)]
    pub unknown_model: UnknownModelPolicy,
    /// With `unknown_model = "charge"`: dollars per million tokens.
    pub unknown_model_usd_per_mtok: Option<Dollars>,
    /// When the budget cannot pay for all a request may write but can for
    /// this many output tokens, the request is served with its output capped
    /// (`x-gateway-max-tokens` says where); below it, refused with 402.
    /// Default 256.
    pub min_output_tokens: Option<u64>,
    /// The first day of a week for weekly limits (`"monday"` … `"sunday"`).
    /// Default Monday.
    pub week_start: Option<budget::Weekday>,
    /// A reservation neither settled nor cancelled within this many
    /// seconds is booked as spent in full. Default 600.
    pub reservation_ttl_secs: Option<u64>,
    /// Today's spend is an anomaly when it passes the trailing average at
    /// the same hour times this factor (more than 1). Default 1.5.
    pub anomaly_factor: Option<f64>,
}

/// `[budget] unknown_model`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownModelPolicy {
    /// Refuse requests for a model without a price.
    #[default]
    Reject,
    /// Charge `unknown_model_usd_per_mtok` for them.
    Charge,
}

/// What a limit applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    /// Everything.
    Global,
    /// One team (`name`).
    Team,
    /// One client key (`name`).
    Key,
    /// One model (`name`).
    Model,
}

/// One budget limit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// What it applies to.
    pub scope: LimitScope,
    /// The team, key or model name (not for `global`).
    pub name: Option<String>,
    /// Dollars per day.
    pub daily_usd: Option<Dollars>,
    /// Dollars per week.
    pub weekly_usd: Option<Dollars>,
    /// Dollars per month.
    pub monthly_usd: Option<Dollars>,
    /// Above this fraction of a limit, dearer models go to `fallback_model`.
    pub soft_fraction: Option<f64>,
    /// The cheaper model used above the soft limit.
    pub fallback_model: Option<String>,
}

impl LimitConfig {
    /// A global limit of `daily` dollars a day.
    pub fn global_daily(daily: budget::Money) -> Self {
        LimitConfig {
            scope: LimitScope::Global,
            name: None,
            daily_usd: Some(Dollars(daily)),
            weekly_usd: None,
            monthly_usd: None,
            soft_fraction: None,
            fallback_model: None,
        }
    }

    fn scope(&self, field: &str) -> Result<Scope, ConfigError> {
        let named = |make: fn(String) -> Scope| {
            self.name.clone().map(make).ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.name"),
                    format!("a {:?} limit needs a name", self.scope).to_lowercase(),
                )
            })
        };
        match self.scope {
            LimitScope::Global => Ok(Scope::Global),
            LimitScope::Team => named(Scope::Team),
            LimitScope::Key => named(Scope::Key),
            LimitScope::Model => named(Scope::Model),
        }
    }

    /// The ledger's limits this entry sets (one per period given).
    pub fn build(&self, field: &str) -> Result<Vec<Limit>, ConfigError> {
        let scope = self.scope(field)?;
        let periods = [
            (Period::Daily, self.daily_usd),
            (Period::Weekly, self.weekly_usd),
            (Period::Monthly, self.monthly_usd),
        ];
        if periods.iter().all(|(_, v)| v.is_none()) {
            return Err(ConfigError::new(
                field,
                "needs daily_usd, weekly_usd or monthly_usd",
            ));
        }
        if let Some(f) = self.soft_fraction
            && !(0.0..=1.0).contains(&f)
        {
            return Err(ConfigError::new(
                format!("{field}.soft_fraction"),
                "must be between 0 and 1",
            ));
        }
        let mut limits = Vec::new();
        for (period, usd) in periods {
            let Some(Dollars(amount)) = usd else { continue };
            let mut limit = Limit::new(scope.clone(), period, amount);
            if let Some(f) = self.soft_fraction {
                limit = limit.soft(f);
            }
            if let Some(m) = &self.fallback_model {
                limit = limit.fallback(m.clone());
            }
            limits.push(limit);
        }
        Ok(limits)
    }
}

impl BudgetConfig {
    /// The price table: the defaults, `prices_file` over them, and the
    /// unknown-model policy.
    fn prices(&self) -> Result<PriceTable, ConfigError> {
        let mut prices = PriceTable::defaults();
        if let Some(path) = &self.prices_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    "budget.prices_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            // LiteLLM's list is a JSON object; this gateway's own format is TOML.
            let read = if text.trim_start().starts_with('{') {
                PriceTable::from_litellm_json(&text)
            } else {
                PriceTable::from_toml(&text)
            };
            prices.merge(read.map_err(|e| {
                ConfigError::new(
                    format!("budget.prices_file ({})", path.display()),
                    e.to_string(),
                )
            })?);
        }
        match (self.unknown_model, self.unknown_model_usd_per_mtok) {
            (UnknownModelPolicy::Reject, _) => {}
            (UnknownModelPolicy::Charge, Some(Dollars(usd))) => {
                prices.on_unknown(UnknownModel::Charge(ModelPrice::blended(usd, None)));
            }
            (UnknownModelPolicy::Charge, None) => {
                return Err(ConfigError::new(
                    "budget.unknown_model_usd_per_mtok",
                    "needed with unknown_model = \"charge\"",
                ));
            }
        }
        Ok(prices)
    }

    /// The ledger's settings: calendar, reservations' lifetime, anomaly factor.
    fn ledger_config(&self, offset: UtcOffset) -> Result<LedgerConfig, ConfigError> {
        let defaults = LedgerConfig::default();
        let mut calendar = Calendar::new(offset.as_seconds());
        if let Some(day) = self.week_start {
            calendar.week_start = day;
        }
        let reservation_ttl = match self.reservation_ttl_secs {
            Some(0) => {
                return Err(ConfigError::new(
                    "budget.reservation_ttl_secs",
                    "must be at least 1 second",
                ));
            }
            Some(s) => std::time::Duration::from_secs(s),
            None => defaults.reservation_ttl,
        };
        let anomaly_permille = match self.anomaly_factor {
            None => defaults.anomaly_permille,
            Some(f) if f.is_finite() && f > 1.0 && f <= 1000.0 => {
                // Checked to (1, 1000]: the product fits a u32.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let permille = (f * 1000.0).round() as u32;
                permille.max(1001)
            }
            Some(_) => {
                return Err(ConfigError::new(
                    "budget.anomaly_factor",
                    "must be a number above 1 (1.5 alerts at 150% of the usual spend)",
                ));
            }
        };
        Ok(LedgerConfig {
            calendar,
            reservation_ttl,
            anomaly_permille,
            ..defaults
        })
    }

    /// The ledger. The models its price table knows are served too.
    pub(super) fn build(&self, u: &mut Understood) -> Result<Ledger, ConfigError> {
        let offset: UtcOffset = match &self.utc_offset {
            Some(s) => s.parse().map_err(|e: keypool_core::ParseOffsetError| {
                ConfigError::new("budget.utc_offset", e.to_string())
            })?,
            None => UtcOffset::UTC,
        };
        let prices = self.prices()?;
        u.models.extend(prices.models().map(|(m, _)| m.to_owned()));
        let mut limits = Vec::new();
        for (li, l) in self.limits.iter().enumerate() {
            for limit in l.build(&format!("budget.limits[{li}]"))? {
                u.lines.push(format!(
                    "budget {} {} {}",
                    limit.scope, limit.period, limit.hard
                ));
                limits.push(limit);
            }
        }
        let cfg = self.ledger_config(offset)?;
        Ledger::new(cfg, prices, limits).map_err(|e| ConfigError::new("budget", e.to_string()))
    }
}
