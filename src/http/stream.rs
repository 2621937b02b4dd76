//! Server-sent event streams: `GET /api/v1/runs/{id}/stream` (one run, until its end)
//! and `GET /api/v1/stream` (every run, filtered on the server, never ending).
//!
//! Every lifecycle event is sent with `id:` = its journal sequence number, read from
//! the journal by cursor, so a client reconnecting with `Last-Event-ID` (or `?after=`)
//! misses nothing and gets nothing twice, across a server restart too. Progress is
//! coalesced: at each tick (the server's, or the client's `?every=`), the newest
//! sample of each matching live run, if it changed.
//!
//! A stream is not a task. Every stream a worker thread serves is fed by that
//! worker's one hub (`stream/hub.rs`), which follows the journal's tail and the
//! progress ticks once for all of them: a record is read and encoded once however
//! many clients watch, and a tick is one walk of the worker's streams. A stream is
//! its cursor, its filter and a one-chunk hand-over to its connection
//! (`stream/slot.rs`). A client catching up on history further back than the
//! journal's window of recent records gets a task of its own until it reaches the
//! window (`stream/behind.rs`). Neither the journal, the ticker nor the training
//! threads ever wait for a client; a client that does not take a chunk within one
//! keep-alive interval is ended with a last `resume` event that names the `after`
//! to reconnect with, and is counted in [`StreamStats`].

use std::convert::Infallible;

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

mod behind;
mod hub;
mod slot;
mod stats;
mod sub;

pub(in crate::http) use stats::{sse_event, Connected};
pub use stats::{StreamCounts, StreamStats};

use super::runs::{existing_run_id, parse_run_id, EventView};
use super::{ApiError, AppState, ErrorCode};
use crate::actors::follow::Followed;
use crate::domain::{Envelope, EventKind, Progress, RunId, RunState, Seq, State};

/// Chunks buffered between a stream's hub and its connection (the event streams
/// hand over one at a time; the log stream's channel has this many): with
/// `LIVE_CHUNK_BYTES`, what a client that stopped reading can hold on the server
/// beyond the connection's own buffers.
pub const CHANNEL_CHUNKS: usize = 1;
/// A chunk holds this many bytes while its stream catches up on history: one frame.
/// The connection copies the chunks it is handed into its write buffer (8 KiB, its
/// own) and writes them out; every page of that buffer a chunk reaches stays in the
/// server's memory while the connection lasts. One frame at a time, a stream
/// catching up on a long history touches no more of it than its largest event
/// (`sse_bytes_per_subscriber`, 10,000 streams replaying a run's history: 13,368 B
/// with 1 KiB chunks, 12,023 B with one frame).
const CHUNK_BYTES: usize = 1;
/// Once a stream has caught up with the journal, its chunks hold up to this many
/// bytes: a burst of live records reaches the connection in one chunk per gap rather
/// than one per [`CHUNK_BYTES`] (each a wakeup of the connection and a write of its
/// own), at the cost of a write buffer of this size in a connection that saw one.
const LIVE_CHUNK_BYTES: usize = 64 * 1024;
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
    /// Only this sweep's events and its trials' (the sweep stream, which ends after
    /// the sweep's last event).
    sweep: Option<RunId>,
}

