//! What the API and the dashboard show, as types: one view per thing,
//! serialized the same way wherever it appears. No view holds a secret,
//! except [`UpstreamKeyView::secret`], which is redacted (`sk-…f00d`) and
//! shown only by the management API.

use std::time::SystemTime;

use budget::Money;
use gateway_client::Snapshot;
use keypool_core::KeySnapshot;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::auth::ClientKey;
use crate::keys::KeyDirectory;
use crate::store::{AuditEntry, UsageLine};

/// `{"object": "list", "data": [...]}`, OpenAI's list shape.
#[derive(Debug, Serialize)]
pub(crate) struct List<T> {
    object: &'static str,
    data: Vec<T>,
}

impl<T> List<T> {
    pub(crate) fn of(data: Vec<T>) -> Self {
        List {
            object: "list",
            data,
        }
    }
}

/// Seconds of Unix milliseconds.
fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// An amount as an exact decimal JSON number of dollars (`0.000123`):
/// written from the integer, never through a float.
#[derive(Debug)]
pub(crate) struct DollarsView(Money);

impl Serialize for DollarsView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.decimal()).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// Whether a client key serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyStatus {
    /// It serves.
    Active,
    /// It serves until its revocation time.
    Revoking,
    /// It is refused.
    Revoked,
}

/// A client key as the API shows it: never its secret.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ClientKeyView {
    pub(crate) id: Option<String>,
    object: &'static str,
    pub(crate) name: String,
    team: Option<String>,
    scopes: Vec<String>,
    models: Vec<String>,
    rate_limit: Option<u32>,
    created_at: i64,
    revoke_at: Option<i64>,
    pub(crate) status: KeyStatus,
    /// `config` for a key from the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
}

impl ClientKeyView {
    pub(crate) fn of(k: &ClientKey, now_ms: i64) -> Self {
        let status = match k.revoke_at() {
            Some(t) if t <= now_ms => KeyStatus::Revoked,
            Some(_) => KeyStatus::Revoking,
            None => KeyStatus::Active,
        };
        ClientKeyView {
            id: k.id.clone(),
            object: "client_key",
            name: k.name.clone(),
            team: k.team.clone(),
            scopes: k.scopes.clone(),
            models: k.models.clone(),
            rate_limit: k.rate_limit,
            created_at: secs(k.created_at),
            revoke_at: k.revoke_at().map(secs),
            status,
            source: k.id.is_none().then_some("config"),
        }
    }
}

/// A client key just created or rotated: its view and, this once, its secret.
#[derive(Debug, Serialize)]
pub(crate) struct IssuedKeyView {
    #[serde(flatten)]
    pub(crate) key: ClientKeyView,
    /// The secret, shown once.
    #[serde(rename = "key")]
    pub(crate) secret: SecretOnce,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rotated_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) old_key_revoke_at: Option<i64>,
}

/// A new client key's secret, serialized as the field `key`; its `Debug`
/// is redacted.
pub(crate) struct SecretOnce(pub(crate) String);

impl std::fmt::Debug for SecretOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretOnce(…)")
    }
}

impl Serialize for SecretOnce {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Rotation: the old key's view and the new one's.
#[derive(Debug, Serialize)]
pub(crate) struct RotationView {
    pub(crate) old: ClientKeyView,
    pub(crate) new: ClientKeyView,
}

/// An upstream key's state and today's counters (no secret).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct UpstreamKeyView {
    /// Its stable id (`None` for a key the gateway did not add itself).
    pub(crate) id: Option<String>,
    pub(crate) name: String,
    tier: u8,
    weight: u32,
    pub(crate) state: String,
    selectable: bool,
    tokens_today: u64,
    requests_today: u32,
    tokens_percent: Option<f64>,
    tokens_per_day: Option<u64>,
    errors_today: u32,
    /// The only models it is picked for (absent: every model).
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<Vec<String>>,
}

impl UpstreamKeyView {
    pub(crate) fn of(k: &KeySnapshot, id: Option<String>) -> Self {
        UpstreamKeyView {
            id,
            name: k.name.to_string(),
            tier: k.tier,
            weight: k.weight,
            state: k.state.to_string(),
            selectable: k.selectable,
            tokens_today: k.tokens_today,
            requests_today: k.requests_today,
            tokens_percent: k.tokens_percent,
            tokens_per_day: k.limits.tokens_per_day,
            errors_today: k.errors_today,
            models: k
                .models
                .as_ref()
                .map(|m| m.iter().map(ToString::to_string).collect()),
        }
    }
}

