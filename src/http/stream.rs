//! Server-sent event streams: `GET /api/v1/runs/{id}/stream` (one run, until its end)
//! and `GET /api/v1/stream` (every run, filtered on the server, never ending).
//!
//! Every lifecycle event is sent with `id:` = its journal sequence number, read from
//! the journal by cursor, so a client reconnecting with `Last-Event-ID` (or `?after=`)
//! misses nothing and gets nothing twice, across a server restart too. Progress is
//! coalesced: at each tick (the server's, or the client's `?every=`), the newest
//! sample of each matching live run, if it changed.
//!
//! Each stream is a task that holds a journal cursor and the last sample it sent of
//! each run, and hands chunks one at a time to the connection (`stream/slot.rs`).
//! Its records come from the journal's one follower ([`crate::actors::follow`]):
//! while its cursor is among the newest records they are shared with every other
//! stream, each encoded once for all of them; a stream further behind reads the log
//! from its own cursor. A slow client therefore costs a bounded amount of memory, and
//! neither the journal, the ticker nor the training threads ever wait for it. A chunk
//! that cannot be queued within one keep-alive interval means the client is not
//! taking its events: the stream ends with a last `resume` event that names the
//! `after` to reconnect with, and is counted in [`StreamStats`].

use std::convert::Infallible;

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

mod slot;
mod stats;

use slot::Refused;

pub(in crate::http) use stats::{sse_event, Connected};
pub use stats::{StreamCounts, StreamStats};

use super::runs::{existing_run_id, parse_run_id, EventView};
use super::{ApiError, AppState, ErrorCode};
use crate::actors::follow::Followed;
use crate::domain::Progress;
use crate::domain::{Envelope, EventKind, RunId, RunState, Seq};

/// Events read from the journal per pass (and so at most per chunk).
const READ_BATCH: usize = 64;
/// Chunks buffered between a stream's task and its connection (the event streams
/// hand over one at a time; the log stream's channel has this many): with
/// `CHUNK_BYTES`, what a client that stopped reading can hold on the server beyond
/// the connection's own buffers.
pub const CHANNEL_CHUNKS: usize = 1;
/// A catch-up chunk is sent once it holds this many bytes. The connection copies
/// whatever chunks are ready into its write buffer before flushing, and keeps that
/// buffer's memory while the stream lasts: small chunks through a short channel keep
/// it small however long the history a client catches up on.
const CHUNK_BYTES: usize = 1024;
/// Once a stream has caught up with the journal, its chunks hold up to this many
/// bytes: a burst of live records reaches the connection in one chunk per gap rather
/// than one per [`CHUNK_BYTES`] (each a wakeup of the connection and a write of its
/// own), at the cost of a write buffer of this size in a connection that saw one.
const LIVE_CHUNK_BYTES: usize = 64 * 1024;
/// The shortest time between two catch-ups of one stream. News after a quiet spell
/// goes out at once; a burst of appends goes out in one write per stream per gap,
/// not one per append. Measured with a thousand streams open (`benches/streams.rs`,
/// 2-core VM): 300 sequential submits took 5.3 times as long as with none with 1 KiB
/// chunks and a 20 ms gap, 3.1 with live chunks of 16 KiB, 1.85–1.89 with 64 KiB and
/// this gap (a 250 ms gap gained nothing more: 1.55–2.54).
const BURST_GAP: Duration = Duration::from_millis(100);
/// Shortest `?every=`.
const EVERY_MIN: Duration = Duration::from_millis(50);
/// Longest `?every=`.
const EVERY_MAX: Duration = Duration::from_secs(60);

/// A chunk a stream's task hands its connection: frames, each shared with every
/// other stream that sends it, written one after the other and never copied into a
/// buffer of this stream's own.
type Frames = Vec<web::Bytes>;

