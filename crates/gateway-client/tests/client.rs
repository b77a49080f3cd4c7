//! gateway-client on the `MockTransport`: concurrency, streams, context length,
//! errors. Simulated time throughout.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use budget::{Ledger, LedgerConfig, Limit, Money, Period, Scope};
use futures_util::StreamExt;
use gateway_client::{
    ApiRequest, Client, ClientError, ContextPolicy, ManualClock, RequestContext, RetryPolicy,
};
use keypool_core::{KeyPool, NewKey, PoolConfig, Timestamp};
use transport::{MockReply, MockTransport};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_322_452)
}

fn secret(i: usize) -> String {
    format!("sk-key-{i:016}")
}

fn pool(n: usize) -> KeyPool {
    let mut p = KeyPool::new(PoolConfig::default()).unwrap();
    for i in 0..n {
        p.add(
            NewKey::new(format!("key-{i}"), secret(i)),
            Timestamp::from_system_time(t0()),
        )
        .unwrap();
    }
    p
}

fn client(mock: &MockTransport, keys: usize, ledger: Option<Ledger>) -> Client {
    let mut b = Client::builder()
        .provider("relay", "http://relay/v1", 0, pool(keys))
        .prices(budget::testing::blended_prices())
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())));
    if let Some(l) = ledger {
        b = b.ledger(l);
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_with_exact_counts() {
    let mock = MockTransport::new();
    mock.fallback(|_| MockReply::chat("ok", 100, 10).latency(Duration::from_millis(1)));
    let ledger = Ledger::new(
        LedgerConfig::default(),
        budget::testing::blended_prices(),
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_dollars(1000),
        )],
    )
    .unwrap();
    let c = client(&mock, 16, Some(ledger));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.chat_completion(
                    ApiRequest::chat("gpt-4.1", &[("user", "hi")]),
                    &RequestContext::user(format!("u{i}")),
                )
                .await
            })
        })
        .collect();
    let mut per_key: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        *per_key.entry(r.meta.key.to_string()).or_default() += 1;
    }
    assert_eq!(per_key.values().sum::<u64>(), 1000);
    assert_eq!(mock.requests().len(), 1000);
    let snap = c.snapshot();
    assert_eq!(
        (
            snap.stats.total.requests,
            snap.stats.total.failures,
            snap.stats.total.attempts
        ),
        (1000, 0, 1000)
    );
    let keys = &snap.providers[0].pool.keys;
    assert_eq!(
        keys.iter()
            .map(|k| u64::from(k.requests_today))
            .sum::<u64>(),
        1000
    );
    assert_eq!(keys.iter().map(|k| k.tokens_today).sum::<u64>(), 110_000);
    assert!(keys.iter().all(|k| k.in_flight == 0));
    assert_eq!(snap.providers[0].pool.outstanding_leases, 0);
    // 110 tokens of gpt-4.1 at $8/M = 880 µ$ each, exactly.
    assert_eq!(snap.budget[0].spent, Money::from_micros(880 * 1000));
    assert_eq!(snap.budget[0].reserved, Money::ZERO);
}

