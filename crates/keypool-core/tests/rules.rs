use std::time::Duration;

use keypool_core::{
    AddKeyError, CooldownCause, DisableCause, Event, KeyPool, KeyRule, KeyState, LimitKind, NewKey,
    Outcome, PoolConfig, Reported, Timestamp, UtcOffset,
};

use crate::harness::{Sim, T0, mins, ok, secret, secs};

// ----- keys ------------------------------------------------------------------

#[test]
fn key_has_stable_id_name_group_tier_weight_and_limits() {
    let mut sim = Sim::new();
    let a = sim.add(
        NewKey::new("Production Backup", secret(1))
            .group("relay")
            .tier(1)
            .weight(3)
            .tokens_per_day(5_000_000)
            .requests_per_day(10_000)
            .requests_per_minute(60)
            .tokens_per_minute(90_000)
            .max_in_flight(8),
    );
    let b = sim.add(NewKey::new("Other", secret(2)));
    assert_ne!(a, b);
    let s = sim.pool.key_snapshot(a).unwrap();
    assert_eq!(&*s.name, "Production Backup");
    assert_eq!(&*s.group, "relay");
    assert_eq!((s.tier, s.weight), (1, 3));
    assert_eq!(s.limits.tokens_per_day, Some(5_000_000));
    assert_eq!(s.limits.requests_per_day, Some(10_000));
    assert_eq!(s.limits.requests_per_minute, Some(60));
    assert_eq!(s.limits.tokens_per_minute, Some(90_000));
    assert_eq!(s.limits.max_in_flight, Some(8));
    // Ids survive other keys coming and going, and are never reused.
    sim.pool.remove(b, sim.now).unwrap();
    let c = sim.add(NewKey::new("Third", secret(3)));
    assert_ne!(c, b);
    assert_eq!(sim.pool.name(b), None);
    assert_eq!(sim.pool.name(a).map(|n| &**n), Some("Production Backup"));
    assert_eq!(keypool_core::KeyId::from_u64(a.as_u64()), a);
}

#[test]
fn secret_never_appears_in_debug_snapshot_events_or_errors() {
    let mut sim = Sim::new();
    let raw = "sk-live-abcdefghijklmnopqrstuvwxyz0123f00d";
    let id = sim.add(NewKey::new("Leaky", raw));
    let lease = sim.acquire().unwrap();
    assert_eq!(lease.secret().expose(), raw);
    let lease_debug = format!("{lease:?}");
    sim.report(lease, Outcome::Unauthorized);
    let dup = sim.pool.add(NewKey::new("Dup", raw), sim.now).unwrap_err();
    let texts = [
        lease_debug,
        format!("{:?}", sim.pool),
        format!("{:?}", sim.pool.snapshot()),
        sim.pool.status_report(),
        format!("{:?}", sim.take_events()),
        format!("{dup} {dup:?}"),
        format!("{}", sim.acquire().unwrap_err()),
    ];
    for t in &texts {
        assert!(!t.contains("abcdefghijklmnop"), "secret leaked: {t}");
    }
    assert_eq!(sim.pool.key_snapshot(id).unwrap().secret, "sk-live-…f00d");
}

#[test]
fn add_validates_prefix_length_and_whitespace_naming_the_rule() {
    let mut pool = KeyPool::new(PoolConfig {
        key_rule: KeyRule {
            prefixes: vec!["sk-".into(), "sk-hs-".into()],
            min_len: 20,
        },
        ..PoolConfig::default()
    })
    .unwrap();
    let add = |pool: &mut KeyPool, s: &str| pool.add(NewKey::new("k", s), T0);
    assert!(matches!(
        add(&mut pool, "pk-0123456789abcdefghij"),
        Err(AddKeyError::MissingPrefix { .. })
    ));
    assert!(matches!(
        add(&mut pool, "sk-012345"),
        Err(AddKeyError::TooShort { min_len: 20, .. })
    ));
    assert!(matches!(
        add(&mut pool, "sk-0123456789 abcdefghij"),
        Err(AddKeyError::Whitespace { .. })
    ));
    assert!(matches!(
        add(&mut pool, "sk-0123456789abcdefghij\n"),
        Err(AddKeyError::Whitespace { .. })
    ));
    add(&mut pool, "sk-hs-0123456789abcdefghij").unwrap();
    assert_eq!(pool.len(), 1);
    let err = pool.add(NewKey::new("  ", secret(9)), T0).unwrap_err();
    assert_eq!(err, AddKeyError::EmptyName);
}