/// What a stream sends.
#[derive(Debug, Clone, Default)]
struct Filter {
    /// Only these runs (sorted, no duplicates); all runs when `None`.
    runs: Option<Vec<RunId>>,
    /// Only runs whose current state is one of these; any state when empty.
    states: Vec<RunState>,
    /// Only these event names; every name when `None`.
    types: Option<Vec<&'static str>>,
    /// Whether `progress` events are sent.
    progress: bool,
    /// Progress every this long instead of at every server tick.
    every: Option<Duration>,
    /// End after the run's terminal event (the one-run stream).
    until_end: bool,
}

impl Filter {
    fn wants_run(&self, id: RunId) -> bool {
        self.runs
            .as_ref()
            .is_none_or(|runs| runs.binary_search(&id).is_ok())
    }

    fn wants_state(&self, state: Option<RunState>) -> bool {
        self.states.is_empty() || state.is_some_and(|s| self.states.contains(&s))
    }

    fn wants_type(&self, name: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(&name))
    }
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, detail)
}

/// Parses `500ms`, `1s`, `2s`, `1m` (bounded by [`EVERY_MIN`] and [`EVERY_MAX`]).
fn parse_every(raw: &str) -> Result<Duration, ApiError> {
    let bad = || {
        invalid(format!(
            "`every` must be a duration from 50ms to 60s such as `500ms` or `2s`, got `{raw}`"
        ))
    };
    let raw_trim = raw.trim();
    let (number, unit) = raw_trim
        .find(|c: char| !c.is_ascii_digit())
        .map_or((raw_trim, ""), |i| raw_trim.split_at(i));
    let n: u64 = number.parse().map_err(|_| bad())?;
    let every = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    if !(EVERY_MIN..=EVERY_MAX).contains(&every) {
        return Err(bad());
    }
    Ok(every)
}

fn parse_after(raw: &str, what: &str) -> Result<Seq, ApiError> {
    raw.trim()
        .parse::<Seq>()
        .map_err(|_| invalid(format!("{what} must be a sequence number, got `{raw}`")))
}

/// The cursor to start from: `Last-Event-ID` wins over `?after=` (a reconnecting
/// `EventSource` sends the header with the URL it was first given).
fn start_cursor(req: &HttpRequest, after: Option<Seq>) -> Result<Seq, ApiError> {
    let header_cursor = req
        .headers()
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| invalid("Last-Event-ID must be a sequence number"))
                .and_then(|s| parse_after(s, "Last-Event-ID"))
        })
        .transpose()?;
    Ok(header_cursor.or(after).unwrap_or(0))
}

/// `GET /api/v1/runs/{id}/stream?after=&every=`: one run's lifecycle events and
/// progress until its terminal event.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/stream",
    tag = "streams",
    operation_id = "stream_run",
    summary = "Stream a run's events",
    description = "Server-sent events of one run: its journaled lifecycle events from the \
        cursor on, and its progress, until its terminal event (then the stream ends). \
        Each lifecycle event is sent as `id: SEQ`, `event: NAME` (e.g. `EpochCompleted`), \
        `data: EVENT` (an `EventView` as JSON); `progress` events carry a run's newest \
        progress sample and its `run_id`, without an `id`. Comments keep the connection alive. \
        A client too slow to take its events is disconnected after a last `resume` event \
        naming the `after` to reconnect with.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        (
            "Last-Event-ID" = Option<u64>,
            Header,
            nullable = false,
            description = "The `id` of the last event received: the stream goes on after it \
                (wins over `after`). An `EventSource` sends it when it reconnects."
        ),
        ("after" = Option<u64>, Query, description = "Start after this sequence number (default 0: from the start)."),
        (
            "access_token" = Option<String>,
            Query,
            description = "The bearer token, for clients that cannot send an `Authorization` \
                header (a browser's `EventSource`); the header wins when both are sent. Taken \
                by the stream routes only; never logged."
        ),
        (
            "every" = Option<String>,
            Query,
            description = "Send progress at most this often instead of at every server tick: \
                a duration from `50ms` to `60s`, such as `500ms`, `2s` or `1m`.",
            example = "500ms"
        ),
    ),
    responses(
        (
            status = 200,
            description = "The stream of server-sent events.",
            content_type = "text/event-stream",
            body = String
        ),
        (status = 400, description = "`invalid_query`: an unknown parameter, a bad `after`, `every` or `Last-Event-ID`.", body = crate::http::error::Problem, content_type = crate::http::error::PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = crate::http::error::Problem, content_type = crate::http::error::PROBLEM),
    )
)]
pub async fn run_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let id = existing_run_id(&state, &path)?;
    let mut filter = Filter {
        runs: Some(vec![id]),
        progress: true,
        until_end: true,
        ..Filter::default()
    };
    let mut after = None;
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "after" => after = Some(parse_after(&value, "`after`")?),
            "every" => filter.every = Some(parse_every(&value)?),
            // Checked by the auth middleware.
            "access_token" => {}
            other => {
                return Err(invalid(format!(
                    "unknown query parameter `{other}` (expected `after` or `every`)"
                )))
            }
        }
    }
    let cursor = start_cursor(&req, after)?;
    Ok(respond(state.into_inner(), filter, cursor))
}

