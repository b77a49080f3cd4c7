//! Keys: what a caller adds ([`NewKey`], [`Limits`]), what it borrows ([`Lease`]),
//! and the compact per-key record the pool keeps.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;

use crate::error::AddKeyError;
use crate::secret::Secret;
use crate::state::{CooldownCause, DisableCause, KeyId, LeaseId};
use crate::time::Timestamp;

/// Optional per-key limits. `None` means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Limits {
    /// Tokens per day (prompt + completion), reset at the daily reset.
    pub tokens_per_day: Option<u64>,
    /// Requests per day, reset at the daily reset.
    pub requests_per_day: Option<u32>,
    /// Requests per UTC minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens per UTC minute.
    pub tokens_per_minute: Option<u32>,
    /// Leases in flight at once.
    pub max_in_flight: Option<u32>,
}

/// Limits as stored: `NonZero` so that `Option` costs no space (24 bytes in all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CompactLimits {
    pub(crate) tokens_per_day: Option<NonZeroU64>,
    pub(crate) requests_per_day: Option<NonZeroU32>,
    pub(crate) requests_per_minute: Option<NonZeroU32>,
    pub(crate) tokens_per_minute: Option<NonZeroU32>,
    pub(crate) max_in_flight: Option<NonZeroU32>,
}

impl CompactLimits {
    pub(crate) fn new(name: &str, l: &Limits) -> Result<Self, AddKeyError> {
        let zero = |limit| AddKeyError::ZeroLimit {
            name: name.to_owned(),
            limit,
        };
        let nz32 = |v: Option<u32>, limit| match v {
            None => Ok(None),
            Some(v) => NonZeroU32::new(v).map(Some).ok_or_else(|| zero(limit)),
        };
        Ok(CompactLimits {
            tokens_per_day: match l.tokens_per_day {
                None => None,
                Some(v) => Some(NonZeroU64::new(v).ok_or_else(|| zero("tokens_per_day"))?),
            },
            requests_per_day: nz32(l.requests_per_day, "requests_per_day")?,
            requests_per_minute: nz32(l.requests_per_minute, "requests_per_minute")?,
            tokens_per_minute: nz32(l.tokens_per_minute, "tokens_per_minute")?,
            max_in_flight: nz32(l.max_in_flight, "max_in_flight")?,
        })
    }

    pub(crate) fn expand(&self) -> Limits {
        Limits {
            tokens_per_day: self.tokens_per_day.map(NonZeroU64::get),
            requests_per_day: self.requests_per_day.map(NonZeroU32::get),
            requests_per_minute: self.requests_per_minute.map(NonZeroU32::get),
            tokens_per_minute: self.tokens_per_minute.map(NonZeroU32::get),
            max_in_flight: self.max_in_flight.map(NonZeroU32::get),
        }
    }
}

/// A key to add to the pool, built with chained setters.
///
/// ```
/// use keypool_core::NewKey;
/// let key = NewKey::new("Production Key", "sk-prod-0123456789abcdef")
///     .group("relay")
///     .tier(0)
///     .weight(2)
///     .tokens_per_day(5_000_000)
///     .requests_per_minute(500);
/// assert_eq!(key.name(), "Production Key");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub(crate) name: String,
    pub(crate) secret: Secret,
    pub(crate) group: String,
    pub(crate) tier: u8,
    pub(crate) weight: u32,
    pub(crate) limits: Limits,
    pub(crate) models: Option<Arc<Models>>,
}

/// The models a key may serve, kept beside the pool's entries (most keys
/// have none, and the entry's size is part of the memory budget).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Models(pub(crate) Box<[Arc<str>]>);

impl Models {
    /// Whether a model known by any of `names` is one of these (any is
    /// when `names` is empty).
    pub(crate) fn serve(&self, names: &[&str]) -> bool {
        names.is_empty() || self.0.iter().any(|m| names.iter().any(|n| **m == **n))
    }
}

