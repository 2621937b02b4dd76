//! The streams of one worker thread, fed by one task: its hub.
//!
//! A hub follows the journal's tail and the progress ticks once for every stream its
//! worker serves. At each burst of durable records it takes one snapshot of the
//! journal's window of recent records and walks its streams: each is handed the
//! frames after its own cursor that its filter wants, shared with every other stream
//! (a record is encoded once, [`Followed::frame`]). At each tick it hands each
//! stream the changed samples of the runs it shows, each encoded once. A stream is
//! a few hundred bytes in the hub's table and a slot shared with its connection; no
//! task, timer or watch of its own.
//!
//! The hub never waits for a client. A stream whose slot is still full when the hub
//! has something for it keeps its cursor and asks to be told when its connection
//! takes the chunk ([`slot::Attention`]); the hub then goes on from that cursor. A
//! stream whose slot stays full for a keep-alive interval is ended as too slow, with
//! the `after` to resume from. A stream further behind than the window (a client
//! catching up on history, or one that fell behind it) is handed to a task of its own
//! ([`super::behind`]) that reads the log from its cursor and hands it back once it
//! reaches the window.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_web::web;
use rustc_hash::FxHashMap;
use slab::Slab;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::slot::{Attention, Refused};
use super::sub::{Door, Sub};
use super::{gather, End, Filter, Frames, CHUNK_BYTES, LIVE_CHUNK_BYTES};
use crate::actors::follow::Followed;
use crate::domain::{Progress, RunId, RunState, Seq, State};
use crate::http::AppState;

/// The shortest time between two walks of the streams for new records. News after a
/// quiet spell goes out at once; a burst of appends goes out in one write per stream
/// per gap, not one per append. Measured with a thousand streams open
/// (`benches/streams.rs`, 2-core VM).
const BURST_GAP: Duration = Duration::from_millis(100);
/// Parts of a keep-alive interval: each sweep sends the comments of one part of
/// the streams.
const PHASES: usize = 16;
/// Records a stream served on its own (when its connection made room) is given at
/// most at once.
const SERVE_BATCH: usize = 64;

thread_local! {
    /// This worker's hubs: one per server (tests run several in one process).
    static HUBS: RefCell<Vec<(Weak<AppState>, mpsc::UnboundedSender<Sub>)>> =
        const { RefCell::new(Vec::new()) };
}

/// Hands a new stream to this worker's hub, starting the hub on the first.
pub(super) fn join(state: &Arc<AppState>, sub: Sub) {
    HUBS.with(|hubs| {
        let mut hubs = hubs.borrow_mut();
        hubs.retain(|(server, door)| server.strong_count() > 0 && !door.is_closed());
        let door = match hubs
            .iter()
            .find(|(server, _)| std::ptr::eq(server.as_ptr(), Arc::as_ptr(state)))
        {
            Some((_, door)) => door.clone(),
            None => {
                let door = Hub::start(Arc::clone(state));
                hubs.push((Arc::downgrade(state), door.clone()));
                door
            }
        };
        if let Err(refused) = door.send(sub) {
            // Only while the worker shuts down.
            refused.0.end(state, End::Done);
        }
    });
}

/// The samples of one tick, each encoded once.
#[derive(Default)]
struct Samples(FxHashMap<RunId, Option<(Progress, web::Bytes)>>);

impl Samples {
    fn get(&mut self, state: &AppState, id: RunId) -> Option<&(Progress, web::Bytes)> {
        self.0
            .entry(id)
            .or_insert_with(|| {
                let progress = state.actors.board.get(id)?;
                Some((progress, state.streams.encoded(id, &progress)))
            })
            .as_ref()
    }
}

/// A snapshot of the journal's window of recent records, from after a cursor.
struct Window {
    durable: Seq,
    records: Vec<Arc<Followed>>,
}

impl Window {
    /// The records after `cursor` it holds (none if `cursor` is past the journal's
    /// durable end); `None` when it does not reach back to `cursor`.
    fn after(&self, cursor: Seq) -> Option<&[Arc<Followed>]> {
        if cursor >= self.durable {
            return Some(&[]);
        }
        let first = self.records.first()?.seq;
        if cursor.saturating_add(1) < first {
            return None;
        }
        let from = usize::try_from(cursor + 1 - first).unwrap_or(usize::MAX);
        Some(self.records.get(from..).unwrap_or_default())
    }
}

