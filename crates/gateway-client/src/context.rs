//! Fitting a chat history into a model's context window.
//!
//! Agent histories are more than text: content may be an array of parts,
//! an assistant turn may carry tool calls (whose arguments can be long
//! JSON), reasoning models leave reasoning text beside the content, and a
//! `tool` message answers a call made by an earlier assistant turn. Tokens
//! are counted over all of it, and truncation drops whole *units*: an
//! assistant turn with tool calls goes together with the `tool` messages
//! that answer it, so no `tool` message is ever kept without its call
//! (providers refuse such a history).

use budget::{CharEstimator, TokenEstimator};
use serde_json::Value;

/// Tokens counted for an image part whose size is unknown (a high-detail
/// 1024×1024 image on `OpenAI`'s scale): errs high for small images.
const IMAGE_TOKENS: u64 = 765;

/// A message's overhead (role and separators), as `OpenAI` documents it.
const PER_MESSAGE: u64 = 4;

/// Tokens that prime the reply.
const PRIMING: u64 = 3;

/// Fields beside `content` that hold text a model reads back: reasoning
/// (`reasoning_content` from `DeepSeek`, `reasoning` from relays, `thinking`),
/// a refusal, a participant's name.
const TEXT_FIELDS: [&str; 5] = [
    "reasoning_content",
    "reasoning",
    "thinking",
    "refusal",
    "name",
];

fn text(s: &str) -> u64 {
    CharEstimator.estimate(s)
}

/// What a JSON value costs when it is sent as it is (tool definitions,
/// unknown parts): its serialized text.
fn json_cost(v: &Value) -> u64 {
    text(&v.to_string())
}

fn part_cost(part: &Value) -> u64 {
    if let Some(t) = part.get("text").and_then(Value::as_str) {
        return text(t);
    }
    match part.get("type").and_then(Value::as_str) {
        Some("image_url" | "image" | "input_image") => IMAGE_TOKENS,
        _ => json_cost(part),
    }
}

fn content_cost(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(s)) => text(s),
        Some(Value::Array(parts)) => parts.iter().map(part_cost).sum(),
        Some(Value::Null) | None => 0,
        Some(other) => json_cost(other),
    }
}

/// A tool call's name and arguments (or a legacy `function_call`).
fn call_cost(call: &Value) -> u64 {
    let f = call.get("function").unwrap_or(call);
    let name = f.get("name").and_then(Value::as_str).map_or(0, text);
    let args = match f.get("arguments") {
        Some(Value::String(s)) => text(s),
        Some(other) => json_cost(other),
        None => 0,
    };
    name + args + PER_MESSAGE
}

/// The tokens one message costs: its content (strings or parts), tool
/// calls with their arguments, reasoning and the other text fields, and
/// the per-message overhead.
pub(crate) fn message_tokens(m: &Value) -> u64 {
    let calls: u64 = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .map_or(0, |c| c.iter().map(call_cost).sum());
    let legacy = m.get("function_call").map_or(0, call_cost);
    let fields: u64 = TEXT_FIELDS
        .iter()
        .filter_map(|f| m.get(*f).and_then(Value::as_str))
        .map(text)
        .sum();
    content_cost(m.get("content")) + calls + legacy + fields + PER_MESSAGE
}

/// The input tokens of a chat body: every message, the tool definitions,
/// and the reply's priming.
pub(crate) fn chat_tokens(body: &Value) -> u64 {
    let messages: u64 = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |ms| ms.iter().map(message_tokens).sum());
    let tools = body.get("tools").map_or(0, json_cost);
    messages + tools + PRIMING
}

