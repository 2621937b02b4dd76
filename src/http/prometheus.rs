//! `GET /metrics`: Prometheus text exposition, and the middleware that counts HTTP
//! requests.
//!
//! Two kinds of figures are shown. Histograms and counters of things as they happen
//! (journal append latency and flush sizes, queue waits, ticker lag, HTTP requests,
//! actors' restarts after a panic)
//! live in the server's [`Instruments`](crate::instruments::Instruments). Everything
//! that already has a home (runs by state, the queue, slots, stream counts, journal
//! health, the progress history writer, the newest progress of live runs and whether
//! they are stalled) is read
//! when the endpoint is scraped, into families made for that scrape, so nothing is
//! kept twice and runs that end leave no series behind.

use std::borrow::Cow;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder as _, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::{ApiError, AppState, ErrorCode};
use crate::actors::journal::GetCounters;
use crate::domain::RunState;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counts every answered request in the server's instruments, by route pattern (never
/// the raw path: label values stay bounded), method and status.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    // One reference count, not a copy of every instrument handle.
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(req).await;
    if let Some(state) = state {
        let (status, route) = match &response {
            Ok(response) => (response.status(), route_of(response.request())),
            Err(error) => (
                error.as_response_error().status_code(),
                Cow::Borrowed(UNMATCHED),
            ),
        };
        state.actors.instruments.http_request(
            &route,
            method.as_str(),
            status.as_str(),
            started.elapsed().as_secs_f64(),
        );
    }
    response
}

/// The route label of requests that no route served.
const UNMATCHED: &str = "unmatched";

/// The pattern of the route that served `req`: its resource data when the router got
/// to it (no second walk of the route table), else the table's match for requests
/// refused before routing (401, 403), else `unmatched`.
fn route_of(req: &actix_web::HttpRequest) -> Cow<'static, str> {
    match req.app_data::<super::state::RoutePattern>() {
        Some(pattern) => Cow::Borrowed(pattern.0),
        None => req
            .match_pattern()
            .map_or(Cow::Borrowed(UNMATCHED), Cow::Owned),
    }
}

/// `GET /metrics`: every family, in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    description = "Prometheus metrics in the text exposition format: runs by state, the \
        queue and its wait times, slots, journal append latency and flush sizes, replay \
        time, ticker lag, actor restarts after a panic by actor, event-stream clients, \
        HTTP requests by route and status, \
        exported and dropped trace spans, the process, samples/s, loss and epoch of \
        each live run, and whether each live run is stalled (series of runs that ended \
        are gone at the next scrape).",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain", body = String),
        (status = 500, description = "`internal`: the metrics could not be encoded.", body = super::error::Problem, content_type = super::error::PROBLEM),
    )
)]
pub async fn exposition(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let counters = state.actors.journal.send(GetCounters).await.ok();
    let mut families = state.actors.instruments.gather();
    families.extend(scraped(&state, counters).map_err(internal)?);
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut text)
        .map_err(internal)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, CONTENT_TYPE))
        .body(text))
}

fn internal(e: prometheus::Error) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("cannot encode the metrics: {e}"),
    )
}

/// A registry made for one scrape.
struct Scrape(Registry);

impl Scrape {
    fn gauge(&self, name: &str, help: &str, value: f64) -> prometheus::Result<()> {
        let gauge = Gauge::with_opts(Opts::new(name, help))?;
        gauge.set(value);
        self.0.register(Box::new(gauge))
    }

    fn int_gauge(&self, name: &str, help: &str, value: i64) -> prometheus::Result<()> {
        let gauge = IntGauge::with_opts(Opts::new(name, help))?;
        gauge.set(value);
        self.0.register(Box::new(gauge))
    }

    fn counter(&self, name: &str, help: &str, value: u64) -> prometheus::Result<()> {
        let counter = IntCounter::with_opts(Opts::new(name, help))?;
        counter.inc_by(value);
        self.0.register(Box::new(counter))
    }

    fn int_gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(vec.clone()))?;
        Ok(vec)
    }

    fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(vec.clone()))?;
        Ok(vec)
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
        let vec = GaugeVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(vec.clone()))?;
        Ok(vec)
    }
}