/// The same, against a budget that a third of them exhaust: each request
/// holds its worst case while in flight, so the ones that do not fit are
/// refused before they are sent, and every count is exact at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_at_a_hard_limit() {
    let mock = MockTransport::new();
    mock.fallback(|_| MockReply::chat("ok", 5, 2).latency(Duration::from_millis(1)));
    // Each request reserves (8 estimated + 2) tokens of gpt-4.1 = 80 µ$ and
    // costs (5 + 2) = 56 µ$: $0.028 holds 350 reservations at once.
    let limit = Money::from_micros(28_000);
    let ledger = Ledger::new(
        LedgerConfig::default(),
        budget::testing::blended_prices(),
        vec![Limit::new(Scope::Global, Period::Daily, limit)],
    )
    .unwrap();
    let c = client(&mock, 16, Some(ledger));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let body = serde_json::json!({"model": "gpt-4.1", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
                let r = ApiRequest::from_json(&body).unwrap();
                c.chat_completion(r, &RequestContext::user(format!("u{i}")))
                    .await
            })
        })
        .collect();
    let (mut answered, mut refused) = (0u64, 0u64);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => answered += 1,
            Err(e) if e.is_budget() => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(answered + refused, 1000);
    assert!(answered >= 350 && refused > 0, "{answered} answered");
    assert_eq!(
        mock.requests().len() as u64,
        answered,
        "the refused were never sent"
    );
    let snap = c.snapshot();
    assert_eq!(
        (snap.stats.total.requests, snap.stats.total.failures),
        (answered, 0),
        "a refusal is not an upstream request"
    );
    let keys = &snap.providers[0].pool.keys;
    assert_eq!(
        keys.iter()
            .map(|k| u64::from(k.requests_today))
            .sum::<u64>(),
        answered
    );
    assert!(keys.iter().all(|k| k.in_flight == 0));
    let b = &snap.budget[0];
    assert_eq!(b.spent, Money::from_micros(56 * answered), "exact");
    assert!(b.spent <= limit);
    assert_eq!(b.reserved, Money::ZERO);
}

