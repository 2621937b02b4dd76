//! The journal actor: the single writer of the event log.
//!
//! Appends are checked against the state fold (so two racing commands cannot both
//! win), given sequence numbers, and written in groups: while one flush is on disk,
//! new appends wait in `pending`, and all of them go out in the next flush. A caller
//! is answered only after its events are flushed, and readers see the new state
//! (and the tail notification) at the same moment.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use crate::domain::{Envelope, Event, Rejection, RunId, Seq, State};
use crate::store::{replay, EventLog, StoreError};

/// Capacity of the journal's mailbox: appends are small, and a sender that finds a
/// full mailbox would lose its place in line.
const MAILBOX_CAPACITY: usize = 1 << 16;

/// Why an append was not made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The state does not allow one of the events; nothing was written.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The disk write or flush failed; nothing was acknowledged.
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
}

impl Append {
    /// An append of a single event.
    pub fn one(run_id: RunId, event: Event) -> Self {
        Self {
            records: vec![(run_id, event)],
        }
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

/// Read access to the journal for everyone but its writer: the published state fold,
/// the log itself, and a notification of the last durable sequence number.
#[derive(Clone)]
pub struct JournalReader {
    log: EventLog,
    state: Arc<RwLock<State>>,
    tail: watch::Receiver<Seq>,
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader")
            .field("log", &self.log)
            .finish()
    }
}

impl JournalReader {
    /// The state as of the last flushed event.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The log, for reading events.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// A receiver that changes whenever new events are durable; its value is the last
    /// durable sequence number.
    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.tail.clone()
    }
}

struct Pending {
    first_seq: Seq,
    envelopes: Vec<Envelope>,
    reply: oneshot::Sender<Result<Vec<Seq>, AppendError>>,
}

/// The journal actor.
pub struct Journal {
    log: EventLog,
    /// The fold of every accepted event, flushed or not: appends are checked here.
    decider: State,
    /// The fold of every flushed event, shared with readers.
    published: Arc<RwLock<State>>,
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
}

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
        let published = Arc::new(RwLock::new(state.clone()));
        let (tail, tail_rx) = watch::channel(state.last_seq());
        let reader = JournalReader {
            log: log.clone(),
            state: Arc::clone(&published),
            tail: tail_rx,
        };
        let journal = Self {
            next_seq: state.last_seq() + 1,
            log,
            decider: state,
            published,
            tail,
            pending: Vec::new(),
            in_flight: Vec::new(),
            counters: JournalCounters::default(),
            snapshot_every,
            last_snapshot: 0,
            snapshotting: false,
        };
        let mut journal = journal;
        journal.last_snapshot = journal.next_seq - 1;
        (journal, reader)
    }

    fn published(&self) -> State {
        self.published
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
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
    ) -> Result<(Seq, Vec<Envelope>), AppendError> {
        let first_seq = self.next_seq;
        let mut envelopes = Vec::with_capacity(records.len());
        for (i, (run_id, event)) in records.into_iter().enumerate() {
            if let Err(rejection) = self.decider.check(run_id, &event) {
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
        let first_seq = self.in_flight[0].first_seq;
        let envelopes: Vec<Envelope> = self
            .in_flight
            .iter()
            .flat_map(|p| p.envelopes.iter().cloned())
            .collect();
        let log = self.log.clone();
        let write = async move {
            tokio::task::spawn_blocking(move || {
                let result = log.append(first_seq, &envelopes);
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

    fn flushed(
        &mut self,
        first_seq: Seq,
        result: Result<Vec<Envelope>, String>,
        ctx: &mut Context<Self>,
    ) {
        let batch = std::mem::take(&mut self.in_flight);
        match result {
            Ok(envelopes) => {
                let count = envelopes.len() as Seq;
                {
                    let mut state = self
                        .published
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    for (i, envelope) in envelopes.iter().enumerate() {
                        state.apply(first_seq + i as Seq, envelope);
                    }
                }
                if count > 0 {
                    self.tail.send_replace(first_seq + count - 1);
                }
                self.counters.events += count;
                self.counters.flushes += 1;
                self.counters.max_batch = self.counters.max_batch.max(count);
                self.maybe_snapshot(ctx);
                for pending in batch {
                    let seqs = (0..pending.envelopes.len() as Seq)
                        .map(|i| pending.first_seq + i)
                        .collect();
                    let _ = pending.reply.send(Ok(seqs));
                }
                self.flush_next(ctx);
            }
            Err(reason) => {
                tracing::error!(error = %reason, dir = %self.log.dir().display(), "journal flush failed; restarting the journal");
                let pending = std::mem::take(&mut self.pending);
                for p in batch.into_iter().chain(pending) {
                    let _ = p.reply.send(Err(AppendError::Storage(reason.clone())));
                }
                ctx.stop();
            }
        }
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
        *self
            .published
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
        Ok(())
    }
}

impl Actor for Journal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

impl Supervised for Journal {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.pending.clear();
        self.in_flight.clear();
        if let Err(e) = self.rederive() {
            tracing::error!(error = %e, "journal could not re-derive its state");
        }
    }
}

impl Handler<Append> for Journal {
    type Result = ResponseFuture<Result<Vec<Seq>, AppendError>>;

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        if msg.records.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
        } else {
            match self.accept(msg.records) {
                Ok((first_seq, envelopes)) => {
                    self.pending.push(Pending {
                        first_seq,
                        envelopes,
                        reply,
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
