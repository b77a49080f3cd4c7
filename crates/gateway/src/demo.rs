//! The built-in setup: the simulated upstream's demo keys, a canary and a
//! small budget, so the gateway runs on a fresh machine with no real key.

use std::collections::HashMap;

use budget::Money;

use crate::config::{
    BudgetConfig, CanaryConfig, Config, KeyConfig, LimitConfig, ProviderConfig, ServerConfig,
};
use crate::sim;

/// The secrets of the demo keys, as the environment the demo config reads.
pub fn demo_env() -> HashMap<String, String> {
    sim::DEMO_KEYS
        .iter()
        .enumerate()
        .map(|(i, (_, secret, _))| (format!("DEMO_KEY_{}", i + 1), (*secret).to_owned()))
        .collect()
}

/// The built-in configuration: the simulated upstream's demo keys (one
/// healthy, one rate-limited, one revoked, one flaky), a 10% canary of
/// claude-sonnet-4.5 against gpt-4.1, and a small daily budget that degrades
/// to gpt-4o-mini past half.
pub fn demo_config(upstream_base_url: &str, listen: &str) -> Config {
    let keys = sim::DEMO_KEYS
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| KeyConfig {
            tokens_per_day: Some(5_000_000),
            ..KeyConfig::from_env(*name, &format!("DEMO_KEY_{}", i + 1))
        })
        .collect();
    Config {
        server: ServerConfig {
            listen: listen.to_owned(),
            ..ServerConfig::default()
        },
        providers: vec![ProviderConfig {
            name: "simulated".into(),
            base_url: upstream_base_url.to_owned(),
            priority: 0,
            strategy: keypool_core::Strategy::LeastUsed,
            key_prefixes: None,
            models: None,
            aliases: std::collections::BTreeMap::new(),
            error_rules: Vec::new(),
            keys,
        }],
        canary: vec![CanaryConfig {
            model: "gpt-4.1".into(),
            candidate: Some("claude-sonnet-4.5".into()),
            percent: Some(10.0),
            salt: Some("demo".into()),
            ..CanaryConfig::default()
        }],
        budget: Some(BudgetConfig {
            utc_offset: Some("+07:00".into()),
            limits: vec![LimitConfig {
                soft_fraction: Some(0.5),
                fallback_model: Some("gpt-4o-mini".into()),
                ..LimitConfig::global_daily(Money::from_cents(5))
            }],
            ..BudgetConfig::default()
        }),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_budget_is_exactly_five_cents() {
        let c = super::demo_config("http://127.0.0.1:1/v1", "127.0.0.1:0");
        let limit = &c.budget.unwrap().limits[0];
        assert_eq!(
            limit.daily_usd,
            Some(budget::Dollars(budget::Money::from_micros(50_000)))
        );
    }
}
