//! reserve + settle against four limits (global, team, key, model); target:
//! median at most 300 ns. `cargo xtask bench` copies the median into
//! docs/benchmarks.md.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use budget::{Ledger, LedgerConfig, Limit, Money, Period, PriceTable, Scope, Scopes, Tokens};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let huge = Money::from_dollars(1_000_000_000);
    let mut limits = vec![
        Limit::new(Scope::Global, Period::Daily, huge)
            .soft(0.8)
            .fallback("gpt-4o-mini"),
        Limit::new(Scope::Team("search".into()), Period::Weekly, huge),
        Limit::new(Scope::Key("web".into()), Period::Monthly, huge),
        Limit::new(Scope::Model("gpt-4.1".into()), Period::Daily, huge),
    ];
    // Other teams' and keys' limits exist but do not apply.
    for i in 0..1000 {
        limits.push(Limit::new(
            Scope::Team(format!("team-{i}")),
            Period::Daily,
            huge,
        ));
        limits.push(Limit::new(
            Scope::Key(format!("key-{i}")),
            Period::Daily,
            huge,
        ));
    }
    let mut ledger = Ledger::new(LedgerConfig::default(), PriceTable::defaults(), limits).unwrap();
    let scopes = Scopes {
        team: Some("search"),
        key: Some("web"),
    };
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_322_452);

    let mut group = c.benchmark_group("ledger");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("reserve_settle_4_scopes", |b| {
        b.iter(|| {
            now += Duration::from_micros(10);
            let r = ledger
                .reserve(black_box(&scopes), black_box("gpt-4.1"), 1_200, 800, now)
                .unwrap();
            black_box(ledger.settle(r, Tokens::new(1_150, 420), now));
            while let Some(e) = ledger.poll_event() {
                black_box(e);
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
