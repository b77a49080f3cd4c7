use std::time::Duration;

use futures_util::StreamExt;
use keypool_core::{Secret, Usage};
use transport::{MockReply, MockTransport, Request, StreamEvent, StreamStart, Transport};

fn req(secret: &str) -> Request {
    Request::with_json(
        "http://mock/v1",
        "/chat/completions",
        Secret::new(secret),
        &serde_json::json!({"model": "m"}),
    )
    .unwrap()
}

#[tokio::test]
async fn scripts_answer_per_key_in_order_and_the_last_repeats() {
    let mock = MockTransport::new();
    mock.script(
        "sk-a",
        [
            MockReply::error(429, "requests", "rate_limit_exceeded", "slow"),
            MockReply::chat("ok", 5, 1),
        ],
    );
    mock.fallback(|_| MockReply::chat("fallback", 1, 1));
    let t: &dyn Transport = &mock;
    assert_eq!(t.send(req("sk-a")).await.unwrap().status, 429);
    assert_eq!(t.send(req("sk-a")).await.unwrap().status, 200);
    assert_eq!(t.send(req("sk-a")).await.unwrap().status, 200);
    let other = t.send(req("sk-b")).await.unwrap();
    assert!(String::from_utf8_lossy(&other.body).contains("fallback"));
    assert_eq!((mock.count("sk-a"), mock.count("sk-b")), (3, 1));
    let log = mock.requests();
    assert_eq!(log[0].url, "http://mock/v1/chat/completions");
    assert!(
        !format!("{log:?}").contains("sk-a\""),
        "recorded secrets print redacted"
    );
}

#[tokio::test]
async fn unscripted_keys_without_a_fallback_fail_to_connect() {
    let e = MockTransport::new().send(req("sk-none")).await.unwrap_err();
    assert!(e.is_connect());
}

#[tokio::test(start_paused = true)]
async fn latency_past_the_timeout_is_a_timeout_in_paused_time() {
    let mock = MockTransport::new();
    mock.script(
        "sk-slow",
        [MockReply::chat("late", 1, 1).latency(Duration::from_secs(120))],
    );
    mock.respond("sk-fn", |r| {
        MockReply::chat(&r.json()["model"].to_string(), 1, 1).latency(Duration::from_secs(1))
    });
    let started = tokio::time::Instant::now();
    let e = mock.send(req("sk-slow")).await.unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(60),
        "the request's timeout, in simulated time"
    );
    let a = mock.send(req("sk-fn")).await.unwrap();
    assert!(String::from_utf8_lossy(&a.body).contains("\\\"m\\\""));
}

#[tokio::test(start_paused = true)]
async fn chat_streams_yield_chunks_and_usage_and_detect_truncation() {
    let mock = MockTransport::new();
    mock.script(
        "sk-s",
        [MockReply::chat_stream(&["Hel", "lo"], 7, 2).gap(Duration::from_millis(5))],
    );
    mock.script(
        "sk-cut",
        [MockReply::stream(vec!["{\"choices\":[]}".into()], false)],
    );
    let StreamStart::Events { events, .. } = mock.send_stream(req("sk-s")).await.unwrap() else {
        panic!()
    };
    let got: Vec<StreamEvent> = events.map(Result::unwrap).collect().await;
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[3],
        StreamEvent::Done {
            usage: Some(Usage::new(7, 2))
        }
    );
    assert!(mock.requests()[0].stream);
    assert_eq!(
        mock.requests()[0].body["stream_options"]["include_usage"],
        true
    );
    let StreamStart::Events { events, .. } = mock.send_stream(req("sk-cut")).await.unwrap() else {
        panic!()
    };
    let got: Vec<_> = events.collect().await;
    assert!(got.last().unwrap().as_ref().unwrap_err().is_stream());
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_goes_idle_times_out() {
    let mock = MockTransport::new();
    mock.script(
        "sk-idle",
        [MockReply::chat_stream(&["a", "b"], 1, 1).gap(Duration::from_secs(90))],
    );
    let StreamStart::Events { events, .. } = mock.send_stream(req("sk-idle")).await.unwrap() else {
        panic!()
    };
    let got: Vec<_> = events.collect().await;
    assert_eq!(got.len(), 1);
    assert!(got[0].as_ref().unwrap_err().is_timeout());
}

#[tokio::test(start_paused = true)]
async fn a_responses_stream_ends_with_its_last_event_and_its_usage_counts_the_cache() {
    let mock = MockTransport::new();
    mock.script(
        "sk-r",
        [MockReply::response_stream(&["Hel", "lo"], 100, 80, 2)],
    );
    mock.script(
        "sk-failed",
        [MockReply::stream(
            vec![
                r#"{"type":"response.created","response":{"usage":null}}"#.into(),
                r#"{"type":"response.failed","response":{"error":{"code":"server_error"}}}"#.into(),
            ],
            false,
        )],
    );
    let mut r = req("sk-r");
    r.path = "/responses".into();
    r.include_usage = false;
    let StreamStart::Events { events, .. } = mock.send_stream(r).await.unwrap() else {
        panic!()
    };
    let got: Vec<StreamEvent> = events.map(Result::unwrap).collect().await;
    assert_eq!(
        got.len(),
        5,
        "created, two deltas, completed, done: {got:?}"
    );
    assert_eq!(
        got[4],
        StreamEvent::Done {
            usage: Some(Usage {
                prompt_tokens: 100,
                completion_tokens: 2,
                cached_tokens: 80,
                ..Usage::default()
            })
        }
    );
    let sent = &mock.requests()[0].body;
    assert_eq!(sent["stream"], true);
    assert!(
        sent.get("stream_options").is_none(),
        "the Responses API refuses it"
    );
    let StreamStart::Events { events, .. } = mock.send_stream(req("sk-failed")).await.unwrap()
    else {
        panic!()
    };
    let got: Vec<_> = events.collect().await;
    assert_eq!(got.len(), 2);
    assert!(got[1].as_ref().unwrap_err().is_stream());
}
