//! The trace export pipeline of one server: an OTLP/HTTP (protobuf) exporter behind a
//! bounded batch queue on its own thread, and the counts of spans sent and lost.
//!
//! Each [`Application`](crate::startup::Application) builds its own [`Traces`] (none
//! at all when no endpoint is configured): nothing here is process-global but the
//! totals of [`span_counts`](super::span_counts), so servers in one process (the
//! integration tests) export to their own collectors.
//!
//! Handing a span over never waits: [`Traces::export`] puts it in a bounded queue
//! that the exporter thread drains every `telemetry.export_interval_ms` (or as soon
//! as a batch is full), or drops it, counted, when the queue is full. A slow or dead
//! collector therefore costs the exporter thread its time (each request is bounded by
//! the exporter's timeout, `OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default) and nothing
//! else: spans of a failed request are counted as dropped too.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceId};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator as _, RandomIdGenerator, SpanData,
    SpanExporter, SpanProcessor as _,
};
use opentelemetry_sdk::Resource;

use super::SpanCounts;
use crate::config::TelemetryConfig;
use crate::domain::Event;

/// Spans waiting for the exporter thread at most; more are dropped (and counted).
pub const QUEUE_SPANS: usize = 2048;

/// Spans sent in one request at most.
const BATCH_SPANS: usize = 512;

/// Path of the traces signal under an OTLP/HTTP base URL.
const TRACES_PATH: &str = "/v1/traces";

/// Totals over every [`Traces`] of the process, for [`super::span_counts`].
pub(super) static EXPORTED: AtomicU64 = AtomicU64::new(0);
/// See [`EXPORTED`].
pub(super) static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The span counts of one pipeline.
#[derive(Debug, Default)]
struct SpanStats {
    exported: AtomicU64,
    dropped: AtomicU64,
    /// Spans handed to the batch processor and not yet taken by an export: never
    /// more than its queue holds, so the processor itself never drops one uncounted.
    queued: AtomicUsize,
}

impl SpanStats {
    fn exported(&self, n: u64) {
        self.exported.fetch_add(n, Ordering::Relaxed);
        EXPORTED.fetch_add(n, Ordering::Relaxed);
    }

    fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        DROPPED.fetch_add(n, Ordering::Relaxed);
    }
}

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
pub struct TracesError {
    /// The traces URL.
    pub endpoint: String,
    /// What went wrong.
    pub reason: String,
}

/// One server's trace pipeline; cheap to clone (all clones share it).
#[derive(Clone)]
pub struct Traces {
    inner: Arc<Inner>,
}

struct Inner {
    processor: BatchSpanProcessor,
    stats: Arc<SpanStats>,
    /// Set once shut down: later spans are dropped, counted.
    closed: AtomicBool,
    endpoint: String,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces")
            .field("endpoint", &self.inner.endpoint)
            .field("counts", &self.counts())
            .finish()
    }
}

/// The URL spans are posted to: `base` with `/v1/traces` appended, unless it already
/// ends with it.
pub fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_string()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

impl Traces {
    /// Starts the pipeline when `config` names an endpoint; `None` (traces off)
    /// otherwise. The resource is `service.name` (`OTEL_SERVICE_NAME`, or `runyard`),
    /// `service.version`, and what `OTEL_RESOURCE_ATTRIBUTES` adds.
    pub fn start(config: &TelemetryConfig) -> Result<Option<Self>, TracesError> {
        let Some(base) = config.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let endpoint = traces_url(base);
        // The request timeout is the exporter's: `OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s
        // by default.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TracesError {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        let stats = Arc::new(SpanStats::default());
        let exporter = CountingExporter {
            inner: exporter,
            stats: Arc::clone(&stats),
            failing: AtomicBool::new(false),
            endpoint: endpoint.clone(),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE_SPANS)
            .with_max_export_batch_size(BATCH_SPANS)
            .with_scheduled_delay(config.export_interval())
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        processor.set_resource(&resource());
        let scope = InstrumentationScope::builder("runyard")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Ok(Some(Self {
            inner: Arc::new(Inner {
                processor,
                stats,
                closed: AtomicBool::new(false),
                endpoint,
                ids: RandomIdGenerator::default(),
                scope,
            }),
        }))
    }

