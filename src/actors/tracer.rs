//! The tracer: turns each run's journaled events into its OpenTelemetry trace.
//!
//! It follows the journal by cursor through the same follower as the event streams
//! ([`super::follow`]: the journal's window of recent records, or the log when it is
//! further behind), folds each record into [`RunSpans`], and hands the spans that ended to the server's
//! [`Traces`] pipeline, which queues them without waiting. Nobody waits for the
//! tracer: the training threads never see it (they only write progress cells), and
//! the journal only publishes its tail. A tracer that falls behind costs memory in
//! no queue: it reads on when it gets to it.
//!
//! At start it rebuilds the open spans of every run that was unfinished when the
//! previous server stopped, from the runs' history, without exporting what the
//! previous server exported, then ends the spans the stop interrupted (see
//! [`crate::telemetry::run_spans`] for how a restart keeps a run's story in one
//! trace).

use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::journal::JournalReader;
use crate::domain::{RunId, Seq};
use crate::store::StoreError;
use crate::telemetry::run_spans::{recorded_at, RunSpans};
use crate::telemetry::traces::Traces;

/// Records read from the journal per pass.
const READ_BATCH: usize = 256;

/// Wait before reading again after a failed read.
const RETRY: Duration = Duration::from_secs(1);

/// What the tracer has done, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TracerCounters {
    /// The last journal sequence number folded in.
    pub cursor: Seq,
    /// Records folded in since start.
    pub events: u64,
    /// Spans handed to the exporter since start.
    pub spans: u64,
    /// Runs whose trace is under way.
    pub open_runs: usize,
    /// Runs that were unfinished at start, whose spans were rebuilt.
    pub recovered_runs: usize,
    /// Failed journal reads (each retried after a second).
    pub read_errors: u64,
}

/// The tracer actor.
pub struct Tracer {
    reader: JournalReader,
    traces: Traces,
    spans: RunSpans,
    /// The journal's last record when the server started: records up to it were
    /// the previous server's to trace.
    replayed: Seq,
    counters: TracerCounters,
    /// [`CatchUp`] callers, each with the sequence number it waits for.
    waiting: Vec<(Seq, oneshot::Sender<()>)>,
}

impl Tracer {
    /// A tracer over `reader` that starts after record `replayed` (the last one
    /// replayed at start) and exports through `traces`.
    pub fn new(reader: JournalReader, traces: Traces, replayed: Seq) -> Self {
        let spans = RunSpans::new(traces.scope().clone());
        Self {
            reader,
            traces,
            spans,
            replayed,
            counters: TracerCounters {
                cursor: replayed,
                ..TracerCounters::default()
            },
            waiting: Vec::new(),
        }
    }

    fn export(&mut self, spans: Vec<opentelemetry_sdk::trace::SpanData>) {
        self.counters.spans += spans.len() as u64;
        for span in spans {
            self.traces.export(span);
        }
    }

    /// Reads the next records after the cursor once there are any, folds them in,
    /// and goes on.
    fn follow(&mut self, ctx: &mut Context<Self>) {
        let mut follow = self.reader.follow(self.counters.cursor);
        let next = async move { follow.next(READ_BATCH).await };
        ctx.spawn(next.into_actor(self).map(|read, tracer, ctx| match read {
            None => {
                tracing::info!("journal closed; the tracer stops");
                ctx.stop();
            }
            Some(Ok(records)) if records.is_empty() => {
                // The log holds nothing after the cursor though the tail is past it
                // (it was reopened after a failed write): look again later rather
                // than spin.
                ctx.run_later(RETRY, |tracer, ctx| tracer.follow(ctx));
            }
            Some(Ok(records)) => {
                let mut out = Vec::new();
                for record in &records {
                    tracer.spans.observe(record.seq, &record.envelope, &mut out);
                    tracer.counters.cursor = record.seq;
                }
                tracer.counters.events += records.len() as u64;
                tracer.counters.open_runs = tracer.spans.open_runs();
                tracer.export(out);
                let cursor = tracer.counters.cursor;
                for (target, reply) in std::mem::take(&mut tracer.waiting) {
                    if target <= cursor {
                        let _ = reply.send(());
                    } else {
                        tracer.waiting.push((target, reply));
                    }
                }
                tracer.follow(ctx);
            }
            Some(Err(e)) => {
                tracer.counters.read_errors += 1;
                tracing::warn!(error = %e, after = tracer.counters.cursor, "tracer could not read the journal; retrying");
                ctx.run_later(RETRY, |tracer, ctx| tracer.follow(ctx));
            }
        }));
    }
}

/// The open spans of the runs that were unfinished at the last stop, and the spans
/// the stop ended.
struct Recovered {
    spans: RunSpans,
    ended: Vec<opentelemetry_sdk::trace::SpanData>,
    runs: usize,
}

