//! The seeds' scenarios, end to end: gateway-client over the reqwest
//! transport against wiremock upstreams, with an injected clock so nothing
//! waits in real time for cooldowns, resets or grace periods.
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
use canary::{Rollout, Share};
use gateway_client::{ApiRequest, Client, ClientError, ManualClock, RequestContext, RetryPolicy};
use keypool_core::{CooldownCause, DisableCause, KeyState, NewKey, PoolConfig, Timestamp};
use transport::{HttpConfig, ReqwestTransport};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// 2026-11-22T04:40:52Z.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_322_452)
}

fn secret(name: &str) -> String {
    format!("sk-{name}-0123456789abcdef")
}

fn pool(keys: &[NewKey]) -> keypool_core::KeyPool {
    let mut p = keypool_core::KeyPool::new(PoolConfig::default()).unwrap();
    for k in keys {
        p.add(k.clone(), Timestamp::from_system_time(t0())).unwrap();
    }
    p
}

fn key(name: &str) -> NewKey {
    NewKey::new(name, secret(name))
}

fn chat_ok(prompt: u64, completion: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion}
    }))
}

fn error(status: u16, kind: &str, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(serde_json::json!({"error": {"type": kind, "code": code, "message": code}}))
}

/// Answers requests made with `name`'s key.
async fn on_key(server: &MockServer, name: &str, template: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(header(
            "authorization",
            format!("Bearer {}", secret(name)).as_str(),
        ))
        .respond_with(template)
        .mount(server)
        .await;
}

fn transport() -> Arc<ReqwestTransport> {
    Arc::new(
        ReqwestTransport::new(&HttpConfig {
            use_env_proxy: false,
            ..HttpConfig::default()
        })
        .unwrap(),
    )
}

/// A builder with the relay provider over wiremock, the reqwest transport and the clock.
fn builder(
    server: &MockServer,
    keys: &[NewKey],
    clock: &ManualClock,
) -> gateway_client::ClientBuilder {
    Client::builder()
        .provider("relay", format!("{}/v1", server.uri()), 0, pool(keys))
        .prices(budget::testing::blended_prices())
        .transport(transport())
        .clock(Arc::new(clock.clone()))
}

