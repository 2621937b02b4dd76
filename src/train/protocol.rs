//! # Progress protocol, version 1
//!
//! How a command run (`"kind": "command"`) reports to the server, and the reader
//! thread that takes its reports into the run's [`ProgressCells`] the way the
//! built-in training loop writes them. The command reports over a pipe of its own;
//! its stdout and stderr go untouched to the run's log files (see
//! [`super::logfile`]).
//!
//! ## Environment
//!
//! | variable | value |
//! |---|---|
//! | `RUNYARD_PROTOCOL` | `1`, this protocol's version |
//! | `RUNYARD_PROGRESS_FD` | `3`: the write end of the pipe, open in the command |
//! | `RUNYARD_RUN_ID` | the run's id |
//! | `RUNYARD_ATTEMPT` | the attempt, 1 for the first |
//! | `RUNYARD_DEVICE` | the slot's device, `cpu` or `cuda:N` |
//! | `CUDA_VISIBLE_DEVICES` | `N` for `cuda:N`; empty (no GPU) for `cpu` |
//! | `RUNYARD_CHECKPOINT_DIR` | `DATA_DIR/runs/ID/checkpoints` (created) |
//! | `RUNYARD_RESUME_FROM` | the absolute path of the newest journaled checkpoint, when the attempt continues the run (after a pause, a failed attempt, a server restart); unset otherwise |
//!
//! A run on `k` > 1 slots starts `k` processes, one `torch.distributed` rank per
//! slot, each with the variables above for its own slot and those `torchrun` sets:
//! `WORLD_SIZE` and `LOCAL_WORLD_SIZE` (`k`), `RANK` and `LOCAL_RANK` (0 … k−1),
//! `NODE_RANK` and `GROUP_RANK` (`0`), `MASTER_ADDR` (`127.0.0.1`) and `MASTER_PORT`
//! (a free port, chosen for each attempt). Every rank has a pipe of its own; rank 0's
//! is the run's, as below. The other ranks' lines are counted by rank
//! (`rank_lines`) and otherwise ignored ([`drain_rank`]); a checkpoint from one of
//! them is refused and counted as `other_rank_checkpoint`.
//!
//! The working directory is the spec's `cwd` (by default `DATA_DIR/runs/ID`). The
//! spec's `env` is set over the server's environment, and the variables above over
//! both.
//!
//! ## Lines
//!
//! One JSON object per line, UTF-8, at most 65,536 bytes with its newline. Its
//! `"type"` says what it is:
//!
//! - absent or `"progress"`: where training stands, e.g.
//!   `{"epoch":2,"epochs":10,"batch":120,"batches":640,"loss":0.31,"samples":76800,"lr":0.01}`.
//!   Every field is optional, and one left out keeps its last value. `epoch` is the
//!   epoch in progress counting from 1, `batch` the batches finished in it, `epochs`
//!   and `batches` the totals (of the run, of one epoch), `samples` the examples
//!   seen, `loss` the newest loss (`null`: not a number). Integers are whole,
//!   non-negative numbers. Any other numeric field is a free-form metric whose
//!   newest value is kept, at most 32 names of at most 64 bytes (a further name is
//!   dropped and counted as `metric_dropped`); fields of other types are ignored.
//! - `"epoch"`: an epoch finished, e.g.
//!   `{"type":"epoch","epoch":2,"loss":0.30,"accuracy":0.91,"val_loss":0.35,"val_metric":0.90,"duration_ms":1234}`.
//!   Journaled as `EpochCompleted`, and `EpochEvaluated` when `val_loss` is given.
//!   `epoch` counts from 1 and must be the next one: the one after the previous
//!   summary, or after the checkpoint the attempt resumed from (left out, it is that
//!   one). `loss`, `accuracy`, `val_loss` and `val_metric` are numbers or `null`
//!   (unknown); `duration_ms` defaults to the time since the previous summary (or
//!   since the attempt started). Extra numeric fields are metrics. At most 10,000
//!   epochs.
//! - `"checkpoint"`: a checkpoint file is complete, e.g.
//!   `{"type":"checkpoint","path":"ckpt-2.pt","epoch":2,"step":1280}`. `path` is
//!   absolute or relative to `RUNYARD_CHECKPOINT_DIR`, and must be a regular file
//!   inside the run's directory `DATA_DIR/runs/ID`. `epoch` is the epochs fully done
//!   (default: the last summary's), `step` a number that grows with each checkpoint
//!   (default: the previous one's + 1), `batch` the batches done in the epoch after
//!   `epoch` (default 0). The server hashes the file (SHA-256, off the reading
//!   thread) and journals `CheckpointSaved` with its path relative to the data
//!   directory; the newest is what `RUNYARD_RESUME_FROM` names next time. Write the
//!   file under a temporary name, rename it into place, then report it; report an
//!   epoch's summary before the checkpoint taken at its end. Files of older reported
//!   checkpoints beyond the spec's `checkpoint.keep` are deleted (never a path that a
//!   kept checkpoint still has).
//! - `"heartbeat"`: alive, with nothing new (a long evaluation, say).
//!
//! Every good line is a sign of life: a run is reported stalled (`RunStalled`) when
//! none came for its `stall_after_secs` (by default 10 times the median time between
//! good lines, at least 30 s); with `kill_on_stall` the command is then stopped and
//! the attempt fails.
//!
//! ## Bad lines
//!
//! A bad line is counted by kind, keeping the last one's error, and otherwise
//! ignored: the run goes on. A thread of its own reads the pipe all the time (with
//! blocking reads), so a command is never held up by the server, however many or bad
//! its lines. The kinds:
//!
//! | kind | the line |
//! |---|---|
//! | `not_json` | is not JSON (or not UTF-8) |
//! | `not_object` | is JSON but not an object |
//! | `bad_field` | has a known field of the wrong type or value (`"epoch":"two"`, an epoch out of order) |
//! | `unknown_type` | has a `"type"` not listed above |
//! | `too_long` | is longer than 65,536 bytes: skipped up to the next newline |
//! | `too_fast` | came after 1,000 others in the same second: dropped unread |
//! | `bad_checkpoint` | names a file that is missing, not a regular file, outside the run's directory or unreadable |
//! | `metric_dropped` | brought a 33rd metric name, or one over 64 bytes (the rest of the line counts) |
//! | `other_rank_checkpoint` | a checkpoint from a rank other than 0 (refused: rank 0's are the run's) |
//!
//! The run's `protocol` object in the API shows them, live while the command runs:
//! `{"lines":120,"bad":{"not_json":1},"last_error":"line 7: not JSON: …","metrics":{"lr":0.01}}`
//! (`lines`: every non-blank line read, bad ones included). When the command ends the
//! same figures are journaled in `CommandExited`.
//!
//! ## Signals and exit status
//!
//! The command leads a process group of its own, with stdin from `/dev/null`.
//!
//! - Cancel: `SIGTERM` to the group, then `SIGKILL` after the spec's `grace` (10 s by
//!   default). The run is cancelled however the command ends; `RunCancelled` says
//!   which signal ended it.
//! - Pause: `SIGTERM` as well (a pipe the command only writes cannot tell it more).
//!   Take `SIGTERM` as `RUNYARD_PAUSE=1`: set a stop flag, write and report a
//!   checkpoint, and exit 0. The run is paused however the command ends, and
//!   `resume` starts it again with `RUNYARD_RESUME_FROM` naming the newest reported
//!   checkpoint.
//! - `timeout`: stopped as on cancel; the attempt fails, `timed out after …`.
//! - Exit status 0, unasked: the run completes, with the last epoch summary's
//!   figures. Any other status, or a signal, fails the attempt with the code or the
//!   signal and the last 50 lines of stderr; it is retried as `max_retries` says.
//! - Once the group's first process has exited, whatever is left of the group is
//!   killed (`SIGKILL`), and the slot is released when the group is gone.
//! - Ranks: cancel, pause and timeout signal every rank's group. The first rank to
//!   end abnormally unasked fails the attempt, naming it; every other rank gets
//!   `SIGTERM`, then `SIGKILL` after `grace`. A rank that `SIGTERM` ended unasked is
//!   first given 2 s for a stop request to arrive (whoever sent it, such as Slurm
//!   ending a job, usually asks for one too), and so is the `srun` step of a Slurm
//!   job's other nodes that ended abnormally (a lost node ends it as the job's end
//!   reaches the worker). The slots are released when every
//!   rank's group is gone.
//! - A server killed while a command runs leaves it running. On its next start it
//!   ends the process group it journaled (`CommandStarted`; the process's start time
//!   must match, so a recycled pid is never hit), journals `CommandExited`, and the
//!   run resumes from its newest checkpoint.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::checkpoint;
use super::progress::{CheckpointMark, EpochRecord, ProgressCells};
use crate::domain::state::{CommandProcess, ProtocolReport};
use crate::domain::Event;

