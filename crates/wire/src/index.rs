//! Where a checked text's long values lie, found by where they start.
//!
//! Reading a body skips values to reach the next member or item. The
//! check notes each value longer than [`LONG`] bytes: its end and, for a
//! string, what its escapes take. A bit per byte of text marks where such
//! a value starts, and a count per 64 bytes says how many start before:
//! whether a value is long, and then where it ends, is known in a few
//! instructions, without a search.

/// Values longer than this (in bytes) are indexed by the check; shorter
/// ones are scanned when they are skipped.
pub(crate) const LONG: usize = 64;

/// Where a long value lies, and for a string what its escapes take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Long {
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// For a string without `\u` escapes, the bytes its escapes take
    /// beyond the characters they stand for; `None` otherwise.
    pub(crate) shrink: Option<usize>,
}

/// The long values of one text, in the order they start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Index {
    long: Vec<Long>,
    /// One bit per byte of the text, set where a long value starts.
    starts: Vec<u64>,
    /// For each word of `starts`, how many long values start before it
    /// (filled by [`finish`](Self::finish)).
    before: Vec<usize>,
}

impl Index {
    /// An empty index for a text of `len` bytes.
    pub(crate) fn new(len: usize) -> Self {
        Index {
            long: Vec::new(),
            starts: vec![0; len.div_ceil(64)],
            before: Vec::new(),
        }
    }

    fn bit(&mut self, start: usize, on: bool) {
        if let Some(word) = self.starts.get_mut(start / 64) {
            let bit = 1u64 << (start % 64);
            if on {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    /// Adds a value that starts after every value added before; returns
    /// its slot.
    pub(crate) fn push(&mut self, long: Long) -> usize {
        self.bit(long.start, true);
        self.long.push(long);
        self.long.len() - 1
    }

    /// The value in `slot`.
    pub(crate) fn slot(&mut self, slot: usize) -> Option<&mut Long> {
        self.long.get_mut(slot)
    }

    /// Forgets the values from `slot` on.
    pub(crate) fn truncate(&mut self, slot: usize) {
        while self.long.len() > slot {
            if let Some(l) = self.long.pop() {
                self.bit(l.start, false);
            }
        }
    }

    /// Counts, once every value is in, how many start before each word.
    pub(crate) fn finish(&mut self) {
        let mut count = 0;
        self.before = self
            .starts
            .iter()
            .map(|w| {
                let here = count;
                count += w.count_ones() as usize;
                here
            })
            .collect();
    }

    /// The long value starting at `start`, if there is one.
    pub(crate) fn get(&self, start: usize) -> Option<&Long> {
        let word = *self.starts.get(start / 64)?;
        let bit = 1u64 << (start % 64);
        if word & bit == 0 {
            return None;
        }
        let rank = self.before.get(start / 64)? + (word & (bit - 1)).count_ones() as usize;
        self.long.get(rank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_where_they_start() {
        let mut index = Index::new(300);
        for (start, end) in [(0, 300), (1, 70), (63, 200), (64, 130), (250, 299)] {
            index.push(Long {
                start,
                end,
                shrink: None,
            });
        }
        let slot = index.push(Long {
            start: 280,
            end: 290,
            shrink: None,
        });
        index.truncate(slot);
        index.finish();
        for (start, end) in [(0, 300), (1, 70), (63, 200), (64, 130), (250, 299)] {
            assert_eq!(index.get(start).map(|l| l.end), Some(end));
        }
        for start in [2, 62, 65, 128, 280, 299, 300, 10_000] {
            assert_eq!(index.get(start), None);
        }
    }
}
