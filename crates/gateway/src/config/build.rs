//! The composition: every section's build, into a client and an auth.

use std::collections::HashMap;
use std::sync::Arc;

use budget::PriceTable;
use gateway_client::{Client, ClientBuilder, Clock};
use keypool_core::Timestamp;
use transport::Transport;

use super::{Config, ConfigError, Understood};
use crate::auth::Auth;

/// What [`build`] makes.
#[derive(Debug)]
pub struct Built {
    /// The client: pools, rollouts, ledger, retry policy, transport.
    pub client: Client,
    /// Client keys and the master key.
    pub auth: Auth,
    /// What was understood.
    pub understood: Understood,
    /// The sealer for runtime keys' secrets, if `[storage]` gives a key.
    pub sealer: Option<crate::secrets::Sealer>,
}

/// `[[providers]]` and `[routing]`: the key pools, what each provider
/// serves, and the fallbacks between models.
fn providers(
    config: &Config,
    mut builder: ClientBuilder,
    env: &HashMap<String, String>,
    now: Timestamp,
    u: &mut Understood,
) -> Result<ClientBuilder, ConfigError> {
    let budget_offset = config.budget.as_ref().and_then(|b| b.utc_offset.as_deref());
    let pool_config = config.pool.build(budget_offset)?;
    let mut catalogs = Vec::new();
    for (pi, p) in config.providers.iter().enumerate() {
        let field = format!("providers[{pi}]");
        let catalog = p.catalog(&field)?;
        let rules = p.error_rules(&field)?;
        let pool = p.build((&field, &pool_config), env, now, u)?;
        u.models
            .extend(catalog.listed().into_iter().flatten().map(str::to_owned));
        catalogs.push(catalog.clone());
        if !rules.is_empty() {
            u.lines.push(format!(
                "provider {} has {} error rules",
                p.name,
                rules.len()
            ));
            builder = builder.error_rules(p.name.clone(), rules);
        }
        builder = builder.provider_serving(
            p.name.clone(),
            p.base_url.clone(),
            p.priority,
            pool,
            catalog,
        );
    }
    let (fallbacks, lines) = config.routing.build(&catalogs)?;
    u.lines.extend(lines);
    let affinity = std::time::Duration::from_secs(config.routing.cache_affinity_secs);
    Ok(builder.fallbacks(fallbacks).cache_affinity(affinity))
}

/// Builds the client and the auth from `config`, reading secrets through
/// `env`, with `transport` to the upstreams and `clock` (default: the
/// system's).
pub fn build(
    config: &Config,
    env: &HashMap<String, String>,
    transport: Arc<dyn Transport>,
    clock: Option<Arc<dyn Clock>>,
) -> Result<Built, ConfigError> {
    let mut u = Understood::default();
    let listen = config.server.listen()?;
    u.lines.push(format!("listen on {listen}"));
    if config.providers.is_empty() {
        return Err(ConfigError::new(
            "providers",
            "at least one [[providers]] entry is needed",
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
    builder = providers(config, builder, env, now, &mut u)?;
    u.models
        .extend(PriceTable::defaults().models().map(|(m, _)| m.to_owned()));
    for (ci, c) in config.canary.iter().enumerate() {
        let (rollout, analysis) = c.build(&format!("canary[{ci}]"))?;
        let arms: Vec<String> = rollout
            .candidates()
            .iter()
            .map(|c| format!("{} at {}", c.model, c.share))
            .collect();
        let judged = if analysis.enabled {
            "judged"
        } else {
            "not judged"
        };
        u.lines.push(format!(
            "canary {} → {} ({judged})",
            c.model,
            arms.join(", ")
        ));
        u.models.push(c.model.clone());
        u.models.extend(c.candidate_models());
        builder = builder.rollout_with(rollout, analysis);
    }
    if let Some(b) = &config.budget {
        builder = builder.ledger(b.build(&mut u)?);
        if let Some(min) = b.min_output_tokens {
            builder = builder.min_output_tokens(min);
        }
    }
    let auth = super::auth::build(config.auth.as_ref(), listen, env, &mut u)?;
    u.lines.extend(config.storage.check()?);
    let cluster = config.cluster.clone().unwrap_or_default();
    u.lines
        .extend(cluster.check(config.cluster.is_some(), &config.storage)?);
    let sealer = config.storage.sealer(env, &mut u)?;
    builder = builder.retry(config.retry.build()?);
    let (context, line) = config.context.build()?;
    u.lines.extend(line);
    u.lines.extend(config.telemetry.check()?);
    builder = builder.context(context);
    u.models.sort();
    u.models.dedup();
    let client = builder
        .build()
        .map_err(|e| ConfigError::new("config", e.to_string()))?;
    Ok(Built {
        client,
        auth,
        understood: u,
        sealer,
    })
}
