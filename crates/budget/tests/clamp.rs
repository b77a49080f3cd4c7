use budget::{BudgetError, Ledger, LedgerConfig, Limit, Money, Period, Scope, Scopes, Tokens};
use proptest::prelude::*;

use crate::t0;

fn ledger(hard: Money) -> Ledger {
    let limits = vec![Limit::new(Scope::Global, Period::Daily, hard)];
    Ledger::new(LedgerConfig::default(), crate::prices(), limits).unwrap()
}

#[test]
fn the_output_is_clamped_to_what_the_budget_can_pay() {
    // gpt-4.1: $8 per million tokens in and out; $0.10 left pays 12 500 tokens.
    let mut l = ledger(Money::from_cents(10));
    let scopes = Scopes::default();
    let r = l
        .reserve_up_to(&scopes, "gpt-4.1", 2_500, (256, 32_768), t0())
        .unwrap();
    assert_eq!(r.output_tokens(), 10_000);
    assert_eq!(r.amount(), Money::from_cents(10));
    // Nothing is left: the next request cannot have even 256 tokens.
    let e = l
        .reserve_up_to(&scopes, "gpt-4.1", 10, (256, 32_768), t0())
        .unwrap_err();
    assert!(matches!(e, BudgetError::BudgetExceeded { .. }), "{e}");
    l.settle(r, Tokens::new(2_500, 4_000), t0());
    // What the settlement gave back serves again, clamped.
    let r = l
        .reserve_up_to(&scopes, "gpt-4.1", 500, (256, 32_768), t0())
        .unwrap();
    assert_eq!(r.output_tokens(), 6_000 - 500);
    // A request that fits is not clamped.
    let mut roomy = ledger(Money::from_dollars(100));
    let r = roomy
        .reserve_up_to(&scopes, "gpt-4.1", 500, (256, 32_768), t0())
        .unwrap();
    assert_eq!(r.output_tokens(), 32_768);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Requests with no output cap against a model that always writes as
    /// much as it is allowed: however they interleave, spend never passes the
    /// hard limit, and a request is refused only when not even its minimum
    /// output fits.
    #[test]
    fn clamped_requests_never_overspend(
        requests in prop::collection::vec((1u64..20_000, 0u64..2_000, any::<bool>()), 1..120),
        hard_cents in 1u64..500,
    ) {
        let hard = Money::from_cents(hard_cents);
        let mut l = ledger(hard);
        let scopes = Scopes::default();
        let mut held = Vec::new();
        for (input, min, settle_one) in requests {
            match l.reserve_up_to(&scopes, "gpt-4.1", input, (min, 32_768), t0()) {
                Ok(r) => {
                    prop_assert!(r.output_tokens() >= min.min(32_768));
                    let output = r.output_tokens();
                    held.push((r, input, output));
                }
                Err(BudgetError::BudgetExceeded { spent, reserved, needed, .. }) => {
                    prop_assert!(spent.saturating_add(reserved).saturating_add(needed) > hard);
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
            if settle_one && !held.is_empty() {
                // The answer is as long as the cap let it be.
                let (r, input, output) = held.swap_remove(0);
                l.settle(r, Tokens::new(input, output), t0());
            }
            let (_, spent, reserved) = l.limits().next().unwrap();
            prop_assert!(spent.saturating_add(reserved) <= hard);
        }
        for (r, input, output) in held {
            l.settle(r, Tokens::new(input, output), t0());
        }
        prop_assert!(l.limits().next().unwrap().1 <= hard);
    }
}
