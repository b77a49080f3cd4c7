use std::time::Duration;

use keypool_core::{Event, KeyPool, KeyState, NewKey, Outcome, PoolConfig, Timestamp, UtcOffset};

use crate::harness::{Sim, T0, mins, ok, secret, secs};

#[test]
fn poll_timeout_is_the_earliest_change_and_a_day_begins_otherwise() {
    let mut sim = Sim::new();
    assert_eq!(
        sim.pool.poll_timeout(),
        None,
        "an empty pool never changes by itself"
    );
    let [a, b] = sim.keys(["A", "B"]);
    assert_eq!(
        sim.pool.poll_timeout(),
        Some(UtcOffset::UTC.next_midnight(T0))
    );
    sim.serve(Outcome::RateLimited {
        retry_after: Some(secs(90)),
    });
    sim.pool
        .schedule_revoke(b, T0.saturating_add(secs(60)), sim.now)
        .unwrap();
    assert_eq!(sim.pool.poll_timeout(), Some(T0.saturating_add(secs(60))));
    sim.step();
    assert_eq!(sim.pool.state(b), None);
    assert_eq!(sim.pool.poll_timeout(), Some(T0.saturating_add(secs(90))));
    sim.step();
    assert_eq!(sim.pool.state(a), Some(KeyState::Active));
}

#[test]
fn handle_timeout_early_or_twice_is_a_harmless_no_op() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    sim.serve(Outcome::RateLimited {
        retry_after: Some(secs(30)),
    });
    sim.take_events();
    let before = sim.pool.snapshot();
    sim.pool.handle_timeout(T0.saturating_add(secs(29)));
    sim.pool.handle_timeout(T0.saturating_add(secs(29)));
    assert_eq!(sim.pool.poll_event(), None);
    let mut after = sim.pool.snapshot();
    after.at = before.at;
    assert_eq!(before, after);
    assert!(matches!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown { .. })
    ));
}

#[test]
fn time_never_goes_backwards_inside_the_pool() {
    let mut sim = Sim::new();
    let [a] = sim.keys(["A"]);
    sim.advance(secs(100));
    sim.pool.handle_timeout(T0); // an earlier time is treated as the latest seen
    assert_eq!(sim.pool.now(), T0.saturating_add(secs(100)));
    let lease = sim.pool.acquire(T0).unwrap();
    sim.pool.report(
        lease,
        Outcome::RateLimited {
            retry_after: Some(secs(10)),
        },
        T0,
    );
    assert_eq!(
        sim.pool.state(a),
        Some(KeyState::CoolingDown {
            until: T0.saturating_add(secs(110)),
            cause: keypool_core::CooldownCause::RateLimited
        })
    );
}

#[test]
fn every_event_kind_is_emitted_in_order() {
    let mut sim = Sim::new();
    let a = sim.add(NewKey::new("A", secret(1)).tokens_per_day(100));
    let ev = sim.take_events();
    assert_eq!(
        ev,
        vec![Event::Added {
            key: a,
            name: "A".into()
        }]
    );
    sim.serve(Outcome::RateLimited {
        retry_after: Some(secs(5)),
    });
    let until = T0.saturating_add(secs(5));
    assert_eq!(
        sim.take_events(),
        vec![
            Event::CoolingDown {
                key: a,
                name: "A".into(),
                until,
                cause: keypool_core::CooldownCause::RateLimited
            },
            Event::PoolEmpty {
                retry_at: Some(until)
            },
        ]
    );
    sim.step();
    assert_eq!(
        sim.take_events(),
        vec![
            Event::Recovered {
                key: a,
                name: "A".into()
            },
            Event::PoolRecovered
        ]
    );
    sim.serve(ok(80, 0));
    let ev = sim.take_events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::UsageWarning { percent: 75, .. }))
    );
    sim.serve(Outcome::Unauthorized);
    assert!(
        sim.take_events()
            .iter()
            .any(|e| matches!(e, Event::Disabled { .. }))
    );
}

#[test]
fn pool_empty_and_recovered_follow_the_healthy_count() {
    let mut sim = Sim::new();
    let [a, b] = sim.keys(["A", "B"]);
    sim.take_events();
    sim.serve(Outcome::Unauthorized);
    assert!(
        !sim.take_events()
            .contains(&Event::PoolEmpty { retry_at: None })
    );
    sim.serve(Outcome::QuotaExhausted);
    let midnight = UtcOffset::UTC.next_midnight(T0);
    assert!(sim.take_events().contains(&Event::PoolEmpty {
        retry_at: Some(midnight)
    }));
    sim.pool.enable(a, sim.now).unwrap();
    assert!(sim.take_events().contains(&Event::PoolRecovered));
    let _ = b;
}

