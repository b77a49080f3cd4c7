//! Integration tests for the budget: one binary, a module per area.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// Limits shared by several processes: the allowance protocol, simulated.
mod allowance;
/// Reservations clamped to what the budget can pay.
mod clamp;
/// Threshold, soft-limit, anomaly and other events; reports.
mod events;
/// Reserve, settle, cancel, expiry, degradation and refusals.
mod ledger;
/// Limits set and removed while the ledger runs.
mod live_limits;
/// Periods on calendar boundaries at a UTC offset.
mod periods;
/// Price tables from TOML and `LiteLLM`'s JSON.
#[cfg(any(feature = "toml", feature = "litellm"))]
mod prices;
/// Property tests: exact sums, no overspend, resets at boundaries.
mod properties;

use std::time::{Duration, SystemTime};

/// 2026-11-22T04:40:52Z (11:40 in Bangkok).
pub const T0_SECS: u64 = 1_795_322_452;

pub fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn t0() -> SystemTime {
    at(T0_SECS)
}

/// The blended prices these tests' figures are worked out with.
pub fn prices() -> budget::PriceTable {
    budget::testing::blended_prices()
}