/// The input tokens of a Responses API body: the instructions, the input
/// (a string, or items: messages with their content, function calls with
/// their arguments, their outputs, reasoning summaries), the tools.
pub(crate) fn responses_tokens(body: &Value) -> u64 {
    let instructions = body
        .get("instructions")
        .map_or(0, |v| content_cost(Some(v)));
    let input = match body.get("input") {
        Some(Value::Array(items)) => items.iter().map(item_tokens).sum(),
        other => content_cost(other),
    };
    let tools = body.get("tools").map_or(0, json_cost);
    instructions + input + tools + PRIMING
}

/// One input item of the Responses API.
fn item_tokens(item: &Value) -> u64 {
    if let Value::String(s) = item {
        return text(s);
    }
    let extra: u64 = ["arguments", "output"]
        .iter()
        .filter_map(|f| item.get(*f))
        .map(|v| v.as_str().map_or_else(|| json_cost(v), text))
        .sum();
    let summary = item.get("summary").map_or(0, |v| content_cost(Some(v)));
    message_tokens(item) + extra + summary
}

/// The input tokens of a legacy completion: its `prompt`, a string, a list
/// of strings, or token ids (one each).
pub(crate) fn prompt_tokens(body: &Value) -> u64 {
    let one = |v: &Value| match v {
        Value::String(s) => text(s),
        Value::Array(ids) => ids.len() as u64,
        Value::Number(_) => 1,
        other => json_cost(other),
    };
    let prompt = match body.get("prompt") {
        Some(Value::Array(items)) => items.iter().map(one).sum(),
        Some(v) => one(v),
        None => 0,
    };
    prompt + PRIMING
}

fn role(m: &Value) -> Option<&str> {
    m.get("role").and_then(Value::as_str)
}

/// System and developer messages are kept whatever they cost.
fn is_instruction(m: &Value) -> bool {
    matches!(role(m), Some("system" | "developer"))
}

/// Splits the non-instruction messages into units kept or dropped
/// together: an assistant turn with tool calls and the `tool` messages
/// right after it form one unit; every other message is a unit alone.
/// Returns each unit's message indices.
fn units(messages: &[Value]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut open = false;
    for (i, m) in messages.iter().enumerate() {
        if is_instruction(m) {
            continue;
        }
        let is_tool = role(m) == Some("tool");
        match out.last_mut() {
            Some(unit) if open && is_tool => unit.push(i),
            _ => out.push(vec![i]),
        }
        if !is_tool {
            open = role(m) == Some("assistant")
                && (m.get("tool_calls").is_some_and(|c| !c.is_null())
                    || m.get("function_call").is_some());
        }
    }
    out
}

