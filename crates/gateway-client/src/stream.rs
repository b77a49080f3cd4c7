//! Streams handed to the caller, and the guard that settles or cancels them.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use budget::Reservation;
use futures_util::{Stream, StreamExt};
use keypool_core::{Lease, Outcome, Usage};
use transport::{ChatStream, StreamEvent};

use crate::client::Client;
use crate::error::ClientError;
use crate::request::ResponseMeta;

/// Holds what a stream owes the pool and the budget until it ends. Dropped
/// early (the caller went away), it reports the lease cancelled and releases
/// the reservation.
pub(crate) struct StreamGuard {
    client: Client,
    provider: usize,
    lease: Option<Lease>,
    reservation: Option<Reservation>,
    meta: ResponseMeta,
    input_estimate: u64,
    max_output: u64,
    started: tokio::time::Instant,
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
        }
    }

    /// `[DONE]`: settle the budget with the usage and tell the pool it worked.
    fn finish_ok(&mut self, usage: Option<Usage>) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let latency = self.started.elapsed();
        self.meta.cost = self.client.settle(
            &self.meta.model_used,
            self.reservation.take(),
            usage,
            self.input_estimate,
            self.max_output,
        );
        self.meta.usage = usage.unwrap_or_default();
        self.meta.latency += latency;
        self.client.report(
            self.provider,
            lease,
            Outcome::Success {
                usage: self.meta.usage,
                latency,
            },
            None,
        );
        self.client.record_stream(&self.meta, true);
    }

    /// An error after the first chunk: the attempt failed; the request
    /// happened, so the whole reservation is booked.
    fn finish_err(&mut self, outcome: Outcome) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        self.meta.cost = self.client.settle(
            &self.meta.model_used,
            self.reservation.take(),
            None,
            self.input_estimate,
            self.max_output,
        );
        self.client.report(self.provider, lease, outcome, None);
        self.client.record_stream(&self.meta, false);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.client
                .report(self.provider, lease, Outcome::Cancelled, None);
            self.client.cancel(self.reservation.take());
        }
    }
}

/// A streamed chat completion: each chunk's JSON text as it arrives.
///
/// Ends with `None` after `[DONE]` (the budget and the pool are settled then),
/// or yields one error and ends. Dropping it before the end cancels cleanly.
pub struct ClientStream {
    first: Option<String>,
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
        first: Option<String>,
        done: Option<Option<Usage>>,
        events: ChatStream,
        guard: StreamGuard,
    ) -> Self {
        ClientStream {
            first,
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
}

impl Stream for ClientStream {
    type Item = Result<String, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(chunk) = this.first.take() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if let Some(usage) = this.done.take() {
            this.finished = true;
            this.guard.finish_ok(usage);
            return Poll::Ready(None);
        }
        match this.events.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(StreamEvent::Chunk(c)))) => Poll::Ready(Some(Ok(c))),
            Poll::Ready(Some(Ok(StreamEvent::Done { usage }))) => {
                this.finished = true;
                this.guard.finish_ok(usage);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finished = true;
                this.guard.finish_err(e.outcome());
                Poll::Ready(Some(Err(ClientError::Stream(e))))
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
        }
    }
}
