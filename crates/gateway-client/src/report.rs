//! The text dashboard and the serializable snapshot.

use std::fmt::Write as _;

use budget::Money;
use keypool_core::PoolSnapshot;
use serde::Serialize;

use crate::client::{Client, lock};
use crate::stats::StatsSnapshot;

/// One provider's pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProviderSnapshot {
    /// Its name.
    pub name: String,
    /// Its priority (0 first).
    pub priority: u32,
    /// Its keys.
    pub pool: PoolSnapshot,
}

/// One canary rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RolloutSnapshot {
    /// The baseline model.
    pub model: String,
    /// Its phase.
    pub phase: canary::Phase,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Each candidate and its share.
    pub candidates: Vec<canary::Candidate>,
}

/// One budget limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitSnapshot {
    /// What it applies to.
    pub scope: budget::Scope,
    /// Its period.
    pub period: budget::Period,
    /// The limit.
    pub limit: Money,
    /// Spent this period.
    pub spent: Money,
    /// Reserved by requests in flight.
    pub reserved: Money,
    /// What is left.
    pub left: Money,
}

/// Everything the client knows, at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    /// Providers by priority.
    pub providers: Vec<ProviderSnapshot>,
    /// Canary rollouts.
    pub rollouts: Vec<RolloutSnapshot>,
    /// Budget limits.
    pub budget: Vec<LimitSnapshot>,
    /// Statistics.
    pub stats: StatsSnapshot,
}

impl Client {
    /// A serializable snapshot of every layer.
    pub fn snapshot(&self) -> Snapshot {
        let providers = self
            .inner
            .providers
            .iter()
            .map(|p| ProviderSnapshot {
                name: p.name.to_string(),
                priority: p.priority,
                pool: lock(&p.pool).snapshot(),
            })
            .collect();
        let mut rollouts: Vec<RolloutSnapshot> = self
            .inner
            .rollouts
            .iter()
            .map(|(model, slot)| {
                let r = lock(&slot.rollout);
                RolloutSnapshot {
                    model: model.clone(),
                    phase: r.phase().clone(),
                    enabled: r.is_enabled(),
                    candidates: r.candidates().to_vec(),
                }
            })
            .collect();
        rollouts.sort_by(|a, b| a.model.cmp(&b.model));
        let budget = self.inner.ledger.as_ref().map_or_else(Vec::new, |l| {
            lock(l)
                .limits()
                .map(|(limit, spent, reserved)| LimitSnapshot {
                    scope: limit.scope.clone(),
                    period: limit.period,
                    limit: limit.hard,
                    spent,
                    reserved,
                    left: limit.hard.saturating_sub(spent.saturating_add(reserved)),
                })
                .collect()
        });
        Snapshot {
            providers,
            rollouts,
            budget,
            stats: lock(&self.inner.stats).snapshot(),
        }
    }

    /// The text dashboard: each provider's keys (a line each, 🟢/🔴, usage,
    /// errors and state), totals, the canary split, and budget spent and left.
    pub fn status_report(&self) -> String {
        let snap = self.snapshot();
        let mut out = String::new();
        for p in &self.inner.providers {
            let _ = writeln!(out, "── provider {} (priority {}) ──", p.name, p.priority);
            out.push_str(&lock(&p.pool).status_report());
        }
        let t = &snap.stats.total;
        let _ = writeln!(
            out,
            "Requests: {} ({} failed, {} upstream attempts, {} rotations){}",
            t.requests,
            t.failures,
            t.attempts,
            snap.stats.rotations,
            t.p95_ms
                .map(|p| format!(", p95 {p:.0} ms"))
                .unwrap_or_default()
        );
        for r in &snap.rollouts {
            let shares: Vec<String> = r
                .candidates
                .iter()
                .map(|c| format!("{} {}", c.model, c.share))
                .collect();
            let _ = writeln!(
                out,
                "Canary {}: {} [{}]{}",
                r.model,
                shares.join(", "),
                r.phase,
                if r.enabled { "" } else { " (disabled)" }
            );
        }
        for l in &snap.budget {
            let _ = writeln!(
                out,
                "Budget {} {}: spent {} of {}, {} left",
                l.scope, l.period, l.spent, l.limit, l.left
            );
        }
        out
    }
}
