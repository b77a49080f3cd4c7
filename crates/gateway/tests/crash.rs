//! A real `gateway serve` process, killed with SIGKILL while answering:
//! after a restart on the same database every answered request is in the
//! usage records, the budget continues from what was spent, and a disabled
//! key stays disabled.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway::sim::{self, Behavior};
use serde_json::{Value, json};

const MASTER: &str = "master-key-for-the-crash-test";
const KEYS: [(&str, &str, Behavior); 2] = [
    ("alpha", "sk-sim-alpha-00000000000000001", Behavior::Healthy),
    ("beta", "sk-sim-beta-000000000000000002", Behavior::Healthy),
];

/// Kills the process when dropped, so no gateway outlives a failed test.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, upstream: &str, port: u16) -> PathBuf {
    let text = format!(
        r#"[server]
listen = "127.0.0.1:{port}"

[[providers]]
name = "sim"
base_url = "{upstream}"
keys = [
  {{ name = "alpha", secret = "${{K0}}" }},
  {{ name = "beta", secret = "${{K1}}" }},
]

[budget]
limits = [{{ scope = "global", daily_usd = 1000.0 }}]

[auth]
mode = "keys"
master_key = "${{GATEWAY_MASTER_KEY}}"

[storage]
path = "{}"
"#,
        dir.join("gateway.db").display()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the binary and waits (with a deadline) until it answers.
async fn spawn(config: &Path, port: u16, http: &reqwest::Client) -> Gateway {
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--config"])
        .arg(config)
        .env("GATEWAY_MASTER_KEY", MASTER)
        .env("K0", KEYS[0].1)
        .env("K1", KEYS[1].1)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let gw = Gateway(child);
    let started = Instant::now();
    loop {
        let up = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            return gw;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin(
    http: &reqwest::Client,
    port: u16,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut rb = http
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(MASTER);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// Parses `x-gateway-cost-usd` ("0.000123") into micro-dollars, exactly.
fn micros(header: &str) -> u64 {
    let (whole, frac) = header.split_once('.').unwrap();
    whole.parse::<u64>().unwrap() * 1_000_000 + frac.parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_requests_survive_kill_9() {
    let sim = sim::start(&KEYS).await.unwrap();
    let dir = std::env::temp_dir().join(format!("gateway-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = write_config(&dir, &sim.base_url(), port);
    let http = reqwest::Client::new();

    let mut gw = spawn(&config, port, &http).await;
    let created = admin(
        &http,
        port,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "load", "team": "crash"})),
    )
    .await;
    let client_key = created["key"].as_str().unwrap().to_owned();
    admin(
        &http,
        port,
        reqwest::Method::POST,
        "/admin/upstream-keys/sim/alpha/disable",
        None,
    )
    .await;

    // Eight clients send requests until the process dies under them.
    let answered = Arc::new(AtomicU64::new(0));
    let cost = Arc::new(AtomicU64::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (http, key) = (http.clone(), client_key.clone());
            let (answered, cost, enough) = (answered.clone(), cost.clone(), enough.clone());
            tokio::spawn(async move {
                loop {
                    let r = http
                        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
                        .send()
                        .await;
                    let Ok(r) = r else { return };
                    if r.status() != 200 {
                        return;
                    }
                    assert_eq!(r.headers()["x-gateway-key"], "beta", "alpha is disabled");
                    let c = micros(r.headers()["x-gateway-cost-usd"].to_str().unwrap());
                    // Answered only once the whole body has arrived.
                    if r.bytes().await.is_ok() {
                        cost.fetch_add(c, Ordering::SeqCst);
                        if answered.fetch_add(1, Ordering::SeqCst) + 1 == 300 {
                            enough.notify_one();
                        }
                    }
                }
            })
        })
        .collect();
    // Killed at an arbitrary moment of full traffic, after 300 answers.
    enough.notified().await;
    gw.0.kill().unwrap(); // SIGKILL: no shutdown, no flush
    gw.0.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let (answered, cost) = (answered.load(Ordering::SeqCst), cost.load(Ordering::SeqCst));

    let gw = spawn(&config, port, &http).await;
    let usage = admin(&http, port, reqwest::Method::GET, "/v1/usage", None).await;
    let recorded = usage["usage"][0]["requests"].as_u64().unwrap();
    assert!(
        recorded >= answered,
        "{answered} answered but only {recorded} recorded"
    );
    // At most the eight in flight were recorded without their answer arriving.
    assert!(
        recorded <= answered + 8,
        "{recorded} recorded for {answered} answered"
    );
    let recorded_cost = usage["total_estimated_cost_micros"].as_u64().unwrap();
    assert!(recorded_cost >= cost);

    // The budget continues from what was spent.
    let status: Value = http
        .get(format!("http://127.0.0.1:{port}/status.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["budget"][0]["spent"].as_u64().unwrap(),
        recorded_cost
    );

    // The disabled key stays disabled.
    let keys = admin(
        &http,
        port,
        reqwest::Method::GET,
        "/admin/upstream-keys",
        None,
    )
    .await;
    let alpha = keys["data"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "alpha")
        .unwrap()
        .clone();
    assert!(
        alpha["state"].as_str().unwrap().starts_with("disabled"),
        "{alpha}"
    );
    // And the client key created before the crash still works.
    let r = http
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .bearer_auth(&client_key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
