//! Model routing on the `MockTransport`: which providers and keys serve a
//! model, by which name, and the fallback chain. Simulated time throughout.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gateway_client::{
    ApiRequest, Catalog, Client, ClientError, Fallbacks, ManualClock, RequestContext,
};
use keypool_core::{KeyPool, NewKey, PoolConfig, Timestamp};
use transport::{MockReply, MockTransport};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_322_452)
}

fn pool(keys: &[(&str, &str, Option<&[&str]>)]) -> KeyPool {
    let mut p = KeyPool::new(PoolConfig::default()).unwrap();
    for (name, secret, models) in keys {
        let mut k = NewKey::new(*name, *secret);
        if let Some(m) = models {
            k = k.models(m.iter());
        }
        p.add(k, Timestamp::from_system_time(t0())).unwrap();
    }
    p
}

const K1: &str = "sk-relay-k1-0000000000";
const K2: &str = "sk-relay-k2-0000000000";
const K3: &str = "sk-relay-k3-0000000000";
const O1: &str = "sk-official-o1-000000";

/// The example: a relay serving three models (one by an alias),
/// with a key for one model only; an official provider, tried second,
/// serving anything; gpt-4.1 falls back to deepseek-chat.
fn client(mock: &MockTransport) -> Client {
    client_with(mock, &[])
}

/// [`client`] with more relay keys.
fn client_with(mock: &MockTransport, more: &[(&str, &str, Option<&[&str]>)]) -> Client {
    let mut relay_keys = vec![("k1", K1, None), ("k2", K2, Some(&["gpt-4o-mini"][..]))];
    relay_keys.extend_from_slice(more);
    let relay = Catalog::only(["gpt-4.1", "gpt-4o-mini", "deepseek-chat"])
        .alias("deepseek-v3.2", "deepseek-chat");
    Client::builder()
        .provider_serving(
            "official",
            "http://official/v1",
            1,
            pool(&[("o1", O1, None)]),
            Catalog::any(),
        )
        .provider_serving("relay", "http://relay/v1", 0, pool(&relay_keys), relay)
        .fallbacks(Fallbacks::none().with("gpt-4.1", ["deepseek-chat"]))
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap()
}

async fn ask(c: &Client, model: &str) -> Result<gateway_client::ApiResponse, ClientError> {
    c.chat_completion(
        ApiRequest::chat(model, &[("user", "hi")]),
        &RequestContext::default(),
    )
    .await
}

fn secrets_and_models(mock: &MockTransport) -> Vec<(String, String)> {
    mock.requests()
        .iter()
        .map(|r| {
            let key = r.secret.expose().to_owned();
            let model = r.body["model"].as_str().unwrap_or_default().to_owned();
            (key, model)
        })
        .collect()
}

#[tokio::test]
async fn a_key_for_other_models_is_never_picked_and_the_lower_priority_serves_first() {
    let mock = MockTransport::new();
    mock.fallback(|_| MockReply::chat("ok", 5, 1));
    let c = client(&mock);
    let mut keys = std::collections::BTreeSet::new();
    for _ in 0..6 {
        keys.insert(ask(&c, "gpt-4o-mini").await.unwrap().meta.key.to_string());
    }
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["k1", "k2"]);
    // k2 has served less, but not gpt-4.1.
    for _ in 0..6 {
        let a = ask(&c, "gpt-4.1").await.unwrap();
        assert_eq!((&*a.meta.provider, &*a.meta.key), ("relay", "k1"));
    }
}

#[tokio::test]
async fn an_alias_reaches_the_upstream_by_its_name_and_answers_by_the_clients() {
    let mock = MockTransport::new();
    mock.fallback(|_| MockReply::chat("ok", 5, 1));
    let c = client(&mock);
    let a = ask(&c, "deepseek-v3.2").await.unwrap();
    assert_eq!(a.meta.model_used, "deepseek-v3.2");
    assert_eq!(
        secrets_and_models(&mock),
        [(K1.into(), "deepseek-chat".into())]
    );
}

#[tokio::test]
async fn a_model_the_relay_does_not_list_goes_to_the_provider_that_serves_anything() {
    let mock = MockTransport::new();
    mock.fallback(|_| MockReply::chat("ok", 5, 1));
    let c = client(&mock);
    let a = ask(&c, "claude-sonnet-4.5").await.unwrap();
    assert_eq!(&*a.meta.provider, "official");
}