#[tokio::test]
async fn a_stream_failing_before_its_first_byte_fails_over() {
    let mock = MockTransport::new();
    mock.script(&secret(0), [MockReply::stream(vec![], false)]);
    mock.script(&secret(1), [MockReply::chat_stream(&["a", "b"], 5, 2)]);
    let c = client(&mock, 2, None);
    let mut s = c
        .chat_completion_stream(
            ApiRequest::chat("gpt-4.1", &[("user", "hi")]),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!((&*s.meta().key, s.meta().attempts), ("key-1", 2));
    let mut n = 0;
    while let Some(chunk) = s.next().await {
        chunk.unwrap();
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(s.meta().usage.completion_tokens, 2);
}

#[tokio::test]
async fn a_stream_failing_before_its_first_output_fails_over_unseen() {
    let mock = MockTransport::new();
    // A role-only delta, then a quota error: nothing the caller could use.
    let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
    let quota =
        r#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":"spent"}}"#;
    mock.script(
        &secret(0),
        [MockReply::stream(vec![role.into(), quota.into()], true)],
    );
    mock.script(&secret(1), [MockReply::chat_stream(&["a", "b"], 5, 2)]);
    let c = client(&mock, 2, None);
    let mut s = c
        .chat_completion_stream(
            ApiRequest::chat("gpt-4.1", &[("user", "hi")]),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!((&*s.meta().key, s.meta().attempts), ("key-1", 2));
    let mut chunks = Vec::new();
    while let Some(chunk) = s.next().await {
        chunks.push(chunk.unwrap());
    }
    assert!(
        chunks.iter().all(|c| !c.contains("insufficient_quota")),
        "{chunks:?}"
    );
    assert_eq!(chunks.len(), 3);
    // The first key's quota is spent: told so by the error in its stream.
    let keys = &c.snapshot().providers[0].pool.keys;
    let state = keys[0].state.to_string();
    assert!(state.starts_with("exhausted"), "{state}");
}

#[tokio::test]
async fn a_stream_failing_after_its_first_output_surfaces_the_error() {
    let mock = MockTransport::new();
    mock.script(
        &secret(0),
        [MockReply::stream(
            vec![r#"{"choices":[{"index":0,"delta":{"content":"x"}}]}"#.into()],
            false,
        )],
    );
    let c = client(&mock, 1, Some(ten_dollars_a_day()));
    let mut s = c
        .chat_completion_stream(
            ApiRequest::chat("gpt-4.1", &[("user", "hi")]),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    assert!(s.next().await.unwrap().is_ok());
    let err = s.next().await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::Stream(_)), "{err}");
    assert!(s.next().await.is_none());
    assert_eq!(c.snapshot().stats.total.failures, 1);
    // The request happened: its prompt is booked, and the one token delivered
    // (gpt-4.1: $2 and $8 a million tokens).
    assert_eq!(s.meta().usage.completion_tokens, 1);
    assert_eq!(c.snapshot().budget[0].spent, Money::from_micros(8 * 8 + 8));
    assert_eq!(c.snapshot().budget[0].reserved, Money::ZERO);
}

fn ten_dollars_a_day() -> Ledger {
    Ledger::new(
        LedgerConfig::default(),
        budget::testing::blended_prices(),
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_dollars(10),
        )],
    )
    .unwrap()
}

async fn stream(c: &Client) -> gateway_client::ClientStream {
    c.chat_completion_stream(
        ApiRequest::chat("gpt-4.1", &[("user", "hi")]),
        &RequestContext::default(),
    )
    .await
    .unwrap()
}

/// A caller that reads one chunk and goes away: the upstream billed the
/// prompt and what it generated, so that is what is booked (not $0), and
/// the key's quota counts it.
#[tokio::test]
async fn a_dropped_stream_is_booked_for_what_it_delivered() {
    let mock = MockTransport::new();
    let long = "a longer piece of the answer ".repeat(8);
    mock.script(
        &secret(0),
        [MockReply::chat_stream(&[&long, "b", "c"], 5, 2)],
    );
    let c = client(&mock, 1, Some(ten_dollars_a_day()));
    let mut s = stream(&c).await;
    s.next().await.unwrap().unwrap();
    assert_eq!(c.with_pool("relay", |p, _| p.outstanding_leases()), Some(1));
    assert!(c.snapshot().budget[0].reserved > Money::ZERO);
    drop(s);
    assert_eq!(c.with_pool("relay", |p, _| p.outstanding_leases()), Some(0));
    let b = &c.snapshot().budget[0];
    assert_eq!(b.reserved, Money::ZERO, "the reservation is settled");
    // 8 prompt tokens (the estimate of one message "hi") and 58 for the
    // first chunk's 232 characters, at gpt-4.1's $8 per million.
    let tokens: u64 = 8 + 58;
    assert_eq!(b.spent, Money::from_micros(tokens * 8));
    let key = &c.snapshot().providers[0].pool.keys[0];
    assert_eq!(key.tokens_today, tokens, "counted against the key's quota");
    assert_eq!(
        key.errors_today, 0,
        "the caller leaving is not the key's fault"
    );
}

#[tokio::test]
async fn a_stream_cut_short_says_what_it_cost_and_a_reported_usage_wins() {
    let mock = MockTransport::new();
    mock.script(&secret(0), [MockReply::chat_stream(&["a", "b"], 500, 40)]);
    let c = client(&mock, 1, Some(ten_dollars_a_day()));
    let mut s = stream(&c).await;
    // Read to the usage chunk, then stop before [DONE].
    for _ in 0..3 {
        s.next().await.unwrap().unwrap();
    }
    let meta = s.cut_short().unwrap().clone();
    assert_eq!(
        (meta.usage.prompt_tokens, meta.usage.completion_tokens),
        (500, 40),
        "the upstream's own count"
    );
    assert_eq!(meta.cost, Money::from_micros(540 * 8));
    assert_eq!(c.snapshot().budget[0].spent, meta.cost);
    assert!(s.cut_short().is_none(), "booked once");
    assert!(s.next().await.is_none());
}

/// A client on `mock` that truncates prompts, reserving 10 output tokens.
fn truncating(mock: &MockTransport) -> Client {
    Client::builder()
        .provider("relay", "http://relay/v1", 0, pool(1))
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())))
        .context(ContextPolicy {
            truncate: true,
            ..ContextPolicy::default()
        })
        .retry(RetryPolicy {
            default_max_output_tokens: Some(10),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn on_a_context_length_error_the_prompt_is_truncated_and_retried_once() {
    let mock = MockTransport::new();
    // The upstream refuses more than 3 messages, saying its limit is 60 tokens.
    mock.fallback(|r| {
        let n = r.json()["messages"].as_array().map_or(0, Vec::len);
        if n > 3 {
            MockReply::error(
                400,
                "invalid_request_error",
                "context_length_exceeded",
                "This model's maximum context length is 60 tokens.",
            )
        } else {
            MockReply::chat("ok", 10, 2)
        }
    });
    let c = truncating(&mock);
    let long = "word ".repeat(20); // 25 tokens by the estimate
    let req = ApiRequest::chat(
        "gpt-4.1",
        &[
            ("system", "be brief"),
            ("user", &long),
            ("assistant", &long),
            ("user", &long),
            ("user", "latest question"),
        ],
    );
    let r = c
        .chat_completion(req, &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(r.meta.attempts, 2);
    let sent = &mock.requests()[1].body["messages"];
    let roles: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.first(), Some(&"system"), "the system prompt is kept");
    assert_eq!(
        sent.as_array().unwrap().last().unwrap()["content"],
        "latest question",
        "the newest message is kept"
    );
}

/// An agent's history over the upstream's window: the retry drops whole
/// turns, and never sends a `tool` message whose call was dropped.
#[tokio::test]
async fn truncating_an_agent_history_keeps_tool_calls_with_their_answers() {
    let mock = MockTransport::new();
    mock.fallback(|r| {
        let text = r.json()["messages"].to_string();
        if text.len() > 2_500 {
            MockReply::error(
                400,
                "invalid_request_error",
                "context_length_exceeded",
                "This model's maximum context length is 700 tokens.",
            )
        } else {
            MockReply::chat("ok", 10, 2)
        }
    });
    let c = truncating(&mock);
    let args = format!("{{\"path\": \"{}\"}}", "src/".repeat(150));
    let body = serde_json::json!({
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "you are a coding agent"},
            {"role": "user", "content": [{"type": "text", "text": "read the files"}]},
            {"role": "assistant", "content": null, "reasoning_content": "x".repeat(400),
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": args}},
                            {"id": "c2", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "y".repeat(2400)},
            {"role": "tool", "tool_call_id": "c2", "content": "short"},
            {"role": "assistant", "content": "both read"},
            {"role": "user", "content": "now fix the bug"},
        ],
    });
    let r = c
        .chat_completion(
            ApiRequest::from_json(&body).unwrap(),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.meta.attempts, 2);
    let sent = mock.requests()[1].body["messages"].clone();
    let roles: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "assistant", "user"], "{sent}");
}

