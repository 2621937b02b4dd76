//! The journal actor: the single writer of the event log.
//!
//! Appends are checked against the state fold (so two racing commands cannot both
//! win), given sequence numbers, and written in groups: while one flush is on disk,
//! new appends wait in `pending`, and all of them go out in the next flush. A caller
//! is answered only after its events are flushed, and readers see the new state
//! (and the tail notification) at the same moment.
//!
//! A failed write (disk full, an I/O error) fails every append waiting on it, and the
//! journal turns *degraded*: appends are refused at once while readers keep the last
//! durable state. Every [`RECOVERY_INTERVAL`] it checks that the disk takes writes
//! again, reopens the database from what is on disk, replays it, and takes appends
//! again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use opentelemetry::trace::SpanContext;
use tokio::sync::{oneshot, watch};

use super::fault::{self, ActorKind, Recover};
use super::follow::{Followed, Recent};
use crate::domain::{Envelope, Event, Rejection, RunId, Seq, State};
use crate::instruments::Instruments;
use crate::store::{replay, EventLog, StoreError};
use crate::telemetry::work;

/// Capacity of the journal's mailbox: appends are small, and a sender that finds a
/// full mailbox would lose its place in line.
const MAILBOX_CAPACITY: usize = 1 << 16;

/// Time between two attempts to recover from a failed write.
pub const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes written (and removed) to check that the disk takes writes again: a little
/// more than one sled segment.
const PROBE_BYTES: usize = 1 << 20;

/// Why an append was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The state does not allow one of the events; nothing was written.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The disk write or flush failed, or the journal is degraded after such a
    /// failure; nothing was acknowledged.
    #[error("journal write failed: {0}")]
    Storage(String),
    /// The journal stopped before answering.
    #[error("journal is not running")]
    Stopped,
}

/// Appends events about runs, atomically: all of them are written, or none.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Seq>, AppendError>")]
pub struct Append {
    /// `(run, event)` pairs, in the order they are to be written.
    pub records: Vec<(RunId, Event)>,
    /// The span this append is part of (a submit request, a checkpoint being
    /// journaled, a slot claim), when it is exported: the `journal.flush` span that
    /// makes the append durable is its child, or links to it when the flush serves
    /// an earlier append first (see [`Journal`]).
    pub parent: Option<SpanContext>,
}

/// [`Append`], except that a `RunSubmitted` whose spec digest a run already has is
/// taken (a rerun the client asked for) instead of refused as a duplicate.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Seq>, AppendError>")]
pub struct AppendAllowingDuplicate {
    /// `(run, event)` pairs, in the order they are to be written.
    pub records: Vec<(RunId, Event)>,
    /// See [`Append::parent`].
    pub parent: Option<SpanContext>,
}

/// The journal's answer to an append sent with `Addr::send`, a journal that is gone
/// (its mailbox closed) read as [`AppendError::Stopped`]: the one way every actor
/// reads it.
pub fn answered(
    sent: Result<Result<Vec<Seq>, AppendError>, MailboxError>,
) -> Result<Vec<Seq>, AppendError> {
    sent.map_err(|_| AppendError::Stopped)
        .and_then(|answer| answer)
}

impl Append {
    /// An append of `records`, in no span.
    pub fn new(records: Vec<(RunId, Event)>) -> Self {
        Self {
            records,
            parent: None,
        }
    }

    /// An append of a single event, in no span.
    pub fn one(run_id: RunId, event: Event) -> Self {
        Self::new(vec![(run_id, event)])
    }

    /// The append, part of the span `parent` (see [`Append::parent`]).
    pub fn under(mut self, parent: Option<SpanContext>) -> Self {
        self.parent = parent;
        self
    }
}

/// Counters of the journal's work, for metrics and benches.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct JournalCounters {
    /// Events written.
    pub events: u64,
    /// Flushes done.
    pub flushes: u64,
    /// Largest number of events in one flush.
    pub max_batch: u64,
}

