//! The allowance protocol, simulated: processes sharing one limit through a
//! pool, with random interleavings, lost and repeated messages, and
//! crashes. Whatever happens, what they spend together never passes the
//! limit; and when they stop, what they spent and what they hold free adds
//! up to what the pool granted.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use budget::{
    AllowanceConfig, Allowances, BudgetError, Ledger, LedgerConfig, Limit, Money, Move, MoveKind,
    Period, Reservation, Scope, Scopes, Tokens,
};
use proptest::prelude::*;

use crate::t0;

/// The shared pool: one row per (limit, period), and the record of moves.
#[derive(Debug, Default)]
struct Pool {
    limit: u64,
    granted: HashMap<(usize, i64), u64>,
    /// Move id → (member, signed amount).
    moves: HashMap<String, (usize, i64)>,
}

impl Pool {
    /// Applies a move once; returns its amount (what was granted).
    fn apply(&mut self, member: usize, m: &Move) -> u64 {
        if let Some((_, amount)) = self.moves.get(&m.id) {
            return amount.unsigned_abs();
        }
        let g = self.granted.entry((m.limit, m.period_id)).or_default();
        let amount = match m.kind {
            MoveKind::Grant { want } => {
                let x = want.micros().min(self.limit - *g);
                *g += x;
                i64::try_from(x).unwrap()
            }
            MoveKind::Return { amount } => {
                let x = amount.micros().min(*g);
                *g -= x;
                -i64::try_from(x).unwrap()
            }
        };
        self.moves.insert(m.id.clone(), (member, amount));
        amount.unsigned_abs()
    }

    /// What `member` holds by its moves (read back after a restart).
    fn held_by(&self, member: usize) -> u64 {
        let sum: i64 = self
            .moves
            .values()
            .filter(|(m, _)| *m == member)
            .map(|(_, a)| *a)
            .sum();
        u64::try_from(sum).unwrap()
    }
}

/// One process: its ledger, its protocol, its requests in flight, and what
/// it recorded durably (its usage records: what it spent).
struct Member {
    ledger: Ledger,
    protocol: Allowances,
    requests: Vec<(Reservation, u64)>,
    recorded: u64,
    incarnation: u32,
}

const PRICE_PER_MTOK: u64 = 1_000_000; // $1 per million tokens: a token is 1 µ$

fn new_ledger(limit: u64) -> Ledger {
    let mut prices = crate::prices();
    prices.set(
        "m",
        budget::ModelPrice::blended(Money::from_micros(PRICE_PER_MTOK), None),
    );
    let mut l = Ledger::new(
        LedgerConfig::default(),
        prices,
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_micros(limit),
        )],
    )
    .unwrap();
    l.share_limits();
    l
}

