//! Streams handed to the caller, and the guard that settles or cancels them.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use budget::{CharEstimator, Reservation, TokenEstimator};
use futures_util::{Stream, StreamExt};
use keypool_core::{Lease, Outcome, Usage};
use transport::{ChatStream, StreamEvent};

use crate::client::Client;
use crate::error::ClientError;
use crate::request::ResponseMeta;

/// What a stream has delivered so far, for booking one that ends early.
#[derive(Clone, Copy, Debug, Default)]
struct Delivered {
    /// Completion tokens estimated from the chunks' text (content,
    /// reasoning, tool-call arguments).
    tokens: u64,
    /// Usage a chunk reported, which wins over the estimate.
    usage: Option<Usage>,
    /// A chunk could not be read: what was delivered is unknown.
    unknown: bool,
}

impl Delivered {
    /// Counts what `chunk` (one event's JSON) carries: chat deltas, legacy
    /// completions' text, the Responses API's `*.delta` events.
    fn observe(&mut self, chunk: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(chunk) else {
            self.unknown = true;
            return;
        };
        if let Some(u) = transport::usage_of(&v) {
            self.usage = Some(u);
        }
        if let Some(delta) = response_delta(&v) {
            self.tokens += CharEstimator.estimate(delta);
        }
        let choices = v.get("choices").and_then(serde_json::Value::as_array);
        for text in choices
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("text")?.as_str())
        {
            self.tokens += CharEstimator.estimate(text);
        }
        for delta in choices.into_iter().flatten().filter_map(|c| c.get("delta")) {
            let text = |field: &str| delta.get(field).and_then(serde_json::Value::as_str);
            for t in [text("content"), text("reasoning_content")]
                .into_iter()
                .flatten()
            {
                self.tokens += CharEstimator.estimate(t);
            }
            let calls = delta
                .get("tool_calls")
                .and_then(serde_json::Value::as_array);
            for call in calls.into_iter().flatten() {
                if let Some(args) = call
                    .pointer("/function/arguments")
                    .and_then(serde_json::Value::as_str)
                {
                    self.tokens += CharEstimator.estimate(args);
                }
            }
        }
    }

    /// What to book for a stream that ended here: the usage a chunk
    /// reported, else the prompt estimate and the completion tokens counted;
    /// `None` (book the reservation in full) when a chunk could not be read.
    fn usage(&self, input_estimate: u64) -> Option<Usage> {
        match (self.usage, self.unknown) {
            (Some(u), _) => Some(u),
            (None, true) => None,
            (None, false) => Some(Usage::new(input_estimate, self.tokens)),
        }
    }
}

/// The text of a Responses API delta event (`response.output_text.delta`,
/// `response.function_call_arguments.delta`, `response.reasoning_*.delta`).
fn response_delta(v: &serde_json::Value) -> Option<&str> {
    let kind = v.get("type")?.as_str()?;
    if !kind.starts_with("response.") || !kind.ends_with(".delta") {
        return None;
    }
    v.get("delta")?.as_str()
}

/// Whether an event (one chunk's JSON text) is output the caller sees: a
/// chat delta with content, reasoning or a tool call; a legacy completion's
/// text; a Responses API delta. Until one arrives a stream is not committed
/// to its key: a role-only delta or `response.created` may still be
/// followed by an error, and the request goes to another key unseen.
pub(crate) fn is_output(chunk: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(chunk) else {
        // Unreadable: passed on as it came, so committed.
        return true;
    };
    if response_delta(&v).is_some() {
        return true;
    }
    let choices = v.get("choices").and_then(serde_json::Value::as_array);
    choices.into_iter().flatten().any(|c| {
        let said = |x: Option<&serde_json::Value>| match x {
            Some(serde_json::Value::String(s)) => !s.is_empty(),
            Some(serde_json::Value::Array(a)) => !a.is_empty(),
            Some(serde_json::Value::Null) | None => false,
            Some(_) => true,
        };
        let d = c.get("delta");
        let field = |f: &str| d.and_then(|d| d.get(f));
        said(c.get("text"))
            || said(field("content"))
            || said(field("tool_calls"))
            || said(field("function_call"))
            || said(field("reasoning_content"))
            || said(field("reasoning"))
            || said(field("refusal"))
    })
}

/// Holds what a stream owes the pool and the budget until it ends. However
/// it ends (`[DONE]`, an upstream error, the caller going away), what was
/// delivered is booked: the budget is settled, the key's quota counts the
/// tokens, and [`ResponseMeta`] says what it cost.
pub(crate) struct StreamGuard {
    client: Client,
    provider: usize,
    lease: Option<Lease>,
    reservation: Option<Reservation>,
    meta: ResponseMeta,
    input_estimate: u64,
    max_output: u64,
    started: tokio::time::Instant,
    delivered: Delivered,
}

