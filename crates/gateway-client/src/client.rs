//! The client: canary, budget, key pool and transport composed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use budget::{Ledger, PriceTable, Reservation, Scopes, Tokens};
use canary::{Gates, Rollout};
use keypool_core::{AcquireOptions, KeyId, KeyPool, Lease, Outcome, Timestamp, Usage};
use tokio::sync::broadcast;
use tracing::Instrument as _;
use transport::{Class, RateLimits, StreamEvent, StreamStart, Transport, classify_with};

use crate::clock::Clock;
use crate::error::ClientError;
use crate::policy::{ContextPolicy, RetryPolicy};
use crate::request::{ApiRequest, ApiResponse, ArmInfo, Pinned, RequestContext, ResponseMeta};
use crate::routing::{Catalog, Fallbacks};
use crate::stats::{Finished, Stats};
use crate::stream::{ClientStream, StreamGuard};

/// Something that happened in one of the layers, for subscribers.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// A key pool's event.
    Pool {
        /// The provider.
        provider: Arc<str>,
        /// The event (names keys by name only).
        event: keypool_core::Event,
    },
    /// The budget's event.
    Budget(budget::Event),
    /// A canary rollout's event.
    Canary {
        /// The rollout's baseline model.
        rollout: Arc<str>,
        /// The event.
        event: canary::Event,
    },
}

/// One line naming its layer: `relay/alpha: disabled (unauthorized)`,
/// `budget: global daily: 90% spent ($9.00 of $10.00)`,
/// `canary gpt-4.1: rolled back (by the analysis): …`.
impl fmt::Display for ClientEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientEvent::Pool {
                provider,
                event:
                    event @ (keypool_core::Event::PoolEmpty { .. } | keypool_core::Event::PoolRecovered),
            } => write!(f, "{provider}: {event}"),
            ClientEvent::Pool { provider, event } => write!(f, "{provider}/{event}"),
            ClientEvent::Budget(event) => write!(f, "budget: {event}"),
            ClientEvent::Canary { rollout, event } => write!(f, "canary {rollout}: {event}"),
        }
    }
}

/// Which API a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /chat/completions`.
    ChatCompletions,
    /// `POST /embeddings`.
    Embeddings,
    /// `POST /completions` (legacy).
    Completions,
    /// `POST /responses`.
    Responses,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Completions => "/completions",
            Endpoint::Responses => "/responses",
        }
    }

    /// The field an output cap goes in when the request has none.
    fn cap_field(self) -> &'static str {
        match self {
            Endpoint::Responses => "max_output_tokens",
            _ => "max_tokens",
        }
    }

    /// The tokens a request's input is estimated at, before it is sent.
    fn input_estimate(self, request: &ApiRequest) -> u64 {
        match self {
            Endpoint::ChatCompletions => crate::context::chat_tokens(request.root()),
            Endpoint::Embeddings => crate::context::embedding_tokens(request.root()),
            Endpoint::Completions => crate::context::prompt_tokens(request.root()),
            Endpoint::Responses => crate::context::responses_tokens(request.root()),
        }
    }
}

/// Legacy completions write 16 tokens when no cap is given (`OpenAI`'s default).
const COMPLETIONS_DEFAULT_MAX_TOKENS: u64 = 16;

pub(crate) struct Provider {
    pub(crate) name: Arc<str>,
    pub(crate) base_url: Arc<str>,
    pub(crate) priority: u32,
    pub(crate) pool: Mutex<KeyPool>,
    /// The models it serves, by which names.
    pub(crate) catalog: Catalog,
    /// The operator's rules for reading its answers, before the built-in ones.
    pub(crate) rules: Vec<transport::ErrorRule>,
}

impl Provider {
    /// Whether this provider serves `model` and has a key that may: the
    /// names its keys may list it by (the client's and the upstream's).
    fn serves(&self, model: &str) -> bool {
        self.catalog.serves(model) && lock(&self.pool).may_serve(&self.names(model))
    }

    /// `model`'s names here: the client's, and the upstream's if it differs.
    fn names<'a>(&'a self, model: &'a str) -> Vec<&'a str> {
        let upstream = self.catalog.upstream_name(model);
        if upstream == model {
            vec![model]
        } else {
            vec![model, upstream]
        }
    }
}

pub(crate) struct Inner {
    pub(crate) providers: Vec<Provider>,
    pub(crate) rollouts: HashMap<String, RolloutSlot>,
    pub(crate) fallbacks: Fallbacks,
    pub(crate) ledger: Option<Mutex<Ledger>>,
    pub(crate) prices: PriceTable,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) retry: RetryPolicy,
    pub(crate) context: ContextPolicy,
    pub(crate) gates: Gates,
    pub(crate) min_output_tokens: u64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) stats: Mutex<Stats>,
    pub(crate) jitter: Mutex<u64>,
    pub(crate) events: broadcast::Sender<ClientEvent>,
    pub(crate) wake: crate::monitor::MonitorWake,
    pub(crate) verdicts: Mutex<std::collections::BTreeMap<String, (SystemTime, canary::Verdict)>>,
    /// Grows shares of limits shared with other processes.
    pub(crate) backer: std::sync::OnceLock<Arc<dyn crate::ShareBacker>>,
    /// Which key served each conversation last (off: `None`).
    pub(crate) affinity: Option<crate::affinity::Affinity>,
}

/// The client. Cheap to clone (one `Arc`) and safe to share across tasks.
///
/// A rollout, by its baseline model.
pub(crate) struct RolloutSlot {
    /// The baseline's name, shared with events.
    pub(crate) name: Arc<str>,
    pub(crate) rollout: Mutex<Rollout>,
    /// Its analysis, changed by [`Client::set_analysis`].
    pub(crate) analysis: Mutex<crate::Analysis>,
    /// When it is next judged (set at the monitor's first look).
    pub(crate) next_analysis: Mutex<Option<SystemTime>>,
}

