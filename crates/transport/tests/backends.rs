use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use keypool_core::{Secret, Usage};
use std::sync::Arc;

use transport::{
    Class, ErrorKind, HttpConfig, Request, StreamEvent, StreamStart, Transport, TransportError,
    classify,
};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "sk-test-0123456789abcdefSECRET";

/// The HTTP backends built with the crate's features.
#[derive(Clone, Copy, Debug)]
enum Backend {
    #[cfg(feature = "reqwest")]
    Reqwest,
    #[cfg(feature = "hyper")]
    Hyper,
}

fn backends() -> Vec<Backend> {
    vec![
        #[cfg(feature = "reqwest")]
        Backend::Reqwest,
        #[cfg(feature = "hyper")]
        Backend::Hyper,
    ]
}

fn build(b: Backend, config: &HttpConfig) -> Result<Arc<dyn Transport>, TransportError> {
    Ok(match b {
        #[cfg(feature = "reqwest")]
        Backend::Reqwest => Arc::new(transport::ReqwestTransport::new(config)?),
        #[cfg(feature = "hyper")]
        Backend::Hyper => Arc::new(transport::HyperTransport::new(config)?),
    })
}

fn transport(b: Backend, max_body: usize) -> Arc<dyn Transport> {
    build(
        b,
        &HttpConfig {
            max_body_bytes: max_body,
            use_env_proxy: false,
            ..HttpConfig::default()
        },
    )
    .unwrap()
}

fn request(server: &MockServer) -> Request {
    let mut r = Request::with_json(
        format!("{}/v1", server.uri()),
        "/chat/completions",
        Secret::new(SECRET),
        &serde_json::json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "ทดสอบ"}]}),
    )
    .unwrap();
    r.timeout = Duration::from_secs(5);
    r
}

async fn answer_class(b: Backend, template: ResponseTemplate) -> Class {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(template)
        .mount(&server)
        .await;
    let a = transport(b, 1 << 20).send(request(&server)).await.unwrap();
    classify(&a, Duration::ZERO, SystemTime::now()).class
}

#[tokio::test]
async fn sends_the_key_as_a_bearer_token_and_reads_usage() {
    for b in backends() {
        sends_the_key_as_a_bearer_token_and_reads_usage_on(b).await;
    }
}

async fn sends_the_key_as_a_bearer_token_and_reads_usage_on(b: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {SECRET}").as_str()))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "choices": [{"message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let a = transport(b, 1 << 20).send(request(&server)).await.unwrap();
    let c = classify(&a, Duration::from_millis(10), SystemTime::now());
    assert_eq!(
        (c.class, c.usage),
        (Class::Success, Some(Usage::new(12, 3)))
    );
}

#[tokio::test]
async fn every_class_end_to_end() {
    for b in backends() {
        every_class_end_to_end_on(b).await;
    }
}

async fn every_class_end_to_end_on(b: Backend) {
    let err = |kind: &str, code: &str, msg: &str| serde_json::json!({"error": {"type": kind, "code": code, "message": msg}});
    let cases = [
        (ResponseTemplate::new(429).set_body_json(err("requests", "rate_limit_exceeded", "slow")).insert_header("retry-after", "7"), Class::RateLimited { retry_after: Some(Duration::from_secs(7)) }),
        (ResponseTemplate::new(429).insert_header("retry-after-ms", "250"), Class::RateLimited { retry_after: Some(Duration::from_millis(250)) }),
        (ResponseTemplate::new(429).set_body_json(err("insufficient_quota", "insufficient_quota", "quota")), Class::QuotaExhausted),
        (ResponseTemplate::new(402), Class::QuotaExhausted),
        (ResponseTemplate::new(401).set_body_json(err("invalid_request_error", "invalid_api_key", "bad key")), Class::Unauthorized),
        (ResponseTemplate::new(403), Class::Forbidden),
        (ResponseTemplate::new(400).set_body_json(err("invalid_request_error", "context_length_exceeded", "This model's maximum context length is 8192 tokens.")), Class::ContextLengthExceeded { limit: Some(8192) }),
        (ResponseTemplate::new(422).set_body_string("nope"), Class::ClientError { status: 422 }),
        (ResponseTemplate::new(500).set_body_string("boom"), Class::ServerError { status: 500 }),
        (ResponseTemplate::new(529).set_body_json(serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})), Class::ServerError { status: 529 }),
        (ResponseTemplate::new(200).set_body_string("{\"choices\": [tru"), Class::ServerError { status: 200 }),
    ];
    for (template, expected) in cases {
        assert_eq!(answer_class(b, template).await, expected, "{b:?}");
    }
}

