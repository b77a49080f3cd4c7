use std::collections::HashMap;
use std::time::Duration;

use keypool_core::{AcquireOptions, KeyId, NewKey, Outcome, PoolConfig, Strategy, Timestamp};

use crate::harness::{Sim, T0, mins, ok, secret, secs};

const ALL: [Strategy; 4] = [
    Strategy::LeastUsed,
    Strategy::RoundRobin,
    Strategy::Weighted,
    Strategy::PowerOfTwo,
];

fn sim(strategy: Strategy) -> Sim {
    Sim::with(PoolConfig {
        strategy,
        ..PoolConfig::default()
    })
}

#[test]
fn least_used_picks_the_key_with_the_fewest_tokens_today() {
    let mut sim = sim(Strategy::LeastUsed);
    let [a, b, c] = sim.keys(["A", "B", "C"]);
    assert_eq!(sim.serve(ok(300, 0)), a);
    assert_eq!(sim.serve(ok(100, 0)), b);
    assert_eq!(sim.serve(ok(200, 0)), c);
    assert_eq!(sim.serve(ok(150, 0)), b); // B 100 < C 200 < A 300
    assert_eq!(sim.serve(ok(1, 0)), c); // C 200 < B 250
}

#[test]
fn least_used_spreads_concurrent_requests_by_in_flight_and_reservations() {
    let mut sim = sim(Strategy::LeastUsed);
    let [a, b] = sim.keys(["A", "B"]);
    let first = sim.acquire().unwrap();
    let second = sim.acquire().unwrap();
    assert_eq!(
        (first.key(), second.key()),
        (a, b),
        "ties go to fewer in flight"
    );
    let opts = AcquireOptions {
        estimated_tokens: 1_000,
        exclude: &[],
        ..AcquireOptions::default()
    };
    sim.report(first, ok(10, 0));
    sim.report(second, ok(20, 0));
    let big = sim.pool.acquire_with(sim.now, &opts).unwrap();
    assert_eq!(big.key(), a);
    let next = sim.pool.acquire(sim.now).unwrap();
    assert_eq!(next.key(), b, "A has 1000 tokens reserved");
    sim.report(big, ok(1, 1));
    sim.report(next, ok(1, 1));
}

#[test]
fn round_robin_among_the_keys_with_the_fewest_requests_today() {
    let mut sim = sim(Strategy::RoundRobin);
    let [a, b, c] = sim.keys(["A", "B", "C"]);
    let order: Vec<KeyId> = (0..6).map(|_| sim.serve(ok(1, 1))).collect();
    assert_eq!(order, vec![a, b, c, a, b, c]);
    // A key that missed turns (cooling down) catches up first: fewest requests today.
    let lease = sim.acquire().unwrap();
    assert_eq!(lease.key(), a);
    sim.report(
        lease,
        Outcome::RateLimited {
            retry_after: Some(secs(10)),
        },
    );
    let order: Vec<KeyId> = (0..4).map(|_| sim.serve(ok(1, 1))).collect();
    assert_eq!(order, vec![b, c, b, c]);
    sim.advance(secs(10));
    let order: Vec<KeyId> = (0..4).map(|_| sim.serve(ok(1, 1))).collect();
    assert_eq!(order, vec![a, a, b, c], "A had 3 requests today, B and C 4");
}

#[test]
fn weighted_round_robin_is_proportional_and_smooth() {
    let mut sim = sim(Strategy::Weighted);
    let a = sim.add(NewKey::new("A", secret(1)).weight(5));
    let b = sim.add(NewKey::new("B", secret(2)).weight(1));
    let c = sim.add(NewKey::new("C", secret(3)).weight(1));
    let picks: Vec<KeyId> = (0..700).map(|_| sim.serve(ok(1, 1))).collect();
    let count = |k| picks.iter().filter(|&&p| p == k).count();
    assert_eq!((count(a), count(b), count(c)), (500, 100, 100));
    // Smooth: in every window of 7 picks each key has its exact share.
    for w in picks.chunks(7) {
        assert_eq!(w.iter().filter(|&&p| p == a).count(), 5, "{w:?}");
    }
    // Deterministic.
    let mut again = self::sim(Strategy::Weighted);
    again.add(NewKey::new("A", secret(1)).weight(5));
    again.add(NewKey::new("B", secret(2)).weight(1));
    again.add(NewKey::new("C", secret(3)).weight(1));
    let repeat: Vec<KeyId> = (0..700).map(|_| again.serve(ok(1, 1))).collect();
    assert_eq!(picks, repeat);
}