/// Whether the journal takes appends, shared with readers.
#[derive(Debug, Default)]
pub struct JournalHealth {
    degraded: AtomicBool,
    reason: Mutex<Option<String>>,
    failures: AtomicU64,
    recoveries: AtomicU64,
}

impl JournalHealth {
    /// Why appends are refused, while they are.
    pub fn degraded(&self) -> Option<String> {
        if !self.degraded.load(Ordering::Acquire) {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Failed writes since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Recoveries from a failed write since start.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Relaxed)
    }

    fn set(&self, reason: Option<String>) {
        let degraded = reason.is_some();
        *self
            .reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = reason;
        if degraded {
            self.failures.fetch_add(1, Ordering::Relaxed);
        } else {
            self.recoveries.fetch_add(1, Ordering::Relaxed);
        }
        self.degraded.store(degraded, Ordering::Release);
    }
}

/// Read access to the journal for everyone but its writer: the published state fold,
/// the log itself, and a notification of the last durable sequence number.
#[derive(Clone)]
pub struct JournalReader {
    log: EventLog,
    state: Arc<RwLock<Arc<State>>>,
    /// The newest durable records, shared by every follower (see [`super::follow`]).
    recent: Arc<Recent>,
    tail: watch::Receiver<Seq>,
    health: Arc<JournalHealth>,
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader")
            .field("log", &self.log)
            .finish()
    }
}

impl JournalReader {
    /// The state as of the last flushed event: a snapshot that stays as it is while
    /// the caller holds it, however long it takes to read, and never holds up a
    /// flush (the journal publishes a new one after each).
    pub fn state(&self) -> Arc<State> {
        Arc::clone(
            &self
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The log, for reading events. Prefer [`JournalReader::durable_run_events`]:
    /// the log may hold records whose flush is still under way (or failed).
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The window of the newest durable records.
    pub(super) fn recent(&self) -> &Recent {
        &self.recent
    }

    /// The last durable sequence number: what readers may be shown.
    pub fn durable_seq(&self) -> Seq {
        *self.tail.borrow()
    }

    /// Up to `limit` durable records about `run_id` after `after`, in order, read off
    /// the async runtime's threads. Records written but not yet flushed (or whose
    /// flush failed) are never shown.
    pub async fn durable_run_events(
        &self,
        run_id: RunId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Envelope)>, StoreError> {
        self.read_durable(after, move |log| log.read_run_after(run_id, after, limit))
            .await
    }

    /// Up to `limit` durable records of every run after `after`, in order, read off
    /// the async runtime's threads: the global log capped at the durable sequence
    /// number, like [`JournalReader::durable_run_events`] for one run.
    pub async fn durable_events_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Envelope)>, StoreError> {
        // Never read past the durable tail, so a long unflushed batch is not decoded.
        let limit = limit
            .min(usize::try_from(self.durable_seq().saturating_sub(after)).unwrap_or(usize::MAX));
        self.read_durable(after, move |log| log.read_after(after, limit))
            .await
    }

    /// Runs `read` on a blocking thread and keeps only the records at or before the
    /// durable sequence number as it was when the read began.
    async fn read_durable(
        &self,
        after: Seq,
        read: impl FnOnce(EventLog) -> Result<Vec<(Seq, Envelope)>, StoreError> + Send + 'static,
    ) -> Result<Vec<(Seq, Envelope)>, StoreError> {
        let durable = self.durable_seq();
        if after >= durable {
            return Ok(Vec::new());
        }
        let log = self.log.clone();
        let dir = log.dir().to_path_buf();
        let mut records = tokio::task::spawn_blocking(move || read(log))
            .await
            .unwrap_or_else(|join| {
                Err(StoreError::Interrupted {
                    dir,
                    reason: join.to_string(),
                })
            })?;
        records.retain(|(seq, _)| *seq <= durable);
        Ok(records)
    }

    /// A receiver that changes whenever new events are durable; its value is the last
    /// durable sequence number.
    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.tail.clone()
    }

