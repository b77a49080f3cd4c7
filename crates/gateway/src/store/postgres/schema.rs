//! The Postgres schema and its migrations, versioned in `keypool_schema`.
//!
//! Every saved state (client keys, upstream keys, rollouts) and every key
//! fact gets a change number from one sequence, `keypool_changes`, and a
//! statement trigger notifies `keypool_changes` listeners: an instance
//! follows the others by reading what changed after the last number it saw.
//!
//! Migrations run under a transaction-scoped advisory lock, so gateways
//! starting at once on an empty database take turns: the first creates the
//! tables, the others find them at the newest version. A database whose
//! version is newer than [`LATEST`] was migrated by a newer gateway and is
//! refused rather than misread.

use deadpool_postgres::Client;

use crate::store::StoreError;

/// The advisory lock key every gateway takes to migrate ("keypool" in
/// ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x006b_6579_706f_6f6c;

/// The newest schema version this gateway knows.
pub(crate) const LATEST: i32 = 7;

/// Each version's statements, in order.
const MIGRATIONS: [(i32, &str); 7] = [
    (1, V1),
    (2, V2_BUDGET_SHARES),
    (3, V3_MEMBERS_AND_RATES),
    (4, V4_MOVES_SERIALIZED),
    (5, V5_SETTINGS),
    (6, V6_PINS),
    (7, V7_CACHE_AND_REASONING_TOKENS),
];

const V1: &str = "
CREATE SEQUENCE keypool_changes;
CREATE TABLE client_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    team TEXT,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    models TEXT NOT NULL,
    rate_limit BIGINT,
    created_at BIGINT NOT NULL,
    revoke_at BIGINT,
    rotated_to TEXT,
    version BIGINT NOT NULL DEFAULT nextval('keypool_changes')
);
CREATE TABLE upstream_keys (
    id TEXT PRIMARY KEY,
    added BIGSERIAL,
    provider TEXT NOT NULL,
    name TEXT NOT NULL,
    origin TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    secret BYTEA,
    tier SMALLINT NOT NULL,
    weight BIGINT NOT NULL,
    tokens_per_day BIGINT,
    requests_per_day BIGINT,
    requests_per_minute BIGINT,
    tokens_per_minute BIGINT,
    max_in_flight BIGINT,
    removed BOOLEAN NOT NULL,
    state TEXT,
    until_ms BIGINT,
    cause TEXT,
    day BIGINT,
    requests_today BIGINT,
    tokens_today BIGINT,
    version BIGINT NOT NULL DEFAULT nextval('keypool_changes')
);
CREATE TABLE rollouts (
    model TEXT PRIMARY KEY,
    phase TEXT NOT NULL,
    phase_model TEXT,
    phase_reason TEXT,
    enabled BOOLEAN NOT NULL,
    step BIGINT NOT NULL,
    step_started_ms BIGINT,
    promoted BOOLEAN NOT NULL,
    version BIGINT NOT NULL DEFAULT nextval('keypool_changes')
);
CREATE TABLE rollout_arms (
    model TEXT NOT NULL,
    position BIGINT NOT NULL,
    candidate TEXT NOT NULL,
    buckets TEXT NOT NULL,
    PRIMARY KEY (model, position)
);
CREATE TABLE usage (
    origin TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    key_id TEXT,
    key_name TEXT,
    team TEXT,
    provider TEXT NOT NULL,
    upstream_key TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (origin, seq)
);
CREATE INDEX usage_at ON usage (at);
CREATE TABLE usage_hours (
    hour BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    team TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_key TEXT NOT NULL,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (hour, key_id, key_name, team, model, provider, upstream_key)
);
CREATE TABLE audit (
    origin TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT,
    PRIMARY KEY (origin, seq)
);
CREATE INDEX audit_at ON audit (at);
CREATE TABLE key_facts (
    version BIGINT PRIMARY KEY DEFAULT nextval('keypool_changes'),
    origin TEXT NOT NULL,
    at BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    fact TEXT NOT NULL,
    until_ms BIGINT,
    cause TEXT
);
CREATE INDEX key_facts_at ON key_facts (at);
CREATE FUNCTION keypool_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keypool_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER client_keys_changed AFTER INSERT OR UPDATE ON client_keys
    FOR EACH STATEMENT EXECUTE FUNCTION keypool_notify();
