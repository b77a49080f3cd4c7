//! Requests passed through: any method, path, query and body (multipart
//! included) that an OpenAI-compatible upstream serves beyond the surfaces
//! the client knows (files, batches, images, audio, moderations, vector
//! stores, a stored response), through the same keys, classification and
//! failover, and answered with the upstream's own status, headers and body.

use std::time::SystemTime;

use budget::{Reservation, Scopes};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keypool_core::{KeyId, Lease, Usage};
use transport::{ByteStream, Class, RawAnswer, RawRequest};

use crate::client::{Client, Want, lock, pinned_error};
use crate::error::ClientError;
use crate::request::{RequestContext, ResponseMeta};

/// The largest error answer read to classify it; the rest of a larger one
/// is not needed to know what it says.
const MAX_ERROR_BODY: usize = 1 << 20;

/// A request passed through as the client made it.
#[derive(Clone, Debug)]
pub struct PassRequest {
    /// The method.
    pub method: Method,
    /// The path under the base URL, with the query (`/files?purpose=batch`).
    pub path: String,
    /// The client's headers to pass on (see [`transport::passes_upstream`]).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, whole.
    pub body: Bytes,
    /// The model a JSON body names: only providers and keys serving it, and
    /// a reservation when it has a price.
    pub model: Option<String>,
}

/// The upstream's answer to a [`PassRequest`].
pub struct PassAnswer {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as it arrives (JSON answers were read whole first, to read
    /// their usage).
    pub body: ByteStream,
    /// The body, when it was read whole (a JSON answer).
    pub read: Option<Bytes>,
    /// Which key answered, what it cost.
    pub meta: ResponseMeta,
}

impl std::fmt::Debug for PassAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassAnswer")
            .field("status", &self.status)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Tried {
    /// The answer to hand back (a success, or an upstream error another
    /// key would get too).
    Answer(Box<PassAnswer>),
    /// Another key may do better.
    Retry(String),
}

/// A passed-through request being worked on.
struct Passing<'a> {
    request: &'a PassRequest,
    ctx: &'a RequestContext,
    reservation: Option<Reservation>,
    estimate: u64,
    attempts: u32,
    started: tokio::time::Instant,
}

impl Client {
    /// Passes `request` through to a key that serves it (the key of
    /// `ctx.pinned` only, when set), failing over on answers another key may
    /// not get (rate limits, spent quotas, revoked keys, server errors) and
    /// handing back any other answer as the upstream gave it.
    pub async fn pass(
        &self,
        request: PassRequest,
        ctx: &RequestContext,
    ) -> Result<PassAnswer, ClientError> {
        if let Some(m) = request.model.as_deref().filter(|m| !self.serves(m)) {
            return Err(ClientError::ModelNotFound {
                model: m.to_owned(),
            });
        }
        // Bytes a tokenizer would see at most: a bound on the input's tokens.
        let estimate = (request.body.len() as u64).div_ceil(4);
        let mut work = Passing {
            request: &request,
            ctx,
            reservation: None,
            estimate,
            attempts: 0,
            started: tokio::time::Instant::now(),
        };
        work.reservation = self.reserve_pass(&work)?;
        let result = self.pass_attempts(&mut work).await;
        if result.is_err() {
            self.cancel(work.reservation.take());
        }
        result.map_err(|e| pinned_error(e, ctx.pinned.as_ref()))
    }

    /// A reservation for a request naming a priced model (its input bound,
    /// no output: what it writes is not known in tokens); none otherwise.
    fn reserve_pass(&self, work: &Passing<'_>) -> Result<Option<Reservation>, ClientError> {
        let (Some(ledger), Some(model)) = (&self.inner.ledger, work.request.model.as_deref())
        else {
            return Ok(None);
        };
        if self.inner.prices.resolve(model).is_err() {
            return Ok(None);
        }
        let scopes = Scopes {
            team: work.ctx.team.as_deref(),
            key: work.ctx.key_name.as_deref(),
        };
        let mut ledger = lock(ledger);
        let r = ledger.reserve(&scopes, model, work.estimate, 0, self.inner.clock.now());
        self.drain_ledger(&mut ledger);
        Ok(Some(r?))
    }

    async fn pass_attempts(&self, work: &mut Passing<'_>) -> Result<PassAnswer, ClientError> {
        let deadline = self.inner.clock.now() + self.inner.retry.deadline;
        let mut excluded: Vec<(usize, KeyId)> = Vec::new();
        let mut last = String::from("no attempt was made");
        while work.attempts < self.inner.retry.max_attempts {
            let want = Want {
                model: work.request.model.as_deref(),
                estimate: work.estimate,
                pinned: work.ctx.pinned.as_ref(),
                prefer: None,
            };
            let (p, lease) = match self.acquire(&excluded, &want) {
                Ok(x) => x,
                Err(no) => match self
                    .wait_for_key(no, work.attempts, &mut excluded, deadline)
                    .await?
                {
                    true => continue,
                    false => break,
                },
            };
            let key = (p, lease.key());
            match self.pass_once(work, p, lease, deadline).await? {
                Tried::Answer(a) => return Ok(*a),
                Tried::Retry(why) => {
                    last = why;
                    excluded.push(key);
                }
            }
            if !self.back_off(work.attempts, deadline).await {
                break;
            }
        }
        Err(ClientError::AttemptsExhausted {
            attempts: work.attempts,
            last,
        })
    }

