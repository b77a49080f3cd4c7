//! Model routing as the issue writes it: providers' models and aliases,
//! keys for some models only, priorities, fallbacks, `/v1/models`, and a
//! model nobody serves.

use std::collections::HashMap;
use std::path::Path;

use gateway::config::Config;
use gateway::sim::{self, Behavior};
use serde_json::Value;

use crate::harness::{Setup, SimKey, build_config, chat, error_code};

/// The issue's example, as written.
const ROUTING: &str = r#"
[[providers]]
name = "relay"
base_url = "http://127.0.0.1:18000/v1"
models = ["gpt-4.1", "gpt-4o-mini", "deepseek-chat"]   # what this provider serves (absent: anything)
aliases = { "deepseek-v3.2" = "deepseek-chat" }         # the client's name -> the upstream's name
keys = [
  { name = "k1", secret = "${KEY_1}" },
  { name = "k2", secret = "${KEY_2}", models = ["gpt-4o-mini"] },  # picked only for these models
]

[[providers]]
name = "official"
base_url = "http://127.0.0.1:18001/v1"
priority = 1
keys = [{ name = "o1", secret = "${KEY_3}" }]

[routing]
fallbacks = { "gpt-4.1" = ["deepseek-chat"] }   # when no key of any provider can serve gpt-4.1
"#;

const K1: SimKey = ("k1", "sk-relay-k1-00000000000001", Behavior::Healthy);
const K2: SimKey = ("k2", "sk-relay-k2-00000000000002", Behavior::Healthy);
const O1: SimKey = ("o1", "sk-official-o1-0000000003", Behavior::Healthy);

/// The example with the harness's names for the secrets (`K0`, `K1`, `K2`).
fn routing_config() -> Config {
    let text = ROUTING
        .replace("${KEY_1}", "${K0}")
        .replace("${KEY_2}", "${K1}")
        .replace("${KEY_3}", "${K2}");
    Config::parse(&text, Path::new("gateway.toml")).unwrap()
}

#[test]
fn the_issues_routing_config_loads_as_written() {
    let config = Config::parse(ROUTING, Path::new("gateway.toml")).unwrap();
    let env: HashMap<String, String> = (1..=3)
        .map(|i| (format!("KEY_{i}"), format!("sk-relay-key-{i:020}")))
        .collect();
    let built = build_config(&config, &env).unwrap();
    let text = built.understood.lines.join("\n");
    assert!(
        text.contains("provider relay alias deepseek-v3.2 → deepseek-chat"),
        "{text}"
    );
    assert!(
        text.contains("routing: gpt-4.1 falls back to deepseek-chat"),
        "{text}"
    );
    let client = built.client;
    assert!(client.serves("deepseek-v3.2") && client.serves("anything: official serves it"));
    assert_eq!(client.listed_models(), None, "official serves any model");
}

#[test]
fn routing_mistakes_name_their_field() {
    let env: HashMap<String, String> =
        [("K".to_owned(), "sk-some-key-0123456789abcdef".to_owned())].into();
    let cases = [
        (
            "models = [\"a\"]\nkeys = [{ name = \"k\", secret = \"${K}\", models = [\"b\"] }]",
            "providers[0].keys[0].models",
        ),
        (
            "models = []\nkeys = [{ name = \"k\", secret = \"${K}\" }]",
            "providers[0].models",
        ),
        (
            "aliases = { \"x\" = \"\" }\nkeys = [{ name = \"k\", secret = \"${K}\" }]",
            "providers[0].aliases.\"x\"",
        ),
        (
            "models = [\"a\"]\nkeys = [{ name = \"k\", secret = \"${K}\" }]\n[routing]\nfallbacks = { \"a\" = [\"b\"] }",
            "routing.fallbacks.\"a\"[0]",
        ),
        (
            "keys = [{ name = \"k\", secret = \"${K}\" }]\n[routing]\nfallbacks = { \"a\" = [\"a\"] }",
            "routing.fallbacks.\"a\"[0]",
        ),
    ];
    for (tail, field) in cases {
        let text = format!("[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\n{tail}\n");
        let config = Config::parse(&text, Path::new("g.toml")).unwrap();
        let e = build_config(&config, &env).unwrap_err();
        assert_eq!(e.context, field, "{text}: {e}");
    }
}

