//! One client key: its hash, scopes, models, rate and revocation time.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::StoredClientKey;

/// SHA-256 of a key, as lowercase hex.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A scope a client key may hold.
pub const CHAT_WRITE: &str = "chat:write";
/// Embeddings.
pub const EMBEDDINGS_READ: &str = "embeddings:read";

/// A scope for the management API (`/v1/keys`, `/v1/usage`, `/admin/…`).
pub const ADMIN: &str = "admin";

/// A scope for the operators' views (`/metrics`, `/status`, `/status.json`,
/// `/dashboard.json`) where they are not public.
pub const STATUS_READ: &str = "status:read";

/// The scopes a client key may hold.
pub const SCOPES: [&str; 4] = [CHAT_WRITE, EMBEDDINGS_READ, ADMIN, STATUS_READ];

/// "Never", for a key's revocation time.
const NEVER: i64 = i64::MAX;

/// A client key as the config file gives it.
#[derive(Clone, Debug)]
pub struct KeySpec {
    /// Its name.
    pub name: String,
    /// SHA-256 of the key, in hex.
    pub key_sha256: String,
    /// Its team.
    pub team: Option<String>,
    /// Models it may use; empty means all.
    pub models: Vec<String>,
    /// Its scopes; `None` for the default (`chat:write`, `embeddings:read`).
    pub scopes: Option<Vec<String>>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
}

/// One client key.
pub struct ClientKey {
    /// Its id, for keys created through the API (`None` for config keys).
    pub id: Option<String>,
    /// Its name.
    pub name: String,
    hash: [u8; 32],
    /// Its team.
    pub team: Option<String>,
    /// Allowed models; empty = all.
    pub models: Vec<String>,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Requests per minute, if limited.
    pub rate_limit: Option<u32>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Unix milliseconds from which the key is refused; `NEVER` if not set.
    revoke_at: AtomicI64,
    /// Unix milliseconds (0 for a key from the config file).
    pub created_at: i64,
    /// The key that replaced it, after a rotation.
    rotated_to: Mutex<Option<String>>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("team", &self.team)
            .finish_non_exhaustive()
    }
}

fn parse_hash(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim().to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("key_sha256 must be 64 hex digits (use `gateway hash-key`)".into());
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
            .map_err(|e| e.to_string())?;
    }
    Ok(hash)
}

fn limiter(rate_limit: Option<u32>) -> Result<Option<DefaultDirectRateLimiter>, String> {
    match rate_limit {
        None => Ok(None),
        Some(rpm) => Ok(Some(RateLimiter::direct(Quota::per_minute(
            NonZeroU32::new(rpm).ok_or("rate_limit must be at least 1")?,
        )))),
    }
}

/// Checks scope names; the error names the unknown one.
pub fn check_scopes(scopes: &[String]) -> Result<(), String> {
    match scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        Some(s) => Err(format!(
            "unknown scope {s:?} (known: {})",
            SCOPES.join(", ")
        )),
        None => Ok(()),
    }
}

impl ClientKey {
    /// A key from the config file (it has no id); the error says what is wrong.
    pub fn configured(spec: KeySpec) -> Result<Self, String> {
        let scopes = spec
            .scopes
            .unwrap_or_else(|| vec![CHAT_WRITE.into(), EMBEDDINGS_READ.into()]);
        check_scopes(&scopes)?;
        Ok(ClientKey {
            id: None,
            name: spec.name,
            hash: parse_hash(&spec.key_sha256)?,
            team: spec.team,
            models: spec.models,
            scopes,
            rate_limit: spec.rate_limit,
            limiter: limiter(spec.rate_limit)?,
            revoke_at: AtomicI64::new(NEVER),
            created_at: 0,
            rotated_to: Mutex::new(None),
        })
    }

    /// From its stored form (a key created through the API).
    pub fn from_stored(k: &StoredClientKey) -> Result<Self, String> {
        Ok(ClientKey {
            id: Some(k.id.clone()),
            name: k.name.clone(),
            hash: parse_hash(&k.hash)?,
            team: k.team.clone(),
            models: k.models.clone(),
            scopes: k.scopes.clone(),
            rate_limit: k.rate_limit,
            limiter: limiter(k.rate_limit)?,
            revoke_at: AtomicI64::new(k.revoke_at.unwrap_or(NEVER)),
            created_at: k.created_at,
            rotated_to: Mutex::new(k.rotated_to.clone()),
        })
    }

    /// The key as stored; `None` for a key from the config file (it has no id).
    pub fn record(&self) -> Option<StoredClientKey> {
        Some(StoredClientKey {
            id: self.id.clone()?,
            name: self.name.clone(),
            team: self.team.clone(),
            hash: self.hash.iter().map(|b| format!("{b:02x}")).collect(),
            scopes: self.scopes.clone(),
            models: self.models.clone(),
            rate_limit: self.rate_limit,
            created_at: self.created_at,
            revoke_at: self.revoke_at(),
            rotated_to: self
                .rotated_to
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        })
    }

    /// Records the key that replaced this one.
    pub fn set_rotated_to(&self, id: &str) {
        *self
            .rotated_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id.to_owned());
    }

    /// Whether the key may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    /// Whether the key holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// When the key is refused from (Unix milliseconds), if scheduled.
    pub fn revoke_at(&self) -> Option<i64> {
        Some(self.revoke_at.load(Ordering::SeqCst)).filter(|&t| t != NEVER)
    }

    /// Refuses the key from `at` (Unix milliseconds); an earlier schedule is kept.
    pub fn revoke_from(&self, at: i64) -> i64 {
        self.revoke_at.fetch_min(at, Ordering::SeqCst).min(at)
    }

    /// Whether the key is refused at `now_ms`.
    pub fn is_revoked(&self, now_ms: i64) -> bool {
        self.revoke_at.load(Ordering::SeqCst) <= now_ms
    }

    /// Takes one request from the key's rate; `Err(wait)` if over it.
    pub fn check_rate(&self) -> Result<(), std::time::Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(l) => l.check().map_err(|not_until| {
                not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ))
            }),
        }
    }

    /// Whether `hash` (SHA-256 of a presented token) is this key's,
    /// compared in constant time.
    pub(super) fn matches(&self, hash: &[u8]) -> bool {
        bool::from(self.hash.as_slice().ct_eq(hash))
    }
}

/// A new random secret for a client key (`gw-` and 48 hex digits: 192 bits).
pub fn new_secret() -> Result<String, getrandom::Error> {
    Ok(format!("gw-{}", crate::ids::random_hex::<24>()?))
}

/// A new random id (`key_` and 16 hex digits).
pub fn new_id() -> Result<String, getrandom::Error> {
    Ok(format!("key_{}", crate::ids::random_hex::<8>()?))
}
