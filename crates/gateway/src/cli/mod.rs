//! The `gateway` command: serve, demo, check a config, hash a client key.

mod check;
mod demo;
mod serve;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

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
        /// Give each key a prompt cache (answers report cached tokens).
        #[arg(long)]
        prompt_cache: bool,
    },
    /// Append `records` synthetic usage records to the SQLite store at `db`
    /// (for the usage-report benchmark).
    #[command(hide = true)]
    FillUsage {
        /// The database file.
        #[arg(long)]
        db: PathBuf,
        /// How many records.
        #[arg(long)]
        records: u64,
    },
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The log on standard error and, when `[telemetry]` says where, the
/// traces' exporter (returned, to flush at the end).
fn init_logging(
    command: &Command,
    config: Option<&Config>,
) -> std::result::Result<Option<crate::telemetry::Exporter>, crate::config::ConfigError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let default_filter = if matches!(command, Command::Demo { .. }) {
        "error"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter))
        // Spans for traces are the exporter's, never the log's.
        .add_directive(
            format!("{}=off", crate::telemetry::TARGET)
                .parse()
                .map_err(|e| crate::config::ConfigError::new("RUST_LOG", format!("{e}")))?,
        );
    let log = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_filter(filter);
    let traces = match config {
        Some(c) => crate::telemetry::layer(&c.telemetry)?,
        None => None,
    };
    let (traces, exporter) = traces.map_or((None, None), |(l, e)| (Some(l), Some(e)));
    tracing_subscriber::registry().with(log).with(traces).init();
    Ok(exporter)
}

/// Runs the command line; what `main` returns.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve --config` reads its file first: `[server] workers` is how many
    // threads serve, each with a single-threaded runtime of its own (the
    // main thread's runs the background services too); `[telemetry]` says
    // where traces go.
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
    let exporter = match init_logging(&cli.command, loaded.as_ref()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    let outcome = runtime.block_on(run(cli.command, loaded));
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, loaded: Option<Config>) -> Result<()> {
    match command {
        Command::Serve { listen, .. } => {
            let threads = loaded
                .as_ref()
                .and_then(|c| c.server.workers)
                .or_else(|| std::thread::available_parallelism().ok())
                .unwrap_or(NonZeroUsize::MIN);
            serve::serve(loaded, listen, threads).await
        }
        Command::Demo {
            requests,
            concurrency,
            seconds,
            keep_serving,
        } => {
            let pace = std::time::Duration::from_secs(seconds);
            demo::demo(requests, concurrency.max(1), pace, keep_serving).await
        }
        Command::Check { config } => check::check(&config),
        Command::HashKey { key } => {
            println!("{}", crate::auth::hash_key(&key));
            Ok(())
        }
        Command::SimUpstream {
            listen,
            keys,
            prompt_cache,
        } => serve::sim_upstream(&listen, keys, prompt_cache).await,
        Command::FillUsage { db, records } => check::fill_usage(&db, records).await,
    }
}

/// Waits for Ctrl-C or SIGTERM.
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
