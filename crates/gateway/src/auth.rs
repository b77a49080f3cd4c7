//! Client keys: stored as SHA-256 hashes, compared in constant time, with
//! scopes, allowed models, a requests-per-minute limit and a revocation time;
//! and the management API's master key.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ClientKeyConfig;
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

/// The scopes a client key may hold.
pub const SCOPES: [&str; 3] = [CHAT_WRITE, EMBEDDINGS_READ, ADMIN];

/// "Never", for a key's revocation time.
const NEVER: i64 = i64::MAX;

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
    /// From its config entry; the error says what is wrong.
    pub fn from_config(c: &ClientKeyConfig) -> Result<Self, String> {
        let scopes = c
            .scopes
            .clone()
            .unwrap_or_else(|| vec![CHAT_WRITE.into(), EMBEDDINGS_READ.into()]);
        check_scopes(&scopes)?;
        Ok(ClientKey {
            id: None,
            name: c.name.clone(),
            hash: parse_hash(&c.key_sha256)?,
            team: c.team.clone(),
            models: c.models.clone(),
            scopes,
            rate_limit: c.rate_limit,
            limiter: limiter(c.rate_limit)?,
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
}

/// How requests are authenticated, and the management API's master key.
#[derive(Debug)]
pub struct Auth {
    /// Whether API requests need a client key.
    pub required: bool,
    keys: RwLock<Vec<Arc<ClientKey>>>,
    master: Option<[u8; 32]>,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer`, or an unknown key: 401.
    Unauthenticated,
    /// A known key without the scope or model: 403.
    Forbidden(String),
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

impl Auth {
    /// No authentication (loopback only), no master key.
    pub fn none() -> Self {
        Auth {
            required: false,
            keys: RwLock::new(Vec::new()),
            master: None,
        }
    }

    /// Client keys required.
    pub fn keys(keys: Vec<ClientKey>) -> Self {
        Auth {
            required: true,
            keys: RwLock::new(keys.into_iter().map(Arc::new).collect()),
            master: None,
        }
    }

    /// Sets the master key of the management API.
    #[must_use]
    pub fn with_master(mut self, master: &str) -> Self {
        self.master = Some(Sha256::digest(master.as_bytes()).into());
        self
    }

    /// Whether a master key is set.
    pub fn has_master(&self) -> bool {
        self.master.is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<ClientKey>>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a key (created through the API, or loaded from the store).
    pub fn add(&self, key: ClientKey) -> Arc<ClientKey> {
        let key = Arc::new(key);
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(key.clone());
        key
    }

    /// The key with API id `id`.
    pub fn by_id(&self, id: &str) -> Option<Arc<ClientKey>> {
        self.read()
            .iter()
            .find(|k| k.id.as_deref() == Some(id))
            .cloned()
    }

    /// Every key.
    pub fn all(&self) -> Vec<Arc<ClientKey>> {
        self.read().clone()
    }

    /// Finds the key for an `Authorization` header value at `now_ms`. Every
    /// hash is compared, each in constant time, so the time taken says nothing
    /// about which key (if any) matched. A revoked key is unknown.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<Arc<ClientKey>>, Denied> {
        if !self.required {
            return Ok(None);
        }
        let token = bearer(authorization).ok_or(Denied::Unauthenticated)?;
        let hash = Sha256::digest(token.as_bytes());
        let mut found = None;
        for k in self.read().iter() {
            if bool::from(k.hash.as_slice().ct_eq(hash.as_slice())) {
                found = Some(k.clone());
            }
        }
        match found {
            Some(k) if !k.is_revoked(now_ms) => Ok(Some(k)),
            _ => Err(Denied::Unauthenticated),
        }
    }

    /// Who may use the management API: the master key (`"master"`), or a
    /// client key with the `admin` scope (its name). Without authentication
    /// and without a master key (a loopback-only setup), anyone local
    /// (`"local"`).
    pub fn admin(&self, authorization: Option<&str>, now_ms: i64) -> Result<String, Denied> {
        if !self.required && self.master.is_none() {
            return Ok("local".into());
        }
        let token = bearer(authorization).ok_or(Denied::Unauthenticated)?;
        if let Some(master) = &self.master {
            let hash = Sha256::digest(token.as_bytes());
            if bool::from(master.as_slice().ct_eq(hash.as_slice())) {
                return Ok("master".into());
            }
        }
        if !self.required {
            return Err(Denied::Unauthenticated);
        }
        match self.authenticate(authorization, now_ms)? {
            Some(k) if k.has_scope(ADMIN) => Ok(k.name.clone()),
            Some(k) => Err(Denied::Forbidden(format!(
                "key {:?} lacks the admin scope; use the master key",
                k.name
            ))),
            None => Err(Denied::Unauthenticated),
        }
    }
}

/// A new random secret for a client key (`gw-` and 48 hex digits: 192 bits).
pub fn new_secret() -> Result<String, getrandom::Error> {
    Ok(format!("gw-{}", random_hex::<24>()?))
}

/// A new random id (`key_` and 16 hex digits).
pub fn new_id() -> Result<String, getrandom::Error> {
    Ok(format!("key_{}", random_hex::<8>()?))
}

fn random_hex<const N: usize>() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str, scopes: Option<Vec<String>>) -> ClientKey {
        ClientKey::from_config(&ClientKeyConfig {
            name: name.into(),
            key_sha256: hash_key(secret),
            team: Some("search".into()),
            models: vec!["gpt-4.1".into()],
            scopes,
            rate_limit: Some(2),
        })
        .unwrap()
    }

    #[test]
    fn keys_are_found_by_hash_and_everything_else_is_refused() {
        let auth = Auth::keys(vec![
            key("web", "gw-secret-1", None),
            key("batch", "gw-secret-2", Some(vec![EMBEDDINGS_READ.into()])),
        ]);
        assert_eq!(
            auth.authenticate(Some("Bearer gw-secret-2"), 0)
                .unwrap()
                .unwrap()
                .name,
            "batch"
        );
        assert_eq!(
            auth.authenticate(Some("Bearer nope"), 0).unwrap_err(),
            Denied::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(Some("gw-secret-1"), 0).unwrap_err(),
            Denied::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(None, 0).unwrap_err(),
            Denied::Unauthenticated
        );
        let web = auth
            .authenticate(Some("Bearer gw-secret-1"), 0)
            .unwrap()
            .unwrap();
        assert!(
            web.has_scope(CHAT_WRITE) && web.allows_model("gpt-4.1") && !web.allows_model("other")
        );
        // Two a minute, then refused with a wait.
        assert!(web.check_rate().is_ok() && web.check_rate().is_ok());
        assert!(web.check_rate().unwrap_err() > std::time::Duration::ZERO);
        assert!(matches!(Auth::none().authenticate(None, 0), Ok(None)));
        // A revoked key is unknown from its revocation time on.
        assert_eq!(web.revoke_from(1_000), 1_000);
        assert_eq!(web.revoke_from(5_000), 1_000, "an earlier schedule is kept");
        assert!(auth.authenticate(Some("Bearer gw-secret-1"), 999).is_ok());
        assert_eq!(
            auth.authenticate(Some("Bearer gw-secret-1"), 1_000)
                .unwrap_err(),
            Denied::Unauthenticated
        );
    }

    #[test]
    fn hashes_are_validated() {
        let bad = ClientKeyConfig {
            name: "x".into(),
            key_sha256: "abc".into(),
            team: None,
            models: vec![],
            scopes: None,
            rate_limit: None,
        };
        assert!(
            ClientKey::from_config(&bad)
                .unwrap_err()
                .contains("64 hex digits")
        );
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_management_api_takes_the_master_key_or_an_admin_key() {
        let auth = Auth::keys(vec![
            key("web", "gw-secret-1", None),
            key("ops", "gw-secret-2", Some(vec![ADMIN.into()])),
        ])
        .with_master("master-secret");
        assert_eq!(
            auth.admin(Some("Bearer master-secret"), 0).unwrap(),
            "master"
        );
        assert_eq!(auth.admin(Some("Bearer gw-secret-2"), 0).unwrap(), "ops");
        assert!(matches!(
            auth.admin(Some("Bearer gw-secret-1"), 0),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(
            auth.admin(Some("Bearer wrong"), 0).unwrap_err(),
            Denied::Unauthenticated
        );
        assert_eq!(auth.admin(None, 0).unwrap_err(), Denied::Unauthenticated);
        // Loopback-only, no master key: local management is open.
        assert_eq!(Auth::none().admin(None, 0).unwrap(), "local");
        let locked = Auth::none().with_master("m");
        assert_eq!(locked.admin(None, 0).unwrap_err(), Denied::Unauthenticated);
        assert!(check_scopes(&["chat:write".into(), "admin".into()]).is_ok());
        assert!(
            check_scopes(&["chat:delete".into()])
                .unwrap_err()
                .contains("chat:delete")
        );
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert!(a.starts_with("gw-") && a.len() == 51 && a != b);
        assert!(new_id().unwrap().starts_with("key_"));
    }

    #[test]
    fn a_stored_key_comes_back_as_it_was_saved() {
        let stored = StoredClientKey {
            id: "key_0123456789abcdef".into(),
            name: "web".into(),
            team: Some("search".into()),
            hash: hash_key("gw-secret"),
            scopes: vec![CHAT_WRITE.into()],
            models: vec!["gpt-4.1".into()],
            rate_limit: Some(200),
            created_at: 1_795_322_452_000,
            revoke_at: Some(1_795_408_852_000),
            rotated_to: None,
        };
        let restored = ClientKey::from_stored(&stored).unwrap();
        assert_eq!(restored.record(), Some(stored));
        restored.set_rotated_to("key_fedcba9876543210");
        assert_eq!(
            restored.record().unwrap().rotated_to.as_deref(),
            Some("key_fedcba9876543210")
        );
        let config = key("cfg", "gw-other", None);
        assert_eq!(config.record(), None, "a config key has no record");
    }
}
