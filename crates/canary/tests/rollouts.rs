use canary::{
    Arm, Attribute, CanaryError, Cause, Context, Event, Matcher, Phase, Reason, Rollout, Rule,
    Share, Target,
};

fn pct(p: u8) -> Share {
    Share::percent(p).unwrap()
}

fn ten_percent() -> Rollout {
    Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", pct(10))
        .salt("launch-1")
        .build()
        .unwrap()
}

fn share_on(r: &Rollout, model: &str, n: usize) -> usize {
    (0..n)
        .filter(|i| &**r.model_for(&format!("user-{i}")).unwrap() == model)
        .count()
}

fn drain(r: &mut Rollout) -> Vec<Event> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

#[test]
fn the_baseline_gets_what_the_candidates_do_not() {
    let r = Rollout::builder("base")
        .candidate("a", pct(20))
        .candidate("b", pct(30))
        .salt("s")
        .build()
        .unwrap();
    let n = 20_000;
    let (a, b) = (share_on(&r, "a", n), share_on(&r, "b", n));
    let base = share_on(&r, "base", n);
    assert_eq!(a + b + base, n);
    assert!((3_700..4_300).contains(&a), "{a}");
    assert!((5_600..6_400).contains(&b), "{b}");
}

#[test]
fn shares_are_validated_and_a_bad_change_leaves_state_unchanged() {
    let mut r = Rollout::builder("base")
        .candidate("a", pct(60))
        .candidate("b", pct(30))
        .build()
        .unwrap();
    let before: Vec<_> = (0..2000)
        .map(|i| r.model_for(&format!("u{i}")).unwrap().clone())
        .collect();
    assert_eq!(
        r.set_share("b", pct(50)),
        Err(CanaryError::SharesExceedTotal { total_bp: 11_000 })
    );
    assert!(matches!(
        r.set_fraction("a", 1.5),
        Err(CanaryError::ShareOutOfRange { .. })
    ));
    assert!(matches!(
        r.set_fraction("a", f64::NAN),
        Err(CanaryError::ShareOutOfRange { .. })
    ));
    assert_eq!(
        r.set_share("nope", pct(1)),
        Err(CanaryError::UnknownModel {
            model: "nope".into()
        })
    );
    let after: Vec<_> = (0..2000)
        .map(|i| r.model_for(&format!("u{i}")).unwrap().clone())
        .collect();
    assert_eq!(before, after);
    assert_eq!((r.share("a"), r.share("b")), (Some(pct(60)), Some(pct(30))));
    assert!(drain(&mut r).is_empty());
}

#[test]
fn building_rejects_bad_rollouts() {
    let e = |b: canary::RolloutBuilder| b.build().unwrap_err();
    assert_eq!(e(Rollout::builder("base")), CanaryError::NoCandidates);
    assert_eq!(
        e(Rollout::builder("base").candidate("base", pct(1))),
        CanaryError::DuplicateModel {
            model: "base".into()
        }
    );
    assert_eq!(
        e(Rollout::builder("b")
            .candidate("x", pct(1))
            .candidate("x", pct(1))),
        CanaryError::DuplicateModel { model: "x".into() }
    );
    assert_eq!(
        e(Rollout::builder("b")
            .candidate("x", pct(70))
            .candidate("y", pct(40))),
        CanaryError::SharesExceedTotal { total_bp: 11_000 }
    );
    assert_eq!(
        e(Rollout::builder("b")
            .candidate("x", pct(1))
            .candidate("y", pct(1))
            .scheme(canary::Scheme::Seed(canary::SeedBuckets::Hundred))),
        CanaryError::SeedSchemeNeedsOneCandidate
    );
    assert_eq!(
        e(Rollout::builder("b").candidate("x", pct(1)).allow("u", "z")),
        CanaryError::UnknownModel { model: "z".into() }
    );
}

#[test]
fn runtime_adjustment_takes_a_fraction_or_basis_points_and_records_old_and_new() {
    let mut r = ten_percent();
    r.set_fraction("claude-sonnet-4.5", 0.25).unwrap();
    r.set_share("claude-sonnet-4.5", Share::from_bp(2_600).unwrap())
        .unwrap();
    assert_eq!(
        drain(&mut r),
        vec![
            Event::ShareChanged {
                model: "claude-sonnet-4.5".into(),
                old: pct(10),
                new: pct(25),
                cause: Cause::Operator
            },
            Event::ShareChanged {
                model: "claude-sonnet-4.5".into(),
                old: pct(25),
                new: Share::from_bp(2_600).unwrap(),
                cause: Cause::Operator
            },
        ]
    );
    let on = share_on(&r, "claude-sonnet-4.5", 20_000);
    assert!((4_900..5_500).contains(&on), "{on}");
}

#[test]
fn full_rollout_puts_everyone_on_the_candidate() {
    let mut r = Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", pct(10))
        .deny("vip")
        .build()
        .unwrap();
    r.full_rollout("claude-sonnet-4.5").unwrap();
    assert_eq!(share_on(&r, "claude-sonnet-4.5", 1000), 1000);
    let a = r.assign(&Context::new("vip")).unwrap();
    assert_eq!((a.arm, a.reason), (Arm::Candidate(0), Reason::FullRollout));
    assert_eq!(
        drain(&mut r),
        vec![Event::FullRollout {
            model: "claude-sonnet-4.5".into(),
            previous: "running".into()
        }]
    );
    // Setting a share returns to a partial rollout.
    r.set_share("claude-sonnet-4.5", pct(50)).unwrap();
    assert_eq!(r.phase(), &Phase::Running);
}