#[test]
fn add_rejects_a_secret_already_in_the_pool() {
    let mut sim = Sim::new();
    sim.add(NewKey::new("First", secret(1)));
    let err = sim
        .pool
        .add(NewKey::new("Second", secret(1)), sim.now)
        .unwrap_err();
    assert_eq!(
        err,
        AddKeyError::DuplicateSecret {
            name: "Second".into(),
            existing: "First".into()
        }
    );
    assert_eq!(sim.pool.len(), 1);
    // Once the first key is gone, its secret may come back.
    let first = sim.pool.find("First").unwrap();
    sim.pool.remove(first, sim.now).unwrap();
    sim.add(NewKey::new("Second", secret(1)));
}

#[test]
fn add_rejects_zero_weight_and_zero_limits() {
    let mut sim = Sim::new();
    let zero_w = sim
        .pool
        .add(NewKey::new("w", secret(1)).weight(0), T0)
        .unwrap_err();
    assert!(matches!(zero_w, AddKeyError::ZeroWeight { .. }));
    let zero_l = sim
        .pool
        .add(NewKey::new("l", secret(1)).requests_per_minute(0), T0)
        .unwrap_err();
    assert_eq!(
        zero_l.to_string(),
        "key \"l\": requests_per_minute must be at least 1 (leave it unset for no limit)"
    );
}

#[test]
fn soft_limit_stops_selection_at_90_percent_of_daily_tokens() {
    let mut sim = Sim::new();
    let a = sim.add(NewKey::new("A", secret(1)).tokens_per_day(1_000));
    sim.serve(ok(800, 99)); // 899 < 900
    assert!(sim.pool.key_snapshot(a).unwrap().selectable);
    sim.serve(ok(1, 0)); // 900 = 90%
    let err = sim.acquire().unwrap_err();
    assert_eq!(err.unavailable.daily_limited, 1);
    assert_eq!(err.retry_at, Some(UtcOffset::UTC.next_midnight(sim.now)));
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::Active),
        "a soft-limited key is not penalised"
    );
}

#[test]
fn soft_limit_fraction_is_configurable_and_applies_to_requests_per_day() {
    let mut sim = Sim::with(PoolConfig {
        soft_limit: 0.5,
        ..PoolConfig::default()
    });
    sim.add(NewKey::new("A", secret(1)).requests_per_day(10));
    for _ in 0..5 {
        sim.serve(ok(1, 1));
    }
    assert_eq!(sim.acquire().unwrap_err().unavailable.daily_limited, 1);
}

#[test]
fn usage_warnings_at_75_and_90_percent_once_per_day() {
    let mut sim = Sim::with(PoolConfig {
        soft_limit: 1.0,
        ..PoolConfig::default()
    });
    let a = sim.add(NewKey::new("A", secret(1)).tokens_per_day(1_000));
    sim.take_events();
    sim.serve(ok(700, 0));
    assert!(
        sim.take_events()
            .iter()
            .all(|e| !matches!(e, Event::UsageWarning { .. }))
    );
    sim.serve(ok(50, 0)); // 750
    sim.serve(ok(10, 0));
    sim.serve(ok(150, 0)); // 910
    let warnings: Vec<_> = sim
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::UsageWarning {
                key,
                limit,
                percent,
                ..
            } => Some((key, limit, percent)),
            _ => None,
        })
        .collect();
    assert_eq!(
        warnings,
        vec![
            (a, LimitKind::TokensPerDay, 75),
            (a, LimitKind::TokensPerDay, 90)
        ]
    );
    // The next day warns again.
    sim.drive_until(UtcOffset::UTC.next_midnight(sim.now));
    sim.serve(ok(800, 0));
    assert_eq!(
        sim.take_events()
            .iter()
            .filter(|e| matches!(e, Event::UsageWarning { .. }))
            .count(),
        1
    );
}

