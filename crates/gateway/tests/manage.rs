//! The management API end to end over HTTP: team keys, usage, the upstream
//! pool and the canary operated at runtime, the audit log, and state that
//! survives a restart. Time is a `ManualClock`, so grace periods pass
//! without waiting.

use std::time::Duration;

use gateway::sim::Behavior;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, MASTER, Setup, T0, TempDir, error_code};

const KEYS: [(&str, &str, Behavior); 3] = [
    ("alpha", "sk-sim-alpha-00000000000000001", Behavior::Healthy),
    ("beta", "sk-sim-beta-000000000000000002", Behavior::Healthy),
    ("gamma", "sk-sim-gamma-00000000000000003", Behavior::Healthy),
];

/// The gateway's setup: alpha and beta configured (gamma's secret is kept
/// for an addition and a rotation), a canary, a $100 budget, the master key,
/// a manual clock.
fn setup() -> Setup {
    Setup::new(&KEYS).master().manual_clock().configure(|c| {
        c.providers[0].keys.truncate(2);
        c.budget = Some(gateway::config::BudgetConfig {
            limits: vec![gateway::config::LimitConfig::global_daily(
                budget::Money::from_dollars(100),
            )],
            utc_offset: Some("+07:00".into()),
            ..gateway::config::BudgetConfig::default()
        });
    })
}

async fn start() -> Gateway {
    setup().start().await
}

/// What the team-key scenario has issued so far: (id, secret) pairs.
struct Issued {
    first: (String, String),
    rotated: (String, String),
    ops: (String, String),
    batch_secret: String,
}

#[tokio::test]
async fn team_keys_are_created_used_rotated_and_revoked() {
    let gw = start().await;
    let first = created_keys_work_at_once_and_are_never_shown(&gw).await;
    let rotated = rotation_keeps_the_old_key_through_its_grace(&gw, &first).await;
    revocation_can_be_scheduled_and_bad_input_is_refused(&gw, &rotated).await;
    let ops = bad_keys_are_refused_and_an_admin_key_manages(&gw).await;
    a_created_keys_rate_limit_applies_at_once(&gw).await;
    let batch_secret = delete_revokes_at_once(&gw).await;
    let issued = Issued {
        first,
        rotated,
        ops,
        batch_secret,
    };
    usage_is_reported_per_key_with_cost(&gw, &issued).await;
    every_action_is_audited_without_a_secret(&gw, &issued).await;
}

/// Only the master key manages keys; a created key works at once and is never shown again.
async fn created_keys_work_at_once_and_are_never_shown(gw: &Gateway) -> (String, String) {
    let create = json!({"name": "search-team", "team": "search", "rate_limit": 200, "scopes": ["chat:write", "embeddings:read"]});
    let (status, body) = gw
        .call(Method::POST, "/v1/keys", None, Some(create.clone()))
        .await;
    assert_eq!((status, error_code(&body)), (401, "invalid_api_key"));
    let (status, _) = gw
        .call(
            Method::POST,
            "/v1/keys",
            Some("wrong"),
            Some(create.clone()),
        )
        .await;
    assert_eq!(status, 401);

    let (status, created) = gw.admin(Method::POST, "/v1/keys", Some(create)).await;
    assert_eq!(status, 201, "{created}");
    let (id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    assert!(secret.starts_with("gw-"));
    assert_eq!(created["name"], "search-team");
    assert_eq!(created["rate_limit"], 200);
    assert_eq!(created["scopes"], json!(["chat:write", "embeddings:read"]));
    assert_eq!(created["created_at"], T0);

    // It works at once; an unknown key does not.
    assert_eq!(gw.chat_as(&secret).await.status(), 200);
    assert_eq!(gw.chat_as("gw-unknown").await.status(), 401);
    // A client key cannot manage (it lacks the admin scope).
    let (status, body) = gw.call(Method::GET, "/v1/keys", Some(&secret), None).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));

    // Listing never shows a secret or a hash.
    let (status, list) = gw.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(status, 200);
    let text = list.to_string();
    assert!(text.contains(&id) && !text.contains(&secret[3..]), "{text}");
    assert!(!text.contains(&gateway::auth::hash_key(&secret)));
    (id, secret)
}

