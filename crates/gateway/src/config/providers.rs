//! `[[providers]]`: the upstreams and their keys, built into key pools.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use gateway_client::Catalog;
use keypool_core::{KeyPool, KeyRule, Limits, NewKey, PoolConfig, Timestamp};
use serde::Deserialize;

use super::secret::{SecretSource, resolve_secret};
use super::{ConfigError, Understood};

/// `[[providers]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A name for logs, metrics and headers.
    pub name: String,
    /// The OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// 0 is tried first. Default 0.
    #[serde(default)]
    pub priority: u32,
    /// `least-used` (default), `round-robin`, `weighted`, `power-of-two`.
    #[serde(default)]
    pub strategy: keypool_core::Strategy,
    /// Accepted secret prefixes. Default `["sk-"]`.
    #[serde(default)]
    pub key_prefixes: Option<Vec<String>>,
    /// The models this provider serves; absent, any model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Clients' names for models, mapped to this provider's
    /// (`{ "deepseek-v3.2" = "deepseek-chat" }`): served here, and sent
    /// upstream by the provider's name.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// The keys.
    pub keys: Vec<KeyConfig>,
    /// How to read this provider's own ways of answering, before the
    /// built-in classification: the first rule that matches decides.
    #[serde(default)]
    pub error_rules: Vec<ErrorRuleConfig>,
}

/// One of `error_rules`: answers with `status` (and, when given, a body
/// containing `body_contains`) mean `action`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRuleConfig {
    /// The HTTP status.
    pub status: u16,
    /// Text the body must contain.
    pub body_contains: Option<String>,
    /// `disable`, `exhausted`, `cooldown`, `retry` or `client_error`.
    pub action: RuleActionConfig,
    /// With `cooldown`: how long the key rests.
    pub cooldown_secs: Option<u64>,
}

/// What an error rule makes of an answer.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleActionConfig {
    /// The key is disabled until an operator enables it.
    Disable,
    /// The key's quota is spent until the daily reset.
    Exhausted,
    /// The key rests `cooldown_secs`.
    Cooldown,
    /// A server error: another key is tried.
    Retry,
    /// The caller's fault: no key is penalised.
    ClientError,
}

impl ErrorRuleConfig {
    /// The rule, checked; `field` is where it is (`providers[0].error_rules[1]`).
    fn build(&self, field: &str) -> Result<transport::ErrorRule, ConfigError> {
        if !(100..=599).contains(&self.status) {
            return Err(ConfigError::new(
                format!("{field}.status"),
                format!("{} is not an HTTP status", self.status),
            ));
        }
        if self.body_contains.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new(
                format!("{field}.body_contains"),
                "an empty text matches every body: leave it out instead",
            ));
        }
        let action = match (self.action, self.cooldown_secs) {
            (RuleActionConfig::Cooldown, Some(secs)) if secs > 0 => {
                transport::RuleAction::Cooldown(std::time::Duration::from_secs(secs))
            }
            (RuleActionConfig::Cooldown, _) => {
                return Err(ConfigError::new(
                    format!("{field}.cooldown_secs"),
                    "a cooldown needs cooldown_secs, at least 1",
                ));
            }
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{field}.cooldown_secs"),
                    "only a cooldown takes cooldown_secs",
                ));
            }
            (RuleActionConfig::Disable, None) => transport::RuleAction::Disable,
            (RuleActionConfig::Exhausted, None) => transport::RuleAction::Exhausted,
            (RuleActionConfig::Retry, None) => transport::RuleAction::Retry,
            (RuleActionConfig::ClientError, None) => transport::RuleAction::ClientError,
        };
        Ok(transport::ErrorRule {
            status: self.status,
            body_contains: self.body_contains.clone(),
            action,
        })
    }
}

/// One upstream key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A human label, shown everywhere instead of the secret.
    pub name: String,
    /// `${ENV_VAR}`, or a literal secret (accepted with a warning).
    pub secret: Option<String>,
    /// A file holding the secret (trailing whitespace trimmed).
    pub secret_file: Option<PathBuf>,
    /// 0 = primary; higher tiers serve only when lower ones cannot.
    #[serde(default)]
    pub tier: u8,
    /// Weight for the weighted strategy. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Tokens per day.
    pub tokens_per_day: Option<u64>,
    /// Requests per day.
    pub requests_per_day: Option<u32>,
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub max_in_flight: Option<u32>,
    /// The only models this key is picked for (by the client's name or the
    /// provider's); absent, every model the provider serves.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// An error on `field` if any of `names` is blank.
fn no_blank<'a>(
    field: &str,
    mut names: impl Iterator<Item = &'a String>,
) -> Result<(), ConfigError> {
    if names.any(|m| m.trim().is_empty()) {
        return Err(ConfigError::new(field, "model names must not be empty"));
    }
    Ok(())
}

fn one() -> u32 {
    1
}

impl KeyConfig {
    /// A key named `name` whose secret is read from the environment variable
    /// `var` (`secret = "${VAR}"`), with no limits.
    pub fn from_env(name: impl Into<String>, var: &str) -> Self {
        KeyConfig {
            name: name.into(),
            secret: Some(format!("${{{var}}}")),
            secret_file: None,
            tier: 0,
            weight: 1,
            tokens_per_day: None,
            requests_per_day: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            max_in_flight: None,
            models: None,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            tokens_per_day: self.tokens_per_day,
            requests_per_day: self.requests_per_day,
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            max_in_flight: self.max_in_flight,
        }
    }
}