/// This protocol's version, in `RUNYARD_PROTOCOL`.
pub const VERSION: u32 = 1;

/// The file descriptor the command writes its lines to.
pub const PROGRESS_FD: i32 = 3;

/// The longest line read, newline included.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Lines taken in one second; later ones in that second are dropped unread.
pub const MAX_LINES_PER_SECOND: u32 = 1000;

/// Free-form metric names kept.
pub const MAX_METRICS: usize = 32;

/// The longest metric name kept, in bytes.
pub const MAX_METRIC_NAME_BYTES: usize = 64;

/// Epoch summaries a command may report (room for them is made up front).
pub const MAX_EPOCHS: u64 = 10_000;

/// The longest error text kept.
const MAX_ERROR_CHARS: usize = 300;

/// Checkpoints waiting to be hashed; a report beyond this is a `bad_checkpoint`.
const CHECKPOINT_QUEUE: usize = 64;

/// Hashed checkpoints waiting for the run actor (it takes them every tick); beyond
/// this the oldest is dropped unjournaled, which only a journal down for long
/// under a flood of checkpoints can cause.
const CHECKPOINTS_PENDING: usize = 1024;

/// What is wrong with a bad line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLine {
    /// Not JSON, or not UTF-8.
    NotJson,
    /// JSON, but not an object.
    NotObject,
    /// A known field of the wrong type or value.
    BadField,
    /// A `"type"` the protocol does not have.
    UnknownType,
    /// Longer than [`MAX_LINE_BYTES`].
    TooLong,
    /// Beyond [`MAX_LINES_PER_SECOND`].
    TooFast,
    /// A checkpoint that cannot be taken.
    BadCheckpoint,
    /// A metric name beyond [`MAX_METRICS`], or too long.
    MetricDropped,
    /// A checkpoint reported by a rank other than 0 (refused: rank 0's are the
    /// run's).
    OtherRankCheckpoint,
}

impl BadLine {
    /// Every kind, in the order counts are kept.
    pub const ALL: [BadLine; 9] = [
        BadLine::NotJson,
        BadLine::NotObject,
        BadLine::BadField,
        BadLine::UnknownType,
        BadLine::TooLong,
        BadLine::TooFast,
        BadLine::BadCheckpoint,
        BadLine::MetricDropped,
        BadLine::OtherRankCheckpoint,
    ];

