//! Request statistics per key, model and canary arm.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use canary::{ArmStats, LatencyHistogram};
use serde::Serialize;

#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    requests: u64,
    failures: u64,
    attempts: u64,
    latency: LatencyHistogram,
    cache: CacheUse,
}

/// Of answered requests' input, what the upstream's cache served, and
/// what that saved against the full input rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheUse {
    pub(crate) prompt_tokens: u64,
    pub(crate) cached_tokens: u64,
    pub(crate) saved_micros: u64,
}

impl Counters {
    fn record(&mut self, ok: bool, attempts: u32, latency: Duration, cache: CacheUse) {
        self.requests += 1;
        self.attempts += u64::from(attempts);
        self.cache.prompt_tokens += cache.prompt_tokens;
        self.cache.cached_tokens += cache.cached_tokens;
        self.cache.saved_micros += cache.saved_micros;
        if ok {
            self.latency.record(latency);
        } else {
            self.failures += 1;
        }
    }

    fn snapshot(&self) -> CounterSnapshot {
        let ms = |q| self.latency.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
        CounterSnapshot {
            requests: self.requests,
            failures: self.failures,
            attempts: self.attempts,
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            prompt_tokens: self.cache.prompt_tokens,
            cached_tokens: self.cache.cached_tokens,
            cache_saved_micros: self.cache.saved_micros,
        }
    }
}

/// Counts and latency quantiles for one key, model or arm.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CounterSnapshot {
    /// Requests finished.
    pub requests: u64,
    /// Of those, failed.
    pub failures: u64,
    /// Upstream attempts they took.
    pub attempts: u64,
    /// Median latency of successes, in ms (bucket upper edge, within 12.5%).
    pub p50_ms: Option<f64>,
    /// 95th percentile, in ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile, in ms.
    pub p99_ms: Option<f64>,
    /// Input tokens of the answered requests.
    pub prompt_tokens: u64,
    /// Of those, served from the upstream's prompt cache.
    pub cached_tokens: u64,
    /// What the cached tokens saved against the full input rate, in
    /// micro-dollars (prompt-cache affinity's gain, per key and in total).
    pub cache_saved_micros: u64,
}

/// All statistics at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Every request.
    pub total: CounterSnapshot,
    /// By `provider/key name` (the key that answered, or last tried).
    pub per_key: BTreeMap<String, CounterSnapshot>,
    /// By model used.
    pub per_model: BTreeMap<String, CounterSnapshot>,
    /// By `rollout:arm`.
    pub per_arm: BTreeMap<String, CounterSnapshot>,
    /// Key rotations seen.
    pub rotations: u64,
    /// Upstream attempts by `provider/key name`, then by outcome
    /// ([`Outcome::label`](keypool_core::Outcome::label)); outcomes never seen
    /// are left out.
    pub attempts: BTreeMap<String, BTreeMap<&'static str, u64>>,
}

/// What the client counts; behind one lock held for a few additions.
/// Maps are looked up by borrowed names, so a request allocates nothing here
/// once its key, model and arm have been seen. Names (thousands of keys) are
/// hashed rather than ordered: a lookup is one hash instead of a dozen string
/// comparisons; snapshots sort.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    total: Counters,
    per_key: HashMap<String, HashMap<String, Counters>>,
    per_model: HashMap<String, Counters>,
    per_arm: HashMap<String, BTreeMap<canary::Arm, Counters>>,
    /// For the canary's judge: (rollout baseline, arm) → counters since the last verdict.
    pub(crate) arms: BTreeMap<(String, canary::Arm), ArmStats>,
    pub(crate) rotations: u64,
    /// provider → key → attempts by outcome index.
    attempts: HashMap<String, HashMap<String, [u64; 10]>>,
}

/// One finished request, as the statistics see it.
pub(crate) struct Finished<'a> {
    pub(crate) ok: bool,
    pub(crate) attempts: u32,
    pub(crate) latency: Duration,
    /// (provider, key name).
    pub(crate) key: Option<(&'a str, &'a str)>,
    pub(crate) model: &'a str,
    pub(crate) arm: Option<(&'a str, canary::Arm)>,
    pub(crate) cost_micros: u64,
    pub(crate) cache: CacheUse,
}

fn arm_label(rollout: &str, arm: canary::Arm) -> String {
    match arm {
        canary::Arm::Baseline => format!("{rollout}:baseline"),
        canary::Arm::Candidate(i) => format!("{rollout}:candidate-{i}"),
    }
}

/// The entry for `key`, allocating the key only the first time. (The
/// `entry` API would allocate the key on every call.)
#[allow(clippy::expect_used)] // inserted on the line before: cannot fail
fn entry<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("just inserted")
}

impl Stats {
    /// One upstream attempt and how it ended.
    pub(crate) fn attempt(&mut self, provider: &str, key: &str, outcome: &keypool_core::Outcome) {
        if let Some(n) = entry(entry(&mut self.attempts, provider), key).get_mut(outcome.index()) {
            *n += 1;
        }
    }

    pub(crate) fn record(&mut self, f: &Finished<'_>) {
        let (ok, attempts, latency, cache) = (f.ok, f.attempts, f.latency, f.cache);
        self.total.record(ok, attempts, latency, cache);
        if let Some((provider, key)) = f.key {
            entry(entry(&mut self.per_key, provider), key).record(ok, attempts, latency, cache);
        }
        entry(&mut self.per_model, f.model).record(ok, attempts, latency, cache);
        if let Some((rollout, arm)) = f.arm {
            entry(&mut self.per_arm, rollout)
                .entry(arm)
                .or_default()
                .record(ok, attempts, latency, cache);
            if let Some(s) = self
                .arms
                .iter_mut()
                .find(|((r, a), _)| r == rollout && *a == arm)
                .map(|(_, s)| s)
            {
                s.record(f.ok, f.latency, f.cost_micros);
            } else {
                let mut s = ArmStats::default();
                s.record(f.ok, f.latency, f.cost_micros);
                self.arms.insert((rollout.to_owned(), arm), s);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            total: self.total.snapshot(),
            per_key: self
                .per_key
                .iter()
                .flat_map(|(p, keys)| {
                    keys.iter()
                        .map(move |(k, c)| (format!("{p}/{k}"), c.snapshot()))
                })
                .collect(),
            per_model: self
                .per_model
                .iter()
                .map(|(k, c)| (k.clone(), c.snapshot()))
                .collect(),
            per_arm: self
                .per_arm
                .iter()
                .flat_map(|(r, arms)| {
                    arms.iter()
                        .map(move |(a, c)| (arm_label(r, *a), c.snapshot()))
                })
                .collect(),
            rotations: self.rotations,
            attempts: self
                .attempts
                .iter()
                .flat_map(|(provider, keys)| {
                    keys.iter().map(move |(key, counts)| {
                        let by_outcome = keypool_core::Outcome::LABELS
                            .iter()
                            .zip(counts)
                            .filter(|(_, n)| **n > 0)
                            .map(|(label, n)| (*label, *n))
                            .collect();
                        (format!("{provider}/{key}"), by_outcome)
                    })
                })
                .collect(),
        }
    }
}
