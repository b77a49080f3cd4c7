//! This instance's shares of the budget's limits, moved to and from the
//! pools in Postgres by the allowance protocol (`budget::Allowances`).
//!
//! Requests are decided in memory against the shares; shares are refilled
//! in the background before they run dry; a request that finds one short
//! asks for what it lacks at once ([`ShareBacker::cover`]) and, when the
//! pool itself is short, tells the others, who hand back what they hold
//! free. At start-up an instance reads back what it holds and what it spent
//! (its records of a run that crashed included); at shutdown it hands back
//! what it holds free.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use budget::{AllowanceConfig, Allowances, Money, Move, MoveKind, Scope, ShareView};
use gateway_client::{Client, ShareBacker, WeakClient};

use crate::store::{PostgresStore, SpendScope};

/// How often shares are looked at (refills, moves whose answer was lost).
pub(super) const TICK: Duration = Duration::from_millis(200);

/// Attempts of one request to have its share covered, with a pause after a
/// pool came short (the others hand back meanwhile).
const COVER_ATTEMPTS: u32 = 5;
const COVER_PAUSE: Duration = Duration::from_millis(20);

/// This instance's side of the shared budget.
pub(crate) struct ShareDriver {
    store: Arc<PostgresStore>,
    /// The client whose ledger holds the shares; weak, since the client
    /// holds this driver as its share backer.
    client: WeakClient,
    protocol: Mutex<Allowances>,
    /// One request's cover at a time: the others wait, then usually find
    /// the share already grown.
    covering: tokio::sync::Mutex<()>,
    /// The pools known to exist (made with the period's spend so far).
    opened: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for ShareDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareDriver").finish_non_exhaustive()
    }
}

/// This run's name for its moves: the instance's origin and a part new at
/// every start, so that a restarted instance never reuses the name of a
/// move its previous run made (the pool would answer with that move's
/// amount without granting anything).
fn run_name(origin: &str) -> String {
    let run = crate::ids::random_hex::<6>().unwrap_or_else(|_| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{nanos:x}")
    });
    format!("{origin}.{run}")
}

