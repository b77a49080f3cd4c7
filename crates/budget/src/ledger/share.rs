//! Limits several processes share: each process holds a share of a limit,
//! granted by something they all trust (a database: see
//! [`Allowances`](crate::Allowances)), and may hold reservations against
//! it only up to its share.
//!
//! The ledger keeps each shared limit's share (`held`) and what this process
//! spent of it (`own_spent`); a reservation must fit both the limit as this
//! process knows it and `own_spent + reserved + needed <= held`. If every
//! process keeps that, and the shares granted never add up to more than the
//! limit, no period's spend passes the limit, whatever the processes'
//! interleaving.

use super::{Ledger, LimitState, Share};
use crate::limits::{Period, Scope};
use crate::money::Money;

/// A shared limit as this process holds it this period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareView {
    /// The limit's position in the ledger's limits.
    pub limit: usize,
    /// Its scope.
    pub scope: Scope,
    /// Its period.
    pub period: Period,
    /// The current period's number (changes at each period's start).
    pub period_id: i64,
    /// When the current period started.
    pub period_start: std::time::SystemTime,
    /// The limit itself.
    pub hard: Money,
    /// What this process may spend of it this period.
    pub held: Money,
    /// What this process spent of it this period.
    pub own_spent: Money,
    /// What this process's requests in flight hold against it.
    pub reserved: Money,
}

impl ShareView {
    /// What of the share is neither spent nor reserved.
    pub fn free(&self) -> Money {
        self.held
            .saturating_sub(self.own_spent.saturating_add(self.reserved))
    }
}

impl Ledger {
    /// Makes every limit shared: from now on a reservation also needs room
    /// in this process's share of each limit, which starts at $0 and grows
    /// by [`grant`](Self::grant).
    pub fn share_limits(&mut self) {
        self.shared = true;
        for l in &mut self.limits {
            l.share.get_or_insert_with(Share::default);
        }
    }

    /// The shared limits as this process holds them, for the period current
    /// at `now`.
    pub fn shares(&mut self, now: std::time::SystemTime) -> Vec<ShareView> {
        self.advance(now);
        let cal = self.cfg.calendar;
        self.limits
            .iter()
            .enumerate()
            .filter_map(|(i, l)| view(i, l, cal.period_start(l.limit.period, now)))
            .collect()
    }

    /// Adds `amount` to this process's share of limit `limit` in period
    /// `period_id` (a grant for a period that has ended is ignored).
    pub fn grant(&mut self, limit: usize, period_id: i64, amount: Money) {
        if let Some(s) = self.share_mut(limit, period_id) {
            s.held = s.held.saturating_add(amount);
        }
    }

    /// Takes up to `amount` out of this process's share of limit `limit` in
    /// period `period_id`, never what is spent or reserved; returns what was
    /// taken (to be handed back).
    pub fn give_back(&mut self, limit: usize, period_id: i64, amount: Money) -> Money {
        let Some(l) = self.limits.get_mut(limit) else {
            return Money::ZERO;
        };
        let reserved = l.reserved;
        if l.period_id != period_id {
            return Money::ZERO;
        }
        let Some(s) = l.share.as_mut() else {
            return Money::ZERO;
        };
        let free = s.held.saturating_sub(s.own_spent.saturating_add(reserved));
        let taken = amount.min(free);
        s.held = s.held.saturating_sub(taken);
        taken
    }

    /// Sets this process's share of limit `limit` in period `period_id` and
    /// what it spent of it, as the shared record says after a restart.
    pub fn set_share(&mut self, limit: usize, period_id: i64, held: Money, own_spent: Money) {
        if let Some(s) = self.share_mut(limit, period_id) {
            *s = Share { held, own_spent };
        }
    }

    fn share_mut(&mut self, limit: usize, period_id: i64) -> Option<&mut Share> {
        let l = self.limits.get_mut(limit)?;
        if l.period_id != period_id {
            return None;
        }
        l.share.as_mut()
    }
}

fn view(i: usize, l: &LimitState, period_start: std::time::SystemTime) -> Option<ShareView> {
    let s = l.share.filter(|_| !l.removed)?;
    Some(ShareView {
        limit: i,
        scope: l.limit.scope.clone(),
        period: l.limit.period,
        period_id: l.period_id,
        period_start,
        hard: l.limit.hard,
        held: s.held,
        own_spent: s.own_spent,
        reserved: l.reserved,
    })
}
