//! A real `gateway serve` process, killed with SIGKILL while answering:
//! after a restart on the same database (SQLite, or Postgres with the same
//! data directory) every answered request is in the usage records, the
//! budget continues from what was spent, and a disabled key stays disabled.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gateway::sim::{self, Behavior};
use serde_json::{Value, json};

use crate::harness::{Process, TempDir};

const MASTER: &str = "master-key-for-the-crash-test";
const KEYS: [(&str, &str, Behavior); 2] = [
    ("alpha", "sk-sim-alpha-00000000000000001", Behavior::Healthy),
    ("beta", "sk-sim-beta-000000000000000002", Behavior::Healthy),
];

/// The `[storage]` section of a SQLite gateway in `dir`.
fn sqlite(dir: &Path) -> String {
    format!(
        "[storage]\npath = \"{}\"\n",
        dir.join("gateway.db").display()
    )
}

/// The `[storage]` and `[cluster]` sections of a gateway on the Postgres
/// database `${DATABASE_URL}`, its outbox in `dir`, as the docs write them.
fn postgres(dir: &Path) -> String {
    format!(
        "[storage]\nurl = \"${{DATABASE_URL}}\"\n\n[cluster]\ninstance = \"gw-1\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    )
}

fn write_config(dir: &Path, upstream: &str, storage: &str) -> PathBuf {
    // The budget's day does not end while the test runs (the file, and so
    // the offset, is the same after the restart).
    let noon = crate::harness::noon_offset();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"

[[providers]]
name = "sim"
base_url = "{upstream}"
keys = [
  {{ name = "alpha", secret = "${{K0}}" }},
  {{ name = "beta", secret = "${{K1}}" }},
]

[budget]
utc_offset = "{noon}"
limits = [{{ scope = "global", daily_usd = 1000.0 }}]

[auth]
mode = "keys"
master_key = "${{GATEWAY_MASTER_KEY}}"

{storage}"#
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn serve(config: &Path, database: &str) -> Process {
    Process::serve(
        config,
        &[
            ("GATEWAY_MASTER_KEY", MASTER),
            ("K0", KEYS[0].1),
            ("K1", KEYS[1].1),
            ("DATABASE_URL", database),
        ],
    )
    .await
}

async fn admin(
    http: &reqwest::Client,
    gw: &Process,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut rb = http.request(method, gw.url(path)).bearer_auth(MASTER);
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

/// What eight clients sending until the process dies under them saw
/// answered, in full: (requests, micro-dollars).
async fn load_until_killed(http: &reqwest::Client, gw: &mut Process, key: &str) -> (u64, u64) {
    let answered = Arc::new(AtomicU64::new(0));
    let cost = Arc::new(AtomicU64::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let url = gw.url("/v1/chat/completions");
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (http, key, url) = (http.clone(), key.to_owned(), url.clone());
            let (answered, cost, enough) = (answered.clone(), cost.clone(), enough.clone());
            tokio::spawn(async move {
                loop {
                    let r = http
                        .post(&url)
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
    gw.kill();
    for w in workers {
        w.await.unwrap();
    }
    (answered.load(Ordering::SeqCst), cost.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_requests_survive_kill_9() {
    let dir = TempDir::new("crash");
    survives_kill_9(&dir, &sqlite(&dir.0), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_requests_survive_kill_9_on_postgres() {
    let Some(db) = gateway::testing::TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("crash-postgres");
    survives_kill_9(&dir, &postgres(&dir.0), db.url()).await;
}

async fn survives_kill_9(dir: &TempDir, storage: &str, database: &str) {
    let sim = sim::start(&KEYS).await.unwrap();
    let config = write_config(&dir.0, &sim.base_url(), storage);
    let http = reqwest::Client::new();
    let serve = |config: PathBuf| async move { serve(&config, database).await };

    let mut gw = serve(config.clone()).await;
    let post = reqwest::Method::POST;
    let created = admin(
        &http,
        &gw,
        post.clone(),
        "/v1/keys",
        Some(json!({"name": "load", "team": "crash"})),
    )
    .await;
    let client_key = created["key"].as_str().unwrap().to_owned();
    // The configured key's id is the same at every start.
    let alpha = gateway::store::config_key_id("sim", "alpha");
    let disable = format!("/admin/upstream-keys/{alpha}/disable");
    admin(&http, &gw, post, &disable, None).await;
    let (answered, cost) = load_until_killed(&http, &mut gw, &client_key).await;

    let gw = serve(config).await;
    let get = reqwest::Method::GET;
    let usage = admin(&http, &gw, get.clone(), "/v1/usage", None).await;
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
        .get(gw.url("/status.json"))
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
    let keys = admin(&http, &gw, get, "/admin/upstream-keys", None).await;
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
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&client_key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
