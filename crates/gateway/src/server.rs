//! The OpenAI-compatible HTTP server.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use gateway_client::{ApiRequest, Client, ClientError, Endpoint, RequestContext, ResponseMeta};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::auth::{Auth, CHAT_WRITE, ClientKey, Denied, EMBEDDINGS_READ};
use crate::manage;
use crate::store::{StoreHandle, UsageRecord, Write};

/// What every handler shares.
pub struct AppState {
    /// The client.
    pub client: Client,
    /// Authentication.
    pub auth: Auth,
    /// Models for `/v1/models`.
    pub models: Vec<String>,
    /// Where usage, keys, states and the audit log are kept.
    pub store: StoreHandle,
    /// Recent events and request counts, for the dashboard.
    pub(crate) recent: Mutex<Recent>,
    /// Held by each management change, so that concurrent changes to one key
    /// cannot interleave their in-memory and stored updates.
    pub(crate) manage_lock: tokio::sync::Mutex<()>,
    metrics: PrometheusHandle,
    /// Request counters by model label, then (endpoint, status): registered
    /// once, then counted without building a metric key. Models outside
    /// `models` share the label `other`, so callers cannot grow it (or
    /// `/metrics`) without bound.
    request_counters: Mutex<RequestCounters>,
}

/// Model label → (endpoint, status, counter).
type RequestCounters = HashMap<String, Vec<(&'static str, u16, metrics::Counter)>>;

/// Seconds per bucket of the dashboard's request chart.
pub(crate) const BUCKET_SECS: i64 = 10;
/// Buckets the chart shows (10 minutes).
pub(crate) const BUCKETS: usize = 60;
/// Events the dashboard lists.
pub(crate) const RECENT_EVENTS: usize = 50;

/// Recent activity for the dashboard.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// (bucket start in Unix seconds, answered, failed), oldest first.
    pub(crate) buckets: VecDeque<(i64, u64, u64)>,
    /// (Unix seconds, text), oldest first.
    pub(crate) events: VecDeque<(i64, String)>,
}

impl Recent {
    pub(crate) fn count(&mut self, now_secs: i64, ok: bool) {
        let bucket = now_secs - now_secs.rem_euclid(BUCKET_SECS);
        if self.buckets.back().is_none_or(|b| b.0 != bucket) {
            self.buckets.push_back((bucket, 0, 0));
            while self.buckets.len() > BUCKETS {
                self.buckets.pop_front();
            }
        }
        if let Some(b) = self.buckets.back_mut() {
            if ok {
                b.1 += 1;
            } else {
                b.2 += 1;
            }
        }
    }

    pub(crate) fn event(&mut self, now_secs: i64, text: String) {
        self.events.push_back((now_secs, text));
        while self.events.len() > RECENT_EVENTS {
            self.events.pop_front();
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The process-wide Prometheus recorder (metrics has one global recorder).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (tests embedding the server): keep ours local.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

impl AppState {
    /// State for a client, keeping its records in `store`.
    pub fn new(client: Client, auth: Auth, mut models: Vec<String>, store: StoreHandle) -> Self {
        models.sort();
        models.dedup();
        AppState {
            client,
            auth,
            models,
            store,
            recent: Mutex::new(Recent::default()),
            manage_lock: tokio::sync::Mutex::new(()),
            metrics: prometheus(),
            request_counters: Mutex::new(HashMap::new()),
        }
    }

    /// The `gateway_requests_total` counter for one endpoint, model and status.
    fn request_counter(
        &self,
        endpoint: &'static str,
        model: &str,
        status: u16,
    ) -> metrics::Counter {
        let model = if self
            .models
            .binary_search_by(|m| m.as_str().cmp(model))
            .is_ok()
        {
            model
        } else {
            "other"
        };
        let mut counters = self
            .request_counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, _, c)) = counters
            .get(model)
            .and_then(|v| v.iter().find(|(e, s, _)| *e == endpoint && *s == status))
        {
            return c.clone();
        }
        let counter = metrics::counter!("gateway_requests_total", "endpoint" => endpoint, "model" => model.to_owned(), "status" => status.to_string());
        counters
            .entry(model.to_owned())
            .or_default()
            .push((endpoint, status, counter.clone()));
        counter
    }

    /// Now on the client's clock, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.client
            .clock()
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    pub(crate) fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The routes.
pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    // The two routes that carry the traffic set `x-request-id` themselves:
    // the middleware's boxing and extra service calls were about a tenth of
    // a proxied request's allocations.
    let api = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings));
    let rest = Router::new()
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status_text))
        .route("/status.json", get(status_json))
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard.json", get(crate::dashboard::data))
        .route("/v1/keys", post(manage::create_key).get(manage::list_keys))
        .route("/v1/keys/rotate", post(manage::rotate_key))
        .route(
            "/v1/keys/{key_id}/schedule-revoke",
            post(manage::schedule_revoke),
        )
        .route(
            "/v1/keys/{key_id}",
            axum::routing::delete(manage::delete_key),
        )
        .route("/v1/usage", get(manage::usage))
        .route(
            "/admin/upstream-keys",
            get(manage::list_upstream).post(manage::add_upstream),
        )
        .route(
            "/admin/upstream-keys/{provider}/{name}",
            axum::routing::delete(manage::remove_upstream),
        )
        .route(
            "/admin/upstream-keys/{provider}/{name}/{action}",
            post(manage::upstream_command),
        )
        .route("/admin/canary", get(manage::get_canary))
        .route(
            "/admin/canary/{model}/{command}",
            post(manage::canary_command),
        )
        .route("/admin/audit", get(manage::get_audit))
        .fallback(|| async {
            error_response(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                "no such route",
            )
        })
        .layer(middleware::from_fn(request_id));
    api.merge(rest)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// The request's id: the caller's `x-request-id` when it is printable and