/// Rotation: same name, team, scopes and limits; the old key works until the grace ends.
async fn rotation_keeps_the_old_key_through_its_grace(
    gw: &Gateway,
    first: &(String, String),
) -> (String, String) {
    let (id, secret) = first;
    let (status, rotated) = gw
        .admin(Method::POST, "/v1/keys/rotate", Some(json!({"key_id": id})))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["key"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_ne!(&new_secret, secret);
    assert_eq!(rotated["name"], "search-team");
    assert_eq!(rotated["team"], "search");
    assert_eq!(rotated["rate_limit"], 200);
    assert_eq!(rotated["old_key_revoke_at"], T0 + 86_400);
    assert_eq!(gw.chat_as(secret).await.status(), 200);
    assert_eq!(gw.chat_as(&new_secret).await.status(), 200);
    gw.clock().advance(Duration::from_secs(86_399));
    assert_eq!(
        gw.chat_as(secret).await.status(),
        200,
        "still within the grace period"
    );
    gw.clock().advance(Duration::from_secs(1));
    assert_eq!(
        gw.chat_as(secret).await.status(),
        401,
        "refused once it ends"
    );
    assert_eq!(gw.chat_as(&new_secret).await.status(), 200);
    let (status, body) = gw
        .admin(Method::POST, "/v1/keys/rotate", Some(json!({"key_id": id})))
        .await;
    assert_eq!((status, error_code(&body)), (400, "key_revoked"));
    (new_id, new_secret)
}

/// Scheduled revocation; bad input is refused with the right status.
async fn revocation_can_be_scheduled_and_bad_input_is_refused(
    gw: &Gateway,
    rotated: &(String, String),
) {
    let (new_id, new_secret) = rotated;
    let path = format!("/v1/keys/{new_id}/schedule-revoke");
    let (status, body) = gw
        .admin(Method::POST, &path, Some(json!({"delay_seconds": -5})))
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_delay"));
    let (status, _) = gw
        .admin(
            Method::POST,
            "/v1/keys/key_nope/schedule-revoke",
            Some(json!({"delay_seconds": 5})),
        )
        .await;
    assert_eq!(status, 404);
    let r = gw
        .http
        .post(gw.url(&path))
        .bearer_auth(MASTER)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (status, body) = gw
        .admin(Method::POST, &path, Some(json!({"delay": 5})))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_json"),
        "unknown fields are refused"
    );
    let (status, body) = gw
        .admin(Method::POST, &path, Some(json!({"delay_seconds": 60})))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("revoking")));
    gw.clock().advance(Duration::from_secs(59));
    assert_eq!(gw.chat_as(new_secret).await.status(), 200);
    gw.clock().advance(Duration::from_secs(1));
    assert_eq!(gw.chat_as(new_secret).await.status(), 401);
}

/// Unknown scopes and bad limits are refused; an admin-scoped key manages.
async fn bad_keys_are_refused_and_an_admin_key_manages(gw: &Gateway) -> (String, String) {
    let (status, body) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "x", "scopes": ["chat:delete"]})),
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_scope"));
    let (status, body) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "x", "rate_limit": 0})),
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_rate_limit"));
    let (status, body) = gw
        .admin(Method::POST, "/v1/keys", Some(json!({"name": ""})))
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_name"));
    let (_, ops) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "ops", "scopes": ["admin"]})),
        )
        .await;
    let ops_secret = ops["key"].as_str().unwrap().to_owned();
    let (status, _) = gw
        .call(Method::GET, "/v1/keys", Some(&ops_secret), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        gw.chat_as(&ops_secret).await.status(),
        403,
        "admin alone cannot chat"
    );
    (ops["id"].as_str().unwrap().to_owned(), ops_secret)
}

/// A created key's rate limit applies at once.
async fn a_created_keys_rate_limit_applies_at_once(gw: &Gateway) {
    let (_, slow) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "slow", "rate_limit": 2})),
        )
        .await;
    let slow_secret = slow["key"].as_str().unwrap().to_owned();
    assert_eq!(gw.chat_as(&slow_secret).await.status(), 200);
    assert_eq!(gw.chat_as(&slow_secret).await.status(), 200);
    let r = gw.chat_as(&slow_secret).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

