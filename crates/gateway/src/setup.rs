//! Turning a [`Config`] into a running [`Client`] and [`Auth`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use budget::{
    Calendar, Ledger, LedgerConfig, Limit, ModelPrice, Money, Period, PriceTable, Scope,
    UnknownModel,
};
use canary::{Rollout, Share};
use gateway_client::{Client, RetryPolicy};
use keypool_core::{KeyPool, KeyRule, Limits, NewKey, PoolConfig, Timestamp, UtcOffset};
use transport::Transport;

use crate::auth::{Auth, ClientKey};
use crate::config::{Config, ConfigError, SecretSource, resolve_secret};

/// What the gateway was built from, for `gateway check` and logs.
#[derive(Debug, Default)]
pub struct Understood {
    /// Lines describing the config, secrets redacted.
    pub lines: Vec<String>,
    /// Warnings (e.g. literal secrets).
    pub warnings: Vec<String>,
    /// The models the gateway serves (for `/v1/models`).
    pub models: Vec<String>,
}

/// The transport to the upstreams: hyper's client, one per serving thread
/// (the leanest per request), or reqwest's when `[transport] use_env_proxy`
/// is on and `env` names a proxy (`HTTPS_PROXY`, `HTTP_PROXY` or
/// `ALL_PROXY`, in either case), since only reqwest goes through one. The
/// second value says which, for the start-up log and `gateway check`.
pub fn upstream_transport(
    config: &Config,
    env: &HashMap<String, String>,
) -> Result<(Arc<dyn Transport>, &'static str), transport::TransportError> {
    let http = config.http();
    let proxy = ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"]
        .iter()
        .any(|name| {
            [name.to_string(), name.to_lowercase()]
                .iter()
                .any(|n| env.get(n).is_some_and(|v| !v.trim().is_empty()))
        });
    Ok(if http.use_env_proxy && proxy {
        (
            Arc::new(transport::ReqwestTransport::new(&http)?),
            "reqwest (through the proxy the environment names)",
        )
    } else {
        (
            Arc::new(crate::ThreadLocalHyper::new(http)?),
            "hyper (a client per serving thread)",
        )
    })
}

fn dollars(field: &str, v: f64) -> Result<Money, ConfigError> {
    Money::parse_dollars(&v.to_string()).map_err(|_| ConfigError {
        context: field.to_owned(),
        message: format!("{v} is not an amount of dollars"),
    })
}