/// `GET /api/v1/stream?run=&state=&type=&after=&every=`: the lifecycle events of
/// every run and the progress of live ones, filtered on the server; never ends.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "streams",
    operation_id = "stream_all",
    summary = "Stream every run's events",
    description = "Server-sent events of every run: journaled lifecycle events from the \
        cursor on and the progress of live runs, filtered on the server; it never ends. \
        Filters of one kind are alternatives, filters of different kinds must all match. \
        Each lifecycle event is sent as `id: SEQ`, `event: NAME` (e.g. `EpochCompleted`), \
        `data: EVENT` (an `EventView` as JSON); `progress` events carry a run's newest \
        progress sample and its `run_id`, without an `id`. Comments keep the connection alive. \
        A client too slow to take its events is disconnected after a last `resume` event \
        naming the `after` to reconnect with.",
    params(
        ("run" = Option<Vec<String>>, Query, description = "Only this run (a run id); repeatable."),
        (
            "state" = Option<Vec<crate::domain::RunState>>,
            Query,
            description = "Only runs whose current state is this; repeatable."
        ),
        (
            "type" = Option<Vec<String>>,
            Query,
            description = "Only events of this name (e.g. `RunCompleted`), or `progress`; \
                repeatable. Without `progress` among them, no progress is sent."
        ),
        (
            "Last-Event-ID" = Option<u64>,
            Header,
            nullable = false,
            description = "The `id` of the last event received: the stream goes on after it \
                (wins over `after`). An `EventSource` sends it when it reconnects."
        ),
        ("after" = Option<u64>, Query, description = "Start after this sequence number (default 0: from the start)."),
        (
            "access_token" = Option<String>,
            Query,
            description = "The bearer token, for clients that cannot send an `Authorization` \
                header (a browser's `EventSource`); the header wins when both are sent. Taken \
                by the stream routes only; never logged."
        ),
        (
            "every" = Option<String>,
            Query,
            description = "Send progress at most this often instead of at every server tick: \
                a duration from `50ms` to `60s`, such as `500ms`, `2s` or `1m`.",
            example = "500ms"
        ),
    ),
    responses(
        (
            status = 200,
            description = "The stream of server-sent events.",
            content_type = "text/event-stream",
            body = String
        ),
        (status = 400, description = "`invalid_query`: an unknown parameter, or a value that is not accepted (named).", body = crate::http::error::Problem, content_type = crate::http::error::PROBLEM),
    )
)]
pub async fn all_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let mut filter = Filter {
        progress: true,
        ..Filter::default()
    };
    let mut after = None;
    let mut types: Vec<&'static str> = Vec::new();
    let mut runs: Vec<RunId> = Vec::new();
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "after" => after = Some(parse_after(&value, "`after`")?),
            "every" => filter.every = Some(parse_every(&value)?),
            // Checked by the auth middleware.
            "access_token" => {}
            "run" => runs.push(parse_run_id(&value).map_err(|_| {
                invalid(format!("`run` must be a run id, got `{value}`"))
            })?),
            "state" => {
                let s = RunState::ALL
                    .into_iter()
                    .find(|s| s.name() == value)
                    .ok_or_else(|| {
                        let names: Vec<_> = RunState::ALL.iter().map(|s| s.name()).collect();
                        invalid(format!(
                            "`state` must be one of {}, got `{value}`",
                            names.join(", ")
                        ))
                    })?;
                filter.states.push(s);
            }
            "type" => {
                let name = EventKind::ALL
                    .into_iter()
                    .map(EventKind::name)
                    .chain(["progress"])
                    .find(|n| *n == value)
                    .ok_or_else(|| {
                        invalid(format!(
                            "`type` must be an event name such as `RunCompleted`, or `progress`, got `{value}`"
                        ))
                    })?;
                types.push(name);
            }
            other => {
                return Err(invalid(format!(
                    "unknown query parameter `{other}` (expected `run`, `state`, `type`, `after` or `every`)"
                )))
            }
        }
    }
    if !runs.is_empty() {
        runs.sort_unstable();
        runs.dedup();
        filter.runs = Some(runs);
    }
    if !types.is_empty() {
        filter.progress = types.contains(&"progress");
        filter.types = Some(types);
    }
    let cursor = start_cursor(&req, after)?;
    Ok(respond(state.into_inner(), filter, cursor))
}