/// DELETE revokes at once.
async fn delete_revokes_at_once(gw: &Gateway) -> String {
    let (_, third) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "batch", "scopes": ["embeddings:read"]})),
        )
        .await;
    let third_secret = third["key"].as_str().unwrap().to_owned();
    // Without chat:write, chat is refused.
    let r = gw.chat_as(&third_secret).await;
    assert_eq!(r.status(), 403);
    let (status, gone) = gw
        .admin(
            Method::DELETE,
            &format!("/v1/keys/{}", third["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!((status, gone["status"].as_str()), (200, Some("revoked")));
    assert_eq!(gw.chat_as(&third_secret).await.status(), 401);
    let (status, _) = gw.admin(Method::DELETE, "/v1/keys/key_nope", None).await;
    assert_eq!(status, 404);
    third_secret
}

/// Usage per key, with cost; filters.
async fn usage_is_reported_per_key_with_cost(gw: &Gateway, issued: &Issued) {
    let (id, new_id) = (&issued.first.0, &issued.rotated.0);
    let (status, usage) = gw.admin(Method::GET, "/v1/usage", None).await;
    assert_eq!(status, 200, "{usage}");
    let lines = usage["usage"].as_array().unwrap();
    let old = lines.iter().find(|l| l["key_id"] == id.as_str()).unwrap();
    assert_eq!(old["requests"], 3);
    assert_eq!(old["team"], "search");
    assert_eq!(old["model"], "gpt-4o-mini");
    assert!(old["total_tokens"].as_u64().unwrap() > 0);
    assert!(old["estimated_cost"].as_f64().unwrap() > 0.0);
    assert!(usage["total_estimated_cost_usd"].as_f64().unwrap() > 0.0);
    let (_, only_new) = gw
        .admin(Method::GET, &format!("/v1/usage?key_id={new_id}"), None)
        .await;
    assert_eq!(only_new["usage"].as_array().unwrap().len(), 1);
    assert_eq!(only_new["usage"][0]["requests"], 3);
    let (_, none) = gw
        .admin(
            Method::GET,
            &format!("/v1/usage?from={}", T0 + 10 * 86_400),
            None,
        )
        .await;
    assert_eq!(none["usage"], json!([]));
    let (status, _) = gw
        .admin(Method::GET, "/v1/usage?from=yesterday", None)
        .await;
    assert_eq!(status, 400);
}

/// Every action is audited, by whom, and never with a secret.
async fn every_action_is_audited_without_a_secret(gw: &Gateway, issued: &Issued) {
    let (status, audit) = gw.admin(Method::GET, "/admin/audit", None).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "client_key.revoke",
            "client_key.create",
            "client_key.create",
            "client_key.create",
            "client_key.schedule_revoke",
            "client_key.rotate",
            "client_key.create"
        ]
    );
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "master")
    );
    let (ops_id, ops_secret) = &issued.ops;
    let ops_path = format!("/v1/keys/{ops_id}");
    let (status, _) = gw
        .call(Method::DELETE, &ops_path, Some(ops_secret), None)
        .await;
    assert_eq!(status, 200, "an admin key can revoke itself");
    let (_, audit) = gw.admin(Method::GET, "/admin/audit?limit=1", None).await;
    assert_eq!(audit["data"][0]["actor"], "ops");
    assert_eq!(audit["data"].as_array().unwrap().len(), 1);
    let text = audit.to_string();
    for s in [&issued.first.1, &issued.rotated.1, &issued.batch_secret] {
        assert!(
            !text.contains(&s[3..]),
            "a secret leaked into the audit log"
        );
    }
}

#[tokio::test]
async fn the_upstream_pool_and_the_canary_are_operated_at_runtime() {
    let gw = start().await;
    let (_, created) = gw
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "app"})))
        .await;
    let app = created["key"].as_str().unwrap().to_owned();

    let (status, keys) = gw.admin(Method::GET, "/admin/upstream-keys", None).await;
    assert_eq!(status, 200);
    let text = keys.to_string();
    assert!(text.contains("alpha") && text.contains("beta"));
    assert!(
        !text.contains(KEYS[0].1) && !text.contains(KEYS[1].1),
        "secrets are redacted"
    );
    keys_are_disabled_and_enabled(&gw, &app).await;
    keys_are_removed_and_added(&gw, &app).await;
    a_rotated_key_drains(&gw).await;
    the_canary_is_moved(&gw).await;
    pool_and_canary_actions_are_audited(&gw).await;
}

