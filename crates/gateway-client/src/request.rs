//! Requests, their context, and responses with metadata.

use std::sync::Arc;
use std::time::Duration;

use budget::{Degradation, Money};
use keypool_core::Usage;
use serde::Serialize;

use crate::error::ClientError;

/// An OpenAI-compatible request body (chat completion or embeddings), kept as
/// JSON so that every field the caller sets reaches the upstream unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiRequest {
    body: Arc<serde_json::Value>,
}

impl ApiRequest {
    /// Wraps a JSON body; it must be an object with a string `model`.
    pub fn from_json(body: serde_json::Value) -> Result<Self, ClientError> {
        let ok = body.as_object().is_some_and(|o| {
            o.get("model")
                .is_some_and(|m| m.as_str().is_some_and(|m| !m.is_empty()))
        });
        if !ok {
            return Err(ClientError::InvalidRequest(
                "the body must be a JSON object with a non-empty string \"model\"".into(),
            ));
        }
        Ok(ApiRequest {
            body: Arc::new(body),
        })
    }

    /// A chat completion with `(role, content)` messages.
    pub fn chat(model: &str, messages: &[(&str, &str)]) -> Self {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
            .collect();
        ApiRequest {
            body: Arc::new(serde_json::json!({"model": model, "messages": messages})),
        }
    }

    /// The model asked for.
    pub fn model(&self) -> &str {
        self.body
            .get("model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    }

    pub(crate) fn set_model(&mut self, model: &str) {
        if self.model() == model {
            return;
        }
        if let Some(o) = Arc::make_mut(&mut self.body).as_object_mut() {
            o.insert("model".into(), serde_json::Value::String(model.to_owned()));
        }
    }

    /// The most output tokens asked for (`max_completion_tokens`,
    /// `max_tokens`, or the Responses API's `max_output_tokens`).
    pub fn max_output_tokens(&self) -> Option<u64> {
        ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| self.body.get(*k).and_then(serde_json::Value::as_u64))
    }

    /// Caps the output at `tokens`: in the cap field the request uses, else
    /// in `default_field` (the endpoint's).
    pub(crate) fn set_max_output(&mut self, tokens: u64, default_field: &str) {
        if let Some(o) = Arc::make_mut(&mut self.body).as_object_mut() {
            let field = ["max_completion_tokens", "max_output_tokens", "max_tokens"]
                .into_iter()
                .find(|f| o.contains_key(*f))
                .unwrap_or(default_field);
            o.insert(field.into(), serde_json::Value::from(tokens));
        }
    }

    /// The texts a tokenizer would count: message contents (strings or text
    /// parts) for chat, `input` for embeddings.
    pub fn texts(&self) -> Vec<&str> {
        let mut out = Vec::new();
        if let Some(messages) = self
            .body
            .get("messages")
            .and_then(serde_json::Value::as_array)
        {
            for m in messages {
                match m.get("content") {
                    Some(serde_json::Value::String(s)) => out.push(s.as_str()),
                    Some(serde_json::Value::Array(parts)) => {
                        out.extend(
                            parts
                                .iter()
                                .filter_map(|p| p.get("text").and_then(serde_json::Value::as_str)),
                        );
                    }
                    _ => {}
                }
            }
        }
        match self.body.get("input") {
            Some(serde_json::Value::String(s)) => out.push(s.as_str()),
            Some(serde_json::Value::Array(items)) => {
                out.extend(items.iter().filter_map(serde_json::Value::as_str));
            }
            _ => {}
        }
        out
    }

    /// The messages array, if any.
    pub(crate) fn messages_mut(&mut self) -> Option<&mut Vec<serde_json::Value>> {
        Arc::make_mut(&mut self.body)
            .get_mut("messages")
            .and_then(serde_json::Value::as_array_mut)
    }

    /// The JSON body.
    pub fn json(&self) -> &serde_json::Value {
        &self.body
    }

    /// The JSON body, owned.
    pub fn into_json(self) -> serde_json::Value {
        Arc::try_unwrap(self.body).unwrap_or_else(|shared| (*shared).clone())
    }

    /// The JSON body, shared (for the transport: retries do not copy it).
    pub fn shared_json(&self) -> Arc<serde_json::Value> {
        self.body.clone()
    }
}

/// Who a request is for: drives the canary, the budget and the statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The end user (the canary's subject).
    pub user: Option<String>,
    /// The client's team (a budget scope).
    pub team: Option<String>,
    /// The client key's name (a budget scope; the canary's subject when there is no user).
    pub key_name: Option<String>,
    /// Free-form tags, kept with the statistics.
    pub tags: Vec<(String, String)>,
    /// Request headers, for canary rules on headers.
    pub headers: Vec<(String, String)>,
    /// The key an upstream id the request names belongs to (a response, a
    /// file, a batch): the request goes to that key only.
    pub pinned: Option<Pinned>,
}

/// An upstream key by provider and name, and the id that pins a request to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pinned {
    /// The provider.
    pub provider: String,
    /// The key, by name.
    pub key: String,
    /// The id (`resp_…`, `file-…`).
    pub id: String,
}

impl RequestContext {
    /// A context for `user`.
    pub fn user(user: impl Into<String>) -> Self {
        RequestContext {
            user: Some(user.into()),
            ..RequestContext::default()
        }
    }
}

/// Which arm of a canary rollout served a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArmInfo {
    /// The rollout's baseline model.
    pub rollout: String,
    /// The arm.
    pub arm: canary::Arm,
}

/// What the client did for a request. Names keys by name, never by secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResponseMeta {
    /// The provider that answered.
    pub provider: Arc<str>,
    /// The key that answered, by name.
    pub key: Arc<str>,
    /// The model asked for.
    pub model_requested: String,
    /// The model that answered (after the canary and any degradation).
    pub model_used: String,
    /// The canary arm, if the model has a rollout.
    pub arm: Option<ArmInfo>,
    /// Why the budget changed the model, if it did.
    pub degraded: Option<Degradation>,
    /// Upstream attempts made (1 when the first key answered).
    pub attempts: u32,
    /// The output cap the gateway set because the budget could not pay for
    /// all the request may write (`None`: the request went as asked).
    pub max_tokens: Option<u64>,
    /// What the request cost.
    pub cost: Money,
    /// Tokens used.
    pub usage: Usage,
    /// From the first attempt to the answer.
    pub latency: Duration,
}

/// An upstream's answer and what the client did to get it.
///
/// The body is kept as the upstream's bytes, which a gateway passes on
/// unchanged; [`ApiResponse::body`] parses them for callers that want to
/// look inside. (Classification reads only `usage` out of them, so an answer
/// passed through is never built as a JSON tree.)
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    /// The upstream's body byte for byte: JSON, since the answer was
    /// classified a success.
    pub raw: bytes::Bytes,
    /// Metadata.
    pub meta: ResponseMeta,
}

impl ApiResponse {
    /// The body, parsed (each call parses it again).
    pub fn body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.raw).unwrap_or(serde_json::Value::Null)
    }
}
