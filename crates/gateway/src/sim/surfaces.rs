//! The simulator's legacy completions and Responses API, answered as
//! `OpenAI` answers them (plain and streamed), keys behaving as for chat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::stateful::{keep, mine};
use super::{Behavior, Sim, VERBOSE_TOKENS, behavior, error, misbehave, model_down};

/// `v[k]`, or null.
fn at<'v>(v: &'v Value, k: &str) -> &'v Value {
    v.get(k).unwrap_or(&Value::Null)
}

/// `base` with `k` set to `value` (`base` is an object here).
fn with(mut base: Value, k: &str, value: Value) -> Value {
    if let Some(o) = base.as_object_mut() {
        o.insert(k.to_owned(), value);
    }
    base
}

/// What a request asks of the simulator, read the same way for both surfaces.
struct Ask {
    model: String,
    input_tokens: u64,
    /// Of the input, what the key's cache holds (a conversation's history).
    cached_tokens: u64,
    output_tokens: u64,
    stream: bool,
}

/// Reads `body`: its model, `text_chars` of input, and the output cap in `cap_field`.
fn ask(body: &Value, text_chars: usize, cap_field: &str, b: Option<Behavior>) -> Ask {
    let cap = body.get(cap_field).and_then(Value::as_u64);
    Ask {
        model: at(body, "model").as_str().unwrap_or("unknown").to_owned(),
        input_tokens: (text_chars / 4 + 8) as u64,
        cached_tokens: 0,
        output_tokens: match b {
            Some(Behavior::Verbose) => cap.unwrap_or(VERBOSE_TOKENS),
            _ => cap.map_or(8, |c| c.min(8)),
        },
        stream: at(body, "stream") == true,
    }
}

/// Characters of every string in `v`.
fn chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.iter().map(chars).sum(),
        Value::Object(o) => o.values().map(chars).sum(),
        _ => 0,
    }
}

/// The request's JSON, the key's behaviour, or the error to answer with.
fn read(
    sim: &Sim,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, Option<Behavior>), Box<Response>> {
    if let Some(r) = misbehave(sim, headers) {
        return Err(Box::new(r));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            "We could not parse the JSON body.",
        ))
    })?;
    if let Some(r) = at(&v, "model").as_str().and_then(|m| model_down(sim, m)) {
        return Err(Box::new(r));
    }
    Ok((v, behavior(sim, headers)))
}

