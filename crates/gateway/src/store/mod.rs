//! State that survives restarts: client keys, usage, upstream key states,
//! rollout states, operators' changes to the configuration and the audit
//! log.
//!
//! [`Store`] is shaped by what the gateway needs (append a usage or audit
//! record, read reports, load and save states), not by SQL, so that a store
//! shared by several gateway instances can follow without touching the
//! callers. Records are typed ([`records`]); errors are a [`StoreError`]
//! enum. Backends:
//!
//! - [`SqliteStore`]: one SQLite file in WAL mode, with versioned schema
//!   migrations. Writes are committed in groups before their call returns;
//!   reads use a connection of their own, so a report never waits behind
//!   the commits that answered requests wait for.
//! - [`PostgresStore`]: state shared by several gateway instances, usage
//!   and audit records through a local outbox (see its module).
//! - [`MemoryStore`]: everything in memory, for a gateway started without
//!   `[storage] path`; lost when the process ends.
//!
//! Every backend runs the same conformance suite (`conformance.rs`).

pub(crate) mod columns;
#[cfg(test)]
mod conformance;
mod error;
mod memory;
mod postgres;
pub mod records;
mod sqlite;

pub use error::StoreError;
pub use memory::MemoryStore;
pub(crate) use postgres::{Listener, Notice, SpendScope};
pub use postgres::{PostgresOptions, PostgresStore};
pub use records::{
    AuditEntry, FactKind, KeyFact, KeyOrigin, KeySettings, Loaded, PinRecord, RolloutRecord,
    SettingKind, SettingRecord, SpendLine, StoredClientKey, Totals, UpstreamKeyRecord, UsageLine,
    UsageQuery, UsageRecord, config_key_id,
};
pub use sqlite::SqliteStore;

/// What the gateway needs from persistent storage.
///
/// A write returns once its record is committed: a caller that awaits it
/// before answering knows the record survives the process being killed.
/// No implementation holds a lock across an `.await`, and reads never wait
/// for writes to commit.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Everything applied at start-up.
    async fn load(&self) -> Result<Loaded, StoreError>;

    /// Appends a settled request.
    async fn append_usage(&self, record: UsageRecord) -> Result<(), StoreError>;

    /// Appends a management action.
    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError>;

    /// Saves a client key, created or changed (by id).
    async fn save_client_key(&self, key: StoredClientKey) -> Result<(), StoreError>;

    /// Saves an upstream key (by id): added, changed, or gone.
    async fn save_upstream_key(&self, key: UpstreamKeyRecord) -> Result<(), StoreError>;

    /// Saves a rollout's state (by baseline model).
    async fn save_rollout(&self, rollout: RolloutRecord) -> Result<(), StoreError>;

    /// Saves an operator's change to the configuration (by kind and name).
    async fn save_setting(&self, setting: SettingRecord) -> Result<(), StoreError>;

    /// Records which key made an upstream id (replacing an older record).
    async fn save_pin(&self, pin: PinRecord) -> Result<(), StoreError>;

    /// The key that made `id`, if recorded at `since` (Unix milliseconds)
    /// or later.
    async fn find_pin(&self, id: &str, since: i64) -> Result<Option<PinRecord>, StoreError>;

    /// Forgets the ids made before `before` (Unix milliseconds); how many.
    async fn prune_pins(&self, before: i64) -> Result<u64, StoreError>;

    /// Usage totals per client key, team and model matching `query`,
    /// dearest first (then by model). Reports have an hour's resolution: a
    /// record counts when its hour overlaps `query.from..query.to`.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError>;

    /// Spend per hour, for the hours that end after `from` (Unix
    /// milliseconds), oldest first.
    async fn spend_since(&self, from: i64) -> Result<Vec<SpendLine>, StoreError>;

    /// The newest `limit` audit entries, newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes usage records older than `before` (Unix milliseconds), and
    /// the hourly totals of hours that ended by then; returns how many went
    /// (records, or totals for a store that keeps only totals).
    async fn prune_usage(&self, before: i64) -> Result<u64, StoreError>;

    /// One line for the start-up log: where state lives.
    fn describe(&self) -> String;

    /// Finishes background work before the process ends (a store that
    /// ships records elsewhere ships what waits).
    async fn close(&self) {}

    /// Why the store works in a degraded way right now (a shared database
    /// out of reach, records waiting locally), for `/readyz`; `None` when
    /// all is well.
    fn degraded(&self) -> Option<String> {
        None
    }

    /// Statements sent to a database over the network so far (`None` for
    /// a store that sends none), for the metrics.
    fn statements(&self) -> Option<u64> {
        None
    }

    /// Whether state outlives the process (false for a store in memory).
    fn is_durable(&self) -> bool {
        true
    }
}

/// Milliseconds in an hour: spend is replayed by the hour.
pub(crate) const HOUR_MS: i64 = 3_600_000;
