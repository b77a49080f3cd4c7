//! Several gateway instances on one Postgres database: what one learns or
//! is told reaches the others.

use std::time::Duration;

use gateway::sim::{self, Behavior};
use gateway::testing::TestDatabase;
use keypool_core::KeyState;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, HEALTHY, REVOKED, Setup, SimKey, TempDir, eventually, requests_in};

/// How long a change may take to reach another instance in these tests
/// (notifications bring it in milliseconds; the deadline allows for a
/// loaded machine).
const PROPAGATION: Duration = Duration::from_secs(5);

const SECRETS_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const LIMITED: SimKey = (
    "limited",
    "sk-sim-limited-0000000000000002",
    Behavior::RateLimited,
);

/// Two instances on `db` in front of one simulated upstream with `keys`.
async fn pair(
    db: &TestDatabase,
    dir: &TempDir,
    keys: &[SimKey],
) -> (Gateway, Gateway, sim::SimUpstream) {
    let upstream = sim::start(keys).await.unwrap();
    let start = |name: &str| {
        Setup::new(keys)
            .master()
            .upstream(upstream.base_url())
            .postgres(db.url(), &dir.join(name))
            .configure(|c| {
                c.storage.secrets_key = Some(SECRETS_KEY.into());
                // The tests send one prompt again and again and must reach
                // every key: no prompt-cache affinity.
                c.routing.cache_affinity_secs = 0;
            })
            .start()
    };
    let a = start("a").await;
    let b = start("b").await;
    (a, b, upstream)
}

/// The state of the key named `name` in `gw`'s pool.
fn state(gw: &Gateway, name: &str) -> KeyState {
    gw.running()
        .client()
        .read_pool("simulated", |p| p.state(p.find(name)?))
        .flatten()
        .unwrap()
}

#[tokio::test]
async fn a_client_key_made_on_one_instance_works_on_the_other_and_its_revocation_too() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-client-keys");
    let (a, b, _upstream) = pair(&db, &dir, &[HEALTHY]).await;
    let (status, created) = a
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "web", "team": "search"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    eventually(PROPAGATION, "the new key works on b", || async {
        b.chat_as(&secret).await.status() == 200
    })
    .await;
    let (status, _) = a
        .admin(Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(status, 200);
    eventually(PROPAGATION, "the revoked key is refused by b", || async {
        b.chat_as(&secret).await.status() == 401
    })
    .await;
}

#[tokio::test]
async fn a_key_disabled_through_one_instance_stops_serving_on_the_other() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-disable");
    let alpha: SimKey = (
        "alpha",
        "sk-sim-healthy-000000000000000a",
        Behavior::Healthy,
    );
    let beta: SimKey = ("beta", "sk-sim-healthy-000000000000000b", Behavior::Healthy);
    let (a, b, _upstream) = pair(&db, &dir, &[alpha, beta]).await;
    let id = a.key_id("alpha").await;
    let path = format!("/admin/upstream-keys/{id}/disable");
    assert_eq!(a.admin(Method::POST, &path, None).await.0, 200);
    eventually(PROPAGATION, "alpha is disabled on b", || async {
        matches!(state(&b, "alpha"), KeyState::Disabled { .. })
    })
    .await;
    let (_, created) = b
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "app"})))
        .await;
    let secret = created["key"].as_str().unwrap().to_owned();
    for _ in 0..6 {
        let r = b.chat_as(&secret).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["x-gateway-key"],
            "beta",
            "alpha no longer serves"
        );
    }
    // An operator's enable reaches the other instance too.
    let path = format!("/admin/upstream-keys/{id}/enable");
    assert_eq!(a.admin(Method::POST, &path, None).await.0, 200);
    eventually(PROPAGATION, "alpha is enabled again on b", || async {
        state(&b, "alpha") == KeyState::Active
    })
    .await;
}