#[tokio::test]
async fn retry_after_as_an_http_date_and_rate_limit_headers() {
    for b in backends() {
        retry_after_as_an_http_date_and_rate_limit_headers_on(b).await;
    }
}

async fn retry_after_as_an_http_date_and_rate_limit_headers_on(b: Backend) {
    let server = MockServer::start().await;
    let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", in_a_minute.as_str())
                .insert_header("x-ratelimit-remaining-requests", "0")
                .insert_header("x-ratelimit-reset-requests", "1m0s"),
        )
        .mount(&server)
        .await;
    let a = transport(b, 1 << 20).send(request(&server)).await.unwrap();
    let c = classify(&a, Duration::ZERO, SystemTime::now());
    let Class::RateLimited {
        retry_after: Some(wait),
    } = c.class
    else {
        panic!("{:?}", c.class)
    };
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert_eq!(c.rate_limits.exhausted_for(), Some(Duration::from_secs(60)));
}

#[tokio::test]
async fn a_slow_upstream_times_out() {
    for b in backends() {
        a_slow_upstream_times_out_on(b).await;
    }
}

async fn a_slow_upstream_times_out_on(b: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&server)
        .await;
    let mut r = request(&server);
    r.timeout = Duration::from_millis(100);
    let e = transport(b, 1 << 20).send(r).await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(e.outcome(), keypool_core::Outcome::Timeout);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    for b in backends() {
        a_refused_connection_is_a_connect_error_on(b).await;
    }
}

async fn a_refused_connection_is_a_connect_error_on(b: Backend) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let r = Request::with_json(
        format!("http://{addr}/v1"),
        "/chat/completions",
        Secret::new(SECRET),
        &serde_json::json!({}),
    )
    .unwrap();
    let e = transport(b, 1 << 20).send(r).await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    assert_eq!(e.outcome(), keypool_core::Outcome::Connect);
}

#[tokio::test]
async fn a_body_past_the_limit_is_refused() {
    for b in backends() {
        a_body_past_the_limit_is_refused_on(b).await;
    }
}

async fn a_body_past_the_limit_is_refused_on(b: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(4096)))
        .mount(&server)
        .await;
    let e = transport(b, 1024).send(request(&server)).await.unwrap_err();
    assert!(e.is_body_too_large(), "{e:?}");
    assert_eq!(e.to_string(), "upstream answer is larger than 1024 bytes");
    // Within the limit it is read whole.
    assert_eq!(
        transport(b, 4096)
            .send(request(&server))
            .await
            .unwrap()
            .body
            .len(),
        4096
    );
}

fn sse(chunks: &[&str]) -> String {
    chunks.iter().map(|c| format!("data: {c}\n\n")).collect()
}

#[tokio::test]
async fn streams_yield_chunks_then_done_with_usage_and_ask_for_usage() {
    for b in backends() {
        streams_yield_chunks_then_done_with_usage_and_ask_for_usage_on(b).await;
    }
}