impl StreamGuard {
    pub(crate) fn new(
        client: Client,
        provider: usize,
        lease: Lease,
        reservation: Option<Reservation>,
        meta: ResponseMeta,
        input_estimate: u64,
        max_output: u64,
    ) -> Self {
        StreamGuard {
            client,
            provider,
            lease: Some(lease),
            reservation,
            meta,
            input_estimate,
            max_output,
            started: tokio::time::Instant::now(),
            delivered: Delivered::default(),
        }
    }

    /// Settles the budget with `usage` (the whole reservation when `None`)
    /// and puts cost and usage in the meta.
    fn settle(&mut self, usage: Option<Usage>) {
        self.meta.cost = self.client.settle(
            &self.meta.model_used,
            self.reservation.take(),
            usage,
            self.input_estimate,
            self.max_output,
        );
        self.meta.usage = usage.unwrap_or_else(|| Usage::new(self.input_estimate, self.max_output));
        self.meta.latency += self.started.elapsed();
    }

    /// `[DONE]`: settle the budget with the usage and tell the pool it worked.
    fn finish_ok(&mut self, usage: Option<Usage>) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let latency = self.started.elapsed();
        self.settle(usage.or(self.delivered.usage));
        let outcome = Outcome::Success {
            usage: self.meta.usage,
            latency,
        };
        self.client.report(self.provider, lease, outcome, None);
        self.client.record_stream(&self.meta, true);
    }

    /// Ended before `[DONE]` with `outcome` (an upstream error, or
    /// `Cancelled` when the caller went away): what was delivered is booked
    /// and counted against the key's quota. Whether this call ended it.
    fn finish_early(&mut self, outcome: Outcome) -> bool {
        let Some(lease) = self.lease.take() else {
            return false;
        };
        let key = lease.key();
        self.settle(self.delivered.usage(self.input_estimate));
        self.client.report(self.provider, lease, outcome, None);
        self.client
            .count_tokens(self.provider, key, self.meta.usage.total());
        self.client.record_stream(&self.meta, false);
        true
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.finish_early(Outcome::Cancelled);
    }
}

/// A streamed chat completion: each chunk's JSON text as it arrives.
///
/// Ends with `None` after `[DONE]` (the budget and the pool are settled then),
/// or yields one error and ends (what was delivered is booked then).
/// Dropping it before the end books what was delivered, as
/// [`cut_short`](Self::cut_short) does.
pub struct ClientStream {
    /// Events read before the stream was committed, handed out first.
    held: std::collections::VecDeque<String>,
    done: Option<Option<Usage>>,
    events: ChatStream,
    guard: StreamGuard,
    finished: bool,
}

impl fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStream")
            .field("meta", &self.guard.meta)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ClientStream {
    pub(crate) fn new(
        held: Vec<String>,
        done: Option<Option<Usage>>,
        events: ChatStream,
        guard: StreamGuard,
    ) -> Self {
        ClientStream {
            held: held.into(),
            done,
            events,
            guard,
            finished: false,
        }
    }

    /// What the client did. Cost and usage are known once the stream has ended.
    pub fn meta(&self) -> &ResponseMeta {
        &self.guard.meta
    }

    /// Ends the stream here, as when the caller goes away: books the prompt
    /// and the completion tokens delivered so far (or the whole reservation
    /// when they cannot be known), counts them against the key's quota, and
    /// returns the final meta; `None` if the stream had already ended.
    /// Dropping an unfinished stream does the same.
    pub fn cut_short(&mut self) -> Option<&ResponseMeta> {
        self.finished = true;
        self.guard
            .finish_early(Outcome::Cancelled)
            .then_some(&self.guard.meta)
    }
}

impl Stream for ClientStream {
    type Item = Result<String, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(chunk) = this.held.pop_front() {
            this.guard.delivered.observe(&chunk);
            return Poll::Ready(Some(Ok(chunk)));
        }
        if let Some(usage) = this.done.take() {
            this.finished = true;
            this.guard.finish_ok(usage);
            return Poll::Ready(None);
        }
        match this.events.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(StreamEvent::Chunk(c)))) => {
                this.guard.delivered.observe(&c);
                Poll::Ready(Some(Ok(c)))
            }
            Poll::Ready(Some(Ok(StreamEvent::Done { usage }))) => {
                this.finished = true;
                this.guard.finish_ok(usage);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finished = true;
                this.guard.finish_early(e.outcome());
                Poll::Ready(Some(Err(ClientError::Stream(e))))
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
        }
    }
}
