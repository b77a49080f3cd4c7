//! The pruner: deletes usage records past their retention, and the keys of
//! stateful ids past theirs (30 days), at start-up and hourly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::state::AppState;

const DAY_MS: i64 = 86_400_000;

/// Deletes usage records older than `days` (when set), and ids' keys
/// older than their retention.
pub(crate) async fn prune(s: &AppState, days: Option<u32>) {
    if let Some(days) = days {
        let before = s.now_ms().saturating_sub(i64::from(days) * DAY_MS);
        match s.store.prune_usage(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("deleted {n} usage records older than {days} days"),
            Err(e) => tracing::warn!("usage records could not be pruned: {e}"),
        }
    }
    let before = s.now_ms().saturating_sub(crate::pins::RETENTION_MS);
    match s.store.prune_pins(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("forgot the keys of {n} ids older than 30 days"),
        Err(e) => tracing::warn!("old ids could not be pruned: {e}"),
    }
}

/// Prunes usage every hour, on the client's clock; where several
/// instances share the store, only while `leads` (when given) is true.
pub(crate) fn spawn_pruner(
    s: Arc<AppState>,
    days: Option<u32>,
    leads: Option<Arc<AtomicBool>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            s.client.clock().sleep(Duration::from_secs(3600)).await;
            if leads.as_ref().is_none_or(|l| l.load(Ordering::SeqCst)) {
                prune(&s, days).await;
            }
        }
    })
}