#[tokio::test]
async fn a_model_nobody_serves_is_not_found_without_touching_a_key() {
    let mock = MockTransport::new();
    let relay_only = Client::builder()
        .provider_serving(
            "relay",
            "http://relay/v1",
            0,
            pool(&[("k1", K1, None), ("k2", K2, Some(&["gpt-4o-mini"]))]),
            Catalog::only(["gpt-4.1", "gpt-4o-mini"]),
        )
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap();
    let e = ask(&relay_only, "gpt-5").await.unwrap_err();
    assert!(
        matches!(e, ClientError::ModelNotFound { ref model } if model == "gpt-5"),
        "{e}"
    );
    assert!(mock.requests().is_empty());
    assert!(!relay_only.serves("gpt-5") && relay_only.serves("gpt-4o-mini"));
    assert_eq!(
        relay_only.listed_models(),
        Some(vec!["gpt-4.1".to_owned(), "gpt-4o-mini".to_owned()])
    );
    // A listed model whose only keys are for other models is not servable.
    let mut p = pool(&[("k2", K2, Some(&["gpt-4o-mini"]))]);
    let _ = p.poll_event();
    let narrow = Client::builder()
        .provider_serving(
            "relay",
            "http://relay/v1",
            0,
            p,
            Catalog::only(["gpt-4.1", "gpt-4o-mini"]),
        )
        .transport(Arc::new(mock.clone()))
        .build()
        .unwrap();
    assert_eq!(narrow.listed_models(), Some(vec!["gpt-4o-mini".to_owned()]));
    let e = ask(&narrow, "gpt-4.1").await.unwrap_err();
    assert!(matches!(e, ClientError::ModelNotFound { .. }), "{e}");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn when_no_key_can_serve_a_model_its_fallback_answers_without_waiting() {
    let mock = MockTransport::new();
    // gpt-4.1 is served by the relay's k1 (k2 is for gpt-4o-mini only) and
    // by the official provider: both rate limited for a minute. k3 serves
    // only the fallback.
    mock.fallback(|r| {
        if r.json()["model"] == "gpt-4.1" {
            MockReply::error(429, "requests", "rate_limit_exceeded", "slow")
                .header("retry-after", "60")
        } else {
            MockReply::chat("from the fallback", 5, 1)
        }
    });
    let c = client_with(&mock, &[("k3", K3, Some(&["deepseek-chat"]))]);
    let a = ask(&c, "gpt-4.1").await.unwrap();
    assert_eq!(a.meta.model_used, "deepseek-chat");
    assert_eq!(a.meta.model_requested, "gpt-4.1");
    assert_eq!(a.meta.attempts, 3, "k1, o1, then the fallback");
    // Only backoffs between attempts passed, not the minute's cooldown.
    let waited = gateway_client::Clock::now(&**c.clock())
        .duration_since(t0())
        .unwrap();
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    let sent = secrets_and_models(&mock);
    assert_eq!(
        sent,
        [
            (K1.into(), "gpt-4.1".into()),
            (O1.into(), "gpt-4.1".into()),
            (K3.into(), "deepseek-chat".into()),
        ]
    );
    // Next time both gpt-4.1 keys are cooling down: straight to the fallback.
    let a = ask(&c, "gpt-4.1").await.unwrap();
    assert_eq!(
        (a.meta.model_used.as_str(), a.meta.attempts),
        ("deepseek-chat", 1)
    );
}

#[tokio::test]
async fn server_errors_on_every_key_move_to_the_fallback_and_a_clients_fault_does_not() {
    let mock = MockTransport::new();
    mock.fallback(|r| match r.json()["model"].as_str() {
        Some("gpt-4.1") => MockReply::error(500, "server_error", "", "boom"),
        Some("gpt-4o-mini") => MockReply::error(400, "invalid_request_error", "", "bad"),
        _ => MockReply::chat("ok", 5, 1),
    });
    let c = client(&mock);
    let a = ask(&c, "gpt-4.1").await.unwrap();
    assert_eq!(a.meta.model_used, "deepseek-chat");
    let c2 = Client::builder()
        .provider_serving(
            "relay",
            "http://relay/v1",
            0,
            pool(&[("k1", K1, None)]),
            Catalog::any(),
        )
        .fallbacks(Fallbacks::none().with("gpt-4o-mini", ["deepseek-chat"]))
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap();
    let e = ask(&c2, "gpt-4o-mini").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Upstream { status: 400, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn an_operators_error_rules_read_a_relays_answers_before_the_built_in_ones() {
    use transport::{ErrorRule, RuleAction};
    let mock = MockTransport::new();
    mock.script(
        K1,
        [MockReply::error(403, "forbidden", "", "account suspended")],
    );
    mock.script(K2, [MockReply::raw(503, "busy")]);
    mock.script(
        O1,
        [MockReply::error(
            400,
            "invalid_request_error",
            "model_not_found",
            "no",
        )],
    );
    let rules = vec![
        ErrorRule {
            status: 403,
            body_contains: Some("suspended".into()),
            action: RuleAction::Disable,
        },
        ErrorRule {
            status: 503,
            body_contains: None,
            action: RuleAction::Cooldown(Duration::from_secs(30)),
        },
        ErrorRule {
            status: 400,
            body_contains: Some("model_not_found".into()),
            action: RuleAction::ClientError,
        },
    ];
    let c = Client::builder()
        .provider(
            "relay",
            "http://relay/v1",
            0,
            pool(&[("k1", K1, None), ("k2", K2, None), ("o1", O1, None)]),
        )
        .error_rules("relay", rules)
        .transport(Arc::new(mock.clone()))
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap();
    let e = ask(&c, "gpt-4.1").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Upstream { status: 400, .. }),
        "{e}"
    );
    let states: Vec<String> = c
        .read_pool("relay", |p| {
            ["k1", "k2", "o1"]
                .iter()
                .map(|n| p.state(p.find(n).unwrap()).unwrap().to_string())
                .collect()
        })
        .unwrap();
    assert!(states[0].starts_with("disabled"), "{states:?}");
    assert!(states[1].starts_with("cooling down"), "{states:?}");
    assert_eq!(states[2], "active", "the caller's fault costs no key");
}