/// Shared state (each provider's key pool, the rollouts, the ledger, the
/// statistics) lives behind synchronous locks, each held only for one
/// decision and never across an `.await`.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// A [`Client`] that does not keep it alive ([`Client::downgrade`]): for
/// what the client itself holds, such as its
/// [`ShareBacker`](crate::ShareBacker), which would otherwise keep the
/// client, and itself, alive for ever.
#[derive(Clone, Debug)]
pub struct WeakClient {
    inner: std::sync::Weak<Inner>,
}

impl WeakClient {
    /// The client, while it lives.
    pub fn upgrade(&self) -> Option<Client> {
        self.inner.upgrade().map(|inner| Client { inner })
    }
}

impl Client {
    /// A handle that does not keep the client alive.
    pub fn downgrade(&self) -> WeakClient {
        WeakClient {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let providers: Vec<&str> = self.inner.providers.iter().map(|p| &*p.name).collect();
        f.debug_struct("Client")
            .field("providers", &providers)
            .finish_non_exhaustive()
    }
}

/// How many times a request asks for its share to grow before it is
/// refused. Each time its share grew (or the backer says no and it is
/// refused), but requests running beside it may take what came first.
const SHARE_TRIES: u32 = 50;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn ts(t: SystemTime) -> Timestamp {
    Timestamp::from_system_time(t)
}

/// A pinned request whose key cannot serve says so, naming the id.
pub(crate) fn pinned_error(e: ClientError, pinned: Option<&Pinned>) -> ClientError {
    match (e, pinned) {
        (ClientError::NoKeyAvailable { detail, retry_at }, Some(p)) => {
            ClientError::PinnedKeyUnavailable {
                id: p.id.clone(),
                key: p.key.clone(),
                detail,
                retry_at,
            }
        }
        (e, _) => e,
    }
}

/// The most events held back before a stream's first output; past it the
/// stream is committed all the same (an upstream that sends that many
/// events without output is not waiting to fail).
const MAX_HELD_EVENTS: usize = 64;

/// Reads events until the first output or the end: the events read (to
/// hand on) and, at the end, its usage. An error before either is returned.
async fn hold_until_output(
    events: &mut transport::ChatStream,
) -> Result<(Vec<String>, Option<Option<Usage>>), transport::TransportError> {
    use futures_util::StreamExt;
    let mut held = Vec::new();
    loop {
        match events.next().await {
            Some(Ok(StreamEvent::Chunk(c))) => {
                let output = crate::stream::is_output(&c);
                held.push(c);
                if output || held.len() >= MAX_HELD_EVENTS {
                    return Ok((held, None));
                }
            }
            Some(Ok(StreamEvent::Done { usage })) => return Ok((held, Some(usage))),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(transport::TransportError::new(
                    transport::ErrorKind::Stream,
                    "upstream stream ended before any output",
                ));
            }
        }
    }
}

/// What a key is leased for.
pub(crate) struct Want<'a> {
    /// The model (by the client's name): only providers serving it, only
    /// keys allowed it. `None`: any provider, any key.
    pub(crate) model: Option<&'a str>,
    /// Tokens the request is expected to use.
    pub(crate) estimate: u64,
    /// The key an id the request names belongs to: that key only.
    pub(crate) pinned: Option<&'a Pinned>,
    /// The key that served the conversation last (provider index, key):
    /// preferred while it can serve.
    pub(crate) prefer: Option<(usize, KeyId)>,
}

/// Keys no provider can lend now.
pub(crate) struct NoKeys {
    pub(crate) detail: String,
    pub(crate) retry_at: Option<SystemTime>,
    pub(crate) only_excluded: bool,
}

/// A request being worked on: what the attempts share.
struct Work {
    endpoint: Endpoint,
    request: ApiRequest,
    /// The conversation's prompt-cache affinity token, when affinity is on.
    affinity: Option<u64>,
    model_requested: String,
    model: String,
    arm: Option<ArmInfo>,
    reservation: Option<Reservation>,
    degraded: Option<budget::Degradation>,
    input_estimate: u64,
    max_output: u64,
    /// The output cap the budget set on the request, if it had to.
    capped: Option<u64>,
    context_retried: bool,
    attempts: u32,
    started: tokio::time::Instant,
    /// The key an id the request names belongs to.
    pinned: Option<Pinned>,
}

/// What an attempt loop produced.
enum Sent {
    Answer(Box<ApiResponse>),
    Stream(Box<ClientStream>),
}

/// What one attempt came to.
enum Step {
    /// Answered (or a stream committed): done.
    Done(Sent),
    /// This key failed in a way another may not: the reason, for the error
    /// if every attempt fails.
    Retry(String),
    /// The request was adapted (to the context window): again, at once.
    Again,
}

/// How a stream's start went.
enum Started {
    /// Committed to the key: its first event arrived.
    Stream(Box<ClientStream>),
    /// Not a stream: an answer or an error, and the lease to report it on.
    Not(Result<transport::Answer, transport::TransportError>, Lease),
}

impl Client {
    /// A builder.
    pub fn builder() -> crate::ClientBuilder {
        crate::ClientBuilder::default()
    }

    // ----- one request ---------------------------------------------------

    /// Sends a chat completion: picks the model (canary), reserves its cost
    /// (budget, which may degrade the model), leases a key, sends, classifies,
    /// tells the pool, and fails over to other keys and providers on
    /// retryable answers until the policy's attempts or deadline run out.
    pub async fn chat_completion(
        &self,
        request: ApiRequest,
        ctx: &RequestContext,
    ) -> Result<ApiResponse, ClientError> {
        self.send(Endpoint::ChatCompletions, request, ctx).await
    }

    /// Sends an embeddings request through the same keys, budget and failover.
    pub async fn embeddings(
        &self,
        request: ApiRequest,
        ctx: &RequestContext,
    ) -> Result<ApiResponse, ClientError> {
        self.send(Endpoint::Embeddings, request, ctx).await
    }