#[tokio::test]
async fn on_a_context_length_error_a_configured_larger_model_is_used() {
    let mock = MockTransport::new();
    mock.fallback(|r| {
        if r.json()["model"] == "gpt-4o-mini" {
            MockReply::error(
                400,
                "invalid_request_error",
                "context_length_exceeded",
                "too long",
            )
        } else {
            MockReply::chat("ok", 10, 2)
        }
    });
    let c = Client::builder()
        .provider("relay", "http://relay/v1", 0, pool(1))
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())))
        .context(ContextPolicy {
            truncate: false,
            fallback_models: [("gpt-4o-mini".to_owned(), "gpt-4.1".to_owned())].into(),
        })
        .build()
        .unwrap();
    let r = c
        .chat_completion(
            ApiRequest::chat("gpt-4o-mini", &[("user", "hi")]),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.meta.model_requested.as_str(), r.meta.model_used.as_str()),
        ("gpt-4o-mini", "gpt-4.1")
    );
}

#[tokio::test]
async fn the_upstreams_own_client_errors_are_never_retried_and_name_keys_by_name() {
    let mock = MockTransport::new();
    mock.fallback(|_| {
        MockReply::error(
            404,
            "invalid_request_error",
            "model_not_found",
            "The model `nope` does not exist",
        )
    });
    let c = client(&mock, 3, None);
    let err = c
        .chat_completion(
            ApiRequest::chat("nope", &[("user", "hi")]),
            &RequestContext::default(),
        )
        .await
        .unwrap_err();
    let ClientError::Upstream { status, key, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!((*status, key.starts_with("key-")), (404, true));
    assert_eq!(mock.requests().len(), 1);
    assert!(!err.to_string().contains("sk-key"), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn attempts_and_the_deadline_bound_the_retries() {
    let mock = MockTransport::new();
    mock.fallback(|_| MockReply::raw(503, "down"));
    let c = Client::builder()
        .provider("relay", "http://relay/v1", 0, pool(10))
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())))
        .retry(RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let err = c
        .chat_completion(
            ApiRequest::chat("gpt-4.1", &[("user", "hi")]),
            &RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::AttemptsExhausted { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(mock.requests().len(), 3);
    // Three different keys were tried.
    let secrets: std::collections::HashSet<String> = mock
        .requests()
        .iter()
        .map(|r| r.secret.expose().to_owned())
        .collect();
    assert_eq!(secrets.len(), 3);
}

#[tokio::test]
async fn missing_model_and_bad_bodies_are_invalid_requests() {
    assert!(ApiRequest::from_json(&serde_json::json!({"messages": []})).is_err());
    assert!(ApiRequest::from_json(&serde_json::json!("text")).is_err());
    assert!(ApiRequest::from_json(&serde_json::json!({"model": ""})).is_err());
    assert!(ApiRequest::from_json(&serde_json::json!({"model": "m", "input": "x"})).is_ok());
}

#[test]
fn the_client_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Client>();
    assert_eq!(size_of::<Client>(), size_of::<usize>());
}

#[tokio::test]
async fn with_no_key_ready_it_waits_for_retry_at_inside_the_deadline() {
    let mock = MockTransport::new();
    mock.script(
        &secret(0),
        [
            MockReply::error(429, "requests", "rate_limit_exceeded", "slow")
                .header("retry-after", "5"),
            MockReply::chat("ok", 1, 1),
        ],
    );
    let clock = ManualClock::new(t0());
    let c = Client::builder()
        .provider("relay", "http://relay/v1", 0, pool(1))
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let r = c
        .chat_completion(
            ApiRequest::chat("gpt-4.1", &[("user", "hi")]),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.meta.attempts, 2);
    // The client slept (on the injected clock) until the key's cooldown ended.
    let waited = gateway_client::Clock::now(&clock)
        .duration_since(t0())
        .unwrap();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}

#[tokio::test]
async fn the_monitor_drives_timers_and_publishes_events() {
    let mock = MockTransport::new();
    mock.script(
        &secret(0),
        [
            MockReply::error(429, "requests", "rate_limit_exceeded", "slow")
                .header("retry-after", "20"),
        ],
    );
    mock.fallback(|_| MockReply::chat("ok", 1, 1));
    let c = client(&mock, 2, None);
    let mut events = c.subscribe();
    c.chat_completion(
        ApiRequest::chat("gpt-4.1", &[("user", "hi")]),
        &RequestContext::default(),
    )
    .await
    .unwrap();
    // On a manual clock the monitor's sleeps move time forward at once: it goes
    // straight to the cooldown's end and ticks the pool (which is why requests
    // and a monitor do not share a manual clock).
    let monitor = c.spawn_monitor(Duration::from_secs(60));
    let recovered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(gateway_client::ClientEvent::Pool {
                    event: keypool_core::Event::Recovered { name, .. },
                    ..
                }) => return name,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&*recovered, "key-0");
    monitor.abort();
}

#[tokio::test]
async fn the_dashboard_shows_keys_totals_canary_and_budget() {
    let mock = MockTransport::new();
    mock.fallback(|_| MockReply::chat("ok", 1000, 0));
    let ledger = Ledger::new(
        LedgerConfig::default(),
        budget::testing::blended_prices(),
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_dollars(100),
        )],
    )
    .unwrap();
    let rollout = canary::Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", canary::Share::percent(10).unwrap())
        .build()
        .unwrap();
    let c = Client::builder()
        .provider("relay", "http://relay/v1", 0, pool(2))
        .transport(Arc::new(mock.clone()))
        .ledger(ledger)
        .rollout(rollout)
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap();
    for i in 0..3 {
        c.chat_completion(
            ApiRequest::chat("gpt-4.1", &[("user", "hi")]),
            &RequestContext::user(format!("u{i}")),
        )
        .await
        .unwrap();
    }
    let report = c.status_report();
    assert!(
        report.contains("── provider relay (priority 0) ──"),
        "{report}"
    );
    assert!(
        report.contains("🟢 key-0:") && report.contains("🟢 key-1:"),
        "{report}"
    );
    assert!(
        report.contains("Requests: 3 (0 failed, 3 upstream attempts, 0 rotations)"),
        "{report}"
    );
    assert!(
        report.contains("Canary gpt-4.1: claude-sonnet-4.5 10% [running]"),
        "{report}"
    );
    let budget = &c.snapshot().budget[0];
    assert!(
        budget.spent >= Money::from_micros(3 * 8_000),
        "three requests of 1 000 tokens at $8/M or more"
    );
    let line = format!(
        "Budget global daily: spent {} of $100.00, {} left",
        budget.spent, budget.left
    );
    assert!(report.contains(&line), "{report}");
    assert!(!report.contains("sk-key"), "no secret in the dashboard");
    let json = serde_json::to_string(&c.snapshot()).unwrap();
    assert!(json.contains("\"secret\":\"sk-key-…0000\""), "{json}");
}