fn sse(events: &[String]) -> Response {
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// `POST /v1/completions` (legacy).
pub(super) async fn completions(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let (req, b) = match read(&sim, &headers, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let a = ask(&req, chars(at(&req, "prompt")), "max_tokens", b);
    let text = format!(" Simulated completion from {}.", a.model);
    let usage = json!({"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens, "total_tokens": a.input_tokens + a.output_tokens});
    let choice = |text: &str, finish: Value| json!({"text": text, "index": 0, "logprobs": null, "finish_reason": finish});
    let object = |choices: Vec<Value>| json!({"id": "cmpl-sim", "object": "text_completion", "created": 1_795_322_452, "model": a.model, "choices": choices});
    if !a.stream {
        let o = with(object(vec![choice(&text, json!("stop"))]), "usage", usage);
        return axum::Json(o).into_response();
    }
    let mut events: Vec<String> = text
        .split_inclusive(' ')
        .map(|w| object(vec![choice(w, Value::Null)]).to_string())
        .collect();
    if at(at(&req, "stream_options"), "include_usage") == true {
        events.push(with(object(vec![]), "usage", usage).to_string());
    }
    events.push("[DONE]".into());
    sse(&events)
}

/// Ids of the responses the simulator made.
static NEXT_RESPONSE: AtomicU64 = AtomicU64::new(1);

/// A `response` object.
fn response_object(id: &str, a: &Ask, text: &str, status: &str, req: &Value) -> Value {
    let done = status == "completed";
    let output = if text.is_empty() && !done {
        json!([])
    } else {
        json!([message(text, status)])
    };
    let usage = done.then(|| {
        json!({
            "input_tokens": a.input_tokens,
            "input_tokens_details": {"cached_tokens": a.cached_tokens},
            "output_tokens": a.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": a.input_tokens + a.output_tokens,
        })
    });
    json!({
        "id": id, "object": "response", "created_at": 1_795_322_452, "status": status,
        "error": null, "incomplete_details": null, "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"), "model": a.model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": req.get("previous_response_id"),
        "reasoning": {"effort": null, "summary": null}, "store": true, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "truncation": "disabled", "usage": usage, "user": null, "metadata": {},
    })
}

fn message(text: &str, status: &str) -> Value {
    json!({"type": "message", "id": "msg_sim", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

/// `POST /v1/responses`.
pub(super) async fn responses(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let (req, b) = match read(&sim, &headers, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    // A previous response only its own key can read: another key's is not
    // found, as upstream.
    // The history a follow-up continues is in its key's cache: read again,
    // and reported as cached input.
    let mut history = 0;
    if let Some(previous) = at(&req, "previous_response_id").as_str() {
        match mine(&sim, &headers, previous) {
            Ok(o) => {
                let usage = at(&o.object, "usage");
                let tokens = |k: &str| at(usage, k).as_u64().unwrap_or(0);
                history = tokens("input_tokens") + tokens("output_tokens");
            }
            Err(r) => return *r,
        }
    }
    let input_chars = chars(at(&req, "input")) + chars(at(&req, "instructions"));
    let mut a = ask(&req, input_chars, "max_output_tokens", b);
    a.input_tokens += history;
    a.cached_tokens = history;
    let id = format!(
        "resp_sim{:06}",
        NEXT_RESPONSE.fetch_add(1, Ordering::Relaxed)
    );
    let text = format!("Simulated response from {}.", a.model);
    let done = response_object(&id, &a, &text, "completed", &req);
    let items = match at(&req, "input") {
        Value::String(s) => {
            json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": s}]}])
        }
        other => other.clone(),
    };
    keep(&sim, &headers, &done, items.to_string().into());
    if !a.stream {
        return axum::Json(done).into_response();
    }
    sse(&response_events(&id, &a, &text, &req))
}

/// The Responses API's event stream for one text answer.
fn response_events(id: &str, a: &Ask, text: &str, req: &Value) -> Vec<String> {
    let mut seq = 0u64;
    let mut event = |kind: &str, fields: Value| {
        let e = with(
            with(fields, "type", json!(kind)),
            "sequence_number",
            json!(seq),
        );
        seq += 1;
        e.to_string()
    };
    let part = |t: &str| json!({"type": "output_text", "text": t, "annotations": []});
    let at = json!({"item_id": "msg_sim", "output_index": 0, "content_index": 0});
    let mut events = vec![
        event(
            "response.created",
            json!({"response": response_object(id, a, "", "in_progress", req)}),
        ),
        event(
            "response.in_progress",
            json!({"response": response_object(id, a, "", "in_progress", req)}),
        ),
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": message("", "in_progress")}),
        ),
        event(
            "response.content_part.added",
            with(at.clone(), "part", part("")),
        ),
    ];
    for w in text.split_inclusive(' ') {
        events.push(event(
            "response.output_text.delta",
            with(at.clone(), "delta", json!(w)),
        ));
    }
    events.push(event(
        "response.output_text.done",
        with(at.clone(), "text", json!(text)),
    ));
    events.push(event(
        "response.content_part.done",
        with(at, "part", part(text)),
    ));
    events.push(event(
        "response.output_item.done",
        json!({"output_index": 0, "item": message(text, "completed")}),
    ));
    events.push(event(
        "response.completed",
        json!({"response": response_object(id, a, text, "completed", req)}),
    ));
    events
}
