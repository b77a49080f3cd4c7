//! The state saver: follows the client's events, saves upstream key and
//! rollout states as they change, and keeps recent events for the
//! dashboard.

use std::sync::Arc;

use gateway_client::ClientEvent;
use keypool_core::{Event, KeyId};
use tokio::sync::broadcast::error::RecvError;

use crate::state::AppState;
use crate::store::StoreError;

/// The keys an event changes, and whether it took them out of the pool.
fn changed_keys(event: &Event) -> (Vec<KeyId>, bool) {
    match event {
        Event::CoolingDown { key, .. }
        | Event::Recovered { key, .. }
        | Event::Disabled { key, .. }
        | Event::Exhausted { key, .. }
        | Event::BreakerOpened { key, .. }
        | Event::RevokeScheduled { key, .. } => (vec![*key], false),
        Event::Rotated { old, new, .. } => (vec![*old, *new], false),
        Event::Revoked { key, .. } => (vec![*key], true),
        _ => (Vec::new(), false),
    }
}

/// Saves the keys `event` changed, by stable id.
async fn save_keys(s: &AppState, provider: &str, event: &Event) -> Result<(), StoreError> {
    let (keys, gone) = changed_keys(event);
    for key in keys {
        let Some(id) = s.keys.id_of(provider, key) else {
            continue;
        };
        if gone {
            s.keys.mark_removed(&id);
        }
        s.save_upstream_key(&id).await?;
    }
    Ok(())
}

/// Saves what `event` changed.
async fn save(s: &AppState, event: &ClientEvent) {
    let saved = match event {
        ClientEvent::Pool { provider, event } => {
            // Read and saved under the change lock, so an older state never
            // lands after an operator's newer one.
            let _one_at_a_time = s.one_change_at_a_time().await;
            save_keys(s, provider, event).await
        }
        // An automatic step or rollback: kept across a restart.
        ClientEvent::Canary { rollout, .. } => {
            let _one_at_a_time = s.one_change_at_a_time().await;
            match s.rollout_state(rollout) {
                Some(record) => s.store.save_rollout(record).await,
                None => Ok(()),
            }
        }
        ClientEvent::Budget(_) => Ok(()),
    };
    if let Err(e) = saved {
        tracing::error!("a state change was not saved ({event}): {e}");
    }
}

/// Starts the state saver. When `stopped` turns true it saves the events
/// already sent (a change made just before shutdown is not lost) and ends.
pub(crate) fn spawn_saver(
    s: Arc<AppState>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut events = s.client.subscribe();
    tokio::spawn(async move {
        loop {
            let stop = tokio::select! {
                e = events.recv() => Err(e),
                changed = stopped.changed() => Ok(changed.is_err() || *stopped.borrow()),
            };
            let event = match stop {
                Err(e) => e,
                Ok(false) => continue,
                Ok(true) => {
                    while let Ok(event) = events.try_recv() {
                        handle(&s, &event).await;
                    }
                    return;
                }
            };
            match event {
                Ok(e) => handle(&s, &e).await,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!("{n} events were missed by the state saver");
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// Keeps an event for the dashboard, counts it, and saves what it changed.
async fn handle(s: &AppState, event: &ClientEvent) {
    let secs = s.now_ms().div_euclid(1000);
    s.activity().event(secs, event.to_string());
    s.metrics.event(event);
    save(s, event).await;
}