    /// Whether the journal takes appends.
    pub fn health(&self) -> &JournalHealth {
        &self.health
    }
}

struct Pending {
    first_seq: Seq,
    envelopes: Vec<Envelope>,
    reply: oneshot::Sender<Result<Vec<Seq>, AppendError>>,
    /// When the append reached the journal.
    arrived: Instant,
    /// The span the append is part of ([`Append::parent`]).
    parent: Option<SpanContext>,
}

/// The journal actor.
pub struct Journal {
    log: EventLog,
    /// The fold of every accepted event, flushed or not: appends are checked here.
    decider: State,
    /// The fold of every flushed event, shared with readers: replaced, never changed
    /// in place, after each flush (a clone of [`State`] is O(1)).
    published: Arc<RwLock<Arc<State>>>,
    /// Where each durable batch goes for the followers, before the tail moves on.
    recent: Arc<Recent>,
    tail: watch::Sender<Seq>,
    next_seq: Seq,
    /// Accepted appends waiting for the next flush.
    pending: Vec<Pending>,
    /// Appends in the flush on disk now.
    in_flight: Vec<Pending>,
    counters: JournalCounters,
    /// Events between snapshots (0: none).
    snapshot_every: u64,
    /// Sequence number of the last snapshot taken (or of the state at start).
    last_snapshot: Seq,
    /// Whether a snapshot is being written.
    snapshotting: bool,
    /// Set while appends are refused after a failed write.
    health: Arc<JournalHealth>,
    /// The failed write appends are refused for, while degraded.
    degraded: Option<String>,
    /// Append latency and flush sizes, for `/metrics`.
    instruments: Option<Instruments>,
    /// Set after a handler panicked: appends are refused until the flushes under way
    /// are done and the journal restarts (see [`Recover`]).
    restart_due: bool,
    /// A sync of the watermark is scheduled or under way.
    watermark_sync_due: bool,
    /// The state once the batch on disk is durable (the decider when it went out).
    in_flight_state: Option<State>,
    /// The `journal.flush` span of the batch on disk, ended when it is answered.
    flushing: Option<tracing::Span>,
}

/// How often a journal waiting to restart after a panic checks that its flushes are
/// done.
const RESTART_POLL: Duration = Duration::from_millis(2);

/// How long after a flush the watermark is synced. Batches flushed meanwhile share
/// the sync; after a power cut the watermark is at most this far behind the log (a
/// damage in that last stretch goes unnoticed), and after a crash of the process
/// alone it is exact (the page cache holds it).
pub const WATERMARK_SYNC_DELAY: Duration = Duration::from_millis(50);

/// Snapshots kept in the log; older ones are deleted as new ones are written.
const SNAPSHOTS_KEPT: usize = 2;

impl Journal {
    /// A journal over `log` whose replayed state is `state`, and a reader of it.
    pub fn new(log: EventLog, state: State) -> (Self, JournalReader) {
        Self::with_snapshots(log, state, 0)
    }

    /// A journal that also snapshots the state every `snapshot_every` events (0: never).
    pub fn with_snapshots(
        log: EventLog,
        state: State,
        snapshot_every: u64,
    ) -> (Self, JournalReader) {
        let published = Arc::new(RwLock::new(Arc::new(state.clone())));
        let (tail, tail_rx) = watch::channel(state.last_seq());
        let health = Arc::new(JournalHealth::default());
        let recent = Arc::new(Recent::default());
        let reader = JournalReader {
            log: log.clone(),
            state: Arc::clone(&published),
            recent: Arc::clone(&recent),
            tail: tail_rx,
            health: Arc::clone(&health),
        };
        let journal = Self {
            next_seq: state.last_seq() + 1,
            log,
            decider: state,
            published,
            recent,
            tail,
            pending: Vec::new(),
            in_flight: Vec::new(),
            counters: JournalCounters::default(),
            snapshot_every,
            last_snapshot: 0,
            snapshotting: false,
            health,
            degraded: None,
            instruments: None,
            restart_due: false,
            watermark_sync_due: false,
            in_flight_state: None,
            flushing: None,
        };
        let mut journal = journal;
        journal.last_snapshot = journal.next_seq - 1;
        (journal, reader)
    }

