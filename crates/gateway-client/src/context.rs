//! Counting a request's input tokens, and fitting a chat history into a
//! model's context window, read from the body where it lies.
//!
//! Agent histories are more than text: content may be an array of parts,
//! an assistant turn may carry tool calls (whose arguments can be long
//! JSON), reasoning models leave reasoning text beside the content, and a
//! `tool` message answers a call made by an earlier assistant turn. Tokens
//! are counted over all of it, and truncation drops whole *units*: an
//! assistant turn with tool calls goes together with the `tool` messages
//! that answer it, so no `tool` message is ever kept without its call
//! (providers refuse such a history). Strings are counted piece by piece
//! ([`wire::Raw::pieces`]), so nothing is unescaped or copied.

use budget::CharCount;
use wire::{Kind, Piece, Raw};

/// Tokens counted for an image part whose size is unknown (a high-detail
/// 1024×1024 image on `OpenAI`'s scale): errs high for small images.
const IMAGE_TOKENS: u64 = 765;

/// A message's overhead (role and separators), as `OpenAI` documents it.
const PER_MESSAGE: u64 = 4;

/// Tokens that prime the reply.
pub(crate) const PRIMING: u64 = 3;

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

/// The tokens of a string value (`CharEstimator`'s count of its text).
/// An ASCII text is counted by its length alone (which the body's check
/// noted for a long one).
pub(crate) fn text(s: Raw<'_>) -> u64 {
    let mut count = CharCount::default();
    if let Some(len) = s.ascii_len() {
        count.add_latin(len as u64);
        return count.tokens();
    }
    for piece in s.pieces() {
        match piece {
            Piece::Text(t) => count.add_str(t),
            Piece::Char(c) => count.add_char(c),
        }
    }
    count.tokens()
}

/// What a JSON value costs when it is sent as it is (tool definitions,
/// unknown parts): its text as sent.
fn json_cost(v: Raw<'_>) -> u64 {
    let mut count = CharCount::default();
    count.add_str(v.text());
    count.tokens()
}

/// A string's tokens, or the value's as sent.
fn string_or_json(v: Raw<'_>) -> u64 {
    if v.kind() == Kind::String {
        text(v)
    } else {
        json_cost(v)
    }
}

fn str_of<'a>(v: Option<Raw<'a>>) -> Option<Raw<'a>> {
    v.filter(|v| v.kind() == Kind::String)
}

fn part_cost(part: Raw<'_>) -> u64 {
    if let Some(t) = str_of(part.get("text")) {
        return text(t);
    }
    let kind = str_of(part.get("type")).and_then(|t| t.as_str());
    match kind.as_deref() {
        Some("image_url" | "image" | "input_image") => IMAGE_TOKENS,
        _ => json_cost(part),
    }
}

fn content_cost(content: Option<Raw<'_>>) -> u64 {
    match content.map(|c| (c, c.kind())) {
        Some((s, Kind::String)) => text(s),
        Some((parts, Kind::Array)) => parts.items().map(part_cost).sum(),
        Some((_, Kind::Null)) | None => 0,
        Some((other, _)) => json_cost(other),
    }
}

/// A tool call's name and arguments (or a legacy `function_call`).
fn call_cost(call: Raw<'_>) -> u64 {
    let f = call.get("function").unwrap_or(call);
    let mut tokens = PER_MESSAGE;
    let (mut name, mut args) = (0, 0);
    // One pass over the function's members (a repeated name counts once,
    // its last value, as a parse into a map keeps).
    for (k, v) in f.members() {
        match k.name().as_ref() {
            "name" => name = str_of(Some(v)).map_or(0, text),
            "arguments" => args = string_or_json(v),
            _ => {}
        }
    }
    tokens += name + args;
    tokens
}

/// The tokens one message costs: its content (strings or parts), tool
/// calls with their arguments, reasoning and the other text fields, and
/// the per-message overhead. One pass over its members (a repeated name
/// counts each time it is sent).
pub(crate) fn message_tokens(m: Raw<'_>) -> u64 {
    let mut tokens = PER_MESSAGE;
    for (k, v) in m.members() {
        tokens += match k.name().as_ref() {
            "content" => content_cost(Some(v)),
            "tool_calls" => v.items().map(call_cost).sum(),
            "function_call" => call_cost(v),
            name if TEXT_FIELDS.contains(&name) && v.kind() == Kind::String => text(v),
            _ => 0,
        };
    }
    tokens
}

/// The input tokens of a chat body: every message, the tool definitions,
/// and the reply's priming.
pub(crate) fn chat_tokens(body: Raw<'_>) -> u64 {
    let messages: u64 = body
        .get("messages")
        .map_or(0, |ms| ms.items().map(message_tokens).sum());
    let tools = body.get("tools").map_or(0, json_cost);
    messages + tools + PRIMING
}

