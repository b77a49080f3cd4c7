//! [`PostgresStore`]: state shared by several gateway instances in one
//! Postgres database.
//!
//! Saved states (client keys, upstream keys, rollouts) are written to
//! Postgres directly: they are rare, and an operator wants to know that a
//! change reached every instance. Usage and audit records go to the
//! instance's [`Outbox`] first (committed locally before the answer leaves,
//! so `kill -9` loses nothing) and are shipped in batches by a background
//! task: no request waits for the network, a database that is down only
//! lengthens the queue, and each batch is one statement however many
//! requests it holds. Every call has a deadline, so a database that stops
//! answering never hangs a caller.

mod budget;
mod cluster;
mod connect;
mod read;
mod schema;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

pub(crate) use self::budget::SpendScope;
use self::connect::Target;
pub(crate) use self::connect::{Listener, Notice};
use super::records::{
    AuditEntry, Loaded, PinRecord, RolloutRecord, SettingRecord, SpendLine, StoredClientKey,
    UpstreamKeyRecord, UsageLine, UsageQuery, UsageRecord,
};
use super::sqlite::{Entry, Outbox};
use super::{Store, StoreError};

/// Records shipped per statement at most.
const SHIP_BATCH: usize = 2_000;

/// How a [`PostgresStore`] connects and ships.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/db` (a secret: never logged).
    pub url: String,
    /// The outbox file (created if missing).
    pub outbox: PathBuf,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long any call may wait for the database (connecting included).
    pub timeout: Duration,
    /// How often waiting records are shipped.
    pub ship_every: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"[redacted]")
            .field("outbox", &self.outbox)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("ship_every", &self.ship_every)
            .finish()
    }
}

/// State in Postgres, usage and audit records through a local outbox.
pub struct PostgresStore {
    inner: Arc<Inner>,
    /// The background shipper, until the store closes.
    shipper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    target: Target,
    pool: Pool,
    outbox: Outbox,
    timeout: Duration,
    ship_every: Duration,
    /// Records appended to the outbox and not yet shipped (an estimate that
    /// only tells the shipper whether to look).
    waiting: AtomicU64,
    /// Whether the last call to the database succeeded.
    reachable: AtomicBool,
    /// One shipment at a time (the shipper's, or a report's flush).
    shipping: tokio::sync::Mutex<()>,
    /// Statements sent so far (each call counts the statements it sends).
    statements: AtomicU64,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target.label())
            .field("outbox", &self.inner.outbox)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(shipper) = self.take_shipper() {
            shipper.abort();
        }
    }
}

impl PostgresStore {
    /// Connects, brings the schema up to date (safe when several gateways
    /// start at once), opens the outbox and starts shipping it (records a
    /// previous run left are shipped first). Fails with a message naming
    /// the server, never the password, when it cannot be reached, refuses
    /// the login, or was migrated by a newer gateway.
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        let target = Target::parse(&options.url)?;
        let pool = target.pool(options.pool_size, options.timeout, options.timeout)?;
        let outbox = Outbox::open(&options.outbox)?;
        let inner = Arc::new(Inner {
            pool,
            outbox,
            timeout: options.timeout,
            ship_every: options.ship_every,
            waiting: AtomicU64::new(0),
            reachable: AtomicBool::new(true),
            shipping: tokio::sync::Mutex::new(()),
            statements: AtomicU64::new(0),
            target,
        });
        {
            let mut client = inner.client().await?;
            let what = format!("Postgres at {}", inner.target.label());
            schema::migrate(&mut client, &what).await?;
        }
        inner
            .waiting
            .store(inner.outbox.len().await?, Ordering::Relaxed);
        let shipper = tokio::spawn(ship_forever(Arc::downgrade(&inner)));
        Ok(PostgresStore {
            inner,
            shipper: std::sync::Mutex::new(Some(shipper)),
        })
    }

    fn take_shipper(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.shipper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Ships what waits in the outbox now.
    pub(crate) async fn flush(&self) -> Result<u64, StoreError> {
        self.inner.ship_all().await
    }

    /// Whether the last call to the database succeeded: callers that could
    /// do without it (a rate, a share) do not wait for it while it is out
    /// of reach.
    pub(crate) fn reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed)
    }

    /// Where the database is, for messages (`user@host:port/db`).
    pub fn label(&self) -> &str {
        self.inner.target.label()
    }
}

