//! Traces over OTLP: a `gateway serve` process with `[telemetry]
//! otlp_endpoint` sends each request's span, its upstream attempts as child
//! spans, to a collector stand-in that decodes what it receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use gateway::sim::{self, Behavior};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::json;

use crate::harness::{Process, SimKey, TempDir};

const KEYS: [SimKey; 2] = [
    (
        "revoked",
        "sk-sim-revoked-0000000000000003",
        Behavior::Revoked,
    ),
    (
        "healthy",
        "sk-sim-healthy-0000000000000001",
        Behavior::Healthy,
    ),
];

/// A span as the collector received it.
#[derive(Clone, Debug)]
struct Received {
    name: String,
    id: Vec<u8>,
    parent: Vec<u8>,
    attributes: HashMap<String, String>,
}

/// What the stand-in collected: the spans, and every body's bytes.
#[derive(Default)]
struct Collected {
    spans: Vec<Received>,
    raw: Vec<u8>,
}

fn text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn decode(body: &[u8]) -> Vec<Received> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let spans = request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans);
    spans
        .map(|s| Received {
            name: s.name,
            id: s.span_id,
            parent: s.parent_span_id,
            attributes: s
                .attributes
                .into_iter()
                .map(|kv| (kv.key, text(kv.value.and_then(|v| v.value).as_ref())))
                .collect(),
        })
        .collect()
}

/// An OTLP/HTTP collector on loopback: its traces URL, and what it got.
async fn collector() -> (String, Arc<(Mutex<Collected>, tokio::sync::Notify)>) {
    let got = Arc::new((Mutex::new(Collected::default()), tokio::sync::Notify::new()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let spans = decode(&body);
                let mut c = sink.0.lock().unwrap();
                c.raw.extend_from_slice(&body);
                c.spans.extend(spans);
                sink.1.notify_one();
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1/traces"), got)
}

fn config(dir: &TempDir, upstream: &str, traces: &str) -> std::path::PathBuf {
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"

[[providers]]
name = "sim"
base_url = "{upstream}"
keys = [
  {{ name = "revoked", secret = "${{K0}}" }},
  {{ name = "healthy", secret = "${{K1}}" }},
]

[telemetry]
otlp_endpoint = "{traces}"
"#
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Checks a request span and its attempts; whether it failed over from
/// the revoked key to the healthy one.
fn failed_over(c: &Collected, request: &Received) -> bool {
    let a = &request.attributes;
    assert_eq!(a["gen_ai.operation.name"], "chat", "{a:?}");
    assert_eq!(a["gen_ai.request.model"], "gpt-4o-mini");
    assert_eq!(a["gateway.key"], "healthy");
    assert_eq!(a["http.response.status_code"], "200");
    let input: u64 = a["gen_ai.usage.input_tokens"].parse().unwrap();
    assert!(input > 0, "{a:?}");
    assert!(a.contains_key("gateway.cost_micros"), "{a:?}");
    let attempts: Vec<&Received> = c.spans.iter().filter(|s| s.parent == request.id).collect();
    assert_eq!(
        attempts.len().to_string(),
        a["gateway.attempts"],
        "{attempts:?}"
    );
    let last = attempts.last().unwrap();
    assert_eq!(last.attributes["gateway.key"], "healthy");
    assert_eq!(last.attributes["gen_ai.provider.name"], "sim");
    let [first, _] = attempts.as_slice() else {
        return false;
    };
    assert_eq!(first.attributes["gateway.key"], "revoked");
    assert_eq!(first.attributes["http.response.status_code"], "401");
    assert!(first.attributes.contains_key("error.type"), "{first:?}");
    true
}

/// Three chat requests, the first of which meets the revoked key and fails
/// over, and a stream: each is a `chat gpt-4o-mini` span with the `GenAI` attributes, its
/// attempts child spans naming the key and the outcome; no secret is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_a_span_and_each_attempt_a_child_span() {
    let dir = TempDir::new("traces");
    let upstream = sim::start(&KEYS).await.unwrap();
    let (traces, got) = collector().await;
    let gw = Process::serve(
        &config(&dir, &upstream.base_url(), &traces),
        &[
            ("K0", KEYS[0].1),
            ("K1", KEYS[1].1),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A stream: its span lasts until the stream ends, with its final usage.
    let streamed = http
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4.1", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(streamed.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    let requests = |c: &Collected| {
        c.spans
            .iter()
            .filter(|s| s.name.starts_with("chat "))
            .count()
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        while requests(&got.0.lock().unwrap()) < 4 {
            got.1.notified().await;
        }
    })
    .await
    .expect("four request spans within 30 s");
    let c = got.0.lock().unwrap();
    let raw = String::from_utf8_lossy(&c.raw);
    assert!(
        !raw.contains(KEYS[0].1) && !raw.contains(KEYS[1].1),
        "no secret in traces"
    );
    let failed_over = c
        .spans
        .iter()
        .filter(|s| s.name == "chat gpt-4o-mini")
        .filter(|request| failed_over(&c, request))
        .count();
    assert_eq!(failed_over, 1, "the revoked key is met once, then disabled");
    let stream = c.spans.iter().find(|s| s.name == "chat gpt-4.1").unwrap();
    let output: u64 = stream.attributes["gen_ai.usage.output_tokens"]
        .parse()
        .unwrap();
    assert!(
        output > 0,
        "the stream's span has its final usage: {stream:?}"
    );
}