/// An upstream key as the management API shows it: with its redacted secret.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AdminUpstreamKeyView {
    #[serde(flatten)]
    pub(crate) key: UpstreamKeyView,
    /// `sk-…f00d`.
    secret: String,
}

impl AdminUpstreamKeyView {
    pub(crate) fn of(k: &KeySnapshot, id: Option<String>) -> Self {
        AdminUpstreamKeyView {
            key: UpstreamKeyView::of(k, id),
            secret: k.secret.clone(),
        }
    }
}

/// A provider and its keys.
#[derive(Debug, Serialize)]
pub(crate) struct ProviderView {
    provider: String,
    priority: u32,
    keys: Vec<AdminUpstreamKeyView>,
}

impl ProviderView {
    pub(crate) fn all(snap: &Snapshot, ids: &KeyDirectory) -> Vec<Self> {
        snap.providers
            .iter()
            .map(|p| ProviderView {
                provider: p.name.clone(),
                priority: p.priority,
                keys: p
                    .pool
                    .keys
                    .iter()
                    .map(|k| AdminUpstreamKeyView::of(k, ids.id_of(&p.name, k.id)))
                    .collect(),
            })
            .collect()
    }
}

/// A candidate arm and its share.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CandidateView {
    model: String,
    percent: f64,
}

/// An analysis verdict and when it was reached.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct VerdictView {
    at: u64,
    verdict: canary::Verdict,
}

/// A rollout: its split, phase and latest verdict.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RolloutView {
    model: String,
    phase: String,
    enabled: bool,
    candidates: Vec<CandidateView>,
    verdict: Option<VerdictView>,
}

impl RolloutView {
    pub(crate) fn all(
        snap: &Snapshot,
        verdicts: &std::collections::BTreeMap<String, (SystemTime, canary::Verdict)>,
    ) -> Vec<Self> {
        snap.rollouts
            .iter()
            .map(|r| RolloutView {
                model: r.model.clone(),
                phase: r.phase.to_string(),
                enabled: r.enabled,
                candidates: r
                    .candidates
                    .iter()
                    .map(|c| CandidateView {
                        model: c.model.to_string(),
                        percent: f64::from(c.share.bp()) / 100.0,
                    })
                    .collect(),
                verdict: verdicts.get(&r.model).map(|(at, v)| VerdictView {
                    at: at
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    verdict: v.clone(),
                }),
            })
            .collect()
    }
}

/// One line of `GET /v1/usage`.
#[derive(Debug, Serialize)]
pub(crate) struct UsageLineView {
    key_id: Option<String>,
    key_name: Option<String>,
    team: Option<String>,
    model: String,
    requests: u64,
    prompt_tokens: u64,
    /// Of the prompt tokens, those the provider served from its cache
    /// (charged at the cached-input rate).
    cached_tokens: u64,
    /// Of the prompt tokens, those the provider wrote to its cache
    /// (charged at the cache-write rate).
    cache_write_tokens: u64,
    completion_tokens: u64,
    /// Of the completion tokens, those spent reasoning.
    reasoning_tokens: u64,
    total_tokens: u64,
    estimated_cost: DollarsView,
    estimated_cost_micros: u64,
    /// What the cached tokens saved against the model's full input rate.
    cache_saved_micros: u64,
}

/// `GET /v1/usage`: the lines and their total.
#[derive(Debug, Serialize)]
pub(crate) struct UsageView {
    usage: Vec<UsageLineView>,
    total_estimated_cost_usd: DollarsView,
    total_estimated_cost_micros: u64,
    total_prompt_tokens: u64,
    /// Of the prompt tokens, those served from a provider's cache.
    total_cached_tokens: u64,
    /// `total_cached_tokens` over `total_prompt_tokens` (0 without input).
    cached_share: f64,
    /// What the cached tokens saved against the full input rates.
    total_cache_saved_usd: DollarsView,
    total_cache_saved_micros: u64,
}

