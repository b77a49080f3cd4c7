//! What this instance's upstreams taught it about keys, published for the
//! others.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gateway_client::ClientEvent;
use keypool_core::{CooldownCause, Event, KeyState};
use tokio::sync::broadcast::error::RecvError;

use super::Cluster;
use crate::state::AppState;
use crate::store::{FactKind, KeyFact, columns};

/// Facts are gathered this long and published in one statement.
const GATHER: Duration = Duration::from_millis(50);

/// Facts waiting to be published, and the keys known disabled (so that a
/// recovery from disabled, which only an operator causes, is published as
/// an enable).
#[derive(Default)]
struct Publisher {
    waiting: Vec<KeyFact>,
    disabled: HashSet<String>,
}

impl Publisher {
    /// The fact `event` (on a key of `provider`) teaches, if any.
    fn fact(&mut self, s: &AppState, provider: &str, event: &Event) -> Option<KeyFact> {
        let (key, kind, state) = match event {
            Event::CoolingDown {
                key, until, cause, ..
            } if *cause != CooldownCause::BreakerOpen => (
                key,
                FactKind::CoolingDown,
                Some(KeyState::CoolingDown {
                    until: *until,
                    cause: *cause,
                }),
            ),
            Event::Exhausted { key, until, .. } => (
                key,
                FactKind::Exhausted,
                Some(KeyState::Exhausted { until: *until }),
            ),
            Event::Disabled { key, cause, .. } => (
                key,
                FactKind::Disabled,
                Some(KeyState::Disabled { cause: *cause }),
            ),
            Event::Recovered { key, .. } => (key, FactKind::Enabled, None),
            _ => return None,
        };
        let key_id = s.keys.id_of(provider, *key)?;
        match kind {
            FactKind::Disabled => {
                self.disabled.insert(key_id.clone());
            }
            FactKind::Enabled if !self.disabled.remove(&key_id) => return None,
            _ => {}
        }
        let (until_ms, cause) = match &state {
            Some(state) => {
                let (_, until, cause) = columns::key_state(state);
                (until, cause.map(str::to_owned))
            }
            None => (None, None),
        };
        Some(KeyFact {
            key_id,
            kind,
            until_ms,
            cause,
        })
    }

    /// Takes `event` in: its fact waits to be published unless it was
    /// learned from another instance.
    fn take(&mut self, c: &Cluster, s: &AppState, event: &ClientEvent) {
        let ClientEvent::Pool { provider, event } = event else {
            return;
        };
        let Some(fact) = self.fact(s, provider, event) else {
            return;
        };
        if !c.learned().remove(&super::Learned::of(&fact)) {
            self.waiting.push(fact);
        }
    }
}

/// Publishes the facts of this instance's pool events until the client's
/// events end. A batch that cannot be published (the database is down) is
/// kept and tried again with the next.
pub(super) async fn run(c: Arc<Cluster>, s: Arc<AppState>) {
    let mut events = s.client.subscribe();
    let mut p = Publisher::default();
    loop {
        match events.recv().await {
            Ok(e) => p.take(&c, &s, &e),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!("{n} events were missed by the cluster publisher");
                continue;
            }
            Err(RecvError::Closed) => return,
        }
        // Gather what follows closely (a 429 storm), then publish at once.
        let deadline = tokio::time::Instant::now() + GATHER;
        while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
            p.take(&c, &s, &e);
        }
        if p.waiting.is_empty() {
            continue;
        }
        match c.store.publish_facts(s.now_ms(), &p.waiting).await {
            Ok(()) => p.waiting.clear(),
            Err(e) => tracing::warn!(
                "{} key facts wait to be published to the other instances: {e}",
                p.waiting.len()
            ),
        }
    }
}
