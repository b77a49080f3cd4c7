use canary::{Rollout, Share, bucket};
use proptest::prelude::*;

const MODELS: [&str; 3] = ["a", "b", "c"];

/// One subject for each of the 10 000 buckets under the salt "prop".
fn representatives() -> &'static [String] {
    static REPS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    REPS.get_or_init(|| {
        let mut reps: Vec<Option<String>> = vec![None; 10_000];
        let mut missing = 10_000;
        let mut i = 0u64;
        while missing > 0 {
            let s = format!("rep-{i}");
            let slot = &mut reps[usize::from(bucket("prop", &s).unwrap())];
            if slot.is_none() {
                *slot = Some(s);
                missing -= 1;
            }
            i += 1;
        }
        reps.into_iter().flatten().collect()
    })
}

fn arms(r: &Rollout, subjects: &[String]) -> Vec<String> {
    subjects
        .iter()
        .map(|s| r.model_for(s).unwrap().to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Raising a candidate's share only moves users from the baseline onto it;
    /// lowering only moves its users to the baseline; other arms never move.
    #[test]
    fn ramps_are_monotonic(changes in prop::collection::vec((0usize..3, 0u32..=10_000), 1..40)) {
        let mut r = Rollout::builder("base")
            .candidate("a", Share::ZERO)
            .candidate("b", Share::ZERO)
            .candidate("c", Share::ZERO)
            .salt("prop")
            .build()
            .unwrap();
        let subjects: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
        for (arm, bp) in changes {
            let model = MODELS[arm];
            let old_share = r.share(model).unwrap();
            let before = arms(&r, &subjects);
            if r.set_share(model, Share::from_bp(bp).unwrap()).is_err() {
                prop_assert_eq!(&arms(&r, &subjects), &before, "a refused change moved users");
                continue;
            }
            let after = arms(&r, &subjects);
            let raised = bp >= u32::from(old_share.bp());
            for (b, a) in before.iter().zip(&after) {
                if b == a { continue; }
                if raised {
                    prop_assert!(b == "base" && a == model, "raising {model} moved a user {b} -> {a}");
                } else {
                    prop_assert!(b == model && a == "base", "lowering {model} moved a user {b} -> {a}");
                }
            }
        }
        // Shares are exact: with one subject per bucket, each arm holds
        // exactly its share in basis points.
        let reps = representatives();
        for model in MODELS {
            let on = reps.iter().filter(|s| &**r.model_for(s).unwrap() == model).count();
            prop_assert_eq!(on, usize::from(r.share(model).unwrap().bp()), "{}", model);
        }
    }

    /// The same subject always gets the same arm, from any equal rollout.
    #[test]
    fn assignment_is_sticky(subject in "\\PC{1,40}", bp in 0u32..=10_000) {
        let build = || Rollout::builder("base").candidate("cand", Share::from_bp(bp).unwrap()).salt("s").build().unwrap();
        let (r1, r2) = (build(), build());
        let first = r1.model_for(&subject).unwrap().clone();
        for _ in 0..5 {
            prop_assert_eq!(r1.model_for(&subject).unwrap(), &first);
        }
        prop_assert_eq!(r2.model_for(&subject).unwrap(), &first);
        prop_assert_eq!(&*first == "cand", bucket("s", &subject).unwrap() < bp as u16);
    }
}

#[test]
fn different_salts_give_independent_assignments() {
    let build = |salt: &str| {
        Rollout::builder("base")
            .candidate("cand", Share::percent(50).unwrap())
            .salt(salt)
            .build()
            .unwrap()
    };
    let (x, y) = (build("experiment-x"), build("experiment-y"));
    let n = 100_000;
    let (mut in_x, mut in_both) = (0u32, 0u32);
    for i in 0..n {
        let s = format!("user-{i}");
        let a = &**x.model_for(&s).unwrap() == "cand";
        let b = &**y.model_for(&s).unwrap() == "cand";
        in_x += u32::from(a);
        in_both += u32::from(a && b);
    }
    let overlap = f64::from(in_both) / f64::from(in_x);
    assert!(
        (overlap - 0.5).abs() < 0.01,
        "of experiment x's candidates, {overlap:.4} are in y's"
    );
}
