use std::time::{Duration, SystemTime};

use canary::{
    ArmStats, Cause, Event, GateFailure, Gates, Phase, Rollout, Schedule, Share, Step, Verdict,
    judge,
};

fn stats(requests: u64, errors: u64, latency_ms: u64, cost_per_request: u64) -> ArmStats {
    let mut s = ArmStats::default();
    for i in 0..requests {
        s.record(
            i >= errors,
            Duration::from_millis(latency_ms),
            cost_per_request,
        );
    }
    s
}

#[test]
fn judge_holds_until_each_arm_has_enough_requests() {
    let gates = Gates::default();
    let v = judge(&stats(100, 0, 500, 1), &stats(99, 0, 500, 1), &gates);
    assert_eq!(
        v,
        Verdict::Hold {
            baseline_requests: 100,
            candidate_requests: 99,
            needed: 100
        }
    );
    // Even a terrible candidate is not judged on too little data.
    let v = judge(&stats(10, 0, 500, 1), &stats(10, 10, 5000, 1), &gates);
    assert!(matches!(v, Verdict::Hold { .. }));
}

#[test]
fn judge_promotes_within_every_gate() {
    let v = judge(
        &stats(1000, 20, 800, 50),
        &stats(1000, 30, 900, 60),
        &Gates::default(),
    );
    assert_eq!(v, Verdict::Promote);
}

#[test]
fn error_rate_more_than_one_point_above_baseline_rolls_back() {
    let gates = Gates::default();
    // 2% vs 3%: exactly one point more is allowed.
    assert_eq!(
        judge(&stats(1000, 20, 800, 1), &stats(1000, 30, 800, 1), &gates),
        Verdict::Promote
    );
    let v = judge(&stats(1000, 20, 800, 1), &stats(1000, 31, 800, 1), &gates);
    assert_eq!(
        v,
        Verdict::Rollback {
            reason: GateFailure::ErrorRate {
                baseline_bp: 200,
                candidate_bp: 310,
                max_increase_bp: 100
            }
        }
    );
    let Verdict::Rollback { reason } = v else {
        unreachable!()
    };
    assert_eq!(
        reason.to_string(),
        "error rate 3.10% vs baseline 2.00% (at most +1.00% allowed)"
    );
}

#[test]
fn p95_latency_over_the_ratio_rolls_back() {
    let gates = Gates::default();
    assert_eq!(
        judge(&stats(500, 0, 1000, 1), &stats(500, 0, 1100, 1), &gates),
        Verdict::Promote
    );
    let v = judge(&stats(500, 0, 1000, 1), &stats(500, 0, 1500, 1), &gates);
    assert!(
        matches!(
            v,
            Verdict::Rollback {
                reason: GateFailure::Latency {
                    max_ratio_permille: 1200,
                    ..
                }
            }
        ),
        "{v:?}"
    );
}

#[test]
fn cost_per_request_is_judged_only_when_asked() {
    let cheap = stats(500, 0, 1000, 100);
    let dear = stats(500, 0, 1000, 300);
    assert_eq!(judge(&cheap, &dear, &Gates::default()), Verdict::Promote);
    let gates = Gates {
        max_cost_ratio_permille: Some(1500),
        ..Gates::default()
    };
    assert_eq!(
        judge(&cheap, &dear, &gates),
        Verdict::Rollback {
            reason: GateFailure::Cost {
                baseline_per_request_micros: 100,
                candidate_per_request_micros: 300,
                max_ratio_permille: 1500
            }
        }
    );
    assert_eq!(
        judge(&cheap, &stats(500, 0, 1000, 150), &gates),
        Verdict::Promote
    );
}

const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn at(mins: u64) -> SystemTime {
    T0 + Duration::from_secs(mins * 60)
}

fn scheduled() -> Rollout {
    let steps = [100, 500, 2500, 5000, 10_000]
        .map(|bp| Share::from_bp(bp).unwrap())
        .to_vec();
    Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", Share::ZERO)
        .salt("launch-1")
        .schedule(Schedule::even(steps, Duration::from_secs(600)))
        .build()
        .unwrap()
}

fn share(r: &Rollout) -> u16 {
    r.share("claude-sonnet-4.5").unwrap().bp()
}

