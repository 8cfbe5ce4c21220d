//! OpenTelemetry traces: the tracer provider that exports over OTLP/HTTP
//! (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the layer that turns
//! the spans made for traces (target [`TRACE_TARGET`]) into OpenTelemetry
//! spans, and the two bridges between our W3C [`TraceContext`] and theirs:
//! the caller's `traceparent` as a span's parent, and the current span's
//! context for the upstream request.
//!
//! The exporter posts through reqwest, the HTTP client the server already
//! has, on the server's own tokio runtime: the SDK's batch processor runs on
//! a thread of its own and only waits for the request it hands over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::{Level, Metadata, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::{RootSampler, TraceSampler, TracesConfig};
use crate::domain::{TraceContext, TRACE_TARGET};

/// How long one export may take (connect, send, answer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the shutdown waits for the last spans to be exported.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry exporter: {0}")]
pub struct ExporterError(String);

/// The tracer provider for `config`, exporting in batches (the SDK reads
/// `OTEL_BSP_SCHEDULE_DELAY` and the other `OTEL_BSP_*` variables) through
/// reqwest on `runtime`. Whoever builds it shuts it down ([`shutdown`]).
///
/// # Errors
/// [`ExporterError`] when the HTTP client or the exporter cannot be built.
pub fn provider(
    config: &TracesConfig,
    runtime: tokio::runtime::Handle,
) -> Result<SdkTracerProvider, ExporterError> {
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| ExporterError(e.to_string()))?;
    let headers = config
        .headers
        .expose()
        .iter()
        .filter_map(|(name, value)| {
            Some((
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).ok()?,
                reqwest::header::HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(OnRuntime {
            client,
            runtime,
            headers,
            failing: AtomicBool::new(false),
        })
        .build()
        .map_err(|e| ExporterError(e.to_string()))?;
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(config.sampler))
        .with_resource(resource)
        .build())
}

fn sampler(choice: TraceSampler) -> Sampler {
    let root = |r: RootSampler| match r {
        RootSampler::AlwaysOn => Sampler::AlwaysOn,
        RootSampler::AlwaysOff => Sampler::AlwaysOff,
        RootSampler::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    match choice {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBased(r) => Sampler::ParentBased(Box::new(root(r))),
    }
}

/// Exports what is left and stops the exporter, waiting at most
/// [`FLUSH_TIMEOUT`]. Call it from outside the runtime the exporter posts
/// on (that runtime still running): it blocks.
pub fn shutdown(provider: &SdkTracerProvider) {
    if let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
        tracing::warn!(error = %e, "could not export the last traces");
    }
}

/// The layer that exports: spans of [`TRACE_TARGET`] only, and our own
/// events at `info` and above as their span events (the lines a log would
/// have, with ids and outcomes, never chat text).
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("chatbot-server"))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_filter(filter_fn(is_traced))
}

/// What the trace layer sees.
fn is_traced(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.target() == TRACE_TARGET
    } else {
        meta.target().starts_with("chatbot_server") && *meta.level() <= Level::INFO
    }
}

/// Makes the caller's trace `span`'s parent (a no-op without export). Call
/// it before the span is entered or has children.
pub fn continue_trace(span: &tracing::Span, caller: Option<&TraceContext>) {
    let Some(caller) = caller else {
        return;
    };
    let (trace_id, parent_id, flags) = caller.parts();
    let remote = SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(parent_id),
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Makes `parent` `span`'s parent in the trace only, not in the span
/// registry: a span is exported once it and every child closed, so a
/// long-lived child (a WebSocket's span) would otherwise hold its parent
/// (the upgrade request's) back until the socket closes. A no-op without
/// export. Call it before `span` is entered or has children.
pub fn follow(span: &tracing::Span, parent: &tracing::Span) {
    if span.is_disabled() || parent.is_disabled() {
        return;
    }
    let _ = span.set_parent(parent.context());
}

/// The current span's OpenTelemetry context as W3C trace context, for an
/// outgoing request; `None` without export.
pub fn current_context() -> Option<TraceContext> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    TraceContext::from_parts(
        sc.trace_id().to_bytes(),
        sc.span_id().to_bytes(),
        sc.trace_flags().to_u8(),
    )
}

/// The exporter's HTTP client: reqwest, run on the server's runtime (the
/// batch processor's thread has none), with the configured headers.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    headers: reqwest::header::HeaderMap,
    /// The last export failed: said once per run of failures, not per batch.
    failing: AtomicBool,
}

#[async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, mut request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        for (name, value) in &self.headers {
            request.headers_mut().insert(name, value.clone());
        }
        let client = self.client.clone();
        let sent = self
            .runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(HttpError::from)
            .and_then(|answer| answer);
        match &sent {
            Ok(_) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("trace export works again");
            }
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(error = %e, "trace export failed; spans are dropped until it works");
            }
            _ => {}
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_follow_the_configuration() {
        let s = |c| format!("{:?}", sampler(c));
        assert_eq!(s(TraceSampler::AlwaysOff), "AlwaysOff");
        assert_eq!(s(TraceSampler::Ratio(0.5)), "TraceIdRatioBased(0.5)");
        assert_eq!(
            s(TraceSampler::ParentBased(RootSampler::AlwaysOn)),
            "ParentBased(AlwaysOn)"
        );
    }

    #[test]
    fn without_export_no_context_is_made_up() {
        let span = tracing::info_span!(target: TRACE_TARGET, "x");
        continue_trace(
            &span,
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .ok()
                .as_ref(),
        );
        let _in = span.enter();
        assert_eq!(current_context(), None);
    }
}
