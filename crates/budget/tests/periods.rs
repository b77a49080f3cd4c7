use std::time::Duration;

use budget::{
    Calendar, Event, Ledger, LedgerConfig, Limit, Money, Period, Scope, Scopes, Tokens, Weekday,
};

use crate::at;

const NONE: Scopes<'static> = Scopes {
    team: None,
    key: None,
};

fn bangkok(limits: Vec<Limit>, week_start: Weekday) -> Ledger {
    let cfg = LedgerConfig {
        calendar: Calendar {
            utc_offset_seconds: 7 * 3600,
            week_start,
        },
        ..LedgerConfig::default()
    };
    Ledger::new(cfg, crate::prices(), limits).unwrap()
}

fn spend(l: &mut Ledger, now: std::time::SystemTime) {
    // $8 of gpt-4.1.
    let r = l.reserve(&NONE, "gpt-4.1", 1_000_000, 0, now).unwrap();
    l.settle(r, Tokens::new(1_000_000, 0), now);
}

fn spent(l: &Ledger) -> Vec<Money> {
    l.limits().map(|(_, s, _)| s).collect()
}

/// 2026-11-22T17:00:00Z: midnight in Bangkok, the start of Monday 2026-11-23 there.
const BKK_MIDNIGHT: u64 = 1_795_366_800;

#[test]
fn daily_limits_reset_at_local_midnight_exactly() {
    let mut l = bangkok(
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_dollars(100),
        )],
        Weekday::Monday,
    );
    spend(&mut l, at(BKK_MIDNIGHT - 12 * 3600));
    let one_ms_before = at(BKK_MIDNIGHT) - Duration::from_millis(1);
    l.handle_timeout(one_ms_before);
    assert_eq!(spent(&l), vec![Money::from_dollars(8)]);
    assert_eq!(l.poll_timeout(), Some(at(BKK_MIDNIGHT)));
    l.handle_timeout(at(BKK_MIDNIGHT));
    assert_eq!(spent(&l), vec![Money::ZERO]);
    let events: Vec<Event> = std::iter::from_fn(|| l.poll_event()).collect();
    assert!(events.contains(&Event::PeriodReset {
        scope: Scope::Global,
        period: Period::Daily,
        spent: Money::from_dollars(8)
    }));
}

#[test]
fn never_24_hours_after_the_first_request() {
    let mut l = bangkok(
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_dollars(100),
        )],
        Weekday::Monday,
    );
    // A request at 23:30 local is in a day that ends 30 minutes later.
    spend(&mut l, at(BKK_MIDNIGHT - 1800));
    l.handle_timeout(at(BKK_MIDNIGHT + 60));
    assert_eq!(spent(&l), vec![Money::ZERO]);
}

#[test]
fn weekly_limits_reset_on_the_configured_weekday() {
    let limits = || {
        vec![Limit::new(
            Scope::Global,
            Period::Weekly,
            Money::from_dollars(100),
        )]
    };
    // Bangkok's Monday 00:00 is BKK_MIDNIGHT: an ISO week ends there.
    let mut iso = bangkok(limits(), Weekday::Monday);
    spend(&mut iso, at(BKK_MIDNIGHT - 3600));
    iso.handle_timeout(at(BKK_MIDNIGHT));
    assert_eq!(spent(&iso), vec![Money::ZERO]);
    // Weeks starting on Sunday began a day earlier and go on.
    let mut sunday = bangkok(limits(), Weekday::Sunday);
    spend(&mut sunday, at(BKK_MIDNIGHT - 3600));
    sunday.handle_timeout(at(BKK_MIDNIGHT));
    assert_eq!(spent(&sunday), vec![Money::from_dollars(8)]);
    sunday.handle_timeout(at(BKK_MIDNIGHT + 6 * 86_400));
    assert_eq!(spent(&sunday), vec![Money::ZERO]);
}

#[test]
fn monthly_limits_reset_on_the_first() {
    let mut l = bangkok(
        vec![Limit::new(
            Scope::Global,
            Period::Monthly,
            Money::from_dollars(1000),
        )],
        Weekday::Monday,
    );
    // 2026-12-01 00:00 in Bangkok = 2026-11-30T17:00:00Z.
    let first = 1_796_058_000;
    spend(&mut l, at(first - 10 * 86_400));
    l.handle_timeout(at(first - 1));
    assert_eq!(spent(&l), vec![Money::from_dollars(8)]);
    l.handle_timeout(at(first));
    assert_eq!(spent(&l), vec![Money::ZERO]);
}

#[test]
fn a_reservation_taken_before_midnight_still_counts_after_it() {
    let mut l = bangkok(
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_dollars(10),
        )],
        Weekday::Monday,
    );
    let r = l
        .reserve(&NONE, "gpt-4.1", 1_000_000, 0, at(BKK_MIDNIGHT - 60))
        .unwrap();
    l.handle_timeout(at(BKK_MIDNIGHT));
    let (_, spent, reserved) = l.limits().next().unwrap();
    assert_eq!((spent, reserved), (Money::ZERO, Money::from_dollars(8)));
    // Its cost is booked in the day it settles in.
    l.settle(r, Tokens::new(500_000, 0), at(BKK_MIDNIGHT + 60));
    assert_eq!(spent_of(&l), Money::from_dollars(4));
}

fn spent_of(l: &Ledger) -> Money {
    l.limits().next().unwrap().1
}