/// The candidate of a half-and-half canary fails every request: analysis on
/// the injected clock holds while the evidence is short, then rolls back,
/// and from then on everyone gets the baseline.
#[tokio::test]
async fn analysis_rolls_a_failing_candidate_back() {
    use canary::{Gates, Rollout, Share, Verdict};
    let mock = MockTransport::new();
    mock.fallback(|r| {
        if r.json()["model"] == "claude-sonnet-4.5" {
            MockReply::error(400, "invalid_request_error", "bad", "the candidate refuses")
        } else {
            MockReply::chat("ok", 5, 2)
        }
    });
    let rollout = Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", Share::percent(50).unwrap())
        .salt("analysis")
        .build()
        .unwrap();
    let c = Client::builder()
        .provider("relay", "http://relay/v1", 0, pool(2))
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())))
        .rollout(rollout)
        .gates(Gates {
            min_requests: 20,
            ..Gates::default()
        })
        .build()
        .unwrap();
    let send = |n: std::ops::Range<u32>| {
        let c = c.clone();
        async move {
            for i in n {
                let r = ApiRequest::chat("gpt-4.1", &[("user", "hi")]);
                let _ = c
                    .chat_completion(r, &RequestContext::user(format!("u{i}")))
                    .await;
            }
        }
    };
    send(0..10).await;
    let verdicts = c.analyze();
    assert!(
        matches!(verdicts[..], [(_, Verdict::Hold { .. })]),
        "{verdicts:?}"
    );
    send(10..100).await;
    let mut events = c.subscribe();
    let verdicts = c.analyze();
    assert!(
        matches!(verdicts[..], [(ref m, Verdict::Rollback { .. })] if m == "gpt-4.1"),
        "{verdicts:?}"
    );
    assert!(matches!(
        c.last_verdicts()["gpt-4.1"].1,
        Verdict::Rollback { .. }
    ));
    let rolled_back = std::iter::from_fn(|| events.try_recv().ok()).any(|e| {
        matches!(
            e,
            gateway_client::ClientEvent::Canary {
                event: canary::Event::RolledBack { .. },
                ..
            }
        )
    });
    assert!(rolled_back, "the rollback is announced");
    let before = mock.requests().len();
    send(100..140).await;
    let after = mock.requests();
    assert!(
        after[before..].iter().all(|r| r.body["model"] == "gpt-4.1"),
        "everyone is back on the baseline"
    );
}

