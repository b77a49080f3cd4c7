//! Typed states as columns and back, the same in every database: key states,
//! rollout phases, bucket runs, times and counts.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use canary::Phase;
use keypool_core::{CooldownCause, DisableCause, KeyState, SavedKey, Timestamp};

use super::records::KeyOrigin;

/// A saved key's state as `(state, until_ms, cause)` columns, all `NULL`
/// for a key without one.
pub(crate) fn saved_key_state(
    saved: Option<&SavedKey>,
) -> (Option<&'static str>, Option<i64>, Option<&'static str>) {
    match saved {
        Some(saved) => {
            let (state, until, cause) = key_state(&saved.state);
            (Some(state), until, cause)
        }
        None => (None, None, None),
    }
}

/// Where a key came from, as a column.
pub(crate) fn key_origin(origin: KeyOrigin) -> &'static str {
    match origin {
        KeyOrigin::Config => "config",
        KeyOrigin::Runtime => "runtime",
    }
}

/// A key's origin from its column.
pub(crate) fn key_origin_from(column: &str) -> Result<KeyOrigin, String> {
    match column {
        "config" => Ok(KeyOrigin::Config),
        "runtime" => Ok(KeyOrigin::Runtime),
        other => Err(format!("unknown key origin {other:?}")),
    }
}

/// A key state as `(state, until_ms, cause)` columns.
pub(crate) fn key_state(s: &KeyState) -> (&'static str, Option<i64>, Option<&'static str>) {
    let ms = |t: &Timestamp| Some(i64::try_from(t.as_unix_millis()).unwrap_or(i64::MAX));
    match s {
        KeyState::Active => ("active", None, None),
        KeyState::CoolingDown { until, cause } => {
            ("cooling_down", ms(until), Some(cooldown_cause(*cause)))
        }
        KeyState::HalfOpen => ("half_open", None, None),
        KeyState::Exhausted { until } => ("exhausted", ms(until), None),
        KeyState::Disabled { cause } => ("disabled", None, Some(disable_cause(*cause))),
        KeyState::Draining { revoke_at } => ("draining", ms(revoke_at), None),
    }
}

/// The inverse of [`key_state`]; the error says which column is off.
pub(crate) fn key_state_from(
    state: &str,
    until_ms: Option<i64>,
    cause: Option<&str>,
) -> Result<KeyState, String> {
    let until = || {
        until_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Timestamp::from_unix_millis)
            .ok_or_else(|| format!("a {state} key state needs until_ms"))
    };
    let cause = cause.unwrap_or_default();
    Ok(match state {
        "active" => KeyState::Active,
        "cooling_down" => KeyState::CoolingDown {
            until: until()?,
            cause: match cause {
                "rate_limited" => CooldownCause::RateLimited,
                "breaker_open" => CooldownCause::BreakerOpen,
                "deferred" => CooldownCause::Deferred,
                other => return Err(format!("unknown cooldown cause {other:?}")),
            },
        },
        "half_open" => KeyState::HalfOpen,
        "exhausted" => KeyState::Exhausted { until: until()? },
        "disabled" => KeyState::Disabled {
            cause: match cause {
                "unauthorized" => DisableCause::Unauthorized,
                "forbidden" => DisableCause::Forbidden,
                "manual" => DisableCause::Manual,
                other => return Err(format!("unknown disable cause {other:?}")),
            },
        },
        "draining" => KeyState::Draining {
            revoke_at: until()?,
        },
        other => return Err(format!("unknown key state {other:?}")),
    })
}

fn cooldown_cause(c: CooldownCause) -> &'static str {
    match c {
        CooldownCause::RateLimited => "rate_limited",
        CooldownCause::BreakerOpen => "breaker_open",
        CooldownCause::Deferred => "deferred",
    }
}

fn disable_cause(c: DisableCause) -> &'static str {
    match c {
        DisableCause::Unauthorized => "unauthorized",
        DisableCause::Forbidden => "forbidden",
        DisableCause::Manual => "manual",
    }
}

/// A phase as `(phase, model, reason)` columns.
pub(crate) fn phase(p: &Phase) -> (&'static str, Option<&str>, Option<&str>) {
    match p {
        Phase::Running => ("running", None, None),
        Phase::FullRollout { model } => ("full_rollout", Some(model), None),
        Phase::RolledBack { reason } => ("rolled_back", None, Some(reason)),
    }
}