/// Folds the history (up to `replayed`) of every run that was unfinished at record
/// `replayed` into a fresh [`RunSpans`], discarding what it ends (the previous server
/// exported that), then interrupts each at the time of record `replayed`.
async fn recover(
    reader: JournalReader,
    mut spans: RunSpans,
    replayed: Seq,
) -> Result<Recovered, StoreError> {
    let mut ended = Vec::new();
    if replayed == 0 {
        return Ok(Recovered {
            spans,
            ended,
            runs: 0,
        });
    }
    let unfinished: Vec<RunId> = {
        let fold = reader.state();
        fold.runs()
            // Unfinished then: not terminal now, or ended by an event after the
            // start (a cancel carried out by the recovery, or a run that ended since).
            .filter(|r| {
                r.submitted_seq <= replayed && (!r.state.is_terminal() || r.last_seq > replayed)
            })
            .map(|r| r.id)
            .collect()
    };
    let stopped_at = reader
        .durable_events_after(replayed - 1, 1)
        .await?
        .first()
        .map_or_else(SystemTime::now, |(_, envelope)| recorded_at(envelope));
    let restarted_at = SystemTime::now();
    let mut discarded = Vec::new();
    for run_id in &unfinished {
        let mut after = 0;
        'pages: loop {
            let page = reader
                .durable_run_events(*run_id, after, READ_BATCH)
                .await?;
            let full = page.len() == READ_BATCH;
            for (seq, envelope) in &page {
                if *seq > replayed {
                    break 'pages;
                }
                spans.observe(*seq, envelope, &mut discarded);
                after = *seq;
            }
            discarded.clear();
            if !full {
                break;
            }
        }
        spans.interrupt(*run_id, stopped_at, restarted_at, &mut ended);
    }
    Ok(Recovered {
        runs: spans.open_runs(),
        spans,
        ended,
    })
}

impl Actor for Tracer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let spans = RunSpans::new(self.traces.scope().clone());
        let recovery = recover(self.reader.clone(), spans, self.replayed);
        // Nothing else is handled until the unfinished runs' spans are rebuilt.
        ctx.wait(recovery.into_actor(self).map(|result, tracer, ctx| {
            match result {
                Ok(recovered) => {
                    if recovered.runs > 0 {
                        tracing::info!(
                            runs = recovered.runs,
                            interrupted = recovered.ended.len(),
                            "traces of unfinished runs picked up after the restart"
                        );
                    }
                    tracer.spans = recovered.spans;
                    tracer.counters.recovered_runs = recovered.runs;
                    tracer.export(recovered.ended);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the history of unfinished runs; their traces start over");
                }
            }
            tracer.counters.open_runs = tracer.spans.open_runs();
            tracer.follow(ctx);
        }));
    }
}

/// Answers once the tracer has folded in every record that was durable when asked.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CatchUp;

impl Handler<CatchUp> for Tracer {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: CatchUp, _ctx: &mut Self::Context) -> Self::Result {
        let target = self.reader.durable_seq();
        let (reply, done) = oneshot::channel();
        if self.counters.cursor >= target {
            let _ = reply.send(());
        } else {
            self.waiting.push((target, reply));
        }
        Box::pin(async move {
            let _ = done.await;
        })
    }
}

/// Asks for the tracer's counters.
#[derive(Debug, Message)]
#[rtype(result = "TracerCounters")]
pub struct GetTracerCounters;

impl Handler<GetTracerCounters> for Tracer {
    type Result = MessageResult<GetTracerCounters>;

    fn handle(&mut self, _msg: GetTracerCounters, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.counters)
    }
}

/// The server's last word on traces, within `within` in all: lets the tracer fold in
/// what was journaled last (at most half the time), then sends every queued span and
/// stops the exporter. Spans of runs still live stay open: the next start ends them
/// (see [`crate::telemetry::run_spans`]).
pub async fn flush_and_stop(tracer: Option<Addr<Tracer>>, traces: Traces, within: Duration) {
    let deadline = Instant::now() + within;
    if let Some(tracer) = tracer {
        if tokio::time::timeout(within / 2, tracer.send(CatchUp))
            .await
            .is_err()
        {
            tracing::warn!("the tracer did not catch up with the journal before shutdown");
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    let (reply, done) = oneshot::channel();
    let pipeline = traces.clone();
    // The exporter's shutdown blocks its caller: on a thread of its own.
    let spawned = std::thread::Builder::new()
        .name("runyard-trace-flush".into())
        .spawn(move || {
            let _ = reply.send(pipeline.shutdown_blocking(remaining));
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not flush spans at shutdown");
        return;
    }
    let outcome = tokio::time::timeout(remaining + Duration::from_millis(100), done).await;
    let counts = traces.counts();
    match outcome {
        Ok(Ok(Ok(()))) => tracing::info!(
            exported = counts.exported,
            dropped = counts.dropped,
            "spans flushed"
        ),
        Ok(Ok(Err(e))) => tracing::warn!(
            error = %e,
            exported = counts.exported,
            dropped = counts.dropped,
            "spans not all flushed at shutdown"
        ),
        _ => tracing::warn!(
            within_ms = within.as_millis() as u64,
            "span flush did not finish in time; the rest is dropped"
        ),
    }
}
