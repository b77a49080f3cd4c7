use std::time::Duration;

use budget::{Calendar, Ledger, LedgerConfig, Limit, Money, Period, Scope, Scopes, Tokens};
use proptest::prelude::*;

use crate::t0;

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        team: bool,
        model: usize,
        input: u64,
        output: u64,
    },
    /// Settle with a fraction (per mille) of the reserved tokens: never more.
    Settle {
        which: usize,
        permille: u64,
    },
    Cancel {
        which: usize,
    },
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0usize..3, 0u64..400_000, 0u64..200_000).prop_map(|(team, model, input, output)| Op::Reserve { team, model, input, output }),
        3 => (any::<usize>(), 0u64..=1000).prop_map(|(which, permille)| Op::Settle { which, permille }),
        1 => any::<usize>().prop_map(|which| Op::Cancel { which }),
        2 => prop_oneof![1u64..120, 1u64..3_600, 1u64..200_000].prop_map(|secs| Op::Advance { secs }),
    ]
}

const MODELS: [&str; 3] = ["gpt-4.1", "claude-sonnet-4.5", "deepseek-chat"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// However reserve, settle, cancel and time interleave (settlements within
    /// their reservations), no limit's spend passes it, spent + reserved never
    /// passes it, and the sum of settled costs equals what the limits booked.
    #[test]
    fn no_interleaving_overspends_and_sums_are_exact(ops in prop::collection::vec(op(), 1..150)) {
        let cfg = LedgerConfig { calendar: Calendar::new(7 * 3600), reservation_ttl: Duration::from_secs(300), ..LedgerConfig::default() };
        let limits = vec![
            Limit::new(Scope::Global, Period::Daily, Money::from_dollars(20)),
            Limit::new(Scope::Team("t".into()), Period::Weekly, Money::from_dollars(9)),
            Limit::new(Scope::Model("deepseek-v3.2".into()), Period::Monthly, Money::from_cents(30)),
        ];
        let mut l = Ledger::new(cfg, crate::prices(), limits).unwrap();
        let mut now = t0();
        let mut held = Vec::new();
        for op in ops {
            match op {
                Op::Reserve { team, model, input, output } => {
                    let scopes = Scopes { team: team.then_some("t"), key: None };
                    if let Ok(r) = l.reserve(&scopes, MODELS[model], input, output, now) {
                        held.push((r, input, output));
                    }
                }
                Op::Settle { which, permille } => {
                    if !held.is_empty() {
                        let (r, input, output) = held.swap_remove(which % held.len());
                        let tokens = Tokens::new(input * permille / 1000, output * permille / 1000);
                        let s = l.settle(r, tokens, now);
                        prop_assert!(s.cost <= s.reserved, "a settlement within its tokens costs at most its reservation");
                    }
                }
                Op::Cancel { which } => {
                    if !held.is_empty() {
                        let (r, ..) = held.swap_remove(which % held.len());
                        l.cancel(r, now);
                    }
                }
                Op::Advance { secs } => {
                    now += Duration::from_secs(secs);
                    l.handle_timeout(now);
                }
            }
            for (limit, spent, reserved) in l.limits() {
                prop_assert!(spent.saturating_add(reserved) <= limit.hard,
                    "{} {}: spent {spent} + reserved {reserved} > {}", limit.scope, limit.period, limit.hard);
            }
            let next = l.poll_timeout();
            prop_assert!(next.is_none_or(|t| t > now), "poll_timeout in the past");
        }
    }

    /// The sum of settled costs equals the sum of each request's own cost, and
    /// the report's total equals it too.
    #[test]
    fn settled_costs_sum_exactly(requests in prop::collection::vec((0usize..3, 0u64..2_000_000, 0u64..500_000, 0u64..1000), 1..60)) {
        let mut l = Ledger::new(LedgerConfig::default(), crate::prices(), vec![]).unwrap();
        let prices = crate::prices();
        let mut expected = Money::ZERO;
        let mut booked = Money::ZERO;
        for (model, input, output, cached) in requests {
            let tokens = Tokens { prompt: input, completion: output, cached: cached.min(input), cache_write: 0 };
            expected += prices.resolve(MODELS[model]).unwrap().price.cost(tokens);
            let r = l.reserve(&Scopes::default(), MODELS[model], input, output, t0()).unwrap();
            booked += l.settle(r, tokens, t0()).cost;
        }
        prop_assert_eq!(booked, expected);
        let report = l.report(t0(), t0() + Duration::from_secs(86_400), &budget::ReportFilter::default());
        prop_assert_eq!(report.total_estimated_cost, expected);
    }

    /// Spend resets exactly when a period boundary passes, never otherwise.
    #[test]
    fn resets_happen_exactly_at_boundaries(steps in prop::collection::vec(1u64..90_000, 1..40), offset_h in -11i32..=14) {
        let cal = Calendar::new(offset_h * 3600);
        let cfg = LedgerConfig { calendar: cal, ..LedgerConfig::default() };
        let limits = vec![
            Limit::new(Scope::Global, Period::Daily, Money::from_dollars(1_000_000)),
            Limit::new(Scope::Global, Period::Weekly, Money::from_dollars(1_000_000)),
            Limit::new(Scope::Global, Period::Monthly, Money::from_dollars(1_000_000)),
        ];
        let mut l = Ledger::new(cfg, crate::prices(), limits).unwrap();
        let mut now = t0();
        let mut expected = [0u64; 3];
        for step in steps {
            let before = now;
            now += Duration::from_secs(step);
            let r = l.reserve(&Scopes::default(), "gpt-4.1", 1_000_000, 0, now).unwrap();
            l.settle(r, Tokens::new(1_000_000, 0), now);
            for (i, kind) in [Period::Daily, Period::Weekly, Period::Monthly].into_iter().enumerate() {
                if cal.period_id(kind, before) != cal.period_id(kind, now) {
                    expected[i] = 0;
                }
                expected[i] += 8_000_000;
            }
            let spent: Vec<u64> = l.limits().map(|(_, s, _)| s.micros()).collect();
            prop_assert_eq!(spent, expected.to_vec());
        }
    }
}