/// The inverse of [`phase`].
pub(crate) fn phase_from(
    phase: &str,
    model: Option<String>,
    reason: Option<String>,
) -> Result<Phase, String> {
    Ok(match (phase, model) {
        ("running", _) => Phase::Running,
        ("full_rollout", Some(model)) => Phase::FullRollout {
            model: Arc::from(model),
        },
        ("rolled_back", _) => Phase::RolledBack {
            reason: reason.unwrap_or_default(),
        },
        (other, _) => return Err(format!("unknown or incomplete phase {other:?}")),
    })
}

/// Bucket runs as text: `0-1000,2500-3000` (half-open ranges).
pub(crate) fn buckets(runs: &[(u16, u16)]) -> String {
    runs.iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`buckets`].
pub(crate) fn buckets_from(text: &str) -> Result<Vec<(u16, u16)>, String> {
    text.split(',')
        .filter(|run| !run.is_empty())
        .map(|run| {
            let (a, b) = run
                .split_once('-')
                .ok_or_else(|| format!("bucket run {run:?} is not start-end"))?;
            let n = |s: &str| {
                s.parse::<u16>()
                    .map_err(|e| format!("bucket run {run:?}: {e}"))
            };
            Ok((n(a)?, n(b)?))
        })
        .collect()
}

/// Unix milliseconds of a time (0 before the epoch).
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time of Unix milliseconds (the epoch for negative ones).
pub(crate) fn time(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A stored count (never negative) as an unsigned number.
pub(crate) fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// An unsigned count as SQLite's integer (saturating).
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A list of strings as a JSON array (client keys' scopes and models).
pub(crate) fn list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// The inverse of [`list`].
pub(crate) fn list_from(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text).map_err(|e| format!("list {text:?}: {e}"))
}

/// An audit view as JSON text.
pub(crate) fn json(v: Option<&serde_json::Value>) -> Option<String> {
    v.map(serde_json::Value::to_string)
}

/// The inverse of [`json`] (text that is not JSON reads as none).
pub(crate) fn json_from(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// A setting from its columns (`kind`, `name`, `value` as JSON text, `at`).
pub(crate) fn setting(
    kind: &str,
    name: String,
    value: Option<String>,
    at: i64,
) -> Result<super::records::SettingRecord, String> {
    let kind = super::records::SettingKind::parse(kind)
        .ok_or_else(|| format!("unknown setting kind {kind:?}"))?;
    let value = value
        .map(|v| serde_json::from_str(&v).map_err(|e| format!("setting {name:?}: {e}")))
        .transpose()?;
    Ok(super::records::SettingRecord {
        kind,
        name,
        value,
        at,
    })
}

/// A key's models as stored: a JSON array, or NULL for every model.
pub(crate) fn models(models: Option<&Vec<String>>) -> Option<String> {
    models.map(|m| serde_json::Value::from(m.clone()).to_string())
}

/// A key's models read back; a value that is not an array of strings is
/// an error naming it.
pub(crate) fn models_from(text: Option<&str>) -> Result<Option<Vec<String>>, String> {
    text.map(|t| serde_json::from_str::<Vec<String>>(t).map_err(|e| format!("models {t:?}: {e}")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_state_comes_back_from_its_columns() {
        let t = Timestamp::from_unix_millis(1_795_322_452_000);
        for s in [
            KeyState::Active,
            KeyState::HalfOpen,
            KeyState::CoolingDown {
                until: t,
                cause: CooldownCause::Deferred,
            },
            KeyState::Exhausted { until: t },
            KeyState::Disabled {
                cause: DisableCause::Forbidden,
            },
            KeyState::Draining { revoke_at: t },
        ] {
            let (state, until, cause) = key_state(&s);
            assert_eq!(key_state_from(state, until, cause), Ok(s));
        }
        assert!(key_state_from("exhausted", None, None).is_err());
        assert!(key_state_from("sleeping", None, None).is_err());
        assert!(key_state_from("disabled", None, Some("bored")).is_err());
    }

    #[test]
    fn phases_and_bucket_runs_come_back() {
        for p in [
            Phase::Running,
            Phase::FullRollout { model: "m".into() },
            Phase::RolledBack {
                reason: "slow".into(),
            },
        ] {
            let (phase, model, reason) = phase(&p);
            let back = phase_from(phase, model.map(str::to_owned), reason.map(str::to_owned));
            assert_eq!(back, Ok(p));
        }
        let runs = vec![(0, 1000), (2500, 10_000)];
        assert_eq!(buckets(&runs), "0-1000,2500-10000");
        assert_eq!(buckets_from(&buckets(&runs)), Ok(runs));
        assert_eq!(buckets_from(""), Ok(vec![]));
        assert!(buckets_from("5").is_err() && buckets_from("1-x").is_err());
    }
}
