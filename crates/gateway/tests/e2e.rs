//! End to end: a real HTTP client against a running gateway, in front of the
//! simulated upstream (or a wiremock one where timing matters).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use gateway::config::{Config, KeyConfig};
use gateway::sim::{self, Behavior};
use serde_json::json;

struct Env {
    _sim: sim::SimUpstream,
    _running: gateway::server::Running,
    base: String,
    http: reqwest::Client,
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The body of a GET of `path`, as text.
    async fn text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The body of a GET of `path`, as JSON.
    async fn json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Posts a small chat completion for `model`.
    async fn chat(&self, model: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/chat/completions"))
            .json(&chat(model))
            .send()
            .await
            .unwrap()
    }
}

fn key(name: &str, var: &str) -> KeyConfig {
    KeyConfig::from_env(name, var)
}

/// A gateway over the simulated upstream with the given keys, and a config tweak.
async fn start(
    keys: &[(&'static str, &'static str, Behavior)],
    tweak: impl FnOnce(&mut Config),
) -> Env {
    let sim = sim::start(keys).await.unwrap();
    let mut config = gateway::demo_config(&sim.base_url(), "127.0.0.1:0");
    config.providers[0].keys = keys
        .iter()
        .enumerate()
        .map(|(i, (n, _, _))| key(n, &format!("K{i}")))
        .collect();
    config.budget = None;
    tweak(&mut config);
    let env: HashMap<String, String> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, s, _))| (format!("K{i}"), (*s).to_owned()))
        .collect();
    let running = gateway::start(&config, &env).await.unwrap();
    let base = format!("http://{}", running.addr);
    Env {
        _sim: sim,
        _running: running,
        base,
        http: reqwest::Client::new(),
    }
}

const HEALTHY: (&str, &str, Behavior) = (
    "healthy",
    "sk-sim-healthy-0000000000000001",
    Behavior::Healthy,
);
const REVOKED: (&str, &str, Behavior) = (
    "revoked",
    "sk-sim-revoked-0000000000000003",
    Behavior::Revoked,
);

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "user": "u-1", "messages": [{"role": "user", "content": "สวัสดี"}]})
}

