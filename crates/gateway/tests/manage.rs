//! End to end over HTTP: the team key API, usage, the upstream pool and canary
//! administration, the audit log, and state that survives a restart. Time is
//! a `ManualClock`, so grace periods pass without waiting.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gateway::config::{AuthConfig, Config, KeyConfig};
use gateway::sim::{self, Behavior};
use gateway_client::ManualClock;
use serde_json::{Value, json};

const MASTER: &str = "master-key-for-tests-0001";
const T0: u64 = 1_795_322_452; // 2026-11-22T04:40:52Z

const KEYS: [(&str, &str, Behavior); 3] = [
    ("alpha", "sk-sim-alpha-00000000000000001", Behavior::Healthy),
    ("beta", "sk-sim-beta-000000000000000002", Behavior::Healthy),
    ("gamma", "sk-sim-gamma-00000000000000003", Behavior::Healthy),
];

struct Gw {
    sim: sim::SimUpstream,
    running: Option<gateway::server::Running>,
    clock: ManualClock,
    base: String,
    http: reqwest::Client,
}

fn key(name: &str, var: &str) -> KeyConfig {
    KeyConfig::from_env(name, var)
}

/// The gateway's config: alpha and beta (gamma's secret is kept for a
/// rotation), a canary, a budget, the master key, and `db` if given.
fn config(upstream: &str, db: Option<&Path>) -> (Config, HashMap<String, String>) {
    let mut config = gateway::demo_config(upstream, "127.0.0.1:0");
    config.providers[0].keys = vec![key("alpha", "K0"), key("beta", "K1")];
    config.auth = Some(AuthConfig {
        mode: Some("keys".into()),
        keys: vec![],
        master_key: Some("${MASTER}".into()),
    });
    if let Some(b) = config.budget.as_mut() {
        b.limits[0].daily_usd = Some(100.0);
        b.limits[0].soft_fraction = None;
        b.limits[0].fallback_model = None;
    }
    config.storage.path = db.map(Path::to_path_buf);
    let mut env: HashMap<String, String> = KEYS
        .iter()
        .enumerate()
        .map(|(i, (_, s, _))| (format!("K{i}"), (*s).to_owned()))
        .collect();
    env.insert("MASTER".into(), MASTER.into());
    (config, env)
}

async fn start_on(sim: sim::SimUpstream, clock: ManualClock, db: Option<&Path>) -> Gw {
    let (config, env) = config(&sim.base_url(), db);
    let running = gateway::start_with(
        &config,
        &env,
        gateway::StartOptions {
            clock: Some(Arc::new(clock.clone())),
            ..gateway::StartOptions::default()
        },
    )
    .await
    .unwrap();
    Gw {
        base: format!("http://{}", running.addr),
        sim,
        running: Some(running),
        clock,
        http: reqwest::Client::new(),
    }
}

async fn start(db: Option<&Path>) -> Gw {
    let sim = sim::start(&KEYS).await.unwrap();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(T0));
    start_on(sim, clock, db).await
}

impl Gw {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(MASTER), body).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn chat(&self, bearer: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(bearer)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    }

    async fn stop(&mut self) -> sim::SimUpstream {
        if let Some(r) = self.running.take() {
            assert!(r.shutdown(Duration::from_secs(5)).await);
        }
        std::mem::replace(&mut self.sim, sim::start(&[]).await.unwrap())
    }
}