/// Disable alpha: every request goes to beta; unknown keys, providers and verbs are refused.
async fn keys_are_disabled_and_enabled(gw: &Gateway, app: &str) {
    let alpha = gw.key_id("alpha").await;
    let (status, after) = gw
        .admin(
            Method::POST,
            &format!("/admin/upstream-keys/{alpha}/disable"),
            None,
        )
        .await;
    assert_eq!(after["id"], alpha.as_str());
    assert_eq!(status, 200, "{after}");
    assert!(after["state"].as_str().unwrap().starts_with("disabled"));
    for _ in 0..4 {
        let r = gw.chat_as(app).await;
        assert_eq!(r.headers()["x-gateway-key"], "beta");
    }
    let (status, _) = gw
        .admin(Method::POST, "/admin/upstream-keys/uk_nope/disable", None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = gw
        .admin(
            Method::POST,
            &format!("/admin/upstream-keys/{alpha}/explode"),
            None,
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_command"));
    let (status, after) = gw
        .admin(
            Method::POST,
            &format!("/admin/upstream-keys/{alpha}/enable"),
            None,
        )
        .await;
    assert_eq!((status, after["state"].as_str()), (200, Some("active")));
}

/// Remove beta and alpha; add gamma: it serves.
async fn keys_are_removed_and_added(gw: &Gateway, app: &str) {
    for name in ["alpha", "beta"] {
        let id = gw.key_id(name).await;
        let (status, _) = gw
            .admin(Method::DELETE, &format!("/admin/upstream-keys/{id}"), None)
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(gw.chat_as(app).await.status(), 429, "no key left");
    let add = json!({"provider": "simulated", "name": "gamma", "secret": KEYS[2].1, "tier": 0});
    let (status, added) = gw
        .admin(Method::POST, "/admin/upstream-keys", Some(add.clone()))
        .await;
    assert_eq!(status, 201, "{added}");
    assert!(!added.to_string().contains(KEYS[2].1));
    let r = gw.chat_as(app).await;
    assert_eq!(r.headers()["x-gateway-key"], "gamma");
    let (status, body) = gw
        .admin(Method::POST, "/admin/upstream-keys", Some(add))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_key"),
        "a duplicate secret"
    );
    let (status, _) = gw
        .admin(
            Method::POST,
            "/admin/upstream-keys",
            Some(json!({"provider": "simulated"})),
        )
        .await;
    assert_eq!(status, 400);
}

/// Rotate gamma onto alpha's secret: the new one serves, the old drains.
async fn a_rotated_key_drains(gw: &Gateway) {
    let gamma = gw.key_id("gamma").await;
    let (status, rotated) = gw
        .admin(
            Method::POST,
            &format!("/admin/upstream-keys/{gamma}/rotate"),
            Some(json!({"secret": KEYS[0].1, "grace_seconds": 60})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(rotated["data"].as_array().unwrap().len(), 2, "{rotated}");
    let (_, keys) = gw.admin(Method::GET, "/admin/upstream-keys", None).await;
    let states: Vec<&str> = keys["data"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 2);
    assert!(
        states.iter().any(|s| s.starts_with("draining")),
        "{states:?}"
    );
}

/// The canary: validated percentages, rollout, rollback, restart.
async fn the_canary_is_moved(gw: &Gateway) {
    let (status, canary) = gw.admin(Method::GET, "/admin/canary", None).await;
    assert_eq!(status, 200);
    assert_eq!(canary["data"][0]["model"], "gpt-4.1");
    assert_eq!(canary["data"][0]["candidates"][0]["percent"], 10.0);
    for bad in [json!({"percent": 150}), json!({"percent": -1}), json!({})] {
        let (status, body) = gw
            .admin(Method::POST, "/admin/canary/gpt-4.1/percent", Some(bad))
            .await;
        assert_eq!((status, error_code(&body)), (400, "invalid_canary_command"));
    }
    let (status, canary) = gw
        .admin(
            Method::POST,
            "/admin/canary/gpt-4.1/percent",
            Some(json!({"percent": 25})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(canary["data"][0]["candidates"][0]["percent"], 25.0);
    let (status, canary) = gw
        .admin(
            Method::POST,
            "/admin/canary/gpt-4.1/rollback",
            Some(json!({"reason": "errors"})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        canary["data"][0]["phase"]
            .as_str()
            .unwrap()
            .starts_with("rolled back")
    );
    let (_, canary) = gw
        .admin(Method::POST, "/admin/canary/gpt-4.1/restart", None)
        .await;
    assert_eq!(canary["data"][0]["phase"], "running");
    let (_, canary) = gw
        .admin(Method::POST, "/admin/canary/gpt-4.1/rollout", None)
        .await;
    assert!(
        canary["data"][0]["phase"]
            .as_str()
            .unwrap()
            .starts_with("full rollout")
    );
    let (status, _) = gw
        .admin(Method::POST, "/admin/canary/gpt-9/rollout", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw
        .admin(Method::POST, "/admin/canary/gpt-4.1/explode", None)
        .await;
    assert_eq!(status, 400);
}

/// Every action on the pool and the canary is audited, without a secret.
async fn pool_and_canary_actions_are_audited(gw: &Gateway) {
    let (_, audit) = gw.admin(Method::GET, "/admin/audit?limit=100", None).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "upstream_key.disable",
        "upstream_key.enable",
        "upstream_key.remove",
        "upstream_key.add",
        "upstream_key.rotate",
        "canary.percent",
        "canary.rollback",
        "canary.restart",
        "canary.rollout",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let percent = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "canary.percent")
        .unwrap();
    let share = |v: &Value| {
        let arm = &v["arms"][0];
        assert_eq!(arm["model"], "claude-sonnet-4.5");
        arm["buckets"][0][1].as_u64().unwrap() - arm["buckets"][0][0].as_u64().unwrap()
    };
    assert_eq!(share(&percent["before"]), 1000);
    assert_eq!(share(&percent["after"]), 2500);
    let text = audit.to_string();
    for (_, secret, _) in KEYS {
        let tail = &secret[secret.len() - 4..];
        assert!(
            !text.contains(secret) && !text.contains(tail),
            "a secret (or its redacted form) leaked into the audit log"
        );
    }
}

#[tokio::test]
async fn old_usage_goes_after_its_retention_and_short_retentions_are_refused() {
    use gateway::store::{SqliteStore, Store, UsageRecord};
    let dir = TempDir::new("retention");
    let db = dir.join("gateway.db");
    let day = 86_400_000i64;
    let now = i64::try_from(T0).unwrap() * 1000;
    {
        let store = SqliteStore::open(&db).unwrap();
        for at in [now - 100 * day, now - 50 * day, now - day] {
            let record = UsageRecord {
                at,
                key_id: None,
                key_name: None,
                team: None,
                provider: "simulated".into(),
                upstream_key: "alpha".into(),
                model: "gpt-4o-mini".into(),
                prompt_tokens: 1,
                completion_tokens: 1,
                cost_micros: 1,
                cached_tokens: 0,
                cache_write_tokens: 0,
                reasoning_tokens: 0,
            };
            store.append_usage(record).await.unwrap();
        }
    }
    let e = setup()
        .db(&db)
        .configure(|c| c.storage.usage_retention_days = Some(10))
        .try_start()
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("usage_retention_days") && e.contains("32"),
        "{e}"
    );
    let gw = setup()
        .db(&db)
        .configure(|c| c.storage.usage_retention_days = Some(60))
        .start()
        .await;
    let (_, usage) = gw.admin(Method::GET, "/v1/usage", None).await;
    assert_eq!(
        usage["usage"][0]["requests"], 2,
        "the 100-day-old record went: {usage}"
    );
}

/// What a Prometheus scrape sees across a key's life: one `gateway_key_up`
/// series per key, for its current state; none once it is removed; request
/// durations as a histogram.
#[tokio::test]
async fn a_scrape_sees_a_key_change_state_and_leave() {
    let gw = start().await;
    let (_, created) = gw
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "app"})))
        .await;
    let app = created["key"].as_str().unwrap().to_owned();
    assert_eq!(gw.chat_as(&app).await.status(), 200);
    let scrape = || async { gw.text("/metrics").await };
    let series = |text: &str, key: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("gateway_key_up{") && l.contains(&format!("key=\"{key}\"")))
            .map(str::to_owned)
            .collect()
    };
    let before = scrape().await;
    assert_eq!(
        series(&before, "alpha"),
        ["gateway_key_up{provider=\"simulated\",key=\"alpha\",state=\"active\"} 1"]
    );
    assert!(
        before.contains("gateway_request_duration_seconds_bucket{"),
        "a histogram"
    );
    let alpha = gw.key_id("alpha").await;
    let disable = format!("/admin/upstream-keys/{alpha}/disable");
    gw.admin(Method::POST, &disable, None).await;
    assert_eq!(
        series(&scrape().await, "alpha"),
        ["gateway_key_up{provider=\"simulated\",key=\"alpha\",state=\"disabled\"} 0"],
        "the active series is gone, not left at 1"
    );
    gw.admin(
        Method::DELETE,
        &format!("/admin/upstream-keys/{alpha}"),
        None,
    )
    .await;
    let after = scrape().await;
    assert!(
        series(&after, "alpha").is_empty(),
        "a removed key has no series"
    );
    assert_eq!(series(&after, "beta").len(), 1);
}