// ----- outcomes --------------------------------------------------------------

#[test]
fn success_counts_usage_and_resets_the_failure_streak() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    for _ in 0..4 {
        sim.serve(Outcome::ServerError);
    }
    assert_eq!(sim.pool.key_snapshot(a).unwrap().consecutive_failures, 4);
    sim.serve(ok(120, 30));
    let s = sim.pool.key_snapshot(a).unwrap();
    assert_eq!(
        (s.tokens_today, s.requests_today, s.consecutive_failures),
        (150, 5, 0)
    );
    assert_eq!(s.errors_today, 4);
    assert!(
        (s.latency_ewma_ms - 100.0).abs() < 1e-9,
        "{}",
        s.latency_ewma_ms
    );
    // Four more failures do not open the breaker: the streak started again.
    for _ in 0..4 {
        sim.serve(Outcome::Timeout);
    }
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
}

#[test]
fn rate_limited_cools_down_until_retry_after() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    sim.serve(Outcome::RateLimited {
        retry_after: Some(secs(20)),
    });
    let until = T0.saturating_add(secs(20));
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown {
            until,
            cause: CooldownCause::RateLimited
        })
    );
    assert!(sim.acquire().is_err());
    assert_eq!(sim.pool.poll_timeout(), Some(until));
    sim.advance(Duration::from_millis(19_999));
    assert!(sim.acquire().is_err());
    sim.advance(Duration::from_millis(1));
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
    assert!(sim.take_events().contains(&Event::Recovered {
        key: a,
        name: "A".into()
    }));
}

#[test]
fn rate_limited_without_retry_after_uses_the_policy_default() {
    let mut sim = Sim::with(PoolConfig {
        rate_limit_cooldown: secs(45),
        ..PoolConfig::default()
    });
    let [a] = sim.keys(["A"]);
    sim.serve(Outcome::RateLimited { retry_after: None });
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown {
            until: T0.saturating_add(secs(45)),
            cause: CooldownCause::RateLimited
        })
    );
}

#[test]
fn no_upstream_can_bench_a_key_for_longer_than_the_maximum_cooldown() {
    let mut sim = Sim::with(PoolConfig {
        max_cooldown: mins(10),
        ..PoolConfig::default()
    });
    let [a, b] = sim.keys(["A", "B"]);
    // A week's Retry-After (a relay's mistake, or a malicious answer).
    let lease = sim.pool.acquire(sim.now).unwrap();
    let first = lease.key();
    sim.report(
        lease,
        Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(7 * 86_400)),
        },
    );
    let cooling = |until| {
        Some(KeyState::CoolingDown {
            until,
            cause: CooldownCause::RateLimited,
        })
    };
    assert_eq!(sim.pool.state(first), cooling(T0.saturating_add(mins(10))));
    // Rate-limit headers saying "nothing left for a day" are capped too.
    let other = if first == a { b } else { a };
    sim.pool
        .defer(
            other,
            T0.saturating_add(Duration::from_secs(86_400)),
            sim.now,
        )
        .unwrap();
    assert_eq!(
        sim.pool.state(other),
        Some(KeyState::CoolingDown {
            until: T0.saturating_add(mins(10)),
            cause: CooldownCause::Deferred
        })
    );
    let short = PoolConfig {
        max_cooldown: secs(1),
        ..PoolConfig::default()
    };
    assert_eq!(
        KeyPool::new(short).unwrap_err().to_string(),
        "invalid pool config: max_cooldown must be at least rate_limit_cooldown"
    );
}