fn header<'r>(r: &'r reqwest::Response, name: &str) -> &'r str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn requests_go_where_the_routing_says() {
    let official = sim::start(&[O1]).await.unwrap();
    let official_url = official.base_url();
    let gw = Setup::new(&[K1, K2, O1])
        .configure(move |c| {
            let mut routing = routing_config();
            routing.providers[0].base_url = c.providers[0].base_url.clone();
            routing.providers[1].base_url = official_url;
            c.providers = routing.providers;
            c.routing = routing.routing;
            c.canary.clear();
        })
        .start()
        .await;
    // gpt-4.1: k2 is for gpt-4o-mini only, and the relay comes first.
    for _ in 0..4 {
        let r = gw.chat("gpt-4.1").await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            (
                header(&r, "x-gateway-provider"),
                header(&r, "x-gateway-key")
            ),
            ("relay", "k1")
        );
    }
    // gpt-4o-mini may go to k2 (least used).
    let r = gw.chat("gpt-4o-mini").await;
    assert_eq!(header(&r, "x-gateway-key"), "k2");
    // The alias reaches the relay by its own name; the client sees its own.
    let r = gw.chat("deepseek-v3.2").await;
    assert_eq!(header(&r, "x-gateway-model"), "deepseek-v3.2");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["model"], "deepseek-chat",
        "the upstream was asked for its name"
    );
    // A model the relay does not list goes to the official provider.
    let r = gw.chat("claude-sonnet-4.5").await;
    assert_eq!(header(&r, "x-gateway-provider"), "official");
    // gpt-4.1 down everywhere: its fallback answers, and says so.
    gw.sim().set_model_down("gpt-4.1", true);
    official.set_model_down("gpt-4.1", true);
    let r = gw.chat("gpt-4.1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-gateway-model"), "deepseek-chat");
    // /v1/models lists the aliases.
    let models = gw.json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"deepseek-v3.2") && ids.contains(&"gpt-4.1"),
        "{ids:?}"
    );
}

#[tokio::test]
async fn a_model_nobody_serves_is_a_404_in_openais_shape_and_no_key_is_touched() {
    let gw = Setup::new(&[K1, K2])
        .configure(|c| {
            let mut routing = routing_config();
            routing.providers[0].base_url = c.providers[0].base_url.clone();
            routing.providers.truncate(1);
            routing.routing.fallbacks.clear();
            c.providers = routing.providers;
            c.canary.clear();
        })
        .start()
        .await;
    let r = gw.post("/v1/chat/completions", None, &chat("gpt-5")).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "model_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        gw.no_key_leased("relay"),
        "no key was leased for a model nobody serves"
    );
    let models = gw.json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["deepseek-chat", "deepseek-v3.2", "gpt-4.1", "gpt-4o-mini"]
    );
}

