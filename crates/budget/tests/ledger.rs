use std::time::Duration;

use budget::{
    BudgetError, Event, Ledger, LedgerConfig, Limit, ModelPrice, Money, Period, Scope, Scopes,
    Tokens, UnknownModel,
};

use crate::t0;

fn dollars(d: u64) -> Money {
    Money::from_dollars(d)
}

fn ledger(limits: Vec<Limit>) -> Ledger {
    Ledger::new(LedgerConfig::default(), crate::prices(), limits).unwrap()
}

fn drain(l: &mut Ledger) -> Vec<Event> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

const NONE: Scopes<'static> = Scopes {
    team: None,
    key: None,
};

#[test]
fn a_limit_counts_spent_plus_reserved() {
    // gpt-4.1 at $8 per million: 1M tokens of worst case is $8.
    let mut l = ledger(vec![Limit::new(Scope::Global, Period::Daily, dollars(20))]);
    let a = l.reserve(&NONE, "gpt-4.1", 500_000, 500_000, t0()).unwrap();
    let b = l.reserve(&NONE, "gpt-4.1", 500_000, 500_000, t0()).unwrap();
    // $16 reserved: another $8 would make $24.
    let err = l
        .reserve(&NONE, "gpt-4.1", 500_000, 500_000, t0())
        .unwrap_err();
    assert_eq!(
        err,
        BudgetError::BudgetExceeded {
            scope: Scope::Global,
            period: Period::Daily,
            limit: dollars(20),
            spent: Money::ZERO,
            reserved: dollars(16),
            needed: dollars(8)
        }
    );
    assert_eq!(
        err.to_string(),
        "budget exceeded: global daily limit $20.00, spent $0.00, reserved $16.00, this request needs up to $8.00"
    );
    // Settling for less frees room.
    l.settle(a, Tokens::new(100_000, 50_000), t0());
    l.cancel(b, t0());
    let (_, spent, reserved) = l.limits().next().unwrap();
    assert_eq!((spent, reserved), (Money::from_cents(120), Money::ZERO));
    assert!(l.reserve(&NONE, "gpt-4.1", 500_000, 500_000, t0()).is_ok());
}

#[test]
fn every_applicable_scope_is_checked_and_others_are_not() {
    let mut l = ledger(vec![
        Limit::new(Scope::Global, Period::Monthly, dollars(1000)),
        Limit::new(Scope::Team("search".into()), Period::Daily, dollars(10)),
        Limit::new(Scope::Key("ci-bot".into()), Period::Daily, dollars(1)),
        Limit::new(
            Scope::Model("deepseek-v3.2".into()),
            Period::Weekly,
            Money::from_cents(50),
        ),
    ]);
    let search = Scopes {
        team: Some("search"),
        key: Some("web"),
    };
    // $8 fits the team's $10.
    let r = l.reserve(&search, "gpt-4.1", 1_000_000, 0, t0()).unwrap();
    l.settle(r, Tokens::new(1_000_000, 0), t0());
    let err = l.reserve(&search, "gpt-4.1", 300_000, 0, t0()).unwrap_err();
    assert!(
        matches!(err, BudgetError::BudgetExceeded { scope: Scope::Team(ref t), .. } if t == "search")
    );
    // Another team is not limited by search's spend.
    assert!(
        l.reserve(
            &Scopes {
                team: Some("ads"),
                key: None
            },
            "gpt-4.1",
            300_000,
            0,
            t0()
        )
        .is_ok()
    );
    // The key limit.
    let bot = Scopes {
        team: None,
        key: Some("ci-bot"),
    };
    assert!(matches!(
        l.reserve(&bot, "gpt-4.1", 200_000, 0, t0()),
        Err(BudgetError::BudgetExceeded {
            scope: Scope::Key(_),
            ..
        })
    ));
    // The model limit applies through the alias too: deepseek-chat is deepseek-v3.2.
    let r = l
        .reserve(&NONE, "deepseek-chat", 1_000_000, 0, t0())
        .unwrap();
    assert_eq!(r.model(), "deepseek-v3.2");
    assert!(matches!(
        l.reserve(&NONE, "deepseek-chat", 200_000, 0, t0()),
        Err(BudgetError::BudgetExceeded {
            scope: Scope::Model(_),
            ..
        })
    ));
    l.cancel(r, t0());
}