    async fn pass_once(
        &self,
        work: &mut Passing<'_>,
        p: usize,
        lease: Lease,
        deadline: SystemTime,
    ) -> Result<Tried, ClientError> {
        let provider = self.provider(p)?;
        work.attempts += 1;
        let request = RawRequest {
            base_url: provider.base_url.clone(),
            method: work.request.method.clone(),
            path: work.request.path.clone(),
            secret: lease.secret().clone(),
            headers: work.request.headers.clone(),
            body: work.request.body.clone(),
            timeout: self.attempt_timeout(deadline),
        };
        let sent_at = tokio::time::Instant::now();
        match self.inner.transport.send_raw(request).await {
            Ok(answer) => self.passed(work, p, lease, answer, sent_at).await,
            Err(e) => self.failed(p, lease, &e).map(Tried::Retry),
        }
    }

    /// Reads what the answer needs read (an error, to classify it; a JSON
    /// success, for its usage), tells the pool, and decides.
    async fn passed(
        &self,
        work: &mut Passing<'_>,
        p: usize,
        lease: Lease,
        answer: RawAnswer,
        sent_at: tokio::time::Instant,
    ) -> Result<Tried, ClientError> {
        let provider = self.provider_name(p);
        let key_name = lease.name().clone();
        let success = (200..300).contains(&answer.status);
        let json = answer
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("json"));
        if success && !json {
            // A file's content, audio, an event stream: passed on as it comes.
            let usage = Usage::default();
            let outcome = keypool_core::Outcome::Success {
                usage,
                latency: sent_at.elapsed(),
            };
            self.report(p, lease, outcome, None);
            let meta = self.pass_meta(work, (&provider, &key_name), true, None);
            return Ok(Tried::Answer(Box::new(PassAnswer {
                status: answer.status,
                headers: answer.headers,
                body: answer.body,
                read: None,
                meta,
            })));
        }
        let max = if success {
            transport::DEFAULT_MAX_BODY
        } else {
            MAX_ERROR_BODY
        };
        let read = match answer.read(max).await {
            Ok(a) => a,
            Err(e) => {
                self.report(p, lease, e.outcome(), None);
                return Ok(Tried::Retry(format!("{provider}/{key_name}: {e}")));
            }
        };
        let c = self.classify_at(p, &read, sent_at.elapsed());
        self.report(p, lease, c.outcome, Some(&c.rate_limits));
        let retry = matches!(
            c.class,
            Class::RateLimited { .. }
                | Class::QuotaExhausted
                | Class::Unauthorized
                | Class::Forbidden
                | Class::ServerError { .. }
                | Class::Timeout
        );
        if retry && work.ctx.pinned.is_none() {
            return Ok(Tried::Retry(format!(
                "{provider}/{key_name}: {:?}",
                c.class
            )));
        }
        let meta = self.pass_meta(work, (&provider, &key_name), success, c.usage);
        let body = read.body.clone();
        Ok(Tried::Answer(Box::new(PassAnswer {
            status: read.status,
            headers: read.headers,
            body: Box::pin(futures_util::stream::once(async move { Ok(body) })),
            read: Some(read.body),
            meta,
        })))
    }

    /// The meta of an answered passed-through request (by `(provider,
    /// key)`), its cost settled when it `succeeded` (by the usage it
    /// reported; the input bound and no output without); an error answer
    /// costs nothing and its reservation is cancelled.
    fn pass_meta(
        &self,
        work: &mut Passing<'_>,
        (provider, key): (&std::sync::Arc<str>, &std::sync::Arc<str>),
        succeeded: bool,
        usage: Option<Usage>,
    ) -> ResponseMeta {
        let model = work.request.model.clone().unwrap_or_default();
        let usage = usage.filter(|_| succeeded);
        let cost = match work.reservation.take() {
            Some(r) if !succeeded => {
                self.cancel(Some(r));
                budget::Money::ZERO
            }
            Some(r) => {
                let booked = usage.unwrap_or_else(|| Usage::new(work.estimate, 0));
                self.settle(&model, Some(r), Some(booked), work.estimate, 0)
            }
            None => self.settle(&model, None, usage, 0, 0),
        };
        let meta = ResponseMeta {
            provider: provider.clone(),
            key: key.clone(),
            model_requested: model.clone(),
            model_used: model,
            arm: None,
            degraded: None,
            attempts: work.attempts,
            max_tokens: None,
            cost,
            usage: usage.unwrap_or_default(),
            latency: work.started.elapsed(),
        };
        self.record_stream(&meta, succeeded);
        meta
    }
}
