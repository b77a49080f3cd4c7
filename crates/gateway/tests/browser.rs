//! The dashboard in a real headless Chromium, driven over WebDriver
//! (chromedriver): the page loads, shows an upstream key's state change after
//! it is disabled through the API, shows no secret, and logs no console
//! error. `cargo xtask ci` installs Debian's `chromium` and `chromium-driver`
//! when they are missing and requires them (`KEYPOOL_REQUIRE_BROWSER=1`);
//! plain `cargo test` skips this test, saying why, where they are absent.
//! `CHROMIUM` and `CHROMEDRIVER` point elsewhere.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gateway::config::{AuthConfig, AuthMode, KeyConfig};
use gateway::sim::Behavior;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, MASTER, Setup, TempDir};

const KEYS: [(&str, &str, Behavior); 2] = [
    ("alpha", "sk-sim-alpha-00000000000000001", Behavior::Healthy),
    ("beta", "sk-sim-beta-000000000000000002", Behavior::Healthy),
];

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser tools, or why they are missing.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let tool = |var: &str, default: &str| {
        let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        if path.exists() {
            Ok(path)
        } else {
            Err(format!(
                "{} not found: install Debian's chromium and chromium-driver (`cargo xtask ci` does), or set {var}",
                path.display()
            ))
        }
    };
    Ok((
        tool("CHROMIUM", "/usr/bin/chromium")?,
        tool("CHROMEDRIVER", "/usr/bin/chromedriver")?,
    ))
}

/// Starts chromedriver and returns once it says it has started.
async fn start_driver(chromedriver: &PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready, started) = tokio::sync::oneshot::channel::<bool>();
    std::thread::spawn(move || {
        let mut ready = Some(ready);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("started successfully")
                && let Some(r) = ready.take()
            {
                let _ = r.send(true);
            }
        }
        if let Some(r) = ready {
            let _ = r.send(false);
        }
    });
    let ok = tokio::time::timeout(Duration::from_secs(30), started)
        .await
        .expect("chromedriver did not start within 30 s")
        .unwrap();
    assert!(ok, "chromedriver exited before it started");
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A WebDriver command: POSTs `body` to `url`, returns the answer.
async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let r = http.post(url).json(body).send().await.unwrap();
    r.json().await.unwrap()
}

/// A WebDriver session on a headless Chromium.
async fn open_session(
    http: &reqwest::Client,
    driver: &Driver,
    chromium: &PathBuf,
    profile: &TempDir,
) -> String {
    let profile = &profile.0;
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
    let created = post(http, &format!("{}/session", driver.url), &caps).await;
    let id = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
        .to_owned();
    format!("{}/session/{id}", driver.url)
}

/// Runs the page's own `refresh()` (which fetches `/dashboard.json` and
/// redraws), awaits it, and returns what `read` (a JavaScript expression)
/// says afterwards.
async fn after_refresh(http: &reqwest::Client, session: &str, read: &str) -> Value {
    let script = format!(
        "const done = arguments[arguments.length - 1]; refresh().then(() => done({read}));"
    );
    let body = json!({"script": script, "args": []});
    post(http, &format!("{session}/execute/async"), &body).await["value"].clone()
}

/// The browser's console log.
async fn console(http: &reqwest::Client, session: &str) -> Vec<Value> {
    let v = post(
        http,
        &format!("{session}/se/log"),
        &json!({"type": "browser"}),
    )
    .await;
    v["value"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no browser log: {v}"))
}

async fn gateway_with_traffic() -> Gateway {
    let gw = Setup::new(&KEYS)
        .master()
        .configure(|c| {
            c.providers[0].keys = ["alpha", "beta"]
                .iter()
                .enumerate()
                .map(|(i, name)| KeyConfig {
                    tokens_per_day: Some(1_000_000),
                    ..KeyConfig::from_env(*name, &format!("K{i}"))
                })
                .collect();
            if let Some(a) = c.auth.as_mut() {
                a.mode = Some(AuthMode::None);
            }
            // The demo's budget, for the budget table.
            c.budget = gateway::demo_config("http://127.0.0.1:9/v1", "127.0.0.1:0").budget;
        })
        .start()
        .await;
    assert!(matches!(
        gw.config.auth,
        Some(AuthConfig {
            mode: Some(AuthMode::None),
            ..
        })
    ));
    for _ in 0..6 {
        let r = gw.chat("gpt-4.1").await;
        assert_eq!(r.status(), 200);
    }
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_disabled_key_without_console_errors() {
    let (chromium, chromedriver) = match tools() {
        Ok(t) => t,
        Err(why) if std::env::var_os("KEYPOOL_REQUIRE_BROWSER").is_none() => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(why) => panic!("{why}"),
    };
    let gw = gateway_with_traffic().await;
    let http = reqwest::Client::new();
    // Declared before the driver, so removed after Chromium has ended.
    let profile = TempDir::new("browser-profile");
    let driver = start_driver(&chromedriver).await;
    let session = open_session(&http, &driver, &chromium, &profile).await;
    let r = http
        .post(format!("{session}/url"))
        .json(&json!({"url": gw.url("/dashboard")}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let state = r#"(document.querySelector('[data-key="alpha"]') || {}).textContent"#;
    assert_eq!(after_refresh(&http, &session, state).await, "active");
    let canary = after_refresh(
        &http,
        &session,
        "document.querySelector('#canary tbody').textContent",
    )
    .await;
    let canary = canary.as_str().unwrap();
    assert!(
        canary.contains("claude-sonnet-4.5 10.00%") && canary.contains("gpt-4.1"),
        "{canary}"
    );

    // Disabled through the API: the open page shows it on its next refresh.
    let alpha = gw.key_id("alpha").await;
    let (status, _) = gw
        .admin(
            Method::POST,
            &format!("/admin/upstream-keys/{alpha}/disable"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let disabled = after_refresh(&http, &session, state).await;
    assert!(
        disabled.as_str().unwrap().starts_with("disabled"),
        "{disabled}"
    );

    // Budget and the request chart are drawn; no secret is on the page.
    let drawn = "[document.querySelectorAll('#chart rect').length, document.querySelectorAll('#budget tbody tr').length, document.documentElement.outerHTML]";
    let page = after_refresh(&http, &session, drawn).await;
    assert!(
        page[0].as_u64().unwrap() > 0 && page[1].as_u64().unwrap() > 0,
        "chart and budget drawn"
    );
    let html = page[2].as_str().unwrap();
    for (_, secret, _) in KEYS {
        assert!(!html.contains(secret) && !html.contains(&secret[secret.len() - 4..]));
    }
    assert!(!html.contains("sk-"), "not even a redacted secret");
    assert!(!html.contains(MASTER));

    // No console errors (and the log is really read: a deliberate one shows).
    let severe: Vec<Value> = console(&http, &session)
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
    let after = console(&http, &session).await;
    assert!(
        after.iter().any(|e| e["level"] == "SEVERE"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("deliberate"))),
        "the console log is not being read: {after:?}"
    );
    let _ = http.delete(&session).send().await;
}