#[tokio::test]
async fn what_an_upstream_taught_one_instance_benches_the_key_on_the_other() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-facts");
    let (a, b, _upstream) = pair(&db, &dir, &[HEALTHY, REVOKED, LIMITED]).await;
    let (_, created) = a
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "app"})))
        .await;
    let secret = created["key"].as_str().unwrap().to_owned();
    // Traffic through a alone until it has met the 401 and a 429.
    for _ in 0..40 {
        assert_eq!(a.chat_as(&secret).await.status(), 200);
        let revoked = matches!(state(&a, "revoked"), KeyState::Disabled { .. });
        let limited = matches!(state(&a, "limited"), KeyState::CoolingDown { .. });
        if revoked && limited {
            break;
        }
    }
    assert!(matches!(state(&a, "revoked"), KeyState::Disabled { .. }));
    let KeyState::CoolingDown { until, .. } = state(&a, "limited") else {
        panic!("the limited key met no 429 on a");
    };
    eventually(PROPAGATION, "b benches both keys", || async {
        matches!(state(&b, "revoked"), KeyState::Disabled { .. })
            && state(&b, "limited")
                == KeyState::CoolingDown {
                    until,
                    cause: keypool_core::CooldownCause::RateLimited,
                }
    })
    .await;
    // b never sent them a request: every one of its answers is healthy's.
    for _ in 0..4 {
        let r = b.chat_as(&secret).await;
        assert_eq!(r.headers()["x-gateway-key"], "healthy");
    }
}

#[tokio::test]
async fn usage_answered_by_either_instance_is_in_both_reports() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-usage");
    let (a, b, _upstream) = pair(&db, &dir, &[HEALTHY]).await;
    let (_, created) = a
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "app"})))
        .await;
    let secret = created["key"].as_str().unwrap().to_owned();
    eventually(PROPAGATION, "the key works on b", || async {
        b.chat_as(&secret).await.status() == 200
    })
    .await;
    for gw in [&a, &a, &b] {
        assert_eq!(gw.chat_as(&secret).await.status(), 200);
    }
    // b's first answer (while waiting for the key) counts too: 4 in all,
    // in either instance's report once b has shipped its records.
    for gw in [&a, &b] {
        eventually(PROPAGATION, "every answer is in the report", || async {
            let (status, usage) = gw.admin(Method::GET, "/v1/usage", None).await;
            assert_eq!(status, 200, "{usage}");
            let requests = requests_in(&usage);
            assert!(requests <= 4, "{usage}");
            requests == 4
        })
        .await;
    }
}

/// A key whose answers are as long as `max_tokens` allows.
const VERBOSE: SimKey = (
    "verbose",
    "sk-sim-verbose-00000000000000v1",
    Behavior::Verbose,
);

/// An instance on `db`, its files in `dir`, with a hard global daily
/// budget of `limit`, in front of `upstream` (serving [`VERBOSE`]).
async fn budgeted(
    db: &TestDatabase,
    dir: &std::path::Path,
    upstream: &sim::SimUpstream,
    limit: budget::Money,
) -> Gateway {
    Setup::new(&[VERBOSE])
        .upstream(upstream.base_url())
        .postgres(db.url(), dir)
        .configure(move |c| {
            c.budget = Some(gateway::config::BudgetConfig {
                limits: vec![gateway::config::LimitConfig::global_daily(limit)],
                ..gateway::config::BudgetConfig::default()
            });
        })
        .start()
        .await
}

