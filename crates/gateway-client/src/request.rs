//! Requests, their context, and responses with metadata.

use std::sync::Arc;
use std::time::Duration;

use budget::{Degradation, Money};
use bytes::Bytes;
use keypool_core::Usage;
use serde::Serialize;
use wire::{JsonBody, Kind, Raw};

use crate::error::ClientError;

/// An OpenAI-compatible request body (chat completion, embeddings, legacy
/// completion, response), kept as the bytes the caller sent: every field
/// reaches the upstream unchanged, and what the client must change (the
/// upstream's name for the model, an output cap, a shortened history) is
/// spliced in when it is sent ([`wire::JsonBody`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    body: JsonBody,
    model: String,
    cap: Option<u64>,
}

/// The fields an output cap may be given in.
const CAP_FIELDS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];

impl ApiRequest {
    /// Reads a JSON body as sent: it must be an object with a non-empty
    /// string `model`. Nothing is parsed into a tree.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Result<Self, ClientError> {
        let body = JsonBody::parse(bytes).map_err(|e| {
            ClientError::InvalidRequest(format!("the body is not a JSON object: {e}"))
        })?;
        Self::from_body(body)
    }

    /// Wraps a checked body; it must have a non-empty string `model`.
    pub fn from_body(body: JsonBody) -> Result<Self, ClientError> {
        let model = body
            .get("model")
            .and_then(|m| m.as_str())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ClientError::InvalidRequest(
                    "the body must be a JSON object with a non-empty string \"model\"".into(),
                )
            })?
            .into_owned();
        Ok(ApiRequest {
            body,
            model,
            cap: None,
        })
    }

    /// Wraps a JSON value; it must be an object with a non-empty string `model`.
    pub fn from_json(body: &serde_json::Value) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ClientError::InvalidRequest(format!("the body cannot be written: {e}")))?;
        Self::from_bytes(bytes)
    }

    /// A chat completion with `(role, content)` messages.
    pub fn chat(model: &str, messages: &[(&str, &str)]) -> Self {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
            .collect();
        let body = serde_json::json!({"model": model, "messages": messages});
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let body =
            JsonBody::parse(bytes).unwrap_or_else(|_| unreachable!("serde_json writes JSON"));
        ApiRequest {
            body,
            model: model.to_owned(),
            cap: None,
        }
    }

    /// The model asked for (the upstream's name for it once an attempt
    /// has been made).
    pub fn model(&self) -> &str {
        &self.model
    }

    pub(crate) fn set_model(&mut self, model: &str) {
        if self.model == model {
            return;
        }
        self.body.set("model", wire::string(model));
        model.clone_into(&mut self.model);
    }

    /// The most output tokens asked for (`max_completion_tokens`,
    /// `max_tokens`, or the Responses API's `max_output_tokens`), or the
    /// cap the client set.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.cap.or_else(|| {
            CAP_FIELDS
                .iter()
                .find_map(|k| self.body.get(k).and_then(|v| v.as_u64()))
        })
    }

    /// Caps the output at `tokens`: in the cap field the request uses, else
    /// in `default_field` (the endpoint's).
    pub(crate) fn set_max_output(&mut self, tokens: u64, default_field: &str) {
        let field = ["max_completion_tokens", "max_output_tokens", "max_tokens"]
            .into_iter()
            .find(|f| self.body.get(f).is_some())
            .unwrap_or(default_field);
        self.body.set(field, tokens.to_string());
        self.cap = Some(tokens);
    }

    /// The messages array, as sent.
    pub(crate) fn messages(&self) -> Option<Raw<'_>> {
        self.body
            .get("messages")
            .filter(|m| m.kind() == Kind::Array)
    }

    /// Sends only the messages `keep` says (one flag each, in order).
    pub(crate) fn keep_messages(&mut self, keep: &[bool]) {
        let Some(messages) = self.messages() else {
            return;
        };
        let kept: Vec<&str> = messages
            .items()
            .zip(keep.iter().chain(std::iter::repeat(&true)))
            .filter(|(_, k)| **k)
            .map(|(m, _)| m.text())
            .collect();
        let text = format!("[{}]", kept.join(","));
        self.body.set("messages", text);
    }

    /// The body as sent, before the client's edits.
    pub fn root(&self) -> Raw<'_> {
        self.body.root()
    }

    /// The body with the client's edits pending (for the transport).
    pub fn body(&self) -> &JsonBody {
        &self.body
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
    pub raw: Bytes,
    /// Metadata.
    pub meta: ResponseMeta,
}

impl ApiResponse {
    /// The body, parsed (each call parses it again).
    pub fn body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.raw).unwrap_or(serde_json::Value::Null)
    }
}
