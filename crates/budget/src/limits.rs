//! Scopes, periods and limits.

use std::fmt;

use crate::money::Money;

/// What a limit applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "scope", content = "name", rename_all = "snake_case")
)]
pub enum Scope {
    /// Every request.
    Global,
    /// Requests of one team.
    Team(String),
    /// Requests made with one client key (by name).
    Key(String),
    /// Requests for one model (by canonical name).
    Model(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Team(n) => write!(f, "team {n:?}"),
            Scope::Key(n) => write!(f, "key {n:?}"),
            Scope::Model(n) => write!(f, "model {n:?}"),
        }
    }
}

/// A calendar period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Period {
    /// From local midnight.
    Daily,
    /// From local midnight on the calendar's week start.
    Weekly,
    /// From local midnight on the 1st.
    Monthly,
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        })
    }
}

/// One spending limit.
///
/// ```
/// use budget::{Limit, Money, Period, Scope};
/// // $100 a day for everything; above 80% gpt-4.1 becomes gpt-4o-mini.
/// let limit = Limit::new(Scope::Global, Period::Daily, Money::from_dollars(100))
///     .soft(0.8)
///     .fallback("gpt-4o-mini");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Limit {
    /// What it applies to.
    pub scope: Scope,
    /// Its period.
    pub period: Period,
    /// The hard limit: a request whose worst case would pass it is refused.
    pub hard: Money,
    /// The soft limit in basis points of `hard` (e.g. 8000 for 80%), if any.
    pub soft_bp: Option<u16>,
    /// Above the soft limit, requests for any model dearer than this one
    /// (input plus output price per million tokens) are served by it instead.
    pub fallback: Option<String>,
}

impl Limit {
    /// A hard limit.
    pub fn new(scope: Scope, period: Period, hard: Money) -> Self {
        Limit {
            scope,
            period,
            hard,
            soft_bp: None,
            fallback: None,
        }
    }

    /// A soft limit as a fraction of the hard one (clamped to `0.0..=1.0`).
    pub fn soft(mut self, fraction: f64) -> Self {
        // Clamped to 0..=1, so the product fits in u16.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bp = (fraction.clamp(0.0, 1.0) * 10_000.0).round() as u16;
        self.soft_bp = Some(bp);
        self
    }

    /// Above the soft limit, serve requests for dearer models with `model`.
    pub fn fallback(mut self, model: impl Into<String>) -> Self {
        self.fallback = Some(model.into());
        self
    }

    /// The soft limit as money, if set.
    pub fn soft_amount(&self) -> Option<Money> {
        self.soft_bp
            .map(|bp| self.hard.mul_div(u64::from(bp), 10_000))
    }
}
