use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use transport::{Answer, classify, parse_duration};

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
}