/// Three instances, one hard daily budget, 32 clients at once (each
/// request with `max_tokens`, answered in full), until the budget refuses:
/// together they never spend past the limit, and they spend nearly all of
/// it (no instance refuses while another sits on room it does not need).
#[tokio::test]
async fn three_instances_never_overspend_a_shared_budget_and_use_nearly_all_of_it() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-budget");
    let upstream = sim::start(&[VERBOSE]).await.unwrap();
    let limit = budget::Money::from_cents(50);
    let mut instances = Vec::new();
    for name in ["a", "b", "c"] {
        instances.push(budgeted(&db, &dir.join(name), &upstream, limit).await);
    }
    let instances = std::sync::Arc::new(instances);
    let workers = (0..32).map(|w| {
        let instances = instances.clone();
        tokio::spawn(async move {
            let gw = &instances[w % 3];
            let mut body = crate::harness::chat("gpt-4.1");
            body["max_tokens"] = json!(200);
            let mut served = 0u32;
            loop {
                let r = gw.post("/v1/chat/completions", None, &body).await;
                match r.status().as_u16() {
                    200 => served += 1,
                    402 => return served,
                    other => panic!("{other}: {}", r.text().await.unwrap()),
                }
            }
        })
    });
    let served: u32 = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    let spent = |usage: &serde_json::Value| usage["total_estimated_cost_micros"].as_u64().unwrap();
    let a = &instances[0];
    eventually(PROPAGATION, "every answer is in the report", || async {
        let (_, usage) = a.call(Method::GET, "/v1/usage", None, None).await;
        let requests = requests_in(&usage);
        requests == u64::from(served)
    })
    .await;
    let (_, usage) = a.call(Method::GET, "/v1/usage", None, None).await;
    let spent = spent(&usage);
    eprintln!(
        "three instances spent {spent} µ$ of {} in {served} answers",
        limit.micros()
    );
    assert!(
        spent <= limit.micros(),
        "spent {spent} µ$ of {}",
        limit.micros()
    );
    assert!(
        spent * 100 >= limit.micros() * 95,
        "only {spent} µ$ of {} spent ({served} answers)",
        limit.micros()
    );
}

