use budget::{
    BudgetError, Event, Ledger, LedgerConfig, Limit, Money, Period, Scope, Scopes, Tokens,
};

use crate::t0;

fn ledger() -> Ledger {
    Ledger::new(LedgerConfig::default(), crate::prices(), vec![]).unwrap()
}

const ENG: Scopes<'static> = Scopes {
    team: Some("eng"),
    key: Some("ci"),
};

/// Books one request of `tokens` prompt tokens of gpt-4.1 ($8 per million in).
fn spend(l: &mut Ledger, scopes: &Scopes<'_>, tokens: u64) -> Money {
    let r = l.reserve(scopes, "gpt-4.1", tokens, 0, t0()).unwrap();
    l.settle(r, Tokens::new(tokens, 0), t0()).cost
}

fn team_daily(dollars: u64) -> Limit {
    Limit::new(
        Scope::Team("eng".into()),
        Period::Daily,
        Money::from_dollars(dollars),
    )
}

#[test]
fn an_added_limit_starts_from_what_its_scope_spent_this_period() {
    let mut l = ledger();
    let cost = spend(&mut l, &ENG, 1_000_000); // $8
    assert_eq!(cost, Money::from_dollars(8));
    spend(&mut l, &Scopes::default(), 1_000_000); // another team's $8
    l.set_limit(team_daily(10), t0()).unwrap();
    let (_, spent, _) = l.limits().next().unwrap();
    assert_eq!(
        spent,
        Money::from_dollars(8),
        "only the team's spend counts"
    );
    // 80% spent: the 50% and 75% thresholds are announced at once.
    let crossed: Vec<u8> = std::iter::from_fn(|| l.poll_event())
        .filter_map(|e| match e {
            Event::Threshold { percent, .. } => Some(percent),
            _ => None,
        })
        .collect();
    assert_eq!(crossed, vec![50, 75]);
    // $2 left: a $4 request of the team is refused, another team's is not.
    let e = l.reserve(&ENG, "gpt-4.1", 500_000, 0, t0()).unwrap_err();
    assert!(matches!(e, BudgetError::BudgetExceeded { .. }), "{e}");
    assert!(
        l.reserve(&Scopes::default(), "gpt-4.1", 500_000, 0, t0())
            .is_ok()
    );
}

#[test]
fn a_changed_limit_keeps_its_spend_and_a_removed_one_stops_refusing() {
    let mut l = ledger();
    l.set_limit(team_daily(10), t0()).unwrap();
    spend(&mut l, &ENG, 1_000_000);
    l.set_limit(team_daily(20), t0()).unwrap();
    let limits: Vec<_> = l.limits().map(|(x, s, _)| (x.hard, s)).collect();
    assert_eq!(
        limits,
        vec![(Money::from_dollars(20), Money::from_dollars(8))]
    );
    l.set_limit(team_daily(8), t0()).unwrap();
    assert!(
        l.reserve(&ENG, "gpt-4.1", 1_000, 0, t0()).is_err(),
        "spent in full"
    );
    assert!(l.remove_limit(&Scope::Team("eng".into()), Period::Daily, t0()));
    assert!(!l.remove_limit(&Scope::Team("eng".into()), Period::Daily, t0()));
    assert_eq!(l.limits().count(), 0);
    spend(&mut l, &ENG, 1_000_000);
    // Set again: it counts all the team spent today, the $8 while it was gone too.
    l.set_limit(team_daily(100), t0()).unwrap();
    let (_, spent, _) = l.limits().next().unwrap();
    assert_eq!(spent, Money::from_dollars(16));
}

#[test]
fn a_request_in_flight_counts_against_a_limit_added_meanwhile() {
    let mut l = ledger();
    let r = l.reserve(&ENG, "gpt-4.1", 1_000_000, 0, t0()).unwrap();
    l.set_limit(team_daily(10), t0()).unwrap();
    let (_, spent, reserved) = l.limits().next().unwrap();
    assert_eq!((spent, reserved), (Money::ZERO, Money::ZERO));
    l.settle(r, Tokens::new(1_000_000, 0), t0());
    let (_, spent, reserved) = l.limits().next().unwrap();
    assert_eq!((spent, reserved), (Money::from_dollars(8), Money::ZERO));
}

#[test]
fn a_bad_limit_changes_nothing() {
    let mut l = ledger();
    let zero = Limit::new(Scope::Global, Period::Daily, Money::ZERO);
    assert!(l.set_limit(zero, t0()).is_err());
    let unpriced = team_daily(5).soft(0.5).fallback("no-such-model");
    let e = l.set_limit(unpriced, t0()).unwrap_err();
    assert!(e.to_string().contains("no-such-model"), "{e}");
    assert_eq!(l.limits().count(), 0);
}