    /// The name shown in the API, e.g. `not_json`.
    pub fn name(self) -> &'static str {
        match self {
            BadLine::NotJson => "not_json",
            BadLine::NotObject => "not_object",
            BadLine::BadField => "bad_field",
            BadLine::UnknownType => "unknown_type",
            BadLine::TooLong => "too_long",
            BadLine::TooFast => "too_fast",
            BadLine::BadCheckpoint => "bad_checkpoint",
            BadLine::MetricDropped => "metric_dropped",
            BadLine::OtherRankCheckpoint => "other_rank_checkpoint",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A checkpoint a command reported, hashed and ready to journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCheckpoint {
    /// Step, epoch, batch, size and hash.
    pub mark: CheckpointMark,
    /// Path relative to the data directory.
    pub path: String,
}

/// How an attempt's process ended, for the run actor to journal.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandEnd {
    /// The [`Event::CommandExited`] to journal; `None` when no process started.
    pub exited: Option<Event>,
    /// How a stop the server asked for went, e.g. `SIGTERM ended it`; `None` when
    /// none was asked for.
    pub stop_note: Option<String>,
}

/// What one attempt of a command run shares between its threads (the process's
/// supervisor, the pipe reader, the checkpoint hasher), its run actor and the API.
#[derive(Debug, Default)]
pub struct CommandFeed {
    /// Lines read, bad ones included.
    lines: AtomicU64,
    /// Good lines read: the command's sign of life for stall detection.
    beats: AtomicU64,
    /// Counts, metrics and the newest checkpoint, written by the reader and hasher.
    inner: Mutex<FeedInner>,
    /// The processes, by rank, once every rank started.
    started: OnceLock<Vec<CommandProcess>>,
    /// Why the run actor wants the command stopped as stalled (`kill_on_stall`).
    stall_stop: Mutex<Option<String>>,
    /// How the attempt ended, set by the supervisor before it reports the outcome.
    end: Mutex<Option<CommandEnd>>,
}

#[derive(Debug, Default)]
struct FeedInner {
    bad: [u64; BadLine::ALL.len()],
    last_error: Option<String>,
    metrics: BTreeMap<String, f64>,
    /// Hashed checkpoints, oldest first, not yet taken by the run actor.
    checkpoints: std::collections::VecDeque<CommandCheckpoint>,
    last_epoch: Option<EpochRecord>,
    /// Lines read from the other ranks' pipes, by rank.
    rank_lines: BTreeMap<u32, u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CommandFeed {
    /// The figures as the API shows them.
    pub fn report(&self) -> ProtocolReport {
        let inner = lock(&self.inner);
        ProtocolReport {
            lines: self.lines.load(Ordering::Relaxed),
            bad: BadLine::ALL
                .iter()
                .filter(|kind| inner.bad[kind.index()] > 0)
                .map(|kind| (kind.name().to_string(), inner.bad[kind.index()]))
                .collect(),
            last_error: inner.last_error.clone(),
            metrics: inner.metrics.clone(),
            rank_lines: inner.rank_lines.clone(),
        }
    }

    /// Good lines read so far.
    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Relaxed)
    }

    /// Takes the checkpoints reported and hashed since the last call, oldest first:
    /// each is journaled, so none of their files escapes the keep policy.
    pub fn take_checkpoints(&self) -> Vec<CommandCheckpoint> {
        lock(&self.inner).checkpoints.drain(..).collect()
    }

    /// The newest epoch summary.
    pub fn last_epoch(&self) -> Option<EpochRecord> {
        lock(&self.inner).last_epoch
    }

    /// Records the started processes, rank 0 first, once every rank started.
    pub fn set_started(&self, processes: Vec<CommandProcess>) {
        let _ = self.started.set(processes);
    }

    /// The processes by rank, once every rank started.
    pub fn started(&self) -> Option<&[CommandProcess]> {
        self.started.get().map(Vec::as_slice)
    }

    /// Asks the supervisor to stop the command because it stalled; `why` goes into
    /// the failure.
    pub fn request_stall_stop(&self, why: String) {
        lock(&self.stall_stop).get_or_insert(why);
    }

    /// Why a stall stop was asked for, if one was.
    pub fn stall_stop(&self) -> Option<String> {
        lock(&self.stall_stop).clone()
    }

    /// Records how the attempt ended.
    pub fn set_end(&self, end: CommandEnd) {
        *lock(&self.end) = Some(end);
    }

    /// Takes how the attempt ended (once).
    pub fn take_end(&self) -> Option<CommandEnd> {
        lock(&self.end).take()
    }

    /// The [`Event::CommandExited`] for a process that ended as `status` says.
    pub fn exited_event(
        &self,
        status: String,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> Event {
        let report = self.report();
        Event::CommandExited {
            status,
            exit_code,
            signal,
            lines: report.lines,
            bad: report.bad.into_iter().collect(),
            last_error: report.last_error,
            metrics: report.metrics.into_iter().collect(),
        }
    }

    fn count_bad(&self, kind: BadLine, error: String) {
        let mut inner = lock(&self.inner);
        inner.bad[kind.index()] += 1;
        let mut error = error;
        if error.chars().count() > MAX_ERROR_CHARS {
            error = error.chars().take(MAX_ERROR_CHARS).collect::<String>() + "…";
        }
        inner.last_error = Some(error);
    }
}

/// Reads the progress pipe of rank `rank` (> 0) of a run to its end: each line is
/// counted, a checkpoint line is refused and counted as
/// [`BadLine::OtherRankCheckpoint`], and nothing else is applied (rank 0's lines are
/// the run's). Holds at most one line of [`MAX_LINE_BYTES`].
pub fn drain_rank(mut pipe: impl Read, feed: &CommandFeed, rank: u32) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut number = 0u64;
    let mut take = |line: &[u8]| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        number += 1;
        *lock(&feed.inner).rank_lines.entry(rank).or_default() += 1;
        // Only a line that can be a checkpoint is parsed.
        let checkpoint = line.windows(10).any(|w| w == b"checkpoint")
            && serde_json::from_slice::<Value>(line)
                .ok()
                .is_some_and(|v| v.get("type").and_then(Value::as_str) == Some("checkpoint"));
        if checkpoint {
            feed.count_bad(
                BadLine::OtherRankCheckpoint,
                format!("rank {rank}, line {number}: a checkpoint from rank {rank} is refused; only rank 0 reports the run's checkpoints"),
            );
        }
    };
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut rest = &buf[..n];
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let room = MAX_LINE_BYTES.saturating_sub(line.len());
            line.extend_from_slice(&rest[..end.min(room)]);
            take(&line);
            line.clear();
            rest = &rest[end + 1..];
        }
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&rest[..rest.len().min(room)]);
    }
    take(&line);
}

