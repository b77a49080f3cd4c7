//! The gateway's integration tests: one binary, a module per area, all on
//! one harness.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// Configure, start, call, stop, restart: in process or as a real process.
mod harness;

/// Prompt-cache affinity: conversations kept on their keys.
mod affinity;
/// The dashboard in a real headless Chromium.
mod browser;
/// The command line as README shows it.
mod cli;
/// Several instances on one Postgres database.
mod cluster;
/// The configuration file.
mod config;
/// A real process killed with SIGKILL under load.
mod crash;
/// The management API and state that survives restarts.
mod manage;
/// What operators configure reaches serving.
mod operators;
/// Three real processes on one Postgres.
mod processes;
/// Model routing: providers' models and aliases, keys' models, fallbacks.
mod routing;
/// The official SDKs as users run them.
mod sdks;
/// Serving: answers, streams, errors, failover, shutdown.
mod serving;
/// Everything else under /v1/ passed through; ids kept on their keys.
mod stateful;
/// Legacy completions and the Responses API.
mod surfaces;
/// Traces exported over OTLP.
mod traces;
