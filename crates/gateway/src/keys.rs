//! The upstream keys' stable ids: what the management API, the dashboard and
//! the store call each key, since names are labels (two keys share one
//! during a rotation's grace period) and the pool's own ids last one process.
//!
//! Compact by design: a gateway may hold tens of thousands of keys, so each
//! is a few dozen bytes here (its id as 8 bytes, its provider as an index,
//! its name shared with the pool, its secret's fingerprint as 32 bytes).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use keypool_core::{KeyId, KeySnapshot, SavedKey};

use crate::store::{KeyOrigin, KeySettings, UpstreamKeyRecord};

/// A key's id: `uk_` and these 8 bytes in hex.
type IdBytes = [u8; 8];

/// SHA-256 of a key's secret.
pub(crate) type Fingerprint = [u8; 32];

/// One key the directory knows, as its callers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    /// Stable id (`uk_…`).
    pub(crate) id: String,
    /// Its provider.
    pub(crate) provider: Arc<str>,
    /// Its name.
    pub(crate) name: Arc<str>,
    /// The pool's id for it in this process.
    pub(crate) key: KeyId,
    /// Where it came from.
    pub(crate) origin: KeyOrigin,
    /// SHA-256 of its secret.
    pub(crate) fingerprint: Fingerprint,
    /// A runtime key's secret, sealed (when the store keeps it).
    pub(crate) sealed_secret: Option<Vec<u8>>,
    /// It left the pool.
    pub(crate) removed: bool,
}

impl KeyEntry {
    /// Its record for the store, with `saved` and `settings` (from its pool,
    /// while it is still there).
    pub(crate) fn record(
        &self,
        saved: Option<SavedKey>,
        settings: KeySettings,
    ) -> UpstreamKeyRecord {
        UpstreamKeyRecord {
            id: self.id.clone(),
            provider: self.provider.to_string(),
            name: self.name.to_string(),
            origin: self.origin,
            fingerprint: crate::ids::hex(&self.fingerprint),
            sealed_secret: self.sealed_secret.clone(),
            settings,
            saved,
            removed: self.removed,
        }
    }
}

/// What a key serves with, from its snapshot.
pub(crate) fn settings_of(k: &KeySnapshot) -> KeySettings {
    KeySettings {
        tier: k.tier,
        weight: k.weight,
        limits: k.limits,
        models: k
            .models
            .as_ref()
            .map(|m| m.iter().map(ToString::to_string).collect()),
    }
}

/// SHA-256 of a secret: how the store tells whether a configured key's
/// secret changed, without keeping it.
pub(crate) fn fingerprint(secret: &str) -> Fingerprint {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes()).into()
}

/// A fingerprint as the store writes it (hex).
pub(crate) fn fingerprint_hex(f: &Fingerprint) -> String {
    crate::ids::hex(f)
}

/// A fingerprint the store wrote; zeroes (matching no secret) if it is not
/// 64 hex digits.
pub(crate) fn parse_fingerprint(hex: &str) -> Fingerprint {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        match hex.get(2 * i..2 * i + 2).map(|p| u8::from_str_radix(p, 16)) {
            Some(Ok(v)) => *b = v,
            _ => return [0u8; 32],
        }
    }
    out
}

/// A new random id for a key added or rotated in at runtime.
pub(crate) fn new_id() -> Result<String, getrandom::Error> {
    Ok(format!("uk_{}", crate::ids::random_hex::<8>()?))
}

