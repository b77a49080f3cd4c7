//! Integration tests for keypool-core: one binary, a module per area.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// The simulated-time harness: a pool, a clock, and the events seen.
mod harness;
/// A test per rule: keys, states and what moves keys between them.
mod rules;
/// Selection strategies, tiers, limits and the "no key" error.
mod selection;
/// Random operation sequences checked against the pool's invariants.
mod state_machine;
/// Timers, events, snapshots and the status report.
mod timers;