/// Each rollout is judged at its own interval by its own gates, and one
/// whose analysis is off is never judged.
#[tokio::test]
async fn each_rollout_is_judged_at_its_own_interval_by_its_own_gates() {
    use canary::{Gates, Rollout, Share, Verdict};
    use gateway_client::Analysis;
    let rollout = |base: &str, cand: &str| {
        Rollout::builder(base)
            .candidate(cand, Share::percent(50).unwrap())
            .build()
            .unwrap()
    };
    let clock = ManualClock::new(t0());
    let c = Client::builder()
        .provider("relay", "http://relay/v1", 0, pool(1))
        .transport(Arc::new(MockTransport::new()))
        .clock(Arc::new(clock.clone()))
        .rollout_with(
            rollout("gpt-4.1", "claude-sonnet-4.5"),
            Analysis {
                interval: Some(Duration::from_secs(10)),
                gates: Some(Gates {
                    min_requests: 7,
                    ..Gates::default()
                }),
                ..Analysis::default()
            },
        )
        .rollout_with(
            rollout("gpt-4o-mini", "deepseek-v3.2"),
            Analysis {
                enabled: false,
                ..Analysis::default()
            },
        )
        .rollout(rollout("gemini-2.5-flash", "gpt-4.1-mini"))
        .build()
        .unwrap();
    let every = Duration::from_secs(60);
    assert!(
        c.analyze_due(every, true).is_empty(),
        "the first look schedules"
    );
    assert_eq!(c.next_analysis(), Some(t0() + Duration::from_secs(10)));
    clock.advance(Duration::from_secs(10));
    let v = c.analyze_due(every, true);
    assert!(
        matches!(&v[..], [(m, Verdict::Hold { needed: 7, .. })] if m == "gpt-4.1"),
        "{v:?}"
    );
    clock.advance(Duration::from_secs(50));
    let mut models: Vec<String> = c
        .analyze_due(every, true)
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    models.sort();
    assert_eq!(
        models,
        ["gemini-2.5-flash", "gpt-4.1"],
        "the default interval, and 10 s again"
    );
    clock.advance(Duration::from_secs(10));
    assert!(
        c.analyze_due(every, false).is_empty(),
        "another process judges"
    );
    let all: Vec<String> = c.analyze().into_iter().map(|(m, _)| m).collect();
    assert!(
        !all.contains(&"gpt-4o-mini".to_owned()),
        "its analysis is off: {all:?}"
    );
}

