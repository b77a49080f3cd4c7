//! What operators set in the file reaches serving: canary rules and lists,
//! ramps with their own holds, analysis switched off. Time is a
//! `ManualClock`, driven step by step (`Client::tick` is what the monitor
//! runs when a timer is due).

use std::time::Duration;

use gateway::config::{AnalysisConfig, CanaryConfig, RuleConfig, StepConfig};
use gateway::sim::Behavior;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, Setup, TempDir};

const KEYS: [(&str, &str, Behavior); 1] =
    [("alpha", "sk-sim-alpha-00000000000000001", Behavior::Healthy)];

/// The candidate's percent in `GET /admin/canary`, and the phase.
async fn split(gw: &Gateway) -> (serde_json::Value, String) {
    let (_, canary) = gw.admin(Method::GET, "/admin/canary", None).await;
    let r = &canary["data"][0];
    (
        r["candidates"][0]["percent"].clone(),
        r["phase"].as_str().unwrap().to_owned(),
    )
}

fn ramp() -> CanaryConfig {
    CanaryConfig {
        model: "gpt-4.1".into(),
        candidate: Some("claude-sonnet-4.5".into()),
        schedule: vec![
            StepConfig {
                percent: 10.0,
                hold_secs: Some(3600),
            },
            StepConfig {
                percent: 50.0,
                hold_secs: Some(7200),
            },
            StepConfig {
                percent: 100.0,
                hold_secs: None,
            },
        ],
        analysis: AnalysisConfig {
            enabled: false,
            ..AnalysisConfig::default()
        },
        ..CanaryConfig::default()
    }
}

/// With analysis off, a ramp moves on its holds alone, each step its own,
/// and where it stands outlives a restart.
#[tokio::test]
async fn a_ramp_without_analysis_moves_on_each_steps_hold_and_survives_a_restart() {
    let dir = TempDir::new("ramp");
    let mut gw = Setup::new(&KEYS)
        .master()
        .manual_clock()
        .db(&dir.join("gateway.db"))
        .configure(|c| c.canary = vec![ramp()])
        .start()
        .await;
    let tick = |gw: &Gateway, secs: u64| {
        gw.clock().advance(Duration::from_secs(secs));
        gw.running().client().tick();
    };
    assert_eq!(
        split(&gw).await.0,
        json!(10.0),
        "the ramp starts at its first step"
    );
    tick(&gw, 3599);
    assert_eq!(split(&gw).await.0, json!(10.0));
    tick(&gw, 1);
    assert_eq!(
        split(&gw).await.0,
        json!(50.0),
        "one hour at 10%, no verdict needed"
    );
    tick(&gw, 3600);
    assert_eq!(
        split(&gw).await.0,
        json!(50.0),
        "the second step holds two hours"
    );

    assert!(gw.stop().await);
    gw.resume().await.unwrap();
    assert_eq!(
        split(&gw).await.0,
        json!(50.0),
        "a restart does not start the ramp over"
    );
    tick(&gw, 3600);
    let (percent, phase) = split(&gw).await;
    assert_eq!(percent, json!(100.0));
    assert!(phase.starts_with("full rollout"), "{phase}");
}

/// Keys whose name says `test` get the candidate, a denied user never
/// does, an allowed one always does, and everyone else stays on the
/// baseline at 0%.
#[tokio::test]
async fn rules_and_lists_pick_the_arm_before_the_split() {
    let gw = Setup::new(&KEYS)
        .master()
        .configure(|c| {
            c.canary = vec![CanaryConfig {
                model: "gpt-4.1".into(),
                candidate: Some("claude-sonnet-4.5".into()),
                percent: Some(0.0),
                allow: vec!["qa-user-1".into()],
                deny: vec!["vip-42".into()],
                rules: vec![RuleConfig {
                    key_name_contains: Some("test".into()),
                    arm: "candidate".into(),
                    ..RuleConfig::default()
                }],
                ..CanaryConfig::default()
            }];
        })
        .start()
        .await;
    let mut keys = Vec::new();
    for name in ["ci-test-runner", "production"] {
        let (status, made) = gw
            .admin(Method::POST, "/v1/keys", Some(json!({"name": name})))
            .await;
        assert_eq!(status, 201, "{made}");
        keys.push(made["key"].as_str().unwrap().to_owned());
    }
    let model = |key: usize, user: Option<&str>| {
        let mut body = json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]});
        if let Some(u) = user {
            body["user"] = json!(u);
        }
        let key = keys[key].clone();
        let gw = &gw;
        async move {
            let r = gw.post("/v1/chat/completions", Some(&key), &body).await;
            assert_eq!(r.status(), 200);
            r.headers()["x-gateway-model"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(model(0, None).await, "claude-sonnet-4.5", "a test key");
    assert_eq!(
        model(0, Some("vip-42")).await,
        "gpt-4.1",
        "denied beats the rule"
    );
    assert_eq!(
        model(1, Some("qa-user-1")).await,
        "claude-sonnet-4.5",
        "allowed"
    );
    assert_eq!(
        model(1, Some("someone")).await,
        "gpt-4.1",
        "0% for the rest"
    );
}
