//! A command run's logs: `GET /api/v1/runs/{id}/logs` (the last lines of its stdout or
//! stderr) and `GET /api/v1/runs/{id}/logs/stream` (server-sent events of the lines as
//! they are appended, until the run ends).
//!
//! The files are read off the async threads ([`files`]), backwards from the end for a
//! tail. A log stream is a task that polls its file every 100 ms (and as soon as
//! the run's end is journaled) and writes chunks of `line` events into a channel of
//! one chunk that its connection drains: a slow client costs a bounded amount of
//! memory, and one that takes nothing for a keep-alive interval is disconnected,
//! and counted, as on the event streams ([`super::stream`]). Each `line` event's `id`
//! is where the line ends in its file, so a client reconnecting with `Last-Event-ID`
//! goes on right after the last line it got, across rotations.
//!
//! A command run on several slots has a log per rank (`logs/` for rank 0,
//! `logs/rank-N/` for the others): `rank=N` reads one, `rank=all` every one, each line
//! tagged `[rank N] ` and each event's `id` holding every rank's place, comma-separated.

pub mod files;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;

pub use self::files::log_path;
use self::files::{Follower, Line, Position};
use super::error::Problem;
use super::error::PROBLEM;
use super::runs::existing_run_id;
use super::stream::Connected;
use super::{ApiError, AppState, ErrorCode};
pub use crate::domain::LogStream;
use crate::domain::RunId;

/// Lines sent when `tail` is not given.
pub const DEFAULT_TAIL: usize = 100;
/// The largest `tail`.
pub const MAX_TAIL: usize = 10_000;
/// Most bytes `GET /logs` answers: longer lines make the tail shorter.
pub const MAX_TAIL_BYTES: u64 = 4 << 20;
/// How often a log stream looks for new lines.
const POLL: Duration = Duration::from_millis(100);
/// About how many bytes of lines a stream reads and sends at a time.
const CHUNK_BYTES: usize = 16 * 1024;

/// The highest rank `rank` may name (a run has at most as many ranks as slots).
const MAX_RANK: u32 = 4095;

/// Which ranks of a run a log request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ranks {
    /// One rank's log (rank 0's by default, the only one of a one-slot run).
    One(u32),
    /// Every rank's, each line tagged `[rank N] `.
    All,
}

/// What a log request asks for.
#[derive(Debug, Clone, Copy)]
struct LogQuery {
    stream: LogStream,
    tail: usize,
    ranks: Ranks,
}

fn invalid(detail: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, detail)
}

/// Reads `stream` and `tail`; anything else, a parameter given twice or a bad value
/// is a `400 invalid_query` naming it.
fn parse_query(pairs: Vec<(String, String)>) -> Result<LogQuery, ApiError> {
    parse_query_of(pairs, false)
}

/// [`parse_query`]; the stream route also takes `access_token` (the auth middleware
/// reads it).
fn parse_query_of(pairs: Vec<(String, String)>, stream_route: bool) -> Result<LogQuery, ApiError> {
    let (mut stream, mut tail, mut ranks) = (None, None, None);
    for (key, value) in pairs {
        match key.as_str() {
            "access_token" if stream_route => {}
            "rank" => {
                let parsed = if value == "all" {
                    Ranks::All
                } else {
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n <= MAX_RANK && value.bytes().all(|b| b.is_ascii_digit()))
                        .map(Ranks::One)
                        .ok_or_else(|| {
                            invalid(format!(
                                "`rank` must be a rank's number (0 for the first) or `all`, got `{value}`"
                            ))
                        })?
                };
                if ranks.replace(parsed).is_some() {
                    return Err(invalid("`rank` is given twice".into()));
                }
            }
            "stream" => {
                let parsed = LogStream::from_name(&value).ok_or_else(|| {
                    invalid(format!(
                        "`stream` must be `stdout` or `stderr`, got `{value}`"
                    ))
                })?;
                if stream.replace(parsed).is_some() {
                    return Err(invalid("`stream` is given twice".into()));
                }
            }
            "tail" => {
                let parsed = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= MAX_TAIL && value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        invalid(format!(
                            "`tail` must be a whole number from 0 to {MAX_TAIL}, got `{value}`"
                        ))
                    })?;
                if tail.replace(parsed).is_some() {
                    return Err(invalid("`tail` is given twice".into()));
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown query parameter `{other}` (expected `stream`, `tail` or `rank`)"
                )))
            }
        }
    }
    Ok(LogQuery {
        stream: stream.unwrap_or_default(),
        tail: tail.unwrap_or(DEFAULT_TAIL),
        ranks: ranks.unwrap_or(Ranks::One(0)),
    })
}

