//! The running gateway: built from its configuration, its state restored,
//! its background services started, and its HTTP layer served on one or
//! more threads until shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use gateway_client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, ShareDriver};
use crate::config::{Backend, Config, ConfigError};
use crate::state::AppState;
use crate::store::{MemoryStore, PostgresStore, SqliteStore, Store, StoreError};
use crate::{http, lifecycle};

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
    Store(#[from] StoreError),
}

/// What [`start_with`] can be given besides the configuration.
#[derive(Default)]
pub struct StartOptions {
    /// The clock (default: the system's). Tests inject a
    /// [`ManualClock`](gateway_client::ManualClock) to step through grace
    /// periods; the caller then drives time (`Client::tick`).
    pub clock: Option<Arc<dyn gateway_client::Clock>>,
    /// The transport (default: [`upstream_transport`](crate::config::upstream_transport)).
    pub transport: Option<Arc<dyn transport::Transport>>,
    /// Threads serving requests: the calling runtime's and, past 1, threads
    /// with runtimes of their own (see [`Running`]). Default 1, so that
    /// everything runs on the caller's runtime; `gateway serve` uses
    /// `[server] workers`.
    pub serving_threads: Option<NonZeroUsize>,
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
pub async fn start(config: &Config, env: &HashMap<String, String>) -> Result<Running, StartError> {
    start_with(config, env, StartOptions::default()).await
}

/// The store `config` names, and the Postgres store again when it is one
/// (the cluster's handle).
struct Opened {
    store: Arc<dyn Store>,
    shared: Option<Arc<PostgresStore>>,
}

/// Opens the store `config` names: SQLite at `[storage] path`, Postgres at
/// `[storage] url` (its outbox in `[cluster] data_dir`, created if
/// missing), or memory.
async fn open_store(config: &Config, env: &HashMap<String, String>) -> Result<Opened, StartError> {
    let cluster = config.cluster.clone().unwrap_or_default();
    let opened = match config.storage.backend(&cluster, env)? {
        Backend::Sqlite(path) => Opened {
            store: Arc::new(SqliteStore::open(&path)?),
            shared: None,
        },
        Backend::Memory => Opened {
            store: Arc::new(MemoryStore::new()),
            shared: None,
        },
        Backend::Postgres(options) => {
            if let Some(dir) = options
                .outbox
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                    what: dir.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
            let shared = Arc::new(PostgresStore::open(options).await?);
            Opened {
                store: shared.clone(),
                shared: Some(shared),
            }
        }
    };
    if opened.store.is_durable() {
        tracing::info!("{}", opened.store.describe());
    } else {
        tracing::warn!("{}", opened.store.describe());
    }
    Ok(opened)
}

/// [`start`], with a clock or a transport of the caller's.
pub async fn start_with(
    config: &Config,
    env: &HashMap<String, String>,
    options: StartOptions,
) -> Result<Running, StartError> {
    let transport = match options.transport {
        Some(t) => t,
        None => {
            let (t, which) = crate::config::upstream_transport(&config.transport, env)?;
            tracing::info!("upstream transport: {which}");
            t
        }
    };
    let manual_clock = options.clock.is_some();
    let built = crate::config::build(config, env, transport, options.clock)?;
    for w in &built.understood.warnings {
        tracing::warn!("{w}");
    }
    let opened = open_store(config, env).await?;
    let loaded = opened.store.load().await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen()?).await?;
    let state_options = crate::state::Options {
        public_status: config.server.status_is_public()?,
        body_limit: config.server.body_limit_bytes,
        sealer: built.sealer,
        configured_keys: built.understood.configured_keys,
    };
    let state = Arc::new(AppState::new(
        built.client,
        built.auth,
        built.understood.models,
        opened.store,
        state_options,
    ));
    lifecycle::prune(&state, config.storage.usage_retention_days).await;
    lifecycle::restore(&state, loaded).await?;
    let cluster = match opened.shared {
        Some(shared) => Some(join_cluster(config, shared, &state).await?),
        None => None,
    };
    let threads = options.serving_threads.unwrap_or(NonZeroUsize::MIN);
    let app = http::router(state.clone(), config.server.body_limit_bytes);
    let mut running = Running::spawn(listener, state.clone(), app, threads)?;
    let (stop_saver, saver_stopped) = watch::channel(false);
    let saver = lifecycle::spawn_saver(state.clone(), saver_stopped);
    running.saver = Some((saver, stop_saver));
    if let Some(cluster) = &cluster {
        for task in crate::cluster::spawn(cluster, &state) {
            running.keep(task);
        }
        if let Some(shares) = cluster.shares() {
            let (stop, stopped) = watch::channel(false);
            running.shares = Some((crate::cluster::spawn_shares(shares, stopped), stop));
        }
    }
    if !manual_clock {
        spawn_services(&mut running, &state, config, cluster.as_deref());
    }
    Ok(running)
}

