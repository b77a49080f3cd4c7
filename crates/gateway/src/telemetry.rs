//! Traces: each request a span, each upstream attempt a child span, exported
//! over OTLP when `[telemetry] otlp_endpoint` is set.
//!
//! The spans are declared at `TRACE` level under the target `gen_ai`
//! (named after `OpenTelemetry`'s `GenAI` semantic conventions, whose attribute
//! names they use). The log's filter never enables that target, so without
//! an exporter their call sites are disabled and a request pays one cached
//! interest check for each; with one, only the exporter's layer sees them.

use gateway_client::ResponseMeta;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing::field::Empty;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{ConfigError, TelemetryConfig};

/// The target every span of a trace is declared under.
pub const TARGET: &str = "gen_ai";

/// An exporter running: keep it, and [`shutdown`](Self::shutdown) it at the
/// end, which sends the spans still waiting.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Sends what waits and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("gateway: the traces still waiting could not be sent: {e}");
        }
    }
}

/// The layer that exports the `gen_ai` spans to `config`'s endpoint, and
/// its exporter; `None` when traces are off.
pub fn layer<S>(
    config: &TelemetryConfig,
) -> Result<Option<(impl Layer<S> + use<S>, Exporter)>, ConfigError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(endpoint) = config.endpoint()? else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| ConfigError::new("telemetry.otlp_endpoint", e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name().to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("keypool-gateway");
    // Only the attributes the spans declare: no source location, thread
    // or busy/idle timings (less to build and send for every span).
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(Targets::new().with_target(TARGET, LevelFilter::TRACE));
    Ok(Some((layer, Exporter { provider })))
}

/// The span of one request to the OpenAI surface: `operation` (`chat`,
/// `embeddings`) of `model`, for `team`.
pub(crate) fn request_span(operation: &'static str, model: &str, team: Option<&str>) -> Span {
    tracing::trace_span!(
        target: "gen_ai",
        "request",
        otel.name = format!("{operation} {model}"),
        otel.kind = "server",
        gen_ai.operation.name = operation,
        gen_ai.request.model = model,
        gateway.team = team,
        gen_ai.response.model = Empty,
        gen_ai.provider.name = Empty,
        gateway.key = Empty,
        gateway.attempts = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gateway.cost_micros = Empty,
        http.response.status_code = Empty,
    )
}

/// Records how the request of `span` was answered.
pub(crate) fn answered(span: &Span, status: u16, meta: Option<&ResponseMeta>) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", status);
    let Some(m) = meta else { return };
    span.record("gen_ai.response.model", m.model_used.as_str());
    span.record("gen_ai.provider.name", &*m.provider);
    span.record("gateway.key", &*m.key);
    span.record("gateway.attempts", m.attempts);
    span.record("gen_ai.usage.input_tokens", m.usage.prompt_tokens);
    span.record("gen_ai.usage.output_tokens", m.usage.completion_tokens);
    span.record("gateway.cost_micros", m.cost.micros());
}