/// The files of a run's `stream` log that `ranks` asks for, each with its rank: under
/// the server's data directory, or for a Slurm run under its worker's, in the shared
/// directory (`SHARED/runs/ID/worker`). `400 invalid_query` for a rank the run does
/// not have; `410 artifact_deleted` once the run's files were deleted.
fn log_files(
    state: &AppState,
    id: RunId,
    stream: LogStream,
    ranks: Ranks,
) -> Result<Vec<(u32, std::path::PathBuf)>, ApiError> {
    let fold = state.actors.reader.state();
    let run = fold.run(id).ok_or_else(|| ApiError::run_not_found(id))?;
    ApiError::unless_files_deleted(run, "its logs are gone")?;
    let world = crate::domain::RunSpec::ranks_of(run.spec.get());
    let layout = crate::domain::RunLayout::of(&state.data_dir, run);
    let file = |rank: u32| (rank, log_path(&layout, rank, stream));
    match ranks {
        Ranks::All => Ok((0..world).map(file).collect()),
        Ranks::One(rank) if rank < world => Ok(vec![file(rank)]),
        Ranks::One(rank) => Err(invalid(format!(
            "`rank` {rank} is not a rank of run {id}: it has {world} (0 to {})",
            world - 1
        ))),
    }
}

/// The tag that starts each line of one rank when every rank is read.
fn rank_tag(rank: u32) -> String {
    format!("[rank {rank}] ")
}

fn unreadable(id: RunId, stream: LogStream, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("cannot read the {} log of run {id}: {e}", stream.name()),
    )
}

/// `GET /api/v1/runs/{id}/logs?stream=&tail=`: the last lines of a run's stdout or
/// stderr, as text.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/logs",
    tag = "runs",
    operation_id = "run_logs",
    summary = "The last lines of a run's log",
    description = "The last `tail` lines of a command run's stdout or stderr, as the \
        command wrote them (each attempt starts with a line `==> attempt N <==`), read \
        across the rotated files (`stdout.log.1`, …) when the tail needs them. An \
        unterminated last line (one the command is still writing) counts as a line. At \
        most 4 MiB: when the lines asked for are longer, the answer starts at the first \
        line that fits whole. A run with no log yet (queued, not a command run, or one \
        whose command wrote nothing to that stream) answers `200` with an empty body. \
        With `rank=all`, each rank's tail in turn, every line tagged `[rank N] `.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        ("stream" = Option<LogStream>, Query, description = "Which stream: `stdout` (the default) or `stderr`."),
        (
            "rank" = Option<String>,
            Query,
            description = "Which rank's log, for a command run on several slots: its number \
                (`0`, the default, is the first; a one-slot run has only rank 0), or `all` for \
                every rank's, each line starting with `[rank N] `.",
            example = "all"
        ),
        (
            "tail" = Option<u32>,
            Query,
            minimum = 0,
            maximum = 10000,
            description = "How many lines, from 0 to 10,000 (default 100)."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The lines, oldest first; empty when the run has no log yet.",
            content_type = "text/plain",
            body = String
        ),
        (status = 400, description = "`invalid_query`: an unknown parameter, one given twice, a bad `stream` or `tail`, or a `rank` the run does not have (named).", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 410, description = "`artifact_deleted`: the run's files, its logs among them, were deleted.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: the log file could not be read.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn tail(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let id = existing_run_id(&state, &path)?;
    let query = parse_query(query.into_inner())?;
    let files = log_files(&state, id, query.stream, query.ranks)?;
    let all = query.ranks == Ranks::All;
    let budget = MAX_TAIL_BYTES / files.len().max(1) as u64;
    let body = web::block(move || -> std::io::Result<Vec<u8>> {
        if !all {
            return files.first().map_or(Ok(Vec::new()), |(_, file)| {
                files::tail(file, query.tail, budget)
            });
        }
        let mut body = Vec::new();
        for (rank, file) in &files {
            let tag = rank_tag(*rank);
            let lines = files::tail(file, query.tail, budget)?;
            for line in lines.split_inclusive(|b| *b == b'\n') {
                body.extend_from_slice(tag.as_bytes());
                body.extend_from_slice(line);
            }
            if body.last().is_some_and(|b| *b != b'\n') {
                body.push(b'\n');
            }
        }
        Ok(body)
    })
    .await
    .map_err(|e| unreadable(id, query.stream, e))?
    .map_err(|e| unreadable(id, query.stream, e))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body))
}