impl Filter {
    fn wants_run(&self, fold: &State, id: RunId) -> bool {
        if let Some(sweep) = self.sweep {
            return id == sweep || fold.trial_of(id).is_some_and(|(s, _)| s == sweep);
        }
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
    let cursor = one_stream_cursor(&req, query.into_inner(), &mut filter)?;
    Ok(respond(state.into_inner(), filter, cursor))
}

/// Reads the query of a one-run or one-sweep stream (`after`, `every`, and
/// `access_token`, which the auth middleware checks) into `filter`, and answers the
/// cursor to start from.
fn one_stream_cursor(
    req: &HttpRequest,
    query: Vec<(String, String)>,
    filter: &mut Filter,
) -> Result<Seq, ApiError> {
    let mut after = None;
    for (key, value) in query {
        match key.as_str() {
            "after" => after = Some(parse_after(&value, "`after`")?),
            "every" => filter.every = Some(parse_every(&value)?),
            "access_token" => {}
            other => {
                return Err(invalid(format!(
                    "unknown query parameter `{other}` (expected `after` or `every`)"
                )))
            }
        }
    }
    start_cursor(req, after)
}

/// `GET /api/v1/sweeps/{id}/stream?after=&every=`: a sweep's events and its trials'
/// events and progress, until the sweep completes or is cancelled.
#[utoipa::path(
    get,
    path = "/api/v1/sweeps/{id}/stream",
    tag = "streams",
    operation_id = "stream_sweep",
    summary = "Stream a sweep's events",
    description = "Server-sent events of one sweep: its journaled events (`SweepSubmitted`, \
        `TrialCreated`, `TrialReachedRung`, `TrialPromoted`, `TrialStopped`, ...) and those of \
        its trials' runs, from the cursor on, with the trials' progress, until \
        `SweepCompleted` or `SweepCancelled` (then the stream ends). Framed and resumed \
        (`Last-Event-ID`, `after`) exactly as a run's stream.",
    params(
        ("id" = String, Path, description = "The sweep's id (a UUID)."),
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "The `id` of the last event received: the stream goes on after it (wins over `after`)."),
        ("after" = Option<u64>, Query, description = "Start after this sequence number (default 0: from the start)."),
        ("access_token" = Option<String>, Query, description = "The bearer token, for an `EventSource`; never logged."),
        ("every" = Option<String>, Query, description = "Send progress at most this often: `50ms` to `60s`.", example = "500ms"),
    ),
    responses(
        (status = 200, description = "The stream of server-sent events.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_query`: an unknown parameter, a bad `after`, `every` or `Last-Event-ID`.", body = crate::http::error::Problem, content_type = crate::http::error::PROBLEM),
        (status = 404, description = "`sweep_not_found`: no sweep with that id.", body = crate::http::error::Problem, content_type = crate::http::error::PROBLEM),
    )
)]
pub async fn sweep_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::SweepNotFound,
            format!("no sweep with id `{}`", path.as_str()),
        )
    };
    let id: RunId = path.parse().map_err(|_| not_found())?;
    if state.actors.reader.state().sweep(id).is_none() {
        return Err(not_found());
    }
    let mut filter = Filter {
        sweep: Some(id),
        progress: true,
        until_end: true,
        ..Filter::default()
    };
    let cursor = one_stream_cursor(&req, query.into_inner(), &mut filter)?;
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