impl UsageView {
    /// The lines, with what their cached tokens saved by `saving(model,
    /// cached tokens)` in micro-dollars.
    pub(crate) fn of(lines: Vec<UsageLine>, saving: impl Fn(&str, u64) -> u64) -> Self {
        let total: u64 = lines.iter().map(|l| l.totals.cost_micros).sum();
        let prompt: u64 = lines.iter().map(|l| l.totals.prompt_tokens).sum();
        let cached: u64 = lines.iter().map(|l| l.totals.cached_tokens).sum();
        let usage: Vec<UsageLineView> = lines
            .into_iter()
            .map(|l| UsageLineView {
                cache_saved_micros: saving(&l.model, l.totals.cached_tokens),
                key_id: l.key_id,
                key_name: l.key_name,
                team: l.team,
                model: l.model,
                requests: l.totals.requests,
                prompt_tokens: l.totals.prompt_tokens,
                cached_tokens: l.totals.cached_tokens,
                cache_write_tokens: l.totals.cache_write_tokens,
                completion_tokens: l.totals.completion_tokens,
                reasoning_tokens: l.totals.reasoning_tokens,
                total_tokens: l.totals.prompt_tokens + l.totals.completion_tokens,
                estimated_cost: DollarsView(Money::from_micros(l.totals.cost_micros)),
                estimated_cost_micros: l.totals.cost_micros,
            })
            .collect();
        let saved: u64 = usage.iter().map(|l| l.cache_saved_micros).sum();
        UsageView {
            usage,
            total_estimated_cost_usd: DollarsView(Money::from_micros(total)),
            total_estimated_cost_micros: total,
            total_prompt_tokens: prompt,
            total_cached_tokens: cached,
            cached_share: if prompt == 0 {
                0.0
            } else {
                cached as f64 / prompt as f64
            },
            total_cache_saved_usd: DollarsView(Money::from_micros(saved)),
            total_cache_saved_micros: saved,
        }
    }
}

/// One audit entry.
#[derive(Debug, Serialize)]
pub(crate) struct AuditView {
    at: i64,
    actor: String,
    action: String,
    target: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
}