    /// The URL spans are posted to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Spans sent and lost by this pipeline since it started.
    pub fn counts(&self) -> SpanCounts {
        SpanCounts {
            exported: self.inner.stats.exported.load(Ordering::Relaxed),
            dropped: self.inner.stats.dropped.load(Ordering::Relaxed),
        }
    }

    /// The instrumentation scope runyard's spans are reported under.
    pub fn scope(&self) -> &InstrumentationScope {
        &self.inner.scope
    }

    /// A fresh random trace id.
    pub fn new_trace_id(&self) -> TraceId {
        self.inner.ids.new_trace_id()
    }

    /// A fresh random span id.
    pub fn new_span_id(&self) -> SpanId {
        self.inner.ids.new_span_id()
    }

    /// Queues a finished span for export, or drops it (counted) when the queue is
    /// full or the pipeline is shut down. Never blocks.
    pub fn export(&self, span: SpanData) {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            inner.stats.dropped(1);
            return;
        }
        if inner.stats.queued.fetch_add(1, Ordering::AcqRel) >= QUEUE_SPANS {
            inner.stats.queued.fetch_sub(1, Ordering::AcqRel);
            inner.stats.dropped(1);
            return;
        }
        inner.processor.on_end(span);
    }

    /// The `TraceAssigned` event of a new run: a child of `caller` (the submit
    /// request's `traceparent`) when there is one, in a fresh trace otherwise.
    pub fn assign(&self, caller: Option<&SpanContext>) -> Event {
        let (trace_id, parent) = match caller {
            Some(caller) => (caller.trace_id(), Some(caller.span_id().to_string())),
            None => (self.new_trace_id(), None),
        };
        Event::TraceAssigned {
            trace_id: trace_id.to_string(),
            span_id: self.new_span_id().to_string(),
            parent_span_id: parent,
        }
    }

    /// Sends what is queued and stops the exporter thread, waiting at most `within`;
    /// spans handed over later are dropped. Blocks the calling thread: call it from
    /// a thread of its own (see [`crate::actors::tracer::flush_and_stop`]).
    pub fn shutdown_blocking(&self, within: Duration) -> OTelSdkResult {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.processor.shutdown_with_timeout(within)
    }
}

/// `service.name` from `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` when either
/// sets it, `runyard` otherwise; plus `service.version`.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| name.as_str() != "unknown_service");
    let mut builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named {
        builder = builder.with_service_name("runyard");
    }
    builder.build()
}

/// The caller's span named by a W3C `traceparent` header value (with its
/// `tracestate`), if the value is a valid one.
pub fn caller_span(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    struct Headers<'a> {
        traceparent: &'a str,
        tracestate: Option<&'a str>,
    }
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.traceparent),
                "tracestate" => self.tracestate,
                _ => None,
            }
        }

        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    let headers = Headers {
        traceparent: traceparent?,
        tracestate,
    };
    let context = TraceContextPropagator::new().extract(&headers);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// The OTLP exporter, counting what it sends and what it fails to send, and logging
/// the first failure of a streak (not every one: a dead collector would flood the log).
#[derive(Debug)]
struct CountingExporter {
    inner: opentelemetry_otlp::SpanExporter,
    stats: Arc<SpanStats>,
    failing: AtomicBool,
    endpoint: String,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.stats.queued.fetch_sub(spans, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                self.stats.exported(spans as u64);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "span export works again");
                }
            }
            Err(e) => {
                self.stats.dropped(spans as u64);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, spans, "span export failed; spans are dropped (and counted) until the collector takes them");
                } else {
                    tracing::debug!(endpoint = %self.endpoint, error = %e, spans, "span export failed");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://gateway/otlp"),
            "https://gateway/otlp/v1/traces"
        );
    }

    #[test]
    fn a_valid_traceparent_names_the_callers_span_and_anything_else_none() {
        let span = caller_span(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("vendor=value"),
        )
        .expect("valid");
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.is_remote() && span.is_sampled());
        assert_eq!(span.trace_state().get("vendor"), Some("value"));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert!(caller_span(Some(bad), None).is_none(), "{bad}");
        }
        assert!(caller_span(None, None).is_none());
    }
}
