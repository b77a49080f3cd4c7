//! [`MemoryStore`]: everything in memory, lost when the process ends.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::records::{
    AuditEntry, Loaded, PinRecord, RolloutRecord, SettingKind, SettingRecord, SpendLine,
    StoredClientKey, Totals, UpstreamKeyRecord, UsageLine, UsageQuery, UsageRecord,
};
use super::{HOUR_MS, Store, StoreError};

/// (hour, client key id, client key name, team, model).
type UsageKey = (i64, Option<String>, Option<String>, Option<String>, String);

/// (client key id, client key name, team, model): a line of a report.
type LineKey = (Option<String>, Option<String>, Option<String>, String);

/// How long a memory store keeps usage: a month's budget and a day to spare.
const USAGE_MS: i64 = 32 * 86_400_000;

/// The audit entries a memory store keeps.
const AUDIT_ENTRIES: usize = 10_000;

/// Everything in memory: lost when the process ends. Usage is kept as
/// hourly totals per client key, team and model (not per upstream key: a
/// memory store is never replayed after a restart), for 32 days, so memory
/// stays bounded however long the gateway runs.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    client_keys: BTreeMap<String, StoredClientKey>,
    upstream_keys: BTreeMap<String, UpstreamKeyRecord>,
    rollouts: BTreeMap<String, RolloutRecord>,
    settings: BTreeMap<(SettingKind, String), SettingRecord>,
    pins: std::collections::HashMap<String, PinRecord>,
    usage: BTreeMap<UsageKey, Totals>,
    audit: VecDeque<AuditEntry>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, locked for one call (never across an `.await`).
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn append_usage(&mut self, u: &UsageRecord) {
        let hour = u.at.div_euclid(HOUR_MS) * HOUR_MS;
        if self.usage.last_key_value().is_none_or(|(k, _)| k.0 < hour) {
            // A new hour: forget what is older than the window.
            while self
                .usage
                .first_key_value()
                .is_some_and(|(k, _)| k.0 < hour - USAGE_MS)
            {
                self.usage.pop_first();
            }
        }
        let key = (
            hour,
            u.key_id.clone(),
            u.key_name.clone(),
            u.team.clone(),
            u.model.clone(),
        );
        self.usage.entry(key).or_default().add(u.into());
    }

    fn usage(&self, q: &UsageQuery) -> Vec<UsageLine> {
        let mut lines: BTreeMap<LineKey, Totals> = BTreeMap::new();
        for ((hour, key_id, key_name, team, model), t) in &self.usage {
            let keep = q.key_id.as_ref().is_none_or(|k| key_id.as_ref() == Some(k))
                && q.team.as_ref().is_none_or(|x| team.as_ref() == Some(x))
                && q.model.as_ref().is_none_or(|m| m == model)
                && q.from.is_none_or(|f| *hour + HOUR_MS > f)
                && q.to.is_none_or(|to| *hour < to);
            if keep {
                let k = (
                    key_id.clone(),
                    key_name.clone(),
                    team.clone(),
                    model.clone(),
                );
                lines.entry(k).or_default().add(*t);
            }
        }
        let mut v: Vec<UsageLine> = lines
            .into_iter()
            .map(|((key_id, key_name, team, model), totals)| UsageLine {
                key_id,
                key_name,
                team,
                model,
                totals,
            })
            .collect();
        v.sort_by(|a, b| {
            b.totals
                .cost_micros
                .cmp(&a.totals.cost_micros)
                .then(a.model.cmp(&b.model))
        });
        v
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let s = self.state();
        Ok(Loaded {
            client_keys: s.client_keys.values().cloned().collect(),
            upstream_keys: s.upstream_keys.values().cloned().collect(),
            rollouts: s.rollouts.values().cloned().collect(),
            settings: s.settings.values().cloned().collect(),
        })
    }

    async fn append_usage(&self, record: UsageRecord) -> Result<(), StoreError> {
        self.state().append_usage(&record);
        Ok(())
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.audit.len() == AUDIT_ENTRIES {
            s.audit.pop_front();
        }
        s.audit.push_back(entry);
        Ok(())
    }

    async fn save_client_key(&self, key: StoredClientKey) -> Result<(), StoreError> {
        self.state().client_keys.insert(key.id.clone(), key);
        Ok(())
    }

    async fn save_upstream_key(&self, key: UpstreamKeyRecord) -> Result<(), StoreError> {
        self.state().upstream_keys.insert(key.id.clone(), key);
        Ok(())
    }

    async fn save_rollout(&self, rollout: RolloutRecord) -> Result<(), StoreError> {
        self.state().rollouts.insert(rollout.model.clone(), rollout);
        Ok(())
    }

    async fn save_setting(&self, setting: SettingRecord) -> Result<(), StoreError> {
        let key = (setting.kind, setting.name.clone());
        self.state().settings.insert(key, setting);
        Ok(())
    }

    async fn save_pin(&self, pin: PinRecord) -> Result<(), StoreError> {
        self.state().pins.insert(pin.id.clone(), pin);
        Ok(())
    }

    async fn find_pin(&self, id: &str, since: i64) -> Result<Option<PinRecord>, StoreError> {
        Ok(self.state().pins.get(id).filter(|p| p.at >= since).cloned())
    }

    async fn prune_pins(&self, before: i64) -> Result<u64, StoreError> {
        let mut state = self.state();
        let was = state.pins.len();
        state.pins.retain(|_, p| p.at >= before);
        Ok((was - state.pins.len()) as u64)
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
        Ok(self.state().usage(query))
    }

    async fn spend_since(&self, from: i64) -> Result<Vec<SpendLine>, StoreError> {
        Ok(self
            .state()
            .usage
            .iter()
            .filter(|(k, _)| k.0 + HOUR_MS > from)
            .map(|((hour, _, key_name, team, model), t)| SpendLine {
                hour: *hour,
                provider: String::new(),
                upstream_key: String::new(),
                key_name: key_name.clone(),
                team: team.clone(),
                model: model.clone(),
                totals: *t,
            })
            .collect())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self
            .state()
            .audit
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn prune_usage(&self, before: i64) -> Result<u64, StoreError> {
        let mut s = self.state();
        let old = s.usage.len();
        s.usage.retain(|k, _| k.0 + HOUR_MS > before);
        Ok((old - s.usage.len()) as u64)
    }

    fn describe(&self) -> String {
        "state is in memory only: it is lost when the gateway stops (set [storage] path to keep it)"
            .into()
    }

    fn is_durable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, usage_record};
    use super::*;

    #[tokio::test]
    async fn a_memory_store_passes_the_conformance_suite() {
        conformance::run(&MemoryStore::new()).await;
    }

    #[test]
    fn a_store_in_memory_commits_at_once_without_waiting_for_company() {
        let store = MemoryStore::new();
        let write = std::pin::pin!(store.append_usage(usage_record(1, "k", "m", 1)));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            write.poll(&mut cx).is_ready(),
            "no yield before a memory commit"
        );
        assert_eq!(store.state().usage.len(), 1);
    }
}
