//! A key's prompt cache, as providers keep one: the leading messages of
//! recent chat requests, per key, for [`TTL`]. A request whose leading
//! messages match what the same key saw reads them from the cache, and its
//! usage says how many input tokens that was
//! (`prompt_tokens_details.cached_tokens`). Another key's cache does not
//! help: a conversation spread over keys is cached only on the turns that
//! come back to a key it used before.
//!
//! Off unless turned on ([`SimUpstream::set_prompt_cache`](super::SimUpstream::set_prompt_cache),
//! `gateway sim-upstream --prompt-cache`): it hashes every message of every
//! request, which load benchmarks of other things should not pay for.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a prefix stays cached after its last use (OpenAI keeps one for
/// five to ten minutes).
const TTL: Duration = Duration::from_secs(300);

/// Prefixes remembered at most, over all keys.
const MEMORY: usize = 200_000;

/// Every key's cached prefixes.
#[derive(Debug, Default)]
pub(super) struct PromptCache {
    on: AtomicBool,
    /// A hash of (key, leading messages) and when it was last used.
    seen: Mutex<HashMap<u64, Instant>>,
}

impl PromptCache {
    /// Turns the cache on or off.
    pub(super) fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Of `messages` sent with `key`, the characters of text in the longest
    /// run of leading messages the key's cache holds; every run of leading
    /// messages is cached from now on.
    pub(super) fn read(&self, key: &str, messages: &[Value], now: Instant) -> usize {
        if !self.on.load(Ordering::Relaxed) {
            return 0;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() > MEMORY {
            seen.retain(|_, at| now.duration_since(*at) <= TTL);
            if seen.len() > MEMORY {
                seen.clear();
            }
        }
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let (mut chars, mut cached) = (0, 0);
        for m in messages {
            m.to_string().hash(&mut h);
            chars += m
                .get("content")
                .and_then(Value::as_str)
                .map_or(0, |c| c.chars().count());
            let prefix = h.finish();
            if seen
                .get(&prefix)
                .is_some_and(|at| now.duration_since(*at) <= TTL)
            {
                cached = chars;
            }
            seen.insert(prefix, now);
        }
        cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_reads_back_the_prefix_it_saw_and_another_key_does_not() {
        let cache = PromptCache::default();
        let now = Instant::now();
        let first = [json!({"role": "user", "content": "abcd"})];
        let second = [
            json!({"role": "user", "content": "abcd"}),
            json!({"role": "assistant", "content": "efgh"}),
            json!({"role": "user", "content": "ij"}),
        ];
        assert_eq!(cache.read("k1", &first, now), 0, "off by default");
        cache.set(true);
        assert_eq!(cache.read("k1", &first, now), 0, "nothing cached yet");
        assert_eq!(cache.read("k1", &second, now), 4, "the first turn");
        assert_eq!(cache.read("k2", &second, now), 0, "another key's cache");
        assert_eq!(cache.read("k1", &second, now), 10, "all of it");
        let later = now + TTL + Duration::from_secs(1);
        assert_eq!(cache.read("k1", &second, later), 0, "expired");
    }
}
