//! Three `gateway serve` processes on one Postgres database, configured as
//! docs/deployment.md shows: they start at once on an empty database, share
//! a hard budget without overspending it, stop using a key that one of them
//! was told to disable or that an upstream rate-limited, and lose no answer
//! when one of them is killed with SIGKILL under load.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gateway::sim::{self, Behavior};
use gateway::testing::TestDatabase;
use serde_json::{Value, json};

use crate::harness::{Process, SimKey, TempDir, eventually, requests_in};

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

/// Processes on one database in front of one simulated upstream, each
/// configured as docs/deployment.md shows, with a daily hard limit.
struct Rig {
    db: TestDatabase,
    dir: TempDir,
    upstream: sim::SimUpstream,
    keys: &'static [SimKey],
    daily_usd: &'static str,
    /// The budget's UTC offset, fixed when the test begins (a restart keeps
    /// it): its day does not end while the test runs.
    noon: String,
}

impl Rig {
    /// A database of its own and an upstream with `keys` for the test
    /// `name`; `None` (with the reason printed) where there is no Postgres.
    async fn new(name: &str, keys: &'static [SimKey], daily_usd: &'static str) -> Option<Rig> {
        let db = TestDatabase::create().await?;
        Some(Rig {
            db,
            dir: TempDir::new(name),
            upstream: sim::start(keys).await.unwrap(),
            keys,
            daily_usd,
            noon: crate::harness::noon_offset(),
        })
    }

    /// The file of the process `name` (the same for every process but its
    /// data directory, which a restart keeps).
    fn config(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        let keys: String = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, (key, _, _))| format!("  {{ name = \"{key}\", secret = \"${{K{i}}}\" }},\n"))
            .collect();
        let text = format!(
            r#"[server]
listen = "127.0.0.1:0"

[[providers]]
name = "sim"
base_url = "{}"
keys = [
{keys}]

# The tests send one prompt again and again and must reach every key:
# no prompt-cache affinity.
[routing]
cache_affinity_secs = 0

[budget]
utc_offset = "{}"
limits = [{{ scope = "global", daily_usd = "{}" }}]

[auth]
mode = "keys"
master_key = "${{GATEWAY_MASTER_KEY}}"

[storage]
url = "${{DATABASE_URL}}"

[cluster]
instance = "${{INSTANCE}}"
data_dir = "{}"
"#,
            self.upstream.base_url(),
            self.noon,
            self.daily_usd,
            dir.join("data").display()
        );
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts (or restarts) the process `name`.
    async fn serve(&self, name: &str) -> Process {
        let config = self.config(name);
        let secrets: Vec<(String, &str)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, (_, secret, _))| (format!("K{i}"), *secret))
            .collect();
        let mut env: Vec<(&str, &str)> = vec![
            ("GATEWAY_MASTER_KEY", MASTER),
            ("DATABASE_URL", self.db.url()),
            ("INSTANCE", name),
        ];
        env.extend(secrets.iter().map(|(k, v)| (k.as_str(), *v)));
        Process::serve(&config, &env).await
    }

    /// Three processes started at once.
    async fn three(&self) -> Vec<Process> {
        let [a, b, c] = NAMES;
        let (a, b, c) = tokio::join!(self.serve(a), self.serve(b), self.serve(c));
        vec![a, b, c]
    }
}

/// The processes' names, in the order [`Rig::three`] returns them.
const NAMES: [&str; 3] = ["gw-1", "gw-2", "gw-3"];

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
    let Some(rig) = Rig::new("processes-budget", &KEYS, "0.50").await else {
        return;
    };
    let gws = rig.three().await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = gws.iter().map(|g| g.url("/v1/chat/completions")).collect();
    let key = client_key(&http, &gws).await;
    let answers = spend_it_all(&http, &urls, &key).await;

    let limit = 500_000;
    eventually(PROPAGATION, "every answer is in the report", || async {
        let usage = get(&http, &gws[1], "/v1/usage").await;
        let requests = requests_in(&usage);
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
    let Some(rig) = Rig::new("processes-disable", &KEYS, "100").await else {
        return;
    };
    let gws = rig.three().await;
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

/// Requests answered by any process, summed from the usage records.
async fn recorded(http: &reqwest::Client, gw: &Process) -> u64 {
    let usage = get(http, gw, "/v1/usage").await;
    requests_in(&usage)
}

/// Nine clients spread over `urls`, each moving to the next process when
/// one does not answer, until `stop`: the requests answered in full.
fn spread_load(
    http: &reqwest::Client,
    urls: &[String],
    key: &str,
    stop: &Arc<AtomicBool>,
    answered: &Arc<(AtomicU64, tokio::sync::Notify)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..9)
        .map(|w| {
            let (http, urls, key) = (http.clone(), urls.to_vec(), key.to_owned());
            let (stop, answered) = (stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut at = w % urls.len();
                let body = json!({"model": "gpt-4o-mini", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": "hi"}]});
                while !stop.load(Ordering::SeqCst) {
                    let r = http
                        .post(&urls[at])
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            if r.bytes().await.is_ok() {
                                answered.0.fetch_add(1, Ordering::SeqCst);
                                answered.1.notify_one();
                            }
                        }
                        Ok(r) => panic!("{}: {}", r.status(), r.text().await.unwrap()),
                        Err(_) => at = (at + 1) % urls.len(),
                    }
                }
            })
        })
        .collect()
}