    /// Sends a request to `endpoint` as [`chat_completion`](Self::chat_completion)
    /// does; the answer is the upstream's body as it came.
    pub async fn send(
        &self,
        endpoint: Endpoint,
        request: ApiRequest,
        ctx: &RequestContext,
    ) -> Result<ApiResponse, ClientError> {
        match self.execute(endpoint, request, ctx, false).await? {
            Sent::Answer(a) => Ok(*a),
            Sent::Stream(_) => Err(ClientError::Config(
                "internal: a stream for a plain request".into(),
            )),
        }
    }

    /// Streams a chat completion. Failures before the first output (content,
    /// reasoning or a tool call, not a role-only delta) fail over like
    /// [`chat_completion`](Self::chat_completion); after it, the stream
    /// yields the error (a stream cannot be replayed). The final chunk's
    /// usage settles the budget and the pool; dropping the stream early
    /// cancels both.
    pub async fn chat_completion_stream(
        &self,
        request: ApiRequest,
        ctx: &RequestContext,
    ) -> Result<ClientStream, ClientError> {
        self.send_stream(Endpoint::ChatCompletions, request, ctx)
            .await
    }

    /// Streams a request to `endpoint` (chat, legacy completions, the
    /// Responses API) as [`chat_completion_stream`](Self::chat_completion_stream)
    /// does. Embeddings do not stream.
    pub async fn send_stream(
        &self,
        endpoint: Endpoint,
        request: ApiRequest,
        ctx: &RequestContext,
    ) -> Result<ClientStream, ClientError> {
        if endpoint == Endpoint::Embeddings {
            return Err(ClientError::InvalidRequest(
                "embeddings do not stream".into(),
            ));
        }
        match self.execute(endpoint, request, ctx, true).await? {
            Sent::Stream(s) => Ok(*s),
            Sent::Answer(_) => Err(ClientError::Config(
                "internal: an answer for a stream".into(),
            )),
        }
    }

