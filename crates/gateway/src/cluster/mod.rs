//! Several gateway instances on one Postgres database: what each learns
//! reaches the others, and periodic work is done once.
//!
//! An instance publishes the facts its upstreams taught it about keys (a
//! 429's cooldown, a 401's disablement, a spent quota, an operator's
//! enable) and follows what the others change: client keys, upstream keys
//! added, rotated or removed, rollouts, and their facts. Following is
//! driven by Postgres notifications (a trigger on every shared table), with
//! a poll every `[cluster] poll_ms` as the backstop, and a full reload
//! after the listening connection comes back, since notifications sent
//! while it was down are lost. Facts merge monotonically: a cooldown only
//! ever extends, a disabled key stays disabled until an operator enables
//! it; circuit breakers stay each instance's own.
//!
//! Client keys' rates hold across the instances (`rates.rs`): each takes
//! a key's admissions a few at a time from the key's pool for the minute.
//!
//! One instance leads, the one whose listening session holds a Postgres
//! advisory lock: it prunes usage and judges the canaries; when it dies its
//! session ends and another takes the lock.

mod apply;
mod follow;
mod publish;
mod rates;
mod shares;

pub(crate) use self::shares::ShareDriver;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::state::AppState;
use crate::store::{KeyFact, PostgresStore};

/// This instance's part in the cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    store: Arc<PostgresStore>,
    /// This instance's name.
    instance: String,
    /// Whether this instance leads (holds the leader's lock).
    leader: Arc<AtomicBool>,
    /// Facts applied from other instances: the events they cause here are
    /// not published again.
    learned: Mutex<HashSet<Learned>>,
    /// How often the follower polls when no notification comes.
    poll_every: Duration,
    /// This instance's shares of the budget's limits, with a budget.
    shares: Option<Arc<ShareDriver>>,
    /// The instances alive, this one included (from the heartbeats).
    members: Arc<AtomicU32>,
    /// Client keys' rates across the instances.
    rates: Arc<rates::Rates>,
}

impl Cluster {
    /// This instance in the cluster `store` is shared by; with `shares`,
    /// its shares of the budget's limits.
    pub(crate) fn new(
        store: Arc<PostgresStore>,
        instance: String,
        poll_every: Duration,
        shares: Option<Arc<ShareDriver>>,
    ) -> Self {
        let members = Arc::new(AtomicU32::new(1));
        Cluster {
            rates: Arc::new(rates::Rates::new(store.clone(), members.clone())),
            store,
            instance,
            leader: Arc::new(AtomicBool::new(false)),
            learned: Mutex::new(HashSet::new()),
            poll_every,
            shares,
            members,
        }
    }

    /// Whether this instance leads now.
    pub(crate) fn leader(&self) -> Arc<AtomicBool> {
        self.leader.clone()
    }

    /// This instance's shares of the budget's limits, with a budget.
    pub(crate) fn shares(&self) -> Option<Arc<ShareDriver>> {
        self.shares.clone()
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, HashSet<Learned>> {
        self.learned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_leader(&self, leads: bool) {
        if self.leader.swap(leads, Ordering::SeqCst) != leads {
            if leads {
                tracing::info!(
                    "{} leads the cluster (pruning, canary analysis)",
                    self.instance
                );
            } else {
                tracing::warn!("{} no longer leads the cluster", self.instance);
            }
        }
    }
}

/// A fact as the event it causes is matched against it: the key, what, and
/// until when (a cooldown keeps the cause it had, so causes may differ).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Learned(String, crate::store::FactKind, Option<i64>);

impl Learned {
    fn of(f: &KeyFact) -> Self {
        Learned(f.key_id.clone(), f.kind, f.until_ms)
    }
}

/// Starts following the others and publishing to them.
pub(crate) fn spawn(
    cluster: &Arc<Cluster>,
    state: &Arc<AppState>,
) -> Vec<tokio::task::JoinHandle<()>> {
    state.auth.share_rates(cluster.rates.clone());
    vec![
        tokio::spawn(follow::run(cluster.clone(), state.clone())),
        tokio::spawn(publish::run(cluster.clone(), state.clone())),
    ]
}

/// Keeps the budget's shares filled until `stopped` turns true, then hands
/// back what they hold free.
pub(crate) fn spawn_shares(
    shares: Arc<ShareDriver>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(shares::TICK) => shares.tick().await,
                changed = stopped.changed() => {
                    if changed.is_err() || *stopped.borrow() {
                        shares.release().await;
                        return;
                    }
                }
            }
        }
    })
}
