//! The dashboard in a real headless Chromium, driven over WebDriver
//! (chromedriver): the page loads, shows an upstream key's state change after
//! it is disabled through the API, shows no secret, and logs no console
//! error. `cargo xtask ci` installs Debian's `chromium` and `chromium-driver`
//! when they are missing; `CHROMIUM` and `CHROMEDRIVER` point elsewhere.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::config::{AuthConfig, KeyConfig};
use gateway::sim::{self, Behavior};
use serde_json::{Value, json};

const MASTER: &str = "master-key-for-the-browser";
const KEYS: [(&str, &str, Behavior); 2] = [
    ("alpha", "sk-sim-alpha-00000000000000001", Behavior::Healthy),
    ("beta", "sk-sim-beta-000000000000000002", Behavior::Healthy),
];

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium and chromium-driver (`cargo xtask ci` does), or set {var}",
        path.display()
    );
    path
}

fn key(name: &str, var: &str) -> KeyConfig {
    KeyConfig {
        tokens_per_day: Some(1_000_000),
        ..KeyConfig::from_env(name, var)
    }
}

/// Runs `script` in the page until it returns `want(value)`, within a deadline:
/// the page refreshes itself every two seconds.
async fn wait_for(
    http: &reqwest::Client,
    session: &str,
    script: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let r: Value = http
            .post(format!("{session}/execute/sync"))
            .json(&json!({"script": script, "args": []}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if want(&r["value"]) {
            return r["value"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the page never showed what was expected; last: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_disabled_key_without_console_errors() {
    let chromium = tool("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");

    let sim = sim::start(&KEYS).await.unwrap();
    let mut config = gateway::demo_config(&sim.base_url(), "127.0.0.1:0");
    config.providers[0].keys = vec![key("alpha", "K0"), key("beta", "K1")];
    config.auth = Some(AuthConfig {
        mode: Some("none".into()),
        keys: vec![],
        master_key: Some("${MASTER}".into()),
    });
    let mut env: HashMap<String, String> = KEYS
        .iter()
        .enumerate()
        .map(|(i, (_, s, _))| (format!("K{i}"), (*s).to_owned()))
        .collect();
    env.insert("MASTER".into(), MASTER.into());
    let running = gateway::start(&config, &env).await.unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    for _ in 0..6 {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": "gpt-4.1", "user": "u-7", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let driver = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !http
        .get(format!("{driver}/status"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile = std::env::temp_dir().join(format!("gateway-browser-{}", std::process::id()));
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    }}});
    let created: Value = http
        .post(format!("{driver}/session"))
        .json(&caps)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
        .to_owned();
    let session = format!("{driver}/session/{id}");
    let r = http
        .post(format!("{session}/url"))
        .json(&json!({"url": format!("{base}/dashboard")}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let state = r#"const e = document.querySelector('[data-key="alpha"]'); return e ? e.textContent : null;"#;
    wait_for(&http, &session, state, |v| v == "active").await;
    let canary = wait_for(
        &http,
        &session,
        "return document.querySelector('#canary tbody').textContent;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("claude-sonnet-4.5 10.00%"))
        },
    )
    .await;
    assert!(canary.as_str().unwrap().contains("gpt-4.1"));

    // Disabled through the API: the open page shows it on its next refresh.
    let r = http
        .post(format!(
            "{base}/admin/upstream-keys/simulated/alpha/disable"
        ))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for(&http, &session, state, |v| {
        v.as_str().is_some_and(|s| s.starts_with("disabled"))
    })
    .await;

    // Budget and the request chart are drawn; no secret is on the page.
    let html = wait_for(
        &http,
        &session,
        "return document.querySelectorAll('#chart rect').length > 0 && document.querySelectorAll('#budget tbody tr').length > 0 ? document.documentElement.outerHTML : null;",
        Value::is_string,
    )
    .await;
    let html = html.as_str().unwrap();
    for (_, secret, _) in KEYS {
        assert!(!html.contains(secret) && !html.contains(&secret[secret.len() - 4..]));
    }
    assert!(!html.contains("sk-"), "not even a redacted secret");

    // No console errors (and the log is really read: a deliberate one shows).
    let logs = |http: reqwest::Client, session: String| async move {
        let v: Value = http
            .post(format!("{session}/se/log"))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no browser log: {v}"))
    };
    let severe: Vec<Value> = logs(http.clone(), session.clone())
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    http.post(format!("{session}/execute/sync"))
        .json(&json!({"script": "console.error('deliberate'); return 1;", "args": []}))
        .send()
        .await
        .unwrap();
    let after = logs(http.clone(), session.clone()).await;
    assert!(
        after.iter().any(|e| e["level"] == "SEVERE"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("deliberate"))),
        "the console log is not being read: {after:?}"
    );

    let _ = http.delete(&session).send().await;
    let _ = running.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&profile);
}