CREATE TRIGGER upstream_keys_changed AFTER INSERT OR UPDATE ON upstream_keys
    FOR EACH STATEMENT EXECUTE FUNCTION keypool_notify();
CREATE TRIGGER rollouts_changed AFTER INSERT OR UPDATE ON rollouts
    FOR EACH STATEMENT EXECUTE FUNCTION keypool_notify();
CREATE TRIGGER key_facts_added AFTER INSERT ON key_facts
    FOR EACH STATEMENT EXECUTE FUNCTION keypool_notify();
";

/// Budgets shared by the instances: a pool per limit and period (`granted`
/// never passes `limit_micros`), and every move of money between a pool
/// and an instance's share, by id, so that a move sent twice counts once
/// and an instance reads back what it holds after a restart.
/// `keypool_move` applies one move atomically: a grant adds what the pool
/// has room for (up to what was asked), a return takes back up to what
/// was granted.
const V2_BUDGET_SHARES: &str = "
CREATE TABLE budget_pools (
    key TEXT PRIMARY KEY,
    limit_micros BIGINT NOT NULL,
    granted BIGINT NOT NULL
);
CREATE TABLE budget_moves (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    member TEXT NOT NULL,
    amount BIGINT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX budget_moves_member ON budget_moves (member, key);
CREATE FUNCTION keypool_move(p_key TEXT, p_limit BIGINT, p_member TEXT, p_id TEXT,
                             p_amount BIGINT, p_at BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    moved BIGINT;
BEGIN
    SELECT amount INTO moved FROM budget_moves WHERE id = p_id;
    IF FOUND THEN
        RETURN abs(moved);
    END IF;
    INSERT INTO budget_pools (key, limit_micros, granted) VALUES (p_key, p_limit, 0)
        ON CONFLICT (key) DO UPDATE SET limit_micros = p_limit;
    SELECT CASE WHEN p_amount >= 0
                THEN GREATEST(LEAST(p_amount, limit_micros - granted), 0)
                ELSE -LEAST(-p_amount, granted) END
        INTO moved FROM budget_pools WHERE key = p_key FOR UPDATE;
    UPDATE budget_pools SET granted = granted + moved WHERE key = p_key;
    INSERT INTO budget_moves (id, key, member, amount, at)
        VALUES (p_id, p_key, p_member, moved, p_at);
    RETURN abs(moved);
END
$$;
";

/// The instances alive (each says so at every poll), and client keys'
/// requests per minute window: a pool per key and window that instances
/// take admissions from (`keypool_take`: never past the limit).
const V3_MEMBERS_AND_RATES: &str = "
CREATE TABLE cluster_members (
    member TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE rate_pools (
    key_id TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    limit_count BIGINT NOT NULL,
    taken BIGINT NOT NULL,
    PRIMARY KEY (key_id, window_start)
);
CREATE FUNCTION keypool_take(p_key TEXT, p_window BIGINT, p_limit BIGINT, p_want BIGINT)
RETURNS TABLE (took BIGINT, left_over BIGINT) LANGUAGE plpgsql AS $$
DECLARE
    lim BIGINT;
    tk BIGINT;
    t BIGINT;
BEGIN
    INSERT INTO rate_pools (key_id, window_start, limit_count, taken)
        VALUES (p_key, p_window, p_limit, 0)
        ON CONFLICT (key_id, window_start) DO NOTHING;
    IF FOUND THEN
        DELETE FROM rate_pools WHERE key_id = p_key AND window_start < p_window;
    END IF;
    SELECT limit_count, taken INTO lim, tk FROM rate_pools
        WHERE key_id = p_key AND window_start = p_window FOR UPDATE;
    t := GREATEST(LEAST(p_want, lim - tk), 0);
    UPDATE rate_pools SET taken = taken + t WHERE key_id = p_key AND window_start = p_window;
    took := t;
    left_over := lim - tk - t;
    RETURN NEXT;
END
$$;
";

/// A move sent twice at once (a request's cover and the background
/// refill resending the same move) looked its name up before either had
/// locked the pool, so the second failed on the name's uniqueness and its
/// sender saw an error. The pool's row is now locked first: the second
/// finds the first's move and answers with its amount.
const V4_MOVES_SERIALIZED: &str = "
CREATE OR REPLACE FUNCTION keypool_move(p_key TEXT, p_limit BIGINT, p_member TEXT, p_id TEXT,
                                        p_amount BIGINT, p_at BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    moved BIGINT;
    held BIGINT;
BEGIN
    INSERT INTO budget_pools (key, limit_micros, granted) VALUES (p_key, p_limit, 0)
        ON CONFLICT (key) DO NOTHING;
    SELECT granted INTO held FROM budget_pools WHERE key = p_key FOR UPDATE;
    SELECT amount INTO moved FROM budget_moves WHERE id = p_id;
    IF FOUND THEN
        RETURN abs(moved);
    END IF;
    moved := CASE WHEN p_amount >= 0
                  THEN GREATEST(LEAST(p_amount, p_limit - held), 0)
                  ELSE -LEAST(-p_amount, held) END;
    UPDATE budget_pools SET limit_micros = p_limit, granted = granted + moved
        WHERE key = p_key;
    INSERT INTO budget_moves (id, key, member, amount, at)
        VALUES (p_id, p_key, p_member, moved, p_at);
    RETURN abs(moved);
END
$$;
";

/// Operators' changes to the configuration (budget limits, canary overrides
/// and analysis), by kind and name, followed like the other saved states;
/// `value` is JSON in the config file's shape, NULL for a removed entry.
const V5_SETTINGS: &str = "
CREATE TABLE settings (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT,
    at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT nextval('keypool_changes'),
    PRIMARY KEY (kind, name)
);
CREATE TRIGGER settings_changed AFTER INSERT OR UPDATE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION keypool_notify();
";

/// Which key made each upstream id, kept 30 days; read by id when an
/// instance meets an id another made.
const V6_PINS: &str = "
CREATE TABLE pins (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    key TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX pins_at ON pins (at);
";

/// The prompt tokens a provider served from or wrote to its cache, and the
/// completion tokens spent reasoning, per record and per hour (0 for what
/// was recorded before); the models an upstream key is kept to (a JSON
/// array; NULL: all).
const V7_CACHE_AND_REASONING_TOKENS: &str = "
ALTER TABLE usage ADD COLUMN cached_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_hours ADD COLUMN cached_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE upstream_keys ADD COLUMN models TEXT;
";

/// Brings the database to [`LATEST`]: each migration with its version bump
/// in one transaction, under the migration lock.
pub(crate) async fn migrate(client: &mut Client, what: &str) -> Result<(), StoreError> {
    let engine = |e: tokio_postgres::Error| StoreError::Engine(e.to_string());
    let tx = client.transaction().await.map_err(engine)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(engine)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS keypool_schema (version INTEGER NOT NULL)")
        .await
        .map_err(engine)?;
    let found: i32 = tx
        .query_opt("SELECT version FROM keypool_schema", &[])
        .await
        .map_err(engine)?
        .map_or(0, |r| r.get(0));
    if found > LATEST {
        return Err(StoreError::SchemaTooNew {
            what: what.to_owned(),
            found: u32::try_from(found).unwrap_or(0),
            known: u32::try_from(LATEST).unwrap_or(0),
        });
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        let failed = |e: tokio_postgres::Error| StoreError::Migration {
            what: what.to_owned(),
            version: u32::try_from(*version).unwrap_or(0),
            reason: e.to_string(),
        };
        tx.batch_execute(statements).await.map_err(failed)?;
        tx.execute("DELETE FROM keypool_schema", &[])
            .await
            .map_err(failed)?;
        tx.execute(
            "INSERT INTO keypool_schema (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(engine)
}