impl NewKey {
    /// A key with a human label and its secret; group `default`, tier 0, weight 1, no limits.
    pub fn new(name: impl Into<String>, secret: impl Into<Secret>) -> Self {
        NewKey {
            name: name.into(),
            secret: secret.into(),
            group: "default".to_owned(),
            tier: 0,
            weight: 1,
            limits: Limits::default(),
            models: None,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Group or provider label, e.g. `relay` or `openai`.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Priority tier: 0 is primary; higher tiers serve only when no lower tier can.
    pub fn tier(mut self, tier: u8) -> Self {
        self.tier = tier;
        self
    }

    /// Weight for [`Strategy::Weighted`](crate::Strategy::Weighted); at least 1.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// All limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Tokens per day.
    pub fn tokens_per_day(mut self, n: u64) -> Self {
        self.limits.tokens_per_day = Some(n);
        self
    }

    /// Requests per day.
    pub fn requests_per_day(mut self, n: u32) -> Self {
        self.limits.requests_per_day = Some(n);
        self
    }

    /// Requests per minute.
    pub fn requests_per_minute(mut self, n: u32) -> Self {
        self.limits.requests_per_minute = Some(n);
        self
    }

    /// Tokens per minute.
    pub fn tokens_per_minute(mut self, n: u32) -> Self {
        self.limits.tokens_per_minute = Some(n);
        self
    }

    /// Maximum leases in flight at once.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.limits.max_in_flight = Some(n);
        self
    }

    /// The only models this key may be picked for (see
    /// [`AcquireOptions::model`]); without it, any model. An empty list is
    /// the same as none: a key for no model would never serve.
    pub fn models<S: AsRef<str>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        let list: Box<[Arc<str>]> = models.into_iter().map(|m| Arc::from(m.as_ref())).collect();
        self.models = (!list.is_empty()).then(|| Arc::new(Models(list)));
        self
    }
}

/// A key lent to the caller for one attempt. Report exactly one outcome for it
/// with [`KeyPool::report`](crate::KeyPool::report), which consumes it.
///
/// A lease that is never reported is released after the pool's lease timeout
/// (see [`PoolConfig::lease_timeout`](crate::PoolConfig::lease_timeout)), so
/// in-flight counts cannot leak.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the outcome with KeyPool::report, or the key stays in flight until the lease times out"]
pub struct Lease {
    pub(crate) id: LeaseId,
    pub(crate) key: KeyId,
    pub(crate) name: Arc<str>,
    pub(crate) secret: Secret,
    pub(crate) probe: bool,
    pub(crate) acquired_at: Timestamp,
}

impl Lease {
    /// The lease's id.
    pub fn id(&self) -> LeaseId {
        self.id
    }
    /// The leased key.
    pub fn key(&self) -> KeyId {
        self.key
    }
    /// The key's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
    /// The key's secret, for the transport.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
    /// Whether this is the single probe of a half-open breaker.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
    /// When it was acquired.
    pub fn acquired_at(&self) -> Timestamp {
        self.acquired_at
    }
}

/// What a caller asks of [`KeyPool::acquire_with`](crate::KeyPool::acquire_with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcquireOptions<'a> {
    /// Tokens this request is expected to use; reserved against the key's token
    /// limits while the lease is out. A key whose remaining daily or per-minute
    /// token budget cannot hold it is skipped.
    pub estimated_tokens: u64,
    /// Keys not to use (e.g. the ones that just failed for this request).
    pub exclude: &'a [KeyId],
    /// The model asked for, by any of its names (the client's and the
    /// upstream's): keys added with [`NewKey::models`] that list none of
    /// them are skipped. Empty: every key may serve.
    pub model: &'a [&'a str],
    /// Only this key (a request pinned to the key that made an id it
    /// names): leased if it can serve, else none. `O(1)`.
    pub only: Option<KeyId>,
    /// The key to lease while it can serve and is not far busier than the
    /// key the strategy would pick (prompt-cache affinity: a conversation
    /// kept on the key whose provider cache holds its prefix). See
    /// [`AFFINITY_SLACK`](crate::AFFINITY_SLACK) for the bound. Ignored
    /// when `only` is set.
    pub prefer: Option<KeyId>,
}

/// A key's health, apart from limits. Cooling keys' end time is `Entry::until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Active,
    Cooling(CooldownCause),
    HalfOpen,
    Exhausted,
    Disabled(DisableCause),
}

impl Health {
    /// Whether the key can serve by state (not counting limits and in-flight probes).
    pub(crate) fn is_serviceable(self) -> bool {
        matches!(self, Health::Active | Health::HalfOpen)
    }
}

/// Why a key is not in the eligibility index; indexes the pool's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    CoolingDown = 0,
    BreakerOpen,
    Exhausted,
    Unauthorized,
    Forbidden,
    Disabled,
    Busy,
    MinuteLimit,
    DailyLimit,
}

pub(crate) const BLOCK_KINDS: usize = 9;

/// A sliding-window failure counter: the current fixed window plus the
/// previous one weighted by how much of it still overlaps the sliding window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FailureWindow {
    start: u32,
    // u16 counters saturate at 65 535 a window: a key answering that often is
    // judged on a saturated sample, which keeps the rate meaningful.
    cur_requests: u16,
    cur_failures: u16,
    prev_requests: u16,
    prev_failures: u16,
}