/// Where the views are not public, they need the master key or a client key
/// with `status:read`, and a Prometheus scrape with a bearer token works.
#[tokio::test]
async fn status_views_need_a_key_unless_public() {
    let gw = setup()
        .configure(|c| c.server.public_status = Some(false))
        .start()
        .await;
    let (_, viewer) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "prometheus", "scopes": ["status:read"]})),
        )
        .await;
    let viewer = viewer["key"].as_str().unwrap().to_owned();
    let (_, app) = gw
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "app"})))
        .await;
    let app = app["key"].as_str().unwrap().to_owned();
    for path in ["/metrics", "/status", "/status.json", "/dashboard.json"] {
        let (status, body) = gw.call(Method::GET, path, None, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (401, "invalid_api_key"),
            "{path}"
        );
        let (status, _) = gw.call(Method::GET, path, Some(&app), None).await;
        assert_eq!(status, 403, "{path}: a chat key may not look");
        let (status, body) = gw.call(Method::GET, path, Some(&viewer), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(gw.call(Method::GET, path, Some(MASTER), None).await.0, 200);
    }
    // Health, readiness and the page itself (which holds no data) stay open.
    for path in ["/healthz", "/readyz", "/dashboard"] {
        assert_eq!(
            gw.call(Method::GET, path, None, None).await.0,
            200,
            "{path}"
        );
    }
    // A key with the status:read scope cannot chat or manage.
    assert_eq!(gw.chat_as(&viewer).await.status(), 403);
    let (status, _) = gw.call(Method::GET, "/v1/keys", Some(&viewer), None).await;
    assert_eq!(status, 403);
}

