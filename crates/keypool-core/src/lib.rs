//! A pure, synchronous state machine for a pool of upstream LLM API keys.
//!
//! `keypool-core` decides which key serves the next request and what each
//! answer means for that key: per-key quotas and daily resets, cooldowns that
//! honour Retry-After, a circuit breaker per key, immediate disabling of
//! revoked keys, rotation with a grace period, events and a status report.
//!
//! # Key design decision: sans-IO
//!
//! Like `quinn-proto`, this crate is fully deterministic: it never does I/O,
//! never reads a clock, never spawns, and draws randomness only from a seed in
//! its [`PoolConfig`]. Time is passed in as a [`Timestamp`]; the caller reports
//! what happened ([`KeyPool::report`]) and asks when to wake it next
//! ([`KeyPool::poll_timeout`]). The same inputs always give the same outputs,
//! so the whole pool is tested in simulated time, and a thin async driver (the
//! `gateway-client` crate) owns the clock and the network.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use keypool_core::{KeyPool, KeyState, NewKey, Outcome, PoolConfig, Timestamp};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut pool = KeyPool::new(PoolConfig::default())?;
//! let t0 = Timestamp::from_unix_secs(1_795_322_452);
//! let prod = pool.add(NewKey::new("Production Key", "sk-prod-0123456789abcdef").tokens_per_day(5_000_000), t0)?;
//! let backup = pool.add(NewKey::new("Production Backup", "sk-prod-fedcba9876543210").tokens_per_day(5_000_000), t0)?;
//!
//! // Lease a key, call the upstream with `lease.secret().expose()`, report what happened.
//! let lease = pool.acquire(t0)?;
//! assert_eq!(lease.key(), prod);
//! pool.report(lease, Outcome::RateLimited { retry_after: Some(Duration::from_secs(20)) }, t0);
//!
//! // The rate-limited key cools down for 20 s; the other one serves meanwhile.
//! let lease = pool.acquire(t0)?;
//! assert_eq!(lease.key(), backup);
//! pool.report(lease, Outcome::success(1_200, 300, Duration::from_millis(850)), t0);
//! assert!(matches!(pool.state(prod), Some(KeyState::CoolingDown { .. })));
//!
//! // The driver sleeps until the next timer and hands the time back.
//! let wake = pool.poll_timeout().expect("a cooldown is pending");
//! pool.handle_timeout(wake);
//! assert_eq!(pool.state(prod), Some(KeyState::Active));
//! while let Some(event) = pool.poll_event() {
//!     println!("{event:?}");
//! }
//! println!("{}", pool.status_report());
//! # Ok(())
//! # }
//! ```
//!
//! # States
//!
//! | state | selected? | entered by | left by |
//! |---|---|---|---|
//! | `Active` | yes | adding, enabling, recovery | any penalising outcome |
//! | `CoolingDown` (rate limited) | no | [`Outcome::RateLimited`]: until `retry_after` or [`PoolConfig::rate_limit_cooldown`]; a longer one extends, a shorter one never shortens | the cooldown ending → `Active` |
//! | `CoolingDown` (breaker open) | no | [`Outcome::ServerError`], [`Outcome::Timeout`], [`Outcome::Connect`]: N consecutive, or a failure rate over the rolling window | the cooldown ending → `HalfOpen` |
//! | `HalfOpen` | one probe lease at a time | breaker cooldown ending | probe answered → `Active`; probe failed → `CoolingDown`, cooldown doubled up to the maximum |
//! | `Exhausted` | no | [`Outcome::QuotaExhausted`] | the daily reset → `Active` |
//! | `Disabled` | no | [`Outcome::Unauthorized`], [`Outcome::Forbidden`], [`KeyPool::disable`] | [`KeyPool::enable`] only |
//! | `Draining` | only when no other key can | [`KeyPool::rotate`], [`KeyPool::schedule_revoke`] | revocation at its time: the key leaves the pool |
//!
//! [`Outcome::ClientError`] and [`Outcome::Cancelled`] never penalise a key.
//! Besides its state, a key is skipped while it is at `max_in_flight`, at a
//! per-minute limit (until the minute ends), or at the soft fraction
//! ([`PoolConfig::soft_limit`], default 90%) of a daily limit (until the reset).
//!
//! # Leases that are never reported
//!
//! Each lease is recorded with a deadline ([`PoolConfig::lease_timeout`]). A
//! lease not reported by then is released as if cancelled (emitting
//! [`Event::LeaseExpired`]), so in-flight counts, reservations and a
//! half-open probe slot can never leak. A report that comes later still
//! counts the tokens it used ([`Reported::Late`]) but changes nothing else.
//!
//! # Token limits
//!
//! Request limits are exact: a request is counted when its lease is taken.
//! Token counts are only known from the answer, so the pool stops selecting
//! a key once used plus reserved tokens reach the soft fraction of a limit,
//! and [`AcquireOptions::estimated_tokens`] reserves a request's estimate
//! while it is in flight, so concurrent requests cannot race past a limit.

mod config;
mod error;
mod event;
mod index;
mod key;
mod outcome;
mod pool;
mod rng;
mod secret;
mod snapshot;
mod state;
mod time;

pub use config::{BreakerConfig, PoolConfig, Strategy};
pub use error::{AddKeyError, ConfigError, NoKeyAvailable, Unavailable, UnknownKey};
pub use event::Event;
pub use key::{AcquireOptions, Lease, Limits, NewKey};
pub use outcome::{Outcome, Usage};
pub use pool::{AFFINITY_SLACK, KeyPool, Reported};
pub use secret::{KeyRule, Secret, redact};
pub use snapshot::{KeySnapshot, PoolSnapshot, thousands};
pub use state::{CooldownCause, DisableCause, KeyId, KeyState, LeaseId, LimitKind, SavedKey};
pub use time::{ParseOffsetError, Timestamp, UtcOffset};
