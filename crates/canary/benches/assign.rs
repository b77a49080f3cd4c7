//! `Rollout::assign` (target: median at most 250 ns). `cargo xtask bench` runs
//! this and copies the medians into docs/benchmarks.md.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Duration;

use canary::{Attribute, Context, Matcher, Rollout, Rule, Scheme, SeedBuckets, Share, Target};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let subjects: Vec<String> = (0..1024).map(|i| format!("user-{i:08}")).collect();
    let ten = Share::percent(10).unwrap();
    let salted = Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", ten)
        .salt("launch-1")
        .build()
        .unwrap();
    let seed = Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", ten)
        .scheme(Scheme::Seed(SeedBuckets::Thousand))
        .build()
        .unwrap();
    let mut with_overrides = Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", ten)
        .salt("launch-1")
        .rule(Rule {
            attribute: Attribute::KeyName,
            matcher: Matcher::Contains("test".into()),
            target: Target::Candidate("claude-sonnet-4.5".into()),
        });
    for i in 0..1000 {
        with_overrides = with_overrides
            .allow(format!("vip-{i}"), "claude-sonnet-4.5")
            .deny(format!("blocked-{i}"));
    }
    let with_overrides = with_overrides.build().unwrap();

    let mut group = c.benchmark_group("assign");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, rollout, key_name) in [
        ("salted", &salted, None),
        ("seed_compat", &seed, None),
        ("salted_with_overrides", &with_overrides, Some("prod-app")),
    ] {
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                let mut ctx = Context::new(&subjects[i]);
                ctx.key_name = key_name;
                black_box(rollout.assign(black_box(&ctx)).unwrap().arm)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