/// Hands the stream to this worker's hub and answers with the body it feeds.
fn respond(state: Arc<AppState>, filter: Filter, cursor: Seq) -> HttpResponse {
    let (tx, rx) = slot::slot::<Frames>();
    // Tell the client how soon to retry if the connection drops.
    let _ = tx.try_send(vec![web::Bytes::from_static(b"retry: 1000\n\n")]);
    hub::join(&state, sub::Sub::new(&state, filter, cursor, tx));
    let body = Body {
        rx,
        frames: Frames::new().into_iter(),
        rest: web::Bytes::new(),
        flush: false,
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// A frame handed over alone (as while a stream catches up) and longer than this
/// goes to the connection in pieces of this size, each written out before the next
/// is given: the connection keeps its write buffer (8 KiB) for as long as it lasts,
/// and every page of it that a write reached stays in the server's memory, so the
/// longest write decides what an idle stream costs. A replayed `RunSubmitted`,
/// which carries its spec, is the longest most streams see.
const PIECE: usize = 512;

/// An event stream's body: the chunks its hub hands over, frame by frame, then its
/// last word (a `resume` event), if any. Taking a chunk empties the slot: its frames
/// wait here, shared.
struct Body {
    rx: slot::Receiver<Frames>,
    frames: std::vec::IntoIter<web::Bytes>,
    /// The rest of a frame going out in pieces.
    rest: web::Bytes,
    /// A piece was just given: let the connection write it before the next.
    flush: bool,
}

impl futures_util::Stream for Body {
    type Item = Result<web::Bytes, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.flush {
                // Pending with a wakeup at once: the connection writes out what it
                // holds, then asks again.
                this.flush = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !this.rest.is_empty() {
                let piece = this.rest.split_to(this.rest.len().min(PIECE));
                this.flush = true;
                return Poll::Ready(Some(Ok(piece)));
            }
            if let Some(frame) = this.frames.next() {
                return Poll::Ready(Some(Ok(frame)));
            }
            // The list's own memory goes now, not when the next chunk comes.
            this.frames = Frames::new().into_iter();
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(mut chunk)) => {
                    if chunk.len() == 1 && chunk[0].len() > PIECE {
                        this.rest = chunk.pop().unwrap_or_default();
                    } else {
                        this.frames = chunk.into_iter();
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A record as every stream sends it: `id: SEQ`, `event: NAME`, `data: EventView`.
fn encode_record(seq: Seq, envelope: &Envelope) -> web::Bytes {
    let data = serde_json::to_string(&EventView::new(seq, envelope)).unwrap_or_default();
    let mut frame = String::new();
    sse_event(&mut frame, Some(seq), envelope.event.kind().name(), &data);
    frame.into()
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The client went away (its connection dropped its end).
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

/// What [`gather`] took from a list of records for one stream.
struct Gathered {
    /// The frames to hand over (possibly none: nothing matched the filter).
    frames: Frames,
    /// How many of the records it went through.
    read: usize,
    /// The last sequence number it went through (the cursor when it went through
    /// none).
    through: Seq,
    /// The stream's run ended (a one-run stream is complete once this is sent).
    ended: bool,
}

/// The frames of `records` (after `sub`'s cursor, in order) that `sub`'s filter
/// wants, until they hold `limit` bytes (all of them once the stream's run ended). A record's frame is shared by every stream
/// that sends it: encoded once, never copied here.
fn gather(
    state: &AppState,
    sub: &mut sub::Sub,
    records: &[Arc<Followed>],
    fold: &State,
    limit: usize,
) -> Gathered {
    let mut gathered = Gathered {
        frames: Frames::new(),
        read: 0,
        through: sub.cursor,
        ended: false,
    };
    let mut bytes = 0;
    for record in records {
        gathered.read += 1;
        gathered.through = record.seq;
        let envelope = &record.envelope;
        let run_id = envelope.run_id;
        let filter = &sub.filter;
        if !filter.wants_run(fold, run_id)
            || (!filter.states.is_empty() && !filter.wants_state(fold.run(run_id).map(|r| r.state)))
            || !filter.wants_type(envelope.event.kind().name())
        {
            continue;
        }
        if envelope.event.is_terminal() {
            // The run's final sample was published before its terminal event was
            // journaled: send it first, so the stream shows the real final figures.
            if filter.progress {
                if let Some(progress) = state.actors.board.get(run_id) {
                    if sub.sent.get(&run_id) != Some(&progress) {
                        let event = state.streams.encoded(run_id, &progress);
                        bytes += event.len();
                        gathered.frames.push(event);
                    }
                }
            }
            sub.sent.remove(&run_id);
            state.streams.forget(run_id);
            gathered.ended |= filter.until_end && filter.sweep.is_none();
        }
        if filter.sweep.is_some() {
            use crate::domain::Event;
            gathered.ended |= matches!(
                envelope.event,
                Event::SweepCompleted { .. } | Event::SweepCancelled { .. }
            );
        }
        let frame = record.frame(encode_record);
        bytes += frame.len();
        gathered.frames.push(frame);
        // Past a one-run stream's end, the records given go on (its slot release is
        // journaled with its terminal event); else a chunk ends at `limit`.
        if !gathered.ended && bytes >= limit {
            break;
        }
    }
    gathered
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