/// A candidate that fails every request is rolled back by the analysis the
/// monitor runs (driven here on the injected clock), the operator sees the
/// verdict, and the rollback outlives a restart.
#[tokio::test]
async fn a_failing_candidate_is_rolled_back_and_stays_so_after_a_restart() {
    use wiremock::matchers::{body_partial_json, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let upstream = MockServer::start().await;
    let refusal = json!({"error": {"message": "the candidate refuses", "type": "invalid_request_error", "code": "bad"}});
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"model": "claude-sonnet-4.5"})))
        .respond_with(ResponseTemplate::new(400).set_body_json(refusal))
        .mount(&upstream)
        .await;
    let ok = json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}});
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok))
        .mount(&upstream)
        .await;
    let dir = TempDir::new("rollback");
    let mut gw = setup()
        .upstream(format!("{}/v1", upstream.uri()))
        .db(&dir.join("gateway.db"))
        .configure(|c| c.canary[0].percent = Some(50.0))
        .start()
        .await;
    let (_, app) = gw
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "app"})))
        .await;
    let app = app["key"].as_str().unwrap().to_owned();
    for i in 0..300 {
        let body = json!({"model": "gpt-4.1", "user": format!("u{i}"), "messages": [{"role": "user", "content": "hi"}]});
        gw.post("/v1/chat/completions", Some(&app), &body).await;
    }
    let verdicts = gw.running().client().analyze();
    assert!(
        matches!(verdicts[..], [(_, canary::Verdict::Rollback { .. })]),
        "{verdicts:?}"
    );
    let (_, canary) = gw.admin(Method::GET, "/admin/canary", None).await;
    let rollout = &canary["data"][0];
    assert!(
        rollout["phase"]
            .as_str()
            .unwrap()
            .starts_with("rolled back"),
        "{rollout}"
    );
    assert_eq!(
        rollout["verdict"]["verdict"]["reason"]["gate"], "error_rate",
        "{rollout}"
    );
    assert!(gw.stop().await);
    gw.resume().await.unwrap();
    let (_, canary) = gw.admin(Method::GET, "/admin/canary", None).await;
    assert!(
        canary["data"][0]["phase"]
            .as_str()
            .unwrap()
            .starts_with("rolled back"),
        "the rollback is kept: {canary}"
    );
}

const SECRETS_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every key with its id, name and state, as `/admin/upstream-keys` shows
/// them, sorted by id.
async fn pool_as_shown(gw: &Gateway) -> Vec<(String, String, String)> {
    let (_, keys) = gw.admin(Method::GET, "/admin/upstream-keys", None).await;
    let mut all: Vec<(String, String, String)> = keys["data"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let text = |f: &str| k[f].as_str().unwrap_or_default().to_owned();
            (text("id"), text("name"), text("state"))
        })
        .collect();
    all.sort();
    all
}