/// Where a reader takes its lines to, and what it knows of the attempt.
#[derive(Debug, Clone)]
pub struct ReaderSetup {
    /// The attempt's shared figures.
    pub feed: Arc<CommandFeed>,
    /// The attempt's progress cells (made with [`ProgressCells::open_ended`]).
    pub cells: Arc<ProgressCells>,
    /// The data directory (journaled paths are relative to it).
    pub data_dir: PathBuf,
    /// `DATA_DIR/runs/ID`: checkpoints must be inside it.
    pub run_dir: PathBuf,
    /// `RUNYARD_CHECKPOINT_DIR`: relative checkpoint paths start there.
    pub checkpoint_dir: PathBuf,
    /// Epochs done before this attempt (those of the checkpoint it resumed from).
    pub epochs_done: u64,
    /// The step of the checkpoint it resumed from.
    pub step: u64,
}

/// A running reader thread.
#[derive(Debug)]
pub struct ReaderHandle {
    /// Receives [`ReaderStage::Eof`] when the pipe is closed by every writer, then
    /// [`ReaderStage::Done`] once every reported checkpoint is hashed.
    pub stages: Receiver<ReaderStage>,
}

/// How far a reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderStage {
    /// Every line is read.
    Eof,
    /// Every checkpoint reported is hashed too.
    Done,
}

/// Starts the thread that reads `pipe` to its end.
pub fn spawn_reader(
    pipe: impl Read + Send + 'static,
    setup: ReaderSetup,
    name: String,
) -> std::io::Result<ReaderHandle> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        let mut lines = LineReader::new(setup);
        lines.read_all(pipe);
        let _ = tx.send(ReaderStage::Eof);
        lines.finish();
        let _ = tx.send(ReaderStage::Done);
    })?;
    Ok(ReaderHandle { stages: rx })
}

struct HashJob {
    path: PathBuf,
    line: u64,
    step: u64,
    epoch: u64,
    batch: u64,
}

/// Parses lines and applies them: the state of one attempt's pipe.
pub struct LineReader {
    setup: ReaderSetup,
    /// The line number of the newest line (1-based), for errors.
    line: u64,
    /// The progress values last reported (a field left out keeps its value).
    epoch: u64,
    batch: u64,
    batches: u64,
    samples: u64,
    loss: f64,
    /// The epoch the next summary must be (1-based).
    next_epoch: u64,
    /// When the previous summary came (or the attempt started).
    epoch_started: Instant,
    /// The newest checkpoint step reported.
    step: u64,
    /// The current one-second window and the lines taken in it.
    window: (Instant, u32),
    /// Lines dropped in the current window (reported once per window).
    dropped: u32,
    hasher: Option<(SyncSender<HashJob>, std::thread::JoinHandle<()>)>,
}

impl LineReader {
    /// A reader for a new attempt.
    pub fn new(setup: ReaderSetup) -> Self {
        let now = Instant::now();
        Self {
            line: 0,
            epoch: 0,
            batch: 0,
            batches: 0,
            samples: 0,
            loss: f64::NAN,
            next_epoch: setup.epochs_done + 1,
            epoch_started: now,
            step: setup.step,
            window: (now, 0),
            dropped: 0,
            hasher: None,
            setup,
        }
    }

