//! Limits set and removed while the ledger runs (an operator's change),
//! and the indexes that find a request's limits.
//!
//! A limit keeps its position for the ledger's life: reservations, and the
//! moves of a shared limit, name limits by position. A removed limit stays
//! in place, out of every index; setting it again revives it.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{Ledger, LimitState, Share, THRESHOLDS};
use crate::calendar::unix_ms;
use crate::error::BudgetError;
use crate::limits::{Limit, Period, Scope};
use crate::money::Money;

impl LimitState {
    pub(super) fn new(limit: Limit, period_id: i64, spent: Money) -> Self {
        LimitState {
            soft: limit.soft_amount(),
            limit,
            period_id,
            spent,
            reserved: Money::ZERO,
            crossed: 0,
            share: None,
            removed: false,
        }
    }
}

impl Ledger {
    /// Sets a limit while running. A limit of the same scope and period is
    /// changed in place (what is spent and reserved against it stays);
    /// otherwise the limit is added, starting from what its scope spent in
    /// the current period, as far as the ledger's usage (kept for reports,
    /// restored logs included) tells. Thresholds the new amount puts behind
    /// are announced at once. Fails, changing nothing, if the limit is $0 or
    /// its fallback has no price.
    ///
    /// Requests in flight when a limit is added were reserved without it:
    /// their cost counts against it when they are settled.
    ///
    /// ```
    /// use budget::{Ledger, LedgerConfig, Limit, Money, Period, PriceTable, Scope};
    /// # fn main() -> Result<(), budget::BudgetError> {
    /// let mut ledger = Ledger::new(LedgerConfig::default(), PriceTable::defaults(), vec![])?;
    /// let now = std::time::SystemTime::now();
    /// let team = Scope::Team("eng".into());
    /// ledger.set_limit(Limit::new(team.clone(), Period::Daily, Money::from_dollars(5)), now)?;
    /// assert_eq!(ledger.limits().count(), 1);
    /// assert!(ledger.remove_limit(&team, Period::Daily, now));
    /// assert_eq!(ledger.limits().count(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_limit(&mut self, limit: Limit, now: SystemTime) -> Result<(), BudgetError> {
        self.advance(now);
        self.check_limit(&limit)?;
        let found = self
            .limits
            .iter()
            .position(|l| l.limit.scope == limit.scope && l.limit.period == limit.period);
        let i = match found {
            Some(i) => i,
            None if self.limits.len() >= usize::from(u16::MAX) => {
                return Err(BudgetError::Config("at most 65535 limits".into()));
            }
            None => {
                let id = self.cfg.calendar.period_id(limit.period, now);
                let mut state = LimitState::new(limit.clone(), id, Money::ZERO);
                state.removed = true; // counted below, as a revived limit is
                state.share = self.shared.then(Share::default);
                self.limits.push(state);
                self.limits.len() - 1
            }
        };
        let spent = self.spent_this_period(&limit.scope, limit.period, now);
        if let Some(l) = self.limits.get_mut(i) {
            if l.removed {
                l.spent = spent;
                l.reserved = Money::ZERO;
                l.removed = false;
            }
            l.soft = limit.soft_amount();
            l.limit = limit;
            l.crossed &= passed_bits(l.spent, l.limit.hard);
        }
        self.reindex();
        if let Ok(i) = u16::try_from(i) {
            self.book(i, Money::ZERO, Money::ZERO, Money::ZERO);
        }
        Ok(())
    }

    /// Removes the limit of `scope` and `period` while running; `false` if
    /// there is none. Requests are no longer held or refused against it.
    pub fn remove_limit(&mut self, scope: &Scope, period: Period, now: SystemTime) -> bool {
        self.advance(now);
        let Some(l) = self
            .limits
            .iter_mut()
            .find(|l| !l.removed && l.limit.scope == *scope && l.limit.period == period)
        else {
            return false;
        };
        l.removed = true;
        self.reindex();
        true
    }

    /// Refuses a limit of $0 and a fallback model without a price.
    pub(super) fn check_limit(&self, limit: &Limit) -> Result<(), BudgetError> {
        if limit.hard == Money::ZERO {
            return Err(BudgetError::Config(format!(
                "{} {} limit must be more than $0",
                limit.scope, limit.period
            )));
        }
        if let Some(f) = &limit.fallback {
            self.prices.resolve(f).map_err(|_| {
                BudgetError::Config(format!(
                    "{} {} limit: fallback model {f:?} has no price",
                    limit.scope, limit.period
                ))
            })?;
        }
        Ok(())
    }

    /// Rebuilds the indexes by scope from the limits in force.
    pub(super) fn reindex(&mut self) {
        let mut global = Vec::new();
        let mut maps: [HashMap<String, Vec<u16>>; 3] = Default::default();
        for (i, l) in self.limits.iter().enumerate() {
            let (Ok(i), false) = (u16::try_from(i), l.removed) else {
                continue;
            };
            match &l.limit.scope {
                Scope::Global => global.push(i),
                Scope::Key(n) => maps[0].entry(n.clone()).or_default().push(i),
                Scope::Team(n) => maps[1].entry(n.clone()).or_default().push(i),
                Scope::Model(n) => {
                    let canonical = self
                        .prices
                        .resolve(n)
                        .map_or_else(|_| n.clone(), |r| r.model.to_owned());
                    maps[2].entry(canonical).or_default().push(i);
                }
            }
        }
        let [by_key, by_team, by_model] = maps;
        (self.global, self.by_key, self.by_team, self.by_model) =
            (global, by_key, by_team, by_model);
        self.applicable_cache.clear();
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// What requests of `scope` cost in the period of `period` current at
    /// `now`, from the usage kept by day.
    fn spent_this_period(&self, scope: &Scope, period: Period, now: SystemTime) -> Money {
        let cal = self.cfg.calendar;
        let first = cal.day(cal.period_start(period, now));
        let today = cal.day_of_ms(unix_ms(now));
        let id = |name: &str| self.names.get(name).copied();
        let wanted = match scope {
            Scope::Global => None,
            Scope::Key(n) => Some((0, id(n))),
            Scope::Team(n) => Some((1, id(n))),
            Scope::Model(n) => {
                let canonical = self.prices.resolve(n).map_or(n.as_str(), |r| r.model);
                Some((2, id(canonical)))
            }
        };
        let micros: u64 = self
            .usage
            .iter()
            .filter(|((day, _), _)| (first..=today).contains(day))
            .filter(|((_, names), _)| match wanted {
                None => true,
                Some((slot, id)) => id.is_some() && names.get(slot).copied() == id,
            })
            .map(|(_, agg)| agg.cost)
            .fold(0u64, u64::saturating_add);
        Money::from_micros(micros)
    }

    /// Books `cost` against the limits that apply to `names` now but did
    /// not when the reservation was made (`held`).
    pub(super) fn book_added_limits(&mut self, held: &[u16], names: [u32; 3], cost: Money) {
        let now = self.applicable(names);
        for &i in now.iter().filter(|i| !held.contains(i)) {
            self.book(i, Money::ZERO, cost, Money::ZERO);
        }
    }
}

/// The threshold bits (and the soft bit) that `spent` has passed of `hard`.
fn passed_bits(spent: Money, hard: Money) -> u8 {
    let percent = u128::from(spent.micros()) * 100 / u128::from(hard.micros().max(1));
    THRESHOLDS
        .iter()
        .enumerate()
        .filter(|&(_, &pct)| percent >= u128::from(pct))
        .fold(super::SOFT_BIT, |bits, (bit, _)| bits | (1u8 << bit))
}
