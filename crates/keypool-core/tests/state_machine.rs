//! Random sequences of operations, with the pool's invariants checked after
//! every step, and every sequence run twice to check determinism.

use std::collections::HashMap;
use std::time::Duration;

use keypool_core::{
    AcquireOptions, KeyId, KeyPool, KeyState, Lease, NewKey, Outcome, PoolConfig, Strategy as Pick,
};
use proptest::prelude::*;

use crate::harness::{T0, secret};

const LEASE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
enum Op {
    Add {
        tier: u8,
        tokens_per_day: Option<u64>,
        requests_per_day: Option<u32>,
        rpm: Option<u32>,
        max_in_flight: Option<u32>,
    },
    Acquire {
        estimate: u64,
        exclude_first: bool,
    },
    Report {
        lease: usize,
        outcome: u8,
        tokens: u64,
    },
    Advance {
        ms: u64,
    },
    Step,
    Rotate {
        key: usize,
        grace_s: u64,
    },
    ScheduleRevoke {
        key: usize,
        in_s: u64,
    },
    Disable {
        key: usize,
    },
    Enable {
        key: usize,
    },
    Remove {
        key: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..3, prop::option::of(100u64..5_000), prop::option::of(1u32..40), prop::option::of(1u32..10), prop::option::of(1u32..4))
            .prop_map(|(tier, tokens_per_day, requests_per_day, rpm, max_in_flight)| Op::Add { tier, tokens_per_day, requests_per_day, rpm, max_in_flight }),
        8 => (prop_oneof![Just(0u64), 1u64..500], any::<bool>()).prop_map(|(estimate, exclude_first)| Op::Acquire { estimate, exclude_first }),
        8 => (any::<usize>(), 0u8..10, 0u64..800).prop_map(|(lease, outcome, tokens)| Op::Report { lease, outcome, tokens }),
        4 => prop_oneof![1u64..2_000, 1u64..120_000, 1u64..40_000_000].prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Step),
        1 => (any::<usize>(), 0u64..3_600).prop_map(|(key, grace_s)| Op::Rotate { key, grace_s }),
        1 => (any::<usize>(), 0u64..3_600).prop_map(|(key, in_s)| Op::ScheduleRevoke { key, in_s }),
        1 => any::<usize>().prop_map(|key| Op::Disable { key }),
        1 => any::<usize>().prop_map(|key| Op::Enable { key }),
        1 => any::<usize>().prop_map(|key| Op::Remove { key }),
    ]
}

fn outcome(kind: u8, tokens: u64) -> Outcome {
    match kind {
        0..=2 => Outcome::success(tokens, tokens / 3, Duration::from_millis(tokens)),
        3 => Outcome::RateLimited {
            retry_after: tokens
                .is_multiple_of(2)
                .then(|| Duration::from_millis(tokens * 50)),
        },
        4 => Outcome::QuotaExhausted,
        5 => {
            if tokens.is_multiple_of(4) {
                Outcome::Unauthorized
            } else {
                Outcome::Forbidden
            }
        }
        6 => Outcome::ServerError,
        7 => {
            if tokens.is_multiple_of(2) {
                Outcome::Timeout
            } else {
                Outcome::Connect
            }
        }
        8 => Outcome::ClientError,
        _ => Outcome::Cancelled,
    }
}

struct Held {
    lease: Lease,
    reserved: u64,
}

/// The pool under test and what the test knows about it.
struct Model {
    pool: KeyPool,
    now: keypool_core::Timestamp,
    keys: Vec<KeyId>,
    held: Vec<Held>,
    secrets: u64,
    /// (key, minute) -> leases taken in that minute, to check per-minute limits.
    per_minute: HashMap<(KeyId, u64), u32>,
    log: Vec<String>,
}

impl Model {
    fn new(strategy: Pick) -> Self {
        let pool = KeyPool::new(PoolConfig {
            strategy,
            seed: 3,
            lease_timeout: LEASE_TIMEOUT,
            ..PoolConfig::default()
        })
        .unwrap();
        Model {
            pool,
            now: T0,
            keys: Vec::new(),
            held: Vec::new(),
            secrets: 0,
            per_minute: HashMap::new(),
            log: Vec::new(),
        }
    }

    fn pick(&self, i: usize) -> Option<KeyId> {
        (!self.keys.is_empty()).then(|| self.keys[i % self.keys.len()])
    }

