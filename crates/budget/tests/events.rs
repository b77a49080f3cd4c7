use std::time::Duration;

use budget::{
    Event, Ledger, LedgerConfig, Limit, Money, Period, ReportFilter, Scope, Scopes, Tokens,
};

use crate::{at, t0};

fn drain(l: &mut Ledger) -> Vec<Event> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

/// The anomaly alerts among the pending events (the others are dropped).
fn anomalies(l: &mut Ledger) -> Vec<Event> {
    drain(l)
        .into_iter()
        .filter(|e| matches!(e, Event::Anomaly { .. }))
        .collect()
}

#[test]
fn thresholds_are_announced_once_per_period_at_50_75_90_and_100_percent() {
    let mut l = Ledger::new(
        LedgerConfig::default(),
        crate::prices(),
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_dollars(16),
        )],
    )
    .unwrap();
    let none = Scopes::default();
    let mut crossed = Vec::new();
    for tokens in [500_000, 500_000, 500_000, 300_000, 200_000] {
        // $4, $4, $4, $2.40, $1.60 of gpt-4.1: 25%, 50%, 75%, 90%, 100%.
        let r = l.reserve(&none, "gpt-4.1", tokens, 0, t0()).unwrap();
        l.settle(r, Tokens::new(tokens, 0), t0());
        crossed.extend(drain(&mut l).into_iter().filter_map(|e| match e {
            Event::Threshold { percent, .. } => Some(percent),
            _ => None,
        }));
    }
    assert_eq!(crossed, vec![50, 75, 90, 100]);
}

#[test]
fn an_anomaly_is_today_above_150_percent_of_the_trailing_average_at_the_same_hour() {
    let mut l = Ledger::new(LedgerConfig::default(), crate::prices(), vec![]).unwrap();
    let none = Scopes::default();
    let day0 = 1_795_305_600; // 2026-11-22T00:00:00Z
    let spend = |l: &mut Ledger, secs: u64, tokens: u64| {
        let r = l.reserve(&none, "gpt-4.1", tokens, 0, at(secs)).unwrap();
        l.settle(r, Tokens::new(tokens, 0), at(secs));
    };
    // Seven ordinary days: $8 by 10:00, another $8 in the evening.
    for d in 0..7 {
        spend(&mut l, day0 + d * 86_400 + 9 * 3600, 1_000_000);
        spend(&mut l, day0 + d * 86_400 + 20 * 3600, 1_000_000);
    }
    assert!(anomalies(&mut l).is_empty());
    // Day 8: $16 by 10:00, twice the usual for the time of day.
    let day7 = day0 + 7 * 86_400;
    spend(&mut l, day7 + 8 * 3600, 1_000_000);
    assert!(
        anomalies(&mut l).is_empty(),
        "$8 by 08:00 is not above 150% of $8"
    );
    spend(&mut l, day7 + 9 * 3600, 1_000_000);
    assert_eq!(
        anomalies(&mut l),
        vec![Event::Anomaly {
            today: Money::from_dollars(16),
            trailing_average: Money::from_dollars(8),
            days: 7
        }]
    );
    // Once a day.
    spend(&mut l, day7 + 10 * 3600, 1_000_000);
    assert!(anomalies(&mut l).is_empty());
}

/// A ledger with a day of spend by two teams, and a little the next day.
fn two_teams_spend() -> Ledger {
    let mut l = Ledger::new(LedgerConfig::default(), crate::prices(), vec![]).unwrap();
    let a = Scopes {
        team: Some("search"),
        key: Some("web"),
    };
    let b = Scopes {
        team: Some("ads"),
        key: Some("batch"),
    };
    for (scopes, model, p, c) in [
        (a, "gpt-4.1", 1000, 500),
        (a, "gpt-4.1", 3000, 500),
        (a, "deepseek-chat", 10_000, 0),
        (b, "gpt-4o-mini", 100_000, 100_000),
    ] {
        let r = l.reserve(&scopes, model, p, c, t0()).unwrap();
        l.settle(r, Tokens::new(p, c), t0());
    }
    // Tomorrow's usage is outside today's report.
    let r = l
        .reserve(&a, "gpt-4.1", 1, 1, t0() + Duration::from_secs(86_400))
        .unwrap();
    l.settle(r, Tokens::new(1, 1), t0() + Duration::from_secs(86_400));
    l
}

