//! Integration tests for the canary: one binary, a module per area.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// Automated analysis and the ramp schedule.
mod analysis;
/// Bucket formulas pinned by golden vectors, and the seeds' own results.
mod golden;
/// Property tests: monotonic ramps, stickiness, independence of salts.
mod properties;
/// Rollouts: shares, full rollout, rollback, overrides, events, errors.
mod rollouts;
/// Saved states: a restored rollout keeps every user on their arm.
mod saved;
/// Uniformity over a million subjects.
mod uniformity;
