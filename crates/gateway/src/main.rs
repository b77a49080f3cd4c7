//! The `gateway` command: serve, demo, check a config, hash a client key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use gateway::config::Config;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "An OpenAI-compatible gateway over a pool of upstream API keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API. Without --config, against a built-in simulated upstream.
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override the listen address.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Serve on the simulated upstream and drive synthetic traffic through it.
    Demo {
        /// How many requests to send.
        #[arg(long, default_value_t = 400)]
        requests: usize,
        /// How many at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Spread the traffic over this many seconds, so the dashboard can be
        /// watched (0: as fast as possible).
        #[arg(long, default_value_t = 6)]
        seconds: u64,
        /// Keep serving after the traffic (until Ctrl-C), to look around.
        #[arg(long)]
        keep_serving: bool,
    },
    /// Validate a configuration file and print what it means (secrets redacted).
    Check {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the SHA-256 of a client key, for `[auth] keys`.
    HashKey {
        /// The key.
        key: String,
    },
    /// Run only the simulated upstream, with `keys` healthy keys
    /// (`sk-bench-<16 digits>`), and print its address (for load benchmarks).
    #[command(hide = true)]
    SimUpstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// How many healthy keys.
        #[arg(long, default_value_t = 1)]
        keys: usize,
    },
}