/// One of three processes is killed with SIGKILL while clients spread over
/// all three: every request any of them answered is in the usage records
/// once the killed one restarts with its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_of_three_processes_under_load_loses_no_answer() {
    let Some(rig) = Rig::new("processes-kill", &KEYS, "100").await else {
        return;
    };
    let mut gws = rig.three().await;
    let http = reqwest::Client::new();
    let key = client_key(&http, &gws).await;
    let urls: Vec<String> = gws.iter().map(|g| g.url("/v1/chat/completions")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new((AtomicU64::new(0), tokio::sync::Notify::new()));
    let workers = spread_load(&http, &urls, &key, &stop, &answered);
    let reached = |n: u64| {
        let answered = answered.clone();
        async move {
            while answered.0.load(Ordering::SeqCst) < n {
                answered.1.notified().await;
            }
        }
    };
    reached(300).await;
    gws[0].kill();
    reached(answered.0.load(Ordering::SeqCst) + 300).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let answered = answered.0.load(Ordering::SeqCst);
    gws[0] = rig.serve(NAMES[0]).await;
    eventually(PROPAGATION, "every answer is recorded", || async {
        recorded(&http, &gws[1]).await >= answered
    })
    .await;
    // At most the three requests in flight at the killed process were
    // recorded without their answer arriving.
    let n = recorded(&http, &gws[2]).await;
    assert!(n <= answered + 3, "{n} recorded for {answered} answered");
}

const STORM: [SimKey; 2] = [
    (
        "healthy",
        "sk-sim-healthy-0000000000000001",
        Behavior::Healthy,
    ),
    (
        "limited",
        "sk-sim-limited-0000000000000002",
        Behavior::RateLimited,
    ),
];

/// The state of the upstream key `name` as `gw` shows it.
async fn key_state(http: &reqwest::Client, gw: &Process, name: &str) -> String {
    let keys = get(http, gw, "/admin/upstream-keys").await;
    keys["data"][0]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .map(|k| k["state"].as_str().unwrap().to_owned())
        .unwrap()
}

/// A key an upstream rate-limits, met by one process, is benched by the
/// other two before they send it anything: their requests are answered at
/// the first attempt, by the other key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_met_by_one_process_benches_the_key_on_the_others() {
    let Some(rig) = Rig::new("processes-storm", &STORM, "100").await else {
        return;
    };
    let gws = rig.three().await;
    let http = reqwest::Client::new();
    let key = client_key(&http, &gws).await;
    let chat = |gw: &Process| {
        http.post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    for _ in 0..20 {
        assert_eq!(chat(&gws[0]).await.unwrap().status(), 200);
        if key_state(&http, &gws[0], "limited")
            .await
            .starts_with("cooling down")
        {
            break;
        }
    }
    let learned = key_state(&http, &gws[0], "limited").await;
    assert!(learned.starts_with("cooling down"), "{learned}");
    for gw in &gws[1..] {
        eventually(PROPAGATION, "the others bench the key", || async {
            key_state(&http, gw, "limited").await == learned
        })
        .await;
        for _ in 0..4 {
            let r = chat(gw).await.unwrap();
            let (status, headers) = (r.status(), r.headers().clone());
            assert_eq!(status, 200, "{}", r.text().await.unwrap());
            let r = headers;
            assert_eq!(r["x-gateway-key"], "healthy");
            assert_eq!(
                r["x-gateway-attempts"], "1",
                "no request went to the benched key"
            );
        }
    }
}