    async fn execute(
        &self,
        endpoint: Endpoint,
        request: ApiRequest,
        ctx: &RequestContext,
        stream: bool,
    ) -> Result<Sent, ClientError> {
        let started = tokio::time::Instant::now();
        let model_requested = request.model().to_owned();
        if model_requested.is_empty() {
            return Err(ClientError::InvalidRequest("missing \"model\"".into()));
        }
        let (model, arm) = self.route(&model_requested, ctx)?;
        // A pinned request stays with its key's model: no fallback.
        let chain = match &ctx.pinned {
            Some(_) => vec![model.clone()],
            None => self.servable_chain(&model),
        };
        let Some(first) = chain.first() else {
            return Err(ClientError::ModelNotFound { model });
        };
        let input_estimate = endpoint.input_estimate(&request);
        let asked = request.max_output_tokens();
        let max_output = match endpoint {
            Endpoint::Embeddings => 0,
            Endpoint::Completions => asked.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS),
            Endpoint::ChatCompletions | Endpoint::Responses => {
                asked.unwrap_or_else(|| self.model_max_output(first))
            }
        };
        let affinity = match endpoint {
            Endpoint::ChatCompletions | Endpoint::Responses if self.inner.affinity.is_some() => {
                crate::affinity::token(&request)
            }
            _ => None,
        };
        let mut work = Work {
            endpoint,
            request,
            affinity,
            model_requested,
            model: first.clone(),
            arm,
            reservation: None,
            degraded: None,
            input_estimate,
            max_output,
            capped: None,
            context_retried: false,
            attempts: 0,
            started,
            pinned: ctx.pinned.clone(),
        };
        // A refusal here is not an upstream request: not counted.
        self.reserve_covered(&mut work, ctx).await?;
        let result = self
            .along_chain(&mut work, ctx, stream, &chain)
            .await
            .map_err(|e| pinned_error(e, work.pinned.as_ref()));
        if result.is_err() {
            self.cancel(work.reservation.take());
            self.record(&work, None, 0, None);
        }
        result
    }

    /// `model` and its fallbacks, those that some provider serves.
    fn servable_chain(&self, model: &str) -> Vec<String> {
        self.inner
            .fallbacks
            .chain(model)
            .into_iter()
            .filter(|m| self.inner.providers.iter().any(|p| p.serves(m)))
            .map(str::to_owned)
            .collect()
    }

    /// Tries each model of `chain` in turn until one is served (the first
    /// already reserved for): the next is tried at once when no key can
    /// serve the one before (all cooling down, disabled, exhausted, or every
    /// attempt failing), reserved for anew.
    async fn along_chain(
        &self,
        work: &mut Work,
        ctx: &RequestContext,
        stream: bool,
        chain: &[String],
    ) -> Result<Sent, ClientError> {
        let mut result = Err(ClientError::ModelNotFound {
            model: work.model.clone(),
        });
        for (i, model) in chain.iter().enumerate() {
            if i > 0 {
                self.cancel(work.reservation.take());
                work.model.clone_from(model);
                work.context_retried = false;
                self.reserve_covered(work, ctx).await?;
            }
            if self.inner.context.truncate {
                self.truncate(work, None);
            }
            let last = i + 1 == chain.len();
            result = self.attempts(work, ctx, stream, !last).await;
            match &result {
                Err(ClientError::NoKeyAvailable { .. } | ClientError::AttemptsExhausted { .. })
                    if !last =>
                {
                    tracing::debug!(model = %work.model, "no key can serve: falling back");
                }
                _ => break,
            }
        }
        result
    }

    /// Whether some provider serves `model` (by its name or an alias) with
    /// a key allowed it.
    pub fn serves(&self, model: &str) -> bool {
        self.inner.providers.iter().any(|p| p.serves(model))
    }

    /// The models the providers list (aliases included) that some key may
    /// serve, sorted; `None` when a provider serves any model.
    pub fn listed_models(&self) -> Option<Vec<String>> {
        let mut all = Vec::new();
        for p in &self.inner.providers {
            let listed = p.catalog.listed()?;
            all.extend(
                listed
                    .into_iter()
                    .filter(|m| p.serves(m))
                    .map(str::to_owned),
            );
        }
        all.sort();
        all.dedup();
        Some(all)
    }

    /// The canary's choice of model for this request.
    fn route(
        &self,
        model: &str,
        ctx: &RequestContext,
    ) -> Result<(String, Option<ArmInfo>), ClientError> {
        let Some(RolloutSlot {
            name: baseline,
            rollout,
            ..
        }) = self.inner.rollouts.get(model)
        else {
            return Ok((model.to_owned(), None));
        };
        // The canary's subject: the user, else the client key's name. With
        // neither, the request goes to the baseline.
        let Some(subject) = ctx
            .user
            .as_deref()
            .or(ctx.key_name.as_deref())
            .filter(|s| !s.is_empty())
        else {
            return Ok((
                model.to_owned(),
                Some(ArmInfo {
                    rollout: baseline.to_string(),
                    arm: canary::Arm::Baseline,
                }),
            ));
        };
        let headers: Vec<(&str, &str)> = ctx
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let cctx = canary::Context {
            subject,
            key_name: ctx.key_name.as_deref(),
            team: ctx.team.as_deref(),
            headers: &headers,
        };
        let rollout = lock(rollout);
        let a = rollout.assign(&cctx)?;
        Ok((
            a.model.to_string(),
            Some(ArmInfo {
                rollout: baseline.to_string(),
                arm: a.arm,
            }),
        ))
    }

    /// The output a request without a cap may write: the policy's default,
    /// else the model's most, so that its reservation is an upper bound.
    fn model_max_output(&self, model: &str) -> u64 {
        self.inner
            .retry
            .default_max_output_tokens
            .unwrap_or_else(|| {
                self.inner
                    .prices
                    .resolve(model)
                    .map_or(budget::DEFAULT_MAX_OUTPUT_TOKENS, |r| r.price.max_output())
            })
    }

    /// Reserves the worst case; when the budget cannot pay for all the
    /// output the request may write but can for at least the minimum, caps
    /// the request's output at what it can pay. A request without a cap is
    /// given the one it was reserved for (the model's most).
    fn reserve(&self, work: &mut Work, ctx: &RequestContext) -> Result<(), ClientError> {
        let Some(ledger) = &self.inner.ledger else {
            return Ok(());
        };
        let now = self.inner.clock.now();
        let scopes = Scopes {
            team: ctx.team.as_deref(),
            key: ctx.key_name.as_deref(),
        };
        let min = self.inner.min_output_tokens.min(work.max_output);
        let mut ledger = lock(ledger);
        let r = ledger.reserve_up_to(
            &scopes,
            &work.model,
            work.input_estimate,
            (min, work.max_output),
            now,
        );
        self.drain_ledger(&mut ledger);
        let r = r?;
        let field = work.endpoint.cap_field();
        if r.output_tokens() < work.max_output {
            work.max_output = r.output_tokens();
            work.capped = Some(r.output_tokens());
            work.request.set_max_output(r.output_tokens(), field);
        } else if work.endpoint != Endpoint::Embeddings
            && work.request.max_output_tokens().is_none()
        {
            // No cap asked for: the upstream is told the one reserved for,
            // so that no answer can cost more than its reservation.
            work.request.set_max_output(r.output_tokens(), field);
        }
        work.model = r.model().to_owned();
        work.degraded = r.degraded().cloned();
        work.reservation = Some(r);
        Ok(())
    }

    /// [`reserve`](Self::reserve); when this process's share of a shared
    /// limit is short, asks the share backer for more and tries again (a
    /// few times: other requests may take what it brought).
    async fn reserve_covered(
        &self,
        work: &mut Work,
        ctx: &RequestContext,
    ) -> Result<(), ClientError> {
        let mut tries = 0;
        loop {
            let (limit, needed) = match self.reserve(work, ctx) {
                Err(ClientError::Budget(budget::BudgetError::ShareSpent {
                    limit, needed, ..
                })) => (limit, needed),
                other => return other,
            };
            let backer = self.inner.backer.get().filter(|_| tries < SHARE_TRIES);
            let covered = match backer {
                Some(b) => b.cover(limit, needed).await,
                None => false,
            };
            if !covered {
                return self.reserve(work, ctx);
            }
            tries += 1;
        }
    }

    /// Sets what grows this process's shares of limits shared with other
    /// processes (once; later calls are ignored).
    pub fn set_share_backer(&self, backer: Arc<dyn crate::ShareBacker>) {
        let _ = self.inner.backer.set(backer);
    }

    pub(crate) fn cancel(&self, reservation: Option<Reservation>) {
        let (Some(ledger), Some(r)) = (&self.inner.ledger, reservation) else {
            return;
        };
        let mut ledger = lock(ledger);
        ledger.cancel(r, self.inner.clock.now());
        self.drain_ledger(&mut ledger);
    }

    /// Books what a request cost and returns it. Without usage from the
    /// upstream, the whole reservation is booked: spend is never undercounted.
    /// Without a budget, the cost is still computed from the price table
    /// (zero for a model without a price).
    pub(crate) fn settle(
        &self,
        model: &str,
        reservation: Option<Reservation>,
        usage: Option<Usage>,
        input_estimate: u64,
        max_output: u64,
    ) -> budget::Money {
        let tokens = match usage {
            Some(u) => Tokens {
                prompt: u.prompt_tokens,
                completion: u.completion_tokens,
                cached: u.cached_tokens,
                cache_write: u.cache_write_tokens,
            },
            None => Tokens::new(input_estimate, max_output),
        };
        let (Some(ledger), Some(r)) = (&self.inner.ledger, reservation) else {
            return self
                .inner
                .prices
                .resolve(model)
                .map_or(budget::Money::ZERO, |p| p.price.cost(tokens));
        };
        let mut ledger = lock(ledger);
        let s = ledger.settle(r, tokens, self.inner.clock.now());
        self.drain_ledger(&mut ledger);
        s.cost
    }

    /// Keeps the instructions and the newest turns that fit the window
    /// (`context::fit`: tool calls stay with their answers).
    fn truncate(&self, work: &mut Work, limit: Option<u64>) -> bool {
        let window = limit.or_else(|| {
            self.inner
                .prices
                .resolve(&work.model)
                .ok()
                .and_then(|r| r.price.context_window)
        });
        let Some(window) = window else { return false };
        let room = window.saturating_sub(work.max_output);
        // The estimate counts every message (and more): when it fits, all
        // of them do, and the history is not walked again.
        if work.input_estimate <= room {
            return false;
        }
        let Some(messages) = work.request.messages() else {
            return false;
        };
        let messages: Vec<_> = messages.items().collect();
        let Some(keep) = crate::context::fit(&messages, room) else {
            return false;
        };
        work.request.keep_messages(&keep);
        true
    }

    // ----- the attempt loop ----------------------------------------------

    /// Attempts with keys of the providers that serve `work.model` until one
    /// answers. With `fall_back`, gives up as soon as no key can serve (a
    /// fallback model is tried at once rather than waited for).
    async fn attempts(
        &self,
        work: &mut Work,
        ctx: &RequestContext,
        stream: bool,
        fall_back: bool,
    ) -> Result<Sent, ClientError> {
        let inner = &self.inner;
        let deadline = inner.clock.now() + inner.retry.deadline;
        let mut excluded: Vec<(usize, KeyId)> = Vec::new();
        let mut last = String::from("no attempt was made");
        let first = work.attempts;
        let spent = |work: &Work| work.attempts - first >= inner.retry.max_attempts;
        // Waiting for keys never loops without bound, even with a frozen clock.
        for _ in 0..10_000 {
            if spent(work) {
                break;
            }
            let want = Want {
                model: Some(&work.model),
                estimate: work.input_estimate,
                pinned: work.pinned.as_ref(),
                prefer: self.preferred(work),
            };
            let (p, lease) = match self.acquire(&excluded, &want) {
                Ok(x) => x,
                Err(no) if fall_back => {
                    return Err(ClientError::NoKeyAvailable {
                        detail: no.detail,
                        retry_at: no.retry_at,
                    });
                }
                Err(no) => {
                    if self
                        .wait_for_key(no, work.attempts, &mut excluded, deadline)
                        .await?
                    {
                        continue;
                    }
                    break;
                }
            };
            let key = (p, lease.key());
            let span = self
                .inner
                .providers
                .get(p)
                .map_or_else(tracing::Span::none, |pr| {
                    crate::trace::attempt(&pr.name, lease.name(), &work.model, work.attempts + 1)
                });
            let step = self
                .attempt(work, ctx, stream, p, lease, deadline)
                .instrument(span)
                .await?;
            match step {
                Step::Done(sent) => {
                    self.note_served(work, key);
                    return Ok(sent);
                }
                Step::Again => continue,
                Step::Retry(why) => {
                    last = why;
                    excluded.push(key);
                }
            }
            if spent(work) || !self.back_off(work.attempts - first, deadline).await {
                break;
            }
        }
        Err(ClientError::AttemptsExhausted {
            attempts: work.attempts,
            last,
        })
    }

    /// With no key to lease: when only keys that just failed could serve,
    /// backs off and lets them be tried again; when a key frees up before
    /// the deadline, sleeps until then. `Ok(true)` to try again, `Ok(false)`
    /// to give up, an error when no key will serve in time.
    pub(crate) async fn wait_for_key(
        &self,
        no: NoKeys,
        attempts: u32,
        excluded: &mut Vec<(usize, KeyId)>,
        deadline: SystemTime,
    ) -> Result<bool, ClientError> {
        let clock = &self.inner.clock;
        if no.only_excluded {
            excluded.clear();
            return Ok(self.back_off(attempts.max(1), deadline).await);
        }
        match no.retry_at {
            Some(t) if t <= deadline => {
                let now = clock.now();
                clock
                    .sleep(t.duration_since(now).unwrap_or(Duration::ZERO))
                    .await;
                Ok(true)
            }
            _ => Err(ClientError::NoKeyAvailable {
                detail: no.detail,
                retry_at: no.retry_at,
            }),
        }
    }

    /// Provider `p`, which a lease came from.
    pub(crate) fn provider(&self, p: usize) -> Result<&Provider, ClientError> {
        self.inner
            .providers
            .get(p)
            .ok_or_else(|| ClientError::Config("internal: a lease from an unknown provider".into()))
    }

    /// Provider `p`'s name (empty if there is none).
    pub(crate) fn provider_name(&self, p: usize) -> Arc<str> {
        self.inner
            .providers
            .get(p)
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }

    /// The time one attempt may take: the policy's, bounded by what is left
    /// before the deadline (at least a millisecond).
    pub(crate) fn attempt_timeout(&self, deadline: SystemTime) -> Duration {
        let left = deadline
            .duration_since(self.inner.clock.now())
            .unwrap_or(Duration::ZERO);
        self.inner
            .retry
            .attempt_timeout
            .min(left.max(Duration::from_millis(1)))
    }

    /// Classifies an answer of provider `p`, by its operator's rules first.
    pub(crate) fn classify_at(
        &self,
        p: usize,
        answer: &transport::Answer,
        latency: Duration,
    ) -> transport::Classification {
        let rules = self
            .inner
            .providers
            .get(p)
            .map_or(&[][..], |p| &p.rules[..]);
        classify_with(answer, rules, latency, self.inner.clock.now())
    }

    /// The request to send to `provider` with `lease`'s key, its timeout
    /// bounded by what is left before the deadline.
    fn upstream_request(
        &self,
        work: &Work,
        provider: &Provider,
        lease: &Lease,
        deadline: SystemTime,
    ) -> transport::Request {
        let mut request = transport::Request::new(
            provider.base_url.clone(),
            work.endpoint.path(),
            lease.secret().clone(),
            work.request.body().clone(),
        );
        request.timeout = self.attempt_timeout(deadline);
        request.include_usage = work.endpoint != Endpoint::Responses;
        request
    }

    /// One upstream attempt with the key of `lease` at provider `p`.
    async fn attempt(
        &self,
        work: &mut Work,
        ctx: &RequestContext,
        stream: bool,
        p: usize,
        lease: Lease,
        deadline: SystemTime,
    ) -> Result<Step, ClientError> {
        let provider = self.provider(p)?;
        work.attempts += 1;
        work.request
            .set_model(provider.catalog.upstream_name(&work.model));
        let request = self.upstream_request(work, provider, &lease, deadline);
        let sent_at = tokio::time::Instant::now();
        let (answer, lease) = if stream {
            match self.start_stream(work, p, lease, request).await {
                Started::Stream(s) => return Ok(Step::Done(Sent::Stream(s))),
                Started::Not(answer, lease) => (answer, lease),
            }
        } else {
            (self.inner.transport.send(request).await, lease)
        };
        match answer {
            Ok(answer) => self.on_answer(work, ctx, p, lease, answer, sent_at),
            Err(e) => self.failed(p, lease, &e).map(Step::Retry),
        }
    }

    /// An attempt that got no answer: the pool is told; a request the
    /// transport could not even build is the caller's error, anything else
    /// is a reason to try another key (returned, naming the key).
    pub(crate) fn failed(
        &self,
        p: usize,
        lease: Lease,
        e: &transport::TransportError,
    ) -> Result<String, ClientError> {
        crate::trace::failed(e);
        let key_name = lease.name().clone();
        self.report(p, lease, e.outcome(), None);
        if e.is_request() {
            return Err(ClientError::InvalidRequest(e.to_string()));
        }
        let provider = self.provider_name(p);
        Ok(format!("{provider}/{key_name}: {e}"))
    }

    /// Starts a stream: committed to this key on its first output (see
    /// [`is_output`](crate::stream::is_output)) or its end; an error before
    /// either (or an answer instead of events) is handed back with the
    /// lease, and the events read so far are never seen by the caller.
    async fn start_stream(
        &self,
        work: &mut Work,
        p: usize,
        lease: Lease,
        request: transport::Request,
    ) -> Started {
        let mut events = match self.inner.transport.send_stream(request).await {
            Ok(StreamStart::Answered(a)) => return Started::Not(Ok(a), lease),
            Ok(StreamStart::Events { events, .. }) => events,
            Err(e) => return Started::Not(Err(e), lease),
        };
        let (held, done) = match hold_until_output(&mut events).await {
            Ok(x) => x,
            Err(e) => return Started::Not(Err(e), lease),
        };
        let provider = self.provider_name(p);
        let meta = self.meta(
            work,
            &provider,
            lease.name(),
            Usage::default(),
            budget::Money::ZERO,
        );
        let reservation = work.reservation.take();
        let (input, output) = (work.input_estimate, work.max_output);
        let guard = StreamGuard::new(self.clone(), p, lease, reservation, meta, input, output);
        Started::Stream(Box::new(ClientStream::new(held, done, events, guard)))
    }

    /// Classifies an upstream answer, tells the pool, and decides.
    fn on_answer(
        &self,
        work: &mut Work,
        ctx: &RequestContext,
        p: usize,
        lease: Lease,
        answer: transport::Answer,
        sent_at: tokio::time::Instant,
    ) -> Result<Step, ClientError> {
        let provider = self.provider_name(p);
        let key_name = lease.name().clone();
        let c = self.classify_at(p, &answer, sent_at.elapsed());
        crate::trace::answered(answer.status, &c);
        self.report(p, lease, c.outcome, Some(&c.rate_limits));
        match c.class {
            Class::Success => {
                let usage = c.usage;
                let (input, output) = (work.input_estimate, work.max_output);
                let cost = self.settle(&work.model, work.reservation.take(), usage, input, output);
                let meta = self.meta(work, &provider, &key_name, usage.unwrap_or_default(), cost);
                self.record(
                    work,
                    Some((&provider, &key_name)),
                    cost.micros(),
                    usage.as_ref(),
                );
                let raw = answer.body;
                Ok(Step::Done(Sent::Answer(Box::new(ApiResponse {
                    raw,
                    meta,
                }))))
            }
            Class::ContextLengthExceeded { limit } => {
                if !work.context_retried && self.adapt_to_context(work, ctx, limit)? {
                    work.context_retried = true;
                    return Ok(Step::Again);
                }
                Err(ClientError::ContextLengthExceeded {
                    model: work.model.clone(),
                    limit,
                })
            }
            Class::ClientError { status } => Err(ClientError::Upstream {
                status,
                error: c.error.map(Box::new),
                key: key_name.to_string(),
            }),
            class => Ok(Step::Retry(format!("{provider}/{key_name}: {class:?}"))),
        }
    }

    /// Sleeps a full-jitter backoff; false if it would pass the deadline.
    pub(crate) async fn back_off(&self, retry: u32, deadline: SystemTime) -> bool {
        let draw = {
            let mut state = lock(&self.inner.jitter);
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let wait = self.inner.retry.backoff(retry, draw);
        if self.inner.clock.now() + wait > deadline {
            return false;
        }
        self.inner.clock.sleep(wait).await;
        true
    }

    /// On a context-length error: truncate (once), or move to a larger model.
    fn adapt_to_context(
        &self,
        work: &mut Work,
        ctx: &RequestContext,
        limit: Option<u64>,
    ) -> Result<bool, ClientError> {
        if self.inner.context.truncate && self.truncate(work, limit) {
            return Ok(true);
        }
        let Some(bigger) = self.inner.context.fallback_models.get(&work.model).cloned() else {
            return Ok(false);
        };
        // The price changes with the model: reserve again for it.
        self.cancel(work.reservation.take());
        work.model = bigger;
        self.reserve(work, ctx)?;
        Ok(true)
    }

    /// The key that served `work`'s conversation last, while affinity
    /// remembers it.
    fn preferred(&self, work: &Work) -> Option<(usize, KeyId)> {
        let (affinity, token) = (self.inner.affinity.as_ref()?, work.affinity?);
        let now = self.inner.clock.now();
        affinity
            .get(token, &work.model, now)
            .map(|s| (s.provider, s.key))
    }

    /// Remembers that `key` served `work`'s conversation.
    fn note_served(&self, work: &Work, (provider, key): (usize, KeyId)) {
        if let (Some(affinity), Some(token)) = (&self.inner.affinity, work.affinity) {
            let now = self.inner.clock.now();
            affinity.served((token, &work.model), provider, key, now);
        }
    }

    /// Leases a key for `want` from the first provider (by priority) that
    /// serves its model and has one: the pinned key only, when the request
    /// is pinned.
    pub(crate) fn acquire(
        &self,
        excluded: &[(usize, KeyId)],
        want: &Want<'_>,
    ) -> Result<(usize, Lease), NoKeys> {
        let now = ts(self.inner.clock.now());
        let mut detail = Vec::new();
        let mut retry_at: Option<SystemTime> = None;
        let mut only_excluded = !excluded.is_empty();
        for (i, provider) in self.inner.providers.iter().enumerate() {
            if want.pinned.is_some_and(|p| *p.provider != *provider.name)
                || want.model.is_some_and(|m| !provider.catalog.serves(m))
            {
                continue;
            }
            let names = want.model.map(|m| provider.names(m)).unwrap_or_default();
            let exclude: Vec<KeyId> = excluded
                .iter()
                .filter(|(p, _)| *p == i)
                .map(|(_, k)| *k)
                .collect();
            let mut pool = lock(&provider.pool);
            let only = want.pinned.map(|p| pool.find_serving(&p.key));
            if only == Some(None) {
                detail.push(format!(
                    "{}: key {:?} is gone",
                    provider.name,
                    want.pinned.map_or("", |p| &p.key)
                ));
                continue;
            }
            let opts = AcquireOptions {
                estimated_tokens: want.estimate,
                exclude: &exclude,
                model: &names,
                only: only.flatten(),
                prefer: want.prefer.filter(|(p, _)| *p == i).map(|(_, k)| k),
            };
            let r = pool.acquire_with(now, &opts);
            self.drain_pool(provider, &mut pool);
            match r {
                Ok(lease) => return Ok((i, lease)),
                Err(e) => {
                    detail.push(format!("{}: {}", provider.name, e.unavailable));
                    if let Some(t) = e.retry_at.map(Timestamp::to_system_time) {
                        retry_at = Some(retry_at.map_or(t, |r| r.min(t)));
                    }
                    let u = e.unavailable;
                    only_excluded &= u.total() == u.excluded + u.other_models;
                }
            }
        }
        if detail.is_empty() {
            detail.push(match (want.pinned, want.model) {
                (Some(p), _) => format!("provider {:?} is gone", p.provider),
                (None, Some(m)) => format!("no provider serves {m:?}"),
                (None, None) => "no provider".to_owned(),
            });
        }
        Err(NoKeys {
            detail: detail.join("; "),
            retry_at,
            only_excluded,
        })
    }

    /// Tells the pool what happened, and rests the key if the answer says it
    /// has nothing left until a reset.
    /// Counts `tokens` against `key`'s quota at provider `provider` (a
    /// stream cut short).
    pub(crate) fn count_tokens(&self, provider: usize, key: KeyId, tokens: u64) {
        let Some(p) = self.inner.providers.get(provider) else {
            return;
        };
        if tokens == 0 {
            return;
        }
        let now = ts(self.inner.clock.now());
        let mut pool = lock(&p.pool);
        pool.count_tokens(key, tokens, now);
        self.drain_pool(p, &mut pool);
    }

    pub(crate) fn report(
        &self,
        provider: usize,
        lease: Lease,
        outcome: Outcome,
        limits: Option<&RateLimits>,
    ) {
        let Some(p) = self.inner.providers.get(provider) else {
            return;
        };
        let now = ts(self.inner.clock.now());
        let key = lease.key();
        let mut pool = lock(&p.pool);
        if let Some(name) = pool.name(key) {
            lock(&self.inner.stats).attempt(&p.name, name, &outcome);
        }
        pool.report(lease, outcome, now);
        if let Some(wait) = limits.and_then(RateLimits::exhausted_for) {
            let _ = pool.defer(key, now.saturating_add(wait), now);
        }
        self.drain_pool(p, &mut pool);
        // Most outcomes move no timer earlier; waking the monitor on each
        // would cost a task switch per request.
        self.inner.wake.if_sooner(pool.poll_timeout());
    }

    fn meta(
        &self,
        work: &Work,
        provider: &Arc<str>,
        key: &Arc<str>,
        usage: Usage,
        cost: budget::Money,
    ) -> ResponseMeta {
        ResponseMeta {
            provider: provider.clone(),
            key: key.clone(),
            model_requested: work.model_requested.clone(),
            model_used: work.model.clone(),
            arm: work.arm.clone(),
            degraded: work.degraded.clone(),
            attempts: work.attempts,
            max_tokens: work.capped,
            cost,
            usage,
            latency: work.started.elapsed(),
        }
    }

    fn record(
        &self,
        work: &Work,
        key: Option<(&str, &str)>,
        cost_micros: u64,
        usage: Option<&Usage>,
    ) {
        let finished = Finished {
            ok: key.is_some(),
            attempts: work.attempts,
            latency: work.started.elapsed(),
            key,
            model: &work.model,
            arm: work.arm.as_ref().map(|a| (a.rollout.as_str(), a.arm)),
            cost_micros,
            cache: self.cache_use(&work.model, usage),
        };
        lock(&self.inner.stats).record(&finished);
    }

    pub(crate) fn record_stream(&self, meta: &ResponseMeta, ok: bool) {
        let finished = Finished {
            ok,
            attempts: meta.attempts,
            latency: meta.latency,
            key: Some((&meta.provider, &meta.key)),
            model: &meta.model_used,
            arm: meta.arm.as_ref().map(|a| (a.rollout.as_str(), a.arm)),
            cost_micros: meta.cost.micros(),
            cache: self.cache_use(&meta.model_used, ok.then_some(&meta.usage)),
        };
        lock(&self.inner.stats).record(&finished);
    }

    /// What an answer's `usage` read from the upstream's cache, and what
    /// that saved at `model`'s prices.
    fn cache_use(&self, model: &str, usage: Option<&Usage>) -> crate::stats::CacheUse {
        let Some(u) = usage else {
            return crate::stats::CacheUse::default();
        };
        crate::stats::CacheUse {
            prompt_tokens: u.prompt_tokens,
            cached_tokens: u.cached_tokens,
            saved_micros: self.cache_saving(model, u.cached_tokens).micros(),
        }
    }

    /// What `cached` input tokens served from an upstream's cache saved
    /// against `model`'s full input rate (zero for a model without a
    /// price or without a cached rate).
    pub fn cache_saving(&self, model: &str, cached: u64) -> budget::Money {
        self.inner
            .prices
            .resolve(model)
            .map_or(budget::Money::ZERO, |r| r.price.cache_saving(cached))
    }

    // ----- events --------------------------------------------------------

    /// Receives every event from now on (pool, budget, canary).
    pub fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        self.inner.events.subscribe()
    }

    fn publish(&self, event: ClientEvent) {
        crate::monitor::trace(&event);
        if let ClientEvent::Pool {
            event: keypool_core::Event::Rotated { .. },
            ..
        } = &event
        {
            lock(&self.inner.stats).rotations += 1;
        }
        // No subscriber is not an error.
        let _ = self.inner.events.send(event);
    }

    pub(crate) fn drain_pool(&self, provider: &Provider, pool: &mut KeyPool) {
        while let Some(event) = pool.poll_event() {
            self.publish(ClientEvent::Pool {
                provider: provider.name.clone(),
                event,
            });
        }
    }

    pub(crate) fn drain_ledger(&self, ledger: &mut Ledger) {
        while let Some(event) = ledger.poll_event() {
            self.publish(ClientEvent::Budget(event));
        }
    }

    pub(crate) fn drain_rollout(&self, name: &Arc<str>, rollout: &mut Rollout) {
        while let Some(event) = rollout.poll_event() {
            self.publish(ClientEvent::Canary {
                rollout: name.clone(),
                event,
            });
        }
    }

    // ----- operating the layers ------------------------------------------

    /// Runs `f` on a provider's key pool (add, rotate, disable, …); events it
    /// causes are published. `None` if there is no such provider.
    pub fn with_pool<R>(
        &self,
        provider: &str,
        f: impl FnOnce(&mut KeyPool, Timestamp) -> R,
    ) -> Option<R> {
        let p = self.inner.providers.iter().find(|p| &*p.name == provider)?;
        let mut pool = lock(&p.pool);
        let r = f(&mut pool, ts(self.inner.clock.now()));
        self.drain_pool(p, &mut pool);
        self.inner.wake.now();
        Some(r)
    }

    /// Reads a provider's key pool without changing it (no events, no
    /// wake-up of the monitor). `None` if there is no such provider.
    pub fn read_pool<R>(&self, provider: &str, f: impl FnOnce(&KeyPool) -> R) -> Option<R> {
        let p = self.inner.providers.iter().find(|p| &*p.name == provider)?;
        Some(f(&lock(&p.pool)))
    }

    /// Runs `f` on the rollout of `model`. `None` if it has none.
    pub fn with_rollout<R>(
        &self,
        model: &str,
        f: impl FnOnce(&mut Rollout, SystemTime) -> R,
    ) -> Option<R> {
        let slot = self.inner.rollouts.get(model)?;
        let mut rollout = lock(&slot.rollout);
        let r = f(&mut rollout, self.inner.clock.now());
        self.drain_rollout(&slot.name, &mut rollout);
        self.inner.wake.now();
        Some(r)
    }

    /// Runs `f` on the budget ledger. `None` without a budget.
    pub fn with_ledger<R>(&self, f: impl FnOnce(&mut Ledger, SystemTime) -> R) -> Option<R> {
        let ledger = self.inner.ledger.as_ref()?;
        let mut ledger = lock(ledger);
        let r = f(&mut ledger, self.inner.clock.now());
        self.drain_ledger(&mut ledger);
        self.inner.wake.now();
        Some(r)
    }

    /// The providers' names, by priority.
    pub fn providers(&self) -> Vec<Arc<str>> {
        self.inner
            .providers
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// The models that have a canary rollout.
    pub fn rollout_models(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.rollouts.keys().cloned().collect();
        v.sort();
        v
    }

    /// The clock the client uses.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Whether any key of any provider could serve right now.
    pub fn ready(&self) -> bool {
        let now = ts(self.inner.clock.now());
        self.inner.providers.iter().any(|p| {
            let mut pool = lock(&p.pool);
            pool.handle_timeout(now);
            self.drain_pool(p, &mut pool);
            pool.available() > 0
        })
    }
}
