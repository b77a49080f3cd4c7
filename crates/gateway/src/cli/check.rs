//! `gateway check`, and the benchmark's store filler (`fill-usage`).

use std::path::Path;
use std::sync::Arc;

use super::Result;
use crate::config::Config;
use crate::store::{SqliteStore, Store, UsageRecord};

/// Validates a config file and prints what it means, secrets redacted.
pub(super) fn check(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    let env = std::env::vars().collect();
    let built = crate::config::build(
        &config,
        &env,
        Arc::new(transport::MockTransport::new()),
        None,
    )?;
    // The real transport too: a CA bundle that cannot be read is an error here.
    let (_, which) = crate::config::upstream_transport(&config.transport, &env)?;
    println!("{}: valid", path.display());
    println!("  upstream transport: {which}");
    for line in &built.understood.lines {
        println!("  {line}");
    }
    for w in &built.understood.warnings {
        println!("  warning: {w}");
    }
    Ok(())
}

/// Appends `records` usage records spread over the last 30 days, over 50
/// client keys, 5 teams and 4 models, a thousand per commit.
pub(super) async fn fill_usage(db: &Path, records: u64) -> Result<()> {
    const MODELS: [&str; 4] = ["gpt-4.1", "gpt-4o-mini", "gpt-4o", "claude-sonnet-4.5"];
    let store = SqliteStore::open(db)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let now = i64::try_from(now)?;
    let span: i64 = 30 * 86_400_000;
    let record = |i: u64| {
        let n = i64::try_from(i).unwrap_or(i64::MAX);
        UsageRecord {
            at: now - span + n * span / i64::try_from(records.max(1)).unwrap_or(1),
            key_id: Some(format!("key_{:016x}", i % 50)),
            key_name: Some(format!("client-{}", i % 50)),
            team: Some(format!("team-{}", i % 5)),
            provider: "relay".into(),
            upstream_key: format!("k{}", i % 20),
            model: MODELS
                .iter()
                .cycle()
                .nth((i % 4) as usize)
                .copied()
                .unwrap_or("gpt-4.1")
                .into(),
            prompt_tokens: 100 + i % 900,
            completion_tokens: 20 + i % 300,
            cost_micros: 50 + i % 5_000,
            cached_tokens: i % 90,
            cache_write_tokens: 0,
            reasoning_tokens: i % 7,
        }
    };
    let mut i = 0;
    while i < records {
        let end = (i + 1_000).min(records);
        let batch = (i..end).map(|i| store.append_usage(record(i)));
        for r in futures_util::future::join_all(batch).await {
            r?;
        }
        i = end;
    }
    println!("{records} usage records appended to {}", db.display());
    Ok(())
}