impl FailureWindow {
    fn roll(&mut self, now: Timestamp, window_ms: u64) {
        let idx = u32::try_from(now.as_unix_millis() / window_ms).unwrap_or(u32::MAX);
        if idx == self.start {
            return;
        }
        if idx == self.start.wrapping_add(1) {
            self.prev_requests = self.cur_requests;
            self.prev_failures = self.cur_failures;
        } else {
            self.prev_requests = 0;
            self.prev_failures = 0;
        }
        self.cur_requests = 0;
        self.cur_failures = 0;
        self.start = idx;
    }

    pub(crate) fn record(&mut self, now: Timestamp, window_ms: u64, failed: bool) {
        self.roll(now, window_ms);
        self.cur_requests = self.cur_requests.saturating_add(1);
        if failed {
            self.cur_failures = self.cur_failures.saturating_add(1);
        }
    }

    /// Estimated (requests, failures) over the last `window_ms`.
    pub(crate) fn estimate(&mut self, now: Timestamp, window_ms: u64) -> (u64, u64) {
        self.roll(now, window_ms);
        let overlap = window_ms - now.as_unix_millis() % window_ms;
        let weigh = |prev: u16| u64::from(prev) * overlap / window_ms;
        (
            weigh(self.prev_requests) + u64::from(self.cur_requests),
            weigh(self.prev_failures) + u64::from(self.cur_failures),
        )
    }

    pub(crate) fn reset(&mut self) {
        *self = FailureWindow::default();
    }
}

/// Everything the pool keeps about one key: 152 bytes. Kept compact on
/// purpose (the memory test holds the pool's whole bookkeeping to at most 256
/// bytes a key); what can be derived from these fields is not stored (the
/// block reason, the wake time).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: Arc<str>,
    pub(crate) secret: Secret,
    pub(crate) limits: CompactLimits,
    pub(crate) tokens_today: u64,
    /// Stride-scheduling virtual time ([`Strategy::Weighted`](crate::Strategy::Weighted)).
    pub(crate) pass: u64,
    /// End of the current cooldown (meaningful while `health` is `Cooling`).
    pub(crate) until: Timestamp,
    /// When a Draining key leaves the pool; `Timestamp::MAX` if never.
    pub(crate) revoke_at: Timestamp,
    pub(crate) last_used: Timestamp,
    pub(crate) window: FailureWindow,
    /// Tokens reserved by leases in flight (saturating).
    pub(crate) reserved_tokens: u32,
    pub(crate) weight: u32,
    pub(crate) requests_today: u32,
    /// The UTC minute the `minute_*` counters belong to.
    pub(crate) minute: u32,
    pub(crate) minute_requests: u32,
    pub(crate) minute_tokens: u32,
    pub(crate) in_flight: u32,
    pub(crate) errors_today: u32,
    pub(crate) latency_ewma_us: u32,
    pub(crate) consecutive_failures: u16,
    pub(crate) health: Health,
    pub(crate) group: u8,
    pub(crate) tier: u8,
    pub(crate) opens: u8,
    /// Bits 0-3: warned at 75%/90% of tokens/day, 75%/90% of requests/day.
    /// Bit 7: the half-open probe is out.
    pub(crate) flags: u8,
}

pub(crate) const PROBE_OUT: u8 = 1 << 7;
pub(crate) const WARNED: u8 = 0x0f;

impl Entry {
    pub(crate) fn is_draining(&self) -> bool {
        self.revoke_at != Timestamp::MAX
    }

    pub(crate) fn probe_out(&self) -> bool {
        self.flags & PROBE_OUT != 0
    }

    pub(crate) fn set_probe_out(&mut self, out: bool) {
        if out {
            self.flags |= PROBE_OUT;
        } else {
            self.flags &= !PROBE_OUT;
        }
    }

    /// Selection class: draining keys after all others, then by tier.
    pub(crate) fn class(&self) -> u16 {
        (u16::from(self.is_draining()) << 8) | u16::from(self.tier)
    }
}

/// A lease's record, kept until it is reported or expires.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaseRecord {
    pub(crate) key: KeyId,
    pub(crate) deadline: Timestamp,
    pub(crate) reserved: u32,
    pub(crate) probe: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-key record's size is part of the memory budget (see tests/memory.rs).
    #[test]
    fn entry_is_compact() {
        assert_eq!(size_of::<Entry>(), 152);
        assert_eq!(size_of::<CompactLimits>(), 24);
        assert_eq!(size_of::<FailureWindow>(), 12);
    }
}
