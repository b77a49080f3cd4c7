//! Integration tests for the transport: one binary, a module per area.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// The HTTP backends (reqwest and hyper) against a wiremock server: the
/// same rules end to end, timeouts, connection errors, streams, limits,
/// secrets.
#[cfg(any(feature = "reqwest", feature = "hyper"))]
mod backends;
/// Every classification rule, on answers built in memory.
mod classification;
/// Classification never panics, whatever it is given.
mod fuzz;
/// The mock transport the layers above test with.
#[cfg(feature = "mock")]
mod mock;
/// A real TLS upstream: refused without its CA, accepted with it.
#[cfg(any(feature = "reqwest", feature = "hyper"))]
mod tls;
