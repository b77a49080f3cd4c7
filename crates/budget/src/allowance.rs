//! [`Allowances`]: how a process sharing limits with others keeps a share of
//! each, without I/O.
//!
//! Several processes enforce the same limits. Each holds a share of every
//! limit in its [`Ledger`] (see [`Ledger::share_limits`]) and decides each
//! request in memory against it; the shares come from a pool all processes
//! trust (a database row per limit and period) through [`Move`]s this state
//! machine decides and the caller carries out:
//!
//! - a **grant** asks the pool for up to `want`; the pool adds what it can
//!   (`granted + x <= limit`, one atomic conditional write) and records the
//!   move under its id, so that a grant sent twice (its answer was lost) is
//!   granted once;
//! - a **return** hands back what of a share is neither spent nor
//!   reserved; it leaves the ledger before it is sent, so that it can never
//!   be both spent here and granted elsewhere.
//!
//! Shares are refilled before they run dry, sized to a few seconds of this
//! process's own spend. When the pool grants less than asked, the limit is
//! nearly spent: the process turns **tight** on it, asks only for what each
//! request lacks, and the caller tells the others, who hand back what they
//! hold free ([`hand_back`](Allowances::hand_back)), so that no process is
//! refused while another sits on room it does not need.
//!
//! Safety rests on two facts: the pool never grants past the limit, and a
//! ledger never holds more against a share than the share. A process that
//! crashes keeps its shares counted as granted until it restarts and reads
//! them back from the pool's record of its moves
//! ([`Ledger::set_share`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::ledger::{Ledger, ShareView};
use crate::money::Money;

/// What a [`Move`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveKind {
    /// Asks the pool for up to this much.
    Grant {
        /// The most wanted.
        want: Money,
    },
    /// Hands this much back to the pool.
    Return {
        /// The amount.
        amount: Money,
    },
}

/// One move between this process's share of a limit and the shared pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Unique among every process's moves: the pool records each once.
    pub id: String,
    /// The limit's position in the ledger's limits.
    pub limit: usize,
    /// The period the move is for.
    pub period_id: i64,
    /// What it does.
    pub kind: MoveKind,
}

/// How shares are sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowanceConfig {
    /// A share is refilled to this many seconds of this process's own
    /// spend (default 5 s).
    pub refill: Duration,
    /// The least a refill asks for (default $0.01).
    pub min_grant: Money,
}

impl Default for AllowanceConfig {
    fn default() -> Self {
        AllowanceConfig {
            refill: Duration::from_secs(5),
            min_grant: Money::from_cents(1),
        }
    }
}

/// A limit in a period.
type Slot = (usize, i64);

/// Own spend of one share, observed over time, for the refill's size
/// (integer micro-dollars a second, smoothed).
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    /// (own spent, when) at the last observation.
    last: Option<(Money, SystemTime)>,
    /// Micro-dollars a second.
    per_sec: u64,
}

impl Rate {
    fn observe(&mut self, own_spent: Money, now: SystemTime) {
        let Some((spent, at)) = self.last else {
            self.last = Some((own_spent, now));
            return;
        };
        let ms = now.duration_since(at).unwrap_or_default().as_millis();
        if ms < 50 {
            return;
        }
        let delta = u128::from(own_spent.micros().saturating_sub(spent.micros()));
        let sample = u64::try_from(delta * 1000 / ms).unwrap_or(u64::MAX);
        self.per_sec = self.per_sec / 10 * 7 + sample / 10 * 3;
        self.last = Some((own_spent, now));
    }
}

/// The allowance protocol of one process (see the module's doc).
#[derive(Debug)]
pub struct Allowances {
    member: String,
    next: u64,
    cfg: AllowanceConfig,
    /// Moves sent and not answered, at most one per slot.
    in_flight: HashMap<Slot, Move>,
    /// Slots whose pool is nearly spent.
    tight: HashSet<Slot>,
    rates: HashMap<usize, Rate>,
    /// The largest shortfall a request met, per limit: a refill is never
    /// smaller than a few of those.
    largest_need: HashMap<usize, Money>,
}

impl Allowances {
    /// The protocol for one run of the process `member`. Moves are named
    /// `{member}-{n}`, `n` counting from 1, and a pool records each name
    /// once: `member` must be unique among the processes *and among one
    /// process's runs* (take a new one at every start, e.g. a stable name
    /// with a random suffix), or a restarted process would reuse the names
    /// of moves its previous run made and be answered with their amounts.
    pub fn new(member: impl Into<String>, cfg: AllowanceConfig) -> Self {
        Allowances {
            member: member.into(),
            next: 0,
            cfg,
            in_flight: HashMap::new(),
            tight: HashSet::new(),
            rates: HashMap::new(),
            largest_need: HashMap::new(),
        }
    }

    fn new_move(&mut self, slot: Slot, kind: MoveKind) -> Move {
        self.next += 1;
        let m = Move {
            id: format!("{}-{}", self.member, self.next),
            limit: slot.0,
            period_id: slot.1,
            kind,
        };
        self.in_flight.insert(slot, m.clone());
        m
    }

