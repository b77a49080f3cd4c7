//! Upstream keys' secrets at rest: sealed with ChaCha20-Poly1305 under a key
//! the operator gives (`[storage] secrets_key`), each bound to its key's id,
//! so a sealed secret cannot be read without that key nor moved to another
//! record.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Why a secret could not be sealed or opened. Never holds a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The key given is not 64 hex digits.
    #[error("the secrets key must be 64 hex digits (32 bytes; `openssl rand -hex 32` makes one)")]
    BadKey,
    /// No randomness for a nonce.
    #[error("no randomness for a nonce")]
    NoRandomness,
    /// The sealed bytes were not made with this key for this record, or
    /// were changed.
    #[error("a stored secret cannot be opened: wrong secrets key, or the record was altered")]
    Unreadable,
}

/// Seals and opens secrets. Its `Debug` shows nothing of the key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

/// Bytes of a nonce, written before the ciphertext.
const NONCE: usize = 12;

impl Sealer {
    /// A sealer from 64 hex digits (32 bytes).
    pub fn from_hex(hex: &str) -> Result<Self, SealError> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SealError::BadKey);
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or(SealError::BadKey)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| SealError::BadKey)?;
        }
        Ok(Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// `secret` sealed for the record `id`: a random nonce, then the
    /// ciphertext and its tag.
    pub fn seal(&self, id: &str, secret: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|_| SealError::NoRandomness)?;
        let payload = Payload {
            msg: secret.as_bytes(),
            aad: id.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| SealError::Unreadable)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// The secret `sealed` holds for the record `id`.
    pub fn open(&self, id: &str, sealed: &[u8]) -> Result<String, SealError> {
        let (nonce, ciphertext) = sealed
            .split_at_checked(NONCE)
            .ok_or(SealError::Unreadable)?;
        let payload = Payload {
            msg: ciphertext,
            aad: id.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Unreadable)?;
        String::from_utf8(plain).map_err(|_| SealError::Unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_for_its_record() {
        let s = Sealer::from_hex(KEY).unwrap();
        let sealed = s.seal("uk_1", "sk-live-secret-0123456789").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"sk-live"), "not in clear");
        assert_eq!(
            s.open("uk_1", &sealed).unwrap(),
            "sk-live-secret-0123456789"
        );
        assert_ne!(
            sealed,
            s.seal("uk_1", "sk-live-secret-0123456789").unwrap(),
            "fresh nonce"
        );
        assert_eq!(
            s.open("uk_2", &sealed),
            Err(SealError::Unreadable),
            "bound to its record"
        );
        let other = Sealer::from_hex(&KEY.replace('0', "1")).unwrap();
        assert_eq!(other.open("uk_1", &sealed), Err(SealError::Unreadable));
        let mut altered = sealed;
        if let Some(b) = altered.last_mut() {
            *b ^= 1;
        }
        assert_eq!(s.open("uk_1", &altered), Err(SealError::Unreadable));
        assert_eq!(s.open("uk_1", b"short"), Err(SealError::Unreadable));
        assert_eq!(Sealer::from_hex("abc").unwrap_err(), SealError::BadKey);
        assert_eq!(format!("{s:?}"), "Sealer(…)");
    }
}
