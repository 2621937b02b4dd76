//! The actors' own work as `tracing` spans, exported through `tracing-opentelemetry`
//! into the server's trace pipeline, inside the traces of the runs they work for.
//!
//! The actors open spans of the target [`TARGET`] around what they do for a run or
//! for the server: a journal flush, a slot claim, a checkpoint journaled, a Slurm
//! submission or pull, a sweep's plan, the replay at start (the README lists them
//! with their fields). Such a span is a `tracing` span like any other, cheap when
//! nothing exports it; [`layer`] turns each into an OpenTelemetry span when it
//! closes and hands it to the same [`Traces`] pipeline (exporter, batch queue,
//! resource, counts) as the runs' spans and the requests': never waiting, dropped
//! and counted when the queue is full.
//!
//! Only the real binary installs the layer, with the process's subscriber
//! ([`super::init_with_traces`], from `runyard serve`): a subscriber is
//! process-wide, and a library user or a test running many servers in one process
//! gets none of it (their servers still export runs' and requests' spans through
//! their own pipelines).
//!
//! A span reaches the run's trace by its parent, given explicitly: actors run on
//! arbiters, not inside the caller's span, so what a span belongs under travels in
//! the messages that ask for the work (a submit's request span in
//! [`SubmitRun`](crate::actors::dispatcher::SubmitRun), the span an append serves in
//! [`Append`](crate::actors::journal::Append)), or is named from the journaled
//! state: a run's `queue_wait`, `attempt` and `epoch` spans have ids an actor can
//! compute ([`queue_wait_of`], [`attempt_of`], [`epoch_of`]; see
//! [`super::run_spans`]). None of this runs on a training thread: its loop only
//! writes progress cells, and the run actor opens the spans.
//!
//! Fields are named as the runs' spans' attributes are (`runyard.run.id`, …), and a
//! count is recorded as an `i64`: `tracing-opentelemetry` writes a `u64` as text.

use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::run_spans::{attempt_span_id, derived_span_id, derived_trace_id, epoch_span_id};
use super::traces::Traces;
use crate::domain::{Run, RunState};

/// The `tracing` target of the spans that are exported: `store` and `slurm`, which sit
/// below this module, spell it out.
pub const TARGET: &str = "runyard::work";

/// The layer that exports the spans of [`TARGET`] (and the warnings and errors logged
/// inside them, as span events) through `traces`.
pub fn layer<S>(traces: &Traces) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Forward {
            traces: traces.clone(),
        })
        .build();
    let tracer = provider.tracer_with_scope(traces.scope().clone());
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Source locations, thread names and busy/idle times would cost every span
        // an allocation or a clock read for little a reader needs.
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(FilterFn::new(|meta| {
            meta.target() == TARGET || (meta.is_event() && *meta.level() <= tracing::Level::WARN)
        }))
}

/// Hands each finished span to the server's pipeline ([`Traces::export`]: queued
/// without waiting, or dropped and counted).
#[derive(Debug)]
struct Forward {
    traces: Traces,
}

