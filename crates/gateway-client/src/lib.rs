//! The layers composed: a client that picks a model (canary), checks the
//! budget, leases a key (key pool), sends (transport), reads the answer, and
//! fails over to other keys and providers.
//!
//! Users embed [`Client`] in their Rust services; the `gateway` server is
//! built on it. Every layer below stays usable on its own; this crate owns
//! the clock, the waiting, and the locks.
//!
//! # Key design decision: a boring driver over pure state machines
//!
//! The decisions live in `keypool-core`, `canary` and `budget`, which do no
//! I/O. This crate only reads the [`Clock`], calls the [`transport::Transport`],
//! and tells the state machines what happened, holding each lock for one
//! decision and never across an `.await`. Time comes from a replaceable
//! [`Clock`]: with a [`ManualClock`] a test drives a whole day of cooldowns,
//! resets and retries without waiting.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use gateway_client::{ApiRequest, Client, RequestContext};
//! use keypool_core::{KeyPool, NewKey, PoolConfig, Timestamp};
//! use transport::{MockReply, MockTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut pool = KeyPool::new(PoolConfig::default())?;
//! pool.add(NewKey::new("prod-1", "sk-prod-0123456789abcdef"), Timestamp::EPOCH)?;
//! pool.add(NewKey::new("prod-2", "sk-prod-fedcba9876543210"), Timestamp::EPOCH)?;
//!
//! // prod-1 is rate limited; prod-2 answers.
//! let upstream = MockTransport::new();
//! upstream.script("sk-prod-0123456789abcdef", [MockReply::error(429, "requests", "rate_limit_exceeded", "slow down").header("retry-after", "20")]);
//! upstream.script("sk-prod-fedcba9876543210", [MockReply::chat("สวัสดี", 12, 4)]);
//!
//! let client = Client::builder()
//!     .provider("relay", "https://relay.example/v1", 0, pool)
//!     .transport(Arc::new(upstream))
//!     .build()?;
//! let answer = client
//!     .chat_completion(ApiRequest::chat("gpt-4.1", &[("user", "ทดสอบ")]), &RequestContext::user("u-42"))
//!     .await?;
//! assert_eq!((&*answer.meta.key, answer.meta.attempts), ("prod-2", 2));
//! println!("{}", client.status_report());
//! # Ok(())
//! # }
//! ```

mod affinity;
mod client;
mod clock;
mod context;
mod error;
mod monitor;
mod pass;
mod policy;
mod probe;
mod report;
mod request;
mod routing;
mod share;
mod stats;
mod stream;
mod trace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use client::{Client, ClientEvent, Endpoint, WeakClient};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::ClientError;
pub use pass::{PassAnswer, PassRequest};
pub use policy::{Analysis, ContextPolicy, RetryPolicy};
pub use probe::ProbeOutcome;
pub use report::{LimitSnapshot, ProviderSnapshot, RolloutSnapshot, Snapshot};
pub use request::{ApiRequest, ApiResponse, ArmInfo, Pinned, RequestContext, ResponseMeta};
pub use routing::{Catalog, Fallbacks};
pub use share::ShareBacker;
pub use stats::{CounterSnapshot, StatsSnapshot};
pub use stream::ClientStream;

use budget::{Ledger, PriceTable};
use canary::{Gates, Rollout};
use keypool_core::KeyPool;
use transport::Transport;

/// Builds a [`Client`].
#[derive(Default)]
pub struct ClientBuilder {
    providers: Vec<(String, String, u32, KeyPool, Catalog)>,
    fallbacks: Fallbacks,
    rules: HashMap<String, Vec<transport::ErrorRule>>,
    rollouts: Vec<(Rollout, Analysis)>,
    ledger: Option<Ledger>,
    prices: Option<PriceTable>,
    transport: Option<Arc<dyn Transport>>,
    retry: RetryPolicy,
    context: ContextPolicy,
    gates: Gates,
    clock: Option<Arc<dyn Clock>>,
    min_output_tokens: Option<u64>,
    cache_affinity: Duration,
}