/// Keys added, rotated, disabled, scheduled for revocation and removed at
/// runtime, addressed by id (two share a name during the rotation): after a
/// restart the pool is exactly what it was, the rotated-in secret serves,
/// and the configured key it replaced is still the one draining.
#[tokio::test]
async fn after_a_restart_the_pool_is_exactly_what_it_was() {
    let dir = TempDir::new("pool-restart");
    let mut gw = setup()
        .db(&dir.join("gateway.db"))
        .configure(|c| c.storage.secrets_key = Some(SECRETS_KEY.into()))
        .start()
        .await;
    let (alpha, beta) = (gw.key_id("alpha").await, gw.key_id("beta").await);
    // Rotate alpha onto gamma's secret: the old alpha drains for an hour.
    let rotate = json!({"secret": KEYS[2].1, "grace_seconds": 3600});
    let path = format!("/admin/upstream-keys/{alpha}/rotate");
    let (status, rotated) = gw.admin(Method::POST, &path, Some(rotate)).await;
    assert_eq!(status, 200, "{rotated}");
    let new_alpha = gw.key_id("alpha").await;
    assert_ne!(new_alpha, alpha, "the rotated-in key has an id of its own");
    // Disable the new alpha by id: the draining old alpha is untouched.
    let path = format!("/admin/upstream-keys/{new_alpha}/disable");
    assert_eq!(gw.admin(Method::POST, &path, None).await.0, 200);
    let shown = pool_as_shown(&gw).await;
    let state_of = |id: &str| shown.iter().find(|k| k.0 == id).unwrap().2.clone();
    assert!(state_of(&alpha).starts_with("draining"), "{shown:?}");
    assert!(state_of(&new_alpha).starts_with("disabled"), "{shown:?}");
    let path = format!("/admin/upstream-keys/{new_alpha}/enable");
    assert_eq!(gw.admin(Method::POST, &path, None).await.0, 200);
    // Beta is scheduled for revocation in a day.
    let path = format!("/admin/upstream-keys/{beta}/schedule-revoke");
    let (status, body) = gw
        .admin(Method::POST, &path, Some(json!({"delay_seconds": 86_400})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["state"].as_str().unwrap().starts_with("draining"),
        "{body}"
    );
    let before = pool_as_shown(&gw).await;

    assert!(gw.stop().await);
    gw.resume().await.unwrap();
    assert_eq!(
        pool_as_shown(&gw).await,
        before,
        "the same keys, ids and states"
    );
    // The rotated-in secret is the one that serves.
    let (_, created) = gw
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "app"})))
        .await;
    let app = created["key"].as_str().unwrap().to_owned();
    let r = gw.chat_as(&app).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-gateway-key"], "alpha");
    // A removal outlives a restart too.
    let path = format!("/admin/upstream-keys/{beta}");
    assert_eq!(gw.admin(Method::DELETE, &path, None).await.0, 200);
    assert!(gw.stop().await);
    gw.resume().await.unwrap();
    assert!(pool_as_shown(&gw).await.iter().all(|k| k.0 != beta));
}

