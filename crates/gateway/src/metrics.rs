//! Prometheus metrics: request counters and durations recorded as requests
//! end, gauges set from a snapshot at scrape time, rendered in the text
//! format.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use gateway_client::{ArmInfo, Snapshot};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Model label → (endpoint, status, counter).
type RequestCounters = HashMap<String, Vec<(&'static str, u16, metrics::Counter)>>;

/// The gateway's metrics.
pub(crate) struct Metrics {
    handle: PrometheusHandle,
    /// The models served, sorted: any other model is labelled `other`, so
    /// callers cannot grow the series (or `/metrics`) without bound.
    models: Vec<String>,
    /// `gateway_requests_total` counters, registered once each, then
    /// counted without building a metric key.
    counters: Mutex<RequestCounters>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The process-wide Prometheus recorder (metrics has one global recorder).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => h,
            // Another recorder is installed (a program embedding the
            // gateway): keep ours local.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        })
        .clone()
}

impl Metrics {
    /// Metrics for a gateway serving `models` (sorted, deduplicated).
    pub(crate) fn new(models: Vec<String>) -> Self {
        Metrics {
            handle: prometheus(),
            models,
            counters: Mutex::new(HashMap::new()),
        }
    }

    fn counter(&self, endpoint: &'static str, model: &str, status: u16) -> metrics::Counter {
        let model = if self
            .models
            .binary_search_by(|m| m.as_str().cmp(model))
            .is_ok()
        {
            model
        } else {
            "other"
        };
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, c)) = counters
            .get(model)
            .and_then(|v| v.iter().find(|(e, s, _)| *e == endpoint && *s == status))
        {
            return c.clone();
        }
        let counter = metrics::counter!("gateway_requests_total", "endpoint" => endpoint, "model" => model.to_owned(), "status" => status.to_string());
        counters
            .entry(model.to_owned())
            .or_default()
            .push((endpoint, status, counter.clone()));
        counter
    }

    /// Records one request's end. Per key, upstream attempts by outcome come
    /// from the client's statistics at scrape time (a key label here would
    /// add a series per key and status).
    pub(crate) fn request(
        &self,
        endpoint: &'static str,
        model: &str,
        status: u16,
        took: Duration,
        arm: Option<&ArmInfo>,
    ) {
        self.counter(endpoint, model, status).increment(1);
        metrics::histogram!("gateway_request_duration_seconds", "endpoint" => endpoint)
            .record(took.as_secs_f64());
        if let Some(arm) = arm {
            let arm_name = match arm.arm {
                canary::Arm::Baseline => "baseline".to_owned(),
                canary::Arm::Candidate(i) => format!("candidate-{i}"),
            };
            metrics::counter!("gateway_canary_assignments_total", "rollout" => arm.rollout.clone(), "arm" => arm_name).increment(1);
        }
    }

    /// Counts a settled request whose usage record could not be written.
    pub(crate) fn usage_not_recorded(&self) {
        metrics::counter!("gateway_usage_write_failures_total").increment(1);
    }

    /// The text exposition, with gauges set from `snap`.
    pub(crate) fn render(&self, snap: &Snapshot) -> String {
        set_key_gauges(snap);
        for (key, outcomes) in &snap.stats.attempts {
            let (provider, name) = key.split_once('/').unwrap_or(("", key));
            for (outcome, n) in outcomes {
                metrics::counter!("gateway_upstream_attempts_total", "provider" => provider.to_owned(), "key" => name.to_owned(), "outcome" => *outcome).absolute(*n);
            }
        }
        for b in &snap.budget {
            let labels = [
                ("scope", b.scope.to_string()),
                ("period", b.period.to_string()),
            ];
            metrics::gauge!("gateway_budget_spent_usd", &labels).set(b.spent.micros() as f64 / 1e6);
            metrics::gauge!("gateway_budget_left_usd", &labels).set(b.left.micros() as f64 / 1e6);
        }
        self.handle.render()
    }
}

fn set_key_gauges(snap: &Snapshot) {
    for p in &snap.providers {
        for k in &p.pool.keys {
            let state = match k.state {
                keypool_core::KeyState::Active => "active",
                keypool_core::KeyState::CoolingDown { .. } => "cooling_down",
                keypool_core::KeyState::HalfOpen => "half_open",
                keypool_core::KeyState::Exhausted { .. } => "exhausted",
                keypool_core::KeyState::Disabled { .. } => "disabled",
                keypool_core::KeyState::Draining { .. } => "draining",
            };
            let labels = [
                ("provider", p.name.clone()),
                ("key", k.name.to_string()),
                ("state", state.to_owned()),
            ];
            metrics::gauge!("gateway_key_up", &labels).set(if k.selectable { 1.0 } else { 0.0 });
            metrics::gauge!("gateway_key_tokens_today", "provider" => p.name.clone(), "key" => k.name.to_string()).set(k.tokens_today as f64);
        }
    }
}