    fn add(
        &mut self,
        tier: u8,
        tpd: Option<u64>,
        rpd: Option<u32>,
        rpm: Option<u32>,
        mif: Option<u32>,
    ) {
        self.secrets += 1;
        let mut k = NewKey::new(format!("k{}", self.secrets), secret(self.secrets)).tier(tier);
        if let Some(v) = tpd {
            k = k.tokens_per_day(v);
        }
        if let Some(v) = rpd {
            k = k.requests_per_day(v);
        }
        if let Some(v) = rpm {
            k = k.requests_per_minute(v);
        }
        if let Some(v) = mif {
            k = k.max_in_flight(v);
        }
        self.keys.push(self.pool.add(k, self.now).unwrap());
    }

    /// Tokens reserved by live leases of `id`.
    fn reserved_of(&self, id: KeyId) -> u64 {
        let now = self.pool.now();
        self.held
            .iter()
            .filter(|h| {
                h.lease.key() == id && now < h.lease.acquired_at().saturating_add(LEASE_TIMEOUT)
            })
            .map(|h| h.reserved)
            .sum()
    }

    fn acquire(&mut self, estimate: u64, exclude_first: bool) {
        self.pool.handle_timeout(self.now);
        let before = self.pool.snapshot();
        let exclude: Vec<KeyId> = if exclude_first {
            self.keys.first().copied().into_iter().collect()
        } else {
            Vec::new()
        };
        let opts = AcquireOptions {
            estimated_tokens: estimate,
            exclude: &exclude,
            ..AcquireOptions::default()
        };
        match self.pool.acquire_with(self.now, &opts) {
            Ok(lease) => {
                self.check_lease(&before, &lease, &exclude, estimate);
                self.log.push(format!(
                    "lease {:?} {:?} probe={}",
                    lease.id(),
                    lease.key(),
                    lease.is_probe()
                ));
                self.held.push(Held {
                    lease,
                    reserved: estimate,
                });
            }
            Err(e) => {
                // Every key is accounted for by exactly one reason.
                assert_eq!(e.unavailable.total() as usize, before.keys.len(), "{e}");
                self.log.push(e.to_string());
            }
        }
    }

    /// What a lease must be: a selectable key in the best class, not
    /// excluded, at most one probe, within every limit.
    fn check_lease(
        &mut self,
        before: &keypool_core::PoolSnapshot,
        lease: &Lease,
        exclude: &[KeyId],
        estimate: u64,
    ) {
        let k = before
            .keys
            .iter()
            .find(|k| k.id == lease.key())
            .expect("leased key was in the pool");
        assert!(k.selectable, "handed out a key that could not serve: {k:?}");
        assert!(!exclude.contains(&k.id), "handed out an excluded key");
        match k.state {
            KeyState::Active | KeyState::Draining { .. } => assert!(!lease.is_probe()),
            KeyState::HalfOpen => {
                assert!(lease.is_probe());
                let now = self.pool.now();
                assert!(
                    !self.held.iter().any(|h| h.lease.key() == k.id
                        && h.lease.is_probe()
                        && now < h.lease.acquired_at().saturating_add(LEASE_TIMEOUT)),
                    "two probes at once"
                );
            }
            s => panic!("handed out a key in state {s:?}"),
        }
        // Lowest class first: no selectable, non-excluded key in a better class.
        let class =
            |k: &keypool_core::KeySnapshot| (matches!(k.state, KeyState::Draining { .. }), k.tier);
        for other in &before.keys {
            if other.selectable && !exclude.contains(&other.id) && class(other) < class(k) {
                let fits = other.limits.tokens_per_day.is_none_or(|l| {
                    other.tokens_today + self.reserved_of(other.id) + estimate <= l
                });
                assert!(
                    !fits || other.limits.tokens_per_minute.is_some(),
                    "skipped a better class: {other:?} for {k:?}"
                );
            }
        }
        self.check_limits(k);
    }