/// The 8 bytes of an id (`uk_` and 16 hex digits).
fn id_bytes(id: &str) -> Option<IdBytes> {
    let hex = id.strip_prefix("uk_").filter(|h| h.len() == 16)?;
    let mut out = [0u8; 8];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One key, as kept.
#[derive(Debug)]
struct Slot {
    provider: u16,
    key: KeyId,
    name: Arc<str>,
    origin: KeyOrigin,
    removed: bool,
    fingerprint: Fingerprint,
    sealed_secret: Option<Box<[u8]>>,
}

/// Every key by stable id, and the way back from the pool's ids.
#[derive(Debug, Default)]
pub(crate) struct KeyDirectory {
    inner: RwLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    providers: Vec<Arc<str>>,
    by_id: HashMap<IdBytes, Slot>,
    by_key: HashMap<(u16, KeyId), IdBytes>,
}

impl Index {
    fn provider(&mut self, name: &str) -> u16 {
        if let Some(i) = self.providers.iter().position(|p| &**p == name) {
            return u16::try_from(i).unwrap_or(u16::MAX);
        }
        self.providers.push(Arc::from(name));
        u16::try_from(self.providers.len() - 1).unwrap_or(u16::MAX)
    }

    fn entry(&self, id: IdBytes, slot: &Slot) -> KeyEntry {
        KeyEntry {
            id: format!("uk_{}", crate::ids::hex(&id)),
            provider: self
                .providers
                .get(usize::from(slot.provider))
                .cloned()
                .unwrap_or_else(|| Arc::from("")),
            name: slot.name.clone(),
            key: slot.key,
            origin: slot.origin,
            fingerprint: slot.fingerprint,
            sealed_secret: slot.sealed_secret.as_deref().map(<[u8]>::to_vec),
            removed: slot.removed,
        }
    }
}

impl KeyDirectory {
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds (or replaces) `entry`; an id not of the form `uk_` and 16 hex
    /// digits is refused (false).
    pub(crate) fn insert(&self, entry: KeyEntry) -> bool {
        let Some(id) = id_bytes(&entry.id) else {
            return false;
        };
        let mut index = self.write();
        let provider = index.provider(&entry.provider);
        index.by_key.insert((provider, entry.key), id);
        let slot = Slot {
            provider,
            key: entry.key,
            name: entry.name,
            origin: entry.origin,
            removed: entry.removed,
            fingerprint: entry.fingerprint,
            sealed_secret: entry.sealed_secret.map(Vec::into_boxed_slice),
        };
        index.by_id.insert(id, slot);
        true
    }

    /// The key with stable id `id`.
    pub(crate) fn get(&self, id: &str) -> Option<KeyEntry> {
        let id = id_bytes(id)?;
        let index = self.read();
        index.by_id.get(&id).map(|slot| index.entry(id, slot))
    }

    /// The stable id of the pool's key `key` at `provider`.
    pub(crate) fn id_of(&self, provider: &str, key: KeyId) -> Option<String> {
        let index = self.read();
        let p = index.providers.iter().position(|p| &**p == provider)?;
        let p = u16::try_from(p).ok()?;
        let id = index.by_key.get(&(p, key))?;
        Some(format!("uk_{}", crate::ids::hex(id)))
    }

    /// Marks `id` as gone from the pool; returns its entry.
    pub(crate) fn mark_removed(&self, id: &str) -> Option<KeyEntry> {
        let id = id_bytes(id)?;
        let mut index = self.write();
        let slot = index.by_id.get_mut(&id)?;
        slot.removed = true;
        let index = &*index;
        index.by_id.get(&id).map(|slot| index.entry(id, slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_id_and_by_the_pools_id() {
        let d = KeyDirectory::default();
        let entry = KeyEntry {
            id: "uk_0123456789abcdef".into(),
            provider: "relay".into(),
            name: "alpha".into(),
            key: KeyId::from_u64(7),
            origin: KeyOrigin::Config,
            fingerprint: fingerprint("sk-a"),
            sealed_secret: Some(vec![1, 2, 3]),
            removed: false,
        };
        assert!(d.insert(entry.clone()));
        assert_eq!(d.get("uk_0123456789abcdef"), Some(entry));
        assert_eq!(
            d.id_of("relay", KeyId::from_u64(7)).as_deref(),
            Some("uk_0123456789abcdef")
        );
        assert_eq!(d.id_of("other", KeyId::from_u64(7)), None);
        assert_eq!(d.get("uk_nope"), None);
        assert!(d.mark_removed("uk_0123456789abcdef").unwrap().removed);
        assert!(d.get("uk_0123456789abcdef").unwrap().removed);
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert!(a.starts_with("uk_") && a.len() == 19 && a != b);
        assert!(id_bytes(&a).is_some());
        let f = fingerprint("abc");
        assert_eq!(parse_fingerprint(&fingerprint_hex(&f)), f);
        assert_eq!(parse_fingerprint("zz"), [0u8; 32]);
    }
}