#[test]
fn above_the_soft_limit_expensive_models_degrade_and_the_hard_limit_refuses() {
    let limit = Limit::new(Scope::Global, Period::Daily, dollars(100))
        .soft(0.8)
        .fallback("gpt-4o-mini");
    let mut l = ledger(vec![limit]);
    // Spend $80 (10M tokens of gpt-4.1).
    let r = l.reserve(&NONE, "gpt-4.1", 10_000_000, 0, t0()).unwrap();
    assert!(r.degraded().is_none());
    l.settle(r, Tokens::new(10_000_000, 0), t0());
    let r = l.reserve(&NONE, "gpt-4.1", 1_000, 1_000, t0()).unwrap();
    assert_eq!(r.model(), "gpt-4o-mini");
    let d = r.degraded().unwrap();
    assert_eq!(
        (d.from.as_str(), d.to.as_str(), &d.scope, d.period),
        ("gpt-4.1", "gpt-4o-mini", &Scope::Global, Period::Daily)
    );
    // The reservation is priced at the model used.
    assert_eq!(r.amount(), Money::from_micros(300));
    l.cancel(r, t0());
    // The hard limit still refuses, even for the fallback.
    assert!(matches!(
        l.reserve(&NONE, "gpt-4.1", 200_000_000, 0, t0()),
        Err(BudgetError::BudgetExceeded { .. })
    ));
    assert!(
        drain(&mut l)
            .iter()
            .any(|e| matches!(e, Event::SoftLimit { fallback: Some(f), .. } if f == "gpt-4o-mini"))
    );
}

#[test]
fn models_cheaper_than_the_fallback_are_not_degraded() {
    let mut prices = crate::prices();
    prices.set(
        "tiny",
        ModelPrice::blended(Money::from_micros(10_000), None),
    );
    let limit = Limit::new(Scope::Global, Period::Daily, dollars(1))
        .soft(0.0)
        .fallback("gpt-4o-mini");
    let mut l = Ledger::new(LedgerConfig::default(), prices, vec![limit]).unwrap();
    let r = l.reserve(&NONE, "tiny", 1000, 0, t0()).unwrap();
    assert_eq!(
        r.model(),
        "tiny",
        "tiny is cheaper than the fallback: not degraded"
    );
    assert!(r.degraded().is_none());
    l.cancel(r, t0());
    let r = l.reserve(&NONE, "gpt-4.1", 1000, 0, t0()).unwrap();
    assert_eq!(
        r.model(),
        "gpt-4o-mini",
        "a soft limit of 0% degrades dearer models at once"
    );
    l.cancel(r, t0());
}

#[test]
fn settling_for_more_than_reserved_books_the_whole_cost_and_says_so() {
    let mut l = ledger(vec![Limit::new(Scope::Global, Period::Daily, dollars(10))]);
    let r = l.reserve(&NONE, "gpt-4.1", 1_000, 1_000, t0()).unwrap();
    let id = r.id();
    let s = l.settle(r, Tokens::new(1_000, 1_000_000), t0());
    assert_eq!(
        (s.cost, s.reserved, s.late),
        (
            Money::from_micros(8_008_000),
            Money::from_micros(16_000),
            false
        )
    );
    let (_, spent, reserved) = l.limits().next().unwrap();
    assert_eq!(
        (spent, reserved),
        (Money::from_micros(8_008_000), Money::ZERO)
    );
    assert!(drain(&mut l).contains(&Event::Overrun {
        reservation: id,
        reserved: Money::from_micros(16_000),
        cost: Money::from_micros(8_008_000)
    }));
}