#[test]
fn longer_retry_after_extends_a_cooldown_and_shorter_never_shortens_it() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    let l1 = sim.acquire().unwrap();
    let l2 = sim.pool.acquire(sim.now).unwrap();
    let l3 = sim.pool.acquire(sim.now).unwrap();
    sim.report(
        l1,
        Outcome::RateLimited {
            retry_after: Some(secs(30)),
        },
    );
    sim.report(
        l2,
        Outcome::RateLimited {
            retry_after: Some(secs(10)),
        },
    );
    let until = |sim: &Sim| match sim.pool.state(a) {
        Some(KeyState::CoolingDown { until, .. }) => until,
        s => panic!("{s:?}"),
    };
    assert_eq!(until(&sim), T0.saturating_add(secs(30)));
    sim.report(
        l3,
        Outcome::RateLimited {
            retry_after: Some(secs(60)),
        },
    );
    assert_eq!(until(&sim), T0.saturating_add(secs(60)));
    assert_eq!(sim.pool.poll_timeout(), Some(T0.saturating_add(secs(60))));
}

#[test]
fn quota_exhausted_waits_for_the_daily_reset_instead_of_retrying() {
    let mut sim = Sim::new();
    let [a, b] = sim.keys(["A", "B"]);
    sim.serve(Outcome::QuotaExhausted);
    let midnight = UtcOffset::UTC.next_midnight(T0);
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::Exhausted { until: midnight })
    );
    // Hours later it is still not retried.
    sim.advance(Duration::from_secs(5 * 3600));
    for _ in 0..10 {
        assert_eq!(sim.serve(ok(1, 1)), b);
    }
    sim.drive_until(midnight);
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
}

#[test]
fn unauthorized_disables_at_once_without_a_threshold_until_enabled() {
    let mut sim = Sim::new();
    let [a, b] = sim.keys(["A", "B"]);
    sim.serve(Outcome::Unauthorized);
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::Disabled {
            cause: DisableCause::Unauthorized
        })
    );
    // A day later it is still disabled: only an operator brings it back.
    sim.drive_until(T0.saturating_add(Duration::from_secs(2 * 86_400)));
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::Disabled {
            cause: DisableCause::Unauthorized
        })
    );
    assert_eq!(sim.serve(ok(1, 1)), b);
    sim.pool.enable(a, sim.now).unwrap();
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
}

#[test]
fn forbidden_disables_at_once() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    sim.serve(Outcome::Forbidden);
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::Disabled {
            cause: DisableCause::Forbidden
        })
    );
    assert_eq!(sim.acquire().unwrap_err().unavailable.forbidden, 1);
}

#[test]
fn breaker_opens_after_consecutive_failures() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    for o in [
        Outcome::ServerError,
        Outcome::Timeout,
        Outcome::Connect,
        Outcome::ServerError,
    ] {
        sim.serve(o);
    }
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
    sim.serve(Outcome::ServerError);
    let until = T0.saturating_add(mins(5));
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown {
            until,
            cause: CooldownCause::BreakerOpen
        })
    );
    assert!(sim.take_events().contains(&Event::BreakerOpened {
        key: a,
        name: "A".into(),
        until
    }));
}

#[test]
fn breaker_opens_on_failure_rate_in_the_rolling_window() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    // A key failing every other request never has 5 failures in a row.
    alternate_failures(&mut sim, 9);
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::Active),
        "9 requests: below the minimum"
    );
    sim.serve(ok(1, 1)); // 10 requests, 5 failures: not yet judged (the 10th succeeded)
    sim.serve(Outcome::ServerError); // 11 requests, 6 failures: 54%
    assert!(matches!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown {
            cause: CooldownCause::BreakerOpen,
            ..
        })
    ));
}

/// Serves `n` requests one second apart, every other one failing.
fn alternate_failures(sim: &mut Sim, n: usize) {
    for i in 0..n {
        sim.serve(if i % 2 == 0 {
            Outcome::ServerError
        } else {
            ok(1, 1)
        });
        sim.advance(secs(1));
    }
}

#[test]
fn a_failure_rate_below_the_threshold_never_opens_the_breaker() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    for i in 0..300 {
        sim.serve(if i % 3 == 0 {
            Outcome::ServerError
        } else {
            ok(1, 1)
        });
        sim.advance(secs(1));
    }
    assert_eq!(sim.pool.state(a), Some(KeyState::Active), "33% < 50%");
}

