//! Logging and traces.
//!
//! - Logging: `tracing` with structured fields, written to stderr ([`init`]).
//! - Traces: one OpenTelemetry trace per run, built from the journal by the
//!   [`Tracer`](crate::actors::tracer::Tracer) ([`run_spans`]), plus a span per HTTP
//!   request, exported over OTLP/HTTP by each server's own pipeline ([`traces`]).
//!   Off unless `telemetry.otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set.
//! - The actors' own work (journal flushes, slot claims, checkpoints journaled, …) as
//!   `tracing` spans put inside those traces and exported through the same pipeline
//!   by `tracing-opentelemetry` ([`work`]), when the real binary installed its
//!   subscriber with [`init_with_traces`].

pub mod run_spans;
pub mod traces;
pub mod work;

use std::sync::atomic::Ordering;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Spans sent to a collector and spans lost, counted since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpanCounts {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans that never reached a collector: dropped because the export queue was
    /// full (a slow or absent collector), in a request that failed, or handed over
    /// after shutdown.
    pub dropped: u64,
}

/// The spans exported and dropped by every trace pipeline of this process (a server
/// has one when traces are on; all zero when they are off). Cheap: two atomic loads,
/// for the Prometheus endpoint.
pub fn span_counts() -> SpanCounts {
    SpanCounts {
        exported: traces::EXPORTED.load(Ordering::Relaxed),
        dropped: traces::DROPPED.load(Ordering::Relaxed),
    }
}

/// Installs the global subscriber: logs to stderr. `RUST_LOG`, when set, wins over
/// `filter`. Calling it twice is harmless (the second call does nothing).
pub fn init(filter: &str) {
    init_with_traces(filter, None);
}

/// [`init`], and with `traces` the actors' spans exported through that pipeline
/// ([`work::layer`]). For the process that runs one server (`runyard serve`): the
/// subscriber is the process's, so a library user or a test running many servers in
/// one process calls [`init`] instead.
pub fn init_with_traces(filter: &str, traces: Option<&traces::Traces>) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| f.parse::<EnvFilter>().ok())
        .unwrap_or_else(|| EnvFilter::new(filter));
    // The log filter is the log's alone: the actors' spans are exported whatever it
    // lets through.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces.map(work::layer))
        .try_init();
}