/// Starts the stream's task and answers with the body it feeds.
fn respond(state: Arc<AppState>, filter: Filter, cursor: Seq) -> HttpResponse {
    let (tx, mut rx) = slot::slot::<Frames>();
    actix_web::rt::spawn(feed(state, filter, cursor, tx));
    // The task's chunks, frame by frame, then its last word (a `resume` event), if
    // any. Taking a chunk empties the slot: its frames wait here, shared.
    let mut frames = Frames::new().into_iter();
    let body = futures_util::stream::poll_fn(move |cx| loop {
        if let Some(frame) = frames.next() {
            return Poll::Ready(Some(Ok::<_, Infallible>(frame)));
        }
        match rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => frames = chunk.into_iter(),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        }
    });
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// A record as every stream sends it: `id: SEQ`, `event: NAME`, `data: EventView`.
fn encode_record(seq: Seq, envelope: &Envelope) -> web::Bytes {
    let data = serde_json::to_string(&EventView::new(seq, envelope)).unwrap_or_default();
    let mut frame = String::new();
    sse_event(&mut frame, Some(seq), envelope.event.kind().name(), &data);
    frame.into()
}

/// Frames gathered into one chunk, each as it is (shared).
#[derive(Default)]
struct Chunk {
    frames: Vec<web::Bytes>,
    len: usize,
}

impl Chunk {
    fn push(&mut self, frame: web::Bytes) {
        self.len += frame.len();
        self.frames.push(frame);
    }

    fn len(&self) -> usize {
        self.len
    }

    fn take(&mut self) -> Frames {
        self.len = 0;
        std::mem::take(&mut self.frames)
    }
}

/// Why a stream's task stopped.
enum End {
    /// The client went away (its connection dropped the channel).
    Gone,
    /// The client did not take a chunk within one keep-alive interval.
    Slow,
    /// The run ended (one-run stream), or the journal could not be read.
    Done,
}

/// The last sample sent of each run a stream shows: a few live runs at most (they
/// hold slots), most often one, so a list sized to them rather than a hash map's
/// smallest table, paid by every subscriber.
#[derive(Debug, Default)]
struct Sent(Vec<(RunId, Progress)>);