#[tokio::test]
async fn a_plain_answer_with_its_headers() {
    let env = start(&[HEALTHY], |_| {}).await;
    let r = env.chat("gpt-4o-mini").await;
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert!(h["x-request-id"].to_str().unwrap().starts_with("req-"));
    assert_eq!(h["x-gateway-key"], "healthy");
    assert_eq!(h["x-gateway-model"], "gpt-4o-mini");
    assert_eq!(h["x-gateway-attempts"], "1");
    assert!(
        h["x-gateway-cost-usd"]
            .to_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Simulated answer from gpt-4o-mini."
    );
    // The caller's request id is kept.
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .header("x-request-id", "abc-123")
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn a_streamed_answer_arrives_as_server_sent_events() {
    let env = start(&[HEALTHY], |_| {}).await;
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() >= 3, "{text}");
    assert!(events[0].starts_with("data: {"));
    assert!(
        text.contains("\"usage\""),
        "the final usage chunk is passed through"
    );
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    // The stream's usage was recorded before [DONE] (auth is off here, so the
    // management API is open to this local caller).
    let usage: serde_json::Value = env.json("/v1/usage").await;
    assert_eq!(usage["usage"][0]["requests"], 1, "{usage}");
    assert!(usage["usage"][0]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn failover_across_keys_is_invisible_to_the_caller() {
    let env = start(&[REVOKED, HEALTHY], |_| {}).await;
    let r = env.chat("gpt-4o-mini").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        (
            r.headers()["x-gateway-key"].to_str().unwrap(),
            r.headers()["x-gateway-attempts"].to_str().unwrap()
        ),
        ("healthy", "2")
    );
    let status = env.text("/status").await;
    assert!(
        status.contains("🔴 revoked") && status.contains("disabled: unauthorized"),
        "{status}"
    );
    assert!(!status.contains("sk-sim"), "no secret on the dashboard");
}

#[tokio::test]
async fn bad_input_gets_openai_errors_never_a_500() {
    let env = start(&[HEALTHY], |c| c.server.body_limit_bytes = 2048).await;
    let post = |body: Vec<u8>| {
        env.http
            .post(env.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post(b"{not json".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_json");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let r = post(serde_json::to_vec(&json!({"messages": []})).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap()["error"]["code"].clone()
        ),
        (400, json!("missing_model"))
    );
    let r = post(vec![b' '; 4096]).await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req-")
    );
    let r = env.http.post(env.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Every answer has an id: the API routes set it themselves, the others
    // through a middleware.
    assert!(
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req-")
    );
    let r = env
        .http
        .get(env.url("/v1/models"))
        .header("x-request-id", "given-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "given-1");
    // An id too long to echo is replaced.
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .header("x-request-id", "x".repeat(129))
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req-")
    );
}

#[tokio::test]
async fn no_key_able_to_serve_is_a_429_with_retry_after() {
    let env = start(&[REVOKED], |_| {}).await;
    // The only key is revoked on its first use: that request fails over to no one.
    let first = env.chat("gpt-4o-mini").await;
    assert_eq!(first.status(), 429);
    let r = env.chat("gpt-4o-mini").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "no_key_available");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 disabled: unauthorized")
    );
    assert_eq!(
        env.http
            .get(env.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        env.http
            .get(env.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_budget_refusal_is_a_402() {
    let env = start(&[HEALTHY], |c| {
        c.budget = Some(gateway::config::BudgetConfig {
            utc_offset: None,
            limits: vec![gateway::config::LimitConfig {
                scope: "global".into(),
                name: None,
                daily_usd: Some(0.000_01),
                weekly_usd: None,
                monthly_usd: None,
                soft_fraction: None,
                fallback_model: None,
            }],
            prices_file: None,
            unknown_model: None,
            unknown_model_usd_per_mtok: None,
        });
    })
    .await;
    let r = env.chat("gpt-4.1").await;
    assert_eq!(r.status(), 402);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "budget_exceeded"
    );
}

#[tokio::test]
async fn client_keys_scopes_models_and_rates() {
    let keys = vec![
        gateway::config::ClientKeyConfig {
            name: "web".into(),
            key_sha256: gateway::auth::hash_key("gw-web-key"),
            team: Some("search".into()),
            models: vec![],
            scopes: None,
            rate_limit: Some(2),
        },
        gateway::config::ClientKeyConfig {
            name: "embed-only".into(),
            key_sha256: gateway::auth::hash_key("gw-embed-key"),
            team: None,
            models: vec!["text-embedding-3-small".into()],
            scopes: Some(vec!["embeddings:read".into()]),
            rate_limit: None,
        },
    ];
    let env = start(&[HEALTHY], |c| {
        c.auth = Some(gateway::config::AuthConfig {
            mode: Some("keys".into()),
            keys,
            master_key: None,
        });
    })
    .await;
    let call = |key: Option<&'static str>, path: &'static str, body: serde_json::Value| {
        let mut r = env.http.post(env.url(path)).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    assert_eq!(
        call(None, "/v1/chat/completions", chat("gpt-4o-mini"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        call(
            Some("gw-wrong"),
            "/v1/chat/completions",
            chat("gpt-4o-mini")
        )
        .await
        .unwrap()
        .status(),
        401
    );
    assert_eq!(
        call(
            Some("gw-embed-key"),
            "/v1/chat/completions",
            chat("gpt-4o-mini")
        )
        .await
        .unwrap()
        .status(),
        403
    );
    let embed = json!({"model": "text-embedding-3-small", "input": "hello"});
    let r = call(Some("gw-embed-key"), "/v1/embeddings", embed)
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(
        call(
            Some("gw-web-key"),
            "/v1/chat/completions",
            chat("gpt-4o-mini")
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        call(
            Some("gw-web-key"),
            "/v1/chat/completions",
            chat("gpt-4o-mini")
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let r = call(
        Some("gw-web-key"),
        "/v1/chat/completions",
        chat("gpt-4o-mini"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429, "two a minute");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "client_rate_limited"
    );
    // Unknown clients are refused before their body is read.
    let r = env
        .http
        .post(env.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn models_metrics_and_status_endpoints() {
    let env = start(&[HEALTHY], |_| {}).await;
    env.chat("gpt-4.1").await;
    let models: serde_json::Value = env.json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"gpt-4.1") && ids.contains(&"claude-sonnet-4.5"),
        "{ids:?}"
    );
    let metrics = env.text("/metrics").await;
    for name in [
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_key_up",
        "gateway_upstream_attempts_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(!metrics.contains("sk-sim"));
    // A served model has its own label; any other name a caller sends is
    // counted as `other`, so callers cannot add series without bound.
    assert!(metrics.contains(r#"model="gpt-4.1""#), "{metrics}");
    for i in 0..3 {
        env.chat(&format!("made-up-model-{i}")).await;
    }
    let metrics = env.text("/metrics").await;
    assert!(!metrics.contains("made-up-model"), "{metrics}");
    assert!(metrics.contains(r#"model="other""#), "{metrics}");
    let snap: serde_json::Value = env.json("/status.json").await;
    assert_eq!(snap["providers"][0]["pool"]["keys"][0]["name"], "healthy");
    assert_eq!(
        snap["providers"][0]["pool"]["keys"][0]["secret"],
        "sk-sim-…0001"
    );
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    shutdown_drains(1, 1).await;
}

/// Several serving threads, each with a runtime of its own accepting from
/// the one socket: every request is answered, and shutdown drains them all.
#[tokio::test]
async fn serving_threads_answer_and_drain_together() {
    shutdown_drains(3, 12).await;
}

/// `clients` requests on connections of their own are in flight at a slow
/// upstream when a gateway serving on `threads` threads shuts down.
async fn shutdown_drains(threads: usize, clients: usize) {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(300))
                .set_body_json(
                    json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
                ),
        )
        .mount(&upstream)
        .await;
    let mut config = gateway::demo_config(&format!("{}/v1", upstream.uri()), "127.0.0.1:0");
    config.providers[0].keys = vec![key("slow", "K0")];
    config.budget = None;
    let env: HashMap<String, String> =
        [("K0".to_owned(), "sk-slow-00000000000000000000".to_owned())].into();
    let options = gateway::StartOptions {
        serving_threads: std::num::NonZeroUsize::new(threads),
        ..gateway::StartOptions::default()
    };
    let running = gateway::start_with(&config, &env, options).await.unwrap();
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let in_flight: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(url)
                    .json(&chat("gpt-4o-mini"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // Let every request reach the upstream, then shut down.
    while upstream.received_requests().await.unwrap().len() < clients {
        tokio::task::yield_now().await;
    }
    let addr = running.addr;
    assert!(
        running.shutdown(Duration::from_secs(5)).await,
        "drained within the grace period"
    );
    for request in in_flight {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    assert!(
        reqwest::Client::new()
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn the_upstream_answer_is_passed_on_byte_for_byte() {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
    let upstream = MockServer::start().await;
    // Field order, spacing, a float's spelling and an unknown field, as a
    // re-serialisation would not keep them.
    let body = r#"{"id":"chatcmpl-1", "object":"chat.completion","zeta":1.50,"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&upstream)
        .await;
    let mut config = gateway::demo_config(&format!("{}/v1", upstream.uri()), "127.0.0.1:0");
    config.providers[0].keys = vec![key("one", "K0")];
    config.budget = None;
    let env: HashMap<String, String> =
        [("K0".to_owned(), "sk-one-000000000000000000000".to_owned())].into();
    let running = gateway::start(&config, &env).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", running.addr))
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-gateway-key"], "one");
    assert_eq!(r.text().await.unwrap(), body);
}

/// Builds the layers from a config with a mock transport, as `gateway check` does.
fn build(
    config: &Config,
    env: &HashMap<String, String>,
) -> Result<
    (
        gateway_client::Client,
        gateway::auth::Auth,
        gateway::setup::Understood,
    ),
    gateway::config::ConfigError,
> {
    gateway::setup::build(
        config,
        env,
        std::sync::Arc::new(transport::MockTransport::new()),
        None,
    )
}

#[test]
fn the_issue_config_works_as_written() {
    let text = r#"
[server]
listen = "127.0.0.1:9000"

[[providers]]
name = "relay"
base_url = "http://127.0.0.1:18000/v1"
priority = 0
strategy = "least-used"
keys = [
  { name = "prod-1", secret = "${KEY_1}", tokens_per_day = 5000000 },
  { name = "prod-2", secret = "${KEY_2}" },
  { name = "backup", secret = "${KEY_3}", tier = 1 },
]

[[canary]]
model = "gpt-4.1"
candidate = "claude-sonnet-4.5"
percent = 10
salt = "launch-1"

[budget]
utc_offset = "+07:00"
limits = [{ scope = "global", daily_usd = 100.0, soft_fraction = 0.8, fallback_model = "gpt-4o-mini" }]

[auth]
mode = "none"
"#;
    let config = Config::parse(text, Path::new("gateway.toml")).unwrap();
    let env: HashMap<String, String> = (1..=3)
        .map(|i| (format!("KEY_{i}"), format!("sk-relay-key-{i:020}")))
        .collect();
    let (_client, _auth, understood) = build(&config, &env).unwrap();
    let text = understood.lines.join("\n");
    assert!(
        text.contains("provider relay key backup (sk-…0003) tier 1"),
        "{text}"
    );
    assert!(
        text.contains("canary gpt-4.1 → claude-sonnet-4.5 at 10%"),
        "{text}"
    );
    assert!(text.contains("budget global daily $100.00"), "{text}");
    assert!(
        text.contains("storage: in memory only"),
        "without [storage] the gateway says state is not kept: {text}"
    );
    assert!(
        !text.contains("00000000000000000001"),
        "secrets are redacted"
    );
}

#[test]
fn config_errors_name_the_field_and_line() {
    let bad = "[server]\nlisten = \"127.0.0.1:9000\"\ncolour = \"blue\"\n";
    let e = Config::parse(bad, Path::new("gw.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("gw.toml:") && e.contains("line 3") && e.contains("unknown field `colour`"),
        "{e}"
    );
    let missing = "[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nkeys = [{ name = \"k\", secret = \"${NOPE}\" }]\n";
    let c = Config::parse(missing, Path::new("gw.toml")).unwrap();
    let e = build(&c, &HashMap::new()).unwrap_err().to_string();
    assert_eq!(
        e,
        "providers[0].keys[0].secret: environment variable NOPE is not set"
    );
    let open = "[server]\nlisten = \"0.0.0.0:9000\"\n[auth]\nmode = \"none\"\n[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nkeys = [{ name = \"k\", secret = \"sk-literal-0123456789abcdef\" }]\n";
    let c = Config::parse(open, Path::new("gw.toml")).unwrap();
    let e = build(&c, &HashMap::new()).unwrap_err().to_string();
    assert!(e.contains("only allowed on a loopback address"), "{e}");
    let literal = open.replace("0.0.0.0", "127.0.0.1");
    let c = Config::parse(&literal, Path::new("gw.toml")).unwrap();
    let (_, _, u) = build(&c, &HashMap::new()).unwrap();
    assert!(u.warnings[0].contains("literal secret"), "{:?}", u.warnings);
}

#[test]
fn models_from_a_prices_file_are_served() {
    let dir = std::env::temp_dir().join(format!("gateway-prices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prices = dir.join("prices.toml");
    std::fs::write(
        &prices,
        "[models.\"local-llama\"]\ninput_per_mtok = \"0\"\noutput_per_mtok = \"0\"\n",
    )
    .unwrap();
    let text = format!(
        "[[providers]]\nname = \"p\"\nbase_url = \"http://x/v1\"\nkeys = [{{ name = \"k\", secret = \"${{K}}\" }}]\n[budget]\nprices_file = {:?}\n",
        prices.display().to_string()
    );
    let config = Config::parse(&text, Path::new("gw.toml")).unwrap();
    let env: HashMap<String, String> =
        [("K".to_owned(), "sk-some-key-0123456789abcdef".to_owned())].into();
    let (_, _, understood) = build(&config, &env).unwrap();
    assert!(
        understood.models.iter().any(|m| m == "local-llama"),
        "{:?}",
        understood.models
    );
    assert!(understood.models.iter().any(|m| m == "gpt-4.1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn transport_settings_are_read_and_a_bad_ca_bundle_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("gateway-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("not-a-ca.pem");
    std::fs::write(&bundle, "this is not a certificate").unwrap();
    let text = format!(
        "[transport]\nconnect_timeout_secs = 3\nuse_env_proxy = false\nextra_ca_file = \"{}\"\n\n[[providers]]\nname = \"p\"\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [{{ name = \"k\", secret = \"${{K}}\" }}]\n",
        bundle.display()
    );
    let config = Config::parse(&text, Path::new("gw.toml")).unwrap();
    let r = config.http();
    assert_eq!(r.connect_timeout, Duration::from_secs(3));
    assert!(!r.use_env_proxy);
    // hyper's client unless a proxy is both allowed and named; only reqwest
    // goes through one.
    let proxied: HashMap<String, String> = [(
        "https_proxy".to_owned(),
        "http://proxy.internal:3128".to_owned(),
    )]
    .into();
    let plain = "[[providers]]\nname = \"p\"\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [{ name = \"k\", secret = \"${K}\" }]\n";
    let defaults = Config::parse(plain, Path::new("gw.toml")).unwrap();
    let which = |c: &Config, env: &HashMap<String, String>| {
        gateway::setup::upstream_transport(c, env).unwrap().1
    };
    assert_eq!(
        which(&defaults, &HashMap::new()),
        "hyper (a client per serving thread)"
    );
    assert!(which(&defaults, &proxied).starts_with("reqwest"));
    let no_proxy = Config::parse(
        &format!("[transport]\nuse_env_proxy = false\n\n{plain}"),
        Path::new("gw.toml"),
    )
    .unwrap();
    assert_eq!(
        which(&no_proxy, &proxied),
        "hyper (a client per serving thread)"
    );
    let env: HashMap<String, String> =
        [("K".to_owned(), "sk-test-0123456789abcdef".to_owned())].into();
    let e = gateway::start(&config, &env).await.unwrap_err().to_string();
    assert!(e.contains("not-a-ca.pem"), "{e}");
    let zero = "[server]\nworkers = 0\n";
    let e = Config::parse(zero, Path::new("gw.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("workers") || e.contains("line 2"), "{e}");
    let unknown = "[transport]\ninsecure = true\n";
    let e = Config::parse(unknown, Path::new("gw.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `insecure`"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn upstream_attempts_are_counted_by_key_and_outcome() {
    let env = start(&[REVOKED, HEALTHY], |c| {
        c.providers[0].strategy = keypool_core::Strategy::RoundRobin;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(env.chat("gpt-4o-mini").await.status(), 200);
    }
    let snap: serde_json::Value = env.json("/status.json").await;
    assert_eq!(
        snap["stats"]["attempts"]["simulated/revoked"]["unauthorized"], 1,
        "{}",
        snap["stats"]["attempts"]
    );
    assert_eq!(snap["stats"]["attempts"]["simulated/healthy"]["success"], 3);
    let metrics = env.text("/metrics").await;
    assert!(
        metrics.contains(r#"gateway_upstream_attempts_total{provider="simulated",key="revoked",outcome="unauthorized"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gateway_upstream_attempts_total{provider="simulated",key="healthy",outcome="success"}"#),
        "{metrics}"
    );
}
