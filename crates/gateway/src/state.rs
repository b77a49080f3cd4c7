//! What every part of the running gateway shares.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use gateway_client::Client;

use crate::activity::Activity;
use crate::auth::Auth;
use crate::keys::{KeyDirectory, KeyEntry, settings_of};
use crate::metrics::Metrics;
use crate::secrets::Sealer;
use crate::store::{
    KeyOrigin, KeySettings, RolloutRecord, Store, StoreError, UpstreamKeyRecord, config_key_id,
};

/// The state every handler and background service shares.
pub(crate) struct AppState {
    /// The client: pools, rollouts, ledger.
    pub(crate) client: Client,
    /// Client keys and the master key.
    pub(crate) auth: Auth,
    /// Models for `/v1/models`, sorted.
    pub(crate) models: Vec<String>,
    /// Where usage, keys, states and the audit log are kept.
    pub(crate) store: Arc<dyn Store>,
    /// Recent requests and events, for the dashboard.
    activity: Mutex<Activity>,
    /// Held by each management change and by the state saver, so that a
    /// change to a key and its stored record cannot interleave with another.
    changes: tokio::sync::Mutex<()>,
    /// Prometheus metrics.
    pub(crate) metrics: Metrics,
    /// Whether the operators' views answer anyone.
    pub(crate) public_status: bool,
    /// The largest request body, in bytes.
    pub(crate) body_limit: usize,
    /// The upstream keys' stable ids.
    pub(crate) keys: KeyDirectory,
    /// Seals the secrets of keys added or rotated in at runtime.
    pub(crate) sealer: Option<Sealer>,
    /// Which key made each stateful upstream id.
    pub(crate) pins: crate::pins::Pins,
}

/// What [`AppState::new`] is given besides the layers.
#[derive(Debug)]
pub(crate) struct Options {
    /// Whether the operators' views answer anyone.
    pub(crate) public_status: bool,
    /// The largest request body, in bytes.
    pub(crate) body_limit: usize,
    /// Seals runtime keys' secrets.
    pub(crate) sealer: Option<Sealer>,
    /// The configured keys: (provider, name, fingerprint of the secret).
    pub(crate) configured_keys: Vec<(String, String, crate::keys::Fingerprint)>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("client", &self.client)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State for `client`, keeping its records in `store`.
    pub(crate) fn new(
        client: Client,
        auth: Auth,
        mut models: Vec<String>,
        store: Arc<dyn Store>,
        options: Options,
    ) -> Self {
        models.sort();
        models.dedup();
        let keys = KeyDirectory::default();
        for (provider, name, fingerprint) in options.configured_keys {
            let found = client.read_pool(&provider, |pool| {
                let id = pool.find(&name)?;
                Some((id, pool.name(id)?.clone()))
            });
            if let Some(Some((key, pooled_name))) = found {
                keys.insert(KeyEntry {
                    id: config_key_id(&provider, &name),
                    provider: provider.into(),
                    name: pooled_name,
                    key,
                    origin: KeyOrigin::Config,
                    fingerprint,
                    sealed_secret: None,
                    removed: false,
                });
            }
        }
        AppState {
            client,
            auth,
            metrics: Metrics::new(models.clone()),
            models,
            pins: crate::pins::Pins::new(store.clone()),
            store,
            activity: Mutex::new(Activity::default()),
            changes: tokio::sync::Mutex::new(()),
            public_status: options.public_status,
            body_limit: options.body_limit,
            keys,
            sealer: options.sealer,
        }
    }

    /// Now on the client's clock, in Unix milliseconds.
    pub(crate) fn now_ms(&self) -> i64 {
        self.client
            .clock()
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// Recent activity, locked for one update or read.
    pub(crate) fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the other changes to finish; held until the change and its
    /// records are saved.
    pub(crate) async fn one_change_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// The record to store for the upstream key `id`: its entry, and its
    /// state if it is still in its pool.
    pub(crate) fn key_record(&self, id: &str) -> Option<UpstreamKeyRecord> {
        let entry = self.keys.get(id)?;
        let pooled = if entry.removed {
            None
        } else {
            self.client
                .read_pool(&entry.provider, |pool| {
                    Some((pool.saved(entry.key)?, pool.key_snapshot(entry.key)?))
                })
                .flatten()
        };
        let (saved, settings) = match pooled {
            Some((saved, snapshot)) => (Some(saved), settings_of(&snapshot)),
            None => (None, KeySettings::default()),
        };
        Some(entry.record(saved, settings))
    }

    /// The state to store for the rollout of `model`.
    pub(crate) fn rollout_state(&self, model: &str) -> Option<RolloutRecord> {
        let saved = self.client.with_rollout(model, |r, _| r.saved())?;
        Some(RolloutRecord {
            model: model.to_owned(),
            saved,
        })
    }

    /// Saves the upstream key `id` as it is now.
    pub(crate) async fn save_upstream_key(&self, id: &str) -> Result<(), StoreError> {
        match self.key_record(id) {
            Some(record) => self.store.save_upstream_key(record).await,
            None => Ok(()),
        }
    }
}

impl AppState {
    /// Records a settled request and waits for the commit, so an answered
    /// request is never missing from the usage records. A failure is logged
    /// and counted: the answer still goes out.
    pub(crate) async fn record_usage(
        &self,
        key: Option<&crate::auth::ClientKey>,
        meta: &gateway_client::ResponseMeta,
    ) {
        let record = crate::store::UsageRecord {
            at: self.now_ms(),
            key_id: key.and_then(|k| k.id.clone()),
            key_name: key.map(|k| k.name.clone()),
            team: key.and_then(|k| k.team.clone()),
            provider: meta.provider.to_string(),
            upstream_key: meta.key.to_string(),
            model: meta.model_used.clone(),
            prompt_tokens: meta.usage.prompt_tokens,
            completion_tokens: meta.usage.completion_tokens,
            cost_micros: meta.cost.micros(),
            cached_tokens: meta.usage.cached_tokens,
            cache_write_tokens: meta.usage.cache_write_tokens,
            reasoning_tokens: meta.usage.reasoning_tokens,
        };
        if let Err(e) = self.store.append_usage(record).await {
            tracing::error!("a settled request was not recorded: {e}");
            self.metrics.usage_not_recorded();
        }
    }

    /// Counts a request's end for the dashboard and the metrics.
    pub(crate) fn count_request(
        &self,
        endpoint: &'static str,
        model: &str,
        status: u16,
        took: std::time::Duration,
        meta: Option<&gateway_client::ResponseMeta>,
    ) {
        let secs = self.now_ms().div_euclid(1000);
        self.activity().count(secs, (200..300).contains(&status));
        let arm = meta.and_then(|m| m.arm.as_ref());
        self.metrics.request(endpoint, model, status, took, arm);
    }
}
