//! What instances sharing the database tell each other: key facts, the
//! changes since a change number, notifications, and the leader's lock.

use tokio_postgres::types::ToSql;

use super::connect::Listener;
use super::{PostgresStore, read};
use crate::store::StoreError;
use crate::store::records::{
    FactKind, KeyFact, RolloutRecord, SettingRecord, StoredClientKey, UpstreamKeyRecord,
};

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
    /// Operators' changes to the configuration.
    pub(crate) settings: Vec<SettingRecord>,
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

    /// Says this instance (named `instance`) is alive, and returns the
    /// newest change number and how many instances were alive in the last
    /// `alive_ms` (this one included): one statement, at every poll.
    pub(crate) async fn heartbeat(
        &self,
        instance: &str,
        alive_ms: i64,
    ) -> Result<(i64, u32), StoreError> {
        let member = self.origin().to_owned();
        let alive = f64::from(u32::try_from(alive_ms).unwrap_or(u32::MAX)) / 1000.0;
        self.inner
            .with(async |c| {
                let row = c
                    .query_one(
                        "WITH beat AS (
                             INSERT INTO cluster_members (member, instance, seen_at)
                             VALUES ($1, $2, now())
                             ON CONFLICT (member) DO UPDATE SET instance = $2, seen_at = now()
                         )
                         SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END
                                 FROM keypool_changes),
                                (SELECT count(*) FROM cluster_members
                                 WHERE member <> $1
                                   AND seen_at > now() - make_interval(secs => $3))",
                        &[&member, &instance, &alive],
                    )
                    .await?;
                let others: i64 = row.try_get(1)?;
                Ok((row.try_get(0)?, u32::try_from(others).unwrap_or(0) + 1))
            })
            .await
    }

    /// Takes up to `want` admissions of the key `id` (limit: `limit` a
    /// window) from its pool for the window starting at `window`; returns
    /// how many were taken and how many are left, within `deadline`.
    pub(crate) async fn take_rate(
        &self,
        id: &str,
        window: i64,
        (limit, want): (u32, u32),
        deadline: std::time::Duration,
    ) -> Result<(u32, u32), StoreError> {
        let take = self.inner.with(async |c| {
            let row = c
                .query_one(
                    "SELECT took, left_over FROM keypool_take($1, $2, $3, $4)",
                    &[&id, &window, &i64::from(limit), &i64::from(want)],
                )
                .await?;
            let (took, left): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
            Ok((count(took), count(left)))
        });
        tokio::time::timeout(deadline, take)
            .await
            .map_err(|_| self.inner.timed_out())?
    }

    /// What changed after change number `after`: states, and the facts other
    /// instances published at or after `facts_from` (Unix milliseconds).
    pub(crate) async fn changes_since(
        &self,
        after: i64,
        facts_from: i64,
    ) -> Result<Changes, StoreError> {
        let origin = self.origin().to_owned();
        // Client keys, upstream keys, facts, whether rollouts or settings
        // changed (and then the rollouts and their arms, the settings).
        self.inner.sent(4);
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
                let (rollouts_at, settings_at) = newest_after(c, after).await?;
                let rollouts = if after == 0 || rollouts_at.is_some() {
                    read::rollouts(c).await?
                } else {
                    Vec::new()
                };
                let settings = if settings_at.is_some() {
                    read::settings(c, after).await?
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
                        .max(newest(&facts, 4))
                        .max(rollouts_at.unwrap_or(after))
                        .max(settings_at.unwrap_or(after)),
                    client_keys: read::decoded("client key", keys.iter().map(read::client_key)),
                    upstream_keys: read::decoded(
                        "upstream key",
                        upstream.iter().map(read::upstream_key),
                    ),
                    rollouts,
                    settings,
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

/// The newest change numbers after `after` of the rollouts and of the
/// settings (`None` where nothing changed), in one statement.
async fn newest_after(
    c: &tokio_postgres::Client,
    after: i64,
) -> Result<(Option<i64>, Option<i64>), StoreError> {
    let params: [&(dyn ToSql + Sync); 1] = [&after];
    let row = c
        .query_one(
            "SELECT (SELECT max(version) FROM rollouts WHERE version > $1),
                    (SELECT max(version) FROM settings WHERE version > $1)",
            &params,
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
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
