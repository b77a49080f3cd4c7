use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use transport::{Answer, Class, classify, parse_duration, usage_of};

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let names = prop_oneof![
        Just("retry-after".to_owned()),
        Just("retry-after-ms".to_owned()),
        Just("x-ratelimit-remaining-requests".to_owned()),
        Just("x-ratelimit-reset-tokens".to_owned()),
        "[a-z-]{1,20}",
    ];
    prop::collection::vec((names, prop::collection::vec(any::<u8>(), 0..40)), 0..6)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "\\PC{0,200}".prop_map(String::into_bytes),
        Just(br#"{"error":{"type":"overloaded_error","message":"x"}}"#.to_vec()),
        Just(br#"{"error":"plain"}"#.to_vec()),
        Just(br#"{"usage":{"prompt_tokens":-1,"completion_tokens":"x"}}"#.to_vec()),
        Just(
            br#"{"error":{"code":400,"message":"context length is 99999999999999999999999"}}"#
                .to_vec()
        ),
    ]
}

/// JSON values shaped like answers: objects that may hold `usage` (in
/// OpenAI's or Anthropic's shape, or malformed) and `error`, nested, and
/// scalars and arrays at the top.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<u32>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e6f64..1e6).prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    let tokens = prop_oneof![
        any::<u32>().prop_map(|n| json!(n)),
        Just(json!(-3)),
        Just(json!("12")),
        Just(json!(1.5)),
    ]
    .boxed();
    let usage = prop_oneof![
        (tokens.clone(), tokens.clone(), tokens.clone(), tokens.clone()).prop_map(|(p, c, k, r)| json!({"prompt_tokens": p, "completion_tokens": c, "prompt_tokens_details": {"cached_tokens": k}, "completion_tokens_details": {"reasoning_tokens": r}})),
        (tokens.clone(), tokens.clone(), tokens.clone(), tokens.clone()).prop_map(|(i, o, r, w)| json!({"input_tokens": i, "output_tokens": o, "cache_read_input_tokens": r, "cache_creation_input_tokens": w})),
        (tokens.clone(), tokens.clone(), tokens.clone(), tokens.clone()).prop_map(|(i, o, k, r)| json!({"input_tokens": i, "output_tokens": o, "input_tokens_details": {"cached_tokens": k}, "output_tokens_details": {"reasoning_tokens": r}})),
        (tokens.clone(), tokens).prop_map(|(i, o)| json!({"input_tokens": i, "output_tokens": o, "input_tokens_details": null})),
        leaf.clone(),
    ]
    // Boxed: the strategy's type is deep enough to overflow a debug build's
    // stack when it is cloned into the tuple below.
    .boxed();
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    (
        value.clone(),
        prop::option::of(usage.clone()),
        prop::option::of(value),
        prop::option::of(usage),
    )
        .prop_map(|(base, usage, error, in_response)| {
            let mut base = base;
            if let Some(o) = base.as_object_mut() {
                if let Some(u) = usage {
                    o.insert("usage".into(), u);
                }
                // A Responses API event: the usage inside `response`.
                if let Some(u) = in_response {
                    o.insert("response".into(), json!({"usage": u}));
                }
                if let Some(e) = error {
                    o.insert("error".into(), e);
                }
            }
            base
        })
}

/// The usage rule read off a JSON tree, the plain way: the oracle the
/// streaming probes are checked against.
fn reference_usage(json: &serde_json::Value) -> Option<keypool_core::Usage> {
    usage_at(json.get("usage")?)
}

/// [`reference_usage`], or the usage a Responses API event carries.
fn reference_usage_anywhere(json: &serde_json::Value) -> Option<keypool_core::Usage> {
    match json.get("usage") {
        Some(u) => usage_at(u),
        None => usage_at(json.get("response")?.get("usage")?),
    }
}

fn usage_at(u: &serde_json::Value) -> Option<keypool_core::Usage> {
    let n = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_u64);
    let detail = |object: &str, field: &str| n(u.get(object).and_then(|d| d.get(field)));
    if let Some(prompt) = n(u.get("prompt_tokens")) {
        let completion = n(u.get("completion_tokens")).unwrap_or(0);
        return Some(keypool_core::Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: detail("prompt_tokens_details", "cached_tokens").unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: detail("completion_tokens_details", "reasoning_tokens")
                .unwrap_or(0)
                .min(completion),
        });
    }
    let input = n(u.get("input_tokens"))?;
    let output = n(u.get("output_tokens")).unwrap_or(0);
    let reasoning = detail("output_tokens_details", "reasoning_tokens")
        .unwrap_or(0)
        .min(output);
    if u.get("input_tokens_details").is_some() {
        return Some(keypool_core::Usage {
            prompt_tokens: input,
            completion_tokens: output,
            cached_tokens: detail("input_tokens_details", "cached_tokens")
                .unwrap_or(0)
                .min(input),
            cache_write_tokens: 0,
            reasoning_tokens: reasoning,
        });
    }
    let read = n(u.get("cache_read_input_tokens")).unwrap_or(0);
    let written = n(u.get("cache_creation_input_tokens")).unwrap_or(0);
    Some(keypool_core::Usage {
        prompt_tokens: input.saturating_add(read).saturating_add(written),
        completion_tokens: output,
        cached_tokens: read,
        cache_write_tokens: written,
        reasoning_tokens: reasoning,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn classification_never_panics(status in any::<u16>(), headers in headers(), body in body(), now in any::<u64>()) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_bytes(&value)) {
                map.append(n, v);
            }
        }
        let answer = Answer { status, headers: map, body: body.into() };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now % 10_000_000_000);
        let _ = classify(&answer, Duration::from_millis(5), now);
    }

    #[test]
    fn duration_parsing_never_panics(s in "\\PC{0,30}") {
        let _ = parse_duration(&s);
    }

    /// Classification reads only `usage` and `error` out of a body, without
    /// building the rest: what it reads must be what reading the whole body
    /// as a JSON tree gives.
    #[test]
    fn success_and_usage_match_a_full_parse(v in json(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) };
        let answer = Answer { status: 200, headers: HeaderMap::new(), body: text.unwrap().into() };
        let c = classify(&answer, Duration::from_millis(5), SystemTime::UNIX_EPOCH);
        prop_assert_eq!(c.class, Class::Success);
        prop_assert_eq!(c.usage, reference_usage(&v));
        prop_assert_eq!(usage_of(&v), reference_usage_anywhere(&v));
    }
}