    /// Also records append latency and flush sizes in `instruments`.
    pub fn with_instruments(mut self, instruments: Instruments) -> Self {
        self.instruments = Some(instruments);
        self
    }

    /// A copy of the published state, to change (O(1): see [`State`]).
    fn published(&self) -> State {
        State::clone(
            &self
                .published
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Replaces the state readers see. The lock is held only to swap the pointer, so
    /// a reader serializing the old snapshot never waits for this, nor this for it.
    fn publish(&self, state: State) {
        *self
            .published
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(state);
    }

    /// Recomputes the decider from the published state plus everything accepted
    /// since, after a rejection in the middle of a multi-event append.
    fn rebuild_decider(&mut self) {
        let mut decider = self.published();
        for pending in self.in_flight.iter().chain(&self.pending) {
            for (i, envelope) in pending.envelopes.iter().enumerate() {
                decider.apply(pending.first_seq + i as Seq, envelope);
            }
        }
        self.decider = decider;
    }

    fn accept(
        &mut self,
        records: Vec<(RunId, Event)>,
        allow_duplicate: bool,
    ) -> Result<(Seq, Vec<Envelope>), AppendError> {
        let first_seq = self.next_seq;
        let mut envelopes = Vec::with_capacity(records.len());
        for (i, (run_id, event)) in records.into_iter().enumerate() {
            let checked = self.decider.check(run_id, &event).and_then(|()| {
                if allow_duplicate {
                    Ok(())
                } else {
                    self.decider.check_new_digest(&event)
                }
            });
            if let Err(rejection) = checked {
                if i > 0 {
                    self.rebuild_decider();
                }
                return Err(rejection.into());
            }
            let envelope = Envelope::now(run_id, event);
            self.decider.apply(first_seq + i as Seq, &envelope);
            envelopes.push(envelope);
        }
        self.next_seq += envelopes.len() as Seq;
        Ok((first_seq, envelopes))
    }

    fn flush_next(&mut self, ctx: &mut Context<Self>) {
        if !self.in_flight.is_empty() || self.pending.is_empty() {
            return;
        }
        self.in_flight = std::mem::take(&mut self.pending);
        // With nothing else pending, the decider is the published state plus exactly
        // this batch: what readers see once it is durable (an O(1) clone, so the batch
        // is folded once, not twice).
        self.in_flight_state = Some(self.decider.clone());
        let first_seq = self.in_flight[0].first_seq;
        let envelopes: Vec<Envelope> = self
            .in_flight
            .iter()
            .flat_map(|p| p.envelopes.iter().cloned())
            .collect();
        let span = self.flush_span(first_seq, envelopes.len());
        self.flushing = Some(span.clone());
        let log = self.log.clone();
        let write = async move {
            tokio::task::spawn_blocking(move || {
                // The store's own span (`store.append`) goes under the flush.
                let _entered = span.enter();
                let result = log.append_synced(first_seq, &envelopes);
                if result.is_ok() {
                    // In the page cache now, synced a moment later (see below).
                    let last = first_seq + envelopes.len() as Seq - 1;
                    if let Err(e) = log.write_watermark(last) {
                        tracing::warn!(seq = last, error = %e, "journal watermark not written");
                    }
                }
                (envelopes, result)
            })
            .await
        };
        ctx.spawn(write.into_actor(self).map(move |done, journal, ctx| {
            let result = match done {
                Ok((envelopes, Ok(()))) => Ok(envelopes),
                Ok((_, Err(e))) => Err(e.to_string()),
                Err(join) => Err(format!("writer task failed: {join}")),
            };
            journal.flushed(first_seq, result, ctx);
        }));
    }

    /// The `journal.flush` span of the batch in flight: a child of the span of its
    /// first append that is part of one (a flush serves many appends at once, and a
    /// span has one parent), linked to the spans of the others
    /// (`runyard.link.reason = same_flush`). A batch about one run none of whose
    /// appends is part of a span goes under the run's current span
    /// ([`work::current_of`], before the batch); any other is a trace of its own.
    fn flush_span(&self, first_seq: Seq, events: usize) -> tracing::Span {
        let span = tracing::debug_span!(
            target: work::TARGET,
            parent: None,
            "journal.flush",
            runyard.journal.appends = self.in_flight.len() as i64,
            runyard.journal.events = events as i64,
            runyard.journal.first_seq = first_seq as i64,
            runyard.journal.last_seq = (first_seq + events as Seq - 1) as i64,
            runyard.run.id = tracing::field::Empty,
            runyard.outcome = tracing::field::Empty,
        );
        if span.is_disabled() {
            return span;
        }
        // The run, when the whole batch is about one.
        let mut runs = self
            .in_flight
            .iter()
            .flat_map(|p| &p.envelopes)
            .map(|e| e.run_id);
        let run = runs.next().filter(|run| runs.all(|other| other == *run));
        if let Some(run) = run {
            span.record("runyard.run.id", tracing::field::display(run));
        }
        let mut parents = self.in_flight.iter().filter_map(|p| p.parent.as_ref());
        if let Some(first) = parents.next() {
            work::set_parent(&span, first);
            for other in parents.filter(|p| p.span_id() != first.span_id()) {
                work::link(&span, other, "same_flush");
            }
        } else if let Some(current) = run.and_then(|run| {
            // No append said what it is part of (a recovery, a file deletion): one
            // run's batch goes under what the run was doing before it.
            let published = self.published.read().unwrap_or_else(|p| p.into_inner());
            published.run(run).and_then(work::current_of)
        }) {
            work::set_parent(&span, &current);
        }
        span
    }

    fn flushed(
        &mut self,
        first_seq: Seq,
        result: Result<Vec<Envelope>, String>,
        ctx: &mut Context<Self>,
    ) {
        let batch = std::mem::take(&mut self.in_flight);
        if let Some(span) = self.flushing.take() {
            span.record(
                "runyard.outcome",
                if result.is_ok() { "durable" } else { "failed" },
            );
        }
        match result {
            Ok(envelopes) => {
                let count = envelopes.len() as Seq;
                let state = match self.in_flight_state.take() {
                    Some(state) if state.last_seq() == first_seq + count - 1 => state,
                    _ => {
                        let mut state = self.published();
                        for (i, envelope) in envelopes.iter().enumerate() {
                            state.apply(first_seq + i as Seq, envelope);
                        }
                        state
                    }
                };
                self.publish(state);
                if count > 0 {
                    self.recent.push(first_seq, &envelopes);
                    self.tail.send_replace(first_seq + count - 1);
                }
                self.counters.events += count;
                self.counters.flushes += 1;
                self.counters.max_batch = self.counters.max_batch.max(count);
                self.maybe_snapshot(ctx);
                if let Some(instruments) = &self.instruments {
                    instruments.journal_flush_events.observe(count as f64);
                    for pending in &batch {
                        instruments
                            .journal_append
                            .observe(pending.arrived.elapsed().as_secs_f64());
                    }
                }
                for pending in batch {
                    let seqs = (0..pending.envelopes.len() as Seq)
                        .map(|i| pending.first_seq + i)
                        .collect();
                    let _ = pending.reply.send(Ok(seqs));
                }
                self.flush_next(ctx);
                self.sync_watermark_soon(ctx);
            }
            Err(reason) => {
                self.in_flight_state = None;
                tracing::error!(error = %reason, dir = %self.log.dir().display(), "journal write failed; appends are refused until the disk takes writes again");
                let pending = std::mem::take(&mut self.pending);
                for p in batch.into_iter().chain(pending) {
                    let _ = p.reply.send(Err(AppendError::Storage(reason.clone())));
                }
                // Forget what was accepted but not written: the decider goes back to
                // the last durable state.
                self.decider = self.published();
                self.next_seq = self.decider.last_seq() + 1;
                self.health.set(Some(reason.clone()));
                self.degraded = Some(reason);
                ctx.run_later(RECOVERY_INTERVAL, |journal, ctx| journal.try_recover(ctx));
            }
        }
    }

    /// One attempt to leave the degraded state: check that the disk takes a write,
    /// reopen the database from disk, and replay it. Runs off the actor's thread;
    /// on failure, the next attempt is scheduled.
    fn try_recover(&mut self, ctx: &mut Context<Self>) {
        let log = self.log.clone();
        let attempt = async move {
            tokio::task::spawn_blocking(move || {
                probe_disk(log.dir()).map_err(|e| format!("disk still refuses writes: {e}"))?;
                log.reopen(Duration::from_secs(5))
                    .map_err(|e| format!("cannot reopen: {e}"))?;
                replay(&log).map_err(|e| format!("cannot replay: {e}"))
            })
            .await
            .unwrap_or_else(|join| Err(format!("recovery task failed: {join}")))
        };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(|outcome, journal, ctx| match outcome {
                    Ok((state, _)) => {
                        let last = state.last_seq();
                        journal.next_seq = last + 1;
                        journal.decider = state.clone();
                        journal.publish(state);
                        journal.recent.clear();
                        journal.tail.send_replace(last);
                        journal.degraded = None;
                        journal.health.set(None);
                        tracing::info!(
                            last_seq = last,
                            "journal recovered; appends are taken again"
                        );
                        journal.maybe_snapshot(ctx);
                    }
                    Err(reason) => {
                        tracing::debug!(%reason, "journal still degraded");
                        ctx.run_later(RECOVERY_INTERVAL, |journal, ctx| journal.try_recover(ctx));
                    }
                }),
        );
    }

    /// Writes a snapshot of the published state off the actor's thread, when
    /// `snapshot_every` events have been flushed since the last one.
    fn maybe_snapshot(&mut self, ctx: &mut Context<Self>) {
        let last = self.next_seq - 1 - self.pending_events();
        if self.snapshot_every == 0
            || self.snapshotting
            || last < self.last_snapshot + self.snapshot_every
        {
            return;
        }
        self.snapshotting = true;
        let state = self.published();
        let seq = state.last_seq();
        let log = self.log.clone();
        let write = async move {
            tokio::task::spawn_blocking(move || {
                log.write_snapshot(seq, &state.to_snapshot(), SNAPSHOTS_KEPT)
            })
            .await
        };
        ctx.spawn(write.into_actor(self).map(move |done, journal, _| {
            journal.snapshotting = false;
            match done {
                Ok(Ok(())) => {
                    journal.last_snapshot = seq;
                    tracing::info!(seq, "state snapshot written");
                }
                Ok(Err(e)) => tracing::warn!(seq, error = %e, "state snapshot not written"),
                Err(e) => tracing::warn!(seq, error = %e, "state snapshot task failed"),
            }
        }));
    }

    /// Syncs the watermark [`WATERMARK_SYNC_DELAY`] from now, on a blocking thread,
    /// unless a sync is already due: one sync covers every batch flushed meanwhile,
    /// and it is never on the path of an acknowledgment. A failure only leaves the
    /// watermark behind, which checks less; it is logged.
    fn sync_watermark_soon(&mut self, ctx: &mut Context<Self>) {
        if self.watermark_sync_due {
            return;
        }
        self.watermark_sync_due = true;
        ctx.run_later(WATERMARK_SYNC_DELAY, |journal, ctx| {
            let log = journal.log.clone();
            let sync = async move {
                tokio::task::spawn_blocking(move || log.sync_watermark())
                    .await
                    .map_err(|join| join.to_string())
                    .and_then(|synced| synced.map_err(|e| e.to_string()))
            };
            ctx.spawn(sync.into_actor(journal).map(|done, journal, _| {
                journal.watermark_sync_due = false;
                if let Err(e) = done {
                    tracing::warn!(error = %e, "journal watermark not synced");
                }
            }));
        });
    }

    /// Events accepted but not yet flushed.
    fn pending_events(&self) -> Seq {
        self.in_flight
            .iter()
            .chain(&self.pending)
            .map(|p| p.envelopes.len() as Seq)
            .sum()
    }

    fn rederive(&mut self) -> Result<(), StoreError> {
        let (state, stats) = replay(&self.log)?;
        tracing::info!(
            events = stats.events,
            "journal state re-derived from the log"
        );
        self.next_seq = state.last_seq() + 1;
        self.decider = state.clone();
        self.publish(state);
        self.recent.clear();
        Ok(())
    }
}

impl Actor for Journal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

/// A panic in a handler stops the journal, once the flushes already under way are
/// done and answered (their futures would go with the context; a write still on disk
/// while the log is replayed could be replayed or not), and appends that arrive
/// meanwhile are refused with `Stopped`. The `Supervisor` then restarts it.
impl Recover for Journal {
    const KIND: ActorKind = ActorKind::Journal;