impl Sent {
    fn get(&self, id: &RunId) -> Option<&Progress> {
        self.0.iter().find(|(run, _)| run == id).map(|(_, p)| p)
    }

    fn insert(&mut self, id: RunId, progress: Progress) {
        match self.0.iter_mut().find(|(run, _)| *run == id) {
            Some((_, sent)) => *sent = progress,
            None => {
                self.0.reserve_exact(1);
                self.0.push((id, progress));
            }
        }
    }

    fn remove(&mut self, id: &RunId) {
        self.0.retain(|(run, _)| run != id);
    }

    fn retain(&mut self, keep: impl Fn(&RunId) -> bool) {
        self.0.retain(|(run, _)| keep(run));
    }
}

/// One stream's task: its cursor, the last sample sent of each run, the channel.
struct Feed {
    state: Arc<AppState>,
    filter: Filter,
    /// The last sequence number sent to (or skipped for) the client.
    cursor: Seq,
    tx: slot::Sender<Frames>,
    /// The last sample sent of each run (live runs only; pruned every tick).
    sent: Sent,
    /// How many bytes a chunk gathers before it is sent: [`CHUNK_BYTES`] while the
    /// stream catches up on history, [`LIVE_CHUNK_BYTES`] once it has.
    chunk_bytes: usize,
}

impl Feed {
    /// Queues a chunk, waiting at most one keep-alive interval for room.
    async fn send(&self, chunk: Frames) -> Result<(), End> {
        // Boxed: its timer lives only while a send waits, not in every stream's task.
        match Box::pin(self.tx.send_timeout(chunk, self.state.keep_alive)).await {
            Ok(()) => Ok(()),
            Err(Refused::Timeout | Refused::Full) => Err(End::Slow),
            Err(Refused::Closed) => Err(End::Gone),
        }
    }

    /// Whether the journal may hold an event for this stream after the cursor: with a
    /// run filter, the published state says without touching the log, so a wakeup
    /// for another run costs no read.
    fn may_have_news(&self) -> bool {
        let reader = &self.state.actors.reader;
        if reader.durable_seq() <= self.cursor {
            return false;
        }
        match &self.filter.runs {
            None => true,
            Some(runs) => {
                let fold = reader.state();
                runs.iter()
                    .any(|id| fold.run(*id).is_some_and(|r| r.last_seq > self.cursor))
            }
        }
    }

