use std::time::{Duration, SystemTime};

use canary::{CanaryError, Phase, Rollout, SavedArm, Schedule, Share, Verdict};
use proptest::prelude::*;

const MODELS: [&str; 3] = ["a", "b", "c"];

fn three() -> Rollout {
    Rollout::builder("base")
        .candidate("a", Share::ZERO)
        .candidate("b", Share::ZERO)
        .candidate("c", Share::ZERO)
        .salt("saved")
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// After any history of share changes, a rollout restored from its saved
    /// state in a fresh process puts every user on the arm they had.
    #[test]
    fn a_restored_rollout_keeps_every_user_on_their_arm(
        changes in prop::collection::vec((0usize..3, 0u32..=10_000), 1..30),
    ) {
        let mut before = three();
        for (arm, bp) in changes {
            let _ = before.set_share(MODELS[arm], Share::from_bp(bp).unwrap());
        }
        let saved = before.saved();
        let total: u32 = saved.arms.iter().map(SavedArm::share_bp).sum();
        let shares: u32 = before.candidates().iter().map(|c| u32::from(c.share.bp())).sum();
        prop_assert_eq!(total, shares);
        let mut after = three();
        after.restore(&saved).unwrap();
        prop_assert_eq!(after.saved(), saved);
        for i in 0..2_000 {
            let subject = format!("user-{i}");
            prop_assert_eq!(after.model_for(&subject).unwrap(), before.model_for(&subject).unwrap());
        }
    }
}

#[test]
fn phase_enabled_and_schedule_position_come_back() {
    let schedule = Schedule::even(
        vec![Share::percent(5).unwrap(), Share::percent(50).unwrap()],
        Duration::from_secs(60),
    );
    let build = || {
        Rollout::builder("base")
            .candidate("a", Share::ZERO)
            .schedule(schedule.clone())
            .build()
            .unwrap()
    };
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut before = build();
    before.start(t0);
    before.handle_verdict(&Verdict::Promote, t0);
    before.set_enabled(false);
    let mut after = build();
    after.restore(&before.saved()).unwrap();
    assert!(!after.is_enabled());
    assert_eq!(after.share("a"), Some(Share::percent(5).unwrap()));
    assert_eq!(after.step(), Some(0));
    // The promoted step advances at the end of its hold, as it would have.
    assert_eq!(after.poll_timeout(), before.poll_timeout());
    after.handle_timeout(t0 + Duration::from_secs(61));
    assert_eq!(after.share("a"), Some(Share::percent(50).unwrap()));

    before.rollback("too slow");
    let mut again = build();
    again.restore(&before.saved()).unwrap();
    assert_eq!(
        again.phase(),
        &Phase::RolledBack {
            reason: "too slow".into()
        }
    );
}

#[test]
fn a_saved_state_that_does_not_fit_changes_nothing() {
    let mut r = three();
    r.set_share("a", Share::percent(10).unwrap()).unwrap();
    let mut saved = r.saved();
    saved.arms[0].model = "gone".into();
    let mut fresh = three();
    let e = fresh.restore(&saved).unwrap_err();
    assert!(matches!(e, CanaryError::SavedMismatch { .. }), "{e}");
    assert!(e.to_string().contains("gone"), "{e}");
    assert_eq!(fresh.share("a"), Some(Share::ZERO));

    let mut overlapping = r.saved();
    overlapping.arms[1].buckets = vec![(0, 10)];
    assert!(fresh.restore(&overlapping).is_err());
    let mut out_of_range = r.saved();
    out_of_range.arms[1].buckets = vec![(9_990, 10_001)];
    assert!(fresh.restore(&out_of_range).is_err());
    let mut two = r.saved();
    two.arms.pop();
    assert!(fresh.restore(&two).is_err());
    assert_eq!(fresh.saved(), three().saved(), "nothing changed");
}
