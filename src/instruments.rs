//! Prometheus instruments: the histograms and counters that actors and the HTTP layer
//! update as work happens. Values that already live elsewhere (runs by state, slots,
//! stream counts, the newest progress of live runs) are not copied here: `GET
//! /metrics` reads them when it is scraped (see [`crate::http::prometheus`]).
//!
//! One [`Instruments`] per server, shared by `Arc`: several servers in one process
//! (the tests) keep their own figures.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

/// Methods counted by name; any other is counted as `other` (label cardinality stays
/// bounded whatever clients send).
const KNOWN_METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// The server's instruments.
#[derive(Debug, Clone)]
pub struct Instruments {
    registry: Registry,
    /// Seconds from an append reaching the journal to its durable answer.
    pub journal_append: Histogram,
    /// Events written per flush (the group commit's batch size).
    pub journal_flush_events: Histogram,
    /// Seconds a run waited in the queue before its slots were claimed.
    pub queue_wait: Histogram,
    /// Seconds a tick of the progress ticker started after it was due.
    pub ticker_lag: Histogram,
    /// HTTP requests answered, by route pattern, method and status.
    http_requests: IntCounterVec,
    /// Seconds to answer an HTTP request (to the response head, for streams), by route
    /// pattern and method.
    http_duration: HistogramVec,
    /// Times an actor came back after a panic in one of its handlers, by actor.
    actor_restarts: IntCounterVec,
}

impl Default for Instruments {
    fn default() -> Self {
        Self::new()
    }
}

impl Instruments {
    /// A fresh set, registered in a registry of its own.
    pub fn new() -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram options");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        // 50 µs .. ~1.6 s
        let short = exponential_buckets(0.000_05, 2.0, 16).expect("valid buckets");
        let journal_append = histogram(
            "runyard_journal_append_seconds",
            "Time from an append reaching the journal to its durable answer",
            short.clone(),
        );
        let journal_flush_events = histogram(
            "runyard_journal_flush_events",
            "Events written per journal flush (group commit batch size)",
            exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
        );
        let queue_wait = histogram(
            "runyard_queue_wait_seconds",
            "Time a run waited in the queue before its slots were claimed",
            // 10 ms .. ~23 h
            exponential_buckets(0.01, 4.0, 13).expect("valid buckets"),
        );
        let ticker_lag = histogram(
            "runyard_ticker_lag_seconds",
            "How late a progress tick started after it was due",
            short.clone(),
        );
        let http_requests = IntCounterVec::new(
            Opts::new(
                "runyard_http_requests_total",
                "HTTP requests answered, by route pattern, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid counter options");
        registry
            .register(Box::new(http_requests.clone()))
            .expect("registered once");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "runyard_http_request_duration_seconds",
                "Time to answer an HTTP request (to the response head for event streams)",
            )
            .buckets(short),
            &["route", "method"],
        )
        .expect("valid histogram options");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("registered once");
        let actor_restarts = IntCounterVec::new(
            Opts::new(
                "runyard_actor_restarts_total",
                "Times an actor came back after a panic in one of its handlers (a supervised \
                 actor restarted; a run actor's attempt re-queued), by actor",
            ),
            &["actor"],
        )
        .expect("valid counter options");
        registry
            .register(Box::new(actor_restarts.clone()))
            .expect("registered once");
        // The process's CPU, memory, file descriptors and threads (Linux).
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Self {
            registry,
            journal_append,
            journal_flush_events,
            queue_wait,
            ticker_lag,
            http_requests,
            http_duration,
            actor_restarts,
        }
    }

    /// The counter of `actor`'s restarts after a panic, for the actor to count with.
    pub fn actor_restarts(&self, actor: &str) -> IntCounter {
        self.actor_restarts.with_label_values(&[actor])
    }

    /// Makes each of `actors`' restart series show from the first scrape, at 0 until
    /// it restarts.
    pub fn count_restarts_of(&self, actors: &[&str]) {
        for actor in actors {
            self.actor_restarts.with_label_values(&[actor]);
        }
    }

    /// Counts one answered HTTP request (`status`: its three digits). `route` is the
    /// matched route pattern (or `unmatched`), so label values stay bounded.
    pub fn http_request(&self, route: &str, method: &str, status: &str, seconds: f64) {
        let method = KNOWN_METHODS
            .into_iter()
            .find(|m| *m == method)
            .unwrap_or("other");
        self.http_requests
            .with_label_values(&[route, method, status])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    /// Every family registered here, as they are now.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_counted_as_other() {
        let instruments = Instruments::new();
        instruments.http_request("/api/v1/runs", "GET", "200", 0.001);
        instruments.http_request("/api/v1/runs", "BREW", "405", 0.001);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&instruments.gather())
            .expect("text");
        assert!(text.contains(
            r#"runyard_http_requests_total{method="GET",route="/api/v1/runs",status="200"} 1"#
        ));
        assert!(text.contains(
            r#"runyard_http_requests_total{method="other",route="/api/v1/runs",status="405"} 1"#
        ));
        assert!(!text.contains("BREW"));
    }

    #[test]
    fn every_actor_has_a_restart_series_from_the_start() {
        let instruments = Instruments::new();
        instruments.count_restarts_of(&["journal", "dispatcher", "local", "ticker", "slot", "run"]);
        instruments.actor_restarts("ticker").inc();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&instruments.gather())
            .expect("text");
        assert!(text.contains(r#"runyard_actor_restarts_total{actor="ticker"} 1"#));
        for kind in ["journal", "dispatcher", "local", "slot", "run"] {
            let series = format!(r#"runyard_actor_restarts_total{{actor="{kind}"}} 0"#);
            assert!(text.contains(&series), "{series} in {text}");
        }
    }
}
