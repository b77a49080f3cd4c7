//! Prompt-cache affinity: a conversation kept on the key that served it.
//!
//! Providers cache prompt prefixes per key (or per organisation). Spread
//! over N keys, a conversation finds its prefix cached about once in N
//! turns and pays the full input rate for its history every other turn.
//! Each request gets an affinity token (its `prompt_cache_key`, else a hash
//! of its stable prefix: the instructions or system prompt, the tools and
//! the first user turn, with the model); the key that served a token last
//! is preferred for it while the entry is fresh, and the pool decides
//! whether that key can still take it ([`keypool_core::AcquireOptions::prefer`]).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keypool_core::KeyId;
use wire::{Kind, Raw};

use crate::ApiRequest;

/// Conversations remembered at most; past it, the stale ones are dropped,
/// then the oldest half.
const MEMORY: usize = 100_000;

/// Which key served each conversation last, and when.
#[derive(Debug)]
pub(crate) struct Affinity {
    ttl: Duration,
    seen: Mutex<HashMap<u64, Served>>,
}

/// A conversation's last key: the provider's index and the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Served {
    pub(crate) provider: usize,
    pub(crate) key: KeyId,
    at: SystemTime,
}

impl Affinity {
    /// Affinity for `ttl` after each request; `None` when `ttl` is zero (off).
    pub(crate) fn new(ttl: Duration) -> Option<Self> {
        (!ttl.is_zero()).then(|| Affinity {
            ttl,
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// The key that served `token` for `model` within the time-to-live, if
    /// any (caches are per model).
    pub(crate) fn get(&self, token: u64, model: &str, now: SystemTime) -> Option<Served> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(&per_model(token, model))
            .copied()
            .filter(|s| now.duration_since(s.at).unwrap_or_default() <= self.ttl)
    }

    /// Notes that `key` of provider `provider` served `token` for `model`
    /// at `now`.
    pub(crate) fn served(
        &self,
        (token, model): (u64, &str),
        provider: usize,
        key: KeyId,
        now: SystemTime,
    ) {
        let token = per_model(token, model);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MEMORY && !seen.contains_key(&token) {
            let ttl = self.ttl;
            seen.retain(|_, s| now.duration_since(s.at).unwrap_or_default() <= ttl);
            if seen.len() >= MEMORY {
                let mut ages: Vec<SystemTime> = seen.values().map(|s| s.at).collect();
                ages.sort_unstable();
                let cut = ages.get(ages.len() / 2).copied();
                seen.retain(|_, s| Some(s.at) > cut);
            }
        }
        seen.insert(
            token,
            Served {
                provider,
                key,
                at: now,
            },
        );
    }
}

/// `token` for `model`.
fn per_model(token: u64, model: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (token, model).hash(&mut h);
    h.finish()
}

/// The affinity token of a chat or Responses request: its
/// `prompt_cache_key` when it has one, else a hash of its stable prefix.
/// `None` for a request with nothing to key on.
pub(crate) fn token(request: &ApiRequest) -> Option<u64> {
    let body = request.body();
    let mut h = DefaultHasher::new();
    if let Some(key) = body
        .get("prompt_cache_key")
        .filter(|k| k.kind() == Kind::String)
    {
        0u8.hash(&mut h);
        key.text().hash(&mut h);
        return Some(h.finish());
    }
    1u8.hash(&mut h);
    let mut any = false;
    for field in ["instructions", "tools"] {
        if let Some(v) = body.get(field) {
            field.hash(&mut h);
            v.text().hash(&mut h);
            any = true;
        }
    }
    any |= hash_first_turns(body.get("messages").or_else(|| body.get("input")), &mut h);
    any.then(|| h.finish())
}

/// Hashes the text of the messages up to and including the first user
/// turn (all of a string input): the part of a conversation every later
/// turn repeats. Whether there was any.
fn hash_first_turns(input: Option<Raw<'_>>, h: &mut DefaultHasher) -> bool {
    let Some(input) = input else {
        return false;
    };
    if input.kind() != Kind::Array {
        input.text().hash(h);
        return true;
    }
    let mut any = false;
    for item in input.items() {
        item.text().hash(h);
        any = true;
        if item.get("role").and_then(|r| r.as_str()).as_deref() == Some("user") {
            break;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> ApiRequest {
        ApiRequest::from_bytes(json.as_bytes().to_vec()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn later_turns_of_a_conversation_share_its_token() {
        let turn1 = request(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
        );
        let turn2 = request(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"more"}]}"#,
        );
        let other = request(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"bye"}]}"#,
        );
        let t1 = token(&turn1);
        assert!(t1.is_some());
        assert_eq!(t1, token(&turn2));
        assert_ne!(t1, token(&other));
    }

    #[test]
    fn a_prompt_cache_key_is_the_token() {
        let a = request(r#"{"model":"m","prompt_cache_key":"user-7","input":"one"}"#);
        let b = request(r#"{"model":"m","prompt_cache_key":"user-7","input":"two"}"#);
        let c = request(r#"{"model":"m","input":"one"}"#);
        assert_eq!(token(&a), token(&b));
        assert_ne!(token(&a), token(&c));
        assert_eq!(token(&request(r#"{"model":"m"}"#)), None);
    }

    #[test]
    fn an_entry_lasts_its_time_to_live() {
        assert!(Affinity::new(Duration::ZERO).is_none(), "0 turns it off");
        let a = Affinity::new(Duration::from_secs(300)).unwrap_or_else(|| unreachable!());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let key = KeyId::from_u64(3);
        a.served((42, "m"), 1, key, t0);
        let got = a.get(42, "m", t0 + Duration::from_secs(300));
        assert_eq!(got.map(|s| (s.provider, s.key)), Some((1, key)));
        assert_eq!(a.get(42, "m", t0 + Duration::from_secs(301)), None);
        assert_eq!(a.get(42, "other-model", t0), None, "caches are per model");
        assert_eq!(a.get(7, "m", t0), None);
    }
}