#[test]
fn failures_older_than_the_window_no_longer_count() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    alternate_failures(&mut sim, 8); // 4 of 8 failed: below the 10-request minimum
    sim.advance(mins(2)); // the window has passed
    alternate_failures(&mut sim, 8); // 16 requests, 8 failed, if old ones still counted
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
    alternate_failures(&mut sim, 3); // 11 in the window, 6 failed: now it opens
    assert!(matches!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown {
            cause: CooldownCause::BreakerOpen,
            ..
        })
    ));
}

fn open_breaker(sim: &mut Sim) {
    for _ in 0..5 {
        sim.serve(Outcome::ServerError);
    }
}

#[test]
fn half_open_breaker_hands_out_exactly_one_probe() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    open_breaker(&mut sim);
    sim.step();
    assert_eq!(sim.pool.state(a), Some(KeyState::HalfOpen));
    let probe = sim.acquire().unwrap();
    assert!(probe.is_probe());
    let err = sim.acquire().unwrap_err();
    assert_eq!(err.unavailable.breaker_open, 1);
    // Cancelling the probe frees the slot for another probe.
    sim.report(probe, Outcome::Cancelled);
    assert!(sim.acquire().unwrap().is_probe());
}

#[test]
fn probe_success_closes_the_breaker() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    open_breaker(&mut sim);
    sim.step();
    sim.take_events();
    sim.serve(ok(1, 1));
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
    let events = sim.take_events();
    assert!(events.contains(&Event::BreakerClosed {
        key: a,
        name: "A".into()
    }));
    // Closed: the next opening starts again from the base cooldown.
    open_breaker(&mut sim);
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown {
            until: sim.now.saturating_add(mins(5)),
            cause: CooldownCause::BreakerOpen
        })
    );
}

#[test]
fn probe_failure_reopens_with_a_doubled_cooldown_up_to_the_maximum() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    open_breaker(&mut sim);
    let mut cooldowns = Vec::new();
    for _ in 0..4 {
        let opened = match sim.pool.state(a) {
            Some(KeyState::CoolingDown {
                until,
                cause: CooldownCause::BreakerOpen,
            }) => until,
            s => panic!("{s:?}"),
        };
        cooldowns.push(opened.saturating_duration_since(sim.now));
        sim.step();
        assert_eq!(sim.pool.state(a), Some(KeyState::HalfOpen));
        sim.serve(Outcome::Timeout);
    }
    assert_eq!(cooldowns, vec![mins(5), mins(10), mins(15), mins(15)]);
}

#[test]
fn client_error_has_no_penalty() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    for _ in 0..50 {
        sim.serve(Outcome::ClientError);
    }
    let s = sim.pool.key_snapshot(a).unwrap();
    assert_eq!(s.state, KeyState::Active);
    assert_eq!((s.errors_today, s.consecutive_failures), (0, 0));
}

#[test]
fn cancelled_releases_the_lease_without_penalty() {
    let mut sim = Sim::new();
    let a = sim.add(NewKey::new("A", secret(1)).max_in_flight(1));
    let lease = sim.acquire().unwrap();
    assert_eq!(sim.acquire().unwrap_err().unavailable.busy, 1);
    sim.report(lease, Outcome::Cancelled);
    let s = sim.pool.key_snapshot(a).unwrap();
    assert_eq!(
        (s.in_flight, s.errors_today, s.state),
        (0, 0, KeyState::Active)
    );
    assert!(sim.acquire().is_ok());
}