/// The name of the pool of the limit `share` shows, in its period: the
/// same on every instance with the same limits.
fn pool_key(share: &ShareView) -> String {
    format!("{}|{}|{}", share.scope, share.period, share.period_id)
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The usage records that count against a limit of `scope`.
fn spend_scope(scope: &Scope) -> SpendScope {
    match scope {
        Scope::Global => SpendScope::All,
        Scope::Team(t) => SpendScope::Team(t.clone()),
        Scope::Key(k) => SpendScope::Key(k.clone()),
        Scope::Model(m) => SpendScope::Model(m.clone()),
    }
}

/// What a move asks of the pool, signed: a grant's want, a return's minus.
fn signed(m: &Move) -> i64 {
    let amount = |m: Money| i64::try_from(m.micros()).unwrap_or(i64::MAX);
    match m.kind {
        MoveKind::Grant { want } => amount(want),
        MoveKind::Return { amount: a } => -amount(a),
    }
}

/// What happened to a request's cover at one attempt.
enum Cover {
    Enough,
    Send(Move),
    Impossible,
}

impl ShareDriver {
    /// The driver for `client`'s ledger, whose limits it makes shared;
    /// `None` without a budget.
    pub(crate) fn new(store: Arc<PostgresStore>, client: &Client) -> Option<Arc<Self>> {
        client.with_ledger(|l, _| l.share_limits())?;
        let protocol = Allowances::new(run_name(store.origin()), AllowanceConfig::default());
        Some(Arc::new(ShareDriver {
            store,
            client: client.downgrade(),
            protocol: Mutex::new(protocol),
            covering: tokio::sync::Mutex::new(()),
            opened: Mutex::new(HashSet::new()),
        }))
    }

    /// Runs `f` on the client's ledger; `None` once the client is gone.
    fn with_ledger<R>(&self, f: impl FnOnce(&mut budget::Ledger, SystemTime) -> R) -> Option<R> {
        self.client.upgrade()?.with_ledger(f)
    }

    fn protocol(&self) -> std::sync::MutexGuard<'_, Allowances> {
        self.protocol.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pool of `share`, made first if this is its first use (its
    /// period's spend so far counted as granted).
    async fn pool(&self, share: &ShareView) -> Result<String, crate::store::StoreError> {
        let key = pool_key(share);
        let known = self
            .opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key);
        if !known {
            let from = millis(share.period_start);
            self.store
                .ensure_pool(&key, share.hard, from, &spend_scope(&share.scope))
                .await?;
            self.opened
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone());
        }
        Ok(key)
    }

    fn shares(&self) -> Vec<ShareView> {
        self.with_ledger(|l, now| l.shares(now)).unwrap_or_default()
    }

    /// Sends `m` to its pool and applies the answer; whether the pool came
    /// short (`None`: the database did not answer, the move stays out).
    async fn send(&self, m: &Move) -> Option<bool> {
        let share = self.shares().into_iter().find(|s| s.limit == m.limit)?;
        if share.period_id != m.period_id {
            // The period ended: its pool is closed, the move is moot.
            self.answered(m, Money::ZERO);
            return Some(false);
        }
        let moved = match self.pool(&share).await {
            Ok(key) => {
                let at = millis(SystemTime::now());
                self.store
                    .move_share(&key, share.hard, &m.id, signed(m), at)
                    .await
                    .map(|amount| (key, amount))
            }
            Err(e) => Err(e),
        };
        match moved {
            Ok((key, amount)) => {
                let short = self.answered(m, amount);
                if short && let Err(e) = self.store.announce_short(&key).await {
                    tracing::debug!("cannot ask the other instances to hand back: {e}");
                }
                Some(short)
            }
            Err(e) => {
                tracing::debug!("a budget move waits: {e}");
                None
            }
        }
    }

    fn answered(&self, m: &Move, amount: Money) -> bool {
        self.with_ledger(|l, _| {
            let mut p = self.protocol();
            match m.kind {
                MoveKind::Grant { .. } => p.granted(l, &m.id, amount),
                MoveKind::Return { .. } => {
                    p.returned(&m.id);
                    false
                }
            }
        })
        .unwrap_or(false)
    }

    /// Refills shares running low and sends again the moves whose answer
    /// was lost.
    pub(crate) async fn tick(&self) {
        let out: Vec<Move> = self
            .with_ledger(|l, now| {
                let shares = l.shares(now);
                let mut p = self.protocol();
                p.poll(&shares, now);
                p.in_flight().cloned().collect()
            })
            .unwrap_or_default();
        for m in out {
            self.send(&m).await;
        }
    }

    /// Another instance is short on the pool `key`: hands back what this
    /// one holds free of it.
    pub(crate) async fn hand_back(&self, key: &str) {
        let Some(share) = self.shares().into_iter().find(|s| pool_key(s) == key) else {
            return;
        };
        let m = self.with_ledger(|l, _| self.protocol().hand_back(l, share.limit, share.period_id));
        if let Some(Some(m)) = m {
            self.send(&m).await;
        }
    }

    /// Reads back what this instance holds of each pool and what it spent
    /// this period (a run that crashed included), so that it continues
    /// from there.
    pub(crate) async fn reconcile(&self) -> Result<(), crate::store::StoreError> {
        for share in self.shares() {
            let key = self.pool(&share).await?;
            let held = self.store.held(&key).await?;
            let spent = self
                .store
                .own_spend(millis(share.period_start), &spend_scope(&share.scope))
                .await?;
            self.with_ledger(|l, _| {
                l.set_share(share.limit, share.period_id, held, spent);
            });
        }
        Ok(())
    }

    /// Hands back everything held free (at shutdown).
    pub(crate) async fn release(&self) {
        let moves = self
            .with_ledger(|l, now| self.protocol().release_all(l, now))
            .unwrap_or_default();
        for m in moves {
            self.send(&m).await;
        }
    }

    /// One attempt of a request's cover: enough already free, a move to
    /// send, or nothing to do.
    fn cover_step(&self, limit: usize, needed: Money) -> Cover {
        let step = self.with_ledger(|l, now| {
            let share = l.shares(now).into_iter().find(|s| s.limit == limit)?;
            let free = share.free();
            if free >= needed {
                return Some(Cover::Enough);
            }
            let mut p = self.protocol();
            let m = p.cover(&share, needed.saturating_sub(free)).or_else(|| {
                p.in_flight()
                    .find(|m| m.limit == limit && m.period_id == share.period_id)
                    .cloned()
            })?;
            Some(Cover::Send(m))
        });
        step.flatten().unwrap_or(Cover::Impossible)
    }
}

#[async_trait::async_trait]
impl ShareBacker for ShareDriver {
    async fn cover(&self, limit: usize, needed: Money) -> bool {
        if !self.store.reachable() {
            // Serving on what the share holds until Postgres is back.
            return false;
        }
        let _one = self.covering.lock().await;
        for _ in 0..COVER_ATTEMPTS {
            let m = match self.cover_step(limit, needed) {
                Cover::Enough => return true,
                Cover::Impossible => return false,
                Cover::Send(m) => m,
            };
            match self.send(&m).await {
                None => return false,
                Some(true) => tokio::time::sleep(COVER_PAUSE).await,
                Some(false) => {}
            }
        }
        matches!(self.cover_step(limit, needed), Cover::Enough)
    }
}