#[test]
fn weighted_key_rejoining_gets_no_burst_of_catch_up() {
    let mut sim = sim(Strategy::Weighted);
    let [a, b] = sim.keys(["A", "B"]);
    let lease = sim.acquire().unwrap();
    assert_eq!(lease.key(), a);
    sim.report(
        lease,
        Outcome::RateLimited {
            retry_after: Some(secs(60)),
        },
    );
    for _ in 0..100 {
        assert_eq!(sim.serve(ok(1, 1)), b);
    }
    sim.advance(secs(60));
    let picks: Vec<KeyId> = (0..10).map(|_| sim.serve(ok(1, 1))).collect();
    assert!(picks.iter().filter(|&&p| p == a).count() <= 6, "{picks:?}");
}

#[test]
fn power_of_two_choices_prefers_fewer_in_flight_and_lower_latency() {
    let mut sim = Sim::with(PoolConfig {
        strategy: Strategy::PowerOfTwo,
        seed: 42,
        ..PoolConfig::default()
    });
    let [fast, slow] = sim.keys(["fast", "slow"]);
    // Teach the pool the latencies.
    for _ in 0..50 {
        let l = sim.acquire().unwrap();
        let latency = if l.key() == fast { 50 } else { 2_000 };
        sim.report(l, Outcome::success(1, 1, Duration::from_millis(latency)));
    }
    let mut counts: HashMap<KeyId, usize> = HashMap::new();
    for _ in 0..200 {
        let l = sim.acquire().unwrap();
        *counts.entry(l.key()).or_default() += 1;
        let latency = if l.key() == fast { 50 } else { 2_000 };
        sim.report(l, Outcome::success(1, 1, Duration::from_millis(latency)));
    }
    // With two keys both are always sampled unless the RNG draws one twice.
    assert!(counts[&fast] > 150, "{counts:?}");
    // Many leases in flight on the fast key push the choice to the slow one.
    let held: Vec<_> = (0..60).map(|_| sim.acquire().unwrap()).collect();
    let on_slow = held.iter().filter(|l| l.key() == slow).count();
    assert!(on_slow >= 1, "in-flight count must matter");
    for l in held {
        sim.report(l, Outcome::Cancelled);
    }
}

