//! The body reader against `serde_json` on any bytes: the same verdict on
//! whether they are JSON, the same values read from them, and edits that
//! leave a body `serde_json` still reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wire::{JsonBody, Kind, Raw, string, validate};

/// Panics unless `raw` reads as `value` does, all the way down.
fn same(raw: Raw<'_>, value: &Value) {
    match value {
        Value::Object(map) => {
            assert_eq!(raw.kind(), Kind::Object);
            for (k, v) in map {
                same(raw.get(k).expect("a member serde_json read"), v);
            }
            for (k, _) in raw.members() {
                assert!(map.contains_key(k.name().as_ref()));
            }
        }
        Value::Array(items) => {
            assert_eq!(raw.items().count(), items.len());
            raw.items().zip(items).for_each(|(r, v)| same(r, v));
        }
        Value::String(s) => assert_eq!(raw.as_str().as_deref(), Some(s.as_str())),
        Value::Bool(b) => assert_eq!(raw.as_bool(), Some(*b)),
        Value::Null => assert!(raw.is_null()),
        Value::Number(n) => {
            assert_eq!(raw.kind(), Kind::Number);
            assert_eq!(raw.as_u64(), n.as_u64());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let oracle = serde_json::from_slice::<Value>(data);
    assert_eq!(validate(data).is_ok(), oracle.is_ok(), "verdicts differ");
    let Ok(value) = oracle else { return };
    let Ok(mut body) = JsonBody::parse(data.to_vec()) else {
        assert!(!value.is_object(), "an object refused");
        return;
    };
    same(body.root(), &value);
    body.set("model", string("m\"\u{1}é"));
    body.set_in("stream_options", "include_usage", "true");
    let edited: Value = serde_json::from_slice(&body.to_bytes()).expect("edits keep JSON");
    assert_eq!(edited["model"], "m\"\u{1}é");
    assert_eq!(edited["stream_options"]["include_usage"], true);
});