    /// Reads `pipe` to its end, taking each line.
    pub fn read_all(&mut self, mut pipe: impl Read) {
        let mut buf = vec![0u8; MAX_LINE_BYTES];
        let mut line: Vec<u8> = Vec::with_capacity(1024);
        let mut skipping = false;
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "progress pipe unreadable; no more progress");
                    break;
                }
            };
            let mut rest = &buf[..n];
            while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                if skipping {
                    skipping = false;
                } else if line.len() + end + 1 > MAX_LINE_BYTES {
                    self.too_long();
                } else {
                    line.extend_from_slice(&rest[..end]);
                    self.take(&line);
                }
                line.clear();
                rest = &rest[end + 1..];
            }
            if !skipping && !rest.is_empty() {
                // Room is left for the newline the line still needs.
                if line.len() + rest.len() + 1 > MAX_LINE_BYTES {
                    self.too_long();
                    line.clear();
                    skipping = true;
                } else {
                    line.extend_from_slice(rest);
                }
            }
        }
        if !skipping && !line.is_empty() {
            // A last line without its newline still counts.
            self.take(&line);
        }
    }

    /// Waits until every reported checkpoint is hashed.
    pub fn finish(&mut self) {
        if let Some((tx, thread)) = self.hasher.take() {
            drop(tx);
            let _ = thread.join();
        }
    }

    fn too_long(&mut self) {
        self.line += 1;
        self.setup.feed.lines.fetch_add(1, Ordering::Relaxed);
        let line = self.line;
        self.setup.feed.count_bad(
            BadLine::TooLong,
            format!("line {line}: longer than {MAX_LINE_BYTES} bytes; skipped"),
        );
    }

    /// Takes one line (without its newline).
    pub fn take(&mut self, raw: &[u8]) {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.line += 1;
        let feed = Arc::clone(&self.setup.feed);
        feed.lines.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if now.duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
            self.dropped = 0;
        }
        if self.window.1 >= MAX_LINES_PER_SECOND {
            self.dropped += 1;
            feed.count_bad(
                BadLine::TooFast,
                format!(
                    "line {}: more than {MAX_LINES_PER_SECOND} lines in a second; {} dropped unread in this second",
                    self.line, self.dropped
                ),
            );
            return;
        }
        self.window.1 += 1;
        match self.apply(raw) {
            Ok(()) => {
                feed.beats.fetch_add(1, Ordering::Relaxed);
            }
            Err((kind, error)) => feed.count_bad(kind, format!("line {}: {error}", self.line)),
        }
    }

    fn apply(&mut self, raw: &[u8]) -> Result<(), (BadLine, String)> {
        let value: Value = serde_json::from_slice(raw)
            .map_err(|e| (BadLine::NotJson, format!("not JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err((
                BadLine::NotObject,
                format!("not a JSON object but {}", kind_of(&value)),
            ));
        };
        let kind = match fields.get("type") {
            None | Some(Value::Null) => "progress",
            Some(Value::String(kind)) => kind.as_str(),
            Some(other) => {
                return Err((
                    BadLine::BadField,
                    format!("`type` must be a string, got {}", kind_of(other)),
                ))
            }
        };
        match kind {
            "progress" => self.progress(&fields),
            "epoch" => self.epoch_summary(&fields),
            "checkpoint" => self.checkpoint(&fields),
            "heartbeat" => Ok(()),
            other => Err((
                BadLine::UnknownType,
                format!(
                    "unknown type {:?} (progress, epoch, checkpoint or heartbeat)",
                    truncate(other, 40)
                ),
            )),
        }
    }

    fn progress(&mut self, fields: &Map<String, Value>) -> Result<(), (BadLine, String)> {
        let epoch = whole(fields, "epoch")?;
        let epochs = whole(fields, "epochs")?;
        let batch = whole(fields, "batch")?;
        let batches = whole(fields, "batches")?;
        let samples = whole(fields, "samples")?;
        let loss = number(fields, "loss")?;
        let cells = &self.setup.cells;
        if let Some(epochs) = epochs {
            cells.set_epochs(epochs);
        }
        self.epoch = epoch.unwrap_or(self.epoch);
        self.batch = batch.unwrap_or(self.batch);
        self.samples = samples.unwrap_or(self.samples);
        if let Some(loss) = loss {
            self.loss = loss.unwrap_or(f64::NAN);
        }
        if let Some(batches) = batches {
            self.batches = batches;
        }
        if batches.is_some() || samples.is_some() {
            // Examples per epoch, for the ETA: known only as a rate over the batches
            // done, when the command counts both.
            let done = self.epoch.saturating_sub(1) * self.batches + self.batch;
            let per_epoch = if done > 0 && self.samples > 0 {
                (self.samples as f64 / done as f64 * self.batches as f64).round() as u64
            } else {
                0
            };
            cells.set_epoch_size(self.batches, per_epoch);
        }
        cells.report(self.epoch, self.batch, self.samples, self.loss);
        self.metrics(
            fields,
            &[
                "type", "epoch", "epochs", "batch", "batches", "samples", "loss",
            ],
        );
        Ok(())
    }

    fn epoch_summary(&mut self, fields: &Map<String, Value>) -> Result<(), (BadLine, String)> {
        let epoch = whole(fields, "epoch")?.unwrap_or(self.next_epoch);
        let loss = number(fields, "loss")?.flatten();
        let accuracy = number(fields, "accuracy")?.flatten();
        let val_loss = number(fields, "val_loss")?.flatten();
        let val_metric = number(fields, "val_metric")?.flatten();
        let duration_ms = whole(fields, "duration_ms")?;
        if epoch != self.next_epoch {
            let why = if epoch < self.next_epoch {
                "is already reported"
            } else {
                "is out of order"
            };
            return Err((
                BadLine::BadField,
                format!(
                    "`epoch` {epoch} {why}: the next summary is of epoch {}",
                    self.next_epoch
                ),
            ));
        }
        let cells = &self.setup.cells;
        if epoch > cells.epoch_capacity() {
            return Err((
                BadLine::BadField,
                format!("`epoch` {epoch}: a command run reports at most {MAX_EPOCHS} epochs"),
            ));
        }
        let now = Instant::now();
        let record = EpochRecord {
            train_loss: loss.unwrap_or(f64::NAN),
            train_accuracy: accuracy.unwrap_or(f64::NAN),
            duration_ms: duration_ms
                .unwrap_or_else(|| now.duration_since(self.epoch_started).as_millis() as u64),
            // `EpochEvaluated` is journaled when there is a validation loss.
            val_loss: val_loss.unwrap_or(f64::NAN),
            val_metric: val_metric.unwrap_or(f64::NAN),
        };
        self.epoch_started = now;
        self.next_epoch += 1;
        lock(&self.setup.feed.inner).last_epoch = Some(record);
        cells.finish_epoch(epoch - 1, record);
        self.metrics(
            fields,
            &[
                "type",
                "epoch",
                "loss",
                "accuracy",
                "val_loss",
                "val_metric",
                "duration_ms",
            ],
        );
        Ok(())
    }

    fn checkpoint(&mut self, fields: &Map<String, Value>) -> Result<(), (BadLine, String)> {
        let path = match fields.get("path") {
            Some(Value::String(path)) if !path.trim().is_empty() && !path.contains('\0') => path,
            Some(Value::String(_)) => {
                return Err((BadLine::BadField, "`path` must be a file path".into()))
            }
            None | Some(Value::Null) => {
                return Err((BadLine::BadField, "a checkpoint needs its `path`".into()))
            }
            Some(other) => {
                return Err((
                    BadLine::BadField,
                    format!("`path` must be a string, got {}", kind_of(other)),
                ))
            }
        };
        let epoch = whole(fields, "epoch")?.unwrap_or(self.next_epoch - 1);
        let step = whole(fields, "step")?.unwrap_or(self.step + 1);
        let batch = whole(fields, "batch")?.unwrap_or(0);
        let job = HashJob {
            path: self.setup.checkpoint_dir.join(path),
            line: self.line,
            step,
            epoch,
            batch,
        };
        let sender = match &self.hasher {
            Some((tx, _)) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::sync_channel(CHECKPOINT_QUEUE);
                let hasher = Hasher::new(&self.setup);
                let name = format!(
                    "{}-hash",
                    std::thread::current().name().unwrap_or("protocol")
                );
                let thread = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || hasher.run(rx))
                    .map_err(|e| {
                        (
                            BadLine::BadCheckpoint,
                            format!("checkpoint not taken: cannot start a thread to hash it: {e}"),
                        )
                    })?;
                self.hasher = Some((tx.clone(), thread));
                tx
            }
        };
        match sender.try_send(job) {
            Ok(()) => {
                self.step = step;
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err((
                BadLine::BadCheckpoint,
                format!("checkpoint not taken: {CHECKPOINT_QUEUE} others are still being hashed"),
            )),
            Err(TrySendError::Disconnected(_)) => Err((
                BadLine::BadCheckpoint,
                "checkpoint not taken: the hashing thread is gone".into(),
            )),
        }
    }

    /// Keeps the numeric fields not in `known` as free-form metrics.
    fn metrics(&self, fields: &Map<String, Value>, known: &[&str]) {
        let mut dropped = Vec::new();
        {
            let mut inner = lock(&self.setup.feed.inner);
            for (name, value) in fields {
                if known.contains(&name.as_str()) {
                    continue;
                }
                let Some(value) = value.as_f64() else {
                    continue;
                };
                if let Some(slot) = inner.metrics.get_mut(name) {
                    *slot = value;
                } else if inner.metrics.len() < MAX_METRICS && name.len() <= MAX_METRIC_NAME_BYTES {
                    inner.metrics.insert(name.clone(), value);
                } else {
                    dropped.push(name.clone());
                }
            }
        }
        if let Some(name) = dropped.first() {
            self.setup.feed.count_bad(
                BadLine::MetricDropped,
                format!(
                    "line {}: metric {:?} dropped: at most {MAX_METRICS} names of at most {MAX_METRIC_NAME_BYTES} bytes are kept",
                    self.line,
                    truncate(name, 40)
                ),
            );
        }
    }
}

