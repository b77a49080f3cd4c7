//! An OpenAI-compatible server over a pool of upstream API keys: any SDK
//! uses the pool by changing its base URL.
//!
//! `gateway serve --config gateway.toml` serves `/v1/chat/completions` (plain
//! and streaming), `/v1/embeddings`, `/v1/models`, `/healthz`, `/readyz`,
//! `/metrics` (Prometheus), `/status` and `/status.json`, built on
//! [`gateway_client::Client`]; a management API for team keys, usage, the
//! upstream pool, the canary and an audit log; a self-refreshing `/dashboard`;
//! and state that survives restarts ([`store`]). With no config it runs
//! against a built-in simulated upstream ([`sim`]), so it works on a fresh
//! machine with no real key.
//!
//! # Key design decision: a thin HTTP shell over typed layers
//!
//! Every decision (which key, which model, whether the budget allows it, how
//! to retry) is made by `gateway-client` and the state machines under it.
//! This crate reads configuration into typed values ([`config`]),
//! authenticates callers ([`auth`]), keeps state behind an async [`Store`]
//! boundary that a network database can serve, and maps HTTP to client calls
//! and back in one layer that only the [`runtime`] knows about. The module
//! graph has no cycles; a test in `tests/tests/workspace.rs` keeps it so.
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
//! running.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Store`]: store::Store

mod activity;
pub mod auth;
pub mod cli;
mod cluster;
pub mod config;
mod demo;
mod http;
mod ids;
mod keys;
mod lifecycle;
mod local_transport;
mod metrics;
mod pins;
pub mod runtime;
pub mod secrets;
mod settings;
pub mod sim;
mod state;
pub mod store;
pub mod telemetry;
pub mod testing;
mod views;

pub use demo::{demo_config, demo_env};
pub use local_transport::ThreadLocalHyper;
pub use runtime::{Running, StartError, StartOptions, start, start_with};
