//! Prompt-cache affinity end to end: conversations through the gateway over
//! the simulated upstream, whose keys each keep a prompt cache. With
//! affinity (the default) a conversation stays on its key and every later
//! turn reads its history from that key's cache; without it the pool
//! spreads the turns and the caches miss.

use std::collections::{HashMap, HashSet};

use gateway::sim::Behavior;
use serde_json::{Value, json};

use reqwest::Method;

use crate::harness::{Gateway, Setup, SimKey};

const KEYS: [SimKey; 4] = [
    ("a1", "sk-affinity-a1-000000000001", Behavior::Healthy),
    ("a2", "sk-affinity-a2-000000000002", Behavior::Healthy),
    ("a3", "sk-affinity-a3-000000000003", Behavior::Healthy),
    ("a4", "sk-affinity-a4-000000000004", Behavior::Healthy),
];

/// What a run of conversations came to: the keys each conversation's turns
/// used, and the input tokens (all, cached) of the turns after the first.
struct Run {
    keys: HashMap<usize, Vec<String>>,
    input: u64,
    cached: u64,
}

/// `conversations` conversations of `turns` turns each, taking turns.
async fn converse(gw: &Gateway, conversations: usize, turns: usize) -> Run {
    let mut histories: Vec<Vec<Value>> = (0..conversations)
        .map(|c| {
            vec![
                json!({"role": "system", "content": "You are a careful assistant. ".repeat(20)}),
                json!({"role": "user", "content": format!("Conversation {c}: plan the work.")}),
            ]
        })
        .collect();
    let mut run = Run {
        keys: HashMap::new(),
        input: 0,
        cached: 0,
    };
    for turn in 0..turns {
        for (c, history) in histories.iter_mut().enumerate() {
            let r = gw
                .http
                .post(format!("{}/v1/chat/completions", gw.base))
                .json(&json!({"model": "gpt-4o-mini", "messages": history}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let key = r.headers()["x-gateway-key"].to_str().unwrap().to_owned();
            run.keys.entry(c).or_default().push(key);
            let answer: Value = r.json().await.unwrap();
            if turn > 0 {
                run.input += answer["usage"]["prompt_tokens"].as_u64().unwrap();
                run.cached += answer["usage"]["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap();
            }
            history.push(answer["choices"][0]["message"].clone());
            history.push(json!({"role": "user", "content": format!("Turn {turn}: go on.")}));
        }
    }
    run
}

/// What the gateway reports of the cache after `requests` requests whose
/// later turns read `cached` tokens from it: the usage report's totals, the
/// dashboard's keys, the metrics.
async fn reported(gw: &Gateway, cached: u64, requests: u64) {
    let (status, usage) = gw.call(Method::GET, "/v1/usage", None, None).await;
    assert_eq!(status, 200, "{usage}");
    let total = usage["total_cached_tokens"].as_u64().unwrap();
    assert!(total >= cached, "{usage}");
    let saved = usage["total_cache_saved_micros"].as_u64().unwrap();
    let lines: u64 = usage["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cache_saved_micros"].as_u64().unwrap())
        .sum();
    // gpt-4o-mini: $0.15 a million input tokens, $0.075 cached.
    assert_eq!(saved, lines);
    assert_eq!(saved, total * 75_000 / 1_000_000, "{usage}");
    let share = usage["cached_share"].as_f64().unwrap();
    assert!(share > 0.5 && share < 1.0, "{usage}");

    let (_, board) = gw.call(Method::GET, "/dashboard.json", None, None).await;
    let keys = board["keys"].as_array().unwrap();
    let by_key: u64 = keys
        .iter()
        .map(|k| k["cached_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(by_key, total, "{board}");
    let saved_by_key: u64 = keys
        .iter()
        .map(|k| k["cache_saved_micros"].as_u64().unwrap())
        .sum();
    // Each request's saving is rounded down on its own.
    assert!(
        saved_by_key <= saved && saved - saved_by_key < requests,
        "{board}"
    );

    let metrics = gw
        .http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("gateway_cached_tokens_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, total, "{metrics}");
    assert!(metrics.contains("gateway_cache_saved_micros_total{"));
}

#[tokio::test]
async fn a_conversation_stays_on_its_key_and_reads_its_history_from_the_cache() {
    let gw = Setup::new(&KEYS).start().await;
    gw.sim().set_prompt_cache(true);
    let on = converse(&gw, 6, 4).await;
    for (c, keys) in &on.keys {
        let distinct: HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), 1, "conversation {c} moved: {keys:?}");
    }
    let used: HashSet<&String> = on.keys.values().flatten().collect();
    assert!(used.len() > 1, "the conversations share the keys: {used:?}");
    // Every later turn reads all but its newest two messages from the cache.
    assert!(
        on.cached * 10 >= on.input * 7,
        "{} of {}",
        on.cached,
        on.input
    );
    reported(&gw, on.cached, 6 * 4).await;

    let off = Setup::new(&KEYS)
        .configure(|c| c.routing.cache_affinity_secs = 0)
        .start()
        .await;
    off.sim().set_prompt_cache(true);
    let spread = converse(&off, 6, 4).await;
    let moved = spread
        .keys
        .values()
        .filter(|keys| keys.iter().collect::<HashSet<_>>().len() > 1)
        .count();
    assert!(moved > 0, "without affinity the pool spreads the turns");
    assert!(
        spread.cached < on.cached,
        "cached without affinity {} vs with {}",
        spread.cached,
        on.cached
    );
}