/// The families read from where their figures live.
fn scraped(
    state: &AppState,
    journal: Option<crate::actors::journal::JournalCounters>,
) -> prometheus::Result<Vec<MetricFamily>> {
    let scrape = Scrape(Registry::new());
    let reader = &state.actors.reader;

    // Runs, the queue and the slots, from the durable state.
    let live_runs = {
        let fold = reader.state();
        let runs = scrape.int_gauge_vec("runyard_runs", "Runs by state", &["state"])?;
        let mut by_state = [0i64; RunState::ALL.len()];
        let mut oldest_queued = None;
        let (mut local_queued, mut slurm_lost) = (0i64, 0u64);
        let stalled = scrape.int_gauge_vec(
            "runyard_run_stalled",
            "1 while a live run has made no progress for longer than its stall threshold \
             (stall_after_secs, or 10 times its median batch time and at least 30 s), else 0",
            &["run_id", "name"],
        )?;
        for run in fold.runs() {
            if let Some(i) = RunState::ALL.iter().position(|s| *s == run.state) {
                by_state[i] += 1;
            }
            // Every live run, local or on Slurm: its series is there at 0 before it
            // stalls, so an alert can tell a stall from a run it has never seen.
            if run.state.is_live() {
                stalled
                    .with_label_values(&[run.id.to_string().as_str(), run.name.as_str()])
                    .set(i64::from(run.stalled));
            }
            slurm_lost += run.slurm.as_ref().map_or(0, |j| u64::from(j.lost));
            // Slurm runs wait in Slurm's queue, not in this server's.
            if run.state == RunState::Queued && run.executor.is_local() {
                local_queued += 1;
                oldest_queued = Some(
                    oldest_queued.map_or(run.updated_at, |t: chrono::DateTime<chrono::Utc>| {
                        t.min(run.updated_at)
                    }),
                );
            }
        }
        for (s, count) in RunState::ALL.iter().zip(by_state) {
            runs.with_label_values(&[s.name()]).set(count);
        }
        // Trials of each live sweep by where the searcher has them.
        let live_sweeps: Vec<_> = fold.sweeps().filter(|s| s.state.is_live()).collect();
        let trials = scrape.int_gauge_vec(
            "runyard_sweep_trials",
            "Trials of each live sweep (running or paused), by status",
            &["sweep", "name", "status"],
        )?;
        for sweep in &live_sweeps {
            let id = sweep.id.to_string();
            for (status, count) in sweep.counts() {
                trials
                    .with_label_values(&[id.as_str(), sweep.name.as_str(), status])
                    .set(count as i64);
            }
        }
        scrape.int_gauge(
            "runyard_sweeps_live",
            "Sweeps running or paused",
            live_sweeps.len() as i64,
        )?;
        scrape.int_gauge(
            "runyard_queue_depth",
            "Runs waiting in the queue for local slots",
            local_queued,
        )?;
        if state.actors.slurm.is_some() {
            let jobs = scrape.int_gauge_vec(
                "runyard_slurm_jobs",
                "Slurm jobs followed now, by Slurm's state as last seen",
                &["state"],
            )?;
            let mut unreachable = 0i64;
            let followed = state
                .actors
                .slurm_board
                .read_all(|live| (live.state.clone(), live.unreachable));
            for (slurm_state, is_unreachable) in followed {
                jobs.with_label_values(&[slurm_state.as_deref().unwrap_or("UNKNOWN")])
                    .inc();
                unreachable += i64::from(is_unreachable);
            }
            scrape.int_gauge(
                "runyard_slurm_workers_unreachable",
                "Followed Slurm jobs whose worker does not answer",
                unreachable,
            )?;
            scrape.int_gauge(
                "runyard_slurm_jobs_lost",
                "Slurm jobs the cluster lost (node failure, preemption), all runs",
                slurm_lost as i64,
            )?;
        }
        let oldest = oldest_queued.map_or(0.0, |t| {
            chrono::Utc::now()
                .signed_duration_since(t)
                .num_milliseconds()
                .max(0) as f64
                / 1e3
        });
        scrape.gauge(
            "runyard_queue_oldest_wait_seconds",
            "How long the run longest in the queue has waited (0 when the queue is empty)",
            oldest,
        )?;
        let total = state.actors.slots.len();
        let held: Vec<_> = fold.slots().held().collect();
        let slots = scrape.int_gauge_vec(
            "runyard_slots",
            "Slots by whether a run holds them",
            &["state"],
        )?;
        slots.with_label_values(&["held"]).set(held.len() as i64);
        slots
            .with_label_values(&["free"])
            .set(total.saturating_sub(held.len()) as i64);
        scrape.gauge(
            "runyard_slot_utilization",
            "Fraction of slots held by runs",
            if total == 0 {
                0.0
            } else {
                held.len() as f64 / total as f64
            },
        )?;
        let mut live: Vec<(crate::domain::RunId, String)> = held
            .iter()
            .filter_map(|(_, h)| fold.run(h.run_id).map(|r| (r.id, r.name.clone())))
            .collect();
        live.sort();
        live.dedup();
        live
    };

    // Each live run's newest sample; the series of runs that ended are not made again.
    let samples_per_sec = scrape.gauge_vec(
        "runyard_run_samples_per_second",
        "Training throughput of each live run",
        &["run_id", "name"],
    )?;
    let loss = scrape.gauge_vec(
        "runyard_run_loss",
        "Newest training loss of each live run",
        &["run_id", "name"],
    )?;
    let epoch = scrape.gauge_vec(
        "runyard_run_epoch",
        "Epoch each live run is in",
        &["run_id", "name"],
    )?;
    for (id, name) in &live_runs {
        let Some(progress) = state.actors.board.get(*id) else {
            continue;
        };
        let labels = [id.to_string(), name.clone()];
        let labels = [labels[0].as_str(), labels[1].as_str()];
        samples_per_sec
            .with_label_values(&labels)
            .set(progress.samples_per_sec);
        if let Some(value) = progress.loss {
            loss.with_label_values(&labels).set(value);
        }
        epoch.with_label_values(&labels).set(progress.epoch as f64);
    }

    // The journal.
    let health = reader.health();
    scrape.int_gauge(
        "runyard_journal_degraded",
        "1 while the journal refuses appends after a failed write",
        i64::from(health.degraded().is_some()),
    )?;
    scrape.counter(
        "runyard_journal_write_failures_total",
        "Failed journal writes",
        health.failures(),
    )?;
    scrape.counter(
        "runyard_journal_recoveries_total",
        "Recoveries from a failed journal write",
        health.recoveries(),
    )?;
    scrape.int_gauge(
        "runyard_journal_last_seq",
        "Sequence number of the last durable event",
        reader.durable_seq() as i64,
    )?;
    if let Some(journal) = journal {
        scrape.counter(
            "runyard_journal_events_total",
            "Events written to the journal",
            journal.events,
        )?;
        scrape.counter(
            "runyard_journal_flushes_total",
            "Journal flushes",
            journal.flushes,
        )?;
    }
    scrape.gauge(
        "runyard_replay_seconds",
        "Time the journal replay took at start",
        state.last_replay.elapsed_ms / 1e3,
    )?;
    scrape.int_gauge(
        "runyard_replay_events",
        "Events replayed at start",
        state.last_replay.events as i64,
    )?;

    // Event streams.
    let streams = state.streams.counts();
    scrape.int_gauge(
        "runyard_sse_clients",
        "Event-stream clients connected now",
        streams.connected as i64,
    )?;
    scrape.counter(
        "runyard_sse_opened_total",
        "Event streams opened",
        streams.opened,
    )?;
    let disconnects = scrape.counter_vec(
        "runyard_sse_disconnects_total",
        "Event streams ended, by reason: slow (the client did not take its events in time) or other",
        &["reason"],
    )?;
    disconnects
        .with_label_values(&["slow"])
        .inc_by(streams.slow_disconnects);
    disconnects
        .with_label_values(&["other"])
        .inc_by(streams.disconnects.saturating_sub(streams.slow_disconnects));

    // Trace spans (all zero while traces are off).
    let spans = state
        .traces
        .as_ref()
        .map(|t| t.counts())
        .unwrap_or_default();
    scrape.counter(
        "runyard_trace_spans_exported_total",
        "Trace spans the OTLP collector accepted",
        spans.exported,
    )?;
    scrape.counter(
        "runyard_trace_spans_dropped_total",
        "Trace spans that never reached the collector (queue full, export failed, after shutdown)",
        spans.dropped,
    )?;

    // The progress history writer.
    let history = state.actors.metrics.stats();
    scrape.counter(
        "runyard_progress_samples_written_total",
        "Progress samples written to the history",
        history.samples_written,
    )?;
    scrape.counter(
        "runyard_progress_samples_dropped_total",
        "Progress samples dropped while the history writer was behind",
        history.samples_dropped,
    )?;

    Ok(scrape.0.gather())
}
