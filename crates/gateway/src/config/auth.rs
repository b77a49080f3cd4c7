//! `[auth]`: how clients authenticate, and the management API's master key.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::secret::{SecretSource, resolve_secret};
use super::{ConfigError, Understood};
use crate::auth::{Auth, ClientKey, KeySpec};

/// `[auth]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `keys` (the default when keys or a master key are given) or `none`
    /// (loopback only).
    pub mode: Option<AuthMode>,
    /// Client keys.
    #[serde(default)]
    pub keys: Vec<ClientKeyConfig>,
    /// The master key for the management API (`${ENV_VAR}`).
    pub master_key: Option<String>,
}

/// `[auth] mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every API request needs a client key.
    Keys,
    /// No client key needed: only on a loopback address.
    None,
}

/// A client key, stored hashed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyConfig {
    /// Its name.
    pub name: String,
    /// SHA-256 of the key, in hex (`gateway hash-key` prints it).
    pub key_sha256: String,
    /// Its team.
    pub team: Option<String>,
    /// Models it may use; empty means all.
    #[serde(default)]
    pub models: Vec<String>,
    /// `chat:write`, `embeddings:read`, `admin`. Default the first two.
    pub scopes: Option<Vec<String>>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
}

/// The shortest master key accepted.
const MIN_MASTER_LEN: usize = 16;

impl AuthConfig {
    fn mode(&self) -> AuthMode {
        self.mode
            .unwrap_or(if self.keys.is_empty() && self.master_key.is_none() {
                AuthMode::None
            } else {
                AuthMode::Keys
            })
    }

    fn client_keys(&self, u: &mut Understood) -> Result<Auth, ConfigError> {
        let mut keys = Vec::new();
        for (ki, k) in self.keys.iter().enumerate() {
            let spec = KeySpec {
                name: k.name.clone(),
                key_sha256: k.key_sha256.clone(),
                team: k.team.clone(),
                models: k.models.clone(),
                scopes: k.scopes.clone(),
                rate_limit: k.rate_limit,
            };
            let key = ClientKey::configured(spec)
                .map_err(|m| ConfigError::new(format!("auth.keys[{ki}]"), m))?;
            keys.push(key);
        }
        u.lines
            .push(format!("auth: {} client keys in the file", keys.len()));
        Ok(Auth::keys(keys))
    }

    fn master(
        &self,
        env: &HashMap<String, String>,
        u: &mut Understood,
    ) -> Result<Option<String>, ConfigError> {
        let Some(master) = self.master_key.as_deref() else {
            return Ok(None);
        };
        let (master, source) = resolve_secret("auth.master_key", Some(master), None, env)?;
        if source == SecretSource::Literal {
            u.warnings.push(
                "auth.master_key is a literal secret in the config file; prefer \"${ENV_VAR}\""
                    .into(),
            );
        }
        if master.len() < MIN_MASTER_LEN {
            return Err(ConfigError::new(
                "auth.master_key",
                format!("must be at least {MIN_MASTER_LEN} characters"),
            ));
        }
        u.lines.push("management API: master key set".into());
        Ok(Some(master))
    }
}

/// The authentication `section` sets up for a gateway listening on `listen`.
pub(super) fn build(
    section: Option<&AuthConfig>,
    listen: SocketAddr,
    env: &HashMap<String, String>,
    u: &mut Understood,
) -> Result<Auth, ConfigError> {
    let none = AuthConfig::default();
    let section = section.unwrap_or(&none);
    let mut auth = match section.mode() {
        AuthMode::None => Auth::none(),
        AuthMode::Keys => section.client_keys(u)?,
    };
    if let Some(master) = section.master(env, u)? {
        auth = auth.with_master(&master);
    }
    if !auth.required {
        if !listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "auth.mode",
                format!("\"none\" is only allowed on a loopback address, not {listen}"),
            ));
        }
        u.lines.push("auth: none (loopback only)".into());
    }
    Ok(auth)
}