/// A client key's rate holds across three instances: over its minute
/// (a manual clock keeps them in one), the requests they admit together
/// stay within 10% of the limit, whether the traffic is spread evenly or
/// all goes to one of them.
#[tokio::test]
async fn a_client_keys_rate_holds_across_instances() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-rates");
    let upstream = sim::start(&[HEALTHY]).await.unwrap();
    let mut gws = Vec::new();
    for name in ["a", "b", "c"] {
        let gw = Setup::new(&[HEALTHY])
            .master()
            .manual_clock()
            .upstream(upstream.base_url())
            .postgres(db.url(), &dir.join(name))
            .start()
            .await;
        gws.push(gw);
    }
    let key = |name: &'static str, rate: u32| {
        let a = &gws[0];
        async move {
            let body = json!({"name": name, "rate_limit": rate});
            let (status, created) = a.admin(Method::POST, "/v1/keys", Some(body)).await;
            assert_eq!(status, 201, "{created}");
            created["key"].as_str().unwrap().to_owned()
        }
    };
    let even = key("even", 60).await;
    let lone = key("lone", 60).await;
    for gw in &gws[1..] {
        eventually(PROPAGATION, "the keys work everywhere", || async {
            let (_, keys) = gw.admin(Method::GET, "/v1/keys", None).await;
            keys["data"].as_array().is_some_and(|k| k.len() == 2)
        })
        .await;
    }
    // Spread evenly, as fast as the instances answer: 240 tries.
    let mut admitted = 0;
    for i in 0..240 {
        match gws[i % 3].chat_as(&even).await.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("{other}"),
        }
    }
    eprintln!("spread over three instances: {admitted} of 60 admitted");
    assert!((54..=66).contains(&admitted), "{admitted} of 60 admitted");
    // All to one instance: it learns the others' room and reaches it.
    let lone_admitted = std::sync::atomic::AtomicU32::new(0);
    eventually(
        PROPAGATION,
        "one instance reaches 90% of the rate",
        || async {
            if gws[0].chat_as(&lone).await.status() == 200 {
                lone_admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            lone_admitted.load(std::sync::atomic::Ordering::SeqCst) >= 54
        },
    )
    .await;
    for _ in 0..40 {
        if gws[0].chat_as(&lone).await.status() == 200 {
            lone_admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let n = lone_admitted.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("all to one instance: {n} of 60 admitted");
    assert!(n <= 66, "{n} of 60 admitted");
}

/// `url` with its host and port replaced by `addr`, and where it pointed.
fn through(url: &str, addr: std::net::SocketAddr) -> (String, std::net::SocketAddr) {
    let (head, rest) = url.split_once('@').unwrap();
    let (host, tail) = rest.split_once('/').unwrap();
    let target = std::net::ToSocketAddrs::to_socket_addrs(host)
        .unwrap()
        .next()
        .unwrap();
    (format!("{head}@{addr}/{tail}"), target)
}

/// Postgres goes away under traffic and comes back: every request is
/// answered meanwhile (no request waits for the database: usage goes to the
/// outbox, the budget is decided on the share held, a rate on the
/// instance's own limiter), `/readyz` says the store is degraded, and once
/// it is back every answer is in the usage records exactly once.
#[tokio::test]
async fn postgres_going_away_under_traffic_loses_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-outage");
    // Where the database is, and a proxy in front of it that can be cut.
    let (_, target) = through(db.url(), "127.0.0.1:1".parse().unwrap());
    let proxy = crate::harness::Proxy::start(target).await;
    let (url, _) = through(db.url(), proxy.addr);
    let gw = Setup::new(&[HEALTHY])
        .master()
        .postgres(&url, &dir.join("a"))
        .configure(|c| {
            c.storage.timeout_ms = Some(300);
            c.budget = Some(gateway::config::BudgetConfig {
                limits: vec![gateway::config::LimitConfig::global_daily(
                    budget::Money::from_dollars(100),
                )],
                ..gateway::config::BudgetConfig::default()
            });
        })
        .start()
        .await;
    let (_, created) = gw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "app", "rate_limit": 10_000})),
        )
        .await;
    let secret = created["key"].as_str().unwrap().to_owned();
    let mut answered = 0u64;
    for _ in 0..20 {
        assert_eq!(gw.chat_as(&secret).await.status(), 200);
        answered += 1;
    }
    proxy.cut();
    for _ in 0..50 {
        assert_eq!(gw.chat_as(&secret).await.status(), 200);
        answered += 1;
    }
    eventually(
        PROPAGATION,
        "/readyz says the store is degraded",
        || async { gw.text("/readyz").await.contains("degraded") },
    )
    .await;
    proxy.restore().await;
    eventually(PROPAGATION, "every answer is recorded once", || async {
        let (status, usage) = gw.admin(Method::GET, "/v1/usage", None).await;
        if status != 200 {
            return false;
        }
        let requests = requests_in(&usage);
        assert!(
            requests <= answered,
            "{requests} recorded for {answered} answered"
        );
        requests == answered
    })
    .await;
    eventually(PROPAGATION, "/readyz is plain ready again", || async {
        gw.text("/readyz").await == "ready"
    })
    .await;
}

/// Sends `body` to `gw` until the budget refuses it.
async fn until_refused(gw: &Gateway, body: &serde_json::Value) {
    loop {
        let r = gw.post("/v1/chat/completions", None, body).await;
        match r.status().as_u16() {
            200 => {}
            402 => return,
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    }
}

/// An instance that restarts keeps to its share: the moves of its new run
/// are never taken for those of its last one (the pool would answer them
/// with the old amounts and grant nothing), so two instances, one of them
/// restarted, together stay within the limit.
#[tokio::test]
async fn a_restarted_instance_never_spends_past_the_limit() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-restart");
    let upstream = sim::start(&[VERBOSE]).await.unwrap();
    let limit = budget::Money::from_cents(20);
    let mut a = budgeted(&db, &dir.join("a"), &upstream, limit).await;
    let b = budgeted(&db, &dir.join("b"), &upstream, limit).await;
    let mut body = crate::harness::chat("gpt-4.1");
    body["max_tokens"] = json!(200);
    for _ in 0..40 {
        assert_eq!(
            a.post("/v1/chat/completions", None, &body).await.status(),
            200
        );
    }
    assert!(a.stop().await);
    a.resume().await.unwrap();
    let both = [&a, &b, &a, &b].map(|gw| until_refused(gw, &body));
    futures_util::future::join_all(both).await;
    let (_, usage) = b.admin(Method::GET, "/v1/usage", None).await;
    let spent = usage["total_estimated_cost_micros"].as_u64().unwrap();
    assert!(
        spent <= limit.micros(),
        "spent {spent} µ$ of {}",
        limit.micros()
    );
}

