//! The reader held to a full JSON parser's verdict: `serde_json` says
//! whether bytes are JSON and what they hold; the reader must agree.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use serde_json::Value;
use wire::{JsonBody, Kind, Raw, string, validate};

/// Whether the reader and `serde_json` agree that `bytes` are JSON.
fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let oracle = serde_json::from_slice::<Value>(bytes).is_ok();
    let ours = validate(bytes);
    prop_assert_eq!(
        ours.is_ok(),
        oracle,
        "{:?}: ours {:?}",
        String::from_utf8_lossy(bytes),
        ours
    );
    Ok(())
}

/// Whether `raw` reads as `value` does, all the way down.
fn same(raw: Raw<'_>, value: &Value) -> Result<(), TestCaseError> {
    match value {
        Value::Object(map) => {
            prop_assert_eq!(raw.kind(), Kind::Object);
            prop_assert_eq!(raw.members().count(), map.len());
            for (k, v) in map {
                let member = raw.get(k);
                prop_assert!(member.is_some(), "member {k:?} missing");
                if let Some(member) = member {
                    same(member, v)?;
                }
            }
            for (k, _) in raw.members() {
                prop_assert!(map.contains_key(k.name().as_ref()));
            }
        }
        Value::Array(items) => {
            prop_assert_eq!(raw.kind(), Kind::Array);
            prop_assert_eq!(raw.items().count(), items.len());
            for (r, v) in raw.items().zip(items) {
                same(r, v)?;
            }
        }
        Value::String(s) => {
            let ours = raw.as_str();
            prop_assert_eq!(ours.as_deref(), Some(s.as_str()));
            match raw.ascii_len() {
                Some(len) => prop_assert!(s.is_ascii() && s.len() == len),
                None => prop_assert!(!s.is_ascii() || raw.text().contains("\\u")),
            }
        }
        Value::Bool(b) => prop_assert_eq!(raw.as_bool(), Some(*b)),
        Value::Null => prop_assert!(raw.is_null()),
        Value::Number(n) => {
            prop_assert_eq!(raw.kind(), Kind::Number);
            prop_assert_eq!(raw.as_u64(), n.as_u64());
            let ours: Option<f64> = raw.text().parse().ok();
            prop_assert_eq!(ours, n.as_f64());
        }
    }
    Ok(())
}

/// Text with what makes strings hard: escapes, controls, quotes,
/// non-Latin scripts and characters outside the basic plane.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,12}",
        // Around the length past which the check indexes a value, escapes
        // included (one may straddle the bound).
        "[a-z\"\\\\\n]{55,80}",
        "[\"\\\\/\u{0}-\u{1f}\u{7f}é你😀\u{2028}]{0,8}",
        any::<String>(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Documents whose member names are few, so that watched names recur at
/// every depth.
fn keyed() -> impl Strategy<Value = Value> {
    let name = prop::sample::select(vec!["a", "b", "é", "x\"y"]).prop_map(String::from);
    let leaf = prop_oneof![Just(Value::Null), text().prop_map(Value::String)];
    leaf.prop_recursive(6, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(name.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every member of `v`, at any depth, named in `watch`: name and value.
fn named(v: &Value, watch: &[&str], out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if watch.contains(&k.as_str()) {
                    out.push((k.clone(), v.clone()));
                }
                named(v, watch, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| named(v, watch, out)),
        _ => {}
    }
}

/// A body as clients send it: a model, messages, and anything else.
fn body() -> impl Strategy<Value = Value> {
    (
        text(),
        prop::collection::vec(json(), 0..4),
        prop::collection::btree_map("[a-z_]{1,8}", json(), 0..4),
    )
        .prop_map(|(model, messages, extra)| {
            let mut o: serde_json::Map<String, Value> = extra.into_iter().collect();
            o.insert("model".into(), Value::String(model));
            o.insert("messages".into(), Value::Array(messages));
            Value::Object(o)
        })
}

/// `bytes` with a few bytes changed, removed or inserted.
fn mutate(bytes: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for &(at, op, b) in edits {
        if out.is_empty() {
            out.push(b);
            continue;
        }
        let i = at % out.len();
        match op % 3 {
            0 => out[i] = b,
            1 => {
                out.remove(i);
            }
            _ => out.insert(i, b),
        }
    }
    out
}

/// Bytes JSON is made of, so that mutations stay near the grammar.
fn json_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(b"{}[]\",:\\/0123456789.eE+-tfnrul ubx\t\n".to_vec()),
        any::<u8>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn what_serde_json_writes_is_read_as_it_reads_it(v in json()) {
        for bytes in [serde_json::to_vec(&v).unwrap(), serde_json::to_vec_pretty(&v).unwrap()] {
            prop_assert!(validate(&bytes).is_ok());
            let doc = format!("{{\"v\":{}}}", String::from_utf8(bytes).unwrap());
            let body = JsonBody::parse(doc.into_bytes()).unwrap();
            same(body.get("v").unwrap(), &v)?;
        }
    }

    #[test]
    fn a_damaged_document_is_refused_exactly_when_serde_json_refuses_it(
        v in json(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), json_byte()), 1..4),
    ) {
        let bytes = serde_json::to_vec(&v).unwrap();
        agree(&mutate(&bytes, &edits))?;
    }

    #[test]
    fn any_bytes_get_the_same_verdict(bytes in prop::collection::vec(json_byte(), 0..40)) {
        agree(&bytes)?;
    }

    #[test]
    fn the_watched_members_are_every_member_so_named(v in keyed(), escaped in any::<bool>()) {
        const WATCH: [&str; 2] = ["é", "x\"y"];
        let mut text = format!("{{\"v\":{}}}", serde_json::to_string(&v).unwrap());
        if escaped {
            // The same document with every é escaped, names included.
            text = text.replace('é', "\\u00e9");
        }
        let body = JsonBody::parse_watching(text.into_bytes(), &WATCH).unwrap();
        let mut ours: Vec<(String, Value)> = body
            .watched()
            .map(|(k, v)| (k.name().into_owned(), serde_json::from_str(v.text()).unwrap()))
            .collect();
        let mut want = Vec::new();
        named(&v, &WATCH, &mut want);
        let key = |p: &(String, Value)| (p.0.clone(), p.1.to_string());
        ours.sort_by_key(key);
        want.sort_by_key(key);
        prop_assert_eq!(ours, want);
    }

    #[test]
    fn edits_make_the_body_a_tree_edit_would(v in body(), model in text(), cap in any::<u64>()) {
        let sent = serde_json::to_vec(&v).unwrap();
        // The tree the upstream would read from what was sent.
        let mut want: Value = serde_json::from_slice(&sent).unwrap();
        let mut body = JsonBody::parse(sent).unwrap();
        body.set("model", string(&model));
        body.set("max_tokens", cap.to_string());
        body.set("stream", "true");
        body.set_in("stream_options", "include_usage", "true");
        let got: Value = serde_json::from_slice(&body.to_bytes()).unwrap();

        let o = want.as_object_mut().unwrap();
        o.insert("model".into(), Value::String(model));
        o.insert("max_tokens".into(), Value::from(cap));
        o.insert("stream".into(), Value::Bool(true));
        match o.get_mut("stream_options").and_then(Value::as_object_mut) {
            Some(options) => {
                options.insert("include_usage".into(), Value::Bool(true));
            }
            None => {
                o.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
            }
        }
        prop_assert_eq!(got, want);
    }
}