/// The input tokens of a Responses API body: the instructions, the input
/// (a string, or items: messages with their content, function calls with
/// their arguments, their outputs, reasoning summaries), the tools.
pub(crate) fn responses_tokens(body: Raw<'_>) -> u64 {
    let instructions = content_cost(body.get("instructions"));
    let input = match body.get("input") {
        Some(items) if items.kind() == Kind::Array => items.items().map(item_tokens).sum(),
        other => content_cost(other),
    };
    let tools = body.get("tools").map_or(0, json_cost);
    instructions + input + tools + PRIMING
}

/// One input item of the Responses API.
fn item_tokens(item: Raw<'_>) -> u64 {
    if item.kind() == Kind::String {
        return text(item);
    }
    let extra: u64 = ["arguments", "output"]
        .iter()
        .filter_map(|f| item.get(f))
        .map(string_or_json)
        .sum();
    let summary = content_cost(item.get("summary"));
    message_tokens(item) + extra + summary
}

/// The input tokens of a legacy completion: its `prompt`, a string, a list
/// of strings, or token ids (one each).
pub(crate) fn prompt_tokens(body: Raw<'_>) -> u64 {
    let one = |v: Raw<'_>| match v.kind() {
        Kind::String => text(v),
        Kind::Array => v.items().count() as u64,
        Kind::Number => 1,
        _ => json_cost(v),
    };
    let prompt = match body.get("prompt") {
        Some(items) if items.kind() == Kind::Array => items.items().map(one).sum(),
        Some(v) => one(v),
        None => 0,
    };
    prompt + PRIMING
}

/// The input tokens of an embeddings body: each input (a string, a list
/// of strings, or token ids) with the per-message overhead.
pub(crate) fn embedding_tokens(body: Raw<'_>) -> u64 {
    let one = |v: Raw<'_>| {
        PER_MESSAGE
            + match v.kind() {
                Kind::String => text(v),
                Kind::Array => v.items().count() as u64,
                Kind::Number => 1,
                _ => 0,
            }
    };
    let inputs: u64 = match body.get("input") {
        Some(items) if items.kind() == Kind::Array && str_of(items.items().next()).is_some() => {
            items.items().map(one).sum()
        }
        Some(v) => one(v),
        None => 0,
    };
    inputs + PRIMING
}