/// The least output a request is served with when the budget cannot pay
/// for all it may write (see [`ClientBuilder::min_output_tokens`]).
pub const DEFAULT_MIN_OUTPUT_TOKENS: u64 = 256;

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("providers", &self.providers.len())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Adds a provider: a name, its base URL (e.g. `https://api.openai.com/v1`),
    /// a priority (0 is tried first; higher ones serve when lower ones cannot),
    /// and its key pool.
    pub fn provider(
        self,
        name: impl Into<String>,
        base_url: impl Into<String>,
        priority: u32,
        pool: KeyPool,
    ) -> Self {
        self.provider_serving(name, base_url, priority, pool, Catalog::any())
    }

    /// Adds a provider that serves the models of `catalog`, by the names
    /// it gives them ([`provider`](Self::provider) serves any model).
    pub fn provider_serving(
        mut self,
        name: impl Into<String>,
        base_url: impl Into<String>,
        priority: u32,
        pool: KeyPool,
        catalog: Catalog,
    ) -> Self {
        self.providers
            .push((name.into(), base_url.into(), priority, pool, catalog));
        self
    }

    /// The operator's rules for reading `provider`'s answers, applied
    /// before the built-in classification (the first that matches decides).
    pub fn error_rules(
        mut self,
        provider: impl Into<String>,
        rules: Vec<transport::ErrorRule>,
    ) -> Self {
        self.rules.insert(provider.into(), rules);
        self
    }

    /// Keeps a conversation on the key that last served it for `ttl` after
    /// each of its requests (prompt-cache affinity: providers cache prompt
    /// prefixes per key). The conversation is a chat or Responses request's
    /// `prompt_cache_key`, else its stable prefix (instructions or system
    /// prompt, tools, first user turn); the pool bounds how much busier than
    /// its pick the preferred key may be. Off (zero) unless set; the
    /// gateway's `[routing] cache_affinity_secs` defaults to 300.
    #[must_use]
    pub fn cache_affinity(mut self, ttl: Duration) -> Self {
        self.cache_affinity = ttl;
        self
    }

    /// The models to try, in turn, when no key of any provider can serve a
    /// model.
    pub fn fallbacks(mut self, fallbacks: Fallbacks) -> Self {
        self.fallbacks = fallbacks;
        self
    }

    /// Adds a canary rollout for its baseline model, judged by the
    /// client's gates at the monitor's interval.
    pub fn rollout(self, rollout: Rollout) -> Self {
        self.rollout_with(rollout, Analysis::default())
    }

    /// Adds a canary rollout with its own analysis: on or off, its
    /// interval, its gates.
    pub fn rollout_with(mut self, rollout: Rollout, analysis: Analysis) -> Self {
        self.rollouts.push((rollout, analysis));
        self
    }

    /// The budget ledger.
    pub fn ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Prices used for context windows (default: the ledger's, else the built-in defaults).
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// The transport (required).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The context-length policy.
    pub fn context(mut self, context: ContextPolicy) -> Self {
        self.context = context;
        self
    }

    /// The gates canary analysis judges by.
    pub fn gates(mut self, gates: Gates) -> Self {
        self.gates = gates;
        self
    }

    /// When the budget cannot pay for the most a request may write but can
    /// for at least `tokens` of output, the request is served with its
    /// output capped at what the budget can pay ([`ResponseMeta::max_tokens`]
    /// says so); below that it is refused. Default
    /// [`DEFAULT_MIN_OUTPUT_TOKENS`].
    pub fn min_output_tokens(mut self, tokens: u64) -> Self {
        self.min_output_tokens = Some(tokens);
        self
    }

    /// The clock (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the client: providers are ordered by priority (stable for equals).
    pub fn build(self) -> Result<Client, ClientError> {
        if self.providers.is_empty() {
            return Err(ClientError::Config(
                "at least one provider is needed".into(),
            ));
        }
        let transport = self
            .transport
            .ok_or_else(|| ClientError::Config("a transport is needed".into()))?;
        let mut names = std::collections::HashSet::new();
        for (name, ..) in &self.providers {
            if !names.insert(name.clone()) {
                return Err(ClientError::Config(format!(
                    "provider {name:?} appears twice"
                )));
            }
        }
        let mut providers: Vec<client::Provider> = self
            .providers
            .into_iter()
            .map(
                |(name, base_url, priority, pool, catalog)| client::Provider {
                    rules: self.rules.get(&name).cloned().unwrap_or_default(),
                    name: name.into(),
                    base_url: base_url.into(),
                    priority,
                    pool: Mutex::new(pool),
                    catalog,
                },
            )
            .collect();
        providers.sort_by_key(|p| p.priority);
        let mut rollouts = HashMap::new();
        for (r, analysis) in self.rollouts {
            let model = r.baseline().to_string();
            if rollouts.contains_key(&model) {
                return Err(ClientError::Config(format!(
                    "two rollouts for model {model:?}"
                )));
            }
            rollouts.insert(
                model,
                client::RolloutSlot {
                    name: r.baseline().clone(),
                    rollout: Mutex::new(r),
                    analysis: Mutex::new(analysis),
                    next_analysis: Mutex::new(None),
                },
            );
        }
        let prices = self
            .prices
            .or_else(|| self.ledger.as_ref().map(|l| l.prices().clone()))
            .unwrap_or_else(PriceTable::defaults);
        let inner = client::Inner {
            providers,
            rollouts,
            fallbacks: self.fallbacks,
            ledger: self.ledger.map(Mutex::new),
            prices,
            transport,
            jitter: Mutex::new(self.retry.seed),
            retry: self.retry,
            context: self.context,
            gates: self.gates,
            min_output_tokens: self.min_output_tokens.unwrap_or(DEFAULT_MIN_OUTPUT_TOKENS),
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            stats: Mutex::new(stats::Stats::default()),
            events: tokio::sync::broadcast::channel(1024).0,
            wake: monitor::MonitorWake::new(),
            verdicts: Mutex::new(std::collections::BTreeMap::new()),
            backer: std::sync::OnceLock::new(),
            affinity: affinity::Affinity::new(self.cache_affinity),
        };
        Ok(Client {
            inner: Arc::new(inner),
        })
    }
}
