//! The budget's errors.

use crate::limits::{Period, Scope};
use crate::money::Money;

/// Everything that can go wrong in the budget.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A limit would be exceeded: spent plus reserved plus this request's
    /// worst-case cost is more than the limit.
    #[error(
        "budget exceeded: {scope} {period} limit {limit}, spent {spent}, reserved {reserved}, this request needs up to {needed}"
    )]
    BudgetExceeded {
        /// The scope whose limit refused.
        scope: Scope,
        /// Its period.
        period: Period,
        /// The limit.
        limit: Money,
        /// Spent so far this period.
        spent: Money,
        /// Reserved by requests in flight.
        reserved: Money,
        /// This request's worst-case cost.
        needed: Money,
    },
    /// The limit is shared by several processes and this process's share
    /// of it cannot hold this request: more must be granted first (see
    /// [`Allowances`](crate::Allowances)), or the limit has no room left.
    #[error(
        "budget exceeded: this process's share of the {scope} {period} limit is short by {short}"
    )]
    ShareSpent {
        /// The scope whose limit refused.
        scope: Scope,
        /// Its period.
        period: Period,
        /// The limit's position in the ledger's limits.
        limit: usize,
        /// How much more of a share the request needs.
        short: Money,
        /// What the request needs free in the share.
        needed: Money,
    },
    /// The model has no price and the policy is to reject.
    #[error("model {model:?} has no price; add it to the price table or set a default price")]
    UnknownModel {
        /// The model.
        model: String,
    },
    /// An amount that is not a non-negative decimal number of dollars.
    #[error("{value:?} is not an amount of dollars")]
    BadAmount {
        /// What was given.
        value: String,
    },
    /// An invalid price table or limit configuration.
    #[error("invalid budget config: {0}")]
    Config(String),
}
