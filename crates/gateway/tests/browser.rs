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

/// A headless Chromium on one page of a gateway. Its fields drop in order:
/// chromedriver (and Chromium with it) ends before the profile is removed.
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Driver,
    _profile: TempDir,
}

/// Opens `path` of `gw` in a headless Chromium; `None` (the test skips,
/// saying why) where the browser tools are missing and not required.
async fn browse(gw: &Gateway, path: &str) -> Option<Browser> {
    let (chromium, chromedriver) = match tools() {
        Ok(t) => t,
        Err(why) if std::env::var_os("KEYPOOL_REQUIRE_BROWSER").is_none() => {
            eprintln!("skipped: {why}");
            return None;
        }
        Err(why) => panic!("{why}"),
    };
    let http = reqwest::Client::new();
    // One profile per page: the tests run at once.
    let profile = TempDir::new(&format!("browser-profile{}", path.replace('/', "-")));
    let driver = start_driver(&chromedriver).await;
    let session = open_session(&http, &driver, &chromium, &profile).await;
    let r = http
        .post(format!("{session}/url"))
        .json(&json!({"url": gw.url(path)}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    Some(Browser {
        http,
        session,
        _driver: driver,
        _profile: profile,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_disabled_key_without_console_errors() {
    let gw = gateway_with_traffic().await;
    let Some(browser) = browse(&gw, "/dashboard").await else {
        return;
    };
    let (http, session) = (&browser.http, browser.session.as_str());

    let state = r#"(document.querySelector('[data-key="alpha"]') || {}).textContent"#;
    assert_eq!(after_refresh(http, session, state).await, "active");
    let canary = after_refresh(
        http,
        session,
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
    let disabled = after_refresh(http, session, state).await;
    assert!(
        disabled.as_str().unwrap().starts_with("disabled"),
        "{disabled}"
    );

    // Budget and the request chart are drawn; no secret is on the page.
    let drawn = "[document.querySelectorAll('#chart rect').length, document.querySelectorAll('#budget tbody tr').length, document.documentElement.outerHTML]";
    let page = after_refresh(http, session, drawn).await;
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
    let severe: Vec<Value> = console(http, session)
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
    let after = console(http, session).await;
    assert!(
        after.iter().any(|e| e["level"] == "SEVERE"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("deliberate"))),
        "the console log is not being read: {after:?}"
    );
    let _ = http.delete(session).send().await;
}

/// The open page in a WebDriver session.
struct Page<'a> {
    http: &'a reqwest::Client,
    session: String,
}

impl Page<'_> {
    /// Runs `body` (JavaScript that ends by calling `done(value)`) and
    /// returns the value.
    async fn run(&self, body: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1]; {body}");
        let url = format!("{}/execute/async", self.session);
        let answer = post(self.http, &url, &json!({"script": script, "args": []})).await;
        answer["value"].clone()
    }

    /// What `read` says now.
    async fn read(&self, read: &str) -> Value {
        self.run(&format!("done({read});")).await
    }

    /// Does `action` (which starts one of the page's actions), awaits the
    /// action (its call and the redraw after it), and returns `read`.
    async fn act(&self, action: &str, read: &str) -> Value {
        self.run(&format!(
            "{action}; window.lastAction.then(() => done({read}));"
        ))
        .await
    }

    /// The page's result line after `action`; it must say the action worked.
    async fn succeeds(&self, action: &str) {
        let said = self
            .act(action, "document.getElementById('result').className + ': ' + document.getElementById('result').textContent")
            .await;
        let said = said.as_str().unwrap_or_default().to_owned();
        assert!(said.starts_with("ok: "), "{action}\n -> {said}");
    }
}

/// JavaScript that sets input `id` to `value`.
fn set(id: &str, value: &str) -> String {
    format!(
        "document.getElementById({}).value = {};",
        json!(id),
        json!(value)
    )
}

/// JavaScript that submits form `id`.
fn submit(id: &str) -> String {
    format!("document.getElementById({}).requestSubmit()", json!(id))
}

/// JavaScript that clicks the button of `action` whose data attribute
/// `attribute` is `value`.
fn click(action: &str, attribute: &str, value: &str) -> String {
    format!(
        "document.querySelector('button[data-action=\"{action}\"][data-{attribute}=\"{value}\"]').click()"
    )
}

/// Upstream keys: disabled, enabled, added in bulk (a bad line refused),
/// rotated and removed through the page.
async fn upstream_keys_through_the_console(page: &Page<'_>) {
    let state = r#"(document.querySelector('[data-key="alpha"]') || {}).textContent"#;
    let disabled = page
        .act(&click("disable", "key-name", "alpha"), state)
        .await;
    assert!(
        disabled.as_str().unwrap().starts_with("disabled"),
        "{disabled}"
    );
    assert_eq!(
        page.act(&click("enable", "key-name", "alpha"), state).await,
        "active"
    );

    let paste = "extra-1 sk-sim-extra-00000000000000000001\n# a comment\nshort";
    let statuses = "[...document.querySelectorAll('#add-report li')].map(li => li.dataset.status)";
    let action = set("add-text", paste) + &submit("add-keys");
    assert_eq!(
        page.act(&action, statuses).await,
        json!(["added", "refused"])
    );
    let has_extra = "!!document.querySelector('[data-key=\"extra-1\"]')";
    assert_eq!(page.read(has_extra).await, true);
    page.succeeds(&click("remove", "key-name", "extra-1")).await;
    assert_eq!(page.read(has_extra).await, false);

    page.run(&format!("{}; done(1)", click("rotate", "key-name", "beta")))
        .await;
    let action =
        set("rotate-secret", "sk-sim-beta-rotated-000000000003") + &submit("rotate-upstream");
    page.succeeds(&action).await;
    let betas = "[...document.querySelectorAll('[data-key=\"beta\"]')].map(e => e.textContent.split(' ')[0]).sort()";
    assert_eq!(page.read(betas).await, json!(["active", "draining"]));
}

/// Team keys: created (its secret shown once), rotated, revoked.
async fn team_keys_through_the_console(page: &Page<'_>, gw: &Gateway) -> Vec<String> {
    let secret = "document.getElementById('new-secret').textContent";
    let action = set("team-key-name", "ci-bot")
        + &set("team-key-team", "qa")
        + ";"
        + &submit("new-team-key");
    let first = page.act(&action, secret).await.as_str().unwrap().to_owned();
    assert!(first.starts_with("gw-"), "{first}");
    let (_, listed) = gw.admin(Method::GET, "/v1/keys", None).await;
    let id = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci-bot" && k["team"] == "qa")
        .unwrap_or_else(|| panic!("{listed}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gone = "document.getElementById('new-secret').textContent + document.getElementById('secret-box').hidden";
    let after = page
        .act(
            "document.getElementById('secret-done').click(); window.lastAction = Promise.resolve()",
            gone,
        )
        .await;
    assert_eq!(after, "true", "the secret leaves the page once dismissed");

    let second = page
        .act(&click("rotate", "id", &id), secret)
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert!(second.starts_with("gw-") && second != first, "{second}");
    page.run("document.getElementById('secret-done').click(); done(1)")
        .await;
    let (_, listed) = gw.admin(Method::GET, "/v1/keys", None).await;
    let new_id = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci-bot" && k["status"] == "active")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    page.succeeds(&click("revoke", "id", &new_id)).await;
    let (_, listed) = gw.admin(Method::GET, "/v1/keys", None).await;
    let active = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "ci-bot" && k["status"] == "active")
        .count();
    assert_eq!(active, 0, "{listed}");
    vec![first, second]
}

/// The canary moved, a budget limit set and removed, usage shown by day.
async fn canary_budget_and_usage_through_the_console(page: &Page<'_>, gw: &Gateway) {
    let action = "document.querySelector('[data-percent=\"gpt-4.1\"]').value = 30; ".to_owned()
        + &click("set percent", "model", "gpt-4.1");
    page.succeeds(&action).await;
    let (_, canary) = gw.admin(Method::GET, "/admin/canary", None).await;
    assert_eq!(
        canary["data"][0]["candidates"][0]["percent"], 30.0,
        "{canary}"
    );
    let phase = "document.querySelector('#canary tbody tr').children[2].textContent";
    let rolled = page
        .act(&click("rollback", "model", "gpt-4.1"), phase)
        .await;
    assert!(
        rolled.as_str().unwrap().starts_with("rolled back"),
        "{rolled}"
    );
    let running = page.act(&click("restart", "model", "gpt-4.1"), phase).await;
    assert_eq!(running, "running");

    let action = set("limit-scope", "team")
        + &set("limit-name", "eng")
        + &set("limit-period", "weekly")
        + &set("limit-usd", "20")
        + &submit("set-limit");
    let budget = "document.querySelector('#budget tbody').textContent";
    let shown = page.act(&action, budget).await;
    assert!(
        shown.as_str().unwrap().contains("team engweekly"),
        "{shown}"
    );
    let removed = page
        .act(&click("remove", "scope", "team eng"), budget)
        .await;
    assert!(!removed.as_str().unwrap().contains("team eng"), "{removed}");

    let drawn = "[document.querySelectorAll('#usage tbody tr').length, document.querySelectorAll('#usage-chart rect').length, document.querySelector('#usage tbody').textContent]";
    let usage = page.act(&submit("usage-form"), drawn).await;
    assert!(usage[0].as_u64().unwrap() >= 1, "{usage}");
    assert_eq!(usage[1], 7, "a bar for each of the last seven days");
    let audit = page
        .read("document.querySelector('#audit tbody').textContent")
        .await;
    let audit = audit.as_str().unwrap();
    for action in [
        "canary.percent",
        "client_key.create",
        "upstream_key.remove",
        "setting.budget_limit",
    ] {
        assert!(
            audit.contains(action),
            "{action} not in the audit log: {audit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_does_an_operators_work_without_console_errors_or_secrets() {
    let gw = gateway_with_traffic().await;
    let Some(browser) = browse(&gw, "/console").await else {
        return;
    };
    let (http, session) = (&browser.http, browser.session.clone());
    let page = Page {
        http,
        session: session.clone(),
    };
    let managing = "document.body.classList.contains('manage')";
    assert_eq!(
        after_refresh(http, &session, managing).await,
        false,
        "not before signing in"
    );
    let login = set("login-key", MASTER) + &submit("login");
    assert_eq!(page.act(&login, managing).await, true);

    upstream_keys_through_the_console(&page).await;
    let team_secrets = team_keys_through_the_console(&page, &gw).await;
    canary_budget_and_usage_through_the_console(&page, &gw).await;

    let html = page.read("document.documentElement.outerHTML").await;
    let html = html.as_str().unwrap();
    assert!(!html.contains(MASTER), "the master key is not in the page");
    assert!(
        !html.contains("sk-"),
        "no upstream secret, not even redacted"
    );
    for s in &team_secrets {
        assert!(
            !html.contains(s.as_str()),
            "a dismissed team key secret is gone"
        );
    }
    let severe: Vec<Value> = console(http, &session)
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    let _ = http.delete(&session).send().await;
}
