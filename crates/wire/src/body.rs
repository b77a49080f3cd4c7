//! A request body: checked once, read where it lies, and sent on as it
//! came with only the gateway's edits spliced in.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::doc::Doc;
use crate::error::JsonError;
use crate::index::Index;
use crate::raw::{Key, Kind, Raw};
use crate::scan::{Member, check, skip_ws};

/// A JSON object body, checked, with the edits to make when it is sent.
///
/// Cloning it shares the bytes. [`get`](Self::get) reads the body as it
/// came; the edits ([`set`](Self::set), [`set_in`](Self::set_in)) are
/// applied by [`to_bytes`](Self::to_bytes), which copies the body once
/// (and not at all when there is nothing to change).
#[derive(Clone, PartialEq, Eq)]
pub struct JsonBody {
    /// The body as it came, known to be UTF-8.
    text: ByteString,
    /// Where the top-level members lie, found when the body was checked:
    /// reading one never scans the body again.
    members: Arc<[Member]>,
    /// Where the long values lie (see `Doc`).
    long: Arc<Index>,
    /// The members named in the watch list the body was checked with.
    watched: Arc<[Member]>,
    /// Where the top-level object lies.
    span: std::ops::Range<usize>,
    edits: Vec<Edit>,
}

/// One edit: a member of the top-level object (or of an object that is
/// one of its members) set to a JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Edit {
    parent: Option<String>,
    key: String,
    value: String,
}

impl fmt::Debug for JsonBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A body holds a user's prompts: its size, never its text.
        f.debug_struct("JsonBody")
            .field("bytes", &self.text.len())
            .field("edits", &self.edits.len())
            .finish()
    }
}

impl JsonBody {
    /// Checks `bytes` and keeps them: they must be one JSON object.
    pub fn parse(bytes: impl Into<Bytes>) -> Result<Self, JsonError> {
        Self::parse_watching(bytes, &[])
    }

    /// [`parse`](Self::parse), noting in the same pass the members at any
    /// depth whose name is in `watch` (read them with
    /// [`watched`](Self::watched)): how a caller finds a field wherever it
    /// lies without walking the body.
    pub fn parse_watching(bytes: impl Into<Bytes>, watch: &[&str]) -> Result<Self, JsonError> {
        let text = ByteString::try_from(bytes.into())
            .map_err(|e| JsonError::new(e.valid_up_to(), "invalid UTF-8"))?;
        let checked = check(&text, watch)?;
        let doc = text.as_bytes();
        let start = skip_ws(doc, 0);
        if doc.get(start) != Some(&b'{') {
            return Err(JsonError::new(start, "the body is not a JSON object"));
        }
        let end = text.trim_end_matches([' ', '\t', '\n', '\r']).len();
        Ok(JsonBody {
            members: checked.members.into(),
            long: Arc::new(checked.long),
            watched: checked.watched.into(),
            span: start..end,
            edits: Vec::new(),
            text,
        })
    }

    /// The body as it came, with no edits.
    pub fn original(&self) -> &Bytes {
        self.text.as_bytes()
    }