#[test]
fn power_of_two_choices_is_reproducible_from_the_seed() {
    let run = |seed| {
        let mut sim = Sim::with(PoolConfig {
            strategy: Strategy::PowerOfTwo,
            seed,
            ..PoolConfig::default()
        });
        sim.keys(["a", "b", "c", "d", "e", "f", "g", "h"]);
        let held: Vec<_> = (0..64).map(|_| sim.acquire().unwrap()).collect();
        held.iter().map(|l| l.key()).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn lower_tier_first_and_backups_only_when_no_primary_can_serve() {
    for strategy in ALL {
        let mut sim = sim(strategy);
        let backup = sim.add(NewKey::new("backup", secret(1)).tier(1));
        let p1 = sim.add(NewKey::new("p1", secret(2)));
        let p2 = sim.add(NewKey::new("p2", secret(3)));
        for _ in 0..20 {
            assert_ne!(sim.serve(ok(1, 1)), backup, "{strategy:?}");
        }
        sim.pool.disable(p1, sim.now).unwrap();
        let l = sim.acquire().unwrap();
        assert_eq!(l.key(), p2, "{strategy:?}");
        sim.report(l, Outcome::RateLimited { retry_after: None });
        assert_eq!(sim.serve(ok(1, 1)), backup, "{strategy:?}");
    }
}

#[test]
fn max_in_flight_limits_concurrent_leases() {
    let mut sim = Sim::new();
    sim.add(NewKey::new("A", secret(1)).max_in_flight(2));
    let l1 = sim.acquire().unwrap();
    let _l2 = sim.acquire().unwrap();
    let err = sim.acquire().unwrap_err();
    assert_eq!(err.unavailable.busy, 1);
    assert_eq!(
        err.retry_at, None,
        "a busy key frees up on a report, not at a time"
    );
    sim.report(l1, ok(1, 1));
    assert!(sim.acquire().is_ok());
}

#[test]
fn requests_per_minute_limit_holds_until_the_minute_ends() {
    let mut sim = Sim::new();
    let a = sim.add(NewKey::new("A", secret(1)).requests_per_minute(3));
    for _ in 0..3 {
        sim.serve(ok(1, 1));
    }
    let err = sim.acquire().unwrap_err();
    assert_eq!(err.unavailable.minute_limited, 1);
    let next_minute = Timestamp::from_unix_millis((T0.as_unix_millis() / 60_000 + 1) * 60_000);
    assert_eq!(err.retry_at, Some(next_minute));
    assert_eq!(sim.pool.poll_timeout(), Some(next_minute));
    sim.step();
    assert!(sim.pool.key_snapshot(a).unwrap().selectable);
    for _ in 0..3 {
        sim.serve(ok(1, 1));
    }
    assert!(sim.acquire().is_err());
}

#[test]
fn tokens_per_minute_limit_counts_usage_and_reservations() {
    let mut sim = Sim::new();
    sim.add(NewKey::new("A", secret(1)).tokens_per_minute(1_000));
    let opts = AcquireOptions {
        estimated_tokens: 600,
        exclude: &[],
        ..AcquireOptions::default()
    };
    let l = sim.pool.acquire_with(sim.now, &opts).unwrap();
    // 600 reserved: another 600 does not fit.
    let err = sim.pool.acquire_with(sim.now, &opts).unwrap_err();
    assert_eq!(err.unavailable.minute_limited, 1);
    sim.report(l, ok(900, 100));
    assert_eq!(sim.acquire().unwrap_err().unavailable.minute_limited, 1);
    sim.advance(mins(1));
    assert!(sim.acquire().is_ok());
}

#[test]
fn an_estimate_that_does_not_fit_the_daily_budget_skips_the_key() {
    let mut sim = Sim::with(PoolConfig {
        soft_limit: 1.0,
        ..PoolConfig::default()
    });
    let small = sim.add(NewKey::new("small", secret(1)).tokens_per_day(1_000));
    let big = sim.add(NewKey::new("big", secret(2)).tokens_per_day(1_000_000));
    sim.serve(ok(1, 0)); // small, so that "big" is not the least used either way
    let opts = AcquireOptions {
        estimated_tokens: 5_000,
        exclude: &[],
        ..AcquireOptions::default()
    };
    let l = sim.pool.acquire_with(sim.now, &opts).unwrap();
    assert_eq!(l.key(), big);
    let huge = AcquireOptions {
        estimated_tokens: 2_000_000,
        exclude: &[],
        ..AcquireOptions::default()
    };
    let err = sim.pool.acquire_with(sim.now, &huge).unwrap_err();
    assert_eq!(err.unavailable.daily_limited, 2);
    assert_eq!(sim.pool.key_snapshot(small).unwrap().in_flight, 0);
    sim.report(l, ok(1, 1));
}

#[test]
fn exclude_skips_the_named_keys() {
    for strategy in ALL {
        let mut sim = sim(strategy);
        let [a, b, c] = sim.keys(["A", "B", "C"]);
        let exclude = [a, b];
        for _ in 0..10 {
            let l = sim
                .pool
                .acquire_with(
                    sim.now,
                    &AcquireOptions {
                        estimated_tokens: 0,
                        exclude: &exclude,
                        ..AcquireOptions::default()
                    },
                )
                .unwrap();
            assert_eq!(l.key(), c, "{strategy:?}");
            sim.report(l, ok(1, 1));
        }
        let all = [a, b, c];
        let err = sim
            .pool
            .acquire_with(
                sim.now,
                &AcquireOptions {
                    estimated_tokens: 0,
                    exclude: &all,
                    ..AcquireOptions::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.unavailable.excluded, 3);
    }
}

#[test]
fn no_key_error_says_why_per_class_and_when_to_retry() {
    let mut sim = Sim::new();
    let [_a, _b, _c, _d] = sim.keys(["a", "b", "c", "d"]);
    sim.serve(Outcome::RateLimited {
        retry_after: Some(secs(40)),
    });
    sim.serve(Outcome::RateLimited {
        retry_after: Some(secs(20)),
    });
    sim.serve(Outcome::Unauthorized);
    sim.serve(Outcome::QuotaExhausted);
    let err = sim.acquire().unwrap_err();
    assert_eq!(err.unavailable.cooling_down, 2);
    assert_eq!(err.unavailable.unauthorized, 1);
    assert_eq!(err.unavailable.exhausted, 1);
    assert_eq!(err.unavailable.total(), 4);
    assert_eq!(err.retry_at, Some(T0.saturating_add(secs(20))));
    assert_eq!(
        err.to_string(),
        "no key available: 2 cooling down (rate limited), 1 exhausted until the daily reset, \
         1 disabled: unauthorized; retry at 2026-11-22T04:41:12.000Z"
    );
    let empty = Sim::new().acquire().unwrap_err();
    assert_eq!(empty.to_string(), "no key available: the pool has no keys");
}

#[test]
fn a_key_for_some_models_is_picked_only_for_them_by_any_strategy() {
    for strategy in ALL {
        let mut sim = sim(strategy);
        let all = sim.keys(["all"])[0];
        let secret = sim.fresh_secret();
        let mini = sim.add(NewKey::new("mini", secret).models(["gpt-4o-mini"]));
        let mut picked = Vec::new();
        for _ in 0..8 {
            let opts = AcquireOptions {
                model: &["gpt-4.1"],
                ..AcquireOptions::default()
            };
            let lease = sim.pool.acquire_with(sim.now, &opts).expect("a key");
            picked.push(lease.key());
            sim.report(lease, ok(10, 1));
        }
        assert!(picked.iter().all(|k| *k == all), "{strategy:?}: {picked:?}");
        // Either of the model's names reaches the restricted key.
        let mut seen_mini = false;
        for _ in 0..8 {
            let opts = AcquireOptions {
                model: &["mini-alias", "gpt-4o-mini"],
                ..AcquireOptions::default()
            };
            let lease = sim.pool.acquire_with(sim.now, &opts).expect("a key");
            seen_mini |= lease.key() == mini;
            sim.report(lease, ok(10, 1));
        }
        assert!(seen_mini, "{strategy:?}");
        // With the unrestricted key out, the model has no key, and the
        // answer says why.
        sim.pool.disable(all, sim.now).expect("known");
        let opts = AcquireOptions {
            model: &["gpt-4.1"],
            ..AcquireOptions::default()
        };
        let no = sim
            .pool
            .acquire_with(sim.now, &opts)
            .expect_err("no key for gpt-4.1");
        assert_eq!(no.unavailable.other_models, 1, "{strategy:?}");
        assert_eq!(no.unavailable.disabled, 1, "{strategy:?}");
        assert!(no.unavailable.to_string().contains("not for this model"));
    }
}

#[test]
fn a_rotated_key_keeps_its_models() {
    let mut sim = sim(Strategy::LeastUsed);
    let secret = sim.fresh_secret();
    let mini = sim.add(NewKey::new("mini", secret).models(["gpt-4o-mini"]));
    let new_secret = sim.fresh_secret();
    let new = sim
        .pool
        .rotate(mini, new_secret, Duration::ZERO, sim.now)
        .expect("rotated");
    let snap = sim.pool.key_snapshot(new).expect("known");
    let models: Vec<&str> = snap
        .models
        .iter()
        .flat_map(|m| m.iter().map(|m| &**m))
        .collect();
    assert_eq!(models, ["gpt-4o-mini"]);
}

#[test]
fn a_pool_may_serve_a_model_while_one_of_its_keys_may() {
    let mut sim = sim(Strategy::LeastUsed);
    assert!(
        sim.pool.may_serve(&["gpt-4.1"]),
        "an empty pool has lost its keys; it is not for other models"
    );
    let secret = sim.fresh_secret();
    let mini = sim.add(NewKey::new("mini", secret).models(["gpt-4o-mini"]));
    assert!(sim.pool.may_serve(&["gpt-4o-mini"]));
    assert!(!sim.pool.may_serve(&["gpt-4.1"]));
    let [_all] = sim.keys(["all"]);
    assert!(sim.pool.may_serve(&["gpt-4.1"]));
    sim.pool.remove(mini, sim.now).expect("known");
    assert!(
        sim.pool.may_serve(&["gpt-4o-mini"]),
        "the unrestricted key serves it"
    );
}

#[test]
fn a_pinned_request_gets_its_key_or_none() {
    for strategy in ALL {
        let mut sim = sim(strategy);
        let [a, b] = sim.keys(["a", "b"]);
        for _ in 0..3 {
            let opts = AcquireOptions {
                only: Some(b),
                ..AcquireOptions::default()
            };
            let lease = sim.pool.acquire_with(sim.now, &opts).expect("b serves");
            assert_eq!(lease.key(), b, "{strategy:?}");
            sim.report(lease, ok(10, 1));
        }
        sim.pool.disable(b, sim.now).expect("known");
        let opts = AcquireOptions {
            only: Some(b),
            ..AcquireOptions::default()
        };
        let no = sim
            .pool
            .acquire_with(sim.now, &opts)
            .expect_err("b is disabled");
        assert_eq!(no.unavailable.disabled, 1, "{strategy:?}");
        assert_eq!(no.unavailable.excluded, 1, "a is not b: {strategy:?}");
        let _ = a;
    }
}

#[test]
fn during_a_rotation_the_key_serving_on_is_found_by_its_name() {
    let mut sim = sim(Strategy::LeastUsed);
    let [old] = sim.keys(["prod"]);
    assert_eq!(sim.pool.find_serving("prod"), Some(old));
    let secret = sim.fresh_secret();
    let new = sim
        .pool
        .rotate(old, secret, Duration::from_secs(3600), sim.now)
        .expect("rotated");
    assert_eq!(sim.pool.find("prod"), Some(old), "the first by slot");
    assert_eq!(sim.pool.find_serving("prod"), Some(new));
    assert_eq!(sim.pool.find_serving("nobody"), None);
}

/// Leases with `opts` and returns the key.
fn lease_key(sim: &mut Sim, opts: &AcquireOptions<'_>) -> KeyId {
    let l = sim.pool.acquire_with(sim.now, opts).unwrap();
    let key = l.key();
    sim.report(l, ok(10, 1));
    key
}

#[test]
fn a_preferred_key_serves_while_it_can_whatever_the_strategy() {
    for strategy in ALL {
        let mut sim = sim(strategy);
        let [_, b, _] = sim.keys(["A", "B", "C"]);
        let prefer = AcquireOptions {
            prefer: Some(b),
            ..AcquireOptions::default()
        };
        for _ in 0..10 {
            assert_eq!(lease_key(&mut sim, &prefer), b, "{strategy:?}");
        }
        // Without the preference the strategy spreads again.
        let others: Vec<KeyId> = (0..6)
            .map(|_| lease_key(&mut sim, &AcquireOptions::default()))
            .collect();
        assert!(others.iter().any(|k| *k != b), "{strategy:?}");
    }
}

#[test]
fn a_preferred_key_that_cannot_serve_gives_way_to_the_strategy() {
    for strategy in ALL {
        let mut sim = sim(strategy);
        let [a, b] = sim.keys(["A", "B"]);
        // Excluded (it just failed this request): the other key serves.
        let opts = AcquireOptions {
            prefer: Some(b),
            exclude: &[b],
            ..AcquireOptions::default()
        };
        assert_eq!(lease_key(&mut sim, &opts), a, "{strategy:?}");
        // Cooling down after a 429: the other key serves.
        let l = sim
            .pool
            .acquire_with(
                sim.now,
                &AcquireOptions {
                    only: Some(b),
                    ..AcquireOptions::default()
                },
            )
            .unwrap();
        sim.report(
            l,
            Outcome::RateLimited {
                retry_after: Some(secs(30)),
            },
        );
        let prefer = AcquireOptions {
            prefer: Some(b),
            ..AcquireOptions::default()
        };
        assert_eq!(lease_key(&mut sim, &prefer), a, "{strategy:?}");
        // Once it has cooled down it is preferred again.
        sim.advance(secs(31));
        assert_eq!(lease_key(&mut sim, &prefer), b, "{strategy:?}");
    }
}

#[test]
fn a_preferred_key_far_busier_than_the_pick_gives_way() {
    let mut sim = sim(Strategy::LeastUsed);
    let [a, b] = sim.keys(["A", "B"]);
    let prefer = AcquireOptions {
        prefer: Some(b),
        ..AcquireOptions::default()
    };
    // A idle: B keeps its conversations while it has at most
    // 2 × 0 + AFFINITY_SLACK requests in flight.
    let mut held = Vec::new();
    for _ in 0..=keypool_core::AFFINITY_SLACK {
        let l = sim.pool.acquire_with(sim.now, &prefer).unwrap();
        assert_eq!(l.key(), b);
        held.push(l);
    }
    let l = sim.pool.acquire_with(sim.now, &prefer).unwrap();
    assert_eq!(l.key(), a, "B has 5 in flight against A's 0");
    held.push(l);
    for l in held {
        sim.report(l, ok(1, 1));
    }
    assert_eq!(lease_key(&mut sim, &prefer), b);
}