#[test]
fn an_expired_reservation_is_booked_in_full_and_a_late_settlement_corrects_it() {
    let cfg = LedgerConfig {
        reservation_ttl: Duration::from_secs(60),
        ..LedgerConfig::default()
    };
    let mut l = Ledger::new(
        cfg,
        crate::prices(),
        vec![Limit::new(Scope::Global, Period::Daily, dollars(10))],
    )
    .unwrap();
    let r = l.reserve(&NONE, "gpt-4.1", 500_000, 500_000, t0()).unwrap(); // $8
    let r2 = l.reserve(&NONE, "gpt-4.1", 100_000, 0, t0()).unwrap(); // $0.80
    assert_eq!(l.poll_timeout(), Some(t0() + Duration::from_secs(60)));
    l.handle_timeout(t0() + Duration::from_secs(60));
    let (_, spent, reserved) = l.limits().next().unwrap();
    assert_eq!(
        (spent, reserved),
        (Money::from_cents(880), Money::ZERO),
        "booked in full: no money lost"
    );
    assert_eq!(l.outstanding(), 0);
    assert!(drain(&mut l).contains(&Event::ReservationExpired {
        reservation: 0,
        amount: dollars(8)
    }));
    // The late settlement books the real cost instead.
    let s = l.settle(r, Tokens::new(250_000, 0), t0() + Duration::from_secs(90));
    assert_eq!((s.cost, s.late), (dollars(2), true));
    // A late cancel refunds what expiry booked.
    l.cancel(r2, t0() + Duration::from_secs(90));
    let (_, spent, _) = l.limits().next().unwrap();
    assert_eq!(spent, dollars(2));
}

#[test]
fn unknown_models_are_rejected_or_charged_a_default_said_once() {
    let mut l = ledger(vec![]);
    assert_eq!(
        l.reserve(&NONE, "mystery-1", 10, 10, t0()).unwrap_err(),
        BudgetError::UnknownModel {
            model: "mystery-1".into()
        }
    );
    let mut prices = crate::prices();
    let default = ModelPrice::blended(dollars(20), None);
    prices.on_unknown(UnknownModel::Charge(default));
    let mut l = Ledger::new(LedgerConfig::default(), prices, vec![]).unwrap();
    for _ in 0..3 {
        let r = l.reserve(&NONE, "mystery-1", 1_000, 0, t0()).unwrap();
        assert_eq!(r.amount(), Money::from_cents(2));
        l.cancel(r, t0());
    }
    assert_eq!(
        drain(&mut l),
        vec![Event::UnknownModelCharged {
            model: "mystery-1".into(),
            price: default
        }]
    );
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let zero = Ledger::new(
        LedgerConfig::default(),
        crate::prices(),
        vec![Limit::new(Scope::Global, Period::Daily, Money::ZERO)],
    );
    assert_eq!(
        zero.unwrap_err().to_string(),
        "invalid budget config: global daily limit must be more than $0"
    );
    let fallback = Limit::new(Scope::Global, Period::Daily, dollars(1)).fallback("nope");
    let err = Ledger::new(LedgerConfig::default(), crate::prices(), vec![fallback]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid budget config: global daily limit: fallback model \"nope\" has no price"
    );
}

#[test]
fn ledger_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Ledger>();
    assert_send_sync::<budget::Reservation>();
    assert_send_sync::<BudgetError>();
}

#[test]
fn restoring_a_usage_log_continues_each_period_from_what_was_spent() {
    let limits = || {
        vec![
            Limit::new(Scope::Global, Period::Daily, dollars(20)),
            Limit::new(Scope::Team("search".into()), Period::Monthly, dollars(100)),
        ]
    };
    let search = Scopes {
        team: Some("search"),
        key: Some("web"),
    };
    let mut l = ledger(limits());
    let yesterday = t0() - Duration::from_secs(86_400);
    l.restore(
        &search,
        "gpt-4.1",
        3,
        Tokens::new(1_000, 500),
        dollars(15),
        t0(),
        t0(),
    );
    l.restore(
        &search,
        "gpt-4.1",
        1,
        Tokens::new(10, 5),
        dollars(4),
        yesterday,
        t0(),
    );
    // A model no longer priced still counts against the global and team limits.
    l.restore(
        &NONE,
        "retired-model",
        1,
        Tokens::new(1, 1),
        dollars(1),
        t0(),
        t0(),
    );
    let spent: Vec<Money> = l.limits().map(|(_, spent, _)| spent).collect();
    // Today's $16 against the daily limit; the month's $19 against the team's.
    assert_eq!(spent, vec![dollars(16), dollars(19)]);
    // $16 spent: a request that could cost $8 no longer fits today.
    assert!(matches!(
        l.reserve(&NONE, "gpt-4.1", 500_000, 500_000, t0()),
        Err(BudgetError::BudgetExceeded { .. })
    ));
    let report = l.report(t0(), t0(), &budget::ReportFilter::default());
    let requests: u64 = report.usage.iter().map(|r| r.requests).sum();
    assert_eq!(requests, 4, "today's restored requests are reported");
}