/// What a stream's turn came to.
enum Turn {
    /// It stays in the hub.
    Stay,
    /// It is further behind than the window: a task of its own catches it up.
    Behind,
    /// It is over.
    End(End),
}

struct Hub {
    state: Arc<AppState>,
    subs: Slab<Sub>,
    attention: Arc<Attention>,
    /// New streams, and streams caught up by their own task.
    door: Door,
    /// The phase of the last sweep, from 0 to [`PHASES`] - 1.
    phase: usize,
    /// The keys last taken from `attention` (kept for its buffer).
    called: Vec<usize>,
}

impl Hub {
    fn start(state: Arc<AppState>) -> Door {
        let (door, arrivals) = mpsc::unbounded_channel();
        let hub = Hub {
            state,
            subs: Slab::new(),
            attention: Arc::default(),
            door: door.clone(),
            phase: 0,
            called: Vec::new(),
        };
        actix_web::rt::spawn(hub.run(arrivals));
        door
    }

    async fn run(mut self, mut arrivals: mpsc::UnboundedReceiver<Sub>) {
        let keep_alive = self.state.keep_alive;
        let mut tail = self.state.actors.reader.subscribe();
        let mut ticks = self.state.actors.board.subscribe();
        let mut ticking = true;
        let every = keep_alive / PHASES as u32;
        let mut sweep = tokio::time::interval_at(Instant::now() + every, every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_news = Instant::now();
        let mut gap: Option<Pin<Box<Sleep>>> = None;
        let attention = Arc::clone(&self.attention);
        loop {
            tokio::select! {
                sub = arrivals.recv() => {
                    // The hub holds a sender itself: never `None`.
                    let Some(sub) = sub else { return };
                    self.admit(sub);
                }
                () = attention.notified() => self.attend(),
                changed = tail.changed(), if gap.is_none() => {
                    if changed.is_err() {
                        self.end_all(End::Done);
                        return;
                    }
                    let due = last_news + BURST_GAP;
                    if Instant::now() >= due {
                        last_news = Instant::now();
                        self.news();
                    } else {
                        gap = Some(Box::pin(tokio::time::sleep_until(due)));
                    }
                }
                () = async { gap.as_mut().expect("guarded").await }, if gap.is_some() => {
                    gap = None;
                    last_news = Instant::now();
                    self.news();
                }
                changed = ticks.changed(), if ticking => {
                    match changed {
                        Ok(()) => self.progress(),
                        Err(_) => ticking = false,
                    }
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
    }

    /// Takes in a new (or caught-up) stream and serves it at once.
    fn admit(&mut self, sub: Sub) {
        let key = self.subs.insert(sub);
        self.subs[key]
            .tx
            .watch(Some((Arc::clone(&self.attention), key)));
        self.serve_alone(key);
    }

    /// Serves the streams whose connection took its chunk or went away.
    fn attend(&mut self) {
        let mut keys = std::mem::take(&mut self.called);
        self.attention.take_into(&mut keys);
        for &key in &keys {
            let Some(sub) = self.subs.get(key) else {
                continue;
            };
            if sub.tx.is_closed() {
                self.close(key, Turn::End(End::Gone));
            } else if sub.waiting_since.is_some() && sub.tx.has_room() {
                self.serve_alone(key);
            }
        }
        self.called = keys;
    }

    /// Serves one stream from a window snapshot of its own.
    fn serve_alone(&mut self, key: usize) {
        let reader = &self.state.actors.reader;
        let sub = &mut self.subs[key];
        let durable = reader.durable_seq();
        let run = match sub.filter.runs.as_deref() {
            Some([one]) => Some(*one),
            _ => None,
        };
        let turn = match reader.recent_after(sub.cursor, SERVE_BATCH, run) {
            None => Turn::Behind,
            Some(records) => {
                // Fewer than asked: the window was read to its end, which is at
                // least `durable` (records enter it before the tail moves on).
                let whole = records.len() < SERVE_BATCH;
                let through = (whole && run.is_some()).then_some(durable);
                let fold = reader.state();
                serve(&self.state, sub, &records, through, whole, &fold)
            }
        };
        self.close(key, turn);
    }

    /// Hands every stream its new records.
    fn news(&mut self) {
        let reader = &self.state.actors.reader;
        let durable = reader.durable_seq();
        let fold = reader.state();
        let ready = |sub: &Sub| {
            sub.cursor < durable
                && sub.waiting_since.is_none()
                && may_have_news(&fold, &sub.filter, sub.cursor)
        };
        // One look at each stream: the ready ones, and the oldest cursor among them.
        let mut keys = Vec::new();
        let mut from = Seq::MAX;
        for (key, sub) in &self.subs {
            if ready(sub) {
                keys.push(key);
                from = from.min(sub.cursor);
            }
        }
        if keys.is_empty() {
            return;
        }
        let window = Window {
            durable,
            records: reader.recent_since(from),
        };
        let mut turns = Vec::new();
        for key in keys {
            let sub = &mut self.subs[key];
            let turn = match window.after(sub.cursor) {
                None => Turn::Behind,
                Some(records) => serve(&self.state, sub, records, None, true, &fold),
            };
            if !matches!(turn, Turn::Stay) {
                turns.push((key, turn));
            }
        }
        for (key, turn) in turns {
            self.close(key, turn);
        }
    }

    /// Hands every stream that shows progress the changed samples of its runs;
    /// dropped, not queued, for a stream whose slot is full (the next tick has newer
    /// ones).
    fn progress(&mut self) {
        let now = Instant::now();
        let fold = self.state.actors.reader.state();
        // The runs the all-runs streams show: live runs hold slots, so no walk over
        // every run ever submitted.
        let mut live: Vec<(RunId, RunState)> = fold
            .slots()
            .held()
            .filter_map(|(_, h)| {
                let run = fold.run(h.run_id)?;
                run.state.is_live().then_some((h.run_id, run.state))
            })
            .collect();
        live.sort_unstable_by_key(|(id, _)| *id);
        live.dedup_by_key(|(id, _)| *id);
        let mut samples = Samples::default();
        let mut ids: Vec<RunId> = Vec::new();
        let mut gone = Vec::new();
        for (key, sub) in &mut self.subs {
            if !sub.filter.progress || sub.waiting_since.is_some() {
                continue;
            }
            if let Some(every) = sub.filter.every {
                if now < sub.progress_due {
                    continue;
                }
                sub.progress_due = now + every;
            }
            if !sub.tx.has_room() {
                if sub.tx.is_closed() {
                    gone.push(key);
                }
                continue;
            }
            ids.clear();
            if sub.filter.until_end && sub.filter.sweep.is_none() {
                // The one-run stream shows its run's newest sample whatever its state
                // (a paused run keeps its last one).
                ids.extend(sub.filter.runs.iter().flatten());
            } else {
                ids.extend(live.iter().filter_map(|(id, state)| {
                    (sub.filter.wants_run(&fold, *id) && sub.filter.wants_state(Some(*state)))
                        .then_some(*id)
                }));
                sub.sent.retain(|id| ids.contains(id));
            }
            let mut chunk: Frames = Vec::new();
            for &id in &ids {
                if let Some((progress, event)) = samples.get(&self.state, id) {
                    if sub.sent.get(&id) != Some(progress) {
                        chunk.push(event.clone());
                    }
                }
            }
            if chunk.is_empty() {
                continue;
            }
            match sub.tx.try_send(chunk) {
                Ok(()) => {
                    for &id in &ids {
                        if let Some((progress, _)) = samples.get(&self.state, id) {
                            sub.sent.insert(id, *progress);
                        }
                    }
                }
                Err(Refused::Full) => {}
                Err(Refused::Closed) => gone.push(key),
            }
        }
        for key in gone {
            self.close(key, Turn::End(End::Gone));
        }
    }

    /// Every [`PHASES`]th of a keep-alive interval: a comment to the streams of this
    /// phase (each stream's comes once an interval, and the writes they cost are
    /// spread over it), and the end of any stream whose slot stayed full for a whole
    /// interval.
    fn sweep(&mut self) {
        let now = Instant::now();
        let keep_alive = self.state.keep_alive;
        self.phase = (self.phase + 1) % PHASES;
        let phase = self.phase;
        let mut turns = Vec::new();
        let mut missed = Vec::new();
        for (key, sub) in &mut self.subs {
            if sub.tx.is_closed() {
                turns.push((key, Turn::End(End::Gone)));
                continue;
            }
            if sub.tx.has_room() {
                if sub.waiting_since.is_some() {
                    // Its connection made room (and the word of it was missed).
                    missed.push(key);
                    continue;
                }
                if key % PHASES != phase {
                    continue;
                }
                let _ = sub
                    .tx
                    .try_send(vec![web::Bytes::from_static(b": keep-alive\n\n")]);
                continue;
            }
            match sub.waiting_since {
                Some(since) if now.duration_since(since) >= keep_alive => {
                    turns.push((key, Turn::End(End::Slow)));
                }
                Some(_) => {}
                None if key % PHASES != phase => {}
                None => {
                    // The keep-alive waits for room like any chunk.
                    sub.waiting_since = Some(now);
                    sub.tx.want_room();
                }
            }
        }
        for (key, turn) in turns {
            self.close(key, turn);
        }
        for key in missed {
            self.serve_alone(key);
        }
    }

    /// Carries out a turn that took a stream out of the hub.
    fn close(&mut self, key: usize, turn: Turn) {
        match turn {
            Turn::Stay => {}
            Turn::Behind => {
                let sub = self.subs.remove(key);
                sub.tx.watch(None);
                actix_web::rt::spawn(super::behind::catch_up(
                    Arc::clone(&self.state),
                    sub,
                    self.door.clone(),
                ));
            }
            Turn::End(end) => self.subs.remove(key).end(&self.state, end),
        }
    }

    fn end_all(&mut self, end: End) {
        for sub in self.subs.drain() {
            sub.end(&self.state, end);
        }
    }
}

/// Whether the journal may hold an event for the stream after `cursor`: with a run
/// filter, the fold says without a look at the records, so news of another run
/// costs nothing.
fn may_have_news(fold: &State, filter: &Filter, cursor: Seq) -> bool {
    if let Some(sweep) = filter.sweep.and_then(|id| fold.sweep(id)) {
        return sweep.last_seq > cursor
            || sweep
                .trials
                .iter()
                .any(|t| fold.run(t.run_id).is_some_and(|r| r.last_seq > cursor));
    }
    match &filter.runs {
        None => true,
        Some(runs) => runs
            .iter()
            .any(|id| fold.run(*id).is_some_and(|r| r.last_seq > cursor)),
    }
}

/// Hands `sub` what it wants of `records` (those after its cursor), as much as one
/// chunk holds. `through`: how far the records were read, when that is further than
/// the last of them (a run's records, filtered from the window); `whole`: whether
/// they reach the end of the window as it was when they were taken. What was
/// appended since waits for the next walk of the streams, one burst gap on.
fn serve(
    state: &AppState,
    sub: &mut Sub,
    records: &[Arc<Followed>],
    through: Option<Seq>,
    whole: bool,
    fold: &State,
) -> Turn {
    let now = Instant::now();
    if records.is_empty() {
        if let Some(through) = through {
            sub.cursor = sub.cursor.max(through);
        }
        sub.waiting_since = None;
        sub.live = true;
        return Turn::Stay;
    }
    if !sub.tx.has_room() {
        if sub.tx.is_closed() {
            return Turn::End(End::Gone);
        }
        sub.waiting_since.get_or_insert(now);
        sub.tx.want_room();
        return Turn::Stay;
    }
    let limit = if sub.live {
        LIVE_CHUNK_BYTES
    } else {
        CHUNK_BYTES
    };
    let gathered = gather(state, sub, records, fold, limit);
    if !gathered.frames.is_empty() {
        // The slot had room, and only this hub sends on it.
        if let Err(Refused::Closed) = sub.tx.try_send(gathered.frames) {
            return Turn::End(End::Gone);
        }
    }
    let read_all = gathered.read == records.len();
    sub.cursor = match (read_all, through) {
        (true, Some(through)) => gathered.through.max(through),
        _ => gathered.through,
    };
    if gathered.ended {
        // The terminal event and the slot release are journaled together, so both
        // have been sent; the stream is complete.
        return Turn::End(End::Done);
    }
    if read_all && whole {
        sub.waiting_since = None;
        sub.live = true;
    } else {
        // More to send once the connection takes this chunk.
        sub.waiting_since = Some(now);
        sub.tx.want_room();
    }
    Turn::Stay
}
