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

/// Requests need no client key (the management API still needs the master key).
fn open_to_clients(c: &mut gateway::config::Config) {
    if let Some(a) = c.auth.as_mut() {
        a.mode = Some(gateway::config::AuthMode::None);
    }
}

/// The model that answers `user`'s request (with no client key).
async fn arm_of(gw: &Gateway, user: &str) -> String {
    let body = json!({"model": "gpt-4.1", "user": user,
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/chat/completions", None, &body).await;
    assert_eq!(r.status(), 200);
    r.headers()["x-gateway-model"].to_str().unwrap().to_owned()
}

/// A rollout's overrides and analysis changed through the API apply at
/// once, are audited, are refused with the field named when wrong, and
/// outlive a restart (the stored change wins over the file).
#[tokio::test]
async fn canary_overrides_and_analysis_change_while_serving_and_survive_a_restart() {
    let dir = TempDir::new("canary-settings");
    let mut gw = Setup::new(&KEYS)
        .master()
        .db(&dir.join("gateway.db"))
        .configure(|c| {
            open_to_clients(c);
            c.canary = vec![CanaryConfig {
                model: "gpt-4.1".into(),
                candidate: Some("claude-sonnet-4.5".into()),
                percent: Some(0.0),
                ..CanaryConfig::default()
            }];
        })
        .start()
        .await;
    assert_eq!(arm_of(&gw, "qa-user-1").await, "gpt-4.1");
    let overrides = json!({"allow": ["qa-user-1"], "deny": ["vip-42"],
                           "rules": [{"subject_starts_with": "tester-", "arm": "candidate"}]});
    let (status, view) = gw
        .admin(
            Method::PUT,
            "/admin/canary/gpt-4.1/overrides",
            Some(overrides),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["allow"], json!([["qa-user-1", "claude-sonnet-4.5"]]));
    assert_eq!(arm_of(&gw, "qa-user-1").await, "claude-sonnet-4.5");
    assert_eq!(arm_of(&gw, "tester-7").await, "claude-sonnet-4.5");
    assert_eq!(arm_of(&gw, "someone").await, "gpt-4.1");

    let analysis = json!({"enabled": false, "interval_secs": 30, "max_p95_factor": 1.5});
    let (status, view) = gw
        .admin(
            Method::PUT,
            "/admin/canary/gpt-4.1/analysis",
            Some(analysis),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["analysis"]["enabled"], false);
    assert_eq!(view["analysis"]["max_p95_factor"], 1.5);

    refusals_name_the_field(&gw).await;
    let (_, audit) = gw.admin(Method::GET, "/admin/audit", None).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["setting.canary_analysis", "setting.canary_overrides"]
    );

    assert!(gw.stop().await);
    gw.resume().await.unwrap();
    let (_, view) = gw.admin(Method::GET, "/admin/canary/gpt-4.1", None).await;
    assert_eq!(view["deny"], json!(["vip-42"]), "{view}");
    assert_eq!(view["analysis"]["enabled"], false);
    assert_eq!(view["analysis"]["interval_secs"], 30);
    assert_eq!(arm_of(&gw, "qa-user-1").await, "claude-sonnet-4.5");
}

/// Wrong rollout settings are refused, naming what is wrong (nothing changes).
async fn refusals_name_the_field(gw: &Gateway) {
    let bad = [
        (
            "/admin/canary/gpt-4.1/analysis",
            json!({"max_p95_factor": 0.5}),
            400,
            "analysis.max_p95_factor",
        ),
        (
            "/admin/canary/gpt-4.1/overrides",
            json!({"rules": [{"arm": "candidate"}]}),
            400,
            "overrides.rules[0]",
        ),
        (
            "/admin/canary/gpt-4.1/overrides",
            json!({"alow": []}),
            400,
            "alow",
        ),
        (
            "/admin/canary/gpt-4.1/ramp",
            json!({}),
            400,
            "overrides, analysis",
        ),
        (
            "/admin/canary/no-such-model/analysis",
            json!({}),
            404,
            "no-such-model",
        ),
    ];
    for (path, body, status, says) in bad {
        let (got, answer) = gw.admin(Method::PUT, path, Some(body)).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert!(answer.to_string().contains(says), "{path}: {answer}");
    }
}

/// The global daily limit in `GET /admin/budget/limits`, as (limit, spent).
async fn global_daily(gw: &Gateway) -> Option<(u64, u64)> {
    let (status, limits) = gw.admin(Method::GET, "/admin/budget/limits", None).await;
    assert_eq!(status, 200, "{limits}");
    limits["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["scope"] == "global" && l["period"] == "daily")
        .map(|l| {
            (
                l["limit_micros"].as_u64().unwrap(),
                l["spent_micros"].as_u64().unwrap(),
            )
        })
}

/// Budget limits set and removed through the API hold at once (a new limit
/// counts what was already spent today), outlive a restart, and refuse bad
/// values naming the field.
#[tokio::test]
async fn budget_limits_change_while_serving_and_survive_a_restart() {
    let dir = TempDir::new("budget-settings");
    let mut gw = Setup::new(&KEYS)
        .master()
        .db(&dir.join("gateway.db"))
        .configure(|c| {
            open_to_clients(c);
            c.budget = gateway::demo_config("http://127.0.0.1:9/v1", "127.0.0.1:0").budget;
        })
        .start()
        .await;
    assert_eq!(gw.chat("gpt-4o-mini").await.status(), 200);
    let (_, spent_before) = global_daily(&gw).await.expect("the demo's global limit");
    assert!(spent_before > 0);

    // Removed: the file's limit is gone, and stays gone after a restart.
    let (status, answer) = gw
        .admin(Method::DELETE, "/admin/budget/limits/global", None)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(global_daily(&gw).await, None);
    let (status, _) = gw
        .admin(Method::DELETE, "/admin/budget/limits/global", None)
        .await;
    assert_eq!(status, 404, "nothing left to remove");

    // Set anew, below what was spent today: it counts that spend and refuses.
    let tiny = json!({"scope": "global", "daily_usd": 0.000001});
    let (status, answer) = gw
        .admin(Method::PUT, "/admin/budget/limits", Some(tiny))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(global_daily(&gw).await, Some((1, spent_before)));
    assert_eq!(gw.chat("gpt-4o-mini").await.status(), 402);

    let team = json!({"scope": "team", "name": "eng", "weekly_usd": 20,
                      "soft_fraction": 0.8, "fallback_model": "gpt-4o-mini"});
    let (status, answer) = gw
        .admin(Method::PUT, "/admin/budget/limits", Some(team))
        .await;
    assert_eq!(status, 200, "{answer}");
    let bad = [
        (json!({"scope": "team", "daily_usd": 1}), "needs a name"),
        (json!({"scope": "global"}), "needs daily_usd"),
        (
            json!({"scope": "global", "daily_usd": 1, "soft_fraction": 2}),
            "soft_fraction",
        ),
        (
            json!({"scope": "global", "daily_usd": 1, "fallback_model": "nope-1"}),
            "nope-1",
        ),
        (json!({"scope": "planet", "daily_usd": 1}), "planet"),
    ];
    for (body, says) in bad {
        let (status, answer) = gw
            .admin(Method::PUT, "/admin/budget/limits", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.to_string().contains(says), "{body}: {answer}");
    }

    assert!(gw.stop().await);
    gw.resume().await.unwrap();
    assert_eq!(global_daily(&gw).await.map(|(limit, _)| limit), Some(1));
    assert_eq!(gw.chat("gpt-4o-mini").await.status(), 402, "still refused");
    let (_, limits) = gw.admin(Method::GET, "/admin/budget/limits", None).await;
    let eng = limits["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "eng")
        .unwrap_or_else(|| panic!("{limits}"));
    assert_eq!(
        (eng["period"].as_str(), eng["soft_percent"].as_f64()),
        (Some("weekly"), Some(80.0))
    );
}