impl SpanProcessor for Forward {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.traces.export(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// The pipeline is the server's: it is flushed and shut down when the server
    /// stops, not here.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The OpenTelemetry span of `span`, when it is exported (none without the layer).
pub fn context_of(span: &tracing::Span) -> Option<SpanContext> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Makes `span` a child of `parent`. Call it before anything enters `span` or reads
/// its context: a started span keeps its parent. Does nothing when `span` is not
/// exported.
pub fn set_parent(span: &tracing::Span, parent: &SpanContext) {
    if span.is_disabled() || !parent.is_valid() {
        return;
    }
    let context = opentelemetry::Context::new().with_remote_span_context(parent.clone());
    if let Err(e) = span.set_parent(context) {
        tracing::debug!(error = %e, "span parent not set");
    }
}

/// Links `span` to `to`, saying why in `runyard.link.reason`.
pub fn link(span: &tracing::Span, to: &SpanContext, reason: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.add_link_with_attributes(
        to.clone(),
        vec![KeyValue::new("runyard.link.reason", reason)],
    );
}

/// A span of this process, sampled.
fn local(trace_id: TraceId, span_id: SpanId) -> SpanContext {
    SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

/// The trace of `run`'s spans: the journaled one, or the one derived from its id.
pub fn run_trace_id(run: &Run) -> TraceId {
    run.trace_id
        .as_deref()
        .and_then(|hex| TraceId::from_hex(hex).ok())
        .filter(|id| *id != TraceId::INVALID)
        .unwrap_or_else(|| derived_trace_id(run.id))
}

/// The `pause` span of `run`, while it is pausing or paused.
pub fn pause_of(run: &Run) -> Option<SpanContext> {
    run.pause_seq
        .map(|seq| local(run_trace_id(run), derived_span_id(run.id, seq, "pause")))
}

/// The `queue_wait` span `run` is in (or was last in).
pub fn queue_wait_of(run: &Run) -> SpanContext {
    local(
        run_trace_id(run),
        derived_span_id(run.id, run.queued_seq, "queue_wait"),
    )
}

/// The `attempt` span of attempt `attempt` of `run`.
pub fn attempt_of(run: &Run, attempt: u32) -> SpanContext {
    local(run_trace_id(run), attempt_span_id(run.id, attempt))
}

/// The `epoch` span of epoch `epoch` of attempt `attempt` of `run`.
pub fn epoch_of(run: &Run, attempt: u32, epoch: u32) -> SpanContext {
    local(run_trace_id(run), epoch_span_id(run.id, attempt, epoch))
}

/// The span of `run` that work on it now belongs under: its attempt while one is under
/// way, its queue wait while it is queued; none otherwise (claimed and not yet
/// started, paused, ended).
pub fn current_of(run: &Run) -> Option<SpanContext> {
    match run.state {
        RunState::Running | RunState::Pausing => Some(attempt_of(run, run.attempt)),
        RunState::Queued => Some(queue_wait_of(run)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::InstrumentationScope;

    use super::*;
    use crate::domain::{Envelope, Event, RunId, Seq, SlotId, State};
    use crate::telemetry::run_spans::RunSpans;

    /// The journal's state and the runs' spans, folded from the same events.
    struct Given {
        run: RunId,
        seq: Seq,
        state: State,
        spans: RunSpans,
        out: Vec<SpanData>,
    }

    impl Given {
        fn new() -> Self {
            Self {
                run: RunId::new(),
                seq: 0,
                state: State::default(),
                spans: RunSpans::new(InstrumentationScope::builder("test").build()),
                out: Vec::new(),
            }
        }

        fn then(&mut self, event: Event) -> &mut Self {
            self.seq += 1;
            let envelope = Envelope::now(self.run, event);
            self.state.apply(self.seq, &envelope);
            self.spans.observe(self.seq, &envelope, &mut self.out);
            self
        }

        fn run(&self) -> &Run {
            self.state.run(self.run).expect("the run")
        }

        /// The run submitted (queued).
        fn submitted(&mut self) -> &mut Self {
            self.then(Event::RunSubmitted {
                name: "demo".into(),
                digest: "abc".into(),
                spec: r#"{"name":"demo"}"#.into(),
            })
        }

        /// A slot claimed and attempt `attempt` started on it.
        fn started(&mut self, attempt: u32) -> &mut Self {
            self.then(Event::SlotClaimed { slot: SlotId(0) })
                .then(Event::RunStarted {
                    attempt,
                    slot: SlotId(0),
                    device: "cpu".into(),
                })
        }

        fn exported(&self, name: &str) -> Vec<SpanContext> {
            self.out
                .iter()
                .filter(|s| s.name == name)
                .map(|s| s.span_context.clone())
                .collect()
        }
    }

    fn same(a: &SpanContext, b: &SpanContext) -> bool {
        a.trace_id() == b.trace_id() && a.span_id() == b.span_id()
    }

    #[test]
    fn the_spans_an_actor_names_from_the_state_are_the_ones_the_journals_fold_exports() {
        let mut given = Given::new();
        given.submitted().then(Event::TraceAssigned {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "1111111111111111".into(),
            parent_span_id: None,
        });
        // Queued: the claim that ends the wait goes under it.
        let queued = current_of(given.run()).expect("queued");
        assert_eq!(
            queued.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        given.started(1);
        assert!(same(&queued, &given.exported("queue_wait")[0]));
        // Running: the attempt, named before its events are folded.
        let attempt = current_of(given.run()).expect("running");
        let epoch = epoch_of(given.run(), 1, 1);
        given
            .then(Event::EpochCompleted {
                epoch: 1,
                train_loss: 0.5,
                train_accuracy: 0.5,
                duration_ms: 10,
            })
            .then(Event::CheckpointSaved {
                path: "runs/x/checkpoints/1.safetensors".into(),
                epoch: 1,
                batch: 0,
                step: 10,
                sha256: "00".into(),
                bytes: 7,
            })
            .then(Event::RunCompleted {
                train_loss: 0.4,
                train_accuracy: 0.6,
            });
        assert!(same(&attempt, &given.exported("attempt")[0]));
        assert!(same(&attempt, &attempt_of(given.run(), 1)));
        assert!(same(&epoch, &given.exported("epoch")[0]));
        // Ended: nothing to go under.
        assert!(current_of(given.run()).is_none());
    }

    #[test]
    fn the_pause_a_resume_goes_under_is_the_pause_span_the_fold_exports() {
        let mut given = Given::new();
        given.submitted().started(1);
        assert!(pause_of(given.run()).is_none(), "running, not pausing");
        given.then(Event::PauseRequested);
        let pausing = pause_of(given.run()).expect("pausing");
        given.then(Event::RunPaused {
            reason: "paused by request".into(),
        });
        let paused = pause_of(given.run()).expect("paused");
        assert!(same(&pausing, &paused), "one pause, from its request");
        given.then(Event::RunResumed);
        assert!(pause_of(given.run()).is_none(), "resumed");
        assert!(same(&paused, &given.exported("pause")[0]));
        // A pause nobody asked for (a sweep trial at its rung's end) begins paused.
        given.started(2).then(Event::RunPaused {
            reason: "at its rung's end".into(),
        });
        let unasked = pause_of(given.run()).expect("paused unasked");
        given.then(Event::RunCancelled {
            reason: "cancelled by request".into(),
        });
        assert!(pause_of(given.run()).is_none(), "ended");
        assert!(same(&unasked, &given.exported("pause")[1]));
    }

    #[test]
    fn a_run_submitted_untraced_is_named_by_its_derived_trace() {
        let mut given = Given::new();
        given.then(Event::RunSubmitted {
            name: "demo".into(),
            digest: "abc".into(),
            spec: "{}".into(),
        });
        assert_eq!(run_trace_id(given.run()), derived_trace_id(given.run));
    }

    #[test]
    fn without_the_layer_spans_have_no_context_and_take_no_parent() {
        let span = tracing::debug_span!(target: TARGET, "journal.flush");
        set_parent(
            &span,
            &local(derived_trace_id(RunId::new()), SpanId::from(7u64)),
        );
        assert!(context_of(&span).is_none());
    }
}
