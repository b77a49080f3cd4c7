//! The OpenAI surfaces beside chat: legacy completions and the Responses
//! API, plain and streamed, through the pool with failover, usage and cost.

use serde_json::{Value, json};

use crate::harness::{HEALTHY, REVOKED, Setup, error_code};

/// The events of a server-sent stream, split at blank lines.
fn events(text: &str) -> Vec<&str> {
    text.split("\n\n").filter(|e| !e.is_empty()).collect()
}

async fn usage_row(gw: &crate::harness::Gateway) -> Value {
    let usage = gw.json("/v1/usage").await;
    usage["usage"][0].clone()
}

#[tokio::test]
async fn a_legacy_completion_is_served_plain_and_streamed_with_its_usage() {
    let gw = Setup::new(&[REVOKED, HEALTHY]).start().await;
    let body = json!({"model": "gpt-4o-mini", "prompt": "Say this is a test", "max_tokens": 7});
    let r = gw.post("/v1/completions", None, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-gateway-key"],
        "healthy",
        "failed over from the revoked key"
    );
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["object"], "text_completion");
    assert!(
        answer["choices"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Simulated")
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = gw.post("/v1/completions", None, &streamed).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events = events(&text);
    assert!(events[0].starts_with("data: {"), "{text}");
    assert!(
        events[0].contains("\"object\":\"text_completion\""),
        "{text}"
    );
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    assert!(
        text.contains("\"usage\""),
        "the gateway asked for the usage: {text}"
    );
    let row = usage_row(&gw).await;
    assert_eq!(row["requests"], 2, "{row}");
    assert_eq!(
        row["completion_tokens"], 14,
        "7 and 7, as the upstream said: {row}"
    );
}

#[tokio::test]
async fn a_response_is_served_plain_with_its_usage_and_its_output_cap() {
    // The demo's budget: a request without an output cap is reserved for
    // the model's most, and told that cap.
    let gw = Setup::new(&[HEALTHY])
        .configure(|c| {
            c.budget = gateway::demo_config("http://127.0.0.1:9/v1", "127.0.0.1:0").budget;
        })
        .start()
        .await;
    let body = json!({"model": "gpt-4.1", "instructions": "Be brief.", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "What is a key pool?"}]}
    ]});
    let r = gw.post("/v1/responses", None, &body).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-gateway-cost-usd"));
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    assert!(answer["id"].as_str().unwrap().starts_with("resp_"));
    // No cap asked for: the upstream was given the one reserved for, in the
    // Responses API's own field.
    assert!(answer["max_output_tokens"].as_u64().is_some(), "{answer}");
    let row = usage_row(&gw).await;
    assert_eq!(row["requests"], 1, "{row}");
    assert_eq!(
        row["prompt_tokens"], answer["usage"]["input_tokens"],
        "usage from input_tokens: {row}"
    );
    assert_eq!(row["completion_tokens"], answer["usage"]["output_tokens"]);
}

#[tokio::test]
async fn a_streamed_response_keeps_its_typed_events_and_ends_without_done() {
    let gw = Setup::new(&[HEALTHY]).start().await;
    let body =
        json!({"model": "gpt-4.1", "input": "hello", "stream": true, "max_output_tokens": 5});
    let r = gw.post("/v1/responses", None, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let events = events(&text);
    assert!(
        events[0].starts_with("event: response.created\ndata: {"),
        "{text}"
    );
    assert!(
        text.contains("event: response.output_text.delta\n"),
        "{text}"
    );
    assert!(
        events
            .last()
            .unwrap()
            .starts_with("event: response.completed\n"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"), "the Responses API sends none");
    let row = usage_row(&gw).await;
    assert_eq!(row["requests"], 1, "{row}");
    assert_eq!(
        row["completion_tokens"], 5,
        "from response.completed: {row}"
    );
}

#[tokio::test]
async fn bad_bodies_on_the_new_surfaces_are_400s_and_no_key_pays() {
    let gw = Setup::new(&[HEALTHY]).start().await;
    for path in ["/v1/completions", "/v1/responses"] {
        let r = gw
            .http
            .post(gw.url(path))
            .header("content-type", "application/json")
            .body("{\"model\": \"gpt-4.1\", \"input\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "invalid_json", "{path}: {body}");
        let r = gw.post(path, None, &json!({"input": "no model"})).await;
        assert_eq!(r.status(), 400, "{path}");
    }
    assert!(gw.no_key_leased("simulated"));
}

/// What `usage` costs at gpt-4o-mini's list prices ($0.15 input, $0.075
/// cached input, $0.60 output a million tokens), in micro-dollars, rounded
/// up as the gateway rounds.
fn mini_cost(usage: &Value) -> u64 {
    let n = |v: &Value| v.as_u64().unwrap();
    let input = n(&usage["input_tokens"]);
    let cached = n(&usage["input_tokens_details"]["cached_tokens"]);
    let output = n(&usage["output_tokens"]);
    ((input - cached) * 150_000 + cached * 75_000 + output * 600_000).div_ceil(1_000_000)
}

#[tokio::test]
async fn a_conversation_that_hits_the_cache_is_billed_at_the_cached_rate() {
    let gw = Setup::new(&[HEALTHY]).start().await;
    let history = "An agent's long history of tool calls and their results. ".repeat(400);
    let first = json!({"model": "gpt-4o-mini", "input": history, "max_output_tokens": 8});
    let r = gw.post("/v1/responses", None, &first).await;
    let first: Value = r.json().await.unwrap();
    let body = json!({"model": "gpt-4o-mini", "input": "and now?",
                      "previous_response_id": first["id"], "max_output_tokens": 8});
    let r = gw.post("/v1/responses", None, &body).await;
    assert_eq!(r.status(), 200);
    let cost = r.headers()["x-gateway-cost-usd"]
        .to_str()
        .unwrap()
        .to_owned();
    let follow: Value = r.json().await.unwrap();
    let cached = follow["usage"]["input_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached > 5_000,
        "the history was read from the cache: {follow}"
    );
    let expected = mini_cost(&follow["usage"]);
    let full_rate = follow["usage"]["input_tokens"].as_u64().unwrap() * 150_000 / 1_000_000;
    assert!(
        expected > 0 && expected < full_rate,
        "{expected} µ$ vs {full_rate} µ$ uncached"
    );
    assert_eq!(cost, budget::Money::from_micros(expected).decimal());
    let row = usage_row(&gw).await;
    assert_eq!(row["cached_tokens"], cached, "{row}");
    assert_eq!(
        row["estimated_cost_micros"],
        mini_cost(&first["usage"]) + expected,
        "both turns booked at their rates: {row}"
    );
}

#[tokio::test]
async fn an_oversized_body_is_a_413_on_every_surface_and_no_key_pays() {
    let gw = Setup::new(&[HEALTHY])
        .configure(|c| c.server.body_limit_bytes = 4096)
        .start()
        .await;
    let big = "x".repeat(8192);
    for (path, body) in [
        ("/v1/responses", json!({"model": "gpt-4.1", "input": big})),
        (
            "/v1/completions",
            json!({"model": "gpt-4.1", "prompt": big}),
        ),
        (
            "/v1/moderations",
            json!({"model": "omni-moderation-latest", "input": big}),
        ),
    ] {
        let r = gw.post(path, None, &body).await;
        assert_eq!(r.status(), 413, "{path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(error_code(&e), "request_too_large", "{path}: {e}");
    }
    assert!(gw.no_key_leased("simulated"));
}
