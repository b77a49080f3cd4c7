//! `gateway serve`, and the simulated upstream alone (`sim-upstream`).

use std::num::NonZeroUsize;

use super::{Result, shutdown_signal};
use crate::config::Config;
use crate::runtime::StartOptions;

pub(super) async fn serve(
    loaded: Option<Config>,
    listen: Option<String>,
    threads: NonZeroUsize,
) -> Result<()> {
    let (mut config, env, _sim) = match loaded {
        Some(c) => (c, std::env::vars().collect(), None),
        None => {
            let sim = crate::sim::start(&crate::sim::DEMO_KEYS).await?;
            tracing::info!(
                "no --config: serving against the built-in simulated upstream at {}",
                sim.base_url()
            );
            let config = crate::demo_config(&sim.base_url(), "127.0.0.1:9000");
            (config, crate::demo_env(), Some(sim))
        }
    };
    if let Some(l) = listen {
        config.server.listen = l;
    }
    let options = StartOptions {
        serving_threads: Some(threads),
        ..StartOptions::default()
    };
    let running = crate::start_with(&config, &env, options).await?;
    tracing::info!(
        "serving on http://{}/v1 with {threads} thread(s)",
        running.addr
    );
    shutdown_signal().await;
    let grace = config.server.shutdown_grace();
    tracing::info!("shutting down: waiting up to {grace:?} for requests in flight");
    if !running.shutdown(grace).await {
        tracing::warn!("requests still in flight after the grace period were cut off");
    }
    Ok(())
}

pub(super) async fn sim_upstream(listen: &str, keys: usize, prompt_cache: bool) -> Result<()> {
    let secrets: Vec<String> = (0..keys).map(|i| format!("sk-bench-{i:016}")).collect();
    let spec: Vec<(&str, &str, crate::sim::Behavior)> = secrets
        .iter()
        .map(|s| ("bench", s.as_str(), crate::sim::Behavior::Healthy))
        .collect();
    let sim = crate::sim::start_on(listen, &spec).await?;
    sim.set_prompt_cache(prompt_cache);
    println!("listening on {}", sim.addr);
    use std::io::Write as _;
    std::io::stdout().flush()?;
    shutdown_signal().await;
    Ok(())
}