#[test]
fn schedule_steps_advance_after_the_hold_and_a_promote_verdict() {
    let mut r = scheduled();
    assert_eq!(r.poll_timeout(), None);
    r.start(at(0));
    assert_eq!((share(&r), r.step()), (100, Some(0)));
    // The hold passes, but without a verdict nothing moves by itself.
    assert_eq!(r.poll_timeout(), None);
    r.handle_timeout(at(30));
    assert_eq!(share(&r), 100);
    // A Promote after the hold advances at once.
    r.handle_verdict(&Verdict::Promote, at(30));
    assert_eq!((share(&r), r.step()), (500, Some(1)));
    // A Promote before the hold ends waits for it.
    r.handle_verdict(&Verdict::Promote, at(31));
    assert_eq!(r.poll_timeout(), Some(at(40)));
    r.handle_timeout(at(39));
    assert_eq!(share(&r), 500, "early handle_timeout is a no-op");
    r.handle_timeout(at(40));
    assert_eq!(share(&r), 2500);
    assert!(r.poll_timeout().is_none_or(|t| t > at(40)));
    // Hold verdicts change nothing.
    r.handle_verdict(
        &Verdict::Hold {
            baseline_requests: 1,
            candidate_requests: 1,
            needed: 100,
        },
        at(55),
    );
    assert_eq!(share(&r), 2500);
    r.handle_verdict(&Verdict::Promote, at(55));
    r.handle_verdict(&Verdict::Promote, at(70));
    assert_eq!(share(&r), 10_000);
    assert!(matches!(r.phase(), Phase::FullRollout { .. }));
    let events: Vec<Event> = std::iter::from_fn(|| r.poll_event()).collect();
    let shares: Vec<u16> = events
        .iter()
        .filter_map(|e| match e {
            Event::ShareChanged {
                new,
                cause: Cause::Schedule,
                ..
            } => Some(new.bp()),
            _ => None,
        })
        .collect();
    assert_eq!(shares, vec![100, 500, 2500, 5000, 10_000]);
    assert!(events.contains(&Event::ScheduleCompleted));
    assert_eq!(r.poll_timeout(), None);
}

/// 10% for 1 h, 50% for 2 h, then 100%.
fn uneven(verdicts: bool) -> Rollout {
    let step = |p: u8, hold_s: u64| Step {
        share: Share::percent(p).unwrap(),
        hold: Duration::from_secs(hold_s),
    };
    Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", Share::ZERO)
        .schedule(Schedule {
            steps: vec![step(10, 3600), step(50, 7200), step(100, 0)],
        })
        .promote_on_verdicts(verdicts)
        .build()
        .unwrap()
}

#[test]
fn each_step_holds_for_its_own_time() {
    let mut r = uneven(true);
    r.start(at(0));
    r.handle_verdict(&Verdict::Promote, at(1));
    assert_eq!(r.poll_timeout(), Some(at(60)));
    r.handle_timeout(at(60));
    assert_eq!(share(&r), 5000);
    r.handle_verdict(&Verdict::Promote, at(61));
    assert_eq!(r.poll_timeout(), Some(at(180)), "the second step holds 2 h");
    r.handle_timeout(at(179));
    assert_eq!(share(&r), 5000);
    r.handle_timeout(at(180));
    assert_eq!(share(&r), 10_000);
}

#[test]
fn without_verdicts_a_ramp_runs_on_time_and_a_rollback_still_stops_it() {
    let mut r = uneven(false);
    r.start(at(0));
    assert_eq!(r.poll_timeout(), Some(at(60)), "no verdict needed");
    r.handle_timeout(at(60));
    assert_eq!(share(&r), 5000);
    assert_eq!(r.poll_timeout(), Some(at(180)));
    let mut gated = uneven(true);
    gated.start(at(0));
    gated.handle_timeout(at(60));
    assert_eq!(share(&gated), 1000, "a gated ramp waits for a verdict");
    r.handle_verdict(
        &Verdict::Rollback {
            reason: GateFailure::ErrorRate {
                baseline_bp: 0,
                candidate_bp: 500,
                max_increase_bp: 100,
            },
        },
        at(70),
    );
    assert!(matches!(r.phase(), Phase::RolledBack { .. }));
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn a_rollback_verdict_rolls_back_at_once_and_stays_until_restarted() {
    let mut r = scheduled();
    r.start(at(0));
    r.handle_verdict(&Verdict::Promote, at(10));
    assert_eq!(share(&r), 500);
    let bad = judge(
        &stats(1000, 10, 800, 1),
        &stats(1000, 100, 800, 1),
        &Gates::default(),
    );
    r.handle_verdict(&bad, at(12));
    assert!(matches!(r.phase(), Phase::RolledBack { .. }));
    assert_eq!(share(&r), 0);
    assert_eq!(&**r.model_for("anyone").unwrap(), "gpt-4.1");
    // Later good news does not undo it.
    r.handle_verdict(&Verdict::Promote, at(30));
    r.handle_timeout(at(60));
    assert!(matches!(r.phase(), Phase::RolledBack { .. }));
    assert!(std::iter::from_fn(|| r.poll_event()).any(|e| matches!(
        e,
        Event::RolledBack {
            cause: Cause::Verdict,
            ..
        }
    )));
    // An operator restarts: the ramp begins again from its first step.
    r.restart(at(90));
    assert_eq!(
        (share(&r), r.step(), r.phase()),
        (100, Some(0), &Phase::Running)
    );
    r.handle_verdict(&Verdict::Promote, at(100));
    assert_eq!(share(&r), 500);
}

#[test]
fn schedules_must_increase() {
    let bad = Schedule::even(
        [500, 100].map(|b| Share::from_bp(b).unwrap()).to_vec(),
        Duration::ZERO,
    );
    let err = Rollout::builder("a")
        .candidate("b", Share::ZERO)
        .schedule(bad)
        .build()
        .unwrap_err();
    assert_eq!(err, canary::CanaryError::BadSchedule { step: 1 });
    let empty = Schedule::even(vec![], Duration::ZERO);
    assert!(
        Rollout::builder("a")
            .candidate("b", Share::ZERO)
            .schedule(empty)
            .build()
            .is_err()
    );
}
