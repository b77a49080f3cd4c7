//! A view of one value inside checked JSON text, read where it lies.

use std::borrow::Cow;

use crate::doc::Doc;
use crate::scan::{skip_ws, string_end};

/// What kind of value a [`Raw`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `{…}`
    Object,
    /// `[…]`
    Array,
    /// `"…"`
    String,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
    /// `null`.
    Null,
}

/// One value of a checked JSON document: its text and where it lies.
/// Reading it (a member, the items, a string) scans only what is asked
/// for; nothing is copied but the strings that hold escapes.
#[derive(Clone, Copy, Debug)]
pub struct Raw<'a> {
    doc: Doc<'a>,
    start: usize,
    end: usize,
}

impl<'a> Raw<'a> {
    /// The value starting at `start` of checked text `doc`.
    pub(crate) fn at(doc: Doc<'a>, start: usize) -> Self {
        let end = doc.value_end(start);
        Raw { doc, start, end }
    }

    /// The value lying at `span` of checked text `doc`.
    pub(crate) fn spanning(doc: Doc<'a>, span: std::ops::Range<usize>) -> Self {
        Raw {
            doc,
            start: span.start,
            end: span.end,
        }
    }

    /// The value's text, exactly as it was sent.
    pub fn text(&self) -> &'a str {
        // A value's span starts and ends on character boundaries (at ASCII
        // bytes): this never falls back.
        self.doc
            .text()
            .get(self.start..self.end)
            .unwrap_or_default()
    }

    fn bytes(&self) -> Option<&'a [u8]> {
        self.doc.bytes().get(self.start..self.end)
    }

    /// Where the value lies in its document: `start..end`, in bytes.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }

    /// What kind of value it is.
    pub fn kind(&self) -> Kind {
        match self.bytes().and_then(|b| b.first()) {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            _ => Kind::Number,
        }
    }

    /// The string, unescaped (borrowed unless it holds escapes).
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        let inner = self.inner()?;
        if !inner.contains('\\') {
            return Some(Cow::Borrowed(inner));
        }
        let mut out = String::with_capacity(inner.len());
        for piece in self.pieces() {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Char(c) => out.push(c),
            }
        }
        Some(Cow::Owned(out))
    }

    /// The string's text in pieces, without copying: runs of plain text
    /// and the characters its escapes stand for (nothing if it is not a
    /// string). For counting or hashing a long text without unescaping it.
    pub fn pieces(&self) -> Pieces<'a> {
        Pieces {
            rest: self.inner().unwrap_or_default(),
        }
    }

    /// The length of the string's text once unescaped, when it is all
    /// ASCII: what counting a long text needs, known without reading it
    /// again when the check indexed the string (it noted its escapes).
    /// `None` when it is not a string or its text is not all ASCII, and for
    /// a long string written with `\u` escapes (read its
    /// [`pieces`](Self::pieces) then).
    pub fn ascii_len(&self) -> Option<usize> {
        let inner = self.inner()?;
        if !inner.is_ascii() {
            return None;
        }
        if let Some(long) = self.doc.long(self.start) {
            return long.shrink.map(|shrink| inner.len().saturating_sub(shrink));
        }
        let mut len = 0;
        for piece in self.pieces() {
            match piece {
                Piece::Text(t) => len += t.len(),
                Piece::Char(c) if c.is_ascii() => len += 1,
                Piece::Char(_) => return None,
            }
        }
        Some(len)
    }

    /// A string's text between its quotes, escapes as sent.
    fn inner(&self) -> Option<&'a str> {
        self.text().strip_prefix('"')?.strip_suffix('"')
    }

    /// The boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self.text() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// The number, if it is written as a non-negative integer that fits
    /// (as `serde_json::Value::as_u64` reads it: `1.0` and `1e2` are not).
    pub fn as_u64(&self) -> Option<u64> {
        let t = self.text();
        if t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    }

    /// Whether it is `null`.
    pub fn is_null(&self) -> bool {
        self.text() == "null"
    }

    /// The object's member named `key` (the last one when the name repeats,
    /// as a parse into a map keeps).
    pub fn get(&self, key: &str) -> Option<Raw<'a>> {
        self.members()
            .filter(|(k, _)| k.is(key))
            .last()
            .map(|(_, v)| v)
    }

    /// The object's members in order (none if it is not an object).
    pub fn members(&self) -> Members<'a> {
        let pos = if self.kind() == Kind::Object {
            self.start + 1
        } else {
            self.end
        };
        Members {
            doc: self.doc,
            pos,
            end: self.end,
        }
    }

    /// The array's items in order (none if it is not an array).
    pub fn items(&self) -> Items<'a> {
        let pos = if self.kind() == Kind::Array {
            self.start + 1
        } else {
            self.end
        };
        Items {
            doc: self.doc,
            pos,
            end: self.end,
        }
    }

    /// Where the object's closing brace lies (what is added goes there).
    pub(crate) fn close(&self) -> usize {
        self.end.saturating_sub(1)
    }
}

/// A member's name, as sent.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a>(Raw<'a>);