#[test]
fn unreported_lease_expires_and_releases_in_flight() {
    let mut sim = Sim::with(PoolConfig {
        lease_timeout: mins(2),
        ..PoolConfig::default()
    });
    let a = sim.add(NewKey::new("A", secret(1)).max_in_flight(1));
    let lease = sim.acquire().unwrap();
    let id = lease.id();
    std::mem::forget(lease); // the caller vanished
    assert_eq!(sim.pool.outstanding_leases(), 1);
    assert_eq!(sim.pool.poll_timeout(), Some(T0.saturating_add(mins(2))));
    sim.step();
    assert_eq!(sim.pool.outstanding_leases(), 0);
    assert_eq!(sim.pool.key_snapshot(a).unwrap().in_flight, 0);
    assert!(sim.take_events().contains(&Event::LeaseExpired {
        lease: id,
        key: a,
        name: "A".into()
    }));
    assert!(sim.acquire().is_ok());
}

#[test]
fn late_report_counts_usage_but_changes_nothing_else() {
    let mut sim = Sim::with(PoolConfig {
        lease_timeout: mins(1),
        ..PoolConfig::default()
    });
    let [a] = sim.keys(["A"]);
    let slow = sim.acquire().unwrap();
    let failed = sim.pool.acquire(sim.now).unwrap();
    sim.advance(mins(1));
    assert_eq!(sim.pool.report(slow, ok(500, 500), sim.now), Reported::Late);
    assert_eq!(
        sim.pool.report(failed, Outcome::Unauthorized, sim.now),
        Reported::Late
    );
    let s = sim.pool.key_snapshot(a).unwrap();
    assert_eq!(
        (s.tokens_today, s.in_flight, s.state),
        (1_000, 0, KeyState::Active)
    );
}

#[test]
fn rotate_adds_the_new_key_active_and_drains_the_old_until_grace_ends() {
    let mut sim = Sim::new();
    let old = sim.add(
        NewKey::new("Prod", secret(1))
            .group("relay")
            .tier(0)
            .weight(2)
            .tokens_per_day(1_000_000),
    );
    let other = sim.add(NewKey::new("Other", secret(2)).tier(1));
    let new = sim
        .pool
        .rotate(old, secret(3), Duration::from_secs(3600), sim.now)
        .unwrap();
    sim.drain();
    let (o, n) = (
        sim.pool.key_snapshot(old).unwrap(),
        sim.pool.key_snapshot(new).unwrap(),
    );
    assert_eq!(n.state, KeyState::Active);
    assert_eq!(
        (&*n.name, &*n.group, n.tier, n.weight, n.limits),
        (&*o.name, &*o.group, o.tier, o.weight, o.limits)
    );
    let revoke_at = T0.saturating_add(secs(3600));
    assert_eq!(o.state, KeyState::Draining { revoke_at });
    assert!(sim.events.contains(&Event::Rotated {
        old,
        new,
        name: "Prod".into(),
        revoke_at
    }));
    // The new key serves; the old one only when nothing else can (even a backup tier goes first).
    assert_eq!(sim.serve(ok(1, 1)), new);
    sim.pool.disable(new, sim.now).unwrap();
    assert_eq!(sim.serve(ok(1, 1)), other);
    sim.pool.disable(other, sim.now).unwrap();
    assert_eq!(sim.serve(ok(1, 1)), old);
    // Rotating to a secret already in the pool is refused and changes nothing.
    assert!(matches!(
        sim.pool.rotate(other, secret(3), secs(1), sim.now),
        Err(AddKeyError::DuplicateSecret { .. })
    ));
    assert_eq!(
        sim.pool.state(other),
        Some(KeyState::Disabled {
            cause: DisableCause::Manual
        })
    );
    sim.drive_until(revoke_at);
    assert_eq!(sim.pool.state(old), None);
    assert!(sim.events.contains(&Event::Revoked {
        key: old,
        name: "Prod".into()
    }));
}

#[test]
fn schedule_revoke_drains_then_removes_the_key() {
    let mut sim = Sim::new();
    let [a, b] = sim.keys(["A", "B"]);
    let at = T0.saturating_add(mins(30));
    sim.pool.schedule_revoke(a, at, sim.now).unwrap();
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::Draining { revoke_at: at })
    );
    assert_eq!(sim.serve(ok(1, 1)), b);
    let lease = sim.acquire().unwrap();
    assert_eq!(lease.key(), b);
    sim.drive_until(at);
    assert_eq!(sim.pool.len(), 1);
    sim.report(lease, ok(1, 1));
    // A revocation in the past applies at once.
    sim.pool.schedule_revoke(b, T0, sim.now).unwrap();
    assert!(sim.pool.is_empty());
    assert!(sim.pool.schedule_revoke(b, T0, sim.now).is_err());
}

