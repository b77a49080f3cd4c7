//! Budgets shared by the instances: moves between a limit's pool and an
//! instance's share, and what an instance holds and spent (read back after
//! a restart).

use budget::Money;

use super::PostgresStore;
use crate::store::StoreError;

/// Which usage records count against a limit: every one, or those of one
/// team, client key (by name) or model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SpendScope {
    /// Every record.
    All,
    /// One team's.
    Team(String),
    /// One client key's, by name.
    Key(String),
    /// One model's.
    Model(String),
}

impl SpendScope {
    /// The condition on `usage` (its value as `$3`), if any.
    fn condition(&self) -> (&'static str, Option<String>) {
        match self {
            SpendScope::All => ("", None),
            SpendScope::Team(t) => (" AND team = $3", Some(t.clone())),
            SpendScope::Key(k) => (" AND key_name = $3", Some(k.clone())),
            SpendScope::Model(m) => (" AND model = $3", Some(m.clone())),
        }
    }
}

impl PostgresStore {
    /// Applies one move of `amount` micro-dollars (a grant when positive, a
    /// return when negative) between the pool `key` (whose limit is
    /// `limit`) and this instance's share, once whatever how often `id` is
    /// sent; returns what was moved.
    pub(crate) async fn move_share(
        &self,
        key: &str,
        limit: Money,
        id: &str,
        amount: i64,
        at: i64,
    ) -> Result<Money, StoreError> {
        let member = self.origin().to_owned();
        let limit = i64::try_from(limit.micros()).unwrap_or(i64::MAX);
        self.inner
            .with(async |c| {
                let row = c
                    .query_one(
                        "SELECT keypool_move($1, $2, $3, $4, $5, $6)",
                        &[&key, &limit, &member, &id, &amount, &at],
                    )
                    .await?;
                let moved: i64 = row.try_get(0)?;
                Ok(Money::from_micros(u64::try_from(moved).unwrap_or(0)))
            })
            .await
    }

    /// What this instance holds of the pool `key`, by its moves.
    pub(crate) async fn held(&self, key: &str) -> Result<Money, StoreError> {
        let member = self.origin().to_owned();
        self.inner
            .with(async |c| {
                let row = c
                    .query_one(
                        "SELECT COALESCE(sum(amount), 0)::bigint FROM budget_moves
                         WHERE member = $1 AND key = $2",
                        &[&member, &key],
                    )
                    .await?;
                let held: i64 = row.try_get(0)?;
                Ok(Money::from_micros(u64::try_from(held).unwrap_or(0)))
            })
            .await
    }

    /// What this instance's usage records in `scope` cost from `from`
    /// (Unix milliseconds) on, its outbox shipped first.
    pub(crate) async fn own_spend(
        &self,
        from: i64,
        scope: &SpendScope,
    ) -> Result<Money, StoreError> {
        self.flush().await?;
        let origin = self.origin().to_owned();
        let (condition, value) = scope.condition();
        let sql = format!(
            "SELECT COALESCE(sum(cost_micros), 0)::bigint FROM usage
             WHERE origin = $1 AND at >= $2{condition}"
        );
        self.inner
            .with(async |c| {
                let row = match &value {
                    Some(v) => c.query_one(&sql, &[&origin, &from, v]).await?,
                    None => c.query_one(&sql, &[&origin, &from]).await?,
                };
                let spent: i64 = row.try_get(0)?;
                Ok(Money::from_micros(u64::try_from(spent).unwrap_or(0)))
            })
            .await
    }

    /// Makes the pool `key` if it does not exist yet, with what the usage
    /// records in `scope` from `from` on already cost counted as granted:
    /// each origin's part as a move of its own, so that an instance reads
    /// it back as held and spent. Without this, a pool made in the middle
    /// of a period (the first start on Postgres) would grant the whole
    /// limit again.
    pub(crate) async fn ensure_pool(
        &self,
        key: &str,
        limit: Money,
        from: i64,
        scope: &SpendScope,
    ) -> Result<(), StoreError> {
        self.flush().await?;
        let (condition, value) = scope.condition();
        let sql = format!(
            "INSERT INTO budget_moves (id, key, member, amount, at)
             SELECT 'opening|' || origin || '|' || $1, $1, origin, sum(cost_micros), $2
             FROM usage WHERE at >= $2{condition}
             GROUP BY origin"
        );
        let limit = i64::try_from(limit.micros()).unwrap_or(i64::MAX);
        let mut client = self.inner.client().await?;
        self.inner.sent(5);
        let open = async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
                .await?;
            let exists = tx
                .query_opt("SELECT 1 FROM budget_pools WHERE key = $1", &[&key])
                .await?
                .is_some();
            if !exists {
                match &value {
                    Some(v) => tx.execute(&sql, &[&key, &from, v]).await?,
                    None => tx.execute(&sql, &[&key, &from]).await?,
                };
                tx.execute(
                    "INSERT INTO budget_pools (key, limit_micros, granted)
                     SELECT $1, $2, COALESCE(sum(amount), 0) FROM budget_moves WHERE key = $1",
                    &[&key, &limit],
                )
                .await?;
            }
            tx.commit().await
        };
        match tokio::time::timeout(self.inner.timeout, open).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(self.inner.timed_out()),
        }
    }

    /// Tells the other instances that this one is short on the pool `key`:
    /// they hand back what they hold free of it.
    pub(crate) async fn announce_short(&self, key: &str) -> Result<(), StoreError> {
        self.inner
            .with(async |c| {
                c.execute(
                    "SELECT pg_notify($1, $2)",
                    &[&super::connect::SHORT_CHANNEL, &key],
                )
                .await?;
                Ok(())
            })
            .await
    }
}
