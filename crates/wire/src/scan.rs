//! The validating scanner: checks that bytes are one JSON value (RFC 8259,
//! as strict as `serde_json`: UTF-8, no lone surrogate escapes, numbers a
//! double can hold, at most [`MAX_DEPTH`] nested containers) without
//! building anything, and the skips that later walks over checked text use.
//!
//! Strings make up nearly all of an agent's body, so they are scanned eight
//! bytes at a time for the three bytes that end a run of plain text: a
//! quote, a backslash, a control character.

use crate::error::JsonError;
use crate::index::{Index, LONG, Long};

/// The most containers nested in one another (as `serde_json` allows).
pub const MAX_DEPTH: usize = 127;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A mask with the high bit set in (at least) the lowest byte of `word`
/// that is below `n` (for `n` ≤ 0x80): exact for the lowest such byte.
fn below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
}

/// A mask with the high bit set in the lowest byte of `word` equal to `b`.
fn equal(word: u64, b: u8) -> u64 {
    below(word ^ (ONES * u64::from(b)), 1)
}

/// The index of the first byte at or after `i` that is a quote, a
/// backslash or (with `controls`) below 0x20; `bytes.len()` if none.
pub(crate) fn special(bytes: &[u8], mut i: usize, controls: bool) -> usize {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let mut hits = equal(word, b'"') | equal(word, b'\\');
        if controls {
            hits |= below(word, 0x20);
        }
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || (controls && b < 0x20) {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

/// Checks that `bytes` hold exactly one JSON value, with whitespace around it.
pub fn validate(bytes: &[u8]) -> Result<(), JsonError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| JsonError::new(e.valid_up_to(), "invalid UTF-8"))?;
    check(text, &[]).map(drop)
}

/// Where a member of an object lies: its name (quotes included) and its
/// value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) key: std::ops::Range<usize>,
    pub(crate) value: std::ops::Range<usize>,
}

/// What one pass of the check finds besides the verdict.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The members of the outermost value (none if it is not an object).
    pub(crate) members: Vec<Member>,
    /// Where every value longer than [`LONG`] bytes lies, in the order the
    /// values start: the later walks skip them without scanning them.
    pub(crate) long: Index,
    /// The members, at any depth, whose name is one of those watched (in
    /// the order their values end).
    pub(crate) watched: Vec<Member>,
}

/// [`validate`]s UTF-8 text, and finds in the same pass where the members
/// of the outermost value lie, where the long values end and the members
/// named in `watch`.
pub(crate) fn check(text: &str, watch: &[&str]) -> Result<Checked, JsonError> {
    let mut s = Scanner {
        bytes: text.as_bytes(),
        text,
        pos: 0,
        watch,
        out: Checked {
            members: Vec::new(),
            long: Index::new(text.len()),
            watched: Vec::new(),
        },
    };
    s.ws();
    s.value(0)?;
    s.ws();
    if s.pos < s.bytes.len() {
        return Err(s.error("trailing characters after the value"));
    }
    s.out.long.finish();
    Ok(s.out)
}

/// A cursor over text being checked.
struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    watch: &'a [&'a str],
    out: Checked,
}

