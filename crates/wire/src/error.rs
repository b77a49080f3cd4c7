//! What is wrong with a body that is not the JSON it claims to be.

use std::fmt;

/// Why a body could not be read: where, and what was found there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    offset: usize,
    what: &'static str,
}

impl JsonError {
    pub(crate) fn new(offset: usize, what: &'static str) -> Self {
        JsonError { offset, what }
    }

    /// The byte offset where reading stopped.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// What was wrong there, in a few words.
    pub fn what(&self) -> &'static str {
        self.what
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

impl std::error::Error for JsonError {}