/// Keeps the instructions and the newest units that fit in `room` tokens
/// (the newest unit always, since without it there is no request); a
/// `tool` message at the start of what is kept, whose call was in a
/// dropped unit, is dropped too. Returns whether anything was dropped.
pub(crate) fn fit(messages: &mut Vec<Value>, room: u64) -> bool {
    let mut used = PRIMING
        + messages
            .iter()
            .filter(|m| is_instruction(m))
            .map(message_tokens)
            .sum::<u64>();
    let mut keep: Vec<bool> = messages.iter().map(is_instruction).collect();
    let units = units(messages);
    for (n, unit) in units.iter().rev().enumerate() {
        let cost: u64 = unit
            .iter()
            .filter_map(|&i| messages.get(i))
            .map(message_tokens)
            .sum();
        if n > 0 && used + cost > room {
            break;
        }
        used += cost;
        for &i in unit {
            if let Some(k) = keep.get_mut(i) {
                *k = true;
            }
        }
    }
    // A unit that opens with a `tool` message answers a call outside the
    // history kept (or never sent): drop it unless it is all there is.
    let kept_units: Vec<&Vec<usize>> = units
        .iter()
        .filter(|u| u.first().is_some_and(|&i| keep.get(i) == Some(&true)))
        .collect();
    if kept_units.len() > 1 {
        for unit in kept_units.iter().take(kept_units.len() - 1) {
            let orphan = unit
                .first()
                .and_then(|&i| messages.get(i))
                .is_some_and(|m| role(m) == Some("tool"));
            if orphan {
                for &i in *unit {
                    if let Some(k) = keep.get_mut(i) {
                        *k = false;
                    }
                }
            }
        }
    }
    let before = messages.len();
    let mut i = 0;
    messages.retain(|_| {
        let k = keep.get(i).copied().unwrap_or(true);
        i += 1;
        k
    });
    messages.len() != before
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn roles(ms: &[Value]) -> Vec<&str> {
        ms.iter().filter_map(role).collect()
    }

    fn agent_history(long: &str) -> Vec<Value> {
        vec![
            json!({"role": "system", "content": "you are a coding agent"}),
            json!({"role": "user", "content": [{"type": "text", "text": long}]}),
            json!({"role": "assistant", "content": null, "reasoning_content": long,
                   "tool_calls": [{"id": "c1", "type": "function",
                                   "function": {"name": "read_file", "arguments": format!("{{\"path\":\"{long}\"}}")}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": long}),
            json!({"role": "assistant", "content": "done reading"}),
            json!({"role": "user", "content": "now fix it"}),
        ]
    }

    #[test]
    fn counts_parts_tool_arguments_and_reasoning() {
        let long = "x".repeat(4_000);
        let plain = message_tokens(&json!({"role": "user", "content": "hi"}));
        assert_eq!(plain, 1 + PER_MESSAGE);
        let parts = message_tokens(&json!({"role": "user", "content": [
            {"type": "text", "text": long}, {"type": "image_url", "image_url": {"url": "data:"}}
        ]}));
        assert_eq!(parts, 1_000 + IMAGE_TOKENS + PER_MESSAGE);
        let call = message_tokens(
            &json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "run", "arguments": long}}
            ]}),
        );
        assert!(call >= 1_000, "{call}");
        let reasoning = message_tokens(
            &json!({"role": "assistant", "content": "ok", "reasoning_content": long}),
        );
        assert!(reasoning >= 1_000, "{reasoning}");
    }

    #[test]
    fn tools_and_every_message_count_in_a_body() {
        let body = json!({"model": "m", "messages": agent_history(&"y".repeat(400)),
                          "tools": [{"type": "function", "function": {"name": "read_file",
                                     "parameters": {"type": "object"}}}]});
        let without_tools = json!({"model": "m", "messages": agent_history(&"y".repeat(400))});
        assert!(chat_tokens(&body) > chat_tokens(&without_tools));
        assert!(chat_tokens(&without_tools) >= 4 * 100);
    }

    #[test]
    fn a_tool_call_and_its_answers_are_dropped_together() {
        let mut ms = agent_history(&"z".repeat(4_000));
        // Room for the instructions and the two newest turns only.
        let room = chat_tokens(&json!({"messages": [ms[0].clone(), ms[4].clone(), ms[5].clone()]}));
        assert!(fit(&mut ms, room + 10));
        assert_eq!(roles(&ms), ["system", "assistant", "user"]);
    }

    #[test]
    fn a_tool_call_is_kept_with_its_answer_when_both_fit() {
        let mut ms = agent_history("short");
        assert!(!fit(&mut ms, 100_000));
        assert_eq!(ms.len(), 6);
    }

    #[test]
    fn the_newest_unit_is_kept_even_when_it_does_not_fit() {
        let mut ms = agent_history(&"z".repeat(4_000));
        ms.truncate(4); // the history ends with the tool's answer
        fit(&mut ms, 10);
        assert_eq!(roles(&ms), ["system", "assistant", "tool"]);
    }

    #[test]
    fn a_tool_message_whose_call_is_not_there_is_dropped() {
        let mut ms = vec![
            json!({"role": "tool", "tool_call_id": "gone", "content": "old"}),
            json!({"role": "user", "content": "hi"}),
        ];
        assert!(fit(&mut ms, 100_000));
        assert_eq!(roles(&ms), ["user"]);
    }
}