impl Scanner<'_> {
    fn error(&self, what: &'static str) -> JsonError {
        JsonError::new(self.pos, what)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8, what: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// One value at nesting `depth`, the cursor on its first byte.
    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("the body ends where a value was expected")),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn nest(&self, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("containers nested too deep"));
        }
        Ok(())
    }

    /// Opens a container at the cursor: a slot in the index of long
    /// values, filled (or dropped, when it turns out short) by [`close`](Self::close).
    fn open(&mut self) -> usize {
        let slot = self.out.long.push(Long {
            start: self.pos,
            end: self.pos,
            shrink: None,
        });
        self.pos += 1;
        self.ws();
        slot
    }

    /// Closes the container of `slot`, the cursor on its closing bracket.
    /// A short container holds no long values, so its slot is the last.
    fn close(&mut self, slot: usize) {
        self.pos += 1;
        let end = self.pos;
        match self.out.long.slot(slot) {
            Some(long) if end - long.start > LONG => long.end = end,
            _ => self.out.long.truncate(slot),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), JsonError> {
        self.nest(depth)?;
        let slot = self.open();
        if self.peek() == Some(b'}') {
            self.close(slot);
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a member name"));
            }
            let key = self.pos;
            self.string()?;
            let key = key..self.pos;
            self.ws();
            self.expect(b':', "expected ':' after a member name")?;
            self.ws();
            let value = self.pos;
            self.value(depth)?;
            let member = Member {
                key,
                value: value..self.pos,
            };
            if self.is_watched(&member.key) {
                self.out.watched.push(member.clone());
            }
            if depth == 1 {
                self.out.members.push(member);
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.close(slot);
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }

    /// Whether the member name at `key` (quotes included) is watched.
    fn is_watched(&self, key: &std::ops::Range<usize>) -> bool {
        if self.watch.is_empty() {
            return false;
        }
        let inner = self
            .text
            .get(key.start + 1..key.end - 1)
            .unwrap_or_default();
        if !inner.contains('\\') {
            return self.watch.contains(&inner);
        }
        self.watch
            .iter()
            .any(|w| crate::raw::Pieces::of(inner).eq_text(w))
    }

    fn array(&mut self, depth: usize) -> Result<(), JsonError> {
        self.nest(depth)?;
        let slot = self.open();
        if self.peek() == Some(b']') {
            self.close(slot);
            return Ok(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.close(slot);
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    /// A string, the cursor on its opening quote.
    fn string(&mut self) -> Result<(), JsonError> {
        let start = self.pos;
        let mut shrink = Some(0);
        self.pos += 1;
        loop {
            self.pos = special(self.bytes, self.pos, true);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    if self.pos - start > LONG {
                        self.out.long.push(Long {
                            start,
                            end: self.pos,
                            shrink,
                        });
                    }
                    return Ok(());
                }
                Some(b'\\') => {
                    shrink = match self.bytes.get(self.pos + 1) {
                        Some(b'u') => None,
                        _ => shrink.map(|n| n + 1),
                    };
                    self.escape()?;
                }
                Some(_) => return Err(self.error("a control character in a string")),
                None => return Err(self.error("the body ends inside a string")),
            }
        }
    }

    /// An escape, the cursor on its backslash.
    fn escape(&mut self) -> Result<(), JsonError> {
        match self.bytes.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex()?;
                match unit {
                    0xD800..=0xDBFF => {
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.error("a lone surrogate escape"));
                        }
                        if !(0xDC00..=0xDFFF).contains(&self.hex()?) {
                            return Err(self.error("a lone surrogate escape"));
                        }
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(self.error("a lone surrogate escape")),
                    _ => Ok(()),
                }
            }
            _ => Err(self.error("an invalid escape")),
        }
    }

    /// `\uXXXX` at the cursor: its code unit; the cursor moves past it.
    fn hex(&mut self) -> Result<u16, JsonError> {
        let digits = self
            .bytes
            .get(self.pos + 2..self.pos + 6)
            .ok_or_else(|| self.error("the body ends inside an escape"))?;
        let mut unit = 0u16;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.error("an invalid escape"))?;
            unit = unit * 16 + v as u16;
        }
        self.pos += 6;
        Ok(unit)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number: its grammar, and a magnitude a double can hold.
    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("an invalid number")),
        }
        let mut plain = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            plain = false;
            if self.digits() == 0 {
                return Err(self.error("an invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            plain = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("an invalid number"));
            }
        }
        let text = self.bytes.get(start..self.pos).unwrap_or_default();
        if (!plain || text.len() > 19) && !finite(text) {
            return Err(JsonError::new(start, "a number out of range"));
        }
        Ok(())
    }
}

/// Whether a number's text is within a double's range.
fn finite(text: &[u8]) -> bool {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// The end of the string whose opening quote is at `i`, in checked text.
pub(crate) fn string_end(bytes: &[u8], mut i: usize) -> usize {
    i += 1;
    loop {
        i = special(bytes, i, false);
        match bytes.get(i) {
            Some(b'"') => return i + 1,
            Some(_) => i += 2,
            None => return bytes.len(),
        }
    }
}

/// The end of the value starting at `i`, in checked text, found by
/// scanning it.
pub(crate) fn value_end(bytes: &[u8], i: usize) -> usize {
    match bytes.get(i) {
        Some(b'"') => string_end(bytes, i),
        Some(b'{' | b'[') => container_end(bytes, i),
        Some(_) => {
            let mut j = i;
            while let Some(b) = bytes.get(j) {
                if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            j
        }
        None => i,
    }
}

fn container_end(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                i = string_end(bytes, i);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// The index of the first byte at or after `i` that is not whitespace.
pub(crate) fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(i) {
        i += 1;
    }
    i
}