/// This instance in the cluster of `shared`: with a budget, its limits
/// shared and its shares read back (what it held and spent before a
/// restart), before it serves.
async fn join_cluster(
    config: &Config,
    shared: Arc<PostgresStore>,
    state: &Arc<AppState>,
) -> Result<Arc<Cluster>, StartError> {
    let c = config.cluster.clone().unwrap_or_default();
    let shares = ShareDriver::new(shared.clone(), &state.client);
    if let Some(shares) = &shares {
        shares.reconcile().await?;
        state.client.set_share_backer(shares.clone());
    }
    Ok(Arc::new(Cluster::new(
        shared,
        c.instance(),
        c.poll_every(),
        shares,
    )))
}

/// The services a gateway on the system clock runs: the client's monitor
/// (timers, and canary analysis) and the usage pruner; where instances
/// share a store, analysis and pruning only on the leader.
fn spawn_services(
    running: &mut Running,
    state: &Arc<AppState>,
    config: &Config,
    cluster: Option<&Cluster>,
) {
    let leads = cluster.map(Cluster::leader);
    running.keep(
        state
            .client
            .spawn_monitor_gated(Duration::from_secs(60), leads.clone()),
    );
    let days = config.storage.usage_retention_days;
    running.keep(lifecycle::spawn_pruner(state.clone(), days, leads));
}

/// A gateway running in this process.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    /// Ends when every serving thread has drained.
    task: JoinHandle<()>,
    /// Services that live as long as the server (the monitor, the pruner).
    background: Vec<JoinHandle<()>>,
    /// The state saver, told to stop once the requests have drained; it
    /// ends when it has saved the changes they made.
    saver: Option<(JoinHandle<()>, watch::Sender<bool>)>,
    /// The budget's shares in a cluster, told to stop after the saver; it
    /// ends when it has handed back what they hold free.
    shares: Option<(JoinHandle<()>, watch::Sender<bool>)>,
}

impl Running {
    /// The client behind the server (to operate its pools, rollouts, ledger).
    pub fn client(&self) -> &Client {
        &self.state.client
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`,
    /// lets the state saver save the changes they made, stops the other
    /// background services, closes the store (a shared store ships the
    /// records waiting in its outbox), and returns whether every request
    /// finished.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.stop.send_replace(true);
        let drained = tokio::time::timeout(grace, self.task).await.is_ok();
        for (name, service) in [("state saver", self.saver), ("budget shares", self.shares)] {
            if let Some((task, stop)) = service {
                stop.send_replace(true);
                if tokio::time::timeout(grace, task).await.is_err() {
                    tracing::warn!("the {name} did not finish within the grace period");
                }
            }
        }
        for t in &self.background {
            t.abort();
        }
        for t in self.background {
            let _ = t.await;
        }
        if tokio::time::timeout(grace, self.state.store.close())
            .await
            .is_err()
        {
            tracing::warn!("the store did not close within the grace period");
        }
        drained
    }

    /// Ties `task` to the server: it is stopped by [`shutdown`](Self::shutdown).
    pub fn keep(&mut self, task: JoinHandle<()>) {
        self.background.push(task);
    }

    /// Serves `app` on `listener` in the background, on the calling runtime
    /// and on `threads - 1` more threads.
    ///
    /// Each extra thread runs a single-threaded runtime of its own that
    /// accepts from the same socket and serves its connections start to
    /// finish, upstream calls included (with a per-thread transport such as
    /// [`ThreadLocalHyper`](crate::ThreadLocalHyper)): no request hops
    /// between threads, so none pays for waking another thread. Measured on
    /// 2 cores, a single-threaded runtime spends about a fifth less CPU per
    /// proxied request than tokio's work-stealing one.
    fn spawn(
        listener: tokio::net::TcpListener,
        state: Arc<AppState>,
        app: Router,
        threads: NonZeroUsize,
    ) -> std::io::Result<Running> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        // One socket, accepted from by every thread (tokio's bind set its options).
        let shared = listener.into_std()?;
        let mut done = Vec::new();
        for i in 1..threads.get() {
            done.push(serve_on_thread(
                i,
                shared.try_clone()?,
                app.clone(),
                stopped.clone(),
            )?);
        }
        let listener = tokio::net::TcpListener::from_std(shared)?;
        let task = tokio::spawn(async move {
            if let Err(e) = serve_until(listener, app, stopped).await {
                tracing::error!("serving stopped: {e}");
            }
            for d in done {
                let _ = d.await;
            }
        });
        Ok(Running {
            addr,
            state,
            stop,
            task,
            background: Vec::new(),
            saver: None,
            shares: None,
        })
    }
}

/// Serves on a new thread with its own single-threaded runtime; the
/// receiver resolves when it has drained.
fn serve_on_thread(
    i: usize,
    listener: std::net::TcpListener,
    app: Router,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (finished, drained) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("gateway-serve-{i}"))
        .spawn(move || {
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve_until(listener, app, stopped).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!("serving thread {i} stopped: {e}");
                }
            });
            let _ = finished.send(());
        })?;
    Ok(drained)
}

/// Serves `app` on `listener` until `stopped` turns true, then lets the
/// requests in flight finish. Connections get `TCP_NODELAY`, so each chunk
/// of a streamed answer leaves at once instead of waiting for the client to
/// acknowledge the previous one.
async fn serve_until(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
}
