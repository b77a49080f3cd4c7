//! The pool's bookkeeping per key, measured with a counting allocator: at most
//! 256 bytes a key beyond the secret itself. Allocation counts are
//! deterministic, so this is an exact test, not a timed one.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::mem::size_of;

use keypool_core::{KeyPool, NewKey, Outcome, PoolConfig, Strategy, Timestamp};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const BUDGET: f64 = 256.0;

/// Bytes a secret of `len` bytes occupies on the heap as `Arc<str>`: two
/// reference counts and the bytes (the allocator counts requested sizes).
fn secret_heap_bytes(len: usize) -> usize {
    16 + len
}

/// Builds a pool of `n` keys (and serves a request on each, so every
/// structure is populated) and returns the net heap bytes per key, minus
/// the secrets, plus the pool's own inline size spread over the keys.
fn bytes_per_key(n: usize, strategy: Strategy) -> f64 {
    let t0 = Timestamp::from_unix_secs(1_795_322_452);
    let region = Region::new(GLOBAL);
    let mut pool = KeyPool::new(PoolConfig {
        strategy,
        ..PoolConfig::default()
    })
    .unwrap();
    let mut secret_bytes = 0;
    for i in 0..n {
        let secret = format!("sk-proj-{i:032x}");
        secret_bytes += secret_heap_bytes(secret.len());
        pool.add(
            NewKey::new(format!("key-{i:06}"), secret)
                .tokens_per_day(5_000_000)
                .requests_per_minute(500),
            t0,
        )
        .unwrap();
        // A driver drains events after each call.
        while pool.poll_event().is_some() {}
    }
    for _ in 0..n {
        let lease = pool.acquire(t0).unwrap();
        pool.report(
            lease,
            Outcome::success(100, 50, std::time::Duration::from_millis(300)),
            t0,
        );
        while pool.poll_event().is_some() {}
    }
    let stats = region.change();
    // stats_alloc folds reallocations into these two totals already.
    let net = stats.bytes_allocated as isize - stats.bytes_deallocated as isize;
    let bookkeeping = net as f64 - secret_bytes as f64 + size_of::<KeyPool>() as f64;
    std::hint::black_box(&pool);
    bookkeeping / n as f64
}

#[test]
fn bookkeeping_is_at_most_256_bytes_per_key() {
    for n in [10_000, 100_000] {
        for strategy in [Strategy::LeastUsed, Strategy::PowerOfTwo] {
            let per_key = bytes_per_key(n, strategy);
            // Printed for `cargo xtask bench`, which copies it into docs/benchmarks.md.
            println!("memory: {n} keys {strategy:?}: {per_key:.1} bytes per key");
            assert!(
                per_key <= BUDGET,
                "{n} keys, {strategy:?}: {per_key:.1} bytes per key"
            );
        }
    }
}