#[test]
fn rollback_puts_everyone_on_the_baseline_until_restarted() {
    let mut r = ten_percent();
    r.set_share("claude-sonnet-4.5", pct(40)).unwrap();
    drain(&mut r);
    r.rollback("bad answers");
    assert_eq!(share_on(&r, "gpt-4.1", 1000), 1000);
    assert_eq!(
        drain(&mut r),
        vec![Event::RolledBack {
            reason: "bad answers".into(),
            shares_before: vec![("claude-sonnet-4.5".into(), pct(40))],
            cause: Cause::Operator
        }]
    );
    assert_eq!(
        r.set_share("claude-sonnet-4.5", pct(5)),
        Err(CanaryError::RolledBack {
            reason: "bad answers".into()
        })
    );
    assert!(r.full_rollout("claude-sonnet-4.5").is_err());
    r.restart(std::time::SystemTime::UNIX_EPOCH);
    assert_eq!(r.phase(), &Phase::Running);
    assert_eq!(r.share("claude-sonnet-4.5"), Some(Share::ZERO));
    r.set_share("claude-sonnet-4.5", pct(5)).unwrap();
}

#[test]
fn a_disabled_rollout_puts_everyone_on_the_baseline() {
    let mut r = Rollout::builder("base")
        .candidate("cand", pct(50))
        .allow("u1", "cand")
        .build()
        .unwrap();
    r.set_enabled(false);
    let a = r.assign(&Context::new("u1")).unwrap();
    assert_eq!((&**a.model, a.reason), ("base", Reason::Disabled));
    assert_eq!(share_on(&r, "base", 500), 500);
    r.set_enabled(true);
    assert_eq!(
        drain(&mut r),
        vec![
            Event::EnabledChanged {
                old: true,
                new: false
            },
            Event::EnabledChanged {
                old: false,
                new: true
            }
        ]
    );
    assert_eq!(&**r.model_for("u1").unwrap(), "cand");
}

#[test]
fn allow_and_deny_lists_are_checked_before_hashing_and_deny_wins() {
    let r = Rollout::builder("base")
        .candidate("cand", Share::ZERO)
        .allow("alice", "cand")
        .allow("bob", "cand")
        .deny("bob")
        .build()
        .unwrap();
    let alice = r.assign(&Context::new("alice")).unwrap();
    assert_eq!((&**alice.model, alice.reason), ("cand", Reason::Allowed));
    let bob = r.assign(&Context::new("bob")).unwrap();
    assert_eq!((&**bob.model, bob.reason), ("base", Reason::Denied));
    let carol = r.assign(&Context::new("carol")).unwrap();
    assert!(matches!(carol.reason, Reason::Bucket(_)));
    assert_eq!(&**carol.model, "base");
}

#[test]
fn rules_on_key_name_team_and_headers_express_the_seeds_test_keys() {
    let r = Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", Share::ZERO)
        .rule(Rule {
            attribute: Attribute::KeyName,
            matcher: Matcher::Contains("test".into()),
            target: Target::Candidate("claude-sonnet-4.5".into()),
        })
        .rule(Rule {
            attribute: Attribute::Team,
            matcher: Matcher::Equals("finance".into()),
            target: Target::Baseline,
        })
        .rule(Rule {
            attribute: Attribute::Header("X-Canary".into()),
            matcher: Matcher::StartsWith("y".into()),
            target: Target::Candidate("claude-sonnet-4.5".into()),
        })
        .build()
        .unwrap();
    // The seed: `if "test" in key_name.lower()`.
    let a = r
        .assign(&Context::new("u1").key_name("Staging-TEST-key"))
        .unwrap();
    assert_eq!(
        (&**a.model, a.reason),
        ("claude-sonnet-4.5", Reason::Rule(0))
    );
    let b = r
        .assign(&Context::new("u1").key_name("prod").team("Finance"))
        .unwrap();
    assert_eq!((&**b.model, b.reason), ("gpt-4.1", Reason::Rule(1)));
    let headers = [("x-canary", "yes")];
    let c = r.assign(&Context::new("u1").headers(&headers)).unwrap();
    assert_eq!(
        (&**c.model, c.reason),
        ("claude-sonnet-4.5", Reason::Rule(2))
    );
    let d = r.assign(&Context::new("u1").key_name("prod")).unwrap();
    assert!(matches!(d.reason, Reason::Bucket(_)));
    // Multi-byte values never panic a prefix match.
    let thai = [("x-canary", "ยืนยัน")];
    assert!(r.assign(&Context::new("u1").headers(&thai)).is_ok());
}

#[test]
fn rollout_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Rollout>();
    assert_send_sync::<canary::ArmStats>();
    assert_send_sync::<CanaryError>();
}

#[cfg(feature = "serde")]
#[test]
fn events_phases_and_verdicts_serialize() {
    let mut r = ten_percent();
    r.set_share("claude-sonnet-4.5", pct(20)).unwrap();
    r.rollback("latency");
    let events = serde_json::to_string(&drain(&mut r)).unwrap();
    assert!(events.contains(r#""event":"share_changed""#), "{events}");
    assert!(events.contains(r#""old":1000,"new":2000"#), "{events}");
    assert!(events.contains(r#""event":"rolled_back""#), "{events}");
    let phase = serde_json::to_string(r.phase()).unwrap();
    assert_eq!(phase, r#"{"phase":"rolled_back","reason":"latency"}"#);
    let back: Phase = serde_json::from_str(&phase).unwrap();
    assert_eq!(&back, r.phase());
    let verdict = serde_json::to_string(&canary::Verdict::Promote).unwrap();
    assert_eq!(verdict, r#"{"verdict":"promote"}"#);
}
