//! Reading a 200 KB agent history: checking it, reading what the gateway
//! needs and splicing its edits in, against `serde_json`'s parse into a
//! tree and serialisation back (what the gateway did before).
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;
use wire::{JsonBody, string};

/// An agent's history of about `kb` KB: turns of text, tool calls with
/// JSON arguments, and tool results.
fn agent_history(kb: usize) -> Vec<u8> {
    let mut messages =
        vec![json!({"role": "system", "content": "You are a coding agent. ".repeat(40)})];
    let mut i = 0;
    while serde_json::to_vec(&messages).map_or(0, |v| v.len()) < kb * 1024 {
        messages.push(json!({"role": "user", "content": format!("Step {i}: fix the failing test in src/lib.rs, line {i}. ").repeat(6)}));
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_{i}"), "type": "function",
            "function": {"name": "read_file", "arguments": json!({"path": format!("src/m{i}.rs"), "lines": [1, 400]}).to_string()}
        }]}));
        messages.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": "fn main() {\n    println!(\"hello\\tworld\");\n}\n".repeat(12)}));
        i += 1;
    }
    serde_json::to_vec(&json!({"model": "gpt-4.1", "stream": true, "messages": messages, "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]}))
        .unwrap_or_default()
}

fn read(c: &mut Criterion) {
    let body = bytes::Bytes::from(agent_history(200));
    c.bench_function("200 KB: check, read, splice (wire)", |b| {
        b.iter(|| {
            let mut parsed = JsonBody::parse(body.clone()).ok()?;
            let model = parsed.get("model")?.as_str()?.len();
            let turns = parsed.get("messages")?.items().count();
            parsed.set("model", string("gpt-4.1-2025-04-14"));
            parsed.set_in("stream_options", "include_usage", "true");
            Some(black_box((model, turns, parsed.to_bytes())))
        });
    });
    let parsed = JsonBody::parse(body.clone()).unwrap_or_else(|_| unreachable!());
    c.bench_function("200 KB: every message's members and text lengths", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for m in parsed.get("messages")?.items() {
                for (k, v) in m.members() {
                    if k.is("content") {
                        n += v.ascii_len().unwrap_or(1);
                    } else if k.is("tool_calls") {
                        for call in v.items() {
                            let f = call.get("function")?;
                            n += f.get("name")?.ascii_len().unwrap_or(1);
                            n += f.get("arguments")?.ascii_len().unwrap_or(1);
                        }
                    }
                }
            }
            Some(black_box(n))
        });
    });
    c.bench_function("200 KB: check only", |b| {
        b.iter(|| black_box(JsonBody::parse(body.clone()).is_ok()));
    });
    c.bench_function(
        "200 KB: parse to a tree, edit, serialise (serde_json)",
        |b| {
            b.iter(|| {
                let mut v: Value = serde_json::from_slice(&body).ok()?;
                let turns = v.get("messages")?.as_array()?.len();
                let o = v.as_object_mut()?;
                o.insert("model".into(), Value::from("gpt-4.1-2025-04-14"));
                o.insert("stream_options".into(), json!({"include_usage": true}));
                Some(black_box((turns, serde_json::to_vec(&v).ok()?)))
            });
        },
    );
}

criterion_group!(benches, read);
criterion_main!(benches);