fn client(server: &MockServer, keys: &[NewKey], clock: &ManualClock) -> Client {
    builder(server, keys, clock)
        .retry(RetryPolicy {
            seed: 7,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

fn hello() -> ApiRequest {
    ApiRequest::chat("gpt-4.1", &[("user", "สวัสดี")])
}

fn state(c: &Client, provider: &str, name: &str) -> Option<KeyState> {
    c.with_pool(provider, |p, _| p.find(name).and_then(|id| p.state(id)))
        .flatten()
}

#[tokio::test]
async fn a_429_on_key_a_is_served_by_key_b_and_a_cools_down_until_retry_after() {
    let server = MockServer::start().await;
    on_key(
        &server,
        "a",
        error(429, "requests", "rate_limit_exceeded").insert_header("retry-after", "20"),
    )
    .await;
    on_key(&server, "b", chat_ok(10, 5)).await;
    let clock = ManualClock::new(t0());
    let c = client(&server, &[key("a"), key("b")], &clock);
    let r = c
        .chat_completion(hello(), &RequestContext::user("u1"))
        .await
        .unwrap();
    assert_eq!((&*r.meta.key, r.meta.attempts), ("b", 2));
    let Some(KeyState::CoolingDown {
        until,
        cause: CooldownCause::RateLimited,
    }) = state(&c, "relay", "a")
    else {
        panic!()
    };
    // Until = the moment of the 429 (after a jittered backoff of at most 100 ms) + 20 s.
    let until = until.to_system_time();
    assert!(
        until >= t0() + Duration::from_secs(20) && until <= t0() + Duration::from_millis(20_100),
        "{until:?}"
    );
    // Meanwhile b serves everything; after the cooldown a is back.
    for _ in 0..3 {
        assert_eq!(
            &*c.chat_completion(hello(), &RequestContext::user("u1"))
                .await
                .unwrap()
                .meta
                .key,
            "b"
        );
    }
    clock.advance(Duration::from_secs(21));
    c.tick();
    assert_eq!(state(&c, "relay", "a"), Some(KeyState::Active));
}

#[tokio::test]
async fn a_401_disables_the_key_for_good() {
    let server = MockServer::start().await;
    on_key(
        &server,
        "revoked",
        error(401, "invalid_request_error", "invalid_api_key"),
    )
    .await;
    on_key(&server, "good", chat_ok(1, 1)).await;
    let clock = ManualClock::new(t0());
    let c = client(&server, &[key("revoked"), key("good")], &clock);
    c.chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(
        state(&c, "relay", "revoked"),
        Some(KeyState::Disabled {
            cause: DisableCause::Unauthorized
        })
    );
    clock.advance(Duration::from_secs(3 * 86_400));
    c.tick();
    for _ in 0..5 {
        assert_eq!(
            &*c.chat_completion(hello(), &RequestContext::default())
                .await
                .unwrap()
                .meta
                .key,
            "good"
        );
    }
    assert_eq!(
        state(&c, "relay", "revoked"),
        Some(KeyState::Disabled {
            cause: DisableCause::Unauthorized
        })
    );
}

#[tokio::test]
async fn repeated_5xx_open_the_breaker_and_a_half_open_probe_closes_it() {
    let server = MockServer::start().await;
    // "flaky" fails five times, then recovers.
    Mock::given(method("POST"))
        .and(header(
            "authorization",
            format!("Bearer {}", secret("flaky")).as_str(),
        ))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(5)
        .mount(&server)
        .await;
    on_key(&server, "flaky", chat_ok(1, 1)).await;
    let clock = ManualClock::new(t0());
    let c = builder(&server, &[key("flaky")], &clock)
        .retry(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    for _ in 0..5 {
        assert!(
            c.chat_completion(hello(), &RequestContext::default())
                .await
                .is_err()
        );
    }
    assert!(matches!(
        state(&c, "relay", "flaky"),
        Some(KeyState::CoolingDown {
            cause: CooldownCause::BreakerOpen,
            ..
        })
    ));
    // While open, no key: the typed error says when to retry (past the 60 s deadline, so not waited for).
    let err = c
        .chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap_err();
    let ClientError::NoKeyAvailable {
        retry_at: Some(at),
        detail,
    } = err
    else {
        panic!("{err}")
    };
    assert!(detail.contains("breaker open"), "{detail}");
    assert_eq!(
        at,
        Timestamp::from_system_time(t0() + Duration::from_secs(300)).to_system_time()
    );
    clock.set(at);
    c.tick();
    assert_eq!(state(&c, "relay", "flaky"), Some(KeyState::HalfOpen));
    c.chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(state(&c, "relay", "flaky"), Some(KeyState::Active));
}

#[tokio::test]
async fn a_key_at_90_percent_of_its_quota_is_skipped() {
    let server = MockServer::start().await;
    on_key(&server, "small", chat_ok(900, 0)).await;
    on_key(&server, "big", chat_ok(10, 0)).await;
    let clock = ManualClock::new(t0());
    let c = client(
        &server,
        &[
            key("small").tokens_per_day(1000),
            key("big").tokens_per_day(1_000_000),
        ],
        &clock,
    );
    // Least used: "small" serves first and reaches 90%.
    assert_eq!(
        &*c.chat_completion(hello(), &RequestContext::default())
            .await
            .unwrap()
            .meta
            .key,
        "small"
    );
    for _ in 0..3 {
        assert_eq!(
            &*c.chat_completion(hello(), &RequestContext::default())
                .await
                .unwrap()
                .meta
                .key,
            "big"
        );
    }
}

#[tokio::test]
async fn every_key_exhausted_gives_the_typed_error_with_retry_at() {
    let server = MockServer::start().await;
    on_key(
        &server,
        "a",
        error(429, "insufficient_quota", "insufficient_quota"),
    )
    .await;
    on_key(&server, "b", error(402, "billing", "payment_required")).await;
    let clock = ManualClock::new(t0());
    let c = client(&server, &[key("a"), key("b")], &clock);
    let err = c
        .chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap_err();
    let ClientError::NoKeyAvailable { retry_at, detail } = &err else {
        panic!("{err}")
    };
    assert!(detail.contains("2 exhausted"), "{detail}");
    // The next UTC midnight.
    assert_eq!(
        *retry_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000))
    );
    assert!(
        err.to_string()
            .contains("retry after 2026-11-23T00:00:00.000Z"),
        "{err}"
    );
}

#[tokio::test]
async fn a_budget_refusal_and_the_degradation_path() {
    let server = MockServer::start().await;
    on_key(&server, "k", chat_ok(1_000_000, 0)).await;
    let clock = ManualClock::new(t0());
    let limit = Limit::new(Scope::Global, Period::Daily, Money::from_dollars(10))
        .soft(0.5)
        .fallback("gpt-4o-mini");
    let ledger = Ledger::new(
        LedgerConfig::default(),
        budget::testing::blended_prices(),
        vec![limit],
    )
    .unwrap();
    let c = builder(&server, &[key("k")], &clock)
        .ledger(ledger)
        .build()
        .unwrap();
    // $8 spent on gpt-4.1 (1M tokens): past the 50% soft limit.
    let r = c
        .chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(
        (r.meta.model_used.as_str(), r.meta.cost),
        ("gpt-4.1", Money::from_dollars(8))
    );
    // Now gpt-4.1 is served by gpt-4o-mini, and the request body says so.
    let r = c
        .chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(
        (r.meta.model_requested.as_str(), r.meta.model_used.as_str()),
        ("gpt-4.1", "gpt-4o-mini")
    );
    assert_eq!(
        r.meta.degraded.as_ref().map(|d| d.to.as_str()),
        Some("gpt-4o-mini")
    );
    let sent: serde_json::Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[1].body).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
    // A request whose worst case passes the hard limit is served with its
    // output capped at what the budget can still pay, and the cap is sent.
    let big = || {
        ApiRequest::from_json(
            &serde_json::json!({"model": "gpt-4o-mini", "messages": [], "max_tokens": 100_000_000}),
        )
        .unwrap()
    };
    let r = c
        .chat_completion(big(), &RequestContext::default())
        .await
        .unwrap();
    let cap = r.meta.max_tokens.expect("capped");
    assert!((gateway_client::DEFAULT_MIN_OUTPUT_TOKENS..100_000_000).contains(&cap));
    let sent: serde_json::Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[2].body).unwrap();
    assert_eq!(sent["max_tokens"], cap);
    // When not even the minimum output fits, it is refused before it is sent.
    let ledger = daily_limit(Money::from_cents(1));
    let strict = builder(&server, &[key("k")], &clock)
        .ledger(ledger)
        .min_output_tokens(100_000)
        .build()
        .unwrap();
    let err = strict
        .chat_completion(big(), &RequestContext::default())
        .await
        .unwrap_err();
    assert!(err.is_budget(), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_10_percent_canary_over_10_000_users_is_sticky_and_within_one_point() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(chat_ok(1, 1))
        .mount(&server)
        .await;
    let clock = ManualClock::new(t0());
    let rollout = Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", Share::percent(10).unwrap())
        .salt("launch-1")
        .build()
        .unwrap();
    let c = builder(&server, &[key("a"), key("b"), key("c")], &clock)
        .rollout(rollout)
        .build()
        .unwrap();
    let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let models = |c: Client, users: Vec<String>| async move {
        let mut out = Vec::new();
        for chunk in users.chunks(64) {
            let calls = chunk.iter().map(|u| {
                let c = c.clone();
                let ctx = RequestContext::user(u.clone());
                async move {
                    c.chat_completion(hello(), &ctx)
                        .await
                        .unwrap()
                        .meta
                        .model_used
                }
            });
            out.extend(futures_util::future::join_all(calls).await);
        }
        out
    };
    let first = models(c.clone(), users.clone()).await;
    let on_candidate = first.iter().filter(|m| *m == "claude-sonnet-4.5").count();
    assert!(
        (900..=1100).contains(&on_candidate),
        "{on_candidate} of 10 000"
    );
    // Each user keeps their model across calls.
    let sample: Vec<String> = users.iter().step_by(25).cloned().collect();
    let again = models(c.clone(), sample.clone()).await;
    let expected: Vec<String> = first.iter().step_by(25).cloned().collect();
    assert_eq!(again, expected);
}

#[tokio::test]
async fn rotation_with_grace_uses_the_old_key_only_as_a_last_resort_then_removes_it() {
    let server = MockServer::start().await;
    on_key(&server, "old", chat_ok(1, 1)).await;
    let new_secret = "sk-new-secret-0123456789";
    Mock::given(method("POST"))
        .and(header(
            "authorization",
            format!("Bearer {new_secret}").as_str(),
        ))
        .respond_with(chat_ok(1, 1))
        .mount(&server)
        .await;
    let clock = ManualClock::new(t0());
    let c = client(&server, &[key("old")], &clock);
    let new_id = c
        .with_pool("relay", |p, now| {
            let old = p.find("old").unwrap();
            p.rotate(old, new_secret, Duration::from_secs(3600), now)
                .unwrap()
        })
        .unwrap();
    // Same name, new secret: requests go to the new key.
    for _ in 0..3 {
        c.chat_completion(hello(), &RequestContext::default())
            .await
            .unwrap();
    }
    let received = server.received_requests().await.unwrap();
    assert!(
        received
            .iter()
            .all(|r| r.headers["authorization"] == format!("Bearer {new_secret}").as_str())
    );
    // With the new key disabled, the draining old key is the last resort.
    c.with_pool("relay", |p, now| p.disable(new_id, now).unwrap());
    c.chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(
        server
            .received_requests()
            .await
            .unwrap()
            .last()
            .unwrap()
            .headers["authorization"],
        format!("Bearer {}", secret("old")).as_str()
    );
    // After the grace it is gone.
    clock.advance(Duration::from_secs(3601));
    c.tick();
    assert_eq!(c.with_pool("relay", |p, _| p.len()), Some(1));
    assert_eq!(c.snapshot().stats.rotations, 1);
}

#[tokio::test]
async fn the_daily_reset_follows_the_injected_clock() {
    let server = MockServer::start().await;
    on_key(&server, "a", chat_ok(950, 0)).await;
    let clock = ManualClock::new(t0());
    let c = client(&server, &[key("a").tokens_per_day(1000)], &clock);
    c.chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap();
    assert!(
        c.chat_completion(hello(), &RequestContext::default())
            .await
            .unwrap_err()
            .is_no_key()
    );
    // Midnight UTC: 2026-11-23T00:00:00Z.
    clock.set(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000));
    c.chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_backup_provider_serves_when_the_whole_primary_pool_is_down_and_back() {
    let relay = MockServer::start().await;
    let official = MockServer::start().await;
    on_key(&relay, "r1", error(500, "server_error", "down")).await;
    on_key(&relay, "r2", error(503, "server_error", "down")).await;
    on_key(&official, "o1", chat_ok(1, 1)).await;
    let clock = ManualClock::new(t0());
    let c = Client::builder()
        .provider(
            "official",
            format!("{}/v1", official.uri()),
            1,
            pool(&[key("o1")]),
        )
        .provider(
            "relay",
            format!("{}/v1", relay.uri()),
            0,
            pool(&[key("r1"), key("r2")]),
        )
        .transport(transport())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let r = c
        .chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!((&*r.meta.provider, r.meta.attempts), ("official", 3));
    // The relay recovers: once its keys are usable again, it serves first again.
    relay.reset().await;
    on_key(&relay, "r1", chat_ok(1, 1)).await;
    on_key(&relay, "r2", chat_ok(1, 1)).await;
    let r = c
        .chat_completion(hello(), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(&*r.meta.provider, "relay");
}

#[tokio::test]
async fn proactive_limits_skip_a_key_that_has_nothing_left_so_no_429_is_paid_for() {
    let server = MockServer::start().await;
    on_key(
        &server,
        "a",
        chat_ok(1, 1)
            .insert_header("x-ratelimit-remaining-requests", "0")
            .insert_header("x-ratelimit-reset-requests", "30s"),
    )
    .await;
    on_key(&server, "b", chat_ok(1, 1)).await;
    let clock = ManualClock::new(t0());
    let c = client(&server, &[key("a"), key("b")], &clock);
    assert_eq!(
        &*c.chat_completion(hello(), &RequestContext::default())
            .await
            .unwrap()
            .meta
            .key,
        "a"
    );
    assert!(matches!(
        state(&c, "relay", "a"),
        Some(KeyState::CoolingDown {
            cause: CooldownCause::Deferred,
            ..
        })
    ));
    for _ in 0..3 {
        assert_eq!(
            &*c.chat_completion(hello(), &RequestContext::default())
                .await
                .unwrap()
                .meta
                .key,
            "b"
        );
    }
}

#[tokio::test]
async fn a_stream_whose_usage_settles_the_budget() {
    let server = MockServer::start().await;
    let sse = [
        r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
        r#"{"choices":[{"delta":{"content":"lo"}}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500}}"#,
        "[DONE]",
    ]
    .iter()
    .map(|c| format!("data: {c}\n\n"))
    .collect::<String>();
    on_key(
        &server,
        "s",
        ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream"),
    )
    .await;
    let clock = ManualClock::new(t0());
    let ledger = daily_limit(Money::from_dollars(1));
    let c = builder(&server, &[key("s")], &clock)
        .ledger(ledger)
        .build()
        .unwrap();
    use futures_util::StreamExt;
    let mut stream = c
        .chat_completion_stream(hello(), &RequestContext::default())
        .await
        .unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    assert_eq!(chunks.len(), 3);
    // 1 500 tokens of gpt-4.1 at $8 per million = $0.012.
    assert_eq!(stream.meta().cost, Money::from_micros(12_000));
    let spent = c.snapshot().budget[0].spent;
    assert_eq!(spent, Money::from_micros(12_000));
    assert_eq!(c.with_pool("relay", |p, _| p.outstanding_leases()), Some(0));
}

/// A ledger with one hard daily limit over everything, at the default prices.
fn daily_limit(limit: Money) -> Ledger {
    Ledger::new(
        LedgerConfig::default(),
        budget::testing::blended_prices(),
        vec![Limit::new(Scope::Global, Period::Daily, limit)],
    )
    .unwrap()
}