    fn recover(&mut self, ctx: &mut Self::Context) {
        if std::mem::replace(&mut self.restart_due, true) {
            return;
        }
        ctx.run_interval(RESTART_POLL, |journal, ctx| {
            if journal.in_flight.is_empty() && journal.pending.is_empty() {
                ctx.stop();
            }
        });
    }
}

impl Supervised for Journal {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        if let Some(instruments) = &self.instruments {
            instruments.actor_restarts(ActorKind::Journal.name()).inc();
        }
        // Empty after a restart that waited for its flushes; otherwise their callers
        // see `Stopped`.
        self.pending.clear();
        self.in_flight.clear();
        self.flushing = None;
        self.restart_due = false;
        // A snapshot, a watermark write or a recovery attempt under way went with the
        // old context.
        self.snapshotting = false;
        self.watermark_sync_due = false;
        self.in_flight_state = None;
        if let Err(e) = self.rederive() {
            tracing::error!(error = %e, "journal could not re-derive its state");
        }
        if self.degraded.is_some() {
            ctx.run_later(RECOVERY_INTERVAL, |journal, ctx| journal.try_recover(ctx));
        }
        tracing::info!(next_seq = self.next_seq, "journal restarted");
    }
}

impl Handler<Append> for Journal {
    type Result = ResponseFuture<Result<Vec<Seq>, AppendError>>;

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) -> Self::Result {
        self.append_caught((msg.records, msg.parent), false, ctx)
    }
}

