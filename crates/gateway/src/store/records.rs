//! What a store keeps: one typed record per kind of fact.

use keypool_core::SavedKey;

/// A client (team) key as stored: its hash, never its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredClientKey {
    /// Stable id (`key_…`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its team.
    pub team: Option<String>,
    /// SHA-256 of the secret, lowercase hex.
    pub hash: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Allowed models; empty = all.
    pub models: Vec<String>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Refused from this time on (Unix milliseconds), if set.
    pub revoke_at: Option<i64>,
    /// The key that replaced it, after a rotation.
    pub rotated_to: Option<String>,
}

/// One settled request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// When it was answered (Unix milliseconds).
    pub at: i64,
    /// The client key's id (`None` without authentication or for a config key).
    pub key_id: Option<String>,
    /// The client key's name.
    pub key_name: Option<String>,
    /// The client's team.
    pub team: Option<String>,
    /// The provider that answered.
    pub provider: String,
    /// The upstream key that answered, by name.
    pub upstream_key: String,
    /// The model that answered.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
    /// Of the prompt tokens, those the provider served from its cache.
    pub cached_tokens: u64,
    /// Of the prompt tokens, those the provider wrote to its cache.
    pub cache_write_tokens: u64,
    /// Of the completion tokens, those spent reasoning.
    pub reasoning_tokens: u64,
}

/// Requests, tokens and cost added up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
    /// Of the prompt tokens, those the provider served from its cache.
    pub cached_tokens: u64,
    /// Of the prompt tokens, those the provider wrote to its cache.
    pub cache_write_tokens: u64,
    /// Of the completion tokens, those spent reasoning.
    pub reasoning_tokens: u64,
}

impl Totals {
    /// Adds `other` in, saturating.
    pub fn add(&mut self, other: Totals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
    }
}

impl From<&UsageRecord> for Totals {
    fn from(u: &UsageRecord) -> Self {
        Totals {
            requests: 1,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_micros: u.cost_micros,
            cached_tokens: u.cached_tokens,
            cache_write_tokens: u.cache_write_tokens,
            reasoning_tokens: u.reasoning_tokens,
        }
    }
}

/// One line of `GET /v1/usage`: totals per client key, team and model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageLine {
    /// The client key's id (`None` for a key from the config file).
    pub key_id: Option<String>,
    /// The client key's name.
    pub key_name: Option<String>,
    /// The team.
    pub team: Option<String>,
    /// The model.
    pub model: String,
    /// What it added up to.
    pub totals: Totals,
}

/// What `GET /v1/usage` filters on; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// One client key.
    pub key_id: Option<String>,
    /// One team.
    pub team: Option<String>,
    /// One model.
    pub model: Option<String>,
    /// From (Unix milliseconds, inclusive).
    pub from: Option<i64>,
    /// To (Unix milliseconds, exclusive).
    pub to: Option<i64>,
}

/// Spend in one hour per upstream key, client key, team and model: enough
/// to rebuild the budget's periods and the keys' daily counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendLine {
    /// The start of the hour (Unix milliseconds).
    pub hour: i64,
    /// The provider (empty where a store does not keep it).
    pub provider: String,
    /// The upstream key (empty where a store does not keep it).
    pub upstream_key: String,
    /// The client key's name.
    pub key_name: Option<String>,
    /// The team.
    pub team: Option<String>,
    /// The model.
    pub model: String,
    /// What it added up to.
    pub totals: Totals,
}

/// One management action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// When (Unix milliseconds).
    pub at: i64,
    /// Who: the master key, or an admin client key's name.
    pub actor: String,
    /// What, e.g. `client_key.create`.
    pub action: String,
    /// On what (an id or a name).
    pub target: String,
    /// The view of the target before, as the API showed it (never a secret).
    pub before: Option<serde_json::Value>,
    /// The view of the target after, as the API showed it (never a secret).
    pub after: Option<serde_json::Value>,
}

/// Where an upstream key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyOrigin {
    /// The configuration file: its secret is read from there at start-up.
    Config,
    /// Added or rotated in over the API: its secret is stored, sealed.
    Runtime,
}

/// What an upstream key serves with besides its secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySettings {
    /// 0 = primary; higher tiers serve only when lower ones cannot.
    pub tier: u8,
    /// Weight for the weighted strategy.
    pub weight: u32,
    /// Its limits.
    pub limits: keypool_core::Limits,
    /// The only models it is picked for (`None`: every model its provider serves).
    pub models: Option<Vec<String>>,
}

/// The stable id of the key of `provider` named `name` in the configuration
/// file: the same at every start (names are unique within a provider there).
/// Keys added or rotated in at runtime get random ids instead.
pub fn config_key_id(provider: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{provider}\n{name}").as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("uk_{hex}")
}

