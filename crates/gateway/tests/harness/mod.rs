//! The one harness every gateway test uses: configure, start, call, stop,
//! restart. A gateway runs in the test's process ([`Setup::start`]) or as a
//! real `gateway serve` process ([`Process::serve`]); either is awaited until
//! it is ready, never polled on wall time.

pub mod process;
pub mod proxy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gateway::config::{AuthConfig, AuthMode, ClusterConfig, Config, KeyConfig};
use gateway::sim::{self, Behavior};
use gateway_client::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

pub use self::process::Process;
pub use self::proxy::Proxy;

/// The master key of gateways started with [`Setup::master`].
pub const MASTER: &str = "master-key-for-tests-0001";

/// 2026-11-22T04:40:52Z, where manual clocks start.
pub const T0: u64 = 1_795_322_452;

/// A simulated upstream key: (name, secret, behaviour).
pub type SimKey = (&'static str, &'static str, Behavior);

/// A healthy key.
pub const HEALTHY: SimKey = (
    "healthy",
    "sk-sim-healthy-0000000000000001",
    Behavior::Healthy,
);

/// A revoked key (401 on first use).
pub const REVOKED: SimKey = (
    "revoked",
    "sk-sim-revoked-0000000000000003",
    Behavior::Revoked,
);

/// A small chat completion for `model`.
pub fn chat(model: &str) -> Value {
    json!({"model": model, "user": "u-1", "messages": [{"role": "user", "content": "สวัสดี"}]})
}

/// The requests a `/v1/usage` answer counts, over all its lines.
pub fn requests_in(usage: &Value) -> u64 {
    let lines = usage["usage"].as_array().expect("a usage answer has lines");
    lines
        .iter()
        .map(|l| l["requests"].as_u64().expect("a line counts its requests"))
        .sum()
}

/// The UTC offset at which it is about noon now: a test that runs on the
/// system clock and spends a daily budget sets it, so that no day (and no
/// daily budget) ends while it runs, whenever it runs.
pub fn noon_offset() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let hour = i64::try_from(secs / 3600 % 24).unwrap_or(0);
    let offset = 12 - hour;
    format!(
        "{}{:02}:00",
        if offset < 0 { '-' } else { '+' },
        offset.abs()
    )
}

/// A directory for one test's files, removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, empty directory named after the test and the process.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gateway-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Tweak = Box<dyn FnOnce(&mut Config) + Send>;

/// How a gateway is set up before it starts.
pub struct Setup {
    keys: Vec<SimKey>,
    upstream: Option<String>,
    clock: Option<ManualClock>,
    master: bool,
    db: Option<PathBuf>,
    shared: Option<(String, PathBuf)>,
    threads: Option<usize>,
    tweaks: Vec<Tweak>,
}

impl Setup {
    /// The demo configuration (a canary, no budget) over a simulated
    /// upstream with `keys`, authentication off.
    pub fn new(keys: &[SimKey]) -> Self {
        Setup {
            keys: keys.to_vec(),
            upstream: None,
            clock: None,
            master: false,
            db: None,
            shared: None,
            threads: None,
            tweaks: Vec::new(),
        }
    }

    /// Time on a manual clock starting at [`T0`].
    pub fn manual_clock(mut self) -> Self {
        self.clock = Some(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(T0),
        ));
        self
    }

    /// Client keys required, and [`MASTER`] as the master key.
    pub fn master(mut self) -> Self {
        self.master = true;
        self
    }

    /// State kept in the SQLite database at `path`.
    pub fn db(mut self, path: &Path) -> Self {
        self.db = Some(path.to_owned());
        self
    }

    /// State shared in the Postgres database at `url`, this instance's own
    /// files in `data_dir`; other instances are noticed at once
    /// (notifications) and polled every 200 ms.
    pub fn postgres(mut self, url: &str, data_dir: &Path) -> Self {
        self.shared = Some((url.to_owned(), data_dir.to_owned()));
        self
    }

    /// Serving on `n` threads.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// An upstream of the test's own (a wiremock server) at `base_url`; the
    /// keys' secrets are still given through the environment.
    pub fn upstream(mut self, base_url: String) -> Self {
        self.upstream = Some(base_url);
        self
    }

    /// Changes the configuration before the start.
    pub fn configure(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweaks.push(Box::new(f));
        self
    }

    /// The configuration and environment, for an upstream at `base_url`.
    fn config(&mut self, base_url: &str) -> (Config, HashMap<String, String>) {
        let mut config = gateway::demo_config(base_url, "127.0.0.1:0");
        config.providers[0].keys = (0..self.keys.len())
            .map(|i| KeyConfig::from_env(self.keys[i].0, &format!("K{i}")))
            .collect();
        config.budget = None;
        let mut env: HashMap<String, String> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, (_, s, _))| (format!("K{i}"), (*s).to_owned()))
            .collect();
        if self.master {
            config.auth = Some(AuthConfig {
                mode: Some(AuthMode::Keys),
                keys: vec![],
                master_key: Some("${MASTER}".into()),
            });
            env.insert("MASTER".into(), MASTER.into());
        }
        config.storage.path.clone_from(&self.db);
        if let Some((url, dir)) = &self.shared {
            config.storage.url = Some(url.clone());
            config.storage.ship_every_ms = Some(20);
            config.cluster = Some(ClusterConfig {
                instance: None,
                data_dir: Some(dir.clone()),
                poll_ms: Some(200),
            });
        }
        for tweak in self.tweaks.drain(..) {
            tweak(&mut config);
        }
        // On the system clock, a budget's day must not end during the test.
        if let Some(b) = config.budget.as_mut().filter(|_| self.clock.is_none()) {
            b.utc_offset.get_or_insert_with(noon_offset);
        }
        (config, env)
    }

    /// Starts the upstream and the gateway, ready to serve.
    pub async fn start(self) -> Gateway {
        self.try_start().await.unwrap()
    }

    /// [`start`](Self::start), or why the gateway did not start.
    pub async fn try_start(mut self) -> Result<Gateway, gateway::StartError> {
        let sim = match &self.upstream {
            Some(_) => None,
            None => Some(sim::start(&self.keys).await.unwrap()),
        };
        let base_url = self
            .upstream
            .clone()
            .unwrap_or_else(|| sim.as_ref().unwrap().base_url());
        let (config, env) = self.config(&base_url);
        let mut gw = Gateway {
            _sim: sim,
            running: None,
            clock: self.clock.clone(),
            threads: self.threads,
            config,
            env,
            base: String::new(),
            http: reqwest::Client::new(),
        };
        gw.resume().await?;
        Ok(gw)
    }
}