#[test]
fn undrained_events_are_capped_and_counted() {
    let mut pool = KeyPool::new(PoolConfig {
        event_capacity: 3,
        ..PoolConfig::default()
    })
    .unwrap();
    for i in 0..5 {
        pool.add(NewKey::new(format!("k{i}"), secret(i)), T0)
            .unwrap();
    }
    assert_eq!(pool.events_dropped(), 2);
    let names: Vec<String> = std::iter::from_fn(|| pool.poll_event())
        .map(|e| match e {
            Event::Added { name, .. } => name.to_string(),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(names, ["k2", "k3", "k4"], "the oldest are dropped");
}

#[test]
fn snapshot_reports_usage_percent_errors_in_flight_and_last_used() {
    let mut sim = Sim::new();
    let a = sim.add(
        NewKey::new("Production Key", secret(1))
            .tokens_per_day(5_000_000)
            .requests_per_day(1_000),
    );
    sim.serve(ok(600_000, 15_000));
    sim.advance(secs(3));
    sim.serve(Outcome::ServerError);
    let held = sim.acquire().unwrap();
    let s = sim.pool.key_snapshot(a).unwrap();
    assert_eq!(s.tokens_today, 615_000);
    assert_eq!(s.tokens_percent, Some(12.3));
    assert_eq!(s.requests_today, 3);
    assert_eq!(s.requests_percent, Some(0.3));
    assert_eq!((s.errors_today, s.in_flight), (1, 1));
    assert_eq!(s.last_used, Some(T0.saturating_add(secs(3))));
    let snap = sim.pool.snapshot();
    assert_eq!(
        (snap.keys.len(), snap.available, snap.outstanding_leases),
        (1, 1, 1)
    );
    sim.report(held, Outcome::Cancelled);
}

#[test]
fn status_report_has_a_line_per_key_like_the_first_seed() {
    let mut sim = Sim::new();
    sim.add(NewKey::new("Production Key", secret(1)).tokens_per_day(5_000_000));
    sim.add(NewKey::new("Production Backup", secret(2)).tokens_per_day(5_000_000));
    sim.add(NewKey::new("Testing Key", secret(3)).tokens_per_day(500_000));
    sim.serve(ok(600_000, 15_000));
    sim.serve(Outcome::Unauthorized);
    let report = sim.pool.status_report();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "📊 Key Pool Status (2026-11-22T04:40:52.000Z)");
    assert_eq!(lines[1], "=".repeat(50));
    assert_eq!(
        lines[2],
        "🟢 Production Key: 12.3% (615,000/5,000,000) | Errors: 0"
    );
    assert_eq!(
        lines[3],
        "🔴 Production Backup: 0.0% (0/5,000,000) | Errors: 1 | disabled: unauthorized"
    );
    assert_eq!(lines[4], "🟢 Testing Key: 0.0% (0/500,000) | Errors: 0");
    assert_eq!(lines.len(), 5);
}

#[test]
fn the_same_inputs_give_the_same_outputs() {
    let run = || {
        let mut sim = Sim::new();
        sim.keys(["a", "b", "c"]);
        let mut log = Vec::new();
        for i in 0..200u64 {
            let outcome = match i % 7 {
                0 => Outcome::RateLimited {
                    retry_after: Some(secs(i % 13)),
                },
                1 | 2 => Outcome::ServerError,
                3 => Outcome::ClientError,
                _ => ok(i, i / 2),
            };
            match sim.acquire() {
                Ok(l) => {
                    log.push(format!("{:?}", l.key()));
                    sim.report(l, outcome);
                }
                Err(e) => log.push(e.to_string()),
            }
            sim.advance(Duration::from_millis(i * 97 % 5000));
        }
        (log, sim.take_events(), sim.pool.status_report())
    };
    assert_eq!(run(), run());
}

#[test]
fn drive_bounded_stops_when_nothing_is_pending() {
    let mut sim = Sim::new();
    let [_a] = sim.keys(["A"]);
    sim.serve(Outcome::RateLimited {
        retry_after: Some(mins(1)),
    });
    // The cooldown, then a midnight each day: bounded stepping never runs away.
    assert_eq!(sim.drive_bounded(3), 3);
    assert!(sim.now >= UtcOffset::UTC.next_midnight(T0));
    assert_eq!(Sim::new().drive_bounded(10), 0);
    let _ = Timestamp::EPOCH;
}

#[cfg(feature = "serde")]
#[test]
fn snapshot_events_and_config_serialize_without_secrets() {
    let mut sim = Sim::new();
    sim.add(NewKey::new("Prod", "sk-proj-abcdefghijklmnopqrstuvwxyz12"));
    sim.serve(Outcome::RateLimited {
        retry_after: Some(secs(5)),
    });
    let snapshot = serde_json::to_string(&sim.pool.snapshot()).unwrap();
    let events = serde_json::to_string(&sim.take_events()).unwrap();
    for json in [&snapshot, &events] {
        assert!(!json.contains("abcdefghijklmnop"), "{json}");
    }
    assert!(
        snapshot.contains(r#""secret":"sk-proj-…yz12""#),
        "{snapshot}"
    );
    assert!(snapshot.contains(r#""state":"cooling_down""#), "{snapshot}");
    assert!(events.contains(r#""event":"cooling_down""#), "{events}");

    let config: PoolConfig = serde_json::from_str(
        r#"{"strategy": "round-robin", "utc_offset": "+07:00", "soft_limit": 0.8}"#,
    )
    .unwrap();
    assert_eq!(config.strategy, keypool_core::Strategy::RoundRobin);
    assert_eq!(config.utc_offset.as_seconds(), 7 * 3600);
    assert_eq!(config.breaker, keypool_core::BreakerConfig::default());
    let unknown = serde_json::from_str::<PoolConfig>(r#"{"stratgy": "round-robin"}"#).unwrap_err();
    assert!(
        unknown.to_string().contains("unknown field `stratgy`"),
        "{unknown}"
    );
    let bad_offset = serde_json::from_str::<PoolConfig>(r#"{"utc_offset": "+25:00"}"#).unwrap_err();
    assert!(
        bad_offset.to_string().contains("utc offset"),
        "{bad_offset}"
    );
}

/// A restarted process builds a fresh pool and restores what the old one saved.
#[test]
fn saved_state_survives_a_restart() {
    let mut before = Sim::new();
    let [a, b, c, d] = before.keys(["A", "B", "C", "D"]);
    for _ in 0..3 {
        before.serve(ok(60, 40));
    }
    before.pool.disable(a, before.now).unwrap();
    before
        .pool
        .defer(b, before.now.saturating_add(mins(10)), before.now)
        .unwrap();
    before
        .pool
        .schedule_revoke(c, before.now.saturating_add(mins(60)), before.now)
        .unwrap();
    let saved: Vec<_> = [a, b, c, d]
        .iter()
        .map(|&id| before.pool.saved(id).unwrap())
        .collect();
    let served: u64 = saved.iter().map(|s| s.tokens_today).sum();
    assert!(served >= 300, "today's tokens are saved: {saved:?}");

    // The same keys in a new pool, a minute later.
    let mut after = Sim::new();
    after.now = before.now.saturating_add(mins(1));
    let ids = after.keys(["A", "B", "C", "D"]);
    for (id, s) in ids.iter().zip(&saved) {
        after.pool.restore(*id, s, after.now).unwrap();
    }
    let state = |sim: &Sim, i: usize| sim.pool.state(ids[i]).unwrap();
    assert!(matches!(state(&after, 0), KeyState::Disabled { .. }));
    assert!(
        matches!(state(&after, 1), KeyState::CoolingDown { until, .. } if until == before.now.saturating_add(mins(10)))
    );
    assert!(
        matches!(state(&after, 2), KeyState::Draining { revoke_at } if revoke_at == before.now.saturating_add(mins(60)))
    );
    let restored: u64 = ids
        .iter()
        .map(|&id| after.pool.saved(id).unwrap().tokens_today)
        .sum();
    assert_eq!(restored, served);

    // The next day, counters and exhaustion from the saved day are ignored.
    let mut tomorrow = Sim::new();
    tomorrow.now = before.now.saturating_add(secs(2 * 86_400));
    let [x] = tomorrow.keys(["D"]);
    let mut old = saved[3].clone();
    old.state = KeyState::Exhausted { until: T0 };
    old.tokens_today = 5_000;
    tomorrow.pool.restore(x, &old, tomorrow.now).unwrap();
    assert_eq!(tomorrow.pool.state(x), Some(KeyState::Active));
    assert_eq!(tomorrow.pool.saved(x).unwrap().tokens_today, 0);
}
