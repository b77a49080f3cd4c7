//! An OpenAI-compatible server over a pool of upstream API keys: any SDK
//! uses the pool by changing its base URL.
//!
//! `gateway serve --config gateway.toml` serves `/v1/chat/completions` (plain
//! and streaming), `/v1/embeddings`, `/v1/models`, `/healthz`, `/readyz`,
//! `/metrics` (Prometheus), `/status` and `/status.json`, built on
//! [`gateway_client::Client`]; a management API for team keys, usage, the
//! upstream pool, the canary and an audit log; a self-refreshing `/dashboard`;
//! and state that survives restarts in SQLite ([`store`]). With no config it
//! runs against a built-in simulated upstream, so it works on a fresh machine
//! with no real key.
//!
//! # Key design decision: a thin HTTP shell
//!
//! Every decision (which key, which model, whether the budget allows it, how
//! to retry) is made by `gateway-client` and the state machines under it. This
//! crate parses configuration, authenticates clients, maps errors to OpenAI's
//! shape and status codes, and exports metrics.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The built-in demo setup: a simulated upstream and its demo keys.
//! let sim = gateway::sim::start(&gateway::sim::DEMO_KEYS).await?;
//! let config = gateway::demo_config(&sim.base_url(), "127.0.0.1:9000");
//! let running = gateway::start(&config, &gateway::demo_env()).await?;
//! println!("serving on http://{}/v1", running.addr);
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod config;
mod dashboard;
mod local_transport;
mod manage;
mod persist;
pub mod server;
pub mod setup;
pub mod sim;
pub mod store;

pub use local_transport::ThreadLocalHyper;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use config::{Config, ConfigError};

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport could not be built.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// What [`start_with`] can be given besides the configuration.
#[derive(Default)]
pub struct StartOptions {
    /// The clock (default: the system's). Tests inject a
    /// [`ManualClock`](gateway_client::ManualClock) to step through grace periods.
    pub clock: Option<Arc<dyn gateway_client::Clock>>,
    /// The transport (default: [`setup::upstream_transport`]).
    pub transport: Option<Arc<dyn transport::Transport>>,
    /// Threads serving requests: the calling runtime's and, past 1, threads
    /// with runtimes of their own (see [`server::spawn`]). Default 1, so
    /// that everything runs on the caller's runtime; `gateway serve` uses
    /// `[server] workers`.
    pub serving_threads: Option<std::num::NonZeroUsize>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("clock", &self.clock.is_some())
            .field("transport", &self.transport.is_some())
            .field("serving_threads", &self.serving_threads)
            .finish()
    }
}

/// Builds everything from `config` and starts serving in the background.
pub async fn start(
    config: &Config,
    env: &HashMap<String, String>,
) -> Result<server::Running, StartError> {
    start_with(config, env, StartOptions::default()).await
}

/// [`start`], with a clock or a transport of the caller's.
pub async fn start_with(
    config: &Config,
    env: &HashMap<String, String>,
    options: StartOptions,
) -> Result<server::Running, StartError> {
    let transport: Arc<dyn transport::Transport> = match options.transport {
        Some(t) => t,
        None => {
            let (t, which) = setup::upstream_transport(config, env)?;
            tracing::info!("upstream transport: {which}");
            t
        }
    };
    let manual_clock = options.clock.is_some();
    let (client, auth, understood) = setup::build(config, env, transport, options.clock)?;
    for w in &understood.warnings {
        tracing::warn!("{w}");
    }
    let backend: Box<dyn store::Store> = match &config.storage.path {
        Some(path) => Box::new(store::SqliteStore::open(path)?),
        None => Box::new(store::MemoryStore::default()),
    };
    let (store, loaded) = store::StoreHandle::start(backend)?;
    if config.storage.path.is_some() {
        tracing::info!("{}", store.describe());
    } else {
        tracing::warn!("{}", store.describe());
    }
    let listener = tokio::net::TcpListener::bind(config.listen()?).await?;
    let state = Arc::new(server::AppState::new(
        client.clone(),
        auth,
        understood.models,
        store,
    ));
    if let Some(days) = config.storage.usage_retention_days {
        persist::prune(&state, days).await;
    }
    persist::restore(&state, loaded).await?;
    let saver = persist::spawn_saver(state.clone());
    let threads = options
        .serving_threads
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let mut running = server::spawn(listener, state, config.server.body_limit_bytes, threads)?;
    running.keep(saver);
    if !manual_clock {
        // With an injected clock the caller drives time (`Client::tick`).
        running.keep(client.spawn_monitor(Duration::from_secs(60)));
        if let Some(days) = config.storage.usage_retention_days {
            running.keep(persist::spawn_pruner(running.state(), days));
        }
    }
    Ok(running)
}

/// The secrets of the demo keys, as the environment the demo config reads.
pub fn demo_env() -> HashMap<String, String> {
    sim::DEMO_KEYS
        .iter()
        .enumerate()
        .map(|(i, (_, secret, _))| (format!("DEMO_KEY_{}", i + 1), (*secret).to_owned()))
        .collect()
}

/// The built-in configuration: the simulated upstream's demo keys (one
/// healthy, one rate-limited, one revoked, one flaky), a 10% canary of
/// claude-sonnet-4.5 against gpt-4.1, and a small daily budget that degrades
/// to gpt-4o-mini past half.
pub fn demo_config(upstream_base_url: &str, listen: &str) -> Config {
    let keys = sim::DEMO_KEYS
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| config::KeyConfig {
            tokens_per_day: Some(5_000_000),
            ..config::KeyConfig::from_env(*name, &format!("DEMO_KEY_{}", i + 1))
        })
        .collect();
    Config {
        server: config::ServerConfig {
            listen: listen.to_owned(),
            ..config::ServerConfig::default()
        },
        providers: vec![config::ProviderConfig {
            name: "simulated".into(),
            base_url: upstream_base_url.to_owned(),
            priority: 0,
            strategy: keypool_core::Strategy::LeastUsed,
            key_prefixes: None,
            keys,
        }],
        canary: vec![config::CanaryConfig {
            model: "gpt-4.1".into(),
            candidate: "claude-sonnet-4.5".into(),
            percent: 10.0,
            salt: Some("demo".into()),
        }],
        budget: Some(config::BudgetConfig {
            utc_offset: Some("+07:00".into()),
            limits: vec![config::LimitConfig {
                scope: "global".into(),
                name: None,
                daily_usd: Some(0.05),
                weekly_usd: None,
                monthly_usd: None,
                soft_fraction: Some(0.5),
                fallback_model: Some("gpt-4o-mini".into()),
            }],
            prices_file: None,
            unknown_model: None,
            unknown_model_usd_per_mtok: None,
        }),
        auth: None,
        retry: config::RetryConfig::default(),
        storage: config::StorageConfig::default(),
        transport: config::TransportConfig::default(),
    }
}