fn role(m: Raw<'_>) -> Option<std::borrow::Cow<'_, str>> {
    str_of(m.get("role")).and_then(|r| r.as_str())
}

/// System and developer messages are kept whatever they cost.
fn is_instruction(m: Raw<'_>) -> bool {
    matches!(role(m).as_deref(), Some("system" | "developer"))
}

/// Splits the non-instruction messages into units kept or dropped
/// together: an assistant turn with tool calls and the `tool` messages
/// right after it form one unit; every other message is a unit alone.
/// Returns each unit's message indices.
fn units(messages: &[Raw<'_>]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut open = false;
    for (i, &m) in messages.iter().enumerate() {
        if is_instruction(m) {
            continue;
        }
        let is_tool = role(m).as_deref() == Some("tool");
        match out.last_mut() {
            Some(unit) if open && is_tool => unit.push(i),
            _ => out.push(vec![i]),
        }
        if !is_tool {
            open = role(m).as_deref() == Some("assistant")
                && (m.get("tool_calls").is_some_and(|c| !c.is_null())
                    || m.get("function_call").is_some());
        }
    }
    out
}

/// Keeps the instructions and the newest units that fit in `room` tokens
/// (the newest unit always, since without it there is no request); a
/// `tool` message at the start of what is kept, whose call was in a
/// dropped unit, is dropped too. Returns which messages to keep, or
/// `None` when all of them are.
pub(crate) fn fit(messages: &[Raw<'_>], room: u64) -> Option<Vec<bool>> {
    let mut used = PRIMING
        + messages
            .iter()
            .filter(|m| is_instruction(**m))
            .map(|m| message_tokens(*m))
            .sum::<u64>();
    let mut keep: Vec<bool> = messages.iter().map(|m| is_instruction(*m)).collect();
    let units = units(messages);
    for (n, unit) in units.iter().rev().enumerate() {
        let cost: u64 = unit
            .iter()
            .filter_map(|&i| messages.get(i))
            .map(|m| message_tokens(*m))
            .sum();
        if n > 0 && used + cost > room {
            break;
        }
        used += cost;
        set(&mut keep, unit, true);
    }
    drop_orphans(messages, &units, &mut keep);
    (!keep.iter().all(|k| *k)).then_some(keep)
}

fn set(keep: &mut [bool], unit: &[usize], to: bool) {
    for &i in unit {
        if let Some(k) = keep.get_mut(i) {
            *k = to;
        }
    }
}

/// A unit that opens with a `tool` message answers a call outside the
/// history kept (or never sent): dropped unless it is all there is.
fn drop_orphans(messages: &[Raw<'_>], units: &[Vec<usize>], keep: &mut [bool]) {
    let kept_units: Vec<&Vec<usize>> = units
        .iter()
        .filter(|u| u.first().is_some_and(|&i| keep.get(i) == Some(&true)))
        .collect();
    if kept_units.len() < 2 {
        return;
    }
    for unit in kept_units.iter().take(kept_units.len() - 1) {
        let orphan = unit
            .first()
            .and_then(|&i| messages.get(i))
            .is_some_and(|m| role(*m).as_deref() == Some("tool"));
        if orphan {
            set(keep, unit, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use wire::JsonBody;

    use super::*;

    fn parsed(v: &Value) -> JsonBody {
        JsonBody::parse(serde_json::to_vec(&json!({ "v": v })).unwrap_or_default())
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// Reads `v` where it lies.
    fn with<T>(v: &Value, f: impl FnOnce(Raw<'_>) -> T) -> T {
        let body = parsed(v);
        f(body.get("v").unwrap_or_else(|| unreachable!()))
    }

    fn messages_of(ms: &[Value], f: impl FnOnce(&[Raw<'_>]) -> Option<Vec<bool>>) -> Vec<String> {
        with(&Value::from(ms.to_vec()), |raw| {
            let items: Vec<Raw<'_>> = raw.items().collect();
            let keep = f(&items).unwrap_or_else(|| vec![true; ms.len()]);
            ms.iter()
                .zip(keep)
                .filter(|(_, k)| *k)
                .filter_map(|(m, _)| m["role"].as_str().map(str::to_owned))
                .collect()
        })
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
        let plain = with(&json!({"role": "user", "content": "hi"}), message_tokens);
        assert_eq!(plain, 1 + PER_MESSAGE);
        let parts = with(
            &json!({"role": "user", "content": [
                {"type": "text", "text": long}, {"type": "image_url", "image_url": {"url": "data:"}}
            ]}),
            message_tokens,
        );
        assert_eq!(parts, 1_000 + IMAGE_TOKENS + PER_MESSAGE);
        let call = with(
            &json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "run", "arguments": long}}
            ]}),
            message_tokens,
        );
        assert!(call >= 1_000, "{call}");
        let reasoning = with(
            &json!({"role": "assistant", "content": "ok", "reasoning_content": long}),
            message_tokens,
        );
        assert!(reasoning >= 1_000, "{reasoning}");
    }

    #[test]
    fn escapes_count_as_the_characters_they_stand_for() {
        // "é\n你" sent escaped: two Latin characters and one CJK.
        let body = JsonBody::parse(&br#"{"v": "\u00e9\n\u4f60"}"#[..])
            .unwrap_or_else(|e| unreachable!("{e}"));
        let v = body.get("v").unwrap_or_else(|| unreachable!());
        assert_eq!(text(v), 1 + 1);
        let plain = with(&json!("é\n你"), text);
        assert_eq!(text(v), plain);
    }

    #[test]
    fn tools_and_every_message_count_in_a_body() {
        let body = json!({"model": "m", "messages": agent_history(&"y".repeat(400)),
                          "tools": [{"type": "function", "function": {"name": "read_file",
                                     "parameters": {"type": "object"}}}]});
        let without_tools = json!({"model": "m", "messages": agent_history(&"y".repeat(400))});
        let (with_tools, without) = (with(&body, chat_tokens), with(&without_tools, chat_tokens));
        assert!(with_tools > without);
        assert!(without >= 4 * 100);
    }

    #[test]
    fn a_tool_call_and_its_answers_are_dropped_together() {
        let ms = agent_history(&"z".repeat(4_000));
        // Room for the instructions and the two newest turns only.
        let room = with(
            &json!({"messages": [ms[0].clone(), ms[4].clone(), ms[5].clone()]}),
            chat_tokens,
        );
        let kept = messages_of(&ms, |m| fit(m, room + 10));
        assert_eq!(kept, ["system", "assistant", "user"]);
    }

    #[test]
    fn a_tool_call_is_kept_with_its_answer_when_both_fit() {
        let ms = agent_history("short");
        assert_eq!(messages_of(&ms, |m| fit(m, 100_000)).len(), 6);
        assert!(
            with(&Value::from(ms), |raw| fit(
                &raw.items().collect::<Vec<_>>(),
                100_000
            ))
            .is_none()
        );
    }

    #[test]
    fn the_newest_unit_is_kept_even_when_it_does_not_fit() {
        let mut ms = agent_history(&"z".repeat(4_000));
        ms.truncate(4); // the history ends with the tool's answer
        assert_eq!(
            messages_of(&ms, |m| fit(m, 10)),
            ["system", "assistant", "tool"]
        );
    }

    #[test]
    fn a_tool_message_whose_call_is_not_there_is_dropped() {
        let ms = vec![
            json!({"role": "tool", "tool_call_id": "gone", "content": "old"}),
            json!({"role": "user", "content": "hi"}),
        ];
        assert_eq!(messages_of(&ms, |m| fit(m, 100_000)), ["user"]);
    }
}