impl<'a> Key<'a> {
    /// The name lying at `span` (quotes included) of checked text `doc`.
    pub(crate) fn spanning(doc: Doc<'a>, span: std::ops::Range<usize>) -> Self {
        Key(Raw::spanning(doc, span))
    }

    /// Whether the name is `name`.
    pub fn is(&self, name: &str) -> bool {
        let inner = self.0.inner().unwrap_or_default();
        // Without escapes the name is as sent; an escape makes it longer
        // than the name it stands for.
        if inner.len() == name.len() {
            return inner == name && !inner.as_bytes().contains(&b'\\');
        }
        inner.len() > name.len() && inner.contains('\\') && Pieces::of(inner).eq_text(name)
    }

    /// The name, unescaped.
    pub fn name(&self) -> Cow<'a, str> {
        // Names are short: a plain loop finds no backslash sooner than a
        // call to `memchr` would.
        let inner = self.0.inner().unwrap_or_default();
        if !inner.bytes().any(|b| b == b'\\') {
            return Cow::Borrowed(inner);
        }
        self.0.as_str().unwrap_or_default()
    }

    /// Where the name lies in its document (quotes included).
    pub fn span(&self) -> std::ops::Range<usize> {
        self.0.span()
    }
}

/// The members of an object: see [`Raw::members`].
#[derive(Clone, Debug)]
pub struct Members<'a> {
    doc: Doc<'a>,
    pos: usize,
    end: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (Key<'a>, Raw<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.doc.bytes();
        let mut i = skip_ws(bytes, self.pos);
        if bytes.get(i) == Some(&b',') {
            i = skip_ws(bytes, i + 1);
        }
        if i >= self.end || bytes.get(i) != Some(&b'"') {
            self.pos = self.end;
            return None;
        }
        let key_end = string_end(bytes, i);
        let key = Raw {
            doc: self.doc,
            start: i,
            end: key_end,
        };
        // The colon, with whitespace on either side.
        let colon = skip_ws(bytes, key_end);
        let value = Raw::at(self.doc, skip_ws(bytes, colon + 1));
        self.pos = value.end;
        Some((Key(key), value))
    }
}

/// The items of an array: see [`Raw::items`].
#[derive(Clone, Debug)]
pub struct Items<'a> {
    doc: Doc<'a>,
    pos: usize,
    end: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = Raw<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.doc.bytes();
        let mut i = skip_ws(bytes, self.pos);
        if bytes.get(i) == Some(&b',') {
            i = skip_ws(bytes, i + 1);
        }
        if i >= self.end || matches!(bytes.get(i), Some(b']') | None) {
            self.pos = self.end;
            return None;
        }
        let item = Raw::at(self.doc, i);
        self.pos = item.end;
        Some(item)
    }
}

/// A piece of a string's text: see [`Raw::pieces`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text sent as it reads.
    Text(&'a str),
    /// The character an escape stands for.
    Char(char),
}

/// The pieces of a string: see [`Raw::pieces`].
#[derive(Clone, Debug)]
pub struct Pieces<'a> {
    rest: &'a str,
}

impl<'a> Pieces<'a> {
    /// The pieces of a string's text between its quotes, escapes as sent.
    pub(crate) fn of(inner: &'a str) -> Self {
        Pieces { rest: inner }
    }

    /// Whether the text the pieces make is `text`, without building it.
    pub(crate) fn eq_text(self, text: &str) -> bool {
        let mut rest = text;
        for piece in self {
            let tail = match piece {
                Piece::Text(t) => rest.strip_prefix(t),
                Piece::Char(c) => rest.strip_prefix(c),
            };
            match tail {
                Some(tail) => rest = tail,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let plain = crate::scan::special(self.rest.as_bytes(), 0, false);
        if plain > 0 {
            let (text, rest) = self.rest.split_at(plain.min(self.rest.len()));
            self.rest = rest;
            return Some(Piece::Text(text));
        }
        let tail = self.rest.get(1..).unwrap_or_default();
        let (c, used) = match tail.as_bytes().first() {
            Some(b'b') => ('\u{8}', 1),
            Some(b'f') => ('\u{c}', 1),
            Some(b'n') => ('\n', 1),
            Some(b'r') => ('\r', 1),
            Some(b't') => ('\t', 1),
            Some(b'u') => code_point(tail),
            Some(&other) => (other as char, 1),
            None => {
                self.rest = "";
                return None;
            }
        };
        self.rest = tail.get(used..).unwrap_or_default();
        Some(Piece::Char(c))
    }
}

/// The character of `uXXXX` (or a surrogate pair `uXXXX\uXXXX`) at the
/// start of `tail`, and the bytes it used.
fn code_point(tail: &str) -> (char, usize) {
    let unit = |at: usize| {
        tail.get(at..at + 4)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let Some(high) = unit(1) else {
        return (char::REPLACEMENT_CHARACTER, 1);
    };
    if (0xD800..0xDC00).contains(&high)
        && let Some(low) = unit(7)
    {
        let c = 0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
        return (char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 11);
    }
    (
        char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER),
        5,
    )
}