use reqwest::Method;

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn team_keys_are_created_used_rotated_and_revoked() {
    let gw = start(None).await;
    let create = json!({"name": "search-team", "team": "search", "rate_limit": 200, "scopes": ["chat:write", "embeddings:read"]});

    // Only the master key manages keys.
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
    assert_eq!(gw.chat(&secret).await.status(), 200);
    assert_eq!(gw.chat("gw-unknown").await.status(), 401);
    // A client key cannot manage (it lacks the admin scope).
    let (status, body) = gw.call(Method::GET, "/v1/keys", Some(&secret), None).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));

    // Listing never shows a secret or a hash.
    let (status, list) = gw.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(status, 200);
    let text = list.to_string();
    assert!(text.contains(&id) && !text.contains(&secret[3..]), "{text}");
    assert!(!text.contains(&gateway::auth::hash_key(&secret)));

    // Rotation: same name, team, scopes and limits; the old key works until the grace ends.
    let (status, rotated) = gw
        .admin(Method::POST, "/v1/keys/rotate", Some(json!({"key_id": id})))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["key"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["name"], "search-team");
    assert_eq!(rotated["team"], "search");
    assert_eq!(rotated["rate_limit"], 200);
    assert_eq!(rotated["old_key_revoke_at"], T0 + 86_400);
    assert_eq!(gw.chat(&secret).await.status(), 200);
    assert_eq!(gw.chat(&new_secret).await.status(), 200);
    gw.clock.advance(Duration::from_secs(86_399));
    assert_eq!(
        gw.chat(&secret).await.status(),
        200,
        "still within the grace period"
    );
    gw.clock.advance(Duration::from_secs(1));
    assert_eq!(gw.chat(&secret).await.status(), 401, "refused once it ends");
    assert_eq!(gw.chat(&new_secret).await.status(), 200);
    let (status, body) = gw
        .admin(Method::POST, "/v1/keys/rotate", Some(json!({"key_id": id})))
        .await;
    assert_eq!((status, error_code(&body)), (400, "key_revoked"));

    // Scheduled revocation; bad input is refused with the right status.
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
    gw.clock.advance(Duration::from_secs(59));
    assert_eq!(gw.chat(&new_secret).await.status(), 200);
    gw.clock.advance(Duration::from_secs(1));
    assert_eq!(gw.chat(&new_secret).await.status(), 401);

    // Unknown scopes and bad limits are refused; an admin-scoped key manages,
    // and the audit log names it.
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
        gw.chat(&ops_secret).await.status(),
        403,
        "admin alone cannot chat"
    );

    // A created key's rate limit applies at once.
    let (_, slow) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "slow", "rate_limit": 2})),
        )
        .await;
    let slow_secret = slow["key"].as_str().unwrap().to_owned();
    assert_eq!(gw.chat(&slow_secret).await.status(), 200);
    assert_eq!(gw.chat(&slow_secret).await.status(), 200);
    let r = gw.chat(&slow_secret).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));

    // DELETE revokes at once.
    let (_, third) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "batch", "scopes": ["embeddings:read"]})),
        )
        .await;
    let third_secret = third["key"].as_str().unwrap().to_owned();
    // Without chat:write, chat is refused.
    let r = gw.chat(&third_secret).await;
    assert_eq!(r.status(), 403);
    let (status, gone) = gw
        .admin(
            Method::DELETE,
            &format!("/v1/keys/{}", third["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!((status, gone["status"].as_str()), (200, Some("revoked")));
    assert_eq!(gw.chat(&third_secret).await.status(), 401);
    let (status, _) = gw.admin(Method::DELETE, "/v1/keys/key_nope", None).await;
    assert_eq!(status, 404);

    // Usage per key, with cost; filters.
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

    // Every action is audited, by whom, and never with a secret.
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
    let ops_path = format!("/v1/keys/{}", ops["id"].as_str().unwrap());
    let (status, _) = gw
        .call(Method::DELETE, &ops_path, Some(&ops_secret), None)
        .await;
    assert_eq!(status, 200, "an admin key can revoke itself");
    let (_, audit) = gw.admin(Method::GET, "/admin/audit?limit=1", None).await;
    assert_eq!(audit["data"][0]["actor"], "ops");
    assert_eq!(audit["data"].as_array().unwrap().len(), 1);
    let text = audit.to_string();
    for s in [&secret, &new_secret, &third_secret] {
        assert!(
            !text.contains(&s[3..]),
            "a secret leaked into the audit log"
        );
    }
}

#[tokio::test]
async fn the_upstream_pool_and_the_canary_are_operated_at_runtime() {
    let gw = start(None).await;
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

    // Disable alpha: every request goes to beta.
    let (status, after) = gw
        .admin(
            Method::POST,
            "/admin/upstream-keys/simulated/alpha/disable",
            None,
        )
        .await;
    assert_eq!(status, 200, "{after}");
    assert!(after["state"].as_str().unwrap().starts_with("disabled"));
    for _ in 0..4 {
        let r = gw.chat(&app).await;
        assert_eq!(r.headers()["x-gateway-key"], "beta");
    }
    let (status, _) = gw
        .admin(
            Method::POST,
            "/admin/upstream-keys/simulated/nope/disable",
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw
        .admin(
            Method::POST,
            "/admin/upstream-keys/elsewhere/alpha/disable",
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = gw
        .admin(
            Method::POST,
            "/admin/upstream-keys/simulated/alpha/explode",
            None,
        )
        .await;
    assert_eq!((status, error_code(&body)), (400, "invalid_command"));
    let (status, after) = gw
        .admin(
            Method::POST,
            "/admin/upstream-keys/simulated/alpha/enable",
            None,
        )
        .await;
    assert_eq!((status, after["state"].as_str()), (200, Some("active")));

    // Remove beta and alpha; add gamma: it serves.
    for name in ["alpha", "beta"] {
        let (status, _) = gw
            .admin(
                Method::DELETE,
                &format!("/admin/upstream-keys/simulated/{name}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(gw.chat(&app).await.status(), 429, "no key left");
    let add = json!({"provider": "simulated", "name": "gamma", "secret": KEYS[2].1, "tier": 0});
    let (status, added) = gw
        .admin(Method::POST, "/admin/upstream-keys", Some(add.clone()))
        .await;
    assert_eq!(status, 201, "{added}");
    assert!(!added.to_string().contains(KEYS[2].1));
    let r = gw.chat(&app).await;
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

    // Rotate gamma onto alpha's secret: the new one serves, the old drains.
    let (status, rotated) = gw
        .admin(
            Method::POST,
            "/admin/upstream-keys/simulated/gamma/rotate",
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

    // The canary: validated percentages, rollout, rollback, restart.
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
    assert_eq!(percent["before"]["shares_bp"]["claude-sonnet-4.5"], 1000);
    assert_eq!(percent["after"]["shares_bp"]["claude-sonnet-4.5"], 2500);
    let text = audit.to_string();
    for (_, secret, _) in KEYS {
        let tail = &secret[secret.len() - 4..];
        assert!(
            !text.contains(secret) && !text.contains(tail),
            "a secret (or its redacted form) leaked into the audit log"
        );
    }
}

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gateway-manage-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("gateway.db")
}

#[tokio::test]
async fn state_survives_a_restart() {
    let db = temp_db("restart");
    let mut gw = start(Some(&db)).await;
    let (_, created) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "app", "team": "web"})),
        )
        .await;
    let app = created["key"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        assert_eq!(gw.chat(&app).await.status(), 200);
    }
    gw.admin(
        Method::POST,
        "/admin/upstream-keys/simulated/alpha/disable",
        None,
    )
    .await;
    gw.admin(
        Method::POST,
        "/admin/canary/gpt-4.1/percent",
        Some(json!({"percent": 30})),
    )
    .await;
    let (_, before) = gw.call(Method::GET, "/status.json", None, None).await;
    let spent_before = before["budget"][0]["spent"].as_u64().unwrap();
    assert!(spent_before > 0);

    let sim = gw.stop().await;
    let clock = gw.clock.clone();
    clock.advance(Duration::from_secs(60));
    let gw = start_on(sim, clock, Some(&db)).await;

    // The client key still works; usage, budget, key state and canary are back.
    assert_eq!(gw.chat(&app).await.status(), 200);
    let (_, usage) = gw.admin(Method::GET, "/v1/usage", None).await;
    assert_eq!(usage["usage"][0]["requests"], 6);
    let (_, after) = gw.call(Method::GET, "/status.json", None, None).await;
    assert!(after["budget"][0]["spent"].as_u64().unwrap() > spent_before);
    let (_, keys) = gw.admin(Method::GET, "/admin/upstream-keys", None).await;
    let alpha = keys["data"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "alpha")
        .unwrap();
    assert!(
        alpha["state"].as_str().unwrap().starts_with("disabled"),
        "{alpha}"
    );
    let served: u64 = keys["data"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["requests_today"].as_u64().unwrap())
        .sum();
    assert_eq!(served, 6, "today's counters continue");
    let (_, canary) = gw.admin(Method::GET, "/admin/canary", None).await;
    assert_eq!(canary["data"][0]["candidates"][0]["percent"], 30.0);
    let (_, audit) = gw.admin(Method::GET, "/admin/audit", None).await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[tokio::test]
async fn old_usage_goes_after_its_retention_and_short_retentions_are_refused() {
    use gateway::store::{SqliteStore, Store, UsageRecord, Write};
    let db = temp_db("retention");
    let day = 86_400_000i64;
    let now = i64::try_from(T0).unwrap() * 1000;
    {
        let mut store = SqliteStore::open(&db).unwrap();
        let record = |at: i64| {
            Write::Usage(UsageRecord {
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
            })
        };
        store
            .write(&[
                record(now - 100 * day),
                record(now - 50 * day),
                record(now - day),
            ])
            .unwrap();
    }
    let sim = sim::start(&KEYS).await.unwrap();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(T0));
    let (mut config, env) = config(&sim.base_url(), Some(&db));
    config.storage.usage_retention_days = Some(10);
    let e = gateway::start(&config, &env).await.unwrap_err().to_string();
    assert!(
        e.contains("usage_retention_days") && e.contains("32"),
        "{e}"
    );
    config.storage.usage_retention_days = Some(60);
    let running = gateway::start_with(
        &config,
        &env,
        gateway::StartOptions {
            clock: Some(Arc::new(clock)),
            ..gateway::StartOptions::default()
        },
    )
    .await
    .unwrap();
    let usage: Value = reqwest::Client::new()
        .get(format!("http://{}/v1/usage", running.addr))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        usage["usage"][0]["requests"], 2,
        "the 100-day-old record went: {usage}"
    );
    drop(sim);
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}
