//! Requests passed through on the `MockTransport`: failover, the
//! upstream's own answers, and what the budget books.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use budget::{Ledger, LedgerConfig, Limit, Money, Period, Scope};
use futures_util::StreamExt;
use gateway_client::{Client, ManualClock, PassRequest, RequestContext};
use keypool_core::{KeyPool, NewKey, PoolConfig, Timestamp};
use transport::{MockReply, MockTransport};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_322_452)
}

const A: &str = "sk-pass-a-000000000000000";
const B: &str = "sk-pass-b-000000000000000";

fn client(mock: &MockTransport) -> Client {
    let mut pool = KeyPool::new(PoolConfig::default()).unwrap();
    for (name, secret) in [("a", A), ("b", B)] {
        pool.add(NewKey::new(name, secret), Timestamp::from_system_time(t0()))
            .unwrap();
    }
    let ledger = Ledger::new(
        LedgerConfig::default(),
        budget::testing::blended_prices(),
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_dollars(10),
        )],
    )
    .unwrap();
    Client::builder()
        .provider("relay", "http://relay/v1", 0, pool)
        .ledger(ledger)
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap()
}

fn moderation() -> PassRequest {
    let body = serde_json::json!({"model": "gpt-4o-mini", "input": "is this fine?"});
    PassRequest {
        method: http::Method::POST,
        path: "/moderations?x=1".into(),
        headers: vec![(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        )],
        body: serde_json::to_vec(&body).unwrap().into(),
        model: Some("gpt-4o-mini".into()),
    }
}

fn spent(c: &Client) -> (Money, Money) {
    let b = &c.snapshot().budget[0];
    (b.spent, b.reserved)
}

#[tokio::test]
async fn a_passed_request_fails_over_and_books_what_its_answer_reports() {
    let mock = MockTransport::new();
    mock.script(
        A,
        [MockReply::error(
            429,
            "requests",
            "rate_limit_exceeded",
            "slow",
        )],
    );
    mock.script(
        B,
        [MockReply::json(200, &serde_json::json!({"id": "modr-1", "usage": {"prompt_tokens": 1000, "completion_tokens": 0}}))],
    );
    let c = client(&mock);
    let answer = c
        .pass(moderation(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(
        (answer.status, &*answer.meta.key, answer.meta.attempts),
        (200, "b", 2)
    );
    let body: Vec<_> = answer.body.collect().await;
    assert!(String::from_utf8_lossy(&body[0].as_ref().unwrap()[..]).contains("modr-1"));
    // 1000 tokens of gpt-4o-mini at the blended $0.15 a million.
    assert_eq!(spent(&c), (Money::from_micros(150), Money::ZERO));
    let sent = mock.requests();
    assert_eq!(sent[1].method, http::Method::POST);
    assert!(sent[1].url.ends_with("/moderations?x=1"), "{}", sent[1].url);
}

#[tokio::test]
async fn the_upstreams_refusal_is_handed_back_and_costs_nothing() {
    let mock = MockTransport::new();
    mock.fallback(|_| MockReply::error(400, "invalid_request_error", "bad_input", "no"));
    let c = client(&mock);
    let answer = c
        .pass(moderation(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(
        (answer.status, answer.meta.attempts),
        (400, 1),
        "not retried on another key"
    );
    assert_eq!(
        spent(&c),
        (Money::ZERO, Money::ZERO),
        "nothing booked, nothing held"
    );
    let keys = &c.snapshot().providers[0].pool.keys;
    assert!(keys.iter().all(|k| k.state.to_string() == "active"));
}
