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
            retry_after: (tokens % 2 == 0).then(|| Duration::from_millis(tokens * 50)),
        },
        4 => Outcome::QuotaExhausted,
        5 => {
            if tokens % 4 == 0 {
                Outcome::Unauthorized
            } else {
                Outcome::Forbidden
            }
        }
        6 => Outcome::ServerError,
        7 => {
            if tokens % 2 == 0 {
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

/// Runs the ops, checking invariants; returns a log of everything observable.
fn run(strategy: Pick, ops: &[Op]) -> Vec<String> {
    let mut pool = KeyPool::new(PoolConfig {
        strategy,
        seed: 3,
        lease_timeout: LEASE_TIMEOUT,
        ..PoolConfig::default()
    })
    .unwrap();
    let mut now = T0;
    let mut keys: Vec<KeyId> = Vec::new();
    let mut held: Vec<Held> = Vec::new();
    let mut secrets = 0u64;
    // (key, minute) -> leases taken in that minute, to check per-minute limits.
    let mut per_minute: HashMap<(KeyId, u64), u32> = HashMap::new();
    let mut log = Vec::new();
    let pick = |keys: &[KeyId], i: usize| (!keys.is_empty()).then(|| keys[i % keys.len()]);

    for op in ops {
        match op {
            Op::Add {
                tier,
                tokens_per_day,
                requests_per_day,
                rpm,
                max_in_flight,
            } => {
                secrets += 1;
                let mut k = NewKey::new(format!("k{secrets}"), secret(secrets)).tier(*tier);
                if let Some(v) = tokens_per_day {
                    k = k.tokens_per_day(*v);
                }
                if let Some(v) = requests_per_day {
                    k = k.requests_per_day(*v);
                }
                if let Some(v) = rpm {
                    k = k.requests_per_minute(*v);
                }
                if let Some(v) = max_in_flight {
                    k = k.max_in_flight(*v);
                }
                keys.push(pool.add(k, now).unwrap());
            }
            Op::Acquire {
                estimate,
                exclude_first,
            } => {
                pool.handle_timeout(now);
                let before = pool.snapshot();
                let exclude: Vec<KeyId> = if *exclude_first {
                    keys.first().copied().into_iter().collect()
                } else {
                    Vec::new()
                };
                let opts = AcquireOptions {
                    estimated_tokens: *estimate,
                    exclude: &exclude,
                };
                match pool.acquire_with(now, &opts) {
                    Ok(lease) => {
                        let k = before
                            .keys
                            .iter()
                            .find(|k| k.id == lease.key())
                            .expect("leased key was in the pool");
                        let now_seen = pool.now();
                        let reserved_of = |id: KeyId| -> u64 {
                            held.iter()
                                .filter(|h| {
                                    h.lease.key() == id
                                        && now_seen
                                            < h.lease.acquired_at().saturating_add(LEASE_TIMEOUT)
                                })
                                .map(|h| h.reserved)
                                .sum()
                        };
                        assert!(k.selectable, "handed out a key that could not serve: {k:?}");
                        assert!(!exclude.contains(&k.id), "handed out an excluded key");
                        match k.state {
                            KeyState::Active | KeyState::Draining { .. } => {
                                assert!(!lease.is_probe());
                            }
                            KeyState::HalfOpen => {
                                assert!(lease.is_probe());
                                assert!(
                                    !held.iter().any(|h| h.lease.key() == k.id
                                        && h.lease.is_probe()
                                        && pool.now()
                                            < h.lease.acquired_at().saturating_add(LEASE_TIMEOUT)),
                                    "two probes at once"
                                );
                            }
                            s => panic!("handed out a key in state {s:?}"),
                        }
                        // Lowest class first: no selectable, non-excluded key in a better class.
                        let class = |k: &keypool_core::KeySnapshot| {
                            (matches!(k.state, KeyState::Draining { .. }), k.tier)
                        };
                        for other in &before.keys {
                            if other.selectable
                                && !exclude.contains(&other.id)
                                && class(other) < class(k)
                            {
                                let fits = other.limits.tokens_per_day.is_none_or(|l| {
                                    other.tokens_today + reserved_of(other.id) + estimate <= l
                                });
                                assert!(
                                    !fits || other.limits.tokens_per_minute.is_some(),
                                    "skipped a better class: {other:?} for {k:?}"
                                );
                            }
                        }
                        // Limits.
                        let after = pool.key_snapshot(k.id).unwrap();
                        if let Some(l) = k.limits.requests_per_day {
                            assert!(after.requests_today <= l);
                        }
                        if let Some(l) = k.limits.tokens_per_day {
                            let reserved = reserved_of(k.id);
                            assert!(
                                k.tokens_today + reserved < (9 * l).div_ceil(10),
                                "over the soft token limit: {k:?} reserved {reserved}"
                            );
                        }
                        let minute = pool.now().as_unix_millis() / 60_000;
                        let n = per_minute.entry((k.id, minute)).or_default();
                        *n += 1;
                        if let Some(l) = k.limits.requests_per_minute {
                            assert!(*n <= l, "per-minute limit exceeded");
                        }
                        if let Some(l) = k.limits.max_in_flight {
                            assert!(after.in_flight <= l);
                        }
                        log.push(format!(
                            "lease {:?} {:?} probe={}",
                            lease.id(),
                            lease.key(),
                            lease.is_probe()
                        ));
                        held.push(Held {
                            lease,
                            reserved: *estimate,
                        });
                    }
                    Err(e) => {
                        // Every key is accounted for by exactly one reason.
                        assert_eq!(e.unavailable.total() as usize, before.keys.len(), "{e}");
                        log.push(e.to_string());
                    }
                }
            }
            Op::Report {
                lease,
                outcome: kind,
                tokens,
            } => {
                if !held.is_empty() {
                    let h = held.swap_remove(lease % held.len());
                    let r = pool.report(h.lease, outcome(*kind, *tokens), now);
                    log.push(format!("report {r:?}"));
                }
            }
            Op::Advance { ms } => {
                now = now.saturating_add(Duration::from_millis(*ms));
                pool.handle_timeout(now);
            }
            Op::Step => {
                if let Some(t) = pool.poll_timeout() {
                    now = now.max(t);
                    pool.handle_timeout(now);
                }
            }
            Op::Rotate { key, grace_s } => {
                if let Some(k) = pick(&keys, *key) {
                    secrets += 1;
                    match pool.rotate(k, secret(secrets), Duration::from_secs(*grace_s), now) {
                        Ok(new) => keys.push(new),
                        Err(e) => log.push(e.to_string()),
                    }
                }
            }
            Op::ScheduleRevoke { key, in_s } => {
                if let Some(k) = pick(&keys, *key) {
                    log.push(format!(
                        "{:?}",
                        pool.schedule_revoke(
                            k,
                            now.saturating_add(Duration::from_secs(*in_s)),
                            now
                        )
                    ));
                }
            }
            Op::Disable { key } => {
                if let Some(k) = pick(&keys, *key) {
                    log.push(format!("{:?}", pool.disable(k, now)));
                }
            }
            Op::Enable { key } => {
                if let Some(k) = pick(&keys, *key) {
                    log.push(format!("{:?}", pool.enable(k, now)));
                }
            }
            Op::Remove { key } => {
                if let Some(k) = pick(&keys, *key) {
                    log.push(format!("{:?}", pool.remove(k, now)));
                }
            }
        }
        // After every step.
        pool.handle_timeout(now);
        let next = pool.poll_timeout();
        assert!(
            next.is_none_or(|t| t > pool.now()),
            "poll_timeout {next:?} in the past at {}",
            pool.now()
        );
        let snap = pool.snapshot();
        for k in &snap.keys {
            let live = held
                .iter()
                .filter(|h| {
                    h.lease.key() == k.id
                        && pool.now() < h.lease.acquired_at().saturating_add(LEASE_TIMEOUT)
                })
                .count();
            assert_eq!(k.in_flight as usize, live, "in-flight count of {}", k.name);
            if let KeyState::Draining { revoke_at } = k.state {
                assert!(
                    revoke_at > pool.now(),
                    "a key past its revocation is still in the pool"
                );
            }
            if let Some(l) = k.limits.requests_per_day {
                assert!(k.requests_today <= l);
            }
        }
        while let Some(e) = pool.poll_event() {
            log.push(format!("{e:?}"));
        }
    }
    // Completing every lease brings in-flight counts back to zero.
    for h in held.drain(..) {
        pool.report(h.lease, Outcome::Cancelled, now);
    }
    assert_eq!(pool.outstanding_leases(), 0);
    assert!(pool.snapshot().keys.iter().all(|k| k.in_flight == 0));
    log.push(pool.status_report());
    log
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
