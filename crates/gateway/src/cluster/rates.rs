//! Client keys' rates across instances.
//!
//! Each key has a pool of admissions per minute window in Postgres
//! (`keypool_take` never takes past the limit). An instance takes them a
//! few at a time and admits from what it holds in memory: the instances
//! together never admit more than the limit, and only the request that
//! finds the instance's hand empty waits for one round trip. Near the end
//! of a window the instances take one at a time, so that little is left
//! unused in another's hand. When Postgres does not answer quickly, the
//! request is admitted on this instance's own limiter alone: a database
//! that is down never holds requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::auth::SharedRates;
use crate::store::PostgresStore;

/// A rate limit is per minute.
const WINDOW_MS: i64 = 60_000;

/// The longest a request waits for admissions from Postgres.
const DEADLINE: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct Hand {
    window: i64,
    /// Admissions held.
    held: u32,
    /// What the pool had left at the last take.
    left: Option<u32>,
}

/// This instance's side of the shared rates.
#[derive(Debug)]
pub(crate) struct Rates {
    store: Arc<PostgresStore>,
    /// The instances alive (from the follower's heartbeat).
    members: Arc<AtomicU32>,
    hands: Mutex<HashMap<String, Hand>>,
    /// One take at a time (requests that wait behind it usually find the
    /// hand refilled).
    taking: tokio::sync::Mutex<()>,
}

impl Rates {
    pub(crate) fn new(store: Arc<PostgresStore>, members: Arc<AtomicU32>) -> Self {
        Rates {
            store,
            members,
            hands: Mutex::new(HashMap::new()),
            taking: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes one admission from the hand of `id` in `window`, if it holds
    /// one; else says how many to ask the pool for.
    fn take_held(&self, id: &str, window: i64, limit: u32) -> Result<(), u32> {
        let mut hands = self.hands.lock().unwrap_or_else(PoisonError::into_inner);
        let hand = hands.entry(id.to_owned()).or_default();
        if hand.window != window {
            *hand = Hand {
                window,
                ..Hand::default()
            };
        }
        if hand.held > 0 {
            hand.held -= 1;
            return Ok(());
        }
        let members = self.members.load(Ordering::Relaxed).max(1);
        // A quarter of this instance's part of the limit at a time, fewer
        // as the pool runs low.
        let chunk = (limit / members / 4).max(1);
        let want = match hand.left {
            Some(left) => chunk.min(left / members / 2).max(1),
            None => chunk,
        };
        Err(want)
    }

    fn fill(&self, id: &str, window: i64, took: u32, left: u32) {
        let mut hands = self.hands.lock().unwrap_or_else(PoisonError::into_inner);
        let hand = hands.entry(id.to_owned()).or_default();
        if hand.window == window {
            hand.held += took;
            hand.left = Some(left);
        }
    }
}

#[async_trait::async_trait]
impl SharedRates for Rates {
    async fn admit(&self, id: &str, limit: u32, now_ms: i64) -> Result<(), Duration> {
        let window = now_ms - now_ms.rem_euclid(WINDOW_MS);
        let until_next = Duration::from_millis(
            u64::try_from(WINDOW_MS - now_ms.rem_euclid(WINDOW_MS)).unwrap_or(0),
        );
        let Err(_) = self.take_held(id, window, limit) else {
            return Ok(());
        };
        if !self.store.reachable() {
            // This instance's own limiter alone, until Postgres is back.
            return Ok(());
        }
        let _one = self.taking.lock().await;
        let want = match self.take_held(id, window, limit) {
            Ok(()) => return Ok(()),
            Err(want) => want,
        };
        match self
            .store
            .take_rate(id, window, (limit, want), DEADLINE)
            .await
        {
            Ok((0, _)) => Err(until_next),
            Ok((took, left)) => {
                self.fill(id, window, took - 1, left);
                Ok(())
            }
            Err(e) => {
                tracing::debug!("client key rates are this instance's alone for now: {e}");
                Ok(())
            }
        }
    }
}
