//! Spending limits for LLM traffic: prices, reservations that never
//! overspend, degradation to cheaper models, alerts and usage reports.
//!
//! A [`Ledger`] holds [`Limit`]s per scope (global, team, client key, model)
//! and period (daily, weekly, monthly, on calendar boundaries at a configured
//! UTC offset). Before a request is sent, [`Ledger::reserve`] holds its
//! worst-case cost against every limit that applies; afterwards
//! [`Ledger::settle`] books the real cost from the usage the upstream reports.
//! A limit counts spent plus reserved, so concurrent requests cannot race past it.
//!
//! # Key design decision: integers and a pure state machine
//!
//! Money is [`Money`], integer micro-dollars; prices are micro-dollars per
//! million tokens; no floating point touches an amount. Like `keypool-core`
//! and `canary`, the ledger does no I/O and reads no clock: time is passed in
//! as a `SystemTime` value, and [`Ledger::poll_timeout`] says when it next
//! changes by itself (a reservation expires, a period begins).
//!
//! # Example: a $100 daily budget
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use budget::{BudgetError, Ledger, LedgerConfig, Limit, Money, Period, PriceTable, Scope, Scopes, Tokens};
//!
//! # fn main() -> Result<(), BudgetError> {
//! let limits = vec![Limit::new(Scope::Global, Period::Daily, Money::from_dollars(100))];
//! let mut ledger = Ledger::new(LedgerConfig::default(), PriceTable::defaults(), limits)?;
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_322_452);
//! let team = Scopes { team: Some("search"), key: Some("prod-app") };
//!
//! // Hold the worst case: 2 000 tokens in, up to 1 000 out, at gpt-4.1's
//! // $2 in and $8 out per million.
//! let reservation = ledger.reserve(&team, "gpt-4.1", 2_000, 1_000, now)?;
//! assert_eq!(reservation.amount().to_string(), "$0.012");
//!
//! // The answer used fewer tokens, 1 200 of its input from the provider's
//! // cache ($0.50 a million): the real cost is booked, the rest released.
//! let used = Tokens { prompt: 1_800, completion: 400, cached: 1_200, cache_write: 0 };
//! let settled = ledger.settle(reservation, used, now);
//! assert_eq!(settled.cost.to_string(), "$0.005");
//!
//! // A request whose worst case would pass $100 today is refused.
//! let refused = ledger.reserve(&team, "claude-sonnet-4.5", 1_000, 7_000_000, now);
//! assert!(matches!(refused, Err(BudgetError::BudgetExceeded { .. })));
//! # Ok(())
//! # }
//! ```

mod allowance;
mod calendar;
mod error;
mod estimate;
mod ledger;
mod limits;
mod money;
mod price;
pub mod testing;

pub use allowance::{AllowanceConfig, Allowances, Move, MoveKind};
pub use calendar::{Calendar, Weekday};
pub use error::BudgetError;
pub use estimate::{CharCount, CharEstimator, TokenEstimator};
pub use ledger::{
    Degradation, Event, Ledger, LedgerConfig, Report, ReportFilter, Reservation, Scopes,
    Settlement, ShareView, THRESHOLDS, UsageLine,
};
pub use limits::{Limit, Period, Scope};
#[cfg(feature = "serde")]
pub use money::Dollars;
pub use money::Money;
pub use price::{
    DEFAULT_MAX_OUTPUT_TOKENS, ModelPrice, PriceTable, Resolved, Tokens, UnknownModel,
};