    fn check_limits(&mut self, k: &keypool_core::KeySnapshot) {
        let after = self.pool.key_snapshot(k.id).unwrap();
        if let Some(l) = k.limits.requests_per_day {
            assert!(after.requests_today <= l);
        }
        if let Some(l) = k.limits.tokens_per_day {
            let reserved = self.reserved_of(k.id);
            assert!(
                k.tokens_today + reserved < (9 * l).div_ceil(10),
                "over the soft token limit: {k:?} reserved {reserved}"
            );
        }
        let minute = self.pool.now().as_unix_millis() / 60_000;
        let n = self.per_minute.entry((k.id, minute)).or_default();
        *n += 1;
        if let Some(l) = k.limits.requests_per_minute {
            assert!(*n <= l, "per-minute limit exceeded");
        }
        if let Some(l) = k.limits.max_in_flight {
            assert!(after.in_flight <= l);
        }
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        match op {
            Op::Add {
                tier,
                tokens_per_day,
                requests_per_day,
                rpm,
                max_in_flight,
            } => self.add(
                *tier,
                *tokens_per_day,
                *requests_per_day,
                *rpm,
                *max_in_flight,
            ),
            Op::Acquire {
                estimate,
                exclude_first,
            } => self.acquire(*estimate, *exclude_first),
            Op::Report {
                lease,
                outcome: kind,
                tokens,
            } => {
                if !self.held.is_empty() {
                    let h = self.held.swap_remove(lease % self.held.len());
                    let r = self.pool.report(h.lease, outcome(*kind, *tokens), now);
                    self.log.push(format!("report {r:?}"));
                }
            }
            Op::Advance { ms } => {
                self.now = now.saturating_add(Duration::from_millis(*ms));
                self.pool.handle_timeout(self.now);
            }
            Op::Step => {
                if let Some(t) = self.pool.poll_timeout() {
                    self.now = now.max(t);
                    self.pool.handle_timeout(self.now);
                }
            }
            other => self.operate(other),
        }
    }

    /// The operator's commands.
    fn operate(&mut self, op: &Op) {
        let now = self.now;
        match op {
            Op::Rotate { key, grace_s } => {
                if let Some(k) = self.pick(*key) {
                    self.secrets += 1;
                    let grace = Duration::from_secs(*grace_s);
                    match self.pool.rotate(k, secret(self.secrets), grace, now) {
                        Ok(new) => self.keys.push(new),
                        Err(e) => self.log.push(e.to_string()),
                    }
                }
            }
            Op::ScheduleRevoke { key, in_s } => {
                if let Some(k) = self.pick(*key) {
                    let at = now.saturating_add(Duration::from_secs(*in_s));
                    let r = self.pool.schedule_revoke(k, at, now);
                    self.log.push(format!("{r:?}"));
                }
            }
            Op::Disable { key } => {
                if let Some(k) = self.pick(*key) {
                    let r = self.pool.disable(k, now);
                    self.log.push(format!("{r:?}"));
                }
            }
            Op::Enable { key } => {
                if let Some(k) = self.pick(*key) {
                    let r = self.pool.enable(k, now);
                    self.log.push(format!("{r:?}"));
                }
            }
            Op::Remove { key } => {
                if let Some(k) = self.pick(*key) {
                    let r = self.pool.remove(k, now);
                    self.log.push(format!("{r:?}"));
                }
            }
            _ => unreachable!("apply handles the others"),
        }
    }

    /// What holds after every step.
    fn check_invariants(&mut self) {
        self.pool.handle_timeout(self.now);
        let next = self.pool.poll_timeout();
        assert!(
            next.is_none_or(|t| t > self.pool.now()),
            "poll_timeout {next:?} in the past at {}",
            self.pool.now()
        );
        let snap = self.pool.snapshot();
        for k in &snap.keys {
            let live = self
                .held
                .iter()
                .filter(|h| {
                    h.lease.key() == k.id
                        && self.pool.now() < h.lease.acquired_at().saturating_add(LEASE_TIMEOUT)
                })
                .count();
            assert_eq!(k.in_flight as usize, live, "in-flight count of {}", k.name);
            if let KeyState::Draining { revoke_at } = k.state {
                assert!(
                    revoke_at > self.pool.now(),
                    "a key past its revocation is still in the pool"
                );
            }
            if let Some(l) = k.limits.requests_per_day {
                assert!(k.requests_today <= l);
            }
        }
        while let Some(e) = self.pool.poll_event() {
            self.log.push(format!("{e:?}"));
        }
    }
}

/// Runs the ops, checking invariants; returns a log of everything observable.
fn run(strategy: Pick, ops: &[Op]) -> Vec<String> {
    let mut m = Model::new(strategy);
    for op in ops {
        m.apply(op);
        m.check_invariants();
    }
    // Completing every lease brings in-flight counts back to zero.
    for h in m.held.drain(..) {
        m.pool.report(h.lease, Outcome::Cancelled, m.now);
    }
    assert_eq!(m.pool.outstanding_leases(), 0);
    assert!(m.pool.snapshot().keys.iter().all(|k| k.in_flight == 0));
    m.log.push(m.pool.status_report());
    m.log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_any_sequence(
        strategy in prop_oneof![Just(Pick::LeastUsed), Just(Pick::RoundRobin), Just(Pick::Weighted), Just(Pick::PowerOfTwo)],
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let first = run(strategy, &ops);
        let second = run(strategy, &ops);
        prop_assert_eq!(first, second, "the same inputs must give the same outputs");
    }
}