impl Inner {
    /// A pooled connection, within the deadline.
    async fn client(&self) -> Result<Object, StoreError> {
        let got = tokio::time::timeout(self.timeout, self.pool.get()).await;
        let result = match got {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(connect::unreachable(&self.target, &pool_error(&e))),
            Err(_) => Err(self.timed_out()),
        };
        self.reachable.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable {
            what: format!("Postgres at {}", self.target.label()),
            reason: format!("no answer within {} ms", self.timeout.as_millis()),
        }
    }

    /// Counts `n` more statements sent.
    fn sent(&self, n: u64) {
        self.statements.fetch_add(n, Ordering::Relaxed);
    }

    /// Runs `f` with a pooled connection, within the deadline; counts one
    /// statement (a call that sends more counts the others itself).
    async fn with<R>(
        &self,
        f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let client = self.client().await?;
        self.sent(1);
        let result = match tokio::time::timeout(self.timeout, f(&client)).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        };
        let down = matches!(result, Err(StoreError::Unavailable { .. })) || client.is_closed();
        self.reachable.store(!down, Ordering::Relaxed);
        result
    }

    /// Ships every record waiting, batch after batch; returns how many
    /// were stored (a record shipped before is not stored again).
    async fn ship_all(&self) -> Result<u64, StoreError> {
        let _one = self.shipping.lock().await;
        let mut stored = 0;
        loop {
            let batch = self.outbox.waiting(SHIP_BATCH).await?;
            if batch.is_empty() {
                return Ok(stored);
            }
            let origin = self.outbox.origin().to_owned();
            if !batch.usage.is_empty() && !batch.audit.is_empty() {
                self.sent(1);
            }
            stored += self
                .with(async |c| {
                    write::ship(c, &origin, &batch)
                        .await
                        .map_err(StoreError::from)
                })
                .await?;
            let last = |seqs: &mut dyn Iterator<Item = i64>| seqs.max().unwrap_or(0);
            self.outbox
                .forget(
                    last(&mut batch.usage.iter().map(|(s, _)| *s)),
                    last(&mut batch.audit.iter().map(|(s, _)| *s)),
                )
                .await?;
            // Records appended meanwhile stay counted.
            let shipped = (batch.usage.len() + batch.audit.len()) as u64;
            let _ = self
                .waiting
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                    Some(w.saturating_sub(shipped))
                });
        }
    }
}

