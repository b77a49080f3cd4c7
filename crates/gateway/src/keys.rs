//! The upstream keys' stable ids: what the management API, the dashboard and
//! the store call each key, since names are labels (two keys share one
//! during a rotation's grace period) and the pool's own ids last one process.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use keypool_core::{KeyId, KeySnapshot};

use crate::store::{KeyOrigin, KeySettings, UpstreamKeyRecord};

/// One key the directory knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    /// Stable id (`uk_…`).
    pub(crate) id: String,
    /// Its provider.
    pub(crate) provider: String,
    /// Its name.
    pub(crate) name: String,
    /// The pool's id for it in this process.
    pub(crate) key: KeyId,
    /// Where it came from.
    pub(crate) origin: KeyOrigin,
    /// SHA-256 of its secret, hex.
    pub(crate) fingerprint: String,
    /// A runtime key's secret, sealed (when the store keeps it).
    pub(crate) sealed_secret: Option<Vec<u8>>,
    /// What it serves with.
    pub(crate) settings: KeySettings,
    /// It left the pool.
    pub(crate) removed: bool,
}

impl KeyEntry {
    /// Its record for the store, with `saved` (the pool's state of it, if
    /// it is still there).
    pub(crate) fn record(&self, saved: Option<keypool_core::SavedKey>) -> UpstreamKeyRecord {
        UpstreamKeyRecord {
            id: self.id.clone(),
            provider: self.provider.clone(),
            name: self.name.clone(),
            origin: self.origin,
            fingerprint: self.fingerprint.clone(),
            sealed_secret: self.sealed_secret.clone(),
            settings: self.settings,
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
    }
}

/// SHA-256 of a secret, hex: how the store tells whether a configured key's
/// secret changed, without keeping it.
pub(crate) fn fingerprint(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random id for a key added or rotated in at runtime.
pub(crate) fn new_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "uk_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Every key by stable id, and the way back from the pool's ids.
#[derive(Debug, Default)]
pub(crate) struct KeyDirectory {
    inner: RwLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<String, KeyEntry>,
    by_key: HashMap<(String, KeyId), String>,
}

impl KeyDirectory {
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds (or replaces) `entry`.
    pub(crate) fn insert(&self, entry: KeyEntry) {
        let mut index = self.write();
        index
            .by_key
            .insert((entry.provider.clone(), entry.key), entry.id.clone());
        index.by_id.insert(entry.id.clone(), entry);
    }

    /// The key with stable id `id`.
    pub(crate) fn get(&self, id: &str) -> Option<KeyEntry> {
        self.read().by_id.get(id).cloned()
    }

    /// The stable id of the pool's key `key` at `provider`.
    pub(crate) fn id_of(&self, provider: &str, key: KeyId) -> Option<String> {
        self.read().by_key.get(&(provider.to_owned(), key)).cloned()
    }

    /// Marks `id` as gone from the pool; returns its entry.
    pub(crate) fn mark_removed(&self, id: &str) -> Option<KeyEntry> {
        let mut index = self.write();
        let entry = index.by_id.get_mut(id)?;
        entry.removed = true;
        Some(entry.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_id_and_by_the_pools_id() {
        let d = KeyDirectory::default();
        let entry = KeyEntry {
            id: "uk_1".into(),
            provider: "relay".into(),
            name: "alpha".into(),
            key: KeyId::from_u64(7),
            origin: KeyOrigin::Config,
            fingerprint: fingerprint("sk-a"),
            sealed_secret: None,
            settings: KeySettings::default(),
            removed: false,
        };
        d.insert(entry.clone());
        assert_eq!(d.get("uk_1"), Some(entry));
        assert_eq!(
            d.id_of("relay", KeyId::from_u64(7)).as_deref(),
            Some("uk_1")
        );
        assert_eq!(d.id_of("other", KeyId::from_u64(7)), None);
        assert!(d.mark_removed("uk_1").unwrap().removed);
        assert!(d.get("uk_1").unwrap().removed);
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert!(a.starts_with("uk_") && a.len() == 19 && a != b);
        assert_eq!(fingerprint("abc").len(), 64);
    }
}