#[tokio::test]
async fn a_response_stream_failing_after_response_created_fails_over_unseen() {
    let mock = MockTransport::new();
    let created = r#"{"type":"response.created","response":{"id":"resp_x","usage":null}}"#;
    let overloaded = r#"{"type":"error","code":"server_error","message":"overloaded"}"#;
    mock.script(
        &secret(0),
        [MockReply::stream(
            vec![created.into(), overloaded.into()],
            false,
        )],
    );
    mock.script(
        &secret(1),
        [MockReply::response_stream(&["Hel", "lo"], 100, 80, 2)],
    );
    let c = client(&mock, 2, None);
    let body = serde_json::json!({"model": "gpt-4.1", "input": "hi"});
    let mut s = c
        .send_stream(
            gateway_client::Endpoint::Responses,
            ApiRequest::from_json(&body).unwrap(),
            &RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!((&*s.meta().key, s.meta().attempts), ("key-1", 2));
    let mut events = Vec::new();
    while let Some(e) = s.next().await {
        events.push(e.unwrap());
    }
    assert!(
        events.iter().all(|e| !e.contains("overloaded")),
        "{events:?}"
    );
    assert_eq!(
        events.len(),
        4,
        "created, two deltas, completed: {events:?}"
    );
    let usage = s.meta().usage;
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens
        ),
        (100, 80, 2)
    );
    // The Responses API is not asked for stream_options.
    let sent = mock.requests();
    assert!(sent.iter().all(|r| r.body.get("stream_options").is_none()));
}