/// `GET /api/v1/runs/{id}/logs/stream?stream=&tail=`: server-sent events of a run's log
/// lines, the last `tail` first, then each as it is appended, until the run ends.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/logs/stream",
    tag = "streams",
    operation_id = "stream_run_logs",
    summary = "Stream a run's log",
    description = "Server-sent events of a command run's stdout or stderr: the last `tail` \
        whole lines, then each line as it is appended, following the file through its \
        rotations, until the run has ended and its log is read to the end (a last \
        unterminated line is sent then); a run with no log yet is waited for. Each line \
        is sent as `id: CURSOR`, `event: line`, `data: LINE` (invalid UTF-8 replaced; a \
        carriage return inside a line starts another `data:` field, a line longer than \
        64 KiB comes in pieces). The `id` is an opaque cursor: sent back as \
        `Last-Event-ID`, the stream goes on right after that line, and `tail` is not \
        used. With `rank=all` every rank's lines come, each tagged `[rank N] `, and the \
        cursor holds every rank's place. Comments keep the connection alive; a client too slow to take its lines \
        is disconnected.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        ("stream" = Option<LogStream>, Query, description = "Which stream: `stdout` (the default) or `stderr`."),
        (
            "rank" = Option<String>,
            Query,
            description = "Which rank's log, for a command run on several slots: its number \
                (`0`, the default, is the first; a one-slot run has only rank 0), or `all` for \
                every rank's, each line starting with `[rank N] `.",
            example = "all"
        ),
        (
            "tail" = Option<u32>,
            Query,
            minimum = 0,
            maximum = 10000,
            description = "How many of the last whole lines to start with, from 0 to 10,000 \
                (default 100)."
        ),
        (
            "access_token" = Option<String>,
            Query,
            description = "The bearer token, for clients that cannot send an `Authorization` \
                header (a browser's `EventSource`); the header wins when both are sent. Taken \
                by the stream routes only; never logged."
        ),
        (
            "Last-Event-ID" = Option<String>,
            Header,
            nullable = false,
            description = "The `id` of the last line received: the stream goes on right \
                after it (`tail` is then not used). An `EventSource` sends it when it \
                reconnects."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The stream of server-sent events.",
            content_type = "text/event-stream",
            body = String
        ),
        (status = 400, description = "`invalid_query`: an unknown parameter, one given twice, a bad `stream` or `tail`, or a `rank` the run does not have (named); `invalid_header`: a `Last-Event-ID` that is not a cursor of this stream.", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 410, description = "`artifact_deleted`: the run's files, its logs among them, were deleted.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: the log file could not be read.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let id = existing_run_id(&state, &path)?;
    let query = parse_query_of(query.into_inner(), true)?;
    let files = log_files(&state, id, query.stream, query.ranks)?;
    let all = query.ranks == Ranks::All;
    let bad_cursor = || {
        ApiError::new(
            ErrorCode::InvalidHeader,
            "Last-Event-ID must be the id of a line event of this stream",
        )
    };
    // One position per rank read, `-` for a rank whose log had no file yet.
    let resume: Option<Vec<Option<Position>>> = req
        .headers()
        .get("last-event-id")
        .map(|value| {
            let text = value.to_str().map_err(|_| bad_cursor())?;
            let positions = text
                .split(',')
                .map(|part| match part.trim() {
                    "-" if all => Ok(None),
                    part => part
                        .parse::<Position>()
                        .map(Some)
                        .map_err(|()| bad_cursor()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if positions.len() == files.len() {
                Ok(positions)
            } else {
                Err(bad_cursor())
            }
        })
        .transpose()?;
    let tail = query.tail;
    let followers = web::block(move || -> std::io::Result<Vec<Ranked>> {
        files
            .iter()
            .enumerate()
            .map(|(i, (rank, file))| {
                let follower = match resume.as_ref().map(|r| r[i]) {
                    Some(Some(position)) => Follower::resume(file, position)?,
                    // A log with no file when the cursor was taken: all of it is new.
                    Some(None) => Follower::from_tail(file, usize::MAX)?,
                    None => Follower::from_tail(file, tail)?,
                };
                Ok(Ranked {
                    rank: *rank,
                    follower,
                })
            })
            .collect()
    })
    .await
    .map_err(|e| unreadable(id, query.stream, e))?
    .map_err(|e| unreadable(id, query.stream, e))?;
    let followed = Followed { followers, all };

    let (tx, mut rx) = mpsc::channel::<web::Bytes>(super::stream::CHANNEL_CHUNKS);
    actix_web::rt::spawn(feed(state.into_inner(), id, query.stream, followed, tx));
    let body = futures_util::stream::poll_fn(move |cx| match rx.poll_recv(cx) {
        Poll::Ready(chunk) => Poll::Ready(chunk.map(Ok::<_, Infallible>)),
        Poll::Pending => Poll::Pending,
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// One rank's log being followed.
struct Ranked {
    rank: u32,
    follower: Follower,
}

/// The logs a stream follows: one rank's, or every rank's with each line tagged and
/// each event's id the positions of all of them.
struct Followed {
    followers: Vec<Ranked>,
    all: bool,
}

impl Followed {
    /// Appends a `line` event per line of follower `i`. An event's `id` is where its
    /// line ends, or with every rank read, every follower's place in rank order,
    /// comma-separated (`-` for one that has seen no file): the others' as they stand,
    /// follower `i`'s just after the line.
    fn events(&self, out: &mut String, i: usize, lines: &[Line]) {
        if !self.all {
            for line in lines {
                line_event(out, &line.end.to_string(), "", line);
            }
            return;
        }
        let tag = rank_tag(self.followers[i].rank);
        let mut places: Vec<String> = self
            .followers
            .iter()
            .map(|r| r.follower.position().map_or("-".into(), |p| p.to_string()))
            .collect();
        for line in lines {
            places[i] = line.end.to_string();
            line_event(out, &places.join(","), &tag, line);
        }
    }
}

/// Appends one `line` event.
fn line_event(out: &mut String, id: &str, tag: &str, line: &Line) {
    let text = String::from_utf8_lossy(&line.text);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    let _ = writeln!(out, "id: {id}");
    out.push_str("event: line\n");
    // A carriage return would end the field for an event-stream parser.
    for part in text.split('\r') {
        let _ = writeln!(out, "data: {tag}{part}");
    }
    out.push('\n');
}

/// Why a log stream's task stopped.
enum End {
    /// The client went away.
    Gone,
    /// The client did not take a chunk within one keep-alive interval.
    Slow,
    /// The run ended and its log was read to the end, or the log could not be read.
    Done,
}

/// One log stream's task; counted in the stream stats while it lives.
async fn feed(
    state: Arc<AppState>,
    id: RunId,
    stream: LogStream,
    followed: Followed,
    tx: mpsc::Sender<web::Bytes>,
) {
    let _connected = Connected::new(Arc::clone(&state.streams));
    let end = match follow(&state, id, stream, followed, &tx).await {
        Ok(never) => match never {},
        Err(end) => end,
    };
    if let End::Slow = end {
        state.streams.count_slow();
        tracing::info!(run_id = %id, "log stream client too slow; disconnected");
    }
}

/// Queues a chunk, waiting at most one keep-alive interval for room.
async fn send(
    state: &AppState,
    tx: &mpsc::Sender<web::Bytes>,
    chunk: web::Bytes,
) -> Result<(), End> {
    match tx.send_timeout(chunk, state.keep_alive).await {
        Ok(()) => Ok(()),
        Err(SendTimeoutError::Timeout(_)) => Err(End::Slow),
        Err(SendTimeoutError::Closed(_)) => Err(End::Gone),
    }
}

/// Whether the run has ended (a run that is gone from the fold has too).
fn has_ended(state: &AppState, id: RunId) -> bool {
    state
        .actors
        .reader
        .state()
        .run(id)
        .is_none_or(|run| run.state.is_terminal())
}

/// Sends the logs' lines until the run has ended and its logs are read to the end
/// (`Err(End::Done)`), the client goes away or is too slow.
async fn follow(
    state: &AppState,
    id: RunId,
    stream: LogStream,
    mut followed: Followed,
    tx: &mpsc::Sender<web::Bytes>,
) -> Result<Infallible, End> {
    send(state, tx, web::Bytes::from_static(b"retry: 1000\n\n")).await?;
    let mut journal = state.actors.reader.subscribe();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keep_alive = tokio::time::interval_at(
        tokio::time::Instant::now() + state.keep_alive,
        state.keep_alive,
    );
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Looked at before reading: what the command wrote before its run ended is in
        // the files by then, and this read takes it.
        let ended = has_ended(state, id);
        for i in 0..followed.followers.len() {
            loop {
                let (back, read) = web::block(move || {
                    let read = followed.followers[i].follower.read(CHUNK_BYTES);
                    (followed, read)
                })
                .await
                .map_err(|_| End::Done)?;
                followed = back;
                let lines = read.map_err(|e| {
                    tracing::warn!(run_id = %id, stream = stream.name(), error = %e, "cannot read a run's log");
                    End::Done
                })?;
                if lines.is_empty() {
                    break;
                }
                let mut chunk = String::new();
                followed.events(&mut chunk, i, &lines);
                send(state, tx, chunk.into()).await?;
            }
        }
        if ended {
            for i in 0..followed.followers.len() {
                if let Some(last) = followed.followers[i].follower.finish() {
                    let mut chunk = String::new();
                    followed.events(&mut chunk, i, &[last]);
                    send(state, tx, chunk.into()).await?;
                }
            }
            return Err(End::Done);
        }
        // Until the next poll, or the run's end.
        loop {
            tokio::select! {
                _ = tx.closed() => return Err(End::Gone),
                _ = poll.tick() => break,
                changed = journal.changed() => {
                    if changed.is_err() || has_ended(state, id) {
                        break;
                    }
                }
                _ = keep_alive.tick() => {
                    send(state, tx, web::Bytes::from_static(b": keep-alive\n\n")).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_query_takes_a_stream_a_tail_within_bounds_and_a_rank() {
        let q = parse_query(Vec::new()).expect("defaults");
        assert_eq!((q.stream, q.tail), (LogStream::Stdout, DEFAULT_TAIL));
        assert_eq!(q.ranks, Ranks::One(0));
        let q = parse_query(pairs(&[("rank", "3")])).expect("a rank");
        assert_eq!(q.ranks, Ranks::One(3));
        let q = parse_query(pairs(&[("rank", "all")])).expect("every rank");
        assert_eq!(q.ranks, Ranks::All);
        for bad in ["-1", "+1", "", "one", "4096", "ALL"] {
            let err = parse_query(pairs(&[("rank", bad)])).expect_err("refused");
            assert!(err.detail.contains("`rank`"), "{bad}: {}", err.detail);
        }
        let q = parse_query(pairs(&[("stream", "stderr"), ("tail", "10000")])).expect("ok");
        assert_eq!((q.stream, q.tail), (LogStream::Stderr, 10_000));
        assert_eq!(parse_query(pairs(&[("tail", "0")])).expect("0").tail, 0);
        for (query, named) in [
            (&[("tail", "10001")][..], "`tail`"),
            (&[("tail", "-1")], "`tail`"),
            (&[("tail", "+5")], "`tail`"),
            (&[("tail", "")], "`tail`"),
            (&[("stream", "both")], "`stream`"),
            (&[("stream", "stdout"), ("stream", "stderr")], "`stream`"),
            (&[("lines", "5")], "`lines`"),
        ] {
            let err = parse_query(pairs(query)).expect_err("refused");
            assert_eq!(err.code, ErrorCode::InvalidQuery);
            assert!(err.detail.contains(named), "{query:?}: {}", err.detail);
        }
    }

    #[test]
    fn a_line_is_one_event_whatever_carriage_returns_it_holds() {
        let end = "1-2-3".parse::<Position>().expect("position");
        let lines = [
            Line {
                text: b"plain\r".to_vec(),
                end,
            },
            Line {
                text: b"10%\r50%\r100%".to_vec(),
                end,
            },
            Line {
                text: vec![b'a', 0xFF],
                end,
            },
        ];
        let mut out = String::new();
        for line in &lines {
            line_event(&mut out, &line.end.to_string(), "", line);
        }
        assert_eq!(
            out,
            "id: 1-2-3\nevent: line\ndata: plain\n\n\
             id: 1-2-3\nevent: line\ndata: 10%\ndata: 50%\ndata: 100%\n\n\
             id: 1-2-3\nevent: line\ndata: a\u{FFFD}\n\n"
        );
    }
}