impl Member {
    fn new(i: usize, incarnation: u32, limit: u64) -> Self {
        Member {
            ledger: new_ledger(limit),
            protocol: Allowances::new(
                format!("m{i}.{incarnation}"),
                AllowanceConfig {
                    refill: Duration::from_secs(5),
                    min_grant: Money::from_micros(50),
                },
            ),
            requests: Vec::new(),
            recorded: 0,
            incarnation,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Member asks to reserve `worst` tokens and will spend `actual` of them.
    Request {
        member: usize,
        worst: u64,
        actual: u64,
    },
    /// Member settles its oldest request.
    Settle { member: usize },
    /// Member decides its moves; each is delivered or lost, and its answer
    /// delivered or lost.
    Poll {
        member: usize,
        deliver: bool,
        answer: bool,
    },
    /// Member resends what is in flight.
    Resend { member: usize, answer: bool },
    /// Member is asked to hand back (another is short).
    HandBack { member: usize, deliver: bool },
    /// Member crashes and restarts from the pool's record and its own.
    Crash { member: usize },
}

fn step() -> impl Strategy<Value = Step> {
    let member = 0usize..3;
    prop_oneof![
        4 => (member.clone(), 1u64..400, 0u64..=100).prop_map(|(member, worst, pct)| Step::Request {
            member,
            worst,
            actual: worst * pct / 100,
        }),
        3 => member.clone().prop_map(|member| Step::Settle { member }),
        3 => (member.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(member, deliver, answer)| Step::Poll { member, deliver, answer }),
        1 => (member.clone(), any::<bool>()).prop_map(|(member, answer)| Step::Resend { member, answer }),
        1 => (member.clone(), any::<bool>()).prop_map(|(member, deliver)| Step::HandBack { member, deliver }),
        1 => member.prop_map(|member| Step::Crash { member }),
    ]
}

struct World {
    pool: Pool,
    members: Vec<Member>,
    now: SystemTime,
}

impl World {
    fn new(limit: u64) -> Self {
        World {
            pool: Pool {
                limit,
                ..Pool::default()
            },
            members: (0..3).map(|i| Member::new(i, 0, limit)).collect(),
            now: t0(),
        }
    }

    /// Sends `m` for member `i`; the answer reaches it if `answer`.
    fn send(&mut self, i: usize, m: &Move, answer: bool) {
        let amount = self.pool.apply(i, m);
        if !answer {
            return;
        }
        let member = &mut self.members[i];
        match m.kind {
            MoveKind::Grant { .. } => {
                member
                    .protocol
                    .granted(&mut member.ledger, &m.id, Money::from_micros(amount));
            }
            MoveKind::Return { .. } => member.protocol.returned(&m.id),
        }
    }

    fn request(&mut self, i: usize, worst: u64, actual: u64) {
        let now = self.now;
        let member = &mut self.members[i];
        let scopes = Scopes::default();
        match member.ledger.reserve(&scopes, "m", worst, 0, now) {
            Ok(r) => member.requests.push((r, actual)),
            Err(BudgetError::ShareSpent { limit, short, .. }) => {
                let shares = member.ledger.shares(now);
                let share = shares.iter().find(|s| s.limit == limit).unwrap().clone();
                if let Some(m) = member.protocol.cover(&share, short) {
                    self.send(i, &m, true);
                }
            }
            Err(BudgetError::BudgetExceeded { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }

    fn apply(&mut self, s: Step) {
        self.now += Duration::from_millis(37);
        let now = self.now;
        match s {
            Step::Request {
                member,
                worst,
                actual,
            } => self.request(member, worst, actual),
            Step::Settle { member } => {
                let m = &mut self.members[member];
                if !m.requests.is_empty() {
                    let (r, actual) = m.requests.remove(0);
                    let cost = m.ledger.settle(r, Tokens::new(actual, 0), now).cost;
                    m.recorded += cost.micros();
                }
            }
            Step::Poll {
                member,
                deliver,
                answer,
            } => {
                let m = &mut self.members[member];
                let shares = m.ledger.shares(now);
                for mv in m.protocol.poll(&shares, now) {
                    if deliver {
                        self.send(member, &mv, answer);
                    }
                }
            }
            Step::Resend { member, answer } => {
                let out: Vec<Move> = self.members[member].protocol.in_flight().cloned().collect();
                for mv in out {
                    self.send(member, &mv, answer);
                }
            }
            Step::HandBack { member, deliver } => {
                let m = &mut self.members[member];
                let period = m.ledger.shares(now)[0].period_id;
                if let Some(mv) = m.protocol.hand_back(&mut m.ledger, 0, period)
                    && deliver
                {
                    self.send(member, &mv, true);
                }
            }
            Step::Crash { member } => self.crash(member),
        }
    }

    /// Requests in flight die with the process (never answered, never
    /// recorded); the restarted process reads back what it holds and what
    /// it spent.
    fn crash(&mut self, i: usize) {
        let limit = self.pool.limit;
        let old = &self.members[i];
        let (recorded, incarnation) = (old.recorded, old.incarnation + 1);
        let mut fresh = Member::new(i, incarnation, limit);
        fresh.recorded = recorded;
        let period = fresh.ledger.shares(self.now)[0].period_id;
        fresh.ledger.set_share(
            0,
            period,
            Money::from_micros(self.pool.held_by(i)),
            Money::from_micros(recorded),
        );
        self.members[i] = fresh;
    }

    fn spent(&self) -> u64 {
        self.members.iter().map(|m| m.recorded).sum()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn spend_never_passes_a_shared_limit(
        limit in 500u64..20_000,
        steps in proptest::collection::vec(step(), 1..400),
    ) {
        let mut w = World::new(limit);
        for s in steps {
            w.apply(s);
            prop_assert!(w.spent() <= limit, "spent {} of {limit}", w.spent());
            let granted: u64 = w.pool.granted.values().sum();
            prop_assert!(granted <= limit, "granted {granted} of {limit}");
        }
        // Settle what is left: still within the limit.
        for i in 0..3 {
            while !w.members[i].requests.is_empty() {
                w.apply(Step::Settle { member: i });
            }
        }
        prop_assert!(w.spent() <= limit);
    }
}

/// Three processes, one short: the others hand back, and it is served
/// until the pool is spent to the last request it can pay for.
#[test]
fn a_short_process_is_served_from_what_the_others_hand_back() {
    let mut w = World::new(10_000);
    let now = w.now;
    // Each of the three takes a refill of its own.
    for i in 0..3 {
        w.request(i, 100, 100);
        let shares = w.members[i].ledger.shares(now);
        for mv in w.members[i].protocol.poll(&shares, now) {
            w.send(i, &mv, true);
        }
    }
    // Member 0 alone spends: when the pool is short, the others hand back.
    let mut served = 0;
    for _ in 0..400 {
        let before = w.members[0].requests.len();
        w.request(0, 100, 100);
        if w.members[0].requests.len() == before {
            // Short: the others hand back, then it asks again.
            for j in 1..3 {
                let period = w.members[j].ledger.shares(now)[0].period_id;
                let m = &mut w.members[j];
                if let Some(mv) = m.protocol.hand_back(&mut m.ledger, 0, period) {
                    w.send(j, &mv, true);
                }
            }
            w.request(0, 100, 100);
        }
        if w.members[0].requests.len() > before {
            served += 1;
            w.apply(Step::Settle { member: 0 });
        }
    }
    let spent = w.spent();
    assert!(spent <= 10_000);
    // Members 1 and 2 never reserved: member 0 spent all, to within one
    // request.
    assert!(
        spent >= 9_900,
        "only {spent} of 10000 spent ({served} served)"
    );
}