    /// The next records after the cursor (only the stream's run's, for a one-run
    /// stream): shared from the journal's window of recent records, or read from the
    /// log (one of [`StreamStats`]'s read permits at a time) when the cursor is
    /// further behind.
    async fn read(&self) -> Result<Vec<Arc<Followed>>, End> {
        let reader = &self.state.actors.reader;
        let run = match self.filter.runs.as_deref() {
            Some([one]) => Some(*one),
            _ => None,
        };
        if let Some(records) = reader.recent_after(self.cursor, READ_BATCH, run) {
            return Ok(records);
        }
        // The semaphore is never closed.
        let _permit = self
            .state
            .streams
            .reads
            .acquire()
            .await
            .map_err(|_| End::Done)?;
        reader
            .records_after(self.cursor, READ_BATCH, run)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "stream could not read the journal");
                End::Done
            })
    }

    /// Sends every matching journaled event after the cursor.
    async fn catch_up(&mut self) -> Result<(), End> {
        while self.may_have_news() {
            let records = self.read().await?;
            let Some(last_seq) = records.last().map(|r| r.seq) else {
                return Ok(());
            };
            // Chunks of frames of at least CHUNK_BYTES, each with the last sequence
            // number it holds, sent after the fold is let go. A record's frame is
            // shared by every stream that sends it: encoded once, never copied here.
            let mut chunk = Chunk::default();
            let mut full: Vec<(Frames, Seq)> = Vec::new();
            let mut ended = false;
            {
                let state = Arc::clone(&self.state);
                let fold = state.actors.reader.state();
                for record in &records {
                    let (seq, envelope) = (record.seq, &record.envelope);
                    let run_id = envelope.run_id;
                    let run_state = fold.run(run_id).map(|r| r.state);
                    let name = envelope.event.kind().name();
                    if !self.filter.wants_run(run_id)
                        || !self.filter.wants_state(run_state)
                        || !self.filter.wants_type(name)
                    {
                        continue;
                    }
                    if envelope.event.is_terminal() {
                        // The run's final sample was published before its terminal
                        // event was journaled: send it first, so the stream shows the
                        // real final figures.
                        if self.filter.progress {
                            if let Some(progress) = self.progress_of(run_id) {
                                chunk.push(progress);
                            }
                        }
                        self.sent.remove(&run_id);
                        self.state.streams.forget(run_id);
                        ended |= self.filter.until_end;
                    }
                    chunk.push(record.frame(encode_record));
                    if chunk.len() >= self.chunk_bytes {
                        full.push((chunk.take(), seq));
                    }
                }
            }
            // The cursor follows every chunk taken, so a stream ended as too slow
            // names exactly what its client got.
            for (part, through) in full {
                self.send(part).await?;
                self.cursor = through;
            }
            if chunk.len() > 0 {
                self.send(chunk.take()).await?;
            }
            self.cursor = last_seq;
            if ended {
                // The terminal event and the slot release are journaled together, so
                // both have been sent; the stream is complete.
                return Err(End::Done);
            }
            if records.len() < READ_BATCH {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The `progress` event of `id`'s newest sample, if it differs from the last
    /// one sent.
    fn progress_of(&mut self, id: RunId) -> Option<web::Bytes> {
        let progress = self.state.actors.board.get(id)?;
        if self.sent.get(&id) == Some(&progress) {
            return None;
        }
        self.sent.insert(id, progress);
        Some(self.state.streams.encoded(id, &progress))
    }

    /// The runs whose progress this stream shows now, sorted.
    fn progress_runs(&self) -> Vec<RunId> {
        let fold = self.state.actors.reader.state();
        let mut live: Vec<RunId> = match &self.filter.runs {
            Some(runs) => runs.clone(),
            // Live runs hold slots: no walk over every run ever submitted.
            None => fold.slots().held().map(|(_, h)| h.run_id).collect(),
        };
        live.sort_unstable();
        live.dedup();
        live.retain(|id| {
            fold.run(*id)
                .is_some_and(|r| r.state.is_live() && self.filter.wants_state(Some(r.state)))
        });
        live
    }

    /// The newest samples of the matching runs that changed since last sent; dropped,
    /// not queued, when the client has no room (the next tick has newer ones).
    fn send_progress(&mut self) -> Result<(), End> {
        let state = Arc::clone(&self.state);
        let owned;
        // The one-run stream shows its run's newest sample whatever its state (a
        // paused run keeps its last one) and needs no look at the fold; the all-runs
        // stream shows live runs'.
        let ids: &[RunId] = if self.filter.until_end {
            self.filter.runs.as_deref().unwrap_or_default()
        } else {
            owned = self.progress_runs();
            self.sent.retain(|id| owned.binary_search(id).is_ok());
            &owned
        };
        let mut changed: Vec<(RunId, Progress, web::Bytes)> = Vec::new();
        for &id in ids {
            if let Some(progress) = state.actors.board.get(id) {
                if self.sent.get(&id) != Some(&progress) {
                    changed.push((id, progress, state.streams.encoded(id, &progress)));
                }
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let chunk: Frames = changed.iter().map(|(_, _, event)| event.clone()).collect();
        match self.tx.try_send(chunk) {
            Ok(()) => {
                for (id, progress, _) in changed {
                    self.sent.insert(id, progress);
                }
                Ok(())
            }
            // Not sent: these samples (or newer ones) go next time.
            Err(Refused::Full) => Ok(()),
            Err(Refused::Closed | Refused::Timeout) => Err(End::Gone),
        }
    }
}

/// Feeds one stream until the run ends (one-run stream), the client goes away, or it
/// is too slow; then frees everything it held.
async fn feed(state: Arc<AppState>, filter: Filter, cursor: Seq, tx: slot::Sender<Frames>) {
    let _connected = Connected::new(Arc::clone(&state.streams));
    let mut feed = Feed {
        state: Arc::clone(&state),
        filter,
        cursor,
        tx,
        sent: Sent::default(),
        chunk_bytes: CHUNK_BYTES,
    };
    let end = run_feed(&mut feed).await;
    let Feed { tx, cursor, .. } = feed;
    let mut last = None;
    if let End::Slow = end {
        state.streams.count_slow();
        tracing::info!(
            after = cursor,
            "stream client too slow; disconnected with the cursor to resume from"
        );
        let mut chunk = String::new();
        sse_event(
            &mut chunk,
            None,
            "resume",
            &serde_json::json!({ "after": cursor }).to_string(),
        );
        last = Some(vec![chunk.into()]);
    }
    tx.finish(last);
}

async fn run_feed(feed: &mut Feed) -> End {
    let keep_alive_every = feed.state.keep_alive;
    let mut tail = feed.state.actors.reader.subscribe();
    let mut ticks = feed.state.actors.board.subscribe();
    let mut every = feed.filter.every.map(|d| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        interval
    });
    let mut keep_alive = tokio::time::interval_at(
        tokio::time::Instant::now() + keep_alive_every,
        keep_alive_every,
    );
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Tell the client how soon to retry if the connection drops.
    if let Err(end) = feed
        .send(vec![web::Bytes::from_static(b"retry: 1000\n\n")])
        .await
    {
        return end;
    }
    let progress = feed.filter.progress;
    loop {
        // Boxed, as the waits below: what a catch-up holds while it runs is not
        // carried by every idle stream's task.
        if let Err(end) = Box::pin(feed.catch_up()).await {
            return end;
        }
        feed.chunk_bytes = LIVE_CHUNK_BYTES;
        let caught_up = tokio::time::Instant::now();
        let closed = feed.tx.closed();
        tokio::select! {
            // The connection dropped its end: the client is gone.
            _ = closed => return End::Gone,
            changed = tail.changed() => {
                if changed.is_err() {
                    return End::Done;
                }
                // A burst of appends reaches the client in one write per gap, not
                // one per append: news right after a catch-up waits out the gap.
                Box::pin(tokio::time::sleep_until(caught_up + BURST_GAP)).await;
            }
            changed = ticks.changed(), if progress && every.is_none() => {
                if changed.is_err() {
                    return End::Done;
                }
                if let Err(end) = feed.send_progress() {
                    return end;
                }
            }
            _ = async { every.as_mut().expect("guarded").tick().await }, if progress && every.is_some() => {
                if let Err(end) = feed.send_progress() {
                    return end;
                }
            }
            _ = keep_alive.tick() => {
                if let Err(end) = feed.send(vec![web::Bytes::from_static(b": keep-alive\n\n")]).await {
                    return end;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_takes_milliseconds_seconds_and_minutes_within_bounds() {
        assert_eq!(
            parse_every("500ms").expect("ms"),
            Duration::from_millis(500)
        );
        assert_eq!(parse_every("1s").expect("s"), Duration::from_secs(1));
        assert_eq!(parse_every("1m").expect("m"), Duration::from_secs(60));
        for bad in ["", "s", "1", "10ms", "61s", "1h", "-1s", "1.5s", "fast"] {
            let err = parse_every(bad).expect_err(bad);
            assert!(err.detail.contains("`every`"), "{}", err.detail);
        }
    }
}