#[test]
fn disable_enable_and_remove() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    sim.pool.disable(a, sim.now).unwrap();
    assert_eq!(sim.acquire().unwrap_err().unavailable.disabled, 1);
    sim.pool.enable(a, sim.now).unwrap();
    let lease = sim.acquire().unwrap();
    sim.pool.remove(a, sim.now).unwrap();
    assert_eq!(sim.pool.report(lease, ok(1, 1), sim.now), Reported::KeyGone);
    assert_eq!(
        sim.pool.remove(a, sim.now),
        Err(keypool_core::UnknownKey(a))
    );
    assert_eq!(
        sim.pool.enable(a, sim.now),
        Err(keypool_core::UnknownKey(a))
    );
}

#[test]
fn enable_resets_the_breaker() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    open_breaker(&mut sim);
    sim.step();
    sim.serve(Outcome::ServerError); // reopened, 10 minutes
    sim.pool.enable(a, sim.now).unwrap();
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
    open_breaker(&mut sim);
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown {
            until: sim.now.saturating_add(mins(5)),
            cause: CooldownCause::BreakerOpen
        }),
        "after enable the breaker starts again from the base cooldown"
    );
}

#[test]
fn daily_reset_at_midnight_of_the_configured_offset() {
    let bangkok: UtcOffset = "+07:00".parse().unwrap();
    let mut sim = Sim::with(PoolConfig {
        utc_offset: bangkok,
        ..PoolConfig::default()
    });
    let a = sim.add(NewKey::new("A", secret(1)).tokens_per_day(1_000));
    sim.serve(ok(950, 0));
    let b = sim.add(NewKey::new("B", secret(2)));
    sim.serve(Outcome::QuotaExhausted); // B
    // 2026-11-22T17:00:00Z is midnight in Bangkok; one millisecond before, nothing resets.
    let midnight = Timestamp::from_unix_secs(1_795_366_800);
    assert_eq!(sim.acquire().unwrap_err().retry_at, Some(midnight));
    assert_eq!(midnight.to_string(), "2026-11-22T17:00:00.000Z");
    sim.drive_until(Timestamp::from_unix_millis(midnight.as_unix_millis() - 1));
    assert_eq!(sim.pool.key_snapshot(a).unwrap().tokens_today, 950);
    sim.drive_until(midnight);
    assert_eq!(sim.pool.key_snapshot(a).unwrap().tokens_today, 0);
    assert_eq!(sim.pool.state(b), Some(KeyState::Active));
    assert!(sim.pool.key_snapshot(a).unwrap().selectable);
}

#[test]
fn pool_lease_and_errors_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeyPool>();
    assert_send_sync::<keypool_core::Lease>();
    assert_send_sync::<keypool_core::NoKeyAvailable>();
    assert_send_sync::<AddKeyError>();
}

#[test]
fn defer_rests_a_key_that_has_nothing_left_until_its_reset() {
    let mut sim = Sim::new();
    let [a, b] = sim.keys(["A", "B"]);
    let until = T0.saturating_add(secs(6));
    sim.pool.defer(a, until, sim.now).unwrap();
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown {
            until,
            cause: CooldownCause::Deferred
        })
    );
    for _ in 0..3 {
        assert_eq!(sim.serve(ok(1, 1)), b);
    }
    // A shorter deferral never shortens it; a time in the past does nothing.
    sim.pool
        .defer(a, T0.saturating_add(secs(1)), sim.now)
        .unwrap();
    sim.pool.defer(b, T0, sim.now).unwrap();
    assert_eq!(sim.pool.state(b), Some(KeyState::Active));
    sim.drive_until(until);
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
}
