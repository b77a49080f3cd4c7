use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use keypool_core::{Outcome, Usage};
use transport::{Answer, Class, RateLimits, classify, parse_duration};

fn answer(status: u16, body: &str, headers: &[(&'static str, &str)]) -> Answer {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    Answer {
        status,
        headers: h,
        body: body.to_owned().into(),
    }
}

fn class(status: u16, body: &str) -> Class {
    classify(
        &answer(status, body, &[]),
        Duration::ZERO,
        SystemTime::UNIX_EPOCH,
    )
    .class
}

fn openai(kind: &str, code: &str, message: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        .to_string()
}

fn anthropic(kind: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}

#[test]
fn success_with_openai_and_anthropic_usage() {
    let body = r#"{"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":30,"prompt_tokens_details":{"cached_tokens":100}}}"#;
    let c = classify(
        &answer(200, body, &[]),
        Duration::from_millis(850),
        SystemTime::UNIX_EPOCH,
    );
    let usage = Usage {
        prompt_tokens: 120,
        completion_tokens: 30,
        cached_tokens: 100,
        ..Usage::default()
    };
    assert_eq!((c.class, c.usage), (Class::Success, Some(usage)));
    assert_eq!(
        c.outcome,
        Outcome::Success {
            usage,
            latency: Duration::from_millis(850)
        }
    );
    let anth = r#"{"content":[],"usage":{"input_tokens":50,"output_tokens":7,"cache_read_input_tokens":10,"cache_creation_input_tokens":5}}"#;
    let c = classify(
        &answer(200, anth, &[]),
        Duration::ZERO,
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(
        c.usage,
        Some(Usage {
            prompt_tokens: 65,
            completion_tokens: 7,
            cached_tokens: 10,
            cache_write_tokens: 5,
            reasoning_tokens: 0,
        })
    );
    // 2xx without usage (embeddings may omit it) is still a success.
    assert_eq!(class(200, r#"{"data":[]}"#), Class::Success);
}

#[test]
fn a_2xx_body_that_is_not_json_is_a_server_error() {
    assert_eq!(
        class(200, "<html>gateway</html>"),
        Class::ServerError { status: 200 }
    );
    assert_eq!(class(200, ""), Class::ServerError { status: 200 });
}

#[test]
fn only_usage_and_error_are_read_but_the_whole_body_must_be_json() {
    let read = |body: &str| {
        let c = classify(&answer(200, body, &[]), Duration::ZERO, SystemTime::now());
        (c.class, c.usage)
    };
    // Any JSON is an answer; only a top-level object can carry usage.
    assert_eq!(read("[1, 2]"), (Class::Success, None));
    assert_eq!(read("\"ok\""), (Class::Success, None));
    // Invalid anywhere, even in a part that is skipped, or trailing: not JSON.
    assert_eq!(
        read(r#"{"choices": [{"x": tru}], "usage": {"prompt_tokens": 1}}"#).0,
        Class::ServerError { status: 200 }
    );
    assert_eq!(
        read(r#"{"usage": {"prompt_tokens": 1}} trailing"#).0,
        Class::ServerError { status: 200 }
    );
    // A repeated key keeps its last value, as a full parse does.
    assert_eq!(
        read(
            r#"{"usage": {"prompt_tokens": 1}, "usage": {"prompt_tokens": 7, "completion_tokens": 2}}"#
        ),
        (Class::Success, Some(Usage::new(7, 2)))
    );
    // Escaped keys are still the keys they spell.
    assert_eq!(
        read(r#"{"us\u0061ge": {"prompt_tokens": 3, "completion_tokens": 4}}"#),
        (Class::Success, Some(Usage::new(3, 4)))
    );
}

#[test]
fn rate_limited_with_every_form_of_retry_after() {
    let body = openai("requests", "rate_limit_exceeded", "Rate limit reached");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_322_452);
    let ra =
        |h: &[(&'static str, &str)]| match classify(&answer(429, &body, h), Duration::ZERO, now)
            .class
        {
            Class::RateLimited { retry_after } => retry_after,
            c => panic!("{c:?}"),
        };
    assert_eq!(ra(&[("retry-after", "20")]), Some(Duration::from_secs(20)));
    assert_eq!(
        ra(&[("retry-after", "Sun, 22 Nov 2026 04:41:22 GMT")]),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        ra(&[("retry-after", "Sun, 22 Nov 2026 04:00:00 GMT")]),
        Some(Duration::ZERO),
        "a date in the past"
    );
    assert_eq!(
        ra(&[("retry-after-ms", "1500")]),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        ra(&[("retry-after-ms", "250"), ("retry-after", "9")]),
        Some(Duration::from_millis(250)),
        "ms wins"
    );
    assert_eq!(ra(&[]), None);
    assert_eq!(ra(&[("retry-after", "soon")]), None);
    // A 429 with no body at all is a rate limit too.
    assert_eq!(class(429, ""), Class::RateLimited { retry_after: None });
}

#[test]
fn insufficient_quota_and_billing_are_exhaustion_not_rate_limits() {
    assert_eq!(
        class(
            429,
            &openai(
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota"
            )
        ),
        Class::QuotaExhausted
    );
    assert_eq!(
        class(402, &openai("billing", "payment_required", "pay")),
        Class::QuotaExhausted
    );
    assert_eq!(class(402, ""), Class::QuotaExhausted);
    assert_eq!(
        class(
            400,
            &openai(
                "invalid_request_error",
                "billing_hard_limit_reached",
                "limit"
            )
        ),
        Class::QuotaExhausted
    );
}

#[test]
fn unauthorized_and_forbidden() {
    assert_eq!(
        class(
            401,
            &openai(
                "invalid_request_error",
                "invalid_api_key",
                "Incorrect API key provided"
            )
        ),
        Class::Unauthorized
    );
    assert_eq!(class(401, ""), Class::Unauthorized);
    assert_eq!(
        class(401, &anthropic("authentication_error", "invalid x-api-key")),
        Class::Unauthorized
    );
    // Some relays say so with a 400.
    assert_eq!(
        class(
            400,
            &openai("invalid_request_error", "invalid_api_key", "bad key")
        ),
        Class::Unauthorized
    );
    assert_eq!(
        class(403, &anthropic("permission_error", "not allowed")),
        Class::Forbidden
    );
    assert_eq!(class(403, "Forbidden"), Class::Forbidden);
}

#[test]
fn context_length_with_the_limit_when_the_message_gives_it() {
    let oa = openai(
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130021 tokens.",
    );
    assert_eq!(
        class(400, &oa),
        Class::ContextLengthExceeded {
            limit: Some(128_000)
        }
    );
    let an = anthropic(
        "invalid_request_error",
        "prompt is too long: 210000 tokens > 200000 maximum",
    );
    assert_eq!(
        class(400, &an),
        Class::ContextLengthExceeded {
            limit: Some(200_000)
        }
    );
    assert_eq!(
        class(
            400,
            &openai(
                "invalid_request_error",
                "context_length_exceeded",
                "too long"
            )
        ),
        Class::ContextLengthExceeded { limit: None }
    );
    assert_eq!(
        classify(
            &answer(400, &oa, &[]),
            Duration::ZERO,
            SystemTime::UNIX_EPOCH
        )
        .outcome,
        Outcome::ClientError
    );
}

#[test]
fn other_4xx_are_the_callers_fault() {
    for status in [400, 404, 413, 422] {
        assert_eq!(
            class(status, &openai("invalid_request_error", "", "bad")),
            Class::ClientError { status }
        );
    }
    assert_eq!(class(404, "not json"), Class::ClientError { status: 404 });
    assert_eq!(class(408, ""), Class::Timeout);
}

#[test]
fn server_errors_and_overloaded() {
    for status in [500, 502, 503, 504] {
        assert_eq!(
            class(status, "upstream down"),
            Class::ServerError { status }
        );
    }
    assert_eq!(
        class(529, &anthropic("overloaded_error", "Overloaded")),
        Class::ServerError { status: 529 }
    );
    assert_eq!(
        class(400, &anthropic("overloaded_error", "Overloaded")),
        Class::ServerError { status: 400 }
    );
    assert_eq!(class(302, ""), Class::ServerError { status: 302 });
    let c = classify(
        &answer(503, "", &[]),
        Duration::ZERO,
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(c.outcome, Outcome::ServerError);
}

#[test]
fn the_upstream_error_is_kept_for_the_caller() {
    let c = classify(
        &answer(
            400,
            &openai("invalid_request_error", "model_not_found", "no such model"),
            &[],
        ),
        Duration::ZERO,
        SystemTime::UNIX_EPOCH,
    );
    let e = c.error.unwrap();
    assert_eq!(
        (e.kind.as_deref(), e.code.as_deref(), e.message.as_deref()),
        (
            Some("invalid_request_error"),
            Some("model_not_found"),
            Some("no such model")
        )
    );
}

#[test]
fn rate_limit_headers_on_every_answer() {
    let headers = [
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-remaining-tokens", "1500"),
        ("x-ratelimit-reset-requests", "6m0s"),
        ("x-ratelimit-reset-tokens", "20ms"),
    ];
    let c = classify(
        &answer(200, "{}", &headers),
        Duration::ZERO,
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(
        c.rate_limits,
        RateLimits {
            remaining_requests: Some(0),
            remaining_tokens: Some(1500),
            reset_requests: Some(Duration::from_secs(360)),
            reset_tokens: Some(Duration::from_millis(20)),
        }
    );
    assert_eq!(
        c.rate_limits.exhausted_for(),
        Some(Duration::from_secs(360))
    );
    assert_eq!(
        RateLimits {
            remaining_requests: Some(3),
            ..c.rate_limits
        }
        .exhausted_for(),
        None
    );
}

#[test]
fn go_style_durations() {
    let d = |s| parse_duration(s);
    assert_eq!(d("1s"), Some(Duration::from_secs(1)));
    assert_eq!(d("6m0s"), Some(Duration::from_secs(360)));
    assert_eq!(d("20ms"), Some(Duration::from_millis(20)));
    assert_eq!(d("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
    assert_eq!(d("150us"), Some(Duration::from_micros(150)));
    assert_eq!(d("2"), Some(Duration::from_secs(2)));
    for bad in ["", "s", "1x", "1.2.3s", "-1s", "m5"] {
        assert_eq!(d(bad), None, "{bad}");
    }
}

/// The second seed's relay says when to come back, and a context window's
/// size, in the error body rather than in headers or the message.
#[test]
fn waits_and_limits_in_the_error_body_as_relays_send_them() {
    let body = r#"{"error": {"code": "rate_limit_exceeded", "retry_after": 60}}"#;
    assert_eq!(
        class(429, body),
        Class::RateLimited {
            retry_after: Some(Duration::from_secs(60))
        }
    );
    let fractional = r#"{"error": {"code": "rate_limit_exceeded", "retry_after": "1.5"}}"#;
    assert_eq!(
        class(429, fractional),
        Class::RateLimited {
            retry_after: Some(Duration::from_millis(1_500))
        }
    );
    // A header wins over the body.
    let c = classify(
        &answer(429, body, &[("retry-after", "5")]),
        Duration::ZERO,
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(
        c.class,
        Class::RateLimited {
            retry_after: Some(Duration::from_secs(5))
        }
    );
    for bad in [r#""soon""#, "-3", "null"] {
        let body =
            format!(r#"{{"error": {{"code": "rate_limit_exceeded", "retry_after": {bad}}}}}"#);
        assert_eq!(class(429, &body), Class::RateLimited { retry_after: None });
    }
    let context = r#"{"error": {"code": "context_length_exceeded", "max": 64000}}"#;
    assert_eq!(
        class(400, context),
        Class::ContextLengthExceeded {
            limit: Some(64_000)
        }
    );
}

#[test]
fn reasoning_and_cache_tokens_are_read_in_every_shape() {
    let usage = |body: &str| {
        classify(
            &answer(200, body, &[]),
            Duration::ZERO,
            SystemTime::UNIX_EPOCH,
        )
        .usage
        .unwrap()
    };
    let chat = usage(
        r#"{"usage":{"prompt_tokens":100,"completion_tokens":40,"prompt_tokens_details":{"cached_tokens":60},"completion_tokens_details":{"reasoning_tokens":30}}}"#,
    );
    assert_eq!((chat.cached_tokens, chat.reasoning_tokens), (60, 30));
    let responses = usage(
        r#"{"usage":{"input_tokens":100,"output_tokens":40,"input_tokens_details":{"cached_tokens":60},"output_tokens_details":{"reasoning_tokens":30}}}"#,
    );
    assert_eq!(
        (
            responses.prompt_tokens,
            responses.cached_tokens,
            responses.reasoning_tokens
        ),
        (100, 60, 30)
    );
    // Anthropic's input counts neither cache reads nor cache writes.
    let anthropic = usage(
        r#"{"usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":60,"cache_creation_input_tokens":30}}"#,
    );
    assert_eq!(
        (
            anthropic.prompt_tokens,
            anthropic.cached_tokens,
            anthropic.cache_write_tokens
        ),
        (100, 60, 30)
    );
    // More reasoning than output is bounded by the output.
    let odd = usage(
        r#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":9}}}"#,
    );
    assert_eq!(odd.reasoning_tokens, 2);
}
