//! Client keys: stored as SHA-256 hashes, compared in constant time, with
//! scopes, allowed models and a requests-per-minute limit.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ClientKeyConfig;

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

/// One client key.
pub struct ClientKey {
    /// Its name.
    pub name: String,
    hash: [u8; 32],
    /// Its team.
    pub team: Option<String>,
    /// Allowed models; empty = all.
    pub models: Vec<String>,
    /// Its scopes.
    pub scopes: Vec<String>,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("team", &self.team)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// From its config entry; the error says what is wrong.
    pub fn from_config(c: &ClientKeyConfig) -> Result<Self, String> {
        let hex = c.key_sha256.trim().to_ascii_lowercase();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("key_sha256 must be 64 hex digits (use `gateway hash-key`)".into());
        }
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
                .map_err(|e| e.to_string())?;
        }
        let limiter = match c.rate_limit {
            None => None,
            Some(rpm) => Some(RateLimiter::direct(Quota::per_minute(
                NonZeroU32::new(rpm).ok_or("rate_limit must be at least 1")?,
            ))),
        };
        Ok(ClientKey {
            name: c.name.clone(),
            hash,
            team: c.team.clone(),
            models: c.models.clone(),
            scopes: c
                .scopes
                .clone()
                .unwrap_or_else(|| vec![CHAT_WRITE.into(), EMBEDDINGS_READ.into()]),
            limiter,
        })
    }

    /// Whether the key may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    /// Whether the key holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
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

/// How requests are authenticated.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No authentication (loopback only).
    None,
    /// Bearer client keys.
    Keys(Arc<Vec<ClientKey>>),
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer`, or an unknown key: 401.
    Unauthenticated,
    /// A known key without the scope or model: 403.
    Forbidden(String),
}

impl Auth {
    /// Keys mode.
    pub fn keys(keys: Vec<ClientKey>) -> Self {
        Auth::Keys(Arc::new(keys))
    }

    /// Finds the key for an `Authorization` header value. Every configured
    /// hash is compared, each in constant time, so the time taken says
    /// nothing about which key (if any) matched.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<&ClientKey>, Denied> {
        let Auth::Keys(keys) = self else {
            return Ok(None);
        };
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Denied::Unauthenticated)?;
        let hash = Sha256::digest(token.as_bytes());
        let mut found = None;
        for k in keys.iter() {
            if bool::from(k.hash.as_slice().ct_eq(hash.as_slice())) {
                found = Some(k);
            }
        }
        found.map(Some).ok_or(Denied::Unauthenticated)
    }
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
            auth.authenticate(Some("Bearer gw-secret-2"))
                .unwrap()
                .unwrap()
                .name,
            "batch"
        );
        assert_eq!(
            auth.authenticate(Some("Bearer nope")).unwrap_err(),
            Denied::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(Some("gw-secret-1")).unwrap_err(),
            Denied::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(None).unwrap_err(),
            Denied::Unauthenticated
        );
        let web = auth
            .authenticate(Some("Bearer gw-secret-1"))
            .unwrap()
            .unwrap();
        assert!(
            web.has_scope(CHAT_WRITE) && web.allows_model("gpt-4.1") && !web.allows_model("other")
        );
        // Two a minute, then refused with a wait.
        assert!(web.check_rate().is_ok() && web.check_rate().is_ok());
        assert!(web.check_rate().unwrap_err() > std::time::Duration::ZERO);
        assert!(matches!(Auth::None.authenticate(None), Ok(None)));
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
}
