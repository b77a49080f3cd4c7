//! What instances sharing the database tell each other: key facts, the
//! changes since a change number, notifications, and the leader's lock.

use tokio_postgres::types::ToSql;

use super::connect::Listener;
use super::{PostgresStore, read};
use crate::store::StoreError;
use crate::store::records::{FactKind, KeyFact, RolloutRecord, StoredClientKey, UpstreamKeyRecord};

/// The channel the tables' triggers notify.
pub(crate) const CHANNEL: &str = "keypool_changes";

/// The advisory lock the leader holds for its session ("leader" in ASCII).
const LEADER_LOCK: i64 = 0x6c65_6164_6572;

/// What changed after a change number.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The newest change number read.
    pub(crate) version: i64,
    /// Client keys created or changed.
    pub(crate) client_keys: Vec<StoredClientKey>,
    /// Upstream keys added, changed or removed.
    pub(crate) upstream_keys: Vec<UpstreamKeyRecord>,
    /// Rollouts changed.
    pub(crate) rollouts: Vec<RolloutRecord>,
    /// Key facts other instances published, oldest first, with their
    /// change numbers.
    pub(crate) facts: Vec<(i64, KeyFact)>,
}

impl PostgresStore {
    /// The origin id of this instance's outbox: what names its records and
    /// its facts.
    pub(crate) fn origin(&self) -> &str {
        self.inner.outbox.origin()
    }

    /// Publishes facts this instance learned, in one statement.
    pub(crate) async fn publish_facts(&self, at: i64, facts: &[KeyFact]) -> Result<(), StoreError> {
        if facts.is_empty() {
            return Ok(());
        }
        let origin = self.origin().to_owned();
        let ids: Vec<&str> = facts.iter().map(|f| f.key_id.as_str()).collect();
        let kinds: Vec<&str> = facts.iter().map(|f| f.kind.as_str()).collect();
        let until: Vec<Option<i64>> = facts.iter().map(|f| f.until_ms).collect();
        let causes: Vec<Option<&str>> = facts.iter().map(|f| f.cause.as_deref()).collect();
        self.inner
            .with(async |c| {
                c.execute(
                    "INSERT INTO key_facts (origin, at, key_id, fact, until_ms, cause)
                     SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::bigint[],
                         $6::text[])",
                    &[&origin, &at, &ids, &kinds, &until, &causes],
                )
                .await
                .map(drop)
                .map_err(StoreError::from)
            })
            .await
    }

    /// The newest change number (one cheap statement: most polls stop here).
    pub(crate) async fn latest_change(&self) -> Result<i64, StoreError> {
        self.inner
            .with(async |c| {
                let row = c
                    .query_one(
                        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END
                         FROM keypool_changes",
                        &[],
                    )
                    .await?;
                Ok(row.try_get(0)?)
            })
            .await
    }

    /// What changed after change number `after`: states, and the facts other
    /// instances published at or after `facts_from` (Unix milliseconds).
    pub(crate) async fn changes_since(
        &self,
        after: i64,
        facts_from: i64,
    ) -> Result<Changes, StoreError> {
        let origin = self.origin().to_owned();
        self.inner
            .with(async |c| {
                let keys = c
                    .query(
                        "SELECT id, name, team, hash, scopes, models, rate_limit, created_at,
                                revoke_at, rotated_to, version
                         FROM client_keys WHERE version > $1 ORDER BY version",
                        &[&after],
                    )
                    .await?;
                let upstream = c
                    .query(
                        &format!(
                            "SELECT {}, version FROM upstream_keys WHERE version > $1
                             ORDER BY version",
                            read::UPSTREAM_COLUMNS
                        ),
                        &[&after],
                    )
                    .await?;
                let facts = c
                    .query(
                        "SELECT key_id, fact, until_ms, cause, version FROM key_facts
                         WHERE version > $1 AND origin <> $2 AND at >= $3 ORDER BY version",
                        &[&after, &origin, &facts_from],
                    )
                    .await?;
                let rollouts = if after == 0 || any_rollout_after(c, after).await? {
                    read::rollouts(c).await?
                } else {
                    Vec::new()
                };
                let newest = |rows: &[tokio_postgres::Row], i: usize| {
                    rows.iter()
                        .filter_map(|r| r.try_get::<_, i64>(i).ok())
                        .max()
                        .unwrap_or(after)
                };
                Ok(Changes {
                    version: newest(&keys, 10)
                        .max(newest(&upstream, 20))
                        .max(newest(&facts, 4)),
                    client_keys: read::decoded("client key", keys.iter().map(read::client_key)),
                    upstream_keys: read::decoded(
                        "upstream key",
                        upstream.iter().map(read::upstream_key),
                    ),
                    rollouts,
                    facts: read::decoded("key fact", facts.iter().map(fact)),
                })
            })
            .await
    }

    /// A connection listening for changes (see [`Listener`]).
    pub(crate) async fn listen(&self) -> Result<Listener, StoreError> {
        self.inner.target.listen(CHANNEL, self.inner.timeout).await
    }
}

async fn any_rollout_after(c: &tokio_postgres::Client, after: i64) -> Result<bool, StoreError> {
    let params: [&(dyn ToSql + Sync); 1] = [&after];
    let row = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM rollouts WHERE version > $1)",
            &params,
        )
        .await?;
    Ok(row.try_get(0)?)
}

fn fact(r: &tokio_postgres::Row) -> Result<(i64, KeyFact), String> {
    let column = |e: tokio_postgres::Error| format!("a column cannot be read: {e}");
    let kind: &str = r.try_get(1).map_err(column)?;
    Ok((
        r.try_get(4).map_err(column)?,
        KeyFact {
            key_id: r.try_get(0).map_err(column)?,
            kind: FactKind::parse(kind).ok_or_else(|| format!("unknown fact {kind:?}"))?,
            until_ms: r.try_get(2).map_err(column)?,
            cause: r.try_get(3).map_err(column)?,
        },
    ))
}

impl Listener {
    /// Takes the leader's lock if no other session holds it; whether this
    /// session holds it now. The lock goes with the session: when this
    /// instance dies or its connection breaks, another can take it.
    pub(crate) async fn try_lead(&self) -> Result<bool, StoreError> {
        let row = self
            .client()
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await?;
        Ok(row.try_get(0)?)
    }
}