#[test]
fn nesting_stops_where_serde_json_stops() {
    for depth in [126, 127, 128, 129] {
        let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        agree(doc.as_bytes()).unwrap();
        let doc = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        agree(doc.as_bytes()).unwrap();
    }
}

#[test]
fn the_corners_of_the_grammar_agree() {
    let cases: &[&[u8]] = &[
        b"",
        b" ",
        b"{}",
        b"[]",
        b"0",
        b"-0",
        b"01",
        b"-",
        b"1.",
        b".5",
        b"1e",
        b"1e+",
        b"1E-2",
        b"1e309",
        b"-1e309",
        b"1e-400",
        b"0e99999999999",
        b"123456789012345678901234567890",
        &[b'1'; 400],
        b"\"\\ud800\"",
        b"\"\\udc00\"",
        b"\"\\ud800\\udc00\"",
        b"\"\\ud800\\u0041\"",
        b"\"\\uD83D\\uDE00\"",
        b"\"\\x\"",
        b"\"\\u12\"",
        b"\"\x01\"",
        b"\"\x7f\"",
        b"\"\xff\"",
        b"\"\xc3\xa9\"",
        b"tru",
        b"true ",
        b"nul",
        b"[1,]",
        b"{\"a\":1,}",
        b"{\"a\" 1}",
        b"{1:1}",
        b"[1 2]",
        b"\xef\xbb\xbf{}",
        b"{}\x00",
        b"\"a\"\"b\"",
        b"[\"\\/\"]",
    ];
    for case in cases {
        agree(case).unwrap();
    }
}

#[test]
fn a_body_must_be_an_object() {
    assert!(JsonBody::parse(&b"[1]"[..]).is_err());
    assert!(JsonBody::parse(&b"\"x\""[..]).is_err());
    let e = JsonBody::parse(&b"{\"model\": \"a\",}"[..]).unwrap_err();
    assert_eq!(e.offset(), 14);
    assert!(e.to_string().contains("member name"), "{e}");
}

#[test]
fn a_repeated_member_reads_its_last_value_and_every_copy_is_edited() {
    let mut body = JsonBody::parse(&br#"{"model":"a","model":"b"}"#[..]).unwrap();
    assert_eq!(body.get("model").unwrap().as_str().as_deref(), Some("b"));
    body.set("model", string("c"));
    assert_eq!(&body.to_bytes()[..], br#"{"model":"c","model":"c"}"#);
}

#[test]
fn an_unedited_body_is_sent_without_a_copy() {
    let body = JsonBody::parse(&br#" {"model" : "a"} "#[..]).unwrap();
    assert!(!body.is_edited());
    assert_eq!(body.to_bytes().as_ptr(), body.original().as_ptr());
}

#[test]
fn edits_keep_what_they_do_not_touch_byte_for_byte() {
    let sent = b"{ \"model\" : \"x\" ,\n \"a\": [1.50, 2e3, \"\\u00e9\"], \"stream_options\": {\"z\": 1} }";
    let mut body = JsonBody::parse(&sent[..]).unwrap();
    body.set("model", string("y\"z"));
    body.set_in("stream_options", "include_usage", "true");
    assert_eq!(
        &body.to_bytes()[..],
        &b"{ \"model\" : \"y\\\"z\" ,\n \"a\": [1.50, 2e3, \"\\u00e9\"], \"stream_options\": {\"z\": 1,\"include_usage\":true} }"[..]
    );
    let empty = JsonBody::parse(&b"{ }"[..]).map(|mut b| {
        b.set("stream", "true");
        b.set_in("stream_options", "include_usage", "true");
        b.to_bytes()
    });
    assert_eq!(
        &empty.unwrap()[..],
        br#"{ "stream":true,"stream_options":{"include_usage":true}}"#
    );
}