/// A gateway running in the test's process.
pub struct Gateway {
    /// The simulated upstream (kept running as long as the gateway),
    /// unless the test brought its own.
    _sim: Option<sim::SimUpstream>,
    running: Option<gateway::Running>,
    /// The manual clock, if the gateway runs on one.
    pub clock: Option<ManualClock>,
    threads: Option<usize>,
    /// The configuration it was started with.
    pub config: Config,
    env: HashMap<String, String>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client for calls the helpers do not cover.
    pub http: reqwest::Client,
}

impl Gateway {
    /// Starts (again) with the configuration in [`config`](Self::config).
    pub async fn resume(&mut self) -> Result<(), gateway::StartError> {
        let options = gateway::StartOptions {
            clock: self
                .clock
                .clone()
                .map(|c| Arc::new(c) as Arc<dyn gateway_client::Clock>),
            serving_threads: self.threads.and_then(std::num::NonZeroUsize::new),
            ..gateway::StartOptions::default()
        };
        let running = gateway::start_with(&self.config, &self.env, options).await?;
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
        Ok(())
    }

    /// The simulated upstream (panics if the test brought its own).
    pub fn sim(&self) -> &sim::SimUpstream {
        self._sim.as_ref().unwrap()
    }

    /// Whether no key of `provider` has been leased today.
    pub fn no_key_leased(&self, provider: &str) -> bool {
        self.running()
            .client()
            .read_pool(provider, |p| {
                p.snapshot().keys.iter().all(|k| k.requests_today == 0)
            })
            .unwrap()
    }

    /// The running gateway.
    pub fn running(&self) -> &gateway::Running {
        self.running.as_ref().unwrap()
    }

    /// The manual clock (panics if the gateway has none).
    pub fn clock(&self) -> &ManualClock {
        self.clock.as_ref().unwrap()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The body of a GET of `path`, as text.
    pub async fn text(&self, path: &str) -> String {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// The body of a GET of `path`, as JSON.
    pub async fn json(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        r.json().await.unwrap()
    }

    /// A call with an optional bearer token and JSON body: the status and
    /// the body (JSON, or the text as a JSON string).
    pub async fn call(
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

    /// A management call with the master key.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(MASTER), body).await
    }

    /// The stable id of the upstream key named `name` (the one serving, not
    /// one draining after a rotation).
    pub async fn key_id(&self, name: &str) -> String {
        let (_, keys) = self.admin(Method::GET, "/admin/upstream-keys", None).await;
        let all: Vec<&Value> = keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["keys"].as_array().unwrap())
            .collect();
        all.iter()
            .find(|k| k["name"] == name && !k["state"].as_str().unwrap().starts_with("draining"))
            .unwrap_or_else(|| panic!("no key {name:?} in {keys}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A small chat completion for `model`, without a client key.
    pub async fn chat(&self, model: &str) -> reqwest::Response {
        self.post("/v1/chat/completions", None, &chat(model)).await
    }

    /// A small chat completion for gpt-4o-mini with client key `bearer`.
    pub async fn chat_as(&self, bearer: &str) -> reqwest::Response {
        self.post("/v1/chat/completions", Some(bearer), &chat("gpt-4o-mini"))
            .await
    }

    /// POSTs `body` to `path`.
    pub async fn post(&self, path: &str, bearer: Option<&str>, body: &Value) -> reqwest::Response {
        let mut rb = self.http.post(self.url(path)).json(body);
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        rb.send().await.unwrap()
    }

    /// Stops the gateway (the upstream keeps running); whether every
    /// request in flight finished.
    pub async fn stop(&mut self) -> bool {
        match self.running.take() {
            Some(r) => r.shutdown(Duration::from_secs(5)).await,
            None => true,
        }
    }
}

/// Waits until `check` holds, trying again every 10 ms, for at most
/// `within`; panics saying `what` when it never does. For what another
/// instance does in its own time (a change reaching it), which no signal of
/// this process can announce.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Builds the layers from a config with a mock transport, as `gateway
/// check` does.
pub fn build_config(
    config: &Config,
    env: &HashMap<String, String>,
) -> Result<gateway::config::Built, gateway::config::ConfigError> {
    gateway::config::build(config, env, Arc::new(transport::MockTransport::new()), None)
}

/// The error code of an OpenAI-shaped error body.
pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}