impl AuditView {
    pub(crate) fn of(e: AuditEntry) -> Self {
        AuditView {
            at: secs(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
        }
    }
}

/// A budget limit, for the dashboard.
#[derive(Debug, Serialize)]
pub(crate) struct LimitView {
    scope: String,
    period: String,
    limit_micros: u64,
    spent_micros: u64,
    reserved_micros: u64,
}

/// An upstream key on the dashboard: its provider and view.
#[derive(Debug, Serialize)]
pub(crate) struct DashboardKeyView {
    provider: String,
    #[serde(flatten)]
    key: UpstreamKeyView,
    /// Input tokens this key answered since the gateway started.
    prompt_tokens: u64,
    /// Of those, served from the provider's prompt cache.
    cached_tokens: u64,
    /// What the cached tokens saved against the full input rate.
    cache_saved_micros: u64,
}

/// Requests answered and failed in one bucket of the dashboard's chart.
#[derive(Debug, Serialize)]
pub(crate) struct BucketView {
    pub(crate) t: i64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
}

/// One recent event.
#[derive(Debug, Serialize)]
pub(crate) struct EventView {
    pub(crate) t: i64,
    pub(crate) text: String,
}

/// Everything the dashboard shows, at one moment.
#[derive(Debug, Serialize)]
pub(crate) struct DashboardView {
    pub(crate) now: i64,
    pub(crate) bucket_secs: i64,
    pub(crate) keys: Vec<DashboardKeyView>,
    pub(crate) canary: Vec<RolloutView>,
    pub(crate) budget: Vec<LimitView>,
    pub(crate) series: Vec<BucketView>,
    pub(crate) events: Vec<EventView>,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Whether the caller may use the management API.
    pub(crate) can_manage: bool,
}

impl DashboardKeyView {
    pub(crate) fn all(snap: &Snapshot, ids: &KeyDirectory) -> Vec<Self> {
        snap.providers
            .iter()
            .flat_map(|p| {
                p.pool.keys.iter().map(move |k| {
                    let stats = snap.stats.per_key.get(&format!("{}/{}", p.name, k.name));
                    DashboardKeyView {
                        provider: p.name.clone(),
                        key: UpstreamKeyView::of(k, ids.id_of(&p.name, k.id)),
                        prompt_tokens: stats.map_or(0, |c| c.prompt_tokens),
                        cached_tokens: stats.map_or(0, |c| c.cached_tokens),
                        cache_saved_micros: stats.map_or(0, |c| c.cache_saved_micros),
                    }
                })
            })
            .collect()
    }
}

impl LimitView {
    pub(crate) fn all(snap: &Snapshot) -> Vec<Self> {
        snap.budget
            .iter()
            .map(|b| LimitView {
                scope: b.scope.to_string(),
                period: b.period.to_string(),
                limit_micros: b.limit.micros(),
                spent_micros: b.spent.micros(),
                reserved_micros: b.reserved.micros(),
            })
            .collect()
    }
}

/// A budget limit as the management API shows it (`GET /admin/budget/limits`).
#[derive(Debug, Serialize)]
pub(crate) struct BudgetLimitView {
    /// `global`, `team`, `key` or `model`.
    scope: &'static str,
    /// The team, key or model (none for `global`).
    name: Option<String>,
    period: String,
    limit_usd: DollarsView,
    limit_micros: u64,
    spent_micros: u64,
    reserved_micros: u64,
    /// The soft limit, in percent of the limit.
    soft_percent: Option<f64>,
    fallback_model: Option<String>,
}

impl BudgetLimitView {
    pub(crate) fn of(limit: &budget::Limit, spent: Money, reserved: Money) -> Self {
        let (scope, name) = match &limit.scope {
            budget::Scope::Global => ("global", None),
            budget::Scope::Team(n) => ("team", Some(n.clone())),
            budget::Scope::Key(n) => ("key", Some(n.clone())),
            budget::Scope::Model(n) => ("model", Some(n.clone())),
        };
        BudgetLimitView {
            scope,
            name,
            period: limit.period.to_string(),
            limit_usd: DollarsView(limit.hard),
            limit_micros: limit.hard.micros(),
            spent_micros: spent.micros(),
            reserved_micros: reserved.micros(),
            soft_percent: limit.soft_bp.map(|bp| f64::from(bp) / 100.0),
            fallback_model: limit.fallback.clone(),
        }
    }
}

/// A rollout's overrides and analysis (`GET /admin/canary/{model}`).
#[derive(Debug, Serialize)]
pub(crate) struct RolloutSettingsView {
    model: String,
    /// Subjects always sent to a candidate: `[subject, model]`.
    allow: Vec<(String, String)>,
    deny: Vec<String>,
    /// The rules, described.
    rules: Vec<String>,
    analysis: AnalysisView,
}

/// A rollout's analysis.
#[derive(Debug, Serialize)]
pub(crate) struct AnalysisView {
    enabled: bool,
    /// `None`: the gateway's interval.
    interval_secs: Option<u64>,
    min_requests: Option<u64>,
    max_error_rate_increase: Option<f64>,
    max_p95_factor: Option<f64>,
}

impl RolloutSettingsView {
    pub(crate) fn of(
        model: &str,
        overrides: canary::Overrides,
        analysis: &gateway_client::Analysis,
    ) -> Self {
        let gates = analysis.gates.as_ref();
        #[allow(clippy::cast_precision_loss)] // basis points and per mille: small
        let analysis = AnalysisView {
            enabled: analysis.enabled,
            interval_secs: analysis.interval.map(|d| d.as_secs()),
            min_requests: gates.map(|g| g.min_requests),
            max_error_rate_increase: gates.map(|g| g.max_error_rate_increase_bp as f64 / 10_000.0),
            max_p95_factor: gates.map(|g| g.max_p95_ratio_permille as f64 / 1000.0),
        };
        RolloutSettingsView {
            model: model.to_owned(),
            allow: overrides.allow,
            deny: overrides.deny,
            rules: overrides.rules.iter().map(rule_text).collect(),
            analysis,
        }
    }
}

/// A rule as the config file writes it: `key_name_contains = "test" -> claude-sonnet-4.5`.
fn rule_text(r: &canary::Rule) -> String {
    let attribute = match &r.attribute {
        canary::Attribute::Subject => "subject_".to_owned(),
        canary::Attribute::KeyName => "key_name_".to_owned(),
        canary::Attribute::Team => "team_".to_owned(),
        canary::Attribute::Header(h) => format!("header {h:?} "),
    };
    let (how, value) = match &r.matcher {
        canary::Matcher::Equals(v) => ("equals", v),
        canary::Matcher::Contains(v) => ("contains", v),
        canary::Matcher::StartsWith(v) => ("starts_with", v),
    };
    let arm = match &r.target {
        canary::Target::Baseline => "baseline",
        canary::Target::Candidate(m) => m.as_str(),
    };
    format!("{attribute}{how} = {value:?} -> {arm}")
}