/// A gateway that stores its state refuses to take a secret it would have
/// to store in clear; a stored key whose secret cannot be opened stops the
/// start, saying why.
#[tokio::test]
async fn secrets_are_never_stored_in_clear() {
    let dir = TempDir::new("sealed");
    let db = dir.join("gateway.db");
    let mut gw = setup().db(&db).start().await;
    let add = json!({"provider": "simulated", "name": "gamma", "secret": KEYS[2].1});
    let (status, body) = gw
        .admin(Method::POST, "/admin/upstream-keys", Some(add.clone()))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "no_secrets_key"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secrets_key")
    );
    assert!(gw.stop().await);
    gw.config.storage.secrets_key = Some(SECRETS_KEY.into());
    gw.resume().await.unwrap();
    let (status, _) = gw
        .admin(Method::POST, "/admin/upstream-keys", Some(add))
        .await;
    assert_eq!(status, 201);
    assert!(gw.stop().await);
    let file = std::fs::read(&db).unwrap_or_default();
    let wal = std::fs::read(dir.join("gateway.db-wal")).unwrap_or_default();
    let needle = KEYS[2].1.as_bytes();
    for bytes in [&file, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "a secret in clear"
        );
    }
    gw.config.storage.secrets_key = Some(SECRETS_KEY.replace('0', "f"));
    let e = gw.resume().await.unwrap_err().to_string();
    assert!(e.contains("gamma") && e.contains("cannot be opened"), "{e}");
    assert!(!e.contains(KEYS[2].1));
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = TempDir::new("restart");
    let mut gw = setup().db(&dir.join("gateway.db")).start().await;
    let (_, created) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "app", "team": "web"})),
        )
        .await;
    let app = created["key"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        assert_eq!(gw.chat_as(&app).await.status(), 200);
    }
    let alpha = gw.key_id("alpha").await;
    let disable = format!("/admin/upstream-keys/{alpha}/disable");
    gw.admin(Method::POST, &disable, None).await;
    gw.admin(
        Method::POST,
        "/admin/canary/gpt-4.1/percent",
        Some(json!({"percent": 30})),
    )
    .await;
    let (_, before) = gw.call(Method::GET, "/status.json", None, None).await;
    let spent_before = before["budget"][0]["spent"].as_u64().unwrap();
    assert!(spent_before > 0);

    assert!(gw.stop().await);
    gw.clock().advance(Duration::from_secs(60));
    gw.resume().await.unwrap();

    // The client key still works; usage, budget, key state and canary are back.
    assert_eq!(gw.chat_as(&app).await.status(), 200);
    let (_, usage) = gw.admin(Method::GET, "/v1/usage", None).await;
    assert_eq!(usage["usage"][0]["requests"], 6);
    let (_, after) = gw.call(Method::GET, "/status.json", None, None).await;
    assert!(after["budget"][0]["spent"].as_u64().unwrap() > spent_before);
    let (_, keys) = gw.admin(Method::GET, "/admin/upstream-keys", None).await;
    let all = keys["data"][0]["keys"].as_array().unwrap();
    let alpha = all.iter().find(|k| k["name"] == "alpha").unwrap();
    assert!(
        alpha["state"].as_str().unwrap().starts_with("disabled"),
        "{alpha}"
    );
    let served: u64 = all
        .iter()
        .map(|k| k["requests_today"].as_u64().unwrap())
        .sum();
    assert_eq!(served, 6, "today's counters continue");
    let (_, canary) = gw.admin(Method::GET, "/admin/canary", None).await;
    assert_eq!(canary["data"][0]["candidates"][0]["percent"], 30.0);
    let (_, audit) = gw.admin(Method::GET, "/admin/audit", None).await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 3);
}

/// A paste of keys is imported line by line: the good ones are added (and
/// serve, and are audited), a key the rule refuses, a duplicate and a key
/// the upstream refuses to a probe are reported, and no secret comes back.
#[tokio::test]
async fn keys_pasted_in_bulk_are_checked_reported_line_by_line_and_added() {
    let gw = start().await;
    let text = format!(
        "# keys from the relay's console\n{}\nshort sk-tiny\nagain {}\n\nrevoked sk-sim-never-issued-000000000009\n",
        KEYS[2].1, KEYS[0].1
    );
    let (status, report) = gw
        .admin(
            Method::POST,
            "/admin/upstream-keys/import",
            Some(json!({"provider": "simulated", "text": text, "name_prefix": "relay", "probe_model": "gpt-4o-mini"})),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let lines = report["lines"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["name"].as_str().unwrap(),
                l["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (2, "relay-1", "added"),
            (3, "short", "refused"),
            (4, "again", "refused"),
            (6, "revoked", "probe_failed"),
        ],
        "{report}"
    );
    assert_eq!(
        (report["added"].as_u64(), report["refused"].as_u64()),
        (Some(1), Some(3))
    );
    let text = report.to_string();
    assert!(
        !text.contains(KEYS[2].1) && !text.contains(KEYS[0].1),
        "{text}"
    );
    assert!(
        lines[1]["error"].as_str().unwrap().contains("short"),
        "{report}"
    );
    assert!(
        lines[2]["error"].as_str().unwrap().contains("already"),
        "{report}"
    );
    // The imported key serves, and its addition is in the audit log.
    let id = lines[0]["id"].as_str().unwrap().to_owned();
    let (_, keys) = gw.admin(Method::GET, "/admin/upstream-keys", None).await;
    assert!(keys.to_string().contains(&id));
    let (_, audit) = gw.admin(Method::GET, "/admin/audit", None).await;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "upstream_key.add" && e["target"] == id.as_str()),
        "{audit}"
    );
    let (status, e) = gw
        .admin(
            Method::POST,
            "/admin/upstream-keys/import",
            Some(json!({"provider": "simulated"})),
        )
        .await;
    assert_eq!((status, error_code(&e)), (400, "no_keys"));
}