/// A budget limit an operator sets through one instance holds on the
/// other: it counts what both spent today, and refuses there too.
#[tokio::test]
async fn a_budget_limit_set_through_one_instance_holds_on_the_other() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-limit");
    let upstream = sim::start(&[VERBOSE]).await.unwrap();
    let start = |name: &str| {
        Setup::new(&[VERBOSE])
            .master()
            .upstream(upstream.base_url())
            .postgres(db.url(), &dir.join(name))
            .configure(|c| {
                if let Some(a) = c.auth.as_mut() {
                    a.mode = Some(gateway::config::AuthMode::None);
                }
                c.budget = Some(gateway::config::BudgetConfig {
                    limits: vec![gateway::config::LimitConfig::global_daily(
                        budget::Money::from_dollars(100),
                    )],
                    ..gateway::config::BudgetConfig::default()
                });
            })
            .start()
    };
    let (a, b) = (start("a").await, start("b").await);
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 50,
                      "messages": [{"role": "user", "content": "hi"}]});
    for gw in [&a, &b] {
        let r = gw.post("/v1/chat/completions", None, &body).await;
        assert_eq!(r.status(), 200);
    }
    let team = json!({"scope": "model", "name": "gpt-4o-mini", "daily_usd": 0.000001});
    let (status, answer) = a
        .admin(Method::PUT, "/admin/budget/limits", Some(team))
        .await;
    assert_eq!(status, 200, "{answer}");
    eventually(PROPAGATION, "b refuses gpt-4o-mini", || async {
        let r = b.post("/v1/chat/completions", None, &body).await;
        r.status() == 402
    })
    .await;
    let (_, limits) = b.admin(Method::GET, "/admin/budget/limits", None).await;
    let model = limits["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["scope"] == "model")
        .unwrap_or_else(|| panic!("{limits}"));
    assert_eq!(model["limit_micros"], 1);
    assert!(model["spent_micros"].as_u64().unwrap() > 0, "{model}");
}

/// A response made through one instance is followed up through the other,
/// on the key that made it: the id's key is shared through Postgres.
#[tokio::test]
async fn a_response_made_through_one_instance_is_followed_up_through_the_other() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = TempDir::new("cluster-pins");
    let keys = [
        ("alpha", "sk-sim-alpha-00000000000000001", Behavior::Healthy),
        ("beta", "sk-sim-beta-000000000000000002", Behavior::Healthy),
    ];
    let upstream = sim::start(&keys).await.unwrap();
    let start = |name: &str| {
        Setup::new(&keys)
            .upstream(upstream.base_url())
            .postgres(db.url(), &dir.join(name))
            .configure(|c| c.canary.clear())
            .start()
    };
    let (a, b) = (start("a").await, start("b").await);
    let r = a
        .post(
            "/v1/responses",
            None,
            &json!({"model": "gpt-4o-mini", "input": "hi"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let key = r.headers()["x-gateway-key"].to_str().unwrap().to_owned();
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Without the pin, b's least-used choice would alternate between the
    // keys, and the other key's follow-ups would not find the response.
    for _ in 0..4 {
        let body = json!({"model": "gpt-4o-mini", "input": "more", "previous_response_id": id});
        let r = b.post("/v1/responses", None, &body).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-gateway-key"], key.as_str());
    }
}