    /// The checked text.
    fn doc(&self) -> Doc<'_> {
        Doc::new(&self.text, &self.long)
    }

    /// The top-level object, as it came.
    pub fn root(&self) -> Raw<'_> {
        Raw::spanning(self.doc(), self.span.clone())
    }

    /// The top-level members in order, as they came (from where the check
    /// found them: nothing is scanned).
    pub fn members(&self) -> impl Iterator<Item = (Key<'_>, Raw<'_>)> {
        let doc = self.doc();
        self.members.iter().map(move |m| pair(doc, m))
    }

    /// The members, at any depth, whose name was in the watch list given to
    /// [`parse_watching`](Self::parse_watching), in the order their values
    /// end (nothing is scanned).
    pub fn watched(&self) -> impl Iterator<Item = (Key<'_>, Raw<'_>)> {
        let doc = self.doc();
        self.watched.iter().map(move |m| pair(doc, m))
    }

    /// The top-level member `key` as it came (the last one if it repeats).
    pub fn get(&self, key: &str) -> Option<Raw<'_>> {
        self.members()
            .filter(|(k, _)| k.is(key))
            .last()
            .map(|(_, v)| v)
    }

    /// Sets the top-level member `key` to the JSON text `value` (replacing
    /// every occurrence, or adding it at the end). `value` must be valid
    /// JSON: use [`string`], or the text of a number or literal.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.edit(None, key, value.into());
    }

    /// Sets member `key` of the top-level object member `parent` to `value`
    /// (creating `parent` as an object when it is absent or not an object).
    pub fn set_in(&mut self, parent: &str, key: &str, value: impl Into<String>) {
        self.edit(Some(parent.to_owned()), key, value.into());
    }

    /// Records an edit; a later edit of the same member wins, and a new
    /// value for a whole member drops the edits made inside it before.
    fn edit(&mut self, parent: Option<String>, key: &str, value: String) {
        self.edits.retain(|e| !(e.parent == parent && e.key == key));
        match &parent {
            None => self.edits.retain(|e| e.parent.as_deref() != Some(key)),
            Some(p) => self.edits.retain(|e| !(e.parent.is_none() && e.key == *p)),
        }
        self.edits.push(Edit {
            parent,
            key: key.to_owned(),
            value,
        });
    }

    /// Whether any edit is pending.
    pub fn is_edited(&self) -> bool {
        !self.edits.is_empty()
    }

    /// The bytes to send: the body as it came, with the edits spliced in.
    pub fn to_bytes(&self) -> Bytes {
        if self.edits.is_empty() {
            return self.original().clone();
        }
        let root = self.root();
        let mut splices = Vec::new();
        let mut top: Vec<(&str, String)> = Vec::new();
        for e in self.edits.iter().filter(|e| e.parent.is_none()) {
            top.push((&e.key, e.value.clone()));
        }
        let mut parents: Vec<&str> = self
            .edits
            .iter()
            .filter_map(|e| e.parent.as_deref())
            .collect();
        parents.sort_unstable();
        parents.dedup();
        for p in parents {
            let inner: Vec<(&str, String)> = self
                .edits
                .iter()
                .filter(|e| e.parent.as_deref() == Some(p))
                .map(|e| (e.key.as_str(), e.value.clone()))
                .collect();
            match self.get(p).filter(|v| v.kind() == Kind::Object) {
                Some(obj) => set_members(obj.members(), obj.close(), &inner, &mut splices),
                None => top.push((p, object(&inner))),
            }
        }
        set_members(self.members(), root.close(), &top, &mut splices);
        splice(self.original(), splices)
    }
}

/// The name and value of the member lying at `m`.
fn pair<'a>(doc: Doc<'a>, m: &Member) -> (Key<'a>, Raw<'a>) {
    (
        Key::spanning(doc, m.key.clone()),
        Raw::spanning(doc, m.value.clone()),
    )
}

/// A replacement of `range` of the document by `text`.
struct Splice {
    at: std::ops::Range<usize>,
    text: String,
}

/// The splices that set `edits` in an object of `members` whose closing
/// brace is at `close`: each present member's value replaced, the absent
/// ones added before the brace.
fn set_members<'a>(
    members: impl Iterator<Item = (Key<'a>, Raw<'a>)>,
    close: usize,
    edits: &[(&str, String)],
    out: &mut Vec<Splice>,
) {
    let mut present = vec![false; edits.len()];
    let mut any = false;
    for (k, v) in members {
        any = true;
        for (i, (key, value)) in edits.iter().enumerate() {
            if k.is(key) {
                if let Some(p) = present.get_mut(i) {
                    *p = true;
                }
                out.push(Splice {
                    at: v.span(),
                    text: value.clone(),
                });
            }
        }
    }
    let mut added = String::new();
    for ((key, value), _) in edits.iter().zip(&present).filter(|(_, p)| !**p) {
        if any || !added.is_empty() {
            added.push(',');
        }
        added.push_str(&string(key));
        added.push(':');
        added.push_str(value);
    }
    if !added.is_empty() {
        out.push(Splice {
            at: close..close,
            text: added,
        });
    }
}

/// An object of `members`.
fn object(members: &[(&str, String)]) -> String {
    let inner: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{v}", string(k)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// `bytes` with `splices` (which do not overlap) applied.
fn splice(bytes: &Bytes, mut splices: Vec<Splice>) -> Bytes {
    splices.sort_by_key(|s| (s.at.start, s.at.end));
    let extra: usize = splices.iter().map(|s| s.text.len()).sum();
    let mut out = BytesMut::with_capacity(bytes.len() + extra);
    let mut pos = 0;
    for s in splices {
        if s.at.start < pos {
            continue;
        }
        out.extend_from_slice(bytes.get(pos..s.at.start).unwrap_or_default());
        out.extend_from_slice(s.text.as_bytes());
        pos = s.at.end;
    }
    out.extend_from_slice(bytes.get(pos..).unwrap_or_default());
    out.freeze()
}

/// `s` as a JSON string.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