/// A key added while serving may be kept to some models, and stays so
/// after a restart.
#[tokio::test]
async fn a_key_added_at_runtime_for_some_models_serves_only_them() {
    let extra: SimKey = (
        "mini-only",
        "sk-sim-mini-only-0000000000007",
        Behavior::Healthy,
    );
    let upstream = sim::start(&[K1, extra]).await.unwrap();
    let dir = crate::harness::TempDir::new("runtime-models");
    let mut gw = Setup::new(&[K1])
        .upstream(upstream.base_url())
        .db(&dir.join("state.db"))
        .configure(|c| {
            c.canary.clear();
            c.storage.secrets_key =
                Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into());
        })
        .start()
        .await;
    let add = serde_json::json!({"provider": "simulated", "name": extra.0, "secret": extra.1,
                                 "models": ["gpt-4o-mini"]});
    let (status, added) = gw
        .admin(reqwest::Method::POST, "/admin/upstream-keys", Some(add))
        .await;
    assert_eq!(status, 201, "{added}");
    let (status, _) = gw
        .admin(
            reqwest::Method::POST,
            "/admin/upstream-keys",
            Some(serde_json::json!({"provider": "simulated", "name": "x", "secret": "sk-sim-whatever-000000000000001", "models": []})),
        )
        .await;
    assert_eq!(status, 400, "an empty list serves nothing");
    let k1 = gw.key_id("k1").await;
    let (status, _) = gw
        .admin(
            reqwest::Method::POST,
            &format!("/admin/upstream-keys/{k1}/disable"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for round in ["before a restart", "after it"] {
        let r = gw.chat("gpt-4o-mini").await;
        assert_eq!(r.status(), 200, "{round}");
        assert_eq!(header(&r, "x-gateway-key"), "mini-only", "{round}");
        let r = gw.chat("gpt-4.1").await;
        assert_ne!(
            r.status(),
            200,
            "{round}: the only active key is not for gpt-4.1"
        );
        let keys = gw.json("/admin/upstream-keys").await;
        assert!(
            keys.to_string().contains(r#""models":["gpt-4o-mini"]"#),
            "{round}: {keys}"
        );
        gw.stop().await;
        gw.resume().await.unwrap();
    }
}

#[test]
fn the_issues_error_rules_load_as_written_and_bad_ones_name_their_field() {
    let text = r#"
[[providers]]
name = "relay"
base_url = "http://127.0.0.1:18000/v1"
keys = [{ name = "k1", secret = "${KEY_1}" }]
error_rules = [
  { status = 403, body_contains = "suspended", action = "disable" },
  { status = 503, action = "cooldown", cooldown_secs = 30 },
  { status = 400, body_contains = "model_not_found", action = "client_error" },
]
"#;
    let env: HashMap<String, String> = [(
        "KEY_1".to_owned(),
        "sk-relay-key-00000000000000000001".to_owned(),
    )]
    .into();
    let config = Config::parse(text, Path::new("gateway.toml")).unwrap();
    let built = build_config(&config, &env).unwrap();
    let lines = built.understood.lines.join("\n");
    assert!(
        lines.contains("provider relay has 3 error rules"),
        "{lines}"
    );
    let bad = [
        (
            "{ status = 503, action = \"cooldown\" }",
            "providers[0].error_rules[0].cooldown_secs",
        ),
        (
            "{ status = 403, action = \"disable\", cooldown_secs = 5 }",
            "providers[0].error_rules[0].cooldown_secs",
        ),
        (
            "{ status = 42, action = \"retry\" }",
            "providers[0].error_rules[0].status",
        ),
        (
            "{ status = 500, body_contains = \"\", action = \"retry\" }",
            "providers[0].error_rules[0].body_contains",
        ),
    ];
    for (rule, field) in bad {
        let text = format!(
            "[[providers]]\nname = \"relay\"\nbase_url = \"http://x/v1\"\nkeys = [{{ name = \"k1\", secret = \"${{KEY_1}}\" }}]\nerror_rules = [{rule}]\n"
        );
        let config = Config::parse(&text, Path::new("g.toml")).unwrap();
        let e = build_config(&config, &env).unwrap_err();
        assert_eq!(e.context, field, "{rule}: {e}");
    }
    let unknown = "[[providers]]\nname = \"relay\"\nbase_url = \"http://x/v1\"\nkeys = []\nerror_rules = [{ status = 500, action = \"explode\" }]\n";
    let e = Config::parse(unknown, Path::new("g.toml")).unwrap_err();
    assert!(
        e.message.contains("explode") || e.message.contains("action"),
        "{e}"
    );
}

/// An operator's rule reads a relay's overload as a rest for the key, end
/// to end: the 503 fails over unseen, and the key cools down 30 s instead
/// of only counting toward its breaker.
#[tokio::test]
async fn an_error_rule_rests_a_key_the_relay_says_is_overloaded() {
    use gateway::config::{ErrorRuleConfig, RuleActionConfig};
    let flaky: SimKey = ("flaky", "sk-sim-flaky-00000000000000004", Behavior::Flaky);
    let healthy: SimKey = (
        "healthy",
        "sk-sim-healthy-0000000000000001",
        Behavior::Healthy,
    );
    let gw = Setup::new(&[flaky, healthy])
        .configure(|c| {
            c.canary.clear();
            c.providers[0].error_rules = vec![ErrorRuleConfig {
                status: 503,
                body_contains: Some("overloaded".into()),
                action: RuleActionConfig::Cooldown,
                cooldown_secs: Some(30),
            }];
        })
        .start()
        .await;
    // The flaky key answers its first request and refuses its second.
    for _ in 0..4 {
        assert_eq!(gw.chat("gpt-4o-mini").await.status(), 200);
    }
    let keys = gw.json("/admin/upstream-keys").await;
    let flaky_state = keys["data"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "flaky")
        .map(|k| k["state"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(flaky_state.starts_with("cooling down"), "{flaky_state}");
}