/// Builds the client and the auth from `config`, reading secrets through `env`.
pub fn build(
    config: &Config,
    env: &HashMap<String, String>,
    transport: Arc<dyn Transport>,
    clock: Option<Arc<dyn gateway_client::Clock>>,
) -> Result<(Client, Auth, Understood), ConfigError> {
    let err = |context: String, message: String| ConfigError { context, message };
    let mut u = Understood::default();
    let listen: SocketAddr = config.listen()?;
    u.lines.push(format!("listen on {listen}"));
    if config.providers.is_empty() {
        return Err(err(
            "providers".into(),
            "at least one [[providers]] entry is needed".into(),
        ));
    }
    let now = Timestamp::from_system_time(
        clock
            .as_ref()
            .map_or_else(std::time::SystemTime::now, |c| c.now()),
    );
    let mut builder = Client::builder().transport(transport);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    for (pi, p) in config.providers.iter().enumerate() {
        let field = format!("providers[{pi}]");
        let rule = match &p.key_prefixes {
            Some(prefixes) => KeyRule {
                prefixes: prefixes.clone(),
                ..KeyRule::default()
            },
            None => KeyRule::default(),
        };
        let mut pool = KeyPool::new(PoolConfig {
            strategy: p.strategy,
            key_rule: rule,
            ..PoolConfig::default()
        })
        .map_err(|e| err(field.clone(), e.to_string()))?;
        if p.keys.is_empty() {
            return Err(err(
                format!("{field}.keys"),
                "at least one key is needed".into(),
            ));
        }
        for (ki, k) in p.keys.iter().enumerate() {
            let kf = format!("{field}.keys[{ki}]");
            let (secret, source) = resolve_secret(
                &format!("{kf}.secret"),
                k.secret.as_deref(),
                k.secret_file.as_deref(),
                env,
            )?;
            if source == SecretSource::Literal {
                u.warnings.push(format!("{kf} ({}) has a literal secret in the config file; prefer secret = \"${{ENV_VAR}}\" or secret_file", k.name));
            }
            let limits = Limits {
                tokens_per_day: k.tokens_per_day,
                requests_per_day: k.requests_per_day,
                requests_per_minute: k.requests_per_minute,
                tokens_per_minute: k.tokens_per_minute,
                max_in_flight: k.max_in_flight,
            };
            let new = NewKey::new(k.name.clone(), secret)
                .group(p.name.clone())
                .tier(k.tier)
                .weight(k.weight)
                .limits(limits);
            let id = pool
                .add(new, now)
                .map_err(|e| err(kf.clone(), e.to_string()))?;
            u.lines.push(format!(
                "provider {} key {} ({}) tier {}",
                p.name,
                k.name,
                pool.secret(id)
                    .map_or_else(|| "?".into(), keypool_core::Secret::redacted),
                k.tier
            ));
        }
        u.lines.push(format!(
            "provider {} at {} priority {} strategy {:?}",
            p.name, p.base_url, p.priority, p.strategy
        ));
        builder = builder.provider(p.name.clone(), p.base_url.clone(), p.priority, pool);
    }

    let mut models: Vec<String> = PriceTable::defaults()
        .models()
        .map(|(m, _)| m.to_owned())
        .collect();
    for (ci, c) in config.canary.iter().enumerate() {
        let field = format!("canary[{ci}]");
        let share = Share::from_fraction(c.percent / 100.0)
            .map_err(|e| err(format!("{field}.percent"), e.to_string()))?;
        let rollout = Rollout::builder(c.model.clone())
            .candidate(c.candidate.clone(), share)
            .salt(c.salt.clone().unwrap_or_else(|| c.model.clone()))
            .build()
            .map_err(|e| err(field.clone(), e.to_string()))?;
        u.lines
            .push(format!("canary {} → {} at {share}", c.model, c.candidate));
        models.extend([c.model.clone(), c.candidate.clone()]);
        builder = builder.rollout(rollout);
    }

    if let Some(b) = &config.budget {
        let offset: UtcOffset = match &b.utc_offset {
            Some(s) => s.parse().map_err(|e: keypool_core::ParseOffsetError| {
                err("budget.utc_offset".into(), e.to_string())
            })?,
            None => UtcOffset::UTC,
        };
        let mut prices = PriceTable::defaults();
        if let Some(path) = &b.prices_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                err(
                    "budget.prices_file".into(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            prices.merge(PriceTable::from_toml(&text).map_err(|e| {
                err(
                    format!("budget.prices_file ({})", path.display()),
                    e.to_string(),
                )
            })?);
        }
        match (b.unknown_model.as_deref(), b.unknown_model_usd_per_mtok) {
            (None | Some("reject"), _) => {}
            (Some("charge"), Some(usd)) => prices.on_unknown(UnknownModel::Charge(
                ModelPrice::blended(dollars("budget.unknown_model_usd_per_mtok", usd)?, None),
            )),
            (Some("charge"), None) => {
                return Err(err(
                    "budget.unknown_model_usd_per_mtok".into(),
                    "needed with unknown_model = \"charge\"".into(),
                ));
            }
            (Some(other), _) => {
                return Err(err(
                    "budget.unknown_model".into(),
                    format!("{other:?} is not \"reject\" or \"charge\""),
                ));
            }
        }
        // The models a prices_file adds are served too.
        models.extend(prices.models().map(|(m, _)| m.to_owned()));
        let mut limits = Vec::new();
        for (li, l) in b.limits.iter().enumerate() {
            let field = format!("budget.limits[{li}]");
            let scope = match (l.scope.as_str(), &l.name) {
                ("global", _) => Scope::Global,
                ("team", Some(n)) => Scope::Team(n.clone()),
                ("key", Some(n)) => Scope::Key(n.clone()),
                ("model", Some(n)) => Scope::Model(n.clone()),
                ("team" | "key" | "model", None) => {
                    return Err(err(
                        format!("{field}.name"),
                        format!("a {} limit needs a name", l.scope),
                    ));
                }
                (other, _) => {
                    return Err(err(
                        format!("{field}.scope"),
                        format!("{other:?} is not global, team, key or model"),
                    ));
                }
            };
            let periods = [
                (Period::Daily, l.daily_usd, "daily_usd"),
                (Period::Weekly, l.weekly_usd, "weekly_usd"),
                (Period::Monthly, l.monthly_usd, "monthly_usd"),
            ];
            if periods.iter().all(|(_, v, _)| v.is_none()) {
                return Err(err(
                    field,
                    "needs daily_usd, weekly_usd or monthly_usd".into(),
                ));
            }
            for (period, usd, name) in periods {
                let Some(usd) = usd else { continue };
                let mut limit = Limit::new(
                    scope.clone(),
                    period,
                    dollars(&format!("{field}.{name}"), usd)?,
                );
                if let Some(f) = l.soft_fraction {
                    if !(0.0..=1.0).contains(&f) {
                        return Err(err(
                            format!("{field}.soft_fraction"),
                            "must be between 0 and 1".into(),
                        ));
                    }
                    limit = limit.soft(f);
                }
                if let Some(m) = &l.fallback_model {
                    limit = limit.fallback(m.clone());
                }
                u.lines
                    .push(format!("budget {} {} {}", limit.scope, period, limit.hard));
                limits.push(limit);
            }
        }
        let cfg = LedgerConfig {
            calendar: Calendar::new(offset.as_seconds()),
            ..LedgerConfig::default()
        };
        builder = builder.ledger(
            Ledger::new(cfg, prices, limits).map_err(|e| err("budget".into(), e.to_string()))?,
        );
    }

    let mut auth = match &config.auth {
        None => Auth::none(),
        Some(a) => {
            let mode =
                a.mode
                    .as_deref()
                    .unwrap_or(if a.keys.is_empty() && a.master_key.is_none() {
                        "none"
                    } else {
                        "keys"
                    });
            match mode {
                "none" => Auth::none(),
                "keys" => {
                    let mut keys = Vec::new();
                    for (ki, k) in a.keys.iter().enumerate() {
                        keys.push(
                            ClientKey::from_config(k)
                                .map_err(|m| err(format!("auth.keys[{ki}]"), m))?,
                        );
                    }
                    u.lines
                        .push(format!("auth: {} client keys in the file", keys.len()));
                    Auth::keys(keys)
                }
                other => {
                    return Err(err(
                        "auth.mode".into(),
                        format!("{other:?} is not \"keys\" or \"none\""),
                    ));
                }
            }
        }
    };
    if let Some(master) = config.auth.as_ref().and_then(|a| a.master_key.as_deref()) {
        let (master, source) = resolve_secret("auth.master_key", Some(master), None, env)?;
        if source == SecretSource::Literal {
            u.warnings.push(
                "auth.master_key is a literal secret in the config file; prefer \"${ENV_VAR}\""
                    .into(),
            );
        }
        if master.len() < 16 {
            return Err(err(
                "auth.master_key".into(),
                "must be at least 16 characters".into(),
            ));
        }
        auth = auth.with_master(&master);
        u.lines.push("management API: master key set".into());
    }
    if !auth.required {
        if !listen.ip().is_loopback() {
            return Err(err(
                "auth.mode".into(),
                format!("\"none\" is only allowed on a loopback address, not {listen}"),
            ));
        }
        u.lines.push("auth: none (loopback only)".into());
    }
    if let Some(days) = config.storage.usage_retention_days {
        if days < 32 {
            return Err(err(
                "storage.usage_retention_days".into(),
                format!("{days} is too short: a month's budget is rebuilt from 32 days of usage"),
            ));
        }
        u.lines.push(format!("storage: usage kept {days} days"));
    }
    u.lines.push(match &config.storage.path {
        Some(p) => format!("storage: {} (SQLite)", p.display()),
        None => "storage: in memory only (lost when the gateway stops)".into(),
    });

    let r = &config.retry;
    let defaults = RetryPolicy::default();
    builder = builder.retry(RetryPolicy {
        max_attempts: r.max_attempts.unwrap_or(defaults.max_attempts).max(1),
        deadline: r
            .deadline_secs
            .map_or(defaults.deadline, Duration::from_secs),
        attempt_timeout: r
            .attempt_timeout_secs
            .map_or(defaults.attempt_timeout, Duration::from_secs),
        ..defaults
    });
    models.sort();
    models.dedup();
    u.models = models;
    let client = builder
        .build()
        .map_err(|e| err("config".into(), e.to_string()))?;
    Ok((client, auth, u))
}
