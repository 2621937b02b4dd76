//! Runs as traces: a pure fold of journaled events into OpenTelemetry spans, one
//! trace per run. No clock and no I/O: every time comes from the events'
//! `recorded_at`, so a span has its real start and end however late it is built, and
//! the same events always give the same spans.
//!
//! # What a run's trace looks like
//!
//! ```text
//! run                      RunSubmitted → RunCompleted | RunFailed | RunCancelled
//! ├── queue_wait           RunSubmitted | RunRequeued | RunRetryScheduled | RunResumed → SlotClaimed
//! ├── slot_claim           SlotClaimed (every slot of a gang claim) → RunStarted
//! ├── attempt              RunStarted → the attempt's end (completed, failed, retry, paused, …)
//! │   ├── epoch            EpochCompleted − its duration → EpochCompleted (+ EpochEvaluated)
//! │   └── checkpoint       CheckpointSaved (no duration is journaled: a point in time)
//! ├── pause                PauseRequested (or RunPaused) → RunResumed | RunCancelled
//! └── cancel               CancelRequested (or RunCancelled) → RunCancelled
//! ```
//!
//! The root span `run` carries the run's id, name, spec digest, slots and attempt
//! count, and ends with an error status when the run failed. Each lifecycle event
//! becomes a span event of the span it belongs to (`SlotClaimed` on `slot_claim`,
//! `RunStalled` and `ArtifactSaved` on `attempt`, `RunRequeued`, `SlotReleased` and
//! the terminal event on `run`, …), with the event's journal sequence number and data
//! as attributes. Epoch and checkpoint figures are attributes of their spans.
//!
//! # Ids
//!
//! The trace id and the root span id are journaled in the run's `TraceAssigned` event
//! (written with `RunSubmitted`; the trace id is the caller's when the submit request
//! had a `traceparent`, whose span is then the root's parent). A run submitted while
//! traces were off has none: its trace id is its run id (a UUIDv7, random in its low
//! bits) and its root span id is derived like a child's. Every other span id is
//! derived from the run id, the sequence number of the event that opened the span,
//! and the span's name: the server that restarts computes the same ids as the one
//! that stopped, so a span begun before a stop and ended after it is one span. An
//! `attempt` is named by its number and an `epoch` by its attempt's and its own
//! ([`attempt_span_id`], [`epoch_span_id`]) rather than by their events: the actors
//! working for an attempt (the run actor journaling a checkpoint, a Slurm job's
//! follower) put their own spans under them before those events are journaled (see
//! [`super::work`]).
//!
//! # Restarts
//!
//! The [`Tracer`](crate::actors::tracer::Tracer) starts from the journal's tail and
//! rebuilds the open spans of each unfinished run by folding its history again
//! without exporting ([`RunSpans::observe`] into a discarded buffer): spans that ended
//! before the stop were exported then. Then [`RunSpans::interrupt`] deals with the
//! stop:
//!
//! - a `slot_claim` or `attempt` that was open (the run was live) cannot have gone on
//!   past the stop. It is ended at the last event journaled before the stop (the last
//!   moment the old server is known to have been alive, not the restart: that would
//!   count the downtime as training) with an error status saying the server stopped,
//!   and `runyard.attempt.outcome = interrupted`;
//! - the spans the recovered run opens next (the `queue_wait` after `RunRequeued`, its
//!   `slot_claim` and its next `attempt`) carry span links to those interrupted spans
//!   (link attribute `runyard.link.reason = server_stopped`), so a viewer shows where
//!   the work resumed from;
//! - spans that were open and are still true across a stop go on: a run queued or
//!   paused before the stop keeps its one `queue_wait` or `pause` span, which then
//!   includes the downtime (the run did wait through it); the root span keeps its
//!   real start;
//! - the root span of every unfinished run gets a `ServerRestarted` event.
//!
//! What cannot be rebuilt is lost: spans that had ended but were still in the old
//! process's export queue when it was killed (a graceful stop flushes them).

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event as SpanEvent, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId,
    TraceState,
};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use rustc_hash::FxHashMap;
use sha2::{Digest as _, Sha256};

use crate::domain::{Envelope, Event, RunId, Seq};

/// Span events kept per span; more are counted as dropped (a run stalling and
/// recovering for days must not grow a span without bound).
pub const MAX_EVENTS_PER_SPAN: usize = 128;

/// Status of a span that was open when the server stopped.
pub const INTERRUPTED: &str =
    "the server stopped while this span was open; it ends at the last event journaled before the stop";

/// The open spans of every unfinished run, and how each event changes them.
#[derive(Debug)]
pub struct RunSpans {
    runs: FxHashMap<RunId, RunTrace>,
    scope: InstrumentationScope,
}

/// A span begun and not yet ended.
#[derive(Debug, Clone)]
struct Open {
    id: SpanId,
    parent: SpanId,
    name: &'static str,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<SpanEvent>,
    dropped_events: u32,
    links: Vec<Link>,
}

impl Open {
    fn new(name: &'static str, id: SpanId, parent: SpanId, start: SystemTime, run: RunId) -> Self {
        Self {
            id,
            parent,
            name,
            start,
            attributes: vec![KeyValue::new("runyard.run.id", run.to_string())],
            events: Vec::new(),
            dropped_events: 0,
            links: Vec::new(),
        }
    }

    fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        let key = Key::from_static_str(key);
        let value = value.into();
        match self.attributes.iter_mut().find(|kv| kv.key == key) {
            Some(kv) => kv.value = value,
            None => self.attributes.push(KeyValue::new(key, value)),
        }
    }

    fn event(&mut self, name: &'static str, at: SystemTime, attributes: Vec<KeyValue>) {
        if self.events.len() < MAX_EVENTS_PER_SPAN {
            self.events.push(SpanEvent::new(name, at, attributes, 0));
        } else {
            self.dropped_events = self.dropped_events.saturating_add(1);
        }
    }

    /// A link from another span to this one.
    fn link_to(&self, trace_id: TraceId, reason: &'static str) -> Link {
        let context = SpanContext::new(
            trace_id,
            self.id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        Link::new(
            context,
            vec![KeyValue::new("runyard.link.reason", reason)],
            0,
        )
    }

    fn finish(
        self,
        trace_id: TraceId,
        parent_is_remote: bool,
        end: SystemTime,
        status: Status,
        scope: &InstrumentationScope,
    ) -> SpanData {
        let mut events = SpanEvents::default();
        events.events = self.events;
        events.dropped_count = self.dropped_events;
        let mut links = SpanLinks::default();
        links.links = self.links;
        SpanData {
            span_context: SpanContext::new(
                trace_id,
                self.id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: self.parent,
            parent_span_is_remote: parent_is_remote,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(self.name),
            start_time: self.start,
            end_time: end.max(self.start),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events,
            links,
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// One unfinished run's trace.
#[derive(Debug)]
struct RunTrace {
    run_id: RunId,
    trace_id: TraceId,
    /// The root span `run`; its parent is the caller's span, if any.
    root: Open,
    attempts: u32,
    queue: Option<Open>,
    claim: Option<Open>,
    attempt: Option<Open>,
    /// A finished epoch waiting for its evaluation (journaled right after it), with
    /// its number and end.
    epoch: Option<(Open, u32, SystemTime)>,
    /// End of the last epoch of the current attempt: the next starts no earlier.
    last_epoch_end: Option<SystemTime>,
    pause: Option<Open>,
    cancel: Option<Open>,
    /// Links to the spans the last server stop interrupted, for the spans the run
    /// opens next.
    restart_links: Vec<Link>,
}

/// Span id of the span `name` opened by event `seq` of `run`.
pub fn derived_span_id(run: RunId, seq: Seq, name: &str) -> SpanId {
    let digest = Sha256::new()
        .chain_update(run.as_bytes())
        .chain_update(seq.to_be_bytes())
        .chain_update(name.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    if bytes == [0; 8] {
        // The invalid id; one in 2^64.
        bytes[7] = 1;
    }
    SpanId::from_bytes(bytes)
}

/// Span id of attempt `attempt` of `run` (attempt numbers are never reused within a
/// run).
pub fn attempt_span_id(run: RunId, attempt: u32) -> SpanId {
    derived_span_id(run, Seq::from(attempt), "attempt#")
}

/// Span id of epoch `epoch` of attempt `attempt` of `run` (an attempt finishes each
/// of its epochs once).
pub fn epoch_span_id(run: RunId, attempt: u32, epoch: u32) -> SpanId {
    derived_span_id(run, (Seq::from(attempt) << 32) | Seq::from(epoch), "epoch#")
}

/// The trace id of a run that has no `TraceAssigned` event: its run id's bytes.
pub fn derived_trace_id(run: RunId) -> TraceId {
    TraceId::from_bytes(*run.as_bytes())
}

/// When an event was recorded.
pub fn recorded_at(envelope: &Envelope) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(envelope.recorded_at_micros).unwrap_or(0))
}

/// The event's sequence number and data as span event attributes.
fn event_attributes(seq: Seq, event: &Event) -> Vec<KeyValue> {
    let mut attributes = vec![KeyValue::new("runyard.seq", seq as i64)];
    if matches!(event, Event::RunSubmitted { .. }) {
        // Name and digest are the root's attributes; the spec is too big.
        return attributes;
    }
    if let serde_json::Value::Object(data) = event.data_json() {
        for (key, value) in data {
            let value = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::Bool(b) => Value::Bool(b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Value::I64(i),
                    None => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
                },
                serde_json::Value::String(s) => Value::from(s),
                other => Value::from(other.to_string()),
            };
            attributes.push(KeyValue::new(key, value));
        }
    }
    attributes
}

/// The `slots` a spec asks for (1 when it does not say).
fn spec_slots(spec: &str) -> i64 {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        slots: Option<i64>,
    }
    serde_json::from_str::<Head>(spec)
        .ok()
        .and_then(|h| h.slots)
        .unwrap_or(1)
}

impl RunTrace {
    fn submitted(
        run_id: RunId,
        seq: Seq,
        at: SystemTime,
        name: &str,
        digest: &str,
        spec: &str,
    ) -> Self {
        let root_id = derived_span_id(run_id, 0, "run");
        let mut root = Open::new("run", root_id, SpanId::INVALID, at, run_id);
        root.set("runyard.run.name", name.to_string());
        root.set("runyard.run.digest", digest.to_string());
        root.set("runyard.run.slots", spec_slots(spec));
        root.event(
            "RunSubmitted",
            at,
            vec![KeyValue::new("runyard.seq", seq as i64)],
        );
        let mut queue = Open::new(
            "queue_wait",
            derived_span_id(run_id, seq, "queue_wait"),
            root_id,
            at,
            run_id,
        );
        queue.set("runyard.queue.reason", "submitted");
        Self {
            run_id,
            trace_id: derived_trace_id(run_id),
            root,
            attempts: 0,
            queue: Some(queue),
            claim: None,
            attempt: None,
            epoch: None,
            last_epoch_end: None,
            pause: None,
            cancel: None,
            restart_links: Vec::new(),
        }
    }

    fn child(&self, name: &'static str, seq: Seq, at: SystemTime) -> Open {
        Open::new(
            name,
            derived_span_id(self.run_id, seq, name),
            self.root.id,
            at,
            self.run_id,
        )
    }

    fn attempt_span(&self, attempt: u32, at: SystemTime) -> Open {
        Open::new(
            "attempt",
            attempt_span_id(self.run_id, attempt),
            self.root.id,
            at,
            self.run_id,
        )
    }

    /// The span events about the current attempt go to: the attempt, or the root
    /// between attempts.
    fn attempt_or_root(&mut self) -> &mut Open {
        match &mut self.attempt {
            Some(attempt) => attempt,
            None => &mut self.root,
        }
    }

    fn end(
        &self,
        span: Open,
        at: SystemTime,
        status: Status,
        scope: &InstrumentationScope,
    ) -> SpanData {
        span.finish(self.trace_id, false, at, status, scope)
    }

    fn end_queue(&mut self, at: SystemTime, scope: &InstrumentationScope, out: &mut Vec<SpanData>) {
        if let Some(queue) = self.queue.take() {
            out.push(self.end(queue, at, Status::Unset, scope));
        }
    }

    fn end_claim(
        &mut self,
        at: SystemTime,
        status: Status,
        scope: &InstrumentationScope,
        out: &mut Vec<SpanData>,
    ) {
        if let Some(claim) = self.claim.take() {
            out.push(self.end(claim, at, status, scope));
        }
    }

    fn end_attempt(
        &mut self,
        at: SystemTime,
        outcome: &'static str,
        status: Status,
        scope: &InstrumentationScope,
        out: &mut Vec<SpanData>,
    ) {
        self.flush_epoch(scope, out);
        if let Some(mut attempt) = self.attempt.take() {
            attempt.set("runyard.attempt.outcome", outcome);
            out.push(self.end(attempt, at, status, scope));
        }
        self.last_epoch_end = None;
    }

    /// Ends whatever the run was doing when its attempt stopped: the claim, the
    /// attempt and its last epoch.
    fn stop_work(
        &mut self,
        at: SystemTime,
        outcome: &'static str,
        status: Status,
        scope: &InstrumentationScope,
        out: &mut Vec<SpanData>,
    ) {
        self.end_queue(at, scope, out);
        self.end_claim(at, status.clone(), scope, out);
        self.end_attempt(at, outcome, status, scope, out);
    }

    fn flush_epoch(&mut self, scope: &InstrumentationScope, out: &mut Vec<SpanData>) {
        if let Some((epoch, _, end)) = self.epoch.take() {
            out.push(self.end(epoch, end, Status::Unset, scope));
        }
    }

    fn open_queue(&mut self, seq: Seq, at: SystemTime, reason: &'static str) -> &mut Open {
        let mut queue = self.child("queue_wait", seq, at);
        queue.set("runyard.queue.reason", reason);
        queue.links = self.restart_links.clone();
        self.queue.insert(queue)
    }

    /// Folds one event in; true when it ended the run (its root span is in `out`).
    fn apply(
        &mut self,
        seq: Seq,
        at: SystemTime,
        event: &Event,
        scope: &InstrumentationScope,
        out: &mut Vec<SpanData>,
    ) -> bool {
        let attributes = || event_attributes(seq, event);
        match event {
            Event::RunSubmitted { .. } | Event::JournalRepaired { .. } => {}
            // A sweep's, never a run's.
            Event::SweepSubmitted { .. }
            | Event::TrialCreated { .. }
            | Event::TrialReachedRung { .. }
            | Event::TrialPromoted { .. }
            | Event::TrialStopped { .. }
            | Event::SweepCompleted { .. }
            | Event::SweepCancelled { .. }
            | Event::SweepPaused
            | Event::SweepResumed => {}
            Event::ArtifactsDeleted { .. } => {}
            Event::TraceAssigned {
                trace_id,
                span_id,
                parent_span_id,
            } => self.assign(trace_id, span_id, parent_span_id.as_deref()),
            Event::SlotClaimed { slot } => {
                self.end_queue(at, scope, out);
                if self.claim.is_none() {
                    let mut claim = self.child("slot_claim", seq, at);
                    claim.links = self.restart_links.clone();
                    self.claim = Some(claim);
                }
                if let Some(claim) = &mut self.claim {
                    let mut slots: Vec<i64> = claim
                        .attributes
                        .iter()
                        .find(|kv| kv.key.as_str() == "runyard.slots")
                        .and_then(|kv| match &kv.value {
                            Value::Array(opentelemetry::Array::I64(v)) => Some(v.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    slots.push(i64::from(slot.0));
                    claim.set("runyard.slots", Value::Array(slots.into()));
                    claim.event("SlotClaimed", at, attributes());
                }
            }
            Event::RunStarted {
                attempt,
                slot,
                device,
            } => {
                self.end_queue(at, scope, out);
                self.end_claim(at, Status::Unset, scope, out);
                self.end_attempt(at, "superseded", Status::Unset, scope, out);
                self.attempts = *attempt;
                let mut span = self.attempt_span(*attempt, at);
                span.set("runyard.attempt", i64::from(*attempt));
                span.set("runyard.slot", i64::from(slot.0));
                span.set("runyard.device", device.clone());
                span.links = std::mem::take(&mut self.restart_links);
                span.event("RunStarted", at, attributes());
                self.attempt = Some(span);
                self.root.set("runyard.run.attempt", i64::from(*attempt));
            }
            Event::ResumedFromCheckpoint { step, .. } => {
                let span = self.attempt_or_root();
                span.set("runyard.resumed_from_step", *step as i64);
                span.event("ResumedFromCheckpoint", at, attributes());
            }
            Event::EpochCompleted {
                epoch,
                train_loss,
                train_accuracy,
                duration_ms,
            } => {
                self.flush_epoch(scope, out);
                let (parent, floor) = match &self.attempt {
                    Some(attempt) => (attempt.id, attempt.start),
                    None => (self.root.id, self.root.start),
                };
                let floor = self.last_epoch_end.map_or(floor, |end| end.max(floor));
                let start = at
                    .checked_sub(Duration::from_millis(*duration_ms))
                    .unwrap_or(at)
                    .max(floor)
                    .min(at);
                let mut span = Open::new(
                    "epoch",
                    epoch_span_id(self.run_id, self.attempts, *epoch),
                    parent,
                    start,
                    self.run_id,
                );
                span.set("runyard.epoch", i64::from(*epoch));
                span.set("runyard.train.loss", *train_loss);
                span.set("runyard.train.accuracy", *train_accuracy);
                span.set("runyard.epoch.duration_ms", *duration_ms as i64);
                self.epoch = Some((span, *epoch, at));
                self.last_epoch_end = Some(at);
            }
            Event::EpochEvaluated {
                epoch,
                val_loss,
                val_metric,
            } => match &mut self.epoch {
                Some((span, number, _)) if number == epoch => {
                    span.set("runyard.val.loss", *val_loss);
                    span.set("runyard.val.metric", *val_metric);
                    self.flush_epoch(scope, out);
                }
                _ => self
                    .attempt_or_root()
                    .event("EpochEvaluated", at, attributes()),
            },
            Event::CheckpointSaved {
                path,
                epoch,
                batch,
                step,
                sha256,
                bytes,
            } => {
                let mut span = self.child("checkpoint", seq, at);
                span.parent = self.attempt_or_root().id;
                span.set("runyard.checkpoint.path", path.clone());
                span.set("runyard.checkpoint.epoch", i64::from(*epoch));
                span.set("runyard.checkpoint.batch", *batch as i64);
                span.set("runyard.checkpoint.step", *step as i64);
                span.set("runyard.checkpoint.sha256", sha256.clone());
                span.set("runyard.checkpoint.bytes", *bytes as i64);
                out.push(self.end(span, at, Status::Unset, scope));
            }
            Event::ArtifactSaved { .. }
            | Event::RunStalled { .. }
            | Event::StallEnded { .. }
            | Event::CommandStarted { .. }
            | Event::RankStarted { .. }
            | Event::CommandExited { .. } => {
                self.attempt_or_root()
                    .event(event.kind().name(), at, attributes());
            }
            Event::RunCompleted {
                train_loss,
                train_accuracy,
            } => {
                self.stop_work(at, "completed", Status::Unset, scope, out);
                self.root.set("runyard.train.loss", *train_loss);
                self.root.set("runyard.train.accuracy", *train_accuracy);
                self.root.event("RunCompleted", at, attributes());
                self.finish(at, "completed", Status::Unset, scope, out);
                return true;
            }
            Event::RunFailed { reason } => {
                let status = Status::error(reason.clone());
                self.stop_work(at, "failed", status.clone(), scope, out);
                self.root.event("RunFailed", at, attributes());
                self.finish(at, "failed", status, scope, out);
                return true;
            }
            Event::RunCancelled { .. } => {
                self.stop_work(at, "cancelled", Status::Unset, scope, out);
                if let Some(mut pause) = self.pause.take() {
                    pause.event("RunCancelled", at, attributes());
                    out.push(self.end(pause, at, Status::Unset, scope));
                }
                let mut cancel = match self.cancel.take() {
                    Some(cancel) => cancel,
                    None => self.child("cancel", seq, at),
                };
                cancel.event("RunCancelled", at, attributes());
                out.push(self.end(cancel, at, Status::Unset, scope));
                self.root.event("RunCancelled", at, attributes());
                self.finish(at, "cancelled", Status::Unset, scope, out);
                return true;
            }
            Event::CancelRequested => {
                if self.cancel.is_none() {
                    self.cancel = Some(self.child("cancel", seq, at));
                }
                if let Some(cancel) = &mut self.cancel {
                    cancel.event("CancelRequested", at, attributes());
                }
            }
            Event::RunRequeued { reason } => {
                let status = Status::error(reason.clone());
                self.stop_work(at, "requeued", status, scope, out);
                self.root.event("RunRequeued", at, attributes());
                self.open_queue(seq, at, "requeued");
            }
            Event::RunRetryScheduled {
                reason,
                retry,
                delay_ms,
            } => {
                let status = Status::error(reason.clone());
                self.stop_work(at, "retry", status, scope, out);
                self.root.event("RunRetryScheduled", at, attributes());
                let queue = self.open_queue(seq, at, "retry");
                queue.set("runyard.retry", i64::from(*retry));
                queue.set("runyard.retry.delay_ms", *delay_ms as i64);
            }
            Event::PauseRequested => {
                if self.pause.is_none() {
                    self.pause = Some(self.child("pause", seq, at));
                }
                if let Some(pause) = &mut self.pause {
                    pause.event("PauseRequested", at, attributes());
                }
            }
            Event::RunPaused { .. } => {
                self.stop_work(at, "paused", Status::Unset, scope, out);
                if self.pause.is_none() {
                    self.pause = Some(self.child("pause", seq, at));
                }
                if let Some(pause) = &mut self.pause {
                    pause.event("RunPaused", at, attributes());
                }
            }
            Event::RunResumed => {
                if let Some(mut pause) = self.pause.take() {
                    pause.event("RunResumed", at, attributes());
                    out.push(self.end(pause, at, Status::Unset, scope));
                }
                self.open_queue(seq, at, "resumed");
            }
            Event::SlotReleased { .. } => self.root.event("SlotReleased", at, attributes()),
            Event::SlurmJobStarted {
                attempt,
                node,
                device,
                job_id,
            } => {
                self.end_queue(at, scope, out);
                self.end_attempt(at, "superseded", Status::Unset, scope, out);
                self.attempts = *attempt;
                let mut span = self.attempt_span(*attempt, at);
                span.set("runyard.attempt", i64::from(*attempt));
                span.set("runyard.slurm.job_id", *job_id as i64);
                span.set("runyard.slurm.node", node.clone());
                span.set("runyard.device", device.clone());
                span.links = std::mem::take(&mut self.restart_links);
                span.event("SlurmJobStarted", at, attributes());
                self.attempt = Some(span);
                self.root.set("runyard.run.attempt", i64::from(*attempt));
            }
            Event::SlurmJobLost { reason, lost, .. } => {
                let status = Status::error(reason.clone());
                self.stop_work(at, "lost", status, scope, out);
                self.root.event("SlurmJobLost", at, attributes());
                let queue = self.open_queue(seq, at, "lost");
                queue.set("runyard.slurm.lost", i64::from(*lost));
            }
            Event::SlurmJobSubmitted { .. } | Event::SlurmJobEnded { .. } => {
                self.attempt_or_root()
                    .event(event.kind().name(), at, attributes());
            }
            Event::WorkerSynced { .. } => {}
        }
        false
    }

    /// Takes the journaled trace context in place of the derived one.
    fn assign(&mut self, trace_id: &str, span_id: &str, parent: Option<&str>) {
        let (Ok(trace_id), Ok(root)) = (TraceId::from_hex(trace_id), SpanId::from_hex(span_id))
        else {
            return;
        };
        if trace_id == TraceId::INVALID || root == SpanId::INVALID {
            return;
        }
        let old = self.root.id;
        self.trace_id = trace_id;
        self.root.id = root;
        self.root.parent = parent
            .and_then(|p| SpanId::from_hex(p).ok())
            .unwrap_or(SpanId::INVALID);
        for span in [
            &mut self.queue,
            &mut self.claim,
            &mut self.attempt,
            &mut self.pause,
            &mut self.cancel,
        ]
        .into_iter()
        .flatten()
        {
            if span.parent == old {
                span.parent = root;
            }
        }
    }

    /// Ends every open span and the root at `at`.
    fn finish(
        &mut self,
        at: SystemTime,
        state: &'static str,
        status: Status,
        scope: &InstrumentationScope,
        out: &mut Vec<SpanData>,
    ) {
        self.stop_work(at, state, Status::Unset, scope, out);
        for span in [self.pause.take(), self.cancel.take()]
            .into_iter()
            .flatten()
        {
            out.push(self.end(span, at, Status::Unset, scope));
        }
        let mut root = std::mem::replace(
            &mut self.root,
            Open::new("run", SpanId::INVALID, SpanId::INVALID, at, self.run_id),
        );
        root.set("runyard.run.attempt", i64::from(self.attempts));
        root.set("runyard.run.state", state);
        let remote = root.parent != SpanId::INVALID;
        out.push(root.finish(self.trace_id, remote, at, status, scope));
    }

    /// See [`RunSpans::interrupt`].
    fn interrupt(
        &mut self,
        stopped_at: SystemTime,
        restarted_at: SystemTime,
        scope: &InstrumentationScope,
        out: &mut Vec<SpanData>,
    ) {
        self.flush_epoch(scope, out);
        let status = Status::error(INTERRUPTED);
        let mut links = Vec::new();
        if let Some(claim) = self.claim.take() {
            links.push(claim.link_to(self.trace_id, "server_stopped"));
            out.push(self.end(claim, stopped_at, status.clone(), scope));
        }
        if let Some(mut attempt) = self.attempt.take() {
            links.push(attempt.link_to(self.trace_id, "server_stopped"));
            attempt.set("runyard.attempt.outcome", "interrupted");
            out.push(self.end(attempt, stopped_at, status, scope));
        }
        self.last_epoch_end = None;
        let interrupted = links.len() as i64;
        if !links.is_empty() {
            self.restart_links = links;
        }
        self.root.event(
            "ServerRestarted",
            restarted_at,
            vec![KeyValue::new("runyard.interrupted_spans", interrupted)],
        );
    }
}

impl RunSpans {
    /// No run traced yet; spans are reported under `scope`.
    pub fn new(scope: InstrumentationScope) -> Self {
        Self {
            runs: FxHashMap::default(),
            scope,
        }
    }

    /// Folds in event `seq`; spans it ends are pushed to `out`. Events of runs whose
    /// `RunSubmitted` was not observed are ignored.
    pub fn observe(&mut self, seq: Seq, envelope: &Envelope, out: &mut Vec<SpanData>) {
        let run_id = envelope.run_id;
        let at = recorded_at(envelope);
        if let Event::RunSubmitted { name, digest, spec } = &envelope.event {
            self.runs
                .entry(run_id)
                .or_insert_with(|| RunTrace::submitted(run_id, seq, at, name, digest, spec));
            return;
        }
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        if !matches!(envelope.event, Event::EpochEvaluated { .. }) {
            // A finished epoch waits only for its evaluation, journaled right after it.
            run.flush_epoch(&self.scope, out);
        }
        if run.apply(seq, at, &envelope.event, &self.scope, out) {
            self.runs.remove(&run_id);
        }
    }

    /// Tells the fold that the server stopped after `stopped_at` (the last event it
    /// journaled) and restarted at `restarted_at`: the run's claim and attempt, if
    /// open, are ended at `stopped_at` with an error status, and the spans the run
    /// opens next link to them (see the module docs).
    pub fn interrupt(
        &mut self,
        run_id: RunId,
        stopped_at: SystemTime,
        restarted_at: SystemTime,
        out: &mut Vec<SpanData>,
    ) {
        if let Some(run) = self.runs.get_mut(&run_id) {
            run.interrupt(stopped_at, restarted_at, &self.scope, out);
        }
    }

    /// Runs with a trace under way.
    pub fn open_runs(&self) -> usize {
        self.runs.len()
    }

    /// The trace id and root span id of an unfinished run.
    pub fn trace_of(&self, run_id: RunId) -> Option<(TraceId, SpanId)> {
        self.runs.get(&run_id).map(|r| (r.trace_id, r.root.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SlotId;

    const T0: i64 = 1_700_000_000_000_000;

    struct Given {
        spans: RunSpans,
        run: RunId,
        seq: Seq,
        out: Vec<SpanData>,
    }

    impl Given {
        fn new() -> Self {
            Self {
                spans: RunSpans::new(InstrumentationScope::builder("test").build()),
                run: RunId::new(),
                seq: 0,
                out: Vec::new(),
            }
        }

        /// Event `event` recorded `ms` milliseconds after T0.
        fn at(&mut self, ms: i64, event: Event) -> &mut Self {
            self.seq += 1;
            let envelope = Envelope {
                version: crate::domain::event::ENVELOPE_VERSION,
                recorded_at_micros: T0 + ms * 1000,
                run_id: self.run,
                event,
            };
            self.spans.observe(self.seq, &envelope, &mut self.out);
            self
        }

        fn span(&self, name: &str) -> &SpanData {
            let found: Vec<_> = self.out.iter().filter(|s| s.name == name).collect();
            assert_eq!(found.len(), 1, "one {name} span in {:?}", self.names());
            found[0]
        }

        fn names(&self) -> Vec<&str> {
            self.out.iter().map(|s| s.name.as_ref()).collect()
        }
    }

    fn ms(span_time: SystemTime) -> i64 {
        let micros = span_time
            .duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_micros() as i64;
        (micros - T0) / 1000
    }

    fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn submitted() -> Event {
        Event::RunSubmitted {
            name: "demo".into(),
            digest: "abc".into(),
            spec: r#"{"name":"demo","slots":2}"#.into(),
        }
    }

    fn started(attempt: u32) -> Event {
        Event::RunStarted {
            attempt,
            slot: SlotId(0),
            device: "cpu".into(),
        }
    }

    fn epoch(epoch: u32, duration_ms: u64) -> Event {
        Event::EpochCompleted {
            epoch,
            train_loss: 0.5,
            train_accuracy: 0.75,
            duration_ms,
        }
    }

    #[test]
    fn a_whole_run_is_one_trace_with_the_lifecycle_as_children() {
        let mut given = Given::new();
        given
            .at(0, submitted())
            .at(
                0,
                Event::TraceAssigned {
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                    span_id: "1111111111111111".into(),
                    parent_span_id: Some("00f067aa0ba902b7".into()),
                },
            )
            .at(100, Event::SlotClaimed { slot: SlotId(0) })
            .at(100, Event::SlotClaimed { slot: SlotId(1) })
            .at(150, started(1))
            .at(1150, epoch(1, 900))
            .at(
                1150,
                Event::EpochEvaluated {
                    epoch: 1,
                    val_loss: 0.4,
                    val_metric: 0.8,
                },
            )
            .at(
                1150,
                Event::CheckpointSaved {
                    path: "runs/x/checkpoints/1.safetensors".into(),
                    epoch: 1,
                    batch: 0,
                    step: 10,
                    sha256: "00".into(),
                    bytes: 7,
                },
            )
            .at(2150, epoch(2, 5000))
            .at(
                2160,
                Event::RunCompleted {
                    train_loss: 0.1,
                    train_accuracy: 0.9,
                },
            )
            .at(2160, Event::SlotReleased { slot: SlotId(0) })
            .at(2160, Event::SlotReleased { slot: SlotId(1) });
        assert_eq!(
            given.names(),
            [
                "queue_wait",
                "slot_claim",
                "epoch",
                "checkpoint",
                "epoch",
                "attempt",
                "run"
            ]
        );
        assert_eq!(given.spans.open_runs(), 0);
        let root = given.span("run");
        let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
        assert!(given.out.iter().all(|s| s.span_context.trace_id() == trace));
        assert_eq!(root.span_context.span_id().to_string(), "1111111111111111");
        assert_eq!(root.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(root.parent_span_is_remote);
        assert_eq!((ms(root.start_time), ms(root.end_time)), (0, 2160));
        assert_eq!(attr(root, "runyard.run.slots"), Some(&Value::I64(2)));
        assert_eq!(attr(root, "runyard.run.attempt"), Some(&Value::I64(1)));
        assert_eq!(attr(root, "runyard.run.state"), Some(&"completed".into()));
        assert_eq!(root.status, Status::Unset);
        // The releases came after the root ended: not part of the trace.
        let root_events: Vec<_> = root.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(root_events, ["RunSubmitted", "RunCompleted"]);

        let attempt = given.span("attempt");
        for name in ["queue_wait", "slot_claim", "attempt"] {
            assert_eq!(given.span(name).parent_span_id, root.span_context.span_id());
        }
        let claim = given.span("slot_claim");
        assert_eq!((ms(claim.start_time), ms(claim.end_time)), (100, 150));
        assert_eq!(
            attr(claim, "runyard.slots"),
            Some(&Value::Array(vec![0i64, 1].into()))
        );
        assert_eq!(claim.events.len(), 2);
        let epochs: Vec<_> = given.out.iter().filter(|s| s.name == "epoch").collect();
        assert!(epochs
            .iter()
            .all(|e| e.parent_span_id == attempt.span_context.span_id()));
        assert_eq!(
            (ms(epochs[0].start_time), ms(epochs[0].end_time)),
            (250, 1150)
        );
        assert_eq!(attr(epochs[0], "runyard.val.loss"), Some(&Value::F64(0.4)));
        assert_eq!(
            attr(epochs[0], "runyard.train.loss"),
            Some(&Value::F64(0.5))
        );
        // Never before the previous epoch's end, whatever its duration says.
        assert_eq!(
            (ms(epochs[1].start_time), ms(epochs[1].end_time)),
            (1150, 2150)
        );
        let checkpoint = given.span("checkpoint");
        assert_eq!(checkpoint.parent_span_id, attempt.span_context.span_id());
        assert_eq!(
            attr(checkpoint, "runyard.checkpoint.step"),
            Some(&Value::I64(10))
        );
    }

    #[test]
    fn failures_retries_pauses_and_cancels_have_their_spans_and_statuses() {
        let mut given = Given::new();
        given
            .at(0, submitted())
            .at(10, Event::SlotClaimed { slot: SlotId(0) })
            .at(20, started(1))
            .at(
                30,
                Event::RunRetryScheduled {
                    reason: "boom".into(),
                    retry: 1,
                    delay_ms: 50,
                },
            )
            .at(100, Event::SlotClaimed { slot: SlotId(0) })
            .at(110, started(2))
            .at(200, Event::PauseRequested)
            .at(
                250,
                Event::RunPaused {
                    reason: "asked".into(),
                },
            )
            .at(400, Event::RunResumed)
            .at(500, Event::CancelRequested)
            .at(
                600,
                Event::RunCancelled {
                    reason: "asked".into(),
                },
            );
        assert_eq!(
            given.names(),
            [
                "queue_wait",
                "slot_claim",
                "attempt",
                "queue_wait",
                "slot_claim",
                "attempt",
                "pause",
                "queue_wait",
                "cancel",
                "run"
            ]
        );
        let root = given.out.last().expect("root");
        // No traceparent: the run id is the trace id.
        assert_eq!(root.span_context.trace_id(), derived_trace_id(given.run));
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert_eq!(attr(root, "runyard.run.attempt"), Some(&Value::I64(2)));
        assert_eq!(attr(root, "runyard.run.state"), Some(&"cancelled".into()));
        let attempts: Vec<_> = given.out.iter().filter(|s| s.name == "attempt").collect();
        assert_eq!(attempts[0].status, Status::error("boom"));
        assert_eq!(
            attr(attempts[0], "runyard.attempt.outcome"),
            Some(&"retry".into())
        );
        assert_eq!(
            attr(attempts[1], "runyard.attempt.outcome"),
            Some(&"paused".into())
        );
        let queues: Vec<_> = given
            .out
            .iter()
            .filter(|s| s.name == "queue_wait")
            .collect();
        assert_eq!(
            attr(queues[1], "runyard.queue.reason"),
            Some(&"retry".into())
        );
        assert_eq!(
            attr(queues[2], "runyard.queue.reason"),
            Some(&"resumed".into())
        );
        // The last queue wait ends with the cancel; nothing is left open.
        assert_eq!(
            (ms(queues[2].start_time), ms(queues[2].end_time)),
            (400, 600)
        );
        let pause = given.span("pause");
        assert_eq!((ms(pause.start_time), ms(pause.end_time)), (200, 400));
        let cancel = given.span("cancel");
        assert_eq!((ms(cancel.start_time), ms(cancel.end_time)), (500, 600));

        let mut failed = Given::new();
        failed.at(0, submitted()).at(
            5,
            Event::RunFailed {
                reason: "bad data".into(),
            },
        );
        let root = failed.span("run");
        assert_eq!(root.status, Status::error("bad data"));
        assert_eq!(failed.span("queue_wait").end_time, root.end_time);
    }

    #[test]
    fn ids_are_derived_so_a_restarted_fold_names_spans_as_the_first_did() {
        let events = |given: &mut Given| {
            given
                .at(0, submitted())
                .at(10, Event::SlotClaimed { slot: SlotId(0) })
                .at(20, started(1))
                .at(1000, epoch(1, 900));
        };
        let mut first = Given::new();
        events(&mut first);
        let mut second = Given::new();
        second.run = first.run;
        events(&mut second);
        first.at(1500, Event::CancelRequested);
        second.at(1500, Event::CancelRequested);
        assert_eq!(first.out, second.out);
        assert_eq!(
            first.spans.trace_of(first.run),
            second.spans.trace_of(first.run)
        );
    }

    #[test]
    fn a_stop_ends_the_open_attempt_with_an_error_and_the_next_spans_link_to_it() {
        let mut given = Given::new();
        given
            .at(0, submitted())
            .at(10, Event::SlotClaimed { slot: SlotId(0) })
            .at(20, started(1))
            .at(1000, epoch(1, 900));
        // What the old server exported is not what this test looks at.
        given.out.clear();
        let stopped = UNIX_EPOCH + Duration::from_micros((T0 + 1000 * 1000) as u64);
        let restarted = stopped + Duration::from_secs(60);
        let run = given.run;
        given
            .spans
            .interrupt(run, stopped, restarted, &mut given.out);
        // The epoch waiting for an evaluation, then the attempt.
        assert_eq!(given.names(), ["epoch", "attempt"]);
        let interrupted = given.span("attempt").clone();
        assert_eq!(interrupted.status, Status::error(INTERRUPTED));
        assert_eq!(ms(interrupted.end_time), 1000);
        assert_eq!(
            attr(&interrupted, "runyard.attempt.outcome"),
            Some(&"interrupted".into())
        );
        given.out.clear();
        given
            .at(
                61_000,
                Event::RunRequeued {
                    reason: "server restarted".into(),
                },
            )
            .at(61_010, Event::SlotClaimed { slot: SlotId(0) })
            .at(61_020, started(2))
            .at(
                62_000,
                Event::RunCompleted {
                    train_loss: 0.1,
                    train_accuracy: 0.9,
                },
            );
        assert_eq!(
            given.names(),
            ["queue_wait", "slot_claim", "attempt", "run"]
        );
        for name in ["queue_wait", "slot_claim", "attempt"] {
            let span = given.span(name);
            assert_eq!(
                span.links.len(),
                1,
                "{name} links to the interrupted attempt"
            );
            assert_eq!(
                span.links[0].span_context.span_id(),
                interrupted.span_context.span_id()
            );
        }
        let root = given.span("run");
        assert_eq!(ms(root.start_time), 0, "the root keeps its real start");
        let root_events: Vec<_> = root.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(
            root_events,
            [
                "RunSubmitted",
                "ServerRestarted",
                "RunRequeued",
                "RunCompleted"
            ]
        );
    }

    #[test]
    fn a_span_keeps_at_most_its_share_of_events() {
        let mut given = Given::new();
        given
            .at(0, submitted())
            .at(1, Event::SlotClaimed { slot: SlotId(0) })
            .at(2, started(1));
        for i in 0..(MAX_EVENTS_PER_SPAN as i64 + 10) {
            given.at(
                3 + i,
                Event::RunStalled {
                    idle_secs: 31.0,
                    threshold_secs: 30.0,
                },
            );
        }
        given.at(10_000, Event::RunFailed { reason: "x".into() });
        let attempt = given.span("attempt");
        assert_eq!(attempt.events.len(), MAX_EVENTS_PER_SPAN);
        // RunStarted was the first event; ten stalls did not fit.
        assert_eq!(attempt.events.dropped_count, 11);
    }
}
