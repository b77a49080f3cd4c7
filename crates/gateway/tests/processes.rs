//! Three `gateway serve` processes on one Postgres database, configured as
//! docs/deployment.md shows: they start at once on an empty database, share
//! a hard budget without overspending it, and stop using a key that one of
//! them was told to disable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway::sim::{self, Behavior};
use gateway::testing::TestDatabase;
use serde_json::{Value, json};

use crate::harness::{Process, SimKey, TempDir, eventually};

const MASTER: &str = "master-key-for-the-process-tests";
const KEYS: [SimKey; 2] = [
    (
        "alpha",
        "sk-sim-alpha-v-0000000000000001",
        Behavior::Verbose,
    ),
    ("beta", "sk-sim-beta-v-00000000000000002", Behavior::Verbose),
];

/// How long a change may take to reach the other processes here (within
/// a second by design; the deadline allows for a loaded machine).
const PROPAGATION: Duration = Duration::from_secs(5);

/// One process's configuration: the shared file of docs/deployment.md, with
/// a daily hard limit of `daily_usd`.
fn write_config(dir: &Path, upstream: &str, daily_usd: &str) -> PathBuf {
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
limits = [{{ scope = "global", daily_usd = "{daily_usd}" }}]

[auth]
mode = "keys"
master_key = "${{GATEWAY_MASTER_KEY}}"

[storage]
url = "${{DATABASE_URL}}"

[cluster]
instance = "${{INSTANCE}}"
data_dir = "{}"
"#,
        dir.join("data").display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Three processes started at once on `db`, each with its own directory.
async fn three(db: &TestDatabase, dir: &TempDir, upstream: &str, daily_usd: &str) -> Vec<Process> {
    let start = |name: &'static str| {
        let config = write_config(&dir.join(name), upstream, daily_usd);
        async move {
            Process::serve(
                &config,
                &[
                    ("GATEWAY_MASTER_KEY", MASTER),
                    ("K0", KEYS[0].1),
                    ("K1", KEYS[1].1),
                    ("DATABASE_URL", db.url()),
                    ("INSTANCE", name),
                ],
            )
            .await
        }
    };
    let (a, b, c) = tokio::join!(start("gw-1"), start("gw-2"), start("gw-3"));
    vec![a, b, c]
}

async fn get(http: &reqwest::Client, gw: &Process, path: &str) -> Value {
    let r = http
        .get(gw.url(path))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// A client key created through the first process, once every process
/// accepts it.
async fn client_key(http: &reqwest::Client, gws: &[Process]) -> String {
    let r = http
        .post(gws[0].url("/v1/keys"))
        .bearer_auth(MASTER)
        .json(&json!({"name": "load", "team": "processes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    for gw in gws {
        eventually(PROPAGATION, "every process accepts the new key", || async {
            // A body without a model: 400 once the key is known, 401 before.
            let r = http
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            r.status() == 400
        })
        .await;
    }
    key
}

/// 32 clients spread over the processes, each request with `max_tokens`,
/// until the budget refuses: the answers.
async fn spend_it_all(http: &reqwest::Client, urls: &[String], key: &str) -> u64 {
    let workers = (0..32).map(|w| {
        let (http, url) = (http.clone(), urls[w % urls.len()].clone());
        let key = key.to_owned();
        tokio::spawn(async move {
            let body = json!({
                "model": "gpt-4.1",
                "max_tokens": 200,
                "messages": [{"role": "user", "content": "write at length"}],
            });
            let mut served = 0u64;
            loop {
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => served += 1,
                    402 => return served,
                    other => panic!("{other}: {}", r.text().await.unwrap()),
                }
            }
        })
    });
    let mut answers = 0;
    for w in futures_util::future::join_all(workers).await {
        answers += w.unwrap();
    }
    answers
}

/// Three processes start at once on an empty database and share a hard
/// daily budget of $0.50 under 32 concurrent clients until it refuses:
/// together they never spend past it, and they spend at least 95% of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_started_at_once_never_overspend_a_shared_budget() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("processes-budget");
    let upstream = sim::start(&KEYS).await.unwrap();
    let gws = three(&db, &dir, &upstream.base_url(), "0.50").await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = gws.iter().map(|g| g.url("/v1/chat/completions")).collect();
    let key = client_key(&http, &gws).await;
    let answers = spend_it_all(&http, &urls, &key).await;

    let limit = 500_000;
    eventually(PROPAGATION, "every answer is in the report", || async {
        let usage = get(&http, &gws[1], "/v1/usage").await;
        let requests: u64 = usage["usage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["requests"].as_u64().unwrap())
            .sum();
        requests == answers
    })
    .await;
    let usage = get(&http, &gws[2], "/v1/usage").await;
    let spent = usage["total_estimated_cost_micros"].as_u64().unwrap();
    eprintln!("three processes spent {spent} µ$ of {limit} in {answers} answers");
    assert!(spent <= limit, "spent {spent} µ$ of {limit}");
    assert!(
        spent * 100 >= limit * 95,
        "only {spent} µ$ of {limit} spent"
    );
}

/// A key disabled through one process is skipped by the other two within
/// the propagation deadline, and stays disabled there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_disabled_through_one_process_stops_serving_on_the_others() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("processes-disable");
    let upstream = sim::start(&KEYS).await.unwrap();
    let gws = three(&db, &dir, &upstream.base_url(), "100").await;
    let http = reqwest::Client::new();
    let alpha = gateway::store::config_key_id("sim", "alpha");
    let r = http
        .post(gws[0].url(&format!("/admin/upstream-keys/{alpha}/disable")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for gw in &gws[1..] {
        eventually(PROPAGATION, "alpha is disabled on the others", || async {
            let keys = get(&http, gw, "/admin/upstream-keys").await;
            keys["data"][0]["keys"].as_array().unwrap().iter().any(|k| {
                k["name"] == "alpha" && k["state"].as_str().unwrap().starts_with("disabled")
            })
        })
        .await;
    }
    let key = client_key(&http, &gws).await;
    let urls: Vec<String> = gws[1..]
        .iter()
        .map(|g| g.url("/v1/chat/completions"))
        .collect();
    for url in urls.iter().cycle().take(20) {
        let r = http
            .post(url)
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["x-gateway-key"],
            "beta",
            "alpha is disabled everywhere"
        );
    }
}
