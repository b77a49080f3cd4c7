//! Prometheus metrics: request counters and durations recorded as requests
//! end, gauges set from a snapshot at scrape time, rendered in the text
//! format.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use gateway_client::{ArmInfo, Snapshot};
use std::fmt::Write as _;

use gateway_client::ClientEvent;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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

/// Buckets of `gateway_request_duration_seconds`, in seconds: from a
/// proxied answer's fraction of a millisecond to a long generation.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

fn builder() -> PrometheusBuilder {
    let duration = Matcher::Full("gateway_request_duration_seconds".into());
    // The buckets are constants the builder accepts (non-empty); should it
    // ever refuse them, durations are exported as a summary rather than not
    // at all.
    PrometheusBuilder::new()
        .set_buckets_for_metric(duration, &DURATION_BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// The process-wide Prometheus recorder (metrics has one global recorder).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match builder().install_recorder() {
            Ok(h) => h,
            // Another recorder is installed (a program embedding the
            // gateway): keep ours local.
            Err(_) => builder().build_recorder().handle(),
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

    /// Counts what an event says about keys and the budget: usage warnings,
    /// budget thresholds crossed, spend anomalies.
    pub(crate) fn event(&self, event: &ClientEvent) {
        match event {
            ClientEvent::Pool {
                provider,
                event:
                    keypool_core::Event::UsageWarning {
                        name,
                        limit,
                        percent,
                        ..
                    },
            } => {
                let limit = match limit {
                    keypool_core::LimitKind::TokensPerDay => "tokens_per_day",
                    keypool_core::LimitKind::RequestsPerDay => "requests_per_day",
                };
                metrics::counter!("gateway_key_usage_warnings_total", "provider" => provider.to_string(), "key" => name.to_string(), "limit" => limit, "percent" => percent.to_string()).increment(1);
            }
            ClientEvent::Budget(budget::Event::Threshold {
                scope,
                period,
                percent,
                ..
            }) => {
                metrics::counter!("gateway_budget_thresholds_total", "scope" => scope.to_string(), "period" => period.to_string(), "percent" => percent.to_string()).increment(1);
            }
            ClientEvent::Budget(budget::Event::Anomaly { .. }) => {
                metrics::counter!("gateway_budget_anomalies_total").increment(1);
            }
            _ => {}
        }
    }

    /// The text exposition: what the recorder holds, then each key's gauges
    /// and the budget's, written from `snap` (so a key has one `state`
    /// series, its current one, and a removed key none).
    pub(crate) fn render(&self, snap: &Snapshot, store_statements: Option<u64>) -> String {
        if let Some(n) = store_statements {
            metrics::counter!("gateway_store_statements_total").absolute(n);
        }
        for (key, outcomes) in &snap.stats.attempts {
            let (provider, name) = key.split_once('/').unwrap_or(("", key));
            for (outcome, n) in outcomes {
                metrics::counter!("gateway_upstream_attempts_total", "provider" => provider.to_owned(), "key" => name.to_owned(), "outcome" => *outcome).absolute(*n);
            }
        }
        for (key, c) in &snap.stats.per_key {
            let (provider, name) = key.split_once('/').unwrap_or(("", key));
            let labels = [("provider", provider.to_owned()), ("key", name.to_owned())];
            metrics::counter!("gateway_prompt_tokens_total", &labels).absolute(c.prompt_tokens);
            metrics::counter!("gateway_cached_tokens_total", &labels).absolute(c.cached_tokens);
            metrics::counter!("gateway_cache_saved_micros_total", &labels)
                .absolute(c.cache_saved_micros);
        }
        let mut text = self.handle.render();
        write_gauges(&mut text, snap);
        text
    }
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_gauges(out: &mut String, snap: &Snapshot) {
    let _ = writeln!(
        out,
        "# HELP gateway_key_up 1 when the key could serve now, labelled with its current state"
    );
    let _ = writeln!(out, "# TYPE gateway_key_up gauge");
    for p in &snap.providers {
        for k in &p.pool.keys {
            let state = state_label(&k.state);
            let up = u8::from(k.selectable);
            let (provider, key) = (label(&p.name), label(&k.name));
            let _ = writeln!(
                out,
                "gateway_key_up{{provider=\"{provider}\",key=\"{key}\",state=\"{state}\"}} {up}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP gateway_key_tokens_today tokens the key used today"
    );
    let _ = writeln!(out, "# TYPE gateway_key_tokens_today gauge");
    for p in &snap.providers {
        for k in &p.pool.keys {
            let (provider, key) = (label(&p.name), label(&k.name));
            let tokens = k.tokens_today;
            let _ = writeln!(
                out,
                "gateway_key_tokens_today{{provider=\"{provider}\",key=\"{key}\"}} {tokens}"
            );
        }
    }
    type Amount = fn(&gateway_client::LimitSnapshot) -> budget::Money;
    let amounts: [(&str, &str, Amount); 2] = [
        ("gateway_budget_spent_usd", "spent this period", |b| b.spent),
        ("gateway_budget_left_usd", "left this period", |b| b.left),
    ];
    for (name, help, value) in amounts {
        let _ = writeln!(
            out,
            "# HELP {name} each budget limit's money {help} (display only: accounting is in integer micro-dollars)"
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for b in &snap.budget {
            let (scope, period) = (label(&b.scope.to_string()), b.period);
            let dollars = value(b).decimal();
            let _ = writeln!(
                out,
                "{name}{{scope=\"{scope}\",period=\"{period}\"}} {dollars}"
            );
        }
    }
}

fn state_label(state: &keypool_core::KeyState) -> &'static str {
    match state {
        keypool_core::KeyState::Active => "active",
        keypool_core::KeyState::CoolingDown { .. } => "cooling_down",
        keypool_core::KeyState::HalfOpen => "half_open",
        keypool_core::KeyState::Exhausted { .. } => "exhausted",
        keypool_core::KeyState::Disabled { .. } => "disabled",
        keypool_core::KeyState::Draining { .. } => "draining",
    }
}