impl Handler<AppendAllowingDuplicate> for Journal {
    type Result = ResponseFuture<Result<Vec<Seq>, AppendError>>;

    fn handle(&mut self, msg: AppendAllowingDuplicate, ctx: &mut Self::Context) -> Self::Result {
        self.append_caught((msg.records, msg.parent), true, ctx)
    }
}

impl Journal {
    /// [`Journal::append`] behind the journal's fault point, with a panic caught
    /// (see [`Recover`]); refused with `Stopped` while a restart is due.
    fn append_caught(
        &mut self,
        records: (Vec<(RunId, Event)>, Option<SpanContext>),
        allow_duplicate: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Vec<Seq>, AppendError>> {
        let answer = if self.restart_due {
            None
        } else {
            fault::guard(self, ctx, "append", |journal, ctx| {
                fault::point(ActorKind::Journal);
                journal.append(records, allow_duplicate, ctx)
            })
        };
        answer.unwrap_or_else(|| Box::pin(async { Err(AppendError::Stopped) }))
    }
}

impl Journal {
    /// Checks, accepts and queues `records` for the next flush; answers once they
    /// are durable (or refused).
    fn append(
        &mut self,
        (records, parent): (Vec<(RunId, Event)>, Option<SpanContext>),
        allow_duplicate: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Vec<Seq>, AppendError>> {
        let (reply, answer) = oneshot::channel();
        if let Some(reason) = &self.degraded {
            let _ = reply.send(Err(AppendError::Storage(format!(
                "the journal refuses appends since a failed write ({reason}); retrying every {}s",
                RECOVERY_INTERVAL.as_secs()
            ))));
        } else if records.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
        } else {
            match self.accept(records, allow_duplicate) {
                Ok((first_seq, envelopes)) => {
                    self.pending.push(Pending {
                        first_seq,
                        envelopes,
                        reply,
                        arrived: Instant::now(),
                        parent,
                    });
                    self.flush_next(ctx);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        Box::pin(async move { answer.await.unwrap_or(Err(AppendError::Stopped)) })
    }
}

/// Writes, syncs and removes a probe file in `dir`: whether the disk takes writes.
fn probe_disk(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = dir.join(".write-probe");
    let result = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Asks for the journal's counters.
#[derive(Debug, Message)]
#[rtype(result = "JournalCounters")]
pub struct GetCounters;

impl Handler<GetCounters> for Journal {
    type Result = MessageResult<GetCounters>;

    fn handle(&mut self, _msg: GetCounters, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.counters)
    }
}

impl JournalReader {
    /// Up to `limit` durable records after `after` (only `run`'s, when given): from
    /// the window of recent records when it reaches back that far, else from the
    /// log, off the async runtime's threads.
    pub async fn records_after(
        &self,
        after: Seq,
        limit: usize,
        run: Option<RunId>,
    ) -> Result<Vec<Arc<Followed>>, StoreError> {
        if let Some(records) = self.recent_after(after, limit, run) {
            return Ok(records);
        }
        let read = match run {
            Some(id) => self.durable_run_events(id, after, limit).await?,
            None => self.durable_events_after(after, limit).await?,
        };
        Ok(read
            .into_iter()
            .map(|(seq, envelope)| Followed::new(seq, envelope))
            .collect())
    }

    /// [`JournalReader::records_after`] when the window of recent records answers
    /// it (no read of the log); `None` when the log must be read.
    pub fn recent_after(
        &self,
        after: Seq,
        limit: usize,
        run: Option<RunId>,
    ) -> Option<Vec<Arc<Followed>>> {
        if after >= self.durable_seq() {
            return Some(Vec::new());
        }
        self.recent().after(after, limit, run)
    }

    /// Every durable record of the window of recent ones after `after`, or the
    /// whole window when it does not reach back to `after` (the records of many
    /// followers at once; each checks the first record's number against its own).
    pub fn recent_since(&self, after: Seq) -> Vec<Arc<Followed>> {
        self.recent().since(after)
    }

    /// Follows the journal from after `after`.
    pub fn follow(&self, after: Seq) -> Follow {
        Follow {
            reader: self.clone(),
            tail: self.subscribe(),
            cursor: after,
        }
    }
}

/// A cursor over the durable records, for a reader that takes every one in order.
#[derive(Debug)]
pub struct Follow {
    reader: JournalReader,
    tail: watch::Receiver<Seq>,
    cursor: Seq,
}

impl Follow {
    /// The last record taken.
    pub fn cursor(&self) -> Seq {
        self.cursor
    }

    /// The next records (at most `limit`), once there are any; `None` once the
    /// journal is gone. An empty answer means the log held nothing past the cursor
    /// though the tail was (it was reopened after a failed write): look again later.
    pub async fn next(&mut self, limit: usize) -> Option<Result<Vec<Arc<Followed>>, StoreError>> {
        while self.reader.durable_seq() <= self.cursor {
            self.tail.changed().await.ok()?;
        }
        let read = self.reader.records_after(self.cursor, limit, None).await;
        if let Ok(records) = &read {
            if let Some(last) = records.last() {
                self.cursor = last.seq;
            }
        }
        Some(read)
    }
}
