//! acquire + report on large pools, for each strategy, and with a
//! preferred key (prompt-cache affinity).
//!
//! Targets (issue: keypool-core): median at most 1 µs on 10 000 keys and at
//! most 2 µs on 100 000 keys. `cargo xtask bench` runs this and copies the
//! medians into docs/benchmarks.md.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keypool_core::{AcquireOptions, KeyPool, NewKey, Outcome, PoolConfig, Strategy, Timestamp};

fn pool(n: usize, strategy: Strategy) -> KeyPool {
    let mut pool = KeyPool::new(PoolConfig {
        strategy,
        seed: 1,
        ..PoolConfig::default()
    })
    .unwrap();
    let t0 = Timestamp::from_unix_secs(1_795_322_452);
    for i in 0..n {
        pool.add(
            NewKey::new(format!("key-{i:06}"), format!("sk-proj-{i:032x}"))
                .tokens_per_day(u64::MAX / 4)
                .weight(1 + (i % 4) as u32),
            t0,
        )
        .unwrap();
    }
    while pool.poll_event().is_some() {}
    pool
}

fn acquire_report(c: &mut Criterion) {
    let mut group = c.benchmark_group("acquire_report");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for n in [10_000usize, 100_000] {
        for (name, strategy) in [
            ("least_used", Strategy::LeastUsed),
            ("round_robin", Strategy::RoundRobin),
            ("weighted", Strategy::Weighted),
            ("power_of_two", Strategy::PowerOfTwo),
        ] {
            let mut p = pool(n, strategy);
            let mut now = Timestamp::from_unix_secs(1_795_322_452);
            let outcome = Outcome::success(900, 300, Duration::from_millis(700));
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    now = now.saturating_add(Duration::from_micros(10));
                    let lease = p.acquire(black_box(now)).unwrap();
                    black_box(p.report(lease, outcome, now));
                    while let Some(e) = p.poll_event() {
                        black_box(e);
                    }
                });
            });
        }
    }
    group.finish();
}

/// acquire + report with a preferred key (prompt-cache affinity): the
/// strategy's pick is still made, to bound the preferred key's load.
fn acquire_report_preferring(c: &mut Criterion) {
    let mut group = c.benchmark_group("acquire_report_preferring");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let n = 10_000usize;
    let mut p = pool(n, Strategy::LeastUsed);
    let keys: Vec<_> = p.key_ids().collect();
    let mut now = Timestamp::from_unix_secs(1_795_322_452);
    let outcome = Outcome::success(900, 300, Duration::from_millis(700));
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("least_used", n), |b| {
        b.iter(|| {
            now = now.saturating_add(Duration::from_micros(10));
            // A different conversation's key each time.
            i = (i + 7919) % keys.len();
            let opts = AcquireOptions {
                prefer: keys.get(i).copied(),
                ..AcquireOptions::default()
            };
            let lease = p.acquire_with(black_box(now), &opts).unwrap();
            black_box(p.report(lease, outcome, now));
            while let Some(e) = p.poll_event() {
                black_box(e);
            }
        });
    });
    group.finish();
}

criterion_group!(benches, acquire_report, acquire_report_preferring);
criterion_main!(benches);