/// at most 128 bytes long, or a new one.
fn request_id_of(headers: &HeaderMap) -> HeaderValue {
    let given = headers
        .get(REQUEST_ID)
        .filter(|v| v.to_str().is_ok() && v.len() <= 128 && !v.is_empty());
    match given {
        Some(v) => v.clone(),
        None => {
            let n = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            HeaderValue::from_str(&format!("req-{t:x}-{n:x}"))
                .unwrap_or_else(|_| HeaderValue::from_static("req-0"))
        }
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every answer an `x-request-id` (the caller's, or a new one), on
/// the routes that do not set it themselves.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request_id_of(request.headers());
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// OpenAI's error shape.
pub fn error_response(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, axum::Json(body)).into_response()
}

fn with_retry_after(mut r: Response, wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Maps the client's errors to statuses and OpenAI's error shape.
fn client_error(e: &ClientError) -> Response {
    let msg = e.to_string();
    match e {
        ClientError::NoKeyAvailable { retry_at, .. } => {
            let r = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "no_key_available",
                &msg,
            );
            let wait = retry_at
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or(Duration::from_secs(1));
            with_retry_after(r, wait)
        }
        ClientError::Budget(_) => error_response(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            "budget_exceeded",
            &msg,
        ),
        ClientError::ContextLengthExceeded { .. } => error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "context_length_exceeded",
            &msg,
        ),
        ClientError::Upstream { status, error, .. } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
            let kind = error
                .as_ref()
                .and_then(|e| e.kind.clone())
                .unwrap_or_else(|| "invalid_request_error".into());
            let code = error
                .as_ref()
                .and_then(|e| e.code.clone())
                .unwrap_or_default();
            let message = error
                .as_ref()
                .and_then(|e| e.message.clone())
                .unwrap_or(msg);
            error_response(status, &kind, &code, &message)
        }
        ClientError::AttemptsExhausted { .. } | ClientError::Stream(_) => error_response(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream_unavailable",
            &msg,
        ),
        ClientError::InvalidRequest(_) | ClientError::Canary(_) => error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            &msg,
        ),
        ClientError::Config(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal",
            &msg,
        ),
    }
}

fn meta_headers(r: &mut Response, meta: &ResponseMeta, cost: bool) {
    let h = r.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-gateway-key", &meta.key);
    set("x-gateway-provider", &meta.provider);
    set("x-gateway-model", &meta.model_used);
    if cost {
        // Integer arithmetic: money never passes through floating point.
        set("x-gateway-cost-usd", &meta.cost.decimal());
    }
    h.insert(
        HeaderName::from_static("x-gateway-attempts"),
        HeaderValue::from(meta.attempts),
    );
}