#[test]
fn reports_give_spend_and_tokens_per_key_team_and_model_with_a_total() {
    let l = two_teams_spend();
    let today = l.report(
        t0(),
        t0() + Duration::from_secs(3600),
        &ReportFilter::default(),
    );
    let lines: Vec<(Option<&str>, &str, u64, u64, Money)> = today
        .usage
        .iter()
        .map(|u| {
            (
                u.key.as_deref(),
                u.model.as_str(),
                u.requests,
                u.total_tokens,
                u.estimated_cost,
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (Some("web"), "gpt-4.1", 2, 5000, Money::from_micros(40_000)),
            (
                Some("batch"),
                "gpt-4o-mini",
                1,
                200_000,
                Money::from_micros(30_000)
            ),
            (
                Some("web"),
                "deepseek-v3.2",
                1,
                10_000,
                Money::from_micros(4_200)
            ),
        ]
    );
    assert_eq!(today.total_estimated_cost, Money::from_micros(74_200));
    let ads = l.report(
        t0(),
        t0() + Duration::from_secs(3600),
        &ReportFilter {
            team: Some("ads"),
            ..ReportFilter::default()
        },
    );
    assert_eq!(ads.usage.len(), 1);
    let nobody = l.report(
        t0(),
        t0() + Duration::from_secs(3600),
        &ReportFilter {
            key: Some("nobody"),
            ..ReportFilter::default()
        },
    );
    assert!(nobody.usage.is_empty());
    let two_days = l.report(
        t0(),
        t0() + Duration::from_secs(2 * 86_400),
        &ReportFilter::default(),
    );
    assert_eq!(two_days.total_estimated_cost, Money::from_micros(74_216));
}

/// A restart on the first day: the week before is replayed from stored
/// usage, hour by hour, and the anomaly check has its baseline at once.
#[test]
fn the_anomaly_baseline_is_rebuilt_from_restored_usage() {
    let day0 = 1_795_305_600; // 2026-11-22T00:00:00Z
    let day7 = day0 + 7 * 86_400;
    let mut l = Ledger::new(LedgerConfig::default(), crate::prices(), vec![]).unwrap();
    let none = Scopes::default();
    for d in 0..7 {
        for hour in [9, 20] {
            let tokens = Tokens::new(1_000_000, 0);
            let at_ = at(day0 + d * 86_400 + hour * 3600);
            l.restore(
                &none,
                "gpt-4.1",
                1,
                tokens,
                Money::from_dollars(8),
                at_,
                at(day7),
            );
        }
    }
    // Today, before the restart: $8 by 08:00.
    let tokens = Tokens::new(1_000_000, 0);
    l.restore(
        &none,
        "gpt-4.1",
        1,
        tokens,
        Money::from_dollars(8),
        at(day7 + 8 * 3600),
        at(day7 + 8 * 3600 + 60),
    );
    drain(&mut l);
    // Another $8 at 09:00: $16 against the usual $8 by then.
    let r = l
        .reserve(&none, "gpt-4.1", 1_000_000, 0, at(day7 + 9 * 3600))
        .unwrap();
    l.settle(r, Tokens::new(1_000_000, 0), at(day7 + 9 * 3600));
    assert_eq!(
        anomalies(&mut l),
        vec![Event::Anomaly {
            today: Money::from_dollars(16),
            trailing_average: Money::from_dollars(8),
            days: 7
        }]
    );
}
