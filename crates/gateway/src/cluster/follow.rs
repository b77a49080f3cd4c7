//! Following the other instances: notifications, polls, full reloads, and
//! the leader's lock.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{Cluster, apply};
use crate::state::AppState;
use crate::store::{Listener, Notice};

/// How far back a full reload reads key facts: an exhaustion lasts at most
/// a day (cooldowns are capped far below that).
const FACTS_WINDOW_MS: i64 = 86_400_000;

/// The follower's position in the stream of changes.
#[derive(Debug, Default)]
struct Position {
    /// Changes up to this number are applied.
    seen: i64,
    /// `seen` one round earlier: every read starts from here, so that a
    /// change whose number was taken before a newer one's, but committed
    /// after it, is still read (once more, harmlessly).
    before: i64,
    /// The facts applied since `before`, so that the overlap does not
    /// apply them twice.
    applied: BTreeSet<i64>,
}

/// Follows changes until the task is stopped: at each notification, and at
/// least every `poll_every`; with the listening connection down, by polls
/// alone, and with a full reload once it is back.
pub(super) async fn run(c: Arc<Cluster>, s: Arc<AppState>) {
    let mut position = Position::default();
    // State was loaded at start-up; facts of the last day still apply.
    let mut listener: Option<Listener> = None;
    let mut full = true;
    loop {
        if listener.is_none() {
            listener = connect(&c).await;
            full |= listener.is_some();
        }
        if let Some(l) = &listener {
            match l.try_lead().await {
                Ok(leads) => c.set_leader(leads),
                Err(_) => listener = None,
            }
        }
        if listener.is_none() {
            c.set_leader(false);
        }
        if full {
            position = Position::default();
        }
        match catch_up(&c, &s, &mut position, full).await {
            Ok(()) => full = false,
            Err(e) => tracing::debug!("following the other instances: {e}"),
        }
        for pool in wait(&c, &mut listener).await {
            if let Some(shares) = &c.shares {
                shares.hand_back(&pool).await;
            }
        }
    }
}

/// A listening connection, or `None` (said once per failure streak).
async fn connect(c: &Cluster) -> Option<Listener> {
    match c.store.listen().await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("cannot listen for the other instances' changes (polling): {e}");
            None
        }
    }
}

/// Waits for a notification or the next poll; returns the budget pools
/// other instances are short on; drops a broken listener.
async fn wait(c: &Cluster, listener: &mut Option<Listener>) -> Vec<String> {
    let Some(l) = listener else {
        tokio::time::sleep(c.poll_every).await;
        return Vec::new();
    };
    let first = tokio::select! {
        notice = l.notified() => match notice {
            Some(n) => Some(n),
            None => {
                tracing::warn!("the connection listening for changes broke; reconnecting");
                *listener = None;
                // Give a restarting database a moment before reconnecting.
                tokio::time::sleep(Duration::from_millis(100).min(c.poll_every)).await;
                return Vec::new();
            }
        },
        () = tokio::time::sleep(c.poll_every) => None,
    };
    let mut short = Vec::new();
    let mut next = first;
    while let Some(notice) = next {
        if let Notice::Short(pool) = notice
            && !short.contains(&pool)
        {
            short.push(pool);
        }
        next = l.pending();
    }
    short
}

/// Reads what changed since the position and applies it.
async fn catch_up(
    c: &Cluster,
    s: &AppState,
    p: &mut Position,
    full: bool,
) -> Result<(), crate::store::StoreError> {
    let alive_ms = i64::try_from(c.poll_every.as_millis().saturating_mul(5))
        .unwrap_or(i64::MAX)
        .max(3_000);
    let (latest, members) = c.store.heartbeat(&c.instance, alive_ms).await?;
    c.members
        .store(members, std::sync::atomic::Ordering::Relaxed);
    if !full && latest <= p.seen {
        return Ok(());
    }
    let facts_from = s.now_ms().saturating_sub(FACTS_WINDOW_MS);
    let changes = c.store.changes_since(p.before, facts_from).await?;
    apply::client_keys(s, &changes.client_keys);
    apply::upstream_keys(s, &changes.upstream_keys);
    apply::rollouts(s, &changes.rollouts);
    crate::settings::apply_stored(s, &changes.settings);
    for (version, fact) in &changes.facts {
        if p.applied.insert(*version) {
            apply::fact(c, s, fact);
        }
    }
    p.before = p.seen;
    p.seen = p.seen.max(changes.version);
    let before = p.before;
    p.applied.retain(|v| *v > before);
    Ok(())
}
