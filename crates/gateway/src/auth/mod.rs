//! Who may call: client keys (stored as SHA-256 hashes, compared in constant
//! time, with scopes, allowed models, a requests-per-minute limit and a
//! revocation time) and the management API's master key.

mod client_key;

use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use self::client_key::{
    ADMIN, CHAT_WRITE, ClientKey, EMBEDDINGS_READ, KeySpec, SCOPES, STATUS_READ, check_scopes,
    hash_key, new_id, new_secret,
};

/// How requests are authenticated, and the management API's master key.
#[derive(Debug)]
pub struct Auth {
    /// Whether API requests need a client key.
    pub required: bool,
    keys: RwLock<Vec<Arc<ClientKey>>>,
    master: Option<[u8; 32]>,
    shared_rates: std::sync::OnceLock<Arc<dyn SharedRates>>,
}

/// Client keys' rates counted across several instances: a key's requests
/// per minute, admitted by all of them together, stay within its limit.
#[async_trait::async_trait]
pub trait SharedRates: Send + Sync + std::fmt::Debug + 'static {
    /// Counts one request of the key `id` (limit: `limit` a minute) at
    /// `now_ms` if it fits the key's minute across the instances;
    /// `Err(wait)` otherwise. It waits at most briefly (a round trip to the
    /// shared store when this instance holds no admission of the key).
    async fn admit(&self, id: &str, limit: u32, now_ms: i64) -> Result<(), std::time::Duration>;
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
            shared_rates: std::sync::OnceLock::new(),
        }
    }

    /// Client keys required.
    pub fn keys(keys: Vec<ClientKey>) -> Self {
        Auth {
            required: true,
            keys: RwLock::new(keys.into_iter().map(Arc::new).collect()),
            master: None,
            shared_rates: std::sync::OnceLock::new(),
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

    /// Applies a key another instance created or changed: added if it is
    /// new here; its revocation (a time only ever moves earlier) and its
    /// rotation are taken over. Returns whether anything changed; an error
    /// if the stored key is unusable.
    pub fn follow(&self, stored: &crate::store::StoredClientKey) -> Result<bool, String> {
        let Some(existing) = self.by_id(&stored.id) else {
            self.add(ClientKey::from_stored(stored)?);
            return Ok(true);
        };
        let mut changed = false;
        if let Some(at) = stored.revoke_at
            && existing.revoke_at().is_none_or(|t| at < t)
        {
            existing.revoke_from(at);
            changed = true;
        }
        let rotated_to = existing.record().and_then(|r| r.rotated_to);
        if let Some(to) = &stored.rotated_to
            && rotated_to.as_ref() != Some(to)
        {
            existing.set_rotated_to(to);
            changed = true;
        }
        Ok(changed)
    }

    /// Where instances share their client keys, takes one request from
    /// `key`'s rate across them (see [`SharedRates`]); its own limiter
    /// ([`ClientKey::check_rate`]) is checked first, at admission.
    /// `Err(wait)` if over the shared rate.
    pub async fn check_shared_rate(
        &self,
        key: &ClientKey,
        now_ms: i64,
    ) -> Result<(), std::time::Duration> {
        match (self.shared_rates.get(), key.rate_limit) {
            (Some(shared), Some(limit)) => {
                let id = key.id.as_deref().unwrap_or(&key.name);
                shared.admit(id, limit, now_ms).await
            }
            _ => Ok(()),
        }
    }

    /// Counts client keys' rates across instances from now on (once; later
    /// calls are ignored).
    pub fn share_rates(&self, rates: Arc<dyn SharedRates>) {
        let _ = self.shared_rates.set(rates);
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
            if k.matches(hash.as_slice()) {
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
        self.holder_of(ADMIN, authorization, now_ms)
    }

    /// Who may read the operators' views where they are not public: the
    /// master key, or a client key with the `status:read` (or `admin`)
    /// scope. Open to anyone local in a loopback-only setup without a
    /// master key, as management is.
    pub fn viewer(&self, authorization: Option<&str>, now_ms: i64) -> Result<String, Denied> {
        match self.holder_of(STATUS_READ, authorization, now_ms) {
            Err(Denied::Forbidden(_)) => self.holder_of(ADMIN, authorization, now_ms),
            other => other,
        }
    }

    /// The master key (`"master"`) or a client key holding `scope` (its
    /// name); see [`admin`](Self::admin).
    fn holder_of(
        &self,
        scope: &str,
        authorization: Option<&str>,
        now_ms: i64,
    ) -> Result<String, Denied> {
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
            Some(k) if k.has_scope(scope) => Ok(k.name.clone()),
            Some(k) => Err(Denied::Forbidden(format!(
                "key {:?} lacks the {scope} scope; use the master key",
                k.name
            ))),
            None => Err(Denied::Unauthenticated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredClientKey;

    fn key(name: &str, secret: &str, scopes: Option<Vec<String>>) -> ClientKey {
        ClientKey::configured(KeySpec {
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
        let bad = KeySpec {
            name: "x".into(),
            key_sha256: "abc".into(),
            team: None,
            models: vec![],
            scopes: None,
            rate_limit: None,
        };
        assert!(
            ClientKey::configured(bad)
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
