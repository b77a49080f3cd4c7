//! Stateful ids and the keys that made them.
//!
//! An upstream's response, file, batch, upload or vector store id works
//! only with the key (the account) that made it: a follow-up sent through
//! another key meets a confusing 404. The gateway learns the key from each
//! answer that makes an id, keeps it (in memory, and in the store so that
//! other instances and restarts know it, for [`RETENTION_MS`]), and pins
//! every later request that names the id (in its path, or in its body as
//! `previous_response_id`, `file_id`, …) to that key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use gateway_client::Pinned;
use wire::{JsonBody, Kind, Raw};

use crate::store::{PinRecord, Store};

/// How long an id stays pinned: 30 days.
pub(crate) const RETENTION_MS: i64 = 30 * 24 * 3_600_000;

/// The ids kept in memory at most; past it, the oldest half is forgotten
/// (the store still knows them).
const MEMORY: usize = 100_000;

/// The prefixes of the ids that belong to one key.
const STATEFUL: [&str; 7] = [
    "resp_", "file-", "batch_", "vs_", "upload_", "conv_", "cntr_",
];

/// Body fields that name an id, at any depth (tools and input items hold
/// them too): the request's body is checked watching them.
pub(crate) const ID_FIELDS: [&str; 8] = [
    "previous_response_id",
    "file_id",
    "input_file_id",
    "vector_store_id",
    "conversation",
    "file_ids",
    "vector_store_ids",
    "upload_id",
];

/// Whether `s` is an id that only its key can use.
pub(crate) fn is_stateful(s: &str) -> bool {
    STATEFUL
        .iter()
        .any(|p| s.len() > p.len() && s.starts_with(p))
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The stateful ids a path names (`/v1/files/file-abc/content`).
pub(crate) fn in_path(path: &str) -> impl Iterator<Item = &str> {
    path.split(['/', '?', '&', '=']).filter(|s| is_stateful(s))
}

/// The stateful ids a JSON body names in its id fields ([`ID_FIELDS`], at
/// any depth), as its check found them: a body checked without watching
/// them names none.
pub(crate) fn in_body(body: &JsonBody) -> Vec<String> {
    fn ids(v: Raw<'_>, out: &mut Vec<String>) {
        match v.kind() {
            Kind::String => {
                if let Some(s) = v.as_str().filter(|s| is_stateful(s)) {
                    out.push(s.into_owned());
                }
            }
            Kind::Array => v.items().for_each(|v| ids(v, out)),
            // `conversation: {"id": "conv_…"}`.
            Kind::Object => v.get("id").into_iter().for_each(|v| ids(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (_, v) in body.watched() {
        ids(v, &mut out);
    }
    out
}

/// The id an answer made: its top-level `id`, when stateful.
pub(crate) fn made_by(answer: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    let id = serde_json::from_slice::<Id>(answer).ok()?.id?;
    is_stateful(&id).then_some(id)
}

/// What the gateway knows of ids and their keys.
#[derive(Debug)]
pub(crate) struct Pins {
    recent: Mutex<HashMap<String, PinRecord>>,
    store: Arc<dyn Store>,
}

impl Pins {
    /// Pins kept in `store` (and in memory).
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Pins {
            recent: Mutex::new(HashMap::new()),
            store,
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, PinRecord>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that `provider`/`key` made `id`; stored before it
    /// returns, so a follow-up through any instance finds it.
    pub(crate) async fn learn(&self, id: String, provider: &str, key: &str, now_ms: i64) {
        let pin = PinRecord {
            id,
            provider: provider.to_owned(),
            key: key.to_owned(),
            at: now_ms,
        };
        {
            let mut recent = self.recent();
            if recent.len() >= MEMORY {
                let mut ats: Vec<i64> = recent.values().map(|p| p.at).collect();
                ats.sort_unstable();
                let median = ats.get(ats.len() / 2).copied().unwrap_or(i64::MAX);
                recent.retain(|_, p| p.at > median);
            }
            recent.insert(pin.id.clone(), pin.clone());
        }
        if let Err(e) = self.store.save_pin(pin).await {
            tracing::warn!(error = %e, "an id's key could not be stored; other instances will not pin it");
        }
    }

    /// The key that made the first id of `ids` the gateway knows, within
    /// the retention.
    pub(crate) async fn find<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        now_ms: i64,
    ) -> Option<Pinned> {
        let since = now_ms.saturating_sub(RETENTION_MS);
        for id in ids {
            let known = self.recent().get(id).filter(|p| p.at >= since).cloned();
            let found = match known {
                Some(p) => Some(p),
                None => match self.store.find_pin(id, since).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "an id's key could not be read");
                        None
                    }
                },
            };
            if let Some(p) = found {
                self.recent().insert(p.id.clone(), p.clone());
                return Some(Pinned {
                    provider: p.provider,
                    key: p.key,
                    id: p.id,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_in_paths_and_bodies() {
        assert_eq!(
            in_path("/v1/files/file-abc123/content").collect::<Vec<_>>(),
            ["file-abc123"]
        );
        assert_eq!(
            in_path("/v1/responses/resp_1/input_items?after=msg_2").count(),
            1
        );
        assert_eq!(in_path("/v1/files?purpose=batch").count(), 0);
        let body = JsonBody::parse_watching(
            &br#"{
            "previous_response_id": "resp_9",
            "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-7"}]}],
            "tools": [{"type": "file_search", "vector_store_ids": ["vs_1", "not-an-id"]}],
            "conversation": {"id": "conv_\u0031"},
            "model": "file-not-a-field"
        }"#[..],
            &ID_FIELDS,
        )
        .unwrap();
        assert_eq!(in_body(&body), ["resp_9", "file-7", "vs_1", "conv_1"]);
        assert_eq!(
            made_by(br#"{"id":"resp_abc","object":"response"}"#).as_deref(),
            Some("resp_abc")
        );
        assert_eq!(made_by(br#"{"id":"chatcmpl-1"}"#), None);
        assert!(!is_stateful("resp_") && !is_stateful("file-a b"));
    }
}