    /// What a refill of `share` asks for: a few seconds of own spend (but
    /// never more than a sixteenth of the limit, so that no process takes
    /// a large part of a small budget at once), and never less than the
    /// minimum or a few of the largest needs seen.
    fn refill_size(&self, share: &ShareView) -> Money {
        let rate = self.rates.get(&share.limit).map_or(0, |r| r.per_sec);
        let by_rate = u64::try_from(u128::from(rate) * self.cfg.refill.as_millis() / 1000)
            .unwrap_or(u64::MAX);
        let need = self
            .largest_need
            .get(&share.limit)
            .map_or(Money::ZERO, |n| {
                Money::from_micros(n.micros().saturating_mul(4))
            });
        Money::from_micros(by_rate)
            .max(self.cfg.min_grant)
            .max(need)
    }

    /// The moves to make now, given the shares as the ledger holds them:
    /// a refill for each share running low (unless its pool is nearly spent
    /// or a move is already out). Moves not answered are in
    /// [`in_flight`](Self::in_flight), to send again as they are.
    pub fn poll(&mut self, shares: &[ShareView], now: SystemTime) -> Vec<Move> {
        let current: HashSet<Slot> = shares.iter().map(|s| (s.limit, s.period_id)).collect();
        self.tight.retain(|slot| current.contains(slot));
        let mut moves = Vec::new();
        for share in shares {
            self.rates
                .entry(share.limit)
                .or_default()
                .observe(share.own_spent, now);
            let slot = (share.limit, share.period_id);
            if self.tight.contains(&slot) || self.in_flight.contains_key(&slot) {
                continue;
            }
            let target = self.refill_size(share);
            let free = share.free();
            if free.micros().saturating_mul(2) < target.micros() {
                let want = target.saturating_sub(free);
                moves.push(self.new_move(slot, MoveKind::Grant { want }));
            }
        }
        moves
    }

    /// A request is `short` of room in `share`: the grant to send now, or
    /// `None` when a move for this share is already out (send it again from
    /// [`in_flight`](Self::in_flight) and wait for its answer).
    pub fn cover(&mut self, share: &ShareView, short: Money) -> Option<Move> {
        let need = self.largest_need.entry(share.limit).or_default();
        *need = (*need).max(short);
        let slot = (share.limit, share.period_id);
        if self.in_flight.contains_key(&slot) {
            return None;
        }
        let want = if self.tight.contains(&slot) {
            short
        } else {
            short.saturating_add(self.refill_size(share))
        };
        Some(self.new_move(slot, MoveKind::Grant { want }))
    }

    /// The pool answered grant `id` with `granted`: it joins the share. Less
    /// than wanted means the pool is nearly spent: the share turns tight.
    /// An answer to no move out (a duplicate) changes nothing. Returns
    /// whether the grant came short (the caller then asks the others to
    /// hand back).
    pub fn granted(&mut self, ledger: &mut Ledger, id: &str, granted: Money) -> bool {
        let Some((slot, m)) = self.take(id) else {
            return false;
        };
        ledger.grant(slot.0, slot.1, granted);
        let MoveKind::Grant { want } = m.kind else {
            return false;
        };
        let short = granted < want;
        if short {
            self.tight.insert(slot);
        }
        short
    }

    /// The pool took back return `id`.
    pub fn returned(&mut self, id: &str) {
        self.take(id);
    }

    fn take(&mut self, id: &str) -> Option<(Slot, Move)> {
        let slot = *self
            .in_flight
            .iter()
            .find_map(|(slot, m)| (m.id == id).then_some(slot))?;
        self.in_flight.remove(&slot).map(|m| (slot, m))
    }

    /// Another process is short on `limit` in `period_id`: hands back all
    /// this share holds free (taken out of the ledger now), and turns tight
    /// on it. `None` when nothing is free or a move is already out.
    pub fn hand_back(&mut self, ledger: &mut Ledger, limit: usize, period_id: i64) -> Option<Move> {
        let slot = (limit, period_id);
        self.tight.insert(slot);
        if self.in_flight.contains_key(&slot) {
            return None;
        }
        let amount = ledger.give_back(limit, period_id, Money::MAX);
        (amount > Money::ZERO).then(|| self.new_move(slot, MoveKind::Return { amount }))
    }

    /// Hands back everything free in every share (before a shutdown).
    pub fn release_all(&mut self, ledger: &mut Ledger, now: SystemTime) -> Vec<Move> {
        let shares = ledger.shares(now);
        shares
            .iter()
            .filter_map(|s| self.hand_back(ledger, s.limit, s.period_id))
            .collect()
    }

    /// Moves sent and not yet answered: send them again, as they are, when
    /// their answer may have been lost.
    pub fn in_flight(&self) -> impl Iterator<Item = &Move> {
        self.in_flight.values()
    }

    /// Whether the pool of `limit` in `period_id` is nearly spent.
    pub fn is_tight(&self, limit: usize, period_id: i64) -> bool {
        self.tight.contains(&(limit, period_id))
    }
}