/// An upstream key, by its stable id (names are labels, and two keys share
/// one during a rotation's grace period).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamKeyRecord {
    /// Stable id (`uk_…`).
    pub id: String,
    /// The provider.
    pub provider: String,
    /// Its name.
    pub name: String,
    /// Where it came from.
    pub origin: KeyOrigin,
    /// SHA-256 of the secret, hex: tells a configured key whose secret the
    /// file changed (its stored state then no longer applies). Empty when
    /// unknown (a key saved by an older gateway).
    pub fingerprint: String,
    /// A runtime key's secret, sealed (`crate::secrets`); never a config key's.
    pub sealed_secret: Option<Vec<u8>>,
    /// What it serves with (a runtime key is added back with these).
    pub settings: KeySettings,
    /// Its state and today's counters, once saved.
    pub saved: Option<SavedKey>,
    /// It left the pool (removed, or revoked after a rotation's grace).
    pub removed: bool,
}

/// A canary rollout's state, by baseline model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutRecord {
    /// The baseline model.
    pub model: String,
    /// What of the rollout outlives a restart.
    pub saved: canary::SavedRollout,
}

/// What part of the configuration a [`SettingRecord`] changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SettingKind {
    /// The limits of one budget scope (named `global`, `team:…`, `key:…`
    /// or `model:…`); the value is a `[[budget.limits]]` entry.
    BudgetLimit,
    /// A rollout's allow-list, deny-list and rules (named by its model).
    CanaryOverrides,
    /// A rollout's analysis (named by its model); the value is a
    /// `[canary] analysis` table.
    CanaryAnalysis,
}

impl SettingKind {
    /// Every kind.
    pub const ALL: [SettingKind; 3] = [
        SettingKind::BudgetLimit,
        SettingKind::CanaryOverrides,
        SettingKind::CanaryAnalysis,
    ];

    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            SettingKind::BudgetLimit => "budget_limit",
            SettingKind::CanaryOverrides => "canary_overrides",
            SettingKind::CanaryAnalysis => "canary_analysis",
        }
    }

    /// The kind named `s` in the store.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An operator's change to part of the configuration, made through the
/// management API while serving. It outlives restarts and reaches every
/// instance sharing the store, and wins over the config file until the
/// operator changes it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingRecord {
    /// What it changes.
    pub kind: SettingKind,
    /// Which one (a budget scope, a rollout's model).
    pub name: String,
    /// The new value, in the config file's shape (as JSON); `None` when the
    /// operator removed it (the config file's value does not come back).
    pub value: Option<serde_json::Value>,
    /// When (Unix milliseconds).
    pub at: i64,
}

/// Which upstream key made an upstream id (`resp_…`, `file-…`, `batch_…`,
/// `vs_…`): a request naming the id goes to that key, which alone can use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRecord {
    /// The id.
    pub id: String,
    /// The key's provider.
    pub provider: String,
    /// The key, by name.
    pub key: String,
    /// When the id was made (Unix milliseconds).
    pub at: i64,
}

/// What a store holds that the gateway applies at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Client keys created through the API, oldest first.
    pub client_keys: Vec<StoredClientKey>,
    /// Upstream keys: their states, and the keys added at runtime.
    pub upstream_keys: Vec<UpstreamKeyRecord>,
    /// Rollout states.
    pub rollouts: Vec<RolloutRecord>,
    /// Operators' changes to the configuration, by kind and name.
    pub settings: Vec<SettingRecord>,
}

/// What one instance learned about an upstream key that the others must
/// honour (see [`KeyFact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FactKind {
    /// The upstream said to wait (429, `Retry-After`): resting until
    /// `until_ms`. A later time extends a rest, an earlier one never
    /// shortens it.
    CoolingDown,
    /// Its quota is spent until `until_ms`.
    Exhausted,
    /// Disabled (the upstream refused it, or an operator), until an operator
    /// enables it.
    Disabled,
    /// An operator enabled it.
    Enabled,
}

impl FactKind {
    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            FactKind::CoolingDown => "cooling_down",
            FactKind::Exhausted => "exhausted",
            FactKind::Disabled => "disabled",
            FactKind::Enabled => "enabled",
        }
    }

    /// The inverse of [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cooling_down" => FactKind::CoolingDown,
            "exhausted" => FactKind::Exhausted,
            "disabled" => FactKind::Disabled,
            "enabled" => FactKind::Enabled,
            _ => return None,
        })
    }
}

/// A fact about an upstream key, shared by the instances of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyFact {
    /// The key's stable id.
    pub key_id: String,
    /// What was learned.
    pub kind: FactKind,
    /// Until when (cooling down, exhausted; Unix milliseconds).
    pub until_ms: Option<i64>,
    /// Why (a cooldown's or a disablement's cause, as the store spells it).
    pub cause: Option<String>,
}