fn env() -> HashMap<String, String> {
    std::env::vars().collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = if matches!(cli.command, Command::Demo { .. }) {
        "error"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    // `serve --config` reads its file first: `[server] workers` is how many
    // threads serve, each with a single-threaded runtime of its own (the
    // main thread's runs the background tasks too).
    let loaded = match &cli.command {
        Command::Serve {
            config: Some(path), ..
        } => match Config::load(path) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("gateway: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let serving_threads = loaded
        .as_ref()
        .and_then(|c| c.server.workers)
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let mut builder = match cli.command {
        Command::Serve { .. } => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { listen, .. } => serve(loaded, listen, serving_threads).await,
            Command::Demo {
                requests,
                concurrency,
                seconds,
                keep_serving,
            } => {
                let pace = Duration::from_secs(seconds);
                demo(requests, concurrency.max(1), pace, keep_serving).await
            }
            Command::Check { config } => check(&config),
            Command::HashKey { key } => {
                println!("{}", gateway::auth::hash_key(&key));
                Ok(())
            }
            Command::SimUpstream { listen, keys } => sim_upstream(&listen, keys).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn serve(
    loaded: Option<Config>,
    listen: Option<String>,
    threads: std::num::NonZeroUsize,
) -> Result<()> {
    let (mut config, env, _sim) = match loaded {
        Some(c) => (c, env(), None),
        None => {
            let sim = gateway::sim::start(&gateway::sim::DEMO_KEYS).await?;
            tracing::info!(
                "no --config: serving against the built-in simulated upstream at {}",
                sim.base_url()
            );
            (
                gateway::demo_config(&sim.base_url(), "127.0.0.1:9000"),
                gateway::demo_env(),
                Some(sim),
            )
        }
    };
    if let Some(l) = listen {
        config.server.listen = l;
    }
    let options = gateway::StartOptions {
        serving_threads: Some(threads),
        ..gateway::StartOptions::default()
    };
    let running = gateway::start_with(&config, &env, options).await?;
    tracing::info!(
        "serving on http://{}/v1 with {threads} thread(s)",
        running.addr
    );
    shutdown_signal().await;
    tracing::info!(
        "shutting down: waiting up to {:?} for requests in flight",
        config.shutdown_grace()
    );
    if !running.shutdown(config.shutdown_grace()).await {
        tracing::warn!("requests still in flight after the grace period were cut off");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

async fn sim_upstream(listen: &str, keys: usize) -> Result<()> {
    let secrets: Vec<String> = (0..keys).map(|i| format!("sk-bench-{i:016}")).collect();
    let spec: Vec<(&str, &str, gateway::sim::Behavior)> = secrets
        .iter()
        .map(|s| ("bench", s.as_str(), gateway::sim::Behavior::Healthy))
        .collect();
    let sim = gateway::sim::start_on(listen, &spec).await?;
    println!("listening on {}", sim.addr);
    use std::io::Write as _;
    std::io::stdout().flush()?;
    shutdown_signal().await;
    Ok(())
}

fn check(path: &std::path::Path) -> Result<()> {
    let config = Config::load(path)?;
    let (_client, _auth, understood) = gateway::setup::build(
        &config,
        &env(),
        Arc::new(transport::MockTransport::new()),
        None,
    )?;
    // The real transport too: a CA bundle that cannot be read is an error here.
    let (_, which) = gateway::setup::upstream_transport(&config, &env())?;
    println!("{}: valid", path.display());
    println!("  upstream transport: {which}");
    for line in &understood.lines {
        println!("  {line}");
    }
    for w in &understood.warnings {
        println!("  warning: {w}");
    }
    Ok(())
}

async fn demo(
    requests: usize,
    concurrency: usize,
    pace: Duration,
    keep_serving: bool,
) -> Result<()> {
    let mut keys = gateway::sim::DEMO_KEYS.to_vec();
    let rotated = "sk-sim-healthy-rotated-000000005";
    keys.push((
        "demo-healthy (rotated)",
        rotated,
        gateway::sim::Behavior::Healthy,
    ));
    let sim = gateway::sim::start(&keys).await?;
    let config = gateway::demo_config(&sim.base_url(), "127.0.0.1:0");
    let running = gateway::start(&config, &gateway::demo_env()).await?;
    let base = format!("http://{}", running.addr);
    println!(
        "gateway on {base}/v1, simulated upstream on {}",
        sim.base_url()
    );
    println!(
        "demo keys: one healthy, one rate-limited (429 + Retry-After), one revoked (401), one flaky (503)"
    );
    println!("live dashboard: {base}/dashboard (open it in a browser)\n");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut done = 0;
    let mut rotated_yet = false;
    // In a terminal, the text dashboard is redrawn as the traffic runs.
    let live = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut drawn = Instant::now();
    let batches = requests.div_ceil(concurrency).max(1);
    let gap = pace / u32::try_from(batches).unwrap_or(u32::MAX);
    for batch in (0..requests).collect::<Vec<_>>().chunks(concurrency) {
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let calls = batch.iter().map(|i| {
            let http = http.clone();
            let url = format!("{base}/v1/chat/completions");
            let body = serde_json::json!({"model": "gpt-4.1", "user": format!("user-{}", i % 97), "messages": [{"role": "user", "content": "ทดสอบการเชื่อมต่อ API — xin chào"}]});
            async move { http.post(url).json(&body).send().await.map(|r| r.status().as_u16()) }
        });
        for s in futures_util::future::join_all(calls).await {
            *statuses.entry(s.unwrap_or(0)).or_default() += 1;
            done += 1;
        }
        if !rotated_yet && done >= requests / 2 {
            rotated_yet = true;
            // Rotate the healthy key's secret mid-run, with a short grace period.
            let status = http.get(format!("{base}/status.json")).send().await?;
            drop(status);
            println!("\n🔁 rotating demo-healthy to a new secret (the old one drains for 5 s)\n");
            rotate(&running, rotated)?;
        }
        let width = 30;
        let filled = done * width / requests.max(1);
        if live && drawn.elapsed() >= Duration::from_millis(400) {
            drawn = Instant::now();
            let status = running.client().status_report();
            // Home the cursor and clear the screen, then redraw.
            print!("\x1b[H\x1b[2J{base}/dashboard\n\n{status}\n");
        }
        print!(
            "\r[{}{}] {done}/{requests} requests  {statuses:?}",
            "#".repeat(filled),
            " ".repeat(width - filled)
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
    println!(
        "\n\n{done} requests in {:.1} s\n",
        started.elapsed().as_secs_f64()
    );
    let status = http
        .get(format!("{base}/status"))
        .send()
        .await?
        .text()
        .await?;
    println!("{status}");
    if keep_serving {
        println!("still serving on {base}/v1; dashboard at {base}/dashboard; Ctrl-C to stop");
        shutdown_signal().await;
    } else {
        println!(
            "(add --keep-serving to keep the gateway and its dashboard at {base}/dashboard up)"
        );
    }
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

fn rotate(running: &gateway::server::Running, new_secret: &str) -> Result<()> {
    running
        .client()
        .with_pool("simulated", |pool, now| {
            let old = pool
                .find("demo-healthy")
                .ok_or("demo-healthy is not in the pool")?;
            pool.rotate(old, new_secret, Duration::from_secs(5), now)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .ok_or("no such provider")?
        .map_err(Into::into)
}
