//! Spans of upstream attempts, for traces (see the gateway's `telemetry`).
//!
//! Declared at `TRACE` under the target `gen_ai`, with attribute names from
//! `OpenTelemetry`'s `GenAI` semantic conventions; no subscriber enables that
//! target unless traces are exported, so a disabled span costs a cached
//! interest check.

use tracing::Span;
use tracing::field::Empty;
use transport::{Classification, TransportError};

/// Whether attempt spans are being recorded (cheap: a cached check).
fn on() -> bool {
    tracing::enabled!(target: "gen_ai", tracing::Level::TRACE)
}

/// The span of attempt `n` of a request, with the key of `key` at
/// `provider`.
pub(crate) fn attempt(provider: &str, key: &str, model: &str, n: u32) -> Span {
    tracing::trace_span!(
        target: "gen_ai",
        "attempt",
        otel.name = "upstream attempt",
        otel.kind = "client",
        gen_ai.provider.name = provider,
        gen_ai.request.model = model,
        gateway.key = key,
        gateway.attempt = n,
        gateway.outcome = Empty,
        http.response.status_code = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
    )
}

/// Records an answer's class and usage on the current attempt span.
pub(crate) fn answered(status: u16, c: &Classification) {
    if !on() {
        return;
    }
    let span = Span::current();
    span.record("http.response.status_code", status);
    span.record("gateway.outcome", tracing::field::debug(&c.outcome));
    if let Some(u) = c.usage {
        span.record("gen_ai.usage.input_tokens", u.prompt_tokens);
        span.record("gen_ai.usage.output_tokens", u.completion_tokens);
    }
    if !matches!(c.class, transport::Class::Success) {
        span.record("error.type", tracing::field::debug(&c.class));
    }
}

/// Records a failure to get an answer on the current attempt span.
pub(crate) fn failed(e: &TransportError) {
    if !on() {
        return;
    }
    let span = Span::current();
    span.record("gateway.outcome", tracing::field::debug(e.outcome()));
    span.record("error.type", tracing::field::display(e));
}
