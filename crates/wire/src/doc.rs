//! Checked text and the index of its long values: what every [`Raw`]
//! reads.
//!
//! Skipping a value (to reach the next member or item) is what every read
//! does. The check records where each value longer than 64 bytes
//! ends (see `index`), so a skip costs a bounded scan or a look-up, never
//! a rescan of a long history: reading message after message of a 200 KB
//! body touches each byte of it at most once more.
//!
//! [`Raw`]: crate::Raw

use crate::index::{Index, Long};
use crate::scan::value_end;

/// Checked JSON text, and where its long values end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Doc<'a> {
    text: &'a str,
    /// Every value longer than 64 bytes.
    long: &'a Index,
}

impl<'a> Doc<'a> {
    /// `text`, checked, with the index its check built.
    pub(crate) fn new(text: &'a str, long: &'a Index) -> Self {
        Doc { text, long }
    }

    /// The text.
    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    /// The text's bytes.
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The end of the value starting at `i`.
    pub(crate) fn value_end(&self, i: usize) -> usize {
        let bytes = self.bytes();
        // A value the index does not know is short: scanning it is cheap.
        self.indexed(i).unwrap_or_else(|| value_end(bytes, i))
    }

    /// The end of the long value starting at `start`, if it is one.
    fn indexed(&self, start: usize) -> Option<usize> {
        self.long(start).map(|l| l.end)
    }

    /// The long value starting at `start`, if it is one.
    pub(crate) fn long(&self, start: usize) -> Option<&'a Long> {
        self.long.get(start)
    }
}