/// Hashes reported checkpoints off the reading thread, so a large file never holds
/// the pipe up.
struct Hasher {
    feed: Arc<CommandFeed>,
    data_dir: PathBuf,
    run_dir: PathBuf,
}

impl Hasher {
    fn new(setup: &ReaderSetup) -> Self {
        Self {
            feed: Arc::clone(&setup.feed),
            data_dir: setup.data_dir.clone(),
            run_dir: setup.run_dir.clone(),
        }
    }

    fn run(self, jobs: Receiver<HashJob>) {
        for job in jobs {
            match self.hash(&job) {
                Ok(checkpoint) => {
                    let mut inner = lock(&self.feed.inner);
                    if inner.checkpoints.len() == CHECKPOINTS_PENDING {
                        inner.checkpoints.pop_front();
                    }
                    inner.checkpoints.push_back(checkpoint);
                }
                Err(error) => self.feed.count_bad(
                    BadLine::BadCheckpoint,
                    format!("line {}: {error}", job.line),
                ),
            }
        }
    }

    fn hash(&self, job: &HashJob) -> Result<CommandCheckpoint, String> {
        let shown = job.path.display();
        let path =
            std::fs::canonicalize(&job.path).map_err(|e| format!("checkpoint {shown}: {e}"))?;
        let run_dir = std::fs::canonicalize(&self.run_dir)
            .map_err(|e| format!("run directory {}: {e}", self.run_dir.display()))?;
        if !path.starts_with(&run_dir) {
            return Err(format!(
                "checkpoint {shown} is outside the run's directory {}",
                self.run_dir.display()
            ));
        }
        let meta = std::fs::metadata(&path).map_err(|e| format!("checkpoint {shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("checkpoint {shown} is not a regular file"));
        }
        let (sha256, bytes) =
            checkpoint::sha256_file(&path).map_err(|e| format!("checkpoint {shown}: {e}"))?;
        let data_dir = std::fs::canonicalize(&self.data_dir)
            .map_err(|e| format!("data directory {}: {e}", self.data_dir.display()))?;
        let relative = path
            .strip_prefix(&data_dir)
            .map_err(|_| format!("checkpoint {shown} is outside the data directory"))?;
        Ok(CommandCheckpoint {
            mark: CheckpointMark {
                step: job.step,
                epoch: job.epoch,
                batch: job.batch,
                bytes,
                sha256,
            },
            path: relative.to_string_lossy().into_owned(),
        })
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// A whole, non-negative number field: `None` when absent or `null`.
fn whole(fields: &Map<String, Value>, name: &str) -> Result<Option<u64>, (BadLine, String)> {
    let bad = |value: &Value| {
        (
            BadLine::BadField,
            format!(
                "`{name}` must be a whole number, at least 0; got {}",
                short(value)
            ),
        )
    };
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Number(n)) => {
            if let Some(n) = n.as_u64() {
                return Ok(Some(n));
            }
            match n.as_f64() {
                // 2.0 is 2; beyond 2^53 a float is no exact count.
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0 => {
                    Ok(Some(f as u64))
                }
                _ => Err(bad(value)),
            }
        }
        Some(other) => Err(bad(other)),
    }
}

/// A number field: `None` when absent, `Some(None)` for `null` (not a number).
fn number(
    fields: &Map<String, Value>,
    name: &str,
) -> Result<Option<Option<f64>>, (BadLine, String)> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Number(n)) => Ok(Some(n.as_f64())),
        Some(other) => Err((
            BadLine::BadField,
            format!("`{name}` must be a number or null; got {}", short(other)),
        )),
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", truncate(&text, 40))
    } else {
        text
    }
}