async fn streams_yield_chunks_then_done_with_usage_and_ask_for_usage_on(b: Backend) {
    let server = MockServer::start().await;
    let body = sse(&[
        r#"{"choices":[{"delta":{"content":"สวัส"}}]}"#,
        r#"{"choices":[{"delta":{"content":"ดี"}}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
        "[DONE]",
    ]);
    Mock::given(method("POST"))
        .and(header("accept", "text/event-stream"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let StreamStart::Events { status, events, .. } = transport(b, 1 << 20)
        .send_stream(request(&server))
        .await
        .unwrap()
    else {
        panic!("expected events")
    };
    assert_eq!(status, 200);
    let got: Vec<StreamEvent> = events.map(Result::unwrap).collect().await;
    assert_eq!(got.len(), 4);
    assert!(matches!(&got[0], StreamEvent::Chunk(c) if c.contains("สวัส")));
    assert_eq!(
        got[3],
        StreamEvent::Done {
            usage: Some(Usage::new(9, 2))
        }
    );
    let sent: serde_json::Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["model"], "gpt-4.1");
}

#[tokio::test]
async fn a_stream_that_ends_without_done_is_an_error() {
    for b in backends() {
        a_stream_that_ends_without_done_is_an_error_on(b).await;
    }
}

async fn a_stream_that_ends_without_done_is_an_error_on(b: Backend) {
    let server = MockServer::start().await;
    let body = sse(&[r#"{"choices":[{"delta":{"content":"half"}}]}"#]);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let StreamStart::Events { events, .. } = transport(b, 1 << 20)
        .send_stream(request(&server))
        .await
        .unwrap()
    else {
        panic!()
    };
    let got: Vec<Result<StreamEvent, TransportError>> = events.collect().await;
    assert_eq!(got.len(), 2);
    assert!(got[0].is_ok());
    let e = got[1].as_ref().unwrap_err();
    assert!(e.is_stream(), "{e:?}");
    assert_eq!(e.outcome(), keypool_core::Outcome::ServerError);
}

#[tokio::test]
async fn an_error_answer_to_a_stream_request_is_returned_whole() {
    for b in backends() {
        an_error_answer_to_a_stream_request_is_returned_whole_on(b).await;
    }
}

async fn an_error_answer_to_a_stream_request_is_returned_whole_on(b: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"error": {"code": "invalid_api_key"}})),
        )
        .mount(&server)
        .await;
    let StreamStart::Answered(a) = transport(b, 1 << 20)
        .send_stream(request(&server))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        classify(&a, Duration::ZERO, SystemTime::now()).class,
        Class::Unauthorized
    );
}

#[tokio::test]
async fn errors_never_contain_the_secret_or_the_authorization_header() {
    for b in backends() {
        errors_never_contain_the_secret_or_the_authorization_header_on(b).await;
    }
}

async fn errors_never_contain_the_secret_or_the_authorization_header_on(b: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("y".repeat(5000))
                .set_delay(Duration::from_millis(50)),
        )
        .mount(&server)
        .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let mut errors = Vec::new();
    // Body too large, a timeout, a refused connection (with credentials in the URL).
    errors.push(transport(b, 100).send(request(&server)).await.unwrap_err());
    let mut slow = request(&server);
    slow.timeout = Duration::from_millis(10);
    errors.push(transport(b, 1 << 20).send(slow).await.unwrap_err());
    let r = Request::with_json(
        format!("http://admin:{SECRET}@{closed}/v1"),
        "/x",
        Secret::new(SECRET),
        &serde_json::json!({}),
    )
    .unwrap();
    errors.push(transport(b, 1 << 20).send(r).await.unwrap_err());
    for e in &errors {
        let mut text = format!("{e} {e:?}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(&format!(" {s} {s:?}"));
            source = s.source();
        }
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.to_lowercase().contains("bearer"), "{text}");
    }
}

#[test]
fn a_bad_ca_bundle_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("transport-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    for b in backends() {
        let missing = HttpConfig {
            extra_ca_file: Some("/nonexistent/ca.pem".into()),
            ..HttpConfig::default()
        };
        let e = build(b, &missing).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string()
                .starts_with("cannot read CA bundle /nonexistent/ca.pem"),
            "{b:?}: {e}"
        );
        let e = build(
            b,
            &HttpConfig {
                extra_ca_file: Some(not_pem.clone()),
                ..HttpConfig::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.to_string().contains("holds no certificate") || e.to_string().contains("not PEM"),
            "{b:?}: {e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_error_is_small_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<TransportError>();
    #[cfg(feature = "reqwest")]
    assert_send_sync::<transport::ReqwestTransport>();
    #[cfg(feature = "hyper")]
    assert_send_sync::<transport::HyperTransport>();
    assert!(
        size_of::<TransportError>() <= 40,
        "{}",
        size_of::<TransportError>()
    );
}