impl ProviderConfig {
    /// Its error rules, checked, with the field of a bad one named.
    pub(super) fn error_rules(
        &self,
        field: &str,
    ) -> Result<Vec<transport::ErrorRule>, ConfigError> {
        self.error_rules
            .iter()
            .enumerate()
            .map(|(i, r)| r.build(&format!("{field}.error_rules[{i}]")))
            .collect()
    }

    /// What this provider serves, checked: names are not empty, and a
    /// provider that lists its models lists what its keys are for.
    pub(super) fn catalog(&self, field: &str) -> Result<Catalog, ConfigError> {
        if let Some(models) = &self.models {
            no_blank(&format!("{field}.models"), models.iter())?;
        }
        let mut catalog = match &self.models {
            Some(models) if models.is_empty() => {
                return Err(ConfigError::new(
                    format!("{field}.models"),
                    "an empty list serves nothing: list models, or leave it out to serve any",
                ));
            }
            Some(models) => Catalog::only(models.iter().cloned()),
            None => Catalog::any(),
        };
        for (from, to) in &self.aliases {
            let f = format!("{field}.aliases.{from:?}");
            no_blank(&f, [from, to].into_iter())?;
            catalog = catalog.alias(from.clone(), to.clone());
        }
        for (ki, k) in self.keys.iter().enumerate() {
            let f = format!("{field}.keys[{ki}].models");
            let Some(models) = &k.models else { continue };
            if models.is_empty() {
                return Err(ConfigError::new(
                    f,
                    "an empty list serves nothing: list models, or leave it out",
                ));
            }
            if let Some(m) = models
                .iter()
                .find(|m| !catalog.serves(m) && !self.aliases.values().any(|to| to == *m))
            {
                return Err(ConfigError::new(
                    f,
                    format!("{m:?} is not among the provider's models or aliases"),
                ));
            }
        }
        Ok(catalog)
    }

    /// The provider's key pool, its secrets read through `env`; `field` is
    /// where the provider is in the file (`providers[0]`).
    pub(super) fn build(
        &self,
        (field, pool): (&str, &PoolConfig),
        env: &HashMap<String, String>,
        now: Timestamp,
        u: &mut Understood,
    ) -> Result<KeyPool, ConfigError> {
        let key_rule = KeyRule {
            prefixes: self
                .key_prefixes
                .clone()
                .unwrap_or_else(|| pool.key_rule.prefixes.clone()),
            min_len: pool.key_rule.min_len,
        };
        let mut pool = KeyPool::new(PoolConfig {
            strategy: self.strategy,
            key_rule,
            ..pool.clone()
        })
        .map_err(|e| ConfigError::new(field, e.to_string()))?;
        if self.keys.is_empty() {
            return Err(ConfigError::new(
                format!("{field}.keys"),
                "at least one key is needed",
            ));
        }
        for (ki, k) in self.keys.iter().enumerate() {
            let field = format!("{field}.keys[{ki}]");
            if self.keys.iter().take(ki).any(|other| other.name == k.name) {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    format!(
                        "{:?} names another key of this provider: names must be unique",
                        k.name
                    ),
                ));
            }
            self.add_key(&mut pool, &field, k, env, now, u)?;
        }
        let serves = match &self.models {
            Some(m) => m.join(", "),
            None => "any model".into(),
        };
        u.lines.push(format!(
            "provider {} at {} priority {} strategy {:?} serves {serves}",
            self.name, self.base_url, self.priority, self.strategy
        ));
        for (from, to) in &self.aliases {
            u.lines
                .push(format!("provider {} alias {from} → {to}", self.name));
        }
        Ok(pool)
    }

    fn add_key(
        &self,
        pool: &mut KeyPool,
        field: &str,
        k: &KeyConfig,
        env: &HashMap<String, String>,
        now: Timestamp,
        u: &mut Understood,
    ) -> Result<(), ConfigError> {
        let (secret, source) = resolve_secret(
            &format!("{field}.secret"),
            k.secret.as_deref(),
            k.secret_file.as_deref(),
            env,
        )?;
        if source == SecretSource::Literal {
            u.warnings.push(format!(
                "{field} ({}) has a literal secret in the config file; prefer secret = \"${{ENV_VAR}}\" or secret_file",
                k.name
            ));
        }
        let fingerprint = crate::keys::fingerprint(&secret);
        let new = NewKey::new(k.name.clone(), secret)
            .group(self.name.clone())
            .tier(k.tier)
            .weight(k.weight)
            .limits(k.limits());
        let new = match &k.models {
            Some(models) => new.models(models),
            None => new,
        };
        let id = pool
            .add(new, now)
            .map_err(|e| ConfigError::new(field, e.to_string()))?;
        let redacted = pool
            .secret(id)
            .map_or_else(|| "?".into(), keypool_core::Secret::redacted);
        u.configured_keys
            .push((self.name.clone(), k.name.clone(), fingerprint));
        u.lines.push(format!(
            "provider {} key {} ({redacted}) tier {}",
            self.name, k.name, k.tier
        ));
        Ok(())
    }
}