/// The working paths of an attempt, for tests and the supervisor.
pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(crate::domain::layout::CHECKPOINTS_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        data_dir: PathBuf,
        run_dir: PathBuf,
        feed: Arc<CommandFeed>,
        cells: Arc<ProgressCells>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let run_dir = data_dir.join("runs").join("r1");
        std::fs::create_dir_all(checkpoint_dir(&run_dir)).expect("dirs");
        Fixture {
            _dir: dir,
            data_dir,
            run_dir,
            feed: Arc::new(CommandFeed::default()),
            cells: Arc::new(ProgressCells::open_ended(MAX_EPOCHS)),
        }
    }

    impl Fixture {
        fn reader(&self, epochs_done: u64, step: u64) -> LineReader {
            LineReader::new(ReaderSetup {
                feed: Arc::clone(&self.feed),
                cells: Arc::clone(&self.cells),
                data_dir: self.data_dir.clone(),
                run_dir: self.run_dir.clone(),
                checkpoint_dir: checkpoint_dir(&self.run_dir),
                epochs_done,
                step,
            })
        }
    }

    fn read(reader: &mut LineReader, text: &[u8]) {
        reader.read_all(text);
        reader.finish();
    }

    #[test]
    fn progress_fills_the_cells_and_keeps_what_a_line_leaves_out() {
        let f = fixture();
        let mut r = f.reader(0, 0);
        read(
            &mut r,
            b"{\"epoch\":1,\"epochs\":4,\"batch\":10,\"batches\":50,\"loss\":0.9,\"samples\":640,\"lr\":0.1}\n\
              {\"type\":\"progress\",\"batch\":20,\"loss\":0.8,\"samples\":1280,\"lr\":0.05,\"phase\":\"warmup\"}\n\
              \n   \n\
              {\"type\":\"heartbeat\"}\n",
        );
        let s = f.cells.snapshot();
        assert_eq!((s.epoch, s.batch, s.samples, s.loss), (1, 20, 1280, 0.8));
        assert_eq!(f.cells.epochs(), 4);
        assert_eq!(
            (f.cells.batches_per_epoch(), f.cells.samples_per_epoch()),
            (50, 3200)
        );
        let report = f.feed.report();
        assert_eq!(report.lines, 3, "blank lines are not counted");
        assert!(report.bad.is_empty(), "{report:?}");
        assert_eq!(report.metrics, BTreeMap::from([("lr".to_string(), 0.05)]));
        assert_eq!(f.feed.beats(), 3);
    }

    #[test]
    fn epoch_summaries_are_published_in_order_once() {
        let f = fixture();
        let mut r = f.reader(0, 0);
        read(
            &mut r,
            b"{\"type\":\"epoch\",\"epoch\":1,\"loss\":0.5,\"accuracy\":0.8,\"duration_ms\":12}\n\
              {\"type\":\"epoch\",\"loss\":0.4,\"val_loss\":0.45,\"val_metric\":0.7,\"duration_ms\":10}\n\
              {\"type\":\"epoch\",\"epoch\":2,\"loss\":0.3}\n\
              {\"type\":\"epoch\",\"epoch\":5,\"loss\":0.3}\n\
              {\"type\":\"epoch\",\"epoch\":3,\"loss\":null,\"accuracy\":null}\n",
        );
        let first = f.cells.finished_epoch(0).expect("epoch 1");
        assert_eq!((first.train_loss, first.train_accuracy), (0.5, 0.8));
        assert!(first.val_loss.is_nan());
        let second = f
            .cells
            .finished_epoch(1)
            .expect("epoch 2, numbered by default");
        assert_eq!((second.val_loss, second.val_metric), (0.45, 0.7));
        let third = f.cells.finished_epoch(2).expect("epoch 3");
        assert!(third.train_loss.is_nan() && third.train_accuracy.is_nan());
        assert_eq!(f.cells.finished_epoch(3), None);
        let report = f.feed.report();
        assert_eq!(report.bad, BTreeMap::from([("bad_field".to_string(), 2)]));
        assert!(
            report
                .last_error
                .as_deref()
                .unwrap_or_default()
                .contains("line 4: `epoch` 5 is out of order: the next summary is of epoch 3"),
            "{report:?}"
        );
        assert!(f.feed.last_epoch().expect("last").train_loss.is_nan());
    }

    #[test]
    fn a_resumed_attempt_continues_the_epoch_numbers_and_steps() {
        let f = fixture();
        let mut r = f.reader(2, 40);
        std::fs::write(checkpoint_dir(&f.run_dir).join("c.pt"), b"weights").expect("ckpt");
        read(
            &mut r,
            b"{\"type\":\"epoch\",\"loss\":0.2}\n{\"type\":\"checkpoint\",\"path\":\"c.pt\"}\n",
        );
        assert_eq!(f.cells.finished_epoch(1), None);
        assert!(f.cells.finished_epoch(2).is_some(), "epoch 3 after 2 done");
        let checkpoint = f.feed.take_checkpoints().pop().expect("checkpoint");
        assert_eq!((checkpoint.mark.epoch, checkpoint.mark.step), (3, 41));
    }

    #[test]
    fn checkpoints_are_hashed_and_kept_inside_the_run_directory() {
        let f = fixture();
        let ckpt = checkpoint_dir(&f.run_dir).join("ckpt-1.pt");
        std::fs::write(&ckpt, b"0123456789").expect("ckpt");
        std::fs::write(f.data_dir.join("secret"), b"x").expect("outside");
        let mut r = f.reader(0, 0);
        let text = format!(
            "{{\"type\":\"checkpoint\",\"path\":\"ckpt-1.pt\",\"epoch\":1,\"step\":7,\"batch\":3}}\n\
             {{\"type\":\"checkpoint\",\"path\":\"../../../secret\"}}\n\
             {{\"type\":\"checkpoint\",\"path\":\"missing.pt\"}}\n\
             {{\"type\":\"checkpoint\",\"path\":\"{}\"}}\n\
             {{\"type\":\"checkpoint\"}}\n",
            checkpoint_dir(&f.run_dir).display()
        );
        read(&mut r, text.as_bytes());
        let mut taken = f.feed.take_checkpoints();
        assert_eq!(taken.len(), 1, "{taken:?}");
        let checkpoint = taken.remove(0);
        assert!(f.feed.take_checkpoints().is_empty(), "taken once");
        assert_eq!(checkpoint.path, "runs/r1/checkpoints/ckpt-1.pt");
        let (sha, bytes) = checkpoint::sha256_file(&ckpt).expect("hash");
        assert_eq!(
            checkpoint.mark,
            CheckpointMark {
                step: 7,
                epoch: 1,
                batch: 3,
                bytes,
                sha256: sha
            }
        );
        let report = f.feed.report();
        assert_eq!(
            report.bad,
            BTreeMap::from([
                ("bad_checkpoint".to_string(), 3),
                ("bad_field".to_string(), 1)
            ]),
            "{report:?}"
        );
    }

    #[test]
    fn bad_lines_are_counted_by_kind_and_never_stop_the_reader() {
        let f = fixture();
        let mut r = f.reader(0, 0);
        let mut text = Vec::new();
        text.extend_from_slice(b"not json\n");
        text.extend_from_slice(b"[1,2]\n");
        text.extend_from_slice(b"{\"epoch\":\"two\"}\n");
        text.extend_from_slice(b"{\"epoch\":-1}\n");
        text.extend_from_slice(b"{\"type\":\"telemetry\"}\n");
        text.extend_from_slice(b"{\"type\":7}\n");
        text.extend_from_slice(b"\xff\xfe\n");
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        text.extend_from_slice(b"\n{\"batch\":3}\n");
        // Exactly the limit, newline included, is fine.
        let mut fits = b"{\"batch\":4,\"pad\":\"".to_vec();
        fits.resize(MAX_LINE_BYTES - 3, b'p');
        fits.extend_from_slice(b"\"}\n");
        assert_eq!(fits.len(), MAX_LINE_BYTES);
        text.extend_from_slice(&fits);
        for i in 0..40 {
            text.extend_from_slice(format!("{{\"m{i}\":{i}}}\n").as_bytes());
        }
        read(&mut r, &text);
        let report = f.feed.report();
        let expected: BTreeMap<String, u64> = [
            ("not_json", 2),
            ("not_object", 1),
            ("bad_field", 3),
            ("unknown_type", 1),
            ("too_long", 1),
            ("metric_dropped", 8),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
        assert_eq!(report.bad, expected, "{report:?}");
        assert_eq!(report.lines, 10 + 40);
        assert_eq!(report.metrics.len(), MAX_METRICS);
        assert_eq!(
            f.cells.snapshot().batch,
            4,
            "good lines after bad ones count"
        );
        assert!(
            report
                .last_error
                .as_deref()
                .unwrap_or_default()
                .contains("metric \"m39\" dropped"),
            "{report:?}"
        );
    }

    #[test]
    fn a_flood_beyond_the_rate_is_dropped_and_counted() {
        let f = fixture();
        let mut r = f.reader(0, 0);
        let text: String = (1..=3000).map(|i| format!("{{\"batch\":{i}}}\n")).collect();
        read(&mut r, text.as_bytes());
        let report = f.feed.report();
        assert_eq!(report.lines, 3000);
        let dropped = report.bad.get("too_fast").copied().unwrap_or(0);
        // Read in well under a second here, but a slow machine may cross a window.
        assert!((1000..=2000).contains(&dropped), "{report:?}");
        assert_eq!(f.feed.beats() + dropped, 3000);
    }

    #[test]
    fn a_line_split_across_reads_and_a_last_line_without_newline_are_read() {
        struct Trickle(Vec<u8>, usize);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = 3.min(self.0.len() - self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let f = fixture();
        let mut r = f.reader(0, 0);
        r.read_all(Trickle(
            b"{\"batch\":11}\n{\"batch\":12,\"loss\":1.5}".to_vec(),
            0,
        ));
        r.finish();
        let s = f.cells.snapshot();
        assert_eq!((s.batch, s.loss), (12, 1.5));
        assert_eq!(f.feed.report().lines, 2);
    }
}
