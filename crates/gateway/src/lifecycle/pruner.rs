//! The usage pruner: deletes usage records past their retention, at
//! start-up and hourly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::state::AppState;

const DAY_MS: i64 = 86_400_000;

/// Deletes usage records older than `days`.
pub(crate) async fn prune(s: &AppState, days: u32) {
    let before = s.now_ms().saturating_sub(i64::from(days) * DAY_MS);
    match s.store.prune_usage(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("deleted {n} usage records older than {days} days"),
        Err(e) => tracing::warn!("usage records could not be pruned: {e}"),
    }
}

/// Prunes usage every hour, on the client's clock; where several
/// instances share the store, only while `leads` (when given) is true.
pub(crate) fn spawn_pruner(
    s: Arc<AppState>,
    days: u32,
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
