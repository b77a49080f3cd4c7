//! A point-in-time view of the pool, and the plain-text status report.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::key::Limits;
use crate::pool::KeyPool;
use crate::state::{KeyId, KeyState};
use crate::time::Timestamp;

/// One key as a snapshot shows it. Never contains the secret, only its redacted form.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct KeySnapshot {
    /// The key's id.
    pub id: KeyId,
    /// Its name.
    pub name: Arc<str>,
    /// Its group or provider label.
    pub group: Arc<str>,
    /// Its redacted secret, e.g. `sk-…f00d`.
    pub secret: String,
    /// Priority tier (0 = primary).
    pub tier: u8,
    /// Weight for weighted selection.
    pub weight: u32,
    /// Its state.
    pub state: KeyState,
    /// Whether it could be selected right now.
    pub selectable: bool,
    /// Its limits.
    pub limits: Limits,
    /// The only models it may serve (`None`: any).
    pub models: Option<Vec<Arc<str>>>,
    /// Tokens used today.
    pub tokens_today: u64,
    /// Requests made today.
    pub requests_today: u32,
    /// Percent of the token limit used today, if it has one.
    pub tokens_percent: Option<f64>,
    /// Percent of the request limit used today, if it has one.
    pub requests_percent: Option<f64>,
    /// Errors today (rate limits, quota, auth, server, timeouts, connection failures).
    pub errors_today: u32,
    /// Current run of breaker failures.
    pub consecutive_failures: u16,
    /// Leases in flight.
    pub in_flight: u32,
    /// When it was last leased, if ever.
    pub last_used: Option<Timestamp>,
    /// Latency EWMA in milliseconds (0 until the first success).
    pub latency_ewma_ms: f64,
}

/// The whole pool at one moment.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PoolSnapshot {
    /// The pool's time when the snapshot was taken.
    pub at: Timestamp,
    /// Every key, in slot order.
    pub keys: Vec<KeySnapshot>,
    /// Keys that could be selected right now.
    pub available: usize,
    /// Leases out.
    pub outstanding_leases: usize,
    /// Events dropped because they were not drained.
    pub events_dropped: u64,
}

fn percent(used: u64, limit: Option<u64>) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    limit.map(|l| used as f64 * 100.0 / l as f64)
}

impl KeyPool {
    /// One key's snapshot. `O(1)`.
    pub fn key_snapshot(&self, id: KeyId) -> Option<KeySnapshot> {
        let e = self.entry(id)?;
        let limits = e.limits.expand();
        Some(KeySnapshot {
            id,
            name: e.name.clone(),
            group: self.group_name(e),
            secret: e.secret.redacted(),
            tier: e.tier,
            weight: e.weight,
            state: self.state_of(e),
            selectable: self.is_selectable(id),
            limits,
            models: self.models_of(id.slot).map(|m| m.0.to_vec()),
            tokens_today: e.tokens_today,
            requests_today: e.requests_today,
            tokens_percent: percent(e.tokens_today, limits.tokens_per_day),
            requests_percent: percent(
                u64::from(e.requests_today),
                limits.requests_per_day.map(u64::from),
            ),
            errors_today: e.errors_today,
            consecutive_failures: e.consecutive_failures,
            in_flight: e.in_flight,
            last_used: (e.last_used != Timestamp::EPOCH).then_some(e.last_used),
            latency_ewma_ms: f64::from(e.latency_ewma_us) / 1000.0,
        })
    }

    /// Every key's snapshot. `O(n)`.
    pub fn snapshot(&self) -> PoolSnapshot {
        PoolSnapshot {
            at: self.now(),
            keys: self
                .key_ids()
                .filter_map(|id| self.key_snapshot(id))
                .collect(),
            available: self.available(),
            outstanding_leases: self.outstanding_leases(),
            events_dropped: self.events_dropped(),
        }
    }

    /// The plain-text status report of the first seed: a line per key with
    /// 🟢 (selectable) or 🔴, its name, percent of its daily token limit,
    /// tokens used/limit, errors today, and its state when not active.
    ///
    /// ```text
    /// 📊 Key Pool Status (2026-11-22T04:40:52.000Z)
    /// ==================================================
    /// 🟢 Production Key: 12.3% (615,000/5,000,000) | Errors: 0
    /// 🔴 Testing Key: 0.0% (0/500,000) | Errors: 1 | disabled: unauthorized
    /// ```
    pub fn status_report(&self) -> String {
        let mut out = format!("📊 Key Pool Status ({})\n{}\n", self.now(), "=".repeat(50));
        for k in self.snapshot().keys {
            let light = if k.selectable { "🟢" } else { "🔴" };
            let usage = match k.limits.tokens_per_day {
                Some(limit) => format!(
                    "{:.1}% ({}/{})",
                    k.tokens_percent.unwrap_or(0.0),
                    thousands(k.tokens_today),
                    thousands(limit)
                ),
                None => format!("{} tokens (no limit)", thousands(k.tokens_today)),
            };
            let _ = write!(
                out,
                "{light} {}: {usage} | Errors: {}",
                k.name, k.errors_today
            );
            if k.state != KeyState::Active {
                let _ = write!(out, " | {}", k.state);
            } else if !k.selectable {
                out.push_str(" | at a limit");
            }
            out.push('\n');
        }
        if self.is_empty() {
            out.push_str("(no keys)\n");
        }
        out
    }
}

/// Formats `n` with thousands separators: `5000000` → `5,000,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(5_000_000), "5,000,000");
        assert_eq!(super::thousands(12_345_678), "12,345,678");
    }
}