/// A pool error's message: the driver's cause when there is one.
fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => {
            use std::error::Error;
            match e.source() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// Ships the outbox every `ship_every` while records wait; after a failure
/// it says so once and tries again at the next tick. It holds the store
/// only while shipping, so dropping the store closes the outbox at once.
async fn ship_forever(store: std::sync::Weak<Inner>) {
    let mut failing = false;
    loop {
        let Some(every) = store.upgrade().map(|s| s.ship_every) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(inner) = store.upgrade() else {
            return;
        };
        if inner.waiting.load(Ordering::Relaxed) == 0 {
            continue;
        }
        match inner.ship_all().await {
            Ok(_) if failing => {
                tracing::info!("usage records are shipped to Postgres again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!("usage records wait in the outbox: {e}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        self.inner.with(async |c| read::load(c).await).await
    }

    async fn append_usage(&self, record: UsageRecord) -> Result<(), StoreError> {
        self.inner.outbox.append(Entry::Usage(record)).await?;
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.inner.outbox.append(Entry::Audit(entry)).await?;
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn save_client_key(&self, key: StoredClientKey) -> Result<(), StoreError> {
        self.inner
            .with(async |c| write::client_key(c, &key).await.map_err(StoreError::from))
            .await
    }

    async fn save_upstream_key(&self, key: UpstreamKeyRecord) -> Result<(), StoreError> {
        self.inner
            .with(async |c| write::upstream_key(c, &key).await.map_err(StoreError::from))
            .await
    }

    async fn save_setting(&self, setting: SettingRecord) -> Result<(), StoreError> {
        self.inner
            .with(async |c| write::setting(c, &setting).await.map_err(StoreError::from))
            .await
    }

    async fn save_pin(&self, pin: PinRecord) -> Result<(), StoreError> {
        self.inner
            .with(async |c| write::pin(c, &pin).await.map_err(StoreError::from))
            .await
    }

    async fn find_pin(&self, id: &str, since: i64) -> Result<Option<PinRecord>, StoreError> {
        self.inner
            .with(async |c| {
                let row = c
                    .query_opt(
                        "SELECT provider, key, at FROM pins WHERE id = $1 AND at >= $2",
                        &[&id, &since],
                    )
                    .await?;
                Ok(row.map(|r| PinRecord {
                    id: id.to_owned(),
                    provider: r.get(0),
                    key: r.get(1),
                    at: r.get(2),
                }))
            })
            .await
    }

    async fn prune_pins(&self, before: i64) -> Result<u64, StoreError> {
        self.inner
            .with(async |c| {
                c.execute("DELETE FROM pins WHERE at < $1", &[&before])
                    .await
                    .map_err(StoreError::from)
            })
            .await
    }

    async fn save_rollout(&self, rollout: RolloutRecord) -> Result<(), StoreError> {
        let mut client = self.inner.client().await?;
        self.inner.sent(4 + rollout.saved.arms.len() as u64);
        let save = async {
            let tx = client.transaction().await?;
            write::rollout(&*tx, &rollout).await?;
            tx.commit().await
        };
        match tokio::time::timeout(self.inner.timeout, save).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(self.inner.timed_out()),
        }
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
        self.flush().await?;
        self.inner.with(async |c| read::usage(c, query).await).await
    }

    async fn spend_since(&self, from: i64) -> Result<Vec<SpendLine>, StoreError> {
        self.flush().await?;
        self.inner
            .with(async |c| read::spend_since(c, from).await)
            .await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.flush().await?;
        self.inner.with(async |c| read::audit(c, limit).await).await
    }

    async fn prune_usage(&self, before: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .inner
                .with(async |c| {
                    c.execute(
                        "DELETE FROM usage WHERE ctid IN
                         (SELECT ctid FROM usage WHERE at < $1 LIMIT 10000)",
                        &[&before],
                    )
                    .await
                    .map_err(StoreError::from)
                })
                .await?;
            total += n;
            if n < 10_000 {
                break;
            }
        }
        let hour = before.saturating_sub(super::HOUR_MS);
        self.inner
            .with(async |c| {
                c.execute("DELETE FROM usage_hours WHERE hour <= $1", &[&hour])
                    .await
                    .map_err(StoreError::from)
            })
            .await?;
        Ok(total)
    }

    fn describe(&self) -> String {
        format!(
            "state is shared in Postgres at {} (schema version {}); usage waits in the outbox {}",
            self.inner.target.label(),
            schema::LATEST,
            self.inner.outbox.path().display()
        )
    }

    fn statements(&self) -> Option<u64> {
        Some(self.inner.statements.load(Ordering::Relaxed))
    }

    fn degraded(&self) -> Option<String> {
        if self.inner.reachable.load(Ordering::Relaxed) {
            return None;
        }
        Some(format!(
            "Postgres at {} is unreachable; {} records wait in the outbox",
            self.inner.target.label(),
            self.inner.waiting.load(Ordering::Relaxed)
        ))
    }

    async fn close(&self) {
        // The shipper stops first, so that the last shipment is this one.
        if let Some(shipper) = self.take_shipper() {
            shipper.abort();
            let _ = shipper.await;
        }
        if let Err(e) = self.inner.ship_all().await {
            tracing::warn!(
                "usage records stay in the outbox {} until the next start: {e}",
                self.inner.outbox.path().display()
            );
        }
        self.inner.outbox.release();
    }
}

#[cfg(test)]
mod tests;
