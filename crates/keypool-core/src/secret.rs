//! The secret type and the rule a new key's secret must satisfy.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::AddKeyError;

/// An upstream API key's secret value.
///
/// `Debug` and `Display` show a redacted form (`sk-…f00d`): the prefix up to
/// the last `-` among the first eight characters and the last four characters,
/// never the whole value. Only [`Secret::expose`] gives the real value, and
/// only the transport should call it. Cloning is cheap (shared, immutable).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The real value, for building an `Authorization` header. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The redacted form shown in `Debug`, `Display`, snapshots and reports.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// Bytes of the secret value itself (for memory accounting).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Redacts a secret: a short known prefix and the last four characters.
///
/// Secrets shorter than 12 characters show nothing but an ellipsis, so that
/// what is shown is never a large part of the whole.
pub fn redact(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "…".to_owned();
    }
    let head: String = chars.iter().take(8).collect();
    let prefix = head.rfind('-').map_or("", |i| &head[..=i]);
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{prefix}…{tail}")
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Secret").field(&self.redacted()).finish()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Borrow<str> for Secret {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

/// The rule every secret added to a pool must satisfy.
///
/// The default accepts OpenAI-style keys: prefix `sk-` (which also covers
/// relays' `sk-hs-…`), at least 20 characters, no whitespace.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct KeyRule {
    /// Accepted prefixes; the secret must start with one of them. Empty accepts any.
    pub prefixes: Vec<String>,
    /// Minimum length in characters.
    pub min_len: usize,
}

impl Default for KeyRule {
    fn default() -> Self {
        KeyRule {
            prefixes: vec!["sk-".to_owned()],
            min_len: 20,
        }
    }
}

impl KeyRule {
    /// A rule that accepts any non-empty secret without whitespace.
    pub fn any() -> Self {
        KeyRule {
            prefixes: Vec::new(),
            min_len: 1,
        }
    }

    /// Checks `secret` for the key called `name`. The error never contains the secret.
    pub fn check(&self, name: &str, secret: &str) -> Result<(), AddKeyError> {
        if secret.chars().any(char::is_whitespace) {
            return Err(AddKeyError::Whitespace {
                name: name.to_owned(),
            });
        }
        if secret.chars().count() < self.min_len.max(1) {
            return Err(AddKeyError::TooShort {
                name: name.to_owned(),
                min_len: self.min_len.max(1),
            });
        }
        if !self.prefixes.is_empty()
            && !self.prefixes.iter().any(|p| secret.starts_with(p.as_str()))
        {
            return Err(AddKeyError::MissingPrefix {
                name: name.to_owned(),
                expected: self.prefixes.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let s = Secret::new("sk-abcdefghijklmnopqrstuvwxyzf00d");
        assert_eq!(format!("{s}"), "sk-…f00d");
        assert_eq!(format!("{s:?}"), "Secret(\"sk-…f00d\")");
        assert!(!format!("{s:?}{s}").contains("abcdefgh"));
        let hs = Secret::new("sk-hs-0123456789abcdef");
        assert_eq!(hs.to_string(), "sk-hs-…cdef");
        assert_eq!(Secret::new("short-key").to_string(), "…");
        // Multi-byte characters never split.
        assert_eq!(redact("ก-ขขขขขขขขขขขขขขข1234"), "ก-…1234");
    }

    #[test]
    fn rule_rejects_without_echoing_the_secret() {
        let rule = KeyRule::default();
        let cases = [
            ("pk-0123456789abcdefghij", "must start with"),
            ("sk-0123 456789abcdefghij", "whitespace"),
            ("sk-short", "at least 20"),
        ];
        for (secret, needle) in cases {
            let err = rule.check("Production Key", secret).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(needle), "{msg}");
            assert!(msg.contains("Production Key"), "{msg}");
            assert!(!msg.contains(secret), "{msg}");
            assert!(!format!("{err:?}").contains(secret));
        }
        rule.check("ok", "sk-hs-0123456789abcdefghij").unwrap();
        KeyRule::any().check("any", "x").unwrap();
    }
}