/// A request that passed authentication and checks.
struct Admitted {
    request: ApiRequest,
    ctx: RequestContext,
    stream: bool,
    key: Option<Arc<ClientKey>>,
}

/// Authenticates, reads and checks a request; the error is the answer to send.
/// Authentication comes first, so unknown clients cost no body parsing.
#[allow(clippy::result_large_err)] // the error is the HTTP response itself
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
    scope: &str,
) -> Result<Admitted, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let key = match state.auth.authenticate(authorization, state.now_ms()) {
        Ok(k) => k,
        Err(Denied::Unauthenticated) => {
            return Err(error_response(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "missing or unknown API key",
            ));
        }
        Err(Denied::Forbidden(m)) => {
            return Err(error_response(
                StatusCode::FORBIDDEN,
                "permission_error",
                "forbidden",
                &m,
            ));
        }
    };
    let body = body.map_err(|r| {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_body"
        };
        error_response(status, "invalid_request_error", code, &r.body_text())
    })?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            &format!("the body is not valid JSON: {e}"),
        )
    })?;
    let stream = json.get("stream").and_then(serde_json::Value::as_bool) == Some(true);
    let user = json
        .get("user")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let request = ApiRequest::from_json(json).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "missing_model",
            &e.to_string(),
        )
    })?;
    let mut ctx = RequestContext {
        user: user.or_else(|| {
            headers
                .get("x-user-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        }),
        ..RequestContext::default()
    };
    if let Some(k) = &key {
        if !k.has_scope(scope) {
            return Err(error_response(
                StatusCode::FORBIDDEN,
                "permission_error",
                "missing_scope",
                &format!("key {:?} lacks the {scope} scope", k.name),
            ));
        }
        if !k.allows_model(request.model()) {
            let m = format!("key {:?} may not use model {:?}", k.name, request.model());
            return Err(error_response(
                StatusCode::FORBIDDEN,
                "permission_error",
                "model_not_allowed",
                &m,
            ));
        }
        if let Err(wait) = k.check_rate() {
            let m = format!("key {:?} is over its rate limit", k.name);
            return Err(with_retry_after(
                error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "client_rate_limited",
                    &m,
                ),
                wait,
            ));
        }
        ctx.key_name = Some(k.name.clone());
        ctx.team = k.team.clone();
    }
    ctx.headers = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-") && n.as_str() != "x-request-id")
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    Ok(Admitted {
        request,
        ctx,
        stream,
        key,
    })
}

fn record(
    s: &AppState,
    endpoint: &'static str,
    model: &str,
    status: StatusCode,
    started: Instant,
    meta: Option<&ResponseMeta>,
) {
    let secs = s.now_ms().div_euclid(1000);
    s.recent().count(secs, status.is_success());
    // Per key, upstream attempts by outcome come from the client's statistics
    // at scrape time (a key label here would add a series per key and status).
    s.request_counter(endpoint, model, status.as_u16())
        .increment(1);
    metrics::histogram!("gateway_request_duration_seconds", "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
    if let Some(m) = meta {
        if let Some(arm) = &m.arm {
            let arm_name = match arm.arm {
                canary::Arm::Baseline => "baseline".to_owned(),
                canary::Arm::Candidate(i) => format!("candidate-{i}"),
            };
            metrics::counter!("gateway_canary_assignments_total", "rollout" => arm.rollout.clone(), "arm" => arm_name).increment(1);
        }
    }
}

async fn chat(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    with_request_id(
        &headers,
        serve_api(s, &headers, body, Endpoint::ChatCompletions).await,
    )
}

async fn embeddings(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    with_request_id(
        &headers,
        serve_api(s, &headers, body, Endpoint::Embeddings).await,
    )
}

fn with_request_id(headers: &HeaderMap, mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id_of(headers));
    response
}

async fn serve_api(
    s: Arc<AppState>,
    headers: &HeaderMap,
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    let (name, scope) = match endpoint {
        Endpoint::ChatCompletions => ("chat", CHAT_WRITE),
        Endpoint::Embeddings => ("embeddings", EMBEDDINGS_READ),
    };
    let Admitted {
        request,
        ctx,
        stream,
        key,
    } = match admit(&s, headers, body, scope) {
        Ok(x) => x,
        Err(r) => {
            record(&s, name, "", r.status(), started, None);
            return r;
        }
    };
    let model = request.model().to_owned();
    if stream && endpoint == Endpoint::ChatCompletions {
        return match s.client.chat_completion_stream(request, &ctx).await {
            Ok(stream) => {
                let mut response = Response::new(Body::empty());
                meta_headers(&mut response, stream.meta(), false);
                record(
                    &s,
                    name,
                    &model,
                    StatusCode::OK,
                    started,
                    Some(stream.meta()),
                );
                let state = StreamState {
                    stream: Some(stream),
                    failed: false,
                    app: s.clone(),
                    key,
                };
                let body = futures_util::stream::unfold(state, next_chunk);
                *response.body_mut() = Body::from_stream(body);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                response
            }
            Err(e) => {
                let r = client_error(&e);
                record(&s, name, &model, r.status(), started, None);
                r
            }
        };
    }
    let result = match endpoint {
        Endpoint::ChatCompletions => s.client.chat_completion(request, &ctx).await,
        Endpoint::Embeddings => s.client.embeddings(request, &ctx).await,
    };
    match result {
        Ok(answer) => {
            save_usage(&s, key.as_deref(), &answer.meta).await;
            // The upstream's bytes, unchanged: nothing re-serialised, field
            // order and numbers exactly as it sent them.
            let mut r = ([(header::CONTENT_TYPE, "application/json")], answer.raw).into_response();
            meta_headers(&mut r, &answer.meta, true);
            record(
                &s,
                name,
                &model,
                StatusCode::OK,
                started,
                Some(&answer.meta),
            );
            r
        }
        Err(e) => {
            let r = client_error(&e);
            record(&s, name, &model, r.status(), started, None);
            r
        }
    }
}

/// A stream being passed through; usage is saved when it ends.
struct StreamState {
    stream: Option<gateway_client::ClientStream>,
    failed: bool,
    app: Arc<AppState>,
    key: Option<Arc<ClientKey>>,
}

async fn next_chunk(
    mut st: StreamState,
) -> Option<(Result<bytes::Bytes, std::convert::Infallible>, StreamState)> {
    let stream = st.stream.as_mut()?;
    match stream.next().await {
        Some(Ok(data)) => Some((Ok(bytes::Bytes::from(format!("data: {data}\n\n"))), st)),
        Some(Err(e)) => {
            st.failed = true;
            let err = serde_json::json!({"error": {"message": e.to_string(), "type": "api_error", "code": "stream_failed"}});
            Some((Ok(bytes::Bytes::from(format!("data: {err}\n\n"))), st))
        }
        None => {
            let ended = st.stream.take()?;
            if !st.failed {
                // Saved before the client sees the end of the answer.
                save_usage(&st.app, st.key.as_deref(), ended.meta()).await;
            }
            Some((Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")), st))
        }
    }
}

/// Saves a settled request and waits for the commit, so an answered request
/// is never missing from the usage records.
async fn save_usage(s: &AppState, key: Option<&ClientKey>, meta: &ResponseMeta) {
    let record = UsageRecord {
        at: s.now_ms(),
        key_id: key.and_then(|k| k.id.clone()),
        key_name: key.map(|k| k.name.clone()),
        team: key.and_then(|k| k.team.clone()),
        provider: meta.provider.to_string(),
        upstream_key: meta.key.to_string(),
        model: meta.model_used.clone(),
        prompt_tokens: meta.usage.prompt_tokens,
        completion_tokens: meta.usage.completion_tokens,
        cost_micros: meta.cost.micros(),
    };
    if let Err(e) = s.store.write(Write::Usage(record)).await {
        tracing::error!("a settled request was not recorded: {e}");
        metrics::counter!("gateway_usage_write_failures_total").increment(1);
    }
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let data: Vec<serde_json::Value> = s
        .models
        .iter()
        .map(|m| serde_json::json!({"id": m, "object": "model", "owned_by": "gateway"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.client.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "no_key_ready",
            "no key can serve right now",
        )
    }
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    // Gauges are set from a snapshot at scrape time.
    let snap = s.client.snapshot();
    for p in &snap.providers {
        for k in &p.pool.keys {
            let state = match k.state {
                keypool_core::KeyState::Active => "active",
                keypool_core::KeyState::CoolingDown { .. } => "cooling_down",
                keypool_core::KeyState::HalfOpen => "half_open",
                keypool_core::KeyState::Exhausted { .. } => "exhausted",
                keypool_core::KeyState::Disabled { .. } => "disabled",
                keypool_core::KeyState::Draining { .. } => "draining",
            };
            let labels = [
                ("provider", p.name.clone()),
                ("key", k.name.to_string()),
                ("state", state.to_owned()),
            ];
            metrics::gauge!("gateway_key_up", &labels).set(if k.selectable { 1.0 } else { 0.0 });
            metrics::gauge!("gateway_key_tokens_today", "provider" => p.name.clone(), "key" => k.name.to_string()).set(k.tokens_today as f64);
        }
    }
    for (key, outcomes) in &snap.stats.attempts {
        let (provider, name) = key.split_once('/').unwrap_or(("", key));
        for (outcome, n) in outcomes {
            metrics::counter!("gateway_upstream_attempts_total", "provider" => provider.to_owned(), "key" => name.to_owned(), "outcome" => *outcome).absolute(*n);
        }
    }
    for b in &snap.budget {
        let labels = [
            ("scope", b.scope.to_string()),
            ("period", b.period.to_string()),
        ];
        metrics::gauge!("gateway_budget_spent_usd", &labels).set(b.spent.micros() as f64 / 1e6);
        metrics::gauge!("gateway_budget_left_usd", &labels).set(b.left.micros() as f64 / 1e6);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn status_text(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        s.client.status_report(),
    )
        .into_response()
}

async fn status_json(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(s.client.snapshot()).into_response()
}

/// A server running in this process.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Ends when every serving thread has drained.
    task: tokio::task::JoinHandle<()>,
    /// Tasks that live as long as the server (the monitor, the state saver).
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The client behind the server (to operate its pools, rollouts, ledger).
    pub fn client(&self) -> &Client {
        &self.state.client
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, and
    /// returns whether they all did.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.stop.send_replace(true);
        let drained = tokio::time::timeout(grace, self.task).await.is_ok();
        for t in &self.background {
            t.abort();
        }
        for t in self.background {
            let _ = t.await;
        }
        // The last references to the state (and its store) go with `self`.
        drained
    }

    /// The state every handler shares.
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Ties `task` to the server: it is stopped by [`shutdown`](Self::shutdown).
    pub fn keep(&mut self, task: tokio::task::JoinHandle<()>) {
        self.background.push(task);
    }
}

/// Serves `app` on `listener` until `stopped` turns true, then lets the
/// requests in flight finish. Connections get `TCP_NODELAY`, so each chunk
/// of a streamed answer leaves at once instead of waiting for the client to
/// acknowledge the previous one.
async fn serve_until(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
}

/// Starts serving `state` on `listener` in the background, on the calling
/// runtime and on `threads - 1` more threads.
///
/// Each extra thread runs a single-threaded runtime of its own that accepts
/// from the same socket and serves its connections start to finish, upstream
/// calls included (with a per-thread transport such as
/// [`ThreadLocalHyper`](crate::ThreadLocalHyper)): no request hops between
/// threads, so none pays for waking another thread. Measured on 2 cores, a
/// single-threaded runtime spends about a fifth less CPU per proxied request
/// than tokio's work-stealing one.
pub fn spawn(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    body_limit: usize,
    threads: std::num::NonZeroUsize,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let app = router(state.clone(), body_limit);
    // One socket, accepted from by every thread (tokio's bind set its options).
    let shared = listener.into_std()?;
    let mut done = Vec::new();
    for i in 1..threads.get() {
        let std_listener = shared.try_clone()?;
        let (app, stopped) = (app.clone(), stopped.clone());
        let (finished, drained) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("gateway-serve-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let served = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(listener) => serve_until(listener, app, stopped).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = served {
                        tracing::error!("serving thread {i} stopped: {e}");
                    }
                });
                let _ = finished.send(());
            })?;
        done.push(drained);
    }
    let listener = tokio::net::TcpListener::from_std(shared)?;
    let task = tokio::spawn(async move {
        if let Err(e) = serve_until(listener, app, stopped).await {
            tracing::error!("serving stopped: {e}");
        }
        for d in done {
            let _ = d.await;
        }
    });
    Ok(Running {
        addr,
        state,
        stop,
        task,
        background: Vec::new(),
    })
}
