//! Logging and traces.
//!
//! - Logging: `tracing` with structured fields, written to stderr ([`init`]).
//! - Traces: one OpenTelemetry trace per run, built from the journal by the
//!   [`Tracer`](crate::actors::tracer::Tracer) ([`run_spans`]), plus a span per HTTP
//!   request, exported over OTLP/HTTP by each server's own pipeline ([`traces`]).
//!   Off unless `telemetry.otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set.

pub mod run_spans;
pub mod traces;

use std::sync::atomic::Ordering;

use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `filter`. Calling it
/// twice is harmless (the second call does nothing).
pub fn init(filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| f.parse::<EnvFilter>().ok())
        .unwrap_or_else(|| EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
