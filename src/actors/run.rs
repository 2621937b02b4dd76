//! The run actor: one per live attempt. It owns the attempt's progress cells and
//! flags, starts the training thread (or, for a command run, the command's
//! supervisor thread), journals each finished epoch and each new checkpoint it finds
//! in the cells (a command's checkpoints in its [`CommandFeed`]), and on the thread's
//! end journals the outcome and the slot's release.
//!
//! A run actor lives for one attempt, so it comes back from a panic in one of its
//! handlers the way a run comes back from a server crash: the attempt is handed back.
//! The thread is asked to checkpoint and stop (a pause), its checkpoint is journaled,
//! and `RunRequeued` with the slots' release goes in place of `RunPaused`; the
//! dispatcher queues the run again and its next attempt, on a new run actor, resumes
//! from that checkpoint. A client's cancel or pause that was asked for still wins.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::fault::{self, ActorKind, Recover};
use super::journal::{answered, Append, AppendError, Journal, JournalReader};
use super::ticker::{Ticker, Unwatch, Watch};
use crate::domain::layout::CHECKPOINTS_DIR;
use crate::domain::spec::RunKind;
use crate::domain::state::ProtocolReport;
use crate::domain::{Event, RunId, RunLayout, RunSpec, RunState, SlotId};
use crate::telemetry::work;
use crate::train::checkpoint;
use crate::train::command::{spawn_command, CommandJob, CommandResume, CommandSettings};
use crate::train::data::DataRoots;
use crate::train::protocol::{self, CommandCheckpoint, CommandFeed};
use crate::train::thread::TrainingJob;
use crate::train::trainer::{ResumeFrom, FINAL_WEIGHTS};
use crate::train::{spawn_training, CheckpointMark, Outcome, ProgressCells, RunControl};
use opentelemetry::trace::SpanContext;

/// Delay before retrying a final append that the disk refused.
const FINISH_RETRY: Duration = Duration::from_secs(1);

/// A checkpoint to resume from, as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Path relative to the data directory.
    pub path: String,
    /// Journaled SHA-256.
    pub sha256: String,
    /// Its optimizer step.
    pub step: u64,
    /// Epochs fully done when it was taken (already journaled).
    pub epoch: u32,
}

impl Resume {
    /// The checkpoint the next attempt of `run` continues from: its newest journaled
    /// one.
    pub fn of(run: &crate::domain::Run) -> Option<Self> {
        run.checkpoint.as_ref().map(|c| Self {
            path: c.path.clone(),
            sha256: c.sha256.clone(),
            step: c.step,
            epoch: c.epoch,
        })
    }
}

/// The run actor.
pub struct RunActor {
    run_id: RunId,
    spec: RunSpec,
    attempt: u32,
    slot: SlotId,
    slots: Vec<SlotId>,
    device: tch::Device,
    devices: Vec<tch::Device>,
    data_dir: PathBuf,
    roots: DataRoots,
    resume: Option<Resume>,
    cells: Arc<ProgressCells>,
    control: Arc<RunControl>,
    /// The epochs after which a sweep trial pauses (the end of its rung), if any.
    rung_end: Option<u32>,
    journal: Addr<Journal>,
    reader: JournalReader,
    ticker: Addr<Ticker>,
    /// Told once the run's final events are durable (its slot).
    ended: Recipient<RunEnded>,
    tick: Duration,
    /// Finished epochs already sent to the journal, so none is journaled twice.
    epochs_journaled: u64,
    /// The newest checkpoint sent to the journal.
    checkpoint_journaled: Option<CheckpointMark>,
    /// Whether an append of epochs or a checkpoint is waiting for its answer.
    progress_in_flight: bool,
    /// How the attempt ended, when it ended while a progress append was in flight.
    finish_after_progress: Option<Outcome>,
    /// Whether the last progress append failed (to log a failure streak once).
    progress_failing: bool,
    /// Whether the thread is making progress.
    stall: StallWatch,
    /// What a command run's attempt shares with its threads; `None` for a training
    /// run.
    feed: Option<Arc<CommandFeed>>,
    /// Whether the command's `CommandStarted` was sent to the journal.
    process_journaled: bool,
    /// A command's checkpoints taken from its feed and not yet journaled (all of
    /// them are journaled, not only the newest: their files are pruned by it).
    command_checkpoints: Vec<CommandCheckpoint>,
    /// Those sent in the progress append in flight, put back if it fails.
    checkpoints_in_flight: Vec<CommandCheckpoint>,
    /// Where the API finds the command's live figures.
    commands: CommandBoard,
    /// Log rotation for command runs.
    command_settings: CommandSettings,
    /// Where attempts handed back after a panic are counted.
    restarts: prometheus::IntCounter,
    /// Panics caught in this actor's handlers.
    panics: u32,
    /// Set by the first panic: the attempt goes back to the queue when it ends.
    handing_back: bool,
    /// Whether the hand-back events were refused once (and re-derived).
    hand_back_retried: bool,
    /// Whether a pause or requeue was refused once for a cancel journaled after it
    /// was decided (and journaled as the cancel instead).
    cancel_retried: bool,
    /// Whether the thread was started and its outcome not yet handled.
    thread_live: bool,
    /// Set once the final events are being journaled: nothing else ends the attempt.
    ending: bool,
    /// Set when the handling of a progress append's answer panicked: what the journal
    /// holds of this attempt's epochs is unknown, so no more are journaled, and the
    /// next attempt resumes from the newest checkpoint the journal does hold.
    progress_in_doubt: bool,
}

/// The live progress-pipe figures of the command runs' current attempts, by run: what
/// the API shows as a run's `protocol` while its command runs.
#[derive(Clone, Default, Debug)]
pub struct CommandBoard {
    feeds: super::board::RunBoard<Arc<CommandFeed>>,
}

impl CommandBoard {
    /// The live figures of a run whose command is running (or ending).
    pub fn get(&self, run_id: RunId) -> Option<ProtocolReport> {
        self.feeds.read(run_id, |feed| feed.report())
    }

    fn insert(&self, run_id: RunId, feed: Arc<CommandFeed>) {
        self.feeds.insert(run_id, feed);
    }

    /// Removes the run's feed if it is still `feed` (a later attempt's stays).
    fn remove(&self, run_id: RunId, feed: &Arc<CommandFeed>) {
        self.feeds.remove_if(run_id, |f| Arc::ptr_eq(f, feed));
    }
}

/// Shortest default stall threshold.
const MIN_STALL: Duration = Duration::from_secs(30);
/// Batch times remembered for the median.
const BATCH_TIMES: usize = 64;

/// Watches the batch counter between ticks: how long batches take, and how long the
/// counter has not moved.
#[derive(Debug)]
struct StallWatch {
    /// Batches done in the attempt at the last change.
    batches: u64,
    /// When the counter last moved (or the attempt started).
    since: std::time::Instant,
    /// Recent seconds per batch.
    batch_times: std::collections::VecDeque<f64>,
    stalled: bool,
}

impl StallWatch {
    fn new() -> Self {
        Self {
            batches: 0,
            since: std::time::Instant::now(),
            batch_times: std::collections::VecDeque::with_capacity(BATCH_TIMES),
            stalled: false,
        }
    }

    fn threshold(&self, configured: Option<f64>) -> Duration {
        if let Some(secs) = configured {
            return Duration::from_secs_f64(secs);
        }
        let mut times: Vec<f64> = self.batch_times.iter().copied().collect();
        times.sort_by(f64::total_cmp);
        let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
        Duration::from_secs_f64(median * 10.0).max(MIN_STALL)
    }

    /// The stall event due now, if any, given the batches done so far.
    fn observe(&mut self, batches: u64, configured: Option<f64>) -> Option<Event> {
        let now = std::time::Instant::now();
        let idle = now.duration_since(self.since);
        if batches != self.batches {
            if batches > self.batches {
                let per_batch = idle.as_secs_f64() / (batches - self.batches) as f64;
                if self.batch_times.len() == BATCH_TIMES {
                    self.batch_times.pop_front();
                }
                self.batch_times.push_back(per_batch);
            }
            self.batches = batches;
            self.since = now;
            if std::mem::take(&mut self.stalled) {
                return Some(Event::StallEnded {
                    idle_secs: idle.as_secs_f64(),
                });
            }
            return None;
        }
        let threshold = self.threshold(configured);
        if !self.stalled && idle >= threshold {
            self.stalled = true;
            return Some(Event::RunStalled {
                idle_secs: idle.as_secs_f64(),
                threshold_secs: threshold.as_secs_f64(),
            });
        }
        None
    }
}

/// Sent by the run actor once its final events (and the slot's release) are durable.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunEnded {
    /// The run that ended.
    pub run_id: RunId,
    /// The slot it released.
    pub slot: SlotId,
}

/// The parts of a run actor that come from its slot.
pub struct RunSetup {
    /// The run.
    pub run_id: RunId,
    /// Its spec.
    pub spec: RunSpec,
    /// The attempt number (1-based).
    pub attempt: u32,
    /// The checkpoint the attempt continues from.
    pub resume: Option<Resume>,
    /// The slot it runs on.
    pub slot: SlotId,
    /// Every slot claimed for it (released together at the end).
    pub slots: Vec<SlotId>,
    /// The slot's device.
    pub device: tch::Device,
    /// The device of each slot in `slots`, in order (a command run starts one rank
    /// on each).
    pub devices: Vec<tch::Device>,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// Where data files may be read from.
    pub roots: DataRoots,
    /// The journal.
    pub journal: Addr<Journal>,
    /// Read access to the journal.
    pub reader: JournalReader,
    /// The ticker that samples the cells.
    pub ticker: Addr<Ticker>,
    /// The slot actor to tell when the run ends.
    /// Told once the run's final events are durable (its slot).
    pub ended: Recipient<RunEnded>,
    /// How often finished epochs and checkpoints are looked for.
    pub tick: Duration,
    /// Where command runs publish their live figures.
    pub commands: CommandBoard,
    /// Log rotation for command runs.
    pub command_settings: CommandSettings,
    /// Where attempts handed back after a panic are counted.
    pub restarts: prometheus::IntCounter,
}

impl RunActor {
    /// A run actor for one attempt.
    pub fn new(setup: RunSetup) -> Self {
        let command = setup.spec.kind == RunKind::Command;
        let cells = Arc::new(if command {
            // A command says how many epochs it runs as it goes.
            ProgressCells::open_ended(protocol::MAX_EPOCHS)
        } else {
            ProgressCells::new(u64::from(setup.spec.epochs))
        });
        let epochs_journaled = setup.resume.as_ref().map_or(0, |r| u64::from(r.epoch));
        Self {
            run_id: setup.run_id,
            spec: setup.spec,
            attempt: setup.attempt,
            slot: setup.slot,
            slots: setup.slots,
            device: setup.device,
            devices: setup.devices,
            data_dir: setup.data_dir,
            roots: setup.roots,
            resume: setup.resume,
            cells,
            control: Arc::new(RunControl::default()),
            rung_end: None,
            journal: setup.journal,
            reader: setup.reader,
            ticker: setup.ticker,
            ended: setup.ended,
            tick: setup.tick,
            epochs_journaled,
            checkpoint_journaled: None,
            progress_in_flight: false,
            finish_after_progress: None,
            progress_failing: false,
            stall: StallWatch::new(),
            feed: command.then(|| Arc::new(CommandFeed::default())),
            process_journaled: false,
            command_checkpoints: Vec::new(),
            checkpoints_in_flight: Vec::new(),
            commands: setup.commands,
            command_settings: setup.command_settings,
            restarts: setup.restarts,
            panics: 0,
            handing_back: false,
            hand_back_retried: false,
            cancel_retried: false,
            thread_live: false,
            ending: false,
            progress_in_doubt: false,
        }
    }

    fn relative(&self, parts: &[&str]) -> String {
        let mut path = RunLayout::relative(self.run_id);
        for part in parts {
            path.push(part);
        }
        path.to_string_lossy().into_owned()
    }

    /// Events for what the thread finished since the last call: the newest checkpoint
    /// is read first, so every epoch it covers is already published when the epochs
    /// are read, and an epoch is never journaled after a checkpoint past it.
    fn new_records(&mut self) -> Vec<(RunId, Event)> {
        let mut events = Vec::new();
        if let Some(processes) = self.feed.as_ref().and_then(|feed| feed.started()) {
            if !std::mem::replace(&mut self.process_journaled, true) {
                // Every rank's process in one append: a restarted server finds all
                // of them, or none and looks for them by their run id.
                for (rank, process) in (0u32..).zip(processes) {
                    let event = if rank == 0 {
                        Event::CommandStarted {
                            pid: process.pid,
                            pgid: process.pgid,
                            start_ticks: process.start_ticks,
                        }
                    } else {
                        Event::RankStarted {
                            rank,
                            pid: process.pid,
                            pgid: process.pgid,
                            start_ticks: process.start_ticks,
                        }
                    };
                    events.push((self.run_id, event));
                }
            }
        }
        let checkpoints = self.new_checkpoints();
        while let Some(record) = self.cells.finished_epoch(self.epochs_journaled) {
            self.epochs_journaled += 1;
            let epoch = self.epochs_journaled as u32;
            events.push((
                self.run_id,
                Event::EpochCompleted {
                    epoch,
                    train_loss: record.train_loss,
                    train_accuracy: record.train_accuracy,
                    duration_ms: record.duration_ms,
                },
            ));
            if !record.val_loss.is_nan() {
                events.push((
                    self.run_id,
                    Event::EpochEvaluated {
                        epoch,
                        val_loss: record.val_loss,
                        val_metric: record.val_metric,
                    },
                ));
            }
        }
        for (mark, path) in checkpoints {
            self.checkpoint_journaled = Some(mark);
            events.push((
                self.run_id,
                Event::CheckpointSaved {
                    path,
                    epoch: mark.epoch as u32,
                    batch: mark.batch,
                    step: mark.step,
                    sha256: hex::encode(mark.sha256),
                    bytes: mark.bytes,
                },
            ));
        }
        events
    }

    /// Checkpoints to journal now, with the paths to journal them under: every one
    /// a command reported since the last call (under its own path), or the training
    /// loop's newest (named by its step).
    fn new_checkpoints(&mut self) -> Vec<(CheckpointMark, String)> {
        match &self.feed {
            Some(feed) => {
                let mut pending = std::mem::take(&mut self.command_checkpoints);
                pending.extend(feed.take_checkpoints());
                self.checkpoints_in_flight.clone_from(&pending);
                pending.into_iter().map(|c| (c.mark, c.path)).collect()
            }
            None => self
                .cells
                .latest_checkpoint()
                .filter(|mark| Some(*mark) != self.checkpoint_journaled)
                .map(|mark| {
                    let path = self.relative(&[CHECKPOINTS_DIR, &checkpoint::file_name(mark.step)]);
                    (mark, path)
                })
                .into_iter()
                .collect(),
        }
    }

    fn journal_progress(&mut self, ctx: &mut Context<Self>) {
        if self.progress_in_flight || self.progress_in_doubt {
            // The next tick after the answer picks up whatever is new by then.
            return;
        }
        let journaled = (
            self.epochs_journaled,
            self.checkpoint_journaled,
            self.process_journaled,
        );
        // A command is alive while good lines come (heartbeats too); a training
        // thread while batches finish.
        let batches = match &self.feed {
            Some(feed) => feed.beats(),
            None => {
                let snap = self.cells.snapshot();
                let per_epoch = self.cells.batches_per_epoch();
                snap.epoch.saturating_sub(1) * per_epoch + snap.batch
            }
        };
        let stall = self.stall.observe(batches, self.spec.stall_after_secs);
        let mut records = self.new_records();
        if let Some(event) = stall {
            if let Event::RunStalled {
                idle_secs,
                threshold_secs,
            } = event
            {
                tracing::warn!(run_id = %self.run_id, batches, "run stalled");
                if let (Some(feed), true) = (&self.feed, self.spec.kill_on_stall) {
                    feed.request_stall_stop(format!(
                        "stalled: no progress or heartbeat for {idle_secs:.0}s (threshold {threshold_secs:.0}s)"
                    ));
                }
            }
            records.push((self.run_id, event));
        }
        if records.is_empty() {
            return;
        }
        let (span, parent) = self.spans_of(&records);
        let checkpointed = span.is_some();
        self.progress_in_flight = true;
        let send = self.journal.send(Append::new(records).under(parent));
        let answer = send.into_actor(self).map(move |result, actor, ctx| {
            actor.progress_in_flight = false;
            record_outcome(span, &result);
            let in_flight = std::mem::take(&mut actor.checkpoints_in_flight);
            match answered(result) {
                Ok(_) => {
                    if checkpointed {
                        actor.prune_checkpoints();
                    }
                    if std::mem::take(&mut actor.progress_failing) {
                        tracing::info!(run_id = %actor.run_id, "progress journaled again");
                    }
                }
                Err(AppendError::Rejected(rejection)) => {
                    tracing::warn!(run_id = %actor.run_id, %rejection, "progress refused")
                }
                Err(e) => {
                    // Nothing was written: journal the same epochs and checkpoint at a
                    // later tick (or in the final records), once the journal takes
                    // writes again.
                    (
                        actor.epochs_journaled,
                        actor.checkpoint_journaled,
                        actor.process_journaled,
                    ) = journaled;
                    actor.command_checkpoints = in_flight;
                    if !std::mem::replace(&mut actor.progress_failing, true) {
                        tracing::warn!(run_id = %actor.run_id, error = %e, "progress not journaled; retrying every tick");
                    }
                }
            }
            if let Some(outcome) = actor.finish_after_progress.take() {
                actor.finish(outcome, ctx);
            }
        });
        ctx.spawn(
            fault::guarded("progress answer", answer).map(|handled, actor, ctx| {
                if handled.is_none() {
                    actor.progress_in_flight = false;
                    actor.progress_in_doubt = true;
                    if let Some(outcome) = actor.finish_after_progress.take() {
                        actor.finish(outcome, ctx);
                    }
                }
            }),
        );
    }

    /// The `attempt` span of this attempt in the run's trace, which what the actor
    /// journals about it goes under.
    fn attempt_span(&self) -> Option<SpanContext> {
        let state = self.reader.state();
        let run = state.run(self.run_id)?;
        Some(work::attempt_of(run, self.attempt))
    }

    /// The spans of an append of `records`: the `run.checkpoint` span when it carries
    /// a checkpoint (the newest), and the span the append goes under (that one, or
    /// the attempt).
    fn spans_of(&self, records: &[(RunId, Event)]) -> (Option<tracing::Span>, Option<SpanContext>) {
        let checkpoint = records.iter().rev().find_map(|(_, e)| match e {
            Event::CheckpointSaved {
                epoch,
                batch,
                step,
                bytes,
                ..
            } => Some((*epoch, *batch, *step, *bytes)),
            _ => None,
        });
        let span = checkpoint.map(|mark| self.checkpoint_span(mark, records.len()));
        let parent = match &span {
            Some(span) => work::context_of(span),
            None => self.attempt_span(),
        };
        (span, parent)
    }

    /// The `run.checkpoint` span of journaling a checkpoint (`(epoch, batch, step,
    /// bytes)`) in an append of `events` events: under the `epoch` span of the epoch
    /// it ends (taken at the end of an epoch this attempt trained, journaled with or
    /// after that epoch), else under the attempt (taken mid-epoch: that epoch has no
    /// span yet).
    fn checkpoint_span(
        &self,
        (epoch, batch, step, bytes): (u32, u64, u64, u64),
        events: usize,
    ) -> tracing::Span {
        let span = tracing::debug_span!(
            target: work::TARGET,
            parent: None,
            "run.checkpoint",
            runyard.run.id = %self.run_id,
            runyard.attempt = i64::from(self.attempt),
            runyard.checkpoint.epoch = i64::from(epoch),
            runyard.checkpoint.batch = batch as i64,
            runyard.checkpoint.step = step as i64,
            runyard.checkpoint.bytes = bytes as i64,
            runyard.journal.events = events as i64,
            runyard.outcome = tracing::field::Empty,
        );
        if span.is_disabled() {
            return span;
        }
        let parent = self.reader.state().run(self.run_id).map(|run| {
            // An epoch finished in this attempt (not one it resumed after).
            let resumed = self.resume.as_ref().map_or(0, |r| r.epoch);
            if batch == 0 && epoch > resumed {
                work::epoch_of(run, self.attempt, epoch)
            } else {
                work::attempt_of(run, self.attempt)
            }
        });
        if let Some(parent) = &parent {
            work::set_parent(&span, parent);
        }
        span
    }

    /// Deletes checkpoint files beyond the newest `keep` journaled ones. Files newer
    /// than the newest journaled checkpoint are left alone: they may be about to be
    /// journaled.
    fn prune_checkpoints(&self) {
        let Some(newest) = self.checkpoint_journaled else {
            return;
        };
        if self.feed.is_some() {
            self.prune_command_checkpoints();
            return;
        }
        let dir = RunLayout::local(&self.data_dir, self.run_id).checkpoints();
        let keep = self.spec.checkpoint.keep as usize;
        let run_id = self.run_id;
        actix_web::rt::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return;
            };
            let mut steps: Vec<u64> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| checkpoint::step_of(&e.file_name().to_string_lossy()))
                .filter(|step| *step <= newest.step)
                .collect();
            steps.sort_unstable_by(|a, b| b.cmp(a));
            for step in steps.into_iter().skip(keep) {
                let path = dir.join(checkpoint::file_name(step));
                match std::fs::remove_file(&path) {
                    // Two prunes of one run can race (one after a progress append, one
                    // after the final one): the file is gone either way.
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(run_id = %run_id, path = %path.display(), error = %e, "old checkpoint not removed")
                    }
                }
            }
        });
    }

    /// Deletes the files of a command's journaled checkpoints beyond the newest
    /// `keep`, unless a kept checkpoint has the same path (a command may write one
    /// file over and over). Only files inside the run's directory are touched.
    fn prune_command_checkpoints(&self) {
        let keep = self.spec.checkpoint.keep as usize;
        let (kept, old): (Vec<String>, Vec<String>) = {
            let state = self.reader.state();
            let Some(run) = state.run(self.run_id) else {
                return;
            };
            let split = run.checkpoints.len().saturating_sub(keep);
            let paths = |list: &[crate::domain::state::CheckpointRef]| {
                list.iter().map(|c| c.path.clone()).collect::<Vec<_>>()
            };
            (
                paths(&run.checkpoints[split..]),
                paths(&run.checkpoints[..split]),
            )
        };
        let prefix = RunLayout::relative(self.run_id);
        let doomed: std::collections::BTreeSet<String> = old
            .into_iter()
            .filter(|p| !kept.contains(p) && Path::new(p).starts_with(&prefix))
            .collect();
        if doomed.is_empty() {
            return;
        }
        let (data_dir, run_id) = (self.data_dir.clone(), self.run_id);
        actix_web::rt::task::spawn_blocking(move || {
            for path in doomed {
                let path = data_dir.join(path);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(run_id = %run_id, path = %path.display(), error = %e, "old checkpoint not removed")
                    }
                }
            }
        });
    }

    fn start_thread(&mut self, ctx: &mut Context<Self>) {
        let state = self.reader.state();
        let flags = state.run(self.run_id).map(|run| {
            (
                run.cancel_requested,
                run.state == crate::domain::RunState::Pausing,
            )
        });
        // A sweep trial stops at the end of the rung it trains towards.
        // In a Slurm worker, the job says it: the worker's journal holds no sweep.
        self.rung_end = state
            .rung_end(self.run_id)
            .or(self.command_settings.rung_end);
        if let Some(epochs) = self.rung_end {
            self.control.pause_after_epochs(epochs);
        }
        if let Some((cancel, pause)) = flags {
            if cancel {
                self.control.cancel();
            }
            if pause {
                self.control.pause();
            }
        }
        let run_dir = RunLayout::local(&self.data_dir, self.run_id).dir();
        let spawned = match &self.feed {
            Some(feed) => {
                self.commands.insert(self.run_id, Arc::clone(feed));
                spawn_command(CommandJob {
                    run_id: self.run_id,
                    attempt: self.attempt,
                    spec: self.spec.clone(),
                    devices: self.devices.clone(),
                    data_dir: self.data_dir.clone(),
                    run_dir,
                    cells: Arc::clone(&self.cells),
                    control: Arc::clone(&self.control),
                    feed: Arc::clone(feed),
                    resume: self.resume.as_ref().map(|r| CommandResume {
                        path: self.data_dir.join(&r.path),
                        epoch: r.epoch,
                        step: r.step,
                    }),
                    settings: self.command_settings,
                })
            }
            None => spawn_training(TrainingJob {
                run_id: self.run_id,
                spec: self.spec.clone(),
                device: self.device,
                cells: Arc::clone(&self.cells),
                control: Arc::clone(&self.control),
                run_dir,
                resume: self.resume.as_ref().map(|r| ResumeFrom {
                    path: self.data_dir.join(&r.path),
                    sha256: r.sha256.clone(),
                }),
                roots: self.roots.clone(),
            }),
        };
        let handle = match spawned {
            Ok(handle) => handle,
            Err(e) => {
                self.finish(
                    Outcome::Failed(format!("could not start training thread: {e}")),
                    ctx,
                );
                return;
            }
        };
        self.ticker.do_send(Watch {
            run_id: self.run_id,
            cells: Arc::clone(&self.cells),
        });
        self.thread_live = true;
        ctx.run_interval(self.tick, |actor, ctx| {
            fault::guard(actor, ctx, "progress", |actor, ctx| {
                fault::point(ActorKind::Run);
                actor.journal_progress(ctx);
            });
        });
        let ended = handle.outcome.into_actor(self).map(|outcome, actor, ctx| {
            actor.thread_live = false;
            let outcome = outcome.unwrap_or_else(|_| {
                Outcome::Failed("training thread ended without an outcome".into())
            });
            actor.finish(outcome, ctx);
        });
        ctx.spawn(fault::guarded_unit("outcome", ended));
    }

    fn finish(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        if self.ending {
            // The attempt was handed back at once after a second panic.
            return;
        }
        if self.progress_in_flight {
            // Its answer decides which epochs the final records must still carry.
            self.finish_after_progress = Some(outcome);
            return;
        }
        if self.progress_in_doubt {
            // Whatever the thread did, the journal's account of the attempt is
            // uncertain: the next attempt redoes it from the journaled checkpoint.
            self.hand_back_now(ctx);
            return;
        }
        let mut records = self.new_records();
        let end = self.feed.as_ref().and_then(|feed| feed.take_end());
        let stop_note = end.as_ref().and_then(|end| end.stop_note.clone());
        if let Some(exited) = end.and_then(|end| end.exited) {
            records.push((self.run_id, exited));
        }
        // A stop of a command says how it went, e.g. which signal ended it.
        let requested = |what: &str| match &stop_note {
            Some(note) => format!("{what}; {note}"),
            None => what.to_string(),
        };
        if std::mem::take(&mut self.stall.stalled) {
            records.push((
                self.run_id,
                Event::StallEnded {
                    idle_secs: self.stall.since.elapsed().as_secs_f64(),
                },
            ));
        }
        let terminal = match outcome {
            Outcome::Completed {
                train_loss,
                train_accuracy,
                weights,
            } => {
                if let Some(weights) = weights {
                    records.push((
                        self.run_id,
                        Event::ArtifactSaved {
                            name: FINAL_WEIGHTS.into(),
                            path: self.relative(&["artifacts", FINAL_WEIGHTS]),
                            sha256: hex::encode(weights.sha256),
                            bytes: weights.bytes,
                        },
                    ));
                }
                Event::RunCompleted {
                    train_loss,
                    train_accuracy,
                }
            }
            // A cancel that raced the pause wins: the client asked for it last. It may
            // be journaled and not yet passed on to the thread (a sweep trial pausing
            // at its rung's end just then): the journal's word counts too.
            Outcome::Paused if self.control.is_cancelled() || self.cancel_requested() => {
                Event::RunCancelled {
                    reason: requested("cancelled by request"),
                }
            }
            // The pause was the hand-back's, not a client's: the run goes back to the
            // queue and resumes from the checkpoint the pause just took.
            Outcome::Paused if self.handing_back && !self.pause_requested() => Event::RunRequeued {
                reason: HAND_BACK_REASON.into(),
            },
            Outcome::Paused if !self.pause_requested() && self.rung_end.is_some() => {
                Event::RunPaused {
                    reason: format!(
                        "paused at the end of its sweep rung ({} epochs)",
                        self.rung_end.unwrap_or_default()
                    ),
                }
            }
            Outcome::Paused => Event::RunPaused {
                reason: requested("paused by request"),
            },
            Outcome::Cancelled => Event::RunCancelled {
                reason: requested("cancelled by request"),
            },
            Outcome::Failed(reason) => {
                let retries = self
                    .reader
                    .state()
                    .run(self.run_id)
                    .map_or(0, |r| r.retries);
                if retries < self.spec.max_retries && !self.control.is_cancelled() {
                    let retry = retries + 1;
                    Event::RunRetryScheduled {
                        reason,
                        retry,
                        delay_ms: self.spec.retry_delay(retry).as_millis() as u64,
                    }
                } else {
                    Event::RunFailed { reason }
                }
            }
        };
        tracing::info!(run_id = %self.run_id, outcome = terminal.kind().name(), "training attempt ended");
        records.push((self.run_id, terminal));
        for slot in &self.slots {
            records.push((self.run_id, Event::SlotReleased { slot: *slot }));
        }
        // The final sample is published before the terminal event is journaled, so
        // whoever reads the terminal event can also read the progress it ended with.
        self.ending = true;
        let unwatch = self.ticker.send(Unwatch {
            run_id: self.run_id,
        });
        let unwatched = unwatch.into_actor(self).map(move |_, actor, ctx| {
            actor.append_final(records, ctx);
        });
        ctx.wait(fault::guarded_unit("unwatch", unwatched));
    }

    /// Whether a client's cancel of the run is journaled.
    fn cancel_requested(&self) -> bool {
        self.reader
            .state()
            .run(self.run_id)
            .is_some_and(|r| r.cancel_requested)
    }

    /// Whether a client's pause of the run is journaled (the run is `pausing`).
    fn pause_requested(&self) -> bool {
        self.reader
            .state()
            .run(self.run_id)
            .is_some_and(|r| r.state == RunState::Pausing)
    }

    /// The events that give the attempt back, as the journal's state of the run calls
    /// for: a cancel or pause a client asked for is carried out, anything else goes
    /// back to the queue; every slot the run holds is released. None once the run is
    /// no longer live (its final events are in).
    fn hand_back_records(&self) -> Vec<(RunId, Event)> {
        let state = self.reader.state();
        let Some(run) = state.run(self.run_id).filter(|r| r.state.is_live()) else {
            return Vec::new();
        };
        let terminal = if run.cancel_requested {
            Event::RunCancelled {
                reason: "cancelled by request (carried out after the run actor panicked)".into(),
            }
        } else if run.state == RunState::Pausing {
            Event::RunPaused {
                reason: "paused by request (carried out after the run actor panicked)".into(),
            }
        } else {
            Event::RunRequeued {
                reason: HAND_BACK_REASON.into(),
            }
        };
        let mut records = vec![(self.run_id, terminal)];
        records.extend(
            run.slots
                .iter()
                .map(|slot| (self.run_id, Event::SlotReleased { slot: *slot })),
        );
        records
    }

    /// Gives the attempt back now, without waiting for the thread's outcome (after a
    /// panic that leaves the normal end of the attempt in doubt): the thread is told
    /// to stop, and the events of [`RunActor::hand_back_records`] are journaled.
    fn hand_back_now(&mut self, ctx: &mut Context<Self>) {
        self.control.cancel();
        self.ending = true;
        self.finish_after_progress = None;
        self.ticker.do_send(Unwatch {
            run_id: self.run_id,
        });
        let records = self.hand_back_records();
        if records.is_empty() {
            self.release(ctx);
        } else {
            self.append_final(records, ctx);
        }
    }

    fn append_final(&mut self, records: Vec<(RunId, Event)>, ctx: &mut Context<Self>) {
        let (span, parent) = self.spans_of(&records);
        let send = self
            .journal
            .send(Append::new(records.clone()).under(parent));
        let answer = send.into_actor(self).map(move |result, actor, ctx| {
            record_outcome(span, &result);
            match answered(result) {
                Ok(_) => {
                    actor.prune_checkpoints();
                    actor.release(ctx);
                }
                // A hand-back raced a client's command: the events are read again
                // off the state that command left.
                Err(AppendError::Rejected(rejection))
                    if actor.handing_back && !actor.hand_back_retried =>
                {
                    tracing::warn!(run_id = %actor.run_id, %rejection, "hand-back events refused; re-deriving them");
                    actor.hand_back_retried = true;
                    let records = actor.hand_back_records();
                    if records.is_empty() {
                        actor.release(ctx);
                    } else {
                        actor.append_final(records, ctx);
                    }
                }
                // A cancel was journaled after the attempt decided to pause (or go
                // back to the queue): the cancel the client was told about wins.
                Err(AppendError::Rejected(rejection))
                    if !actor.cancel_retried && actor.cancel_requested() =>
                {
                    tracing::info!(run_id = %actor.run_id, %rejection, "a cancel came after the pause was decided; the run is cancelled instead");
                    actor.cancel_retried = true;
                    let records = records
                        .into_iter()
                        .map(|(run, event)| match event {
                            Event::RunPaused { .. } | Event::RunRequeued { .. } => (
                                run,
                                Event::RunCancelled {
                                    reason: "cancelled by request".into(),
                                },
                            ),
                            other => (run, other),
                        })
                        .collect();
                    actor.append_final(records, ctx);
                }
                Err(AppendError::Rejected(rejection)) => {
                    tracing::error!(run_id = %actor.run_id, %rejection, "final events refused");
                    actor.release(ctx);
                }
                Err(e) => {
                    tracing::error!(run_id = %actor.run_id, error = %e, "final events not journaled; retrying");
                    ctx.run_later(FINISH_RETRY, move |actor, ctx| {
                        fault::guard(actor, ctx, "final retry", |actor, ctx| {
                            actor.append_final(records, ctx)
                        });
                    });
                }
            }
        });
        ctx.spawn(fault::guarded_unit("final answer", answer));
    }

    fn release(&mut self, ctx: &mut Context<Self>) {
        if let Some(feed) = &self.feed {
            // The journal has the attempt's figures now (`CommandExited`).
            self.commands.remove(self.run_id, feed);
        }
        self.ended.do_send(RunEnded {
            run_id: self.run_id,
            slot: self.slot,
        });
        ctx.stop();
    }
}

/// An actor that goes away before its attempt ended (the server is shutting down, or
/// its runtime is dropped) leaves no training thread running on: the thread stops at
/// its next batch boundary, and the journal still says the run is live, so the next
/// start resumes it.
impl Drop for RunActor {
    fn drop(&mut self) {
        self.control.cancel();
    }
}

/// Why an attempt handed back after a panic was queued again.
const HAND_BACK_REASON: &str =
    "the run actor panicked; the attempt goes back to the queue and resumes from its checkpoint";

impl Recover for RunActor {
    const KIND: ActorKind = ActorKind::Run;

    fn recover(&mut self, ctx: &mut Self::Context) {
        self.panics += 1;
        match self.panics {
            1 => {
                self.restarts.inc();
                self.handing_back = true;
                if self.thread_live && !self.ending {
                    tracing::warn!(run_id = %self.run_id, attempt = self.attempt, "run actor panicked; its attempt checkpoints, stops and goes back to the queue");
                    self.control.pause();
                } else {
                    tracing::warn!(run_id = %self.run_id, attempt = self.attempt, "run actor panicked; its attempt goes back to the queue");
                    self.hand_back_now(ctx);
                }
            }
            2 => {
                tracing::error!(run_id = %self.run_id, attempt = self.attempt, "run actor panicked again; its attempt goes back to the queue at once");
                self.hand_back_now(ctx);
            }
            _ => {
                // Handing back keeps failing: the run stays live in the journal, and the
                // next start's recovery queues it again.
                tracing::error!(run_id = %self.run_id, attempt = self.attempt, "run actor cannot hand its attempt back; it stops");
                ctx.stop();
            }
        }
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "start", Self::journal_start);
    }
}

impl RunActor {
    /// Journals the attempt's start, then starts its thread.
    fn journal_start(&mut self, ctx: &mut Context<Self>) {
        let mut records = vec![(
            self.run_id,
            Event::RunStarted {
                attempt: self.attempt,
                slot: self.slot,
                device: device_name(self.device),
            },
        )];
        if let Some(resume) = &self.resume {
            records.push((
                self.run_id,
                Event::ResumedFromCheckpoint {
                    step: resume.step,
                    path: resume.path.clone(),
                },
            ));
        }
        let send = self
            .journal
            .send(Append::new(records).under(self.attempt_span()));
        let journaled = send.into_actor(self).map(|result, actor, ctx| {
            match answered(result) {
                Ok(_) => {
                    tracing::info!(run_id = %actor.run_id, attempt = actor.attempt, slot = %actor.slot, resumed = actor.resume.is_some(), "training attempt started");
                    actor.start_thread(ctx);
                }
                Err(e) => {
                    tracing::error!(run_id = %actor.run_id, error = %e, "could not journal the start");
                    actor.finish(Outcome::Failed(format!("could not start: {e}")), ctx);
                }
            }
        });
        ctx.wait(fault::guarded_unit("start answer", journaled));
    }
}

/// Ends a `run.checkpoint` span with what the journal answered.
fn record_outcome(
    span: Option<tracing::Span>,
    answer: &Result<Result<Vec<crate::domain::Seq>, AppendError>, MailboxError>,
) {
    if let Some(span) = span {
        span.record(
            "runyard.outcome",
            match answer {
                Ok(Ok(_)) => "journaled",
                Ok(Err(AppendError::Rejected(_))) => "refused",
                _ => "failed",
            },
        );
    }
}

/// Asks the run to stop at its next batch boundary.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Cancel;

impl Handler<Cancel> for RunActor {
    type Result = ();

    fn handle(&mut self, _msg: Cancel, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "cancel", |actor, _| actor.control.cancel());
    }
}

/// Asks the run to checkpoint and stop at its next batch boundary.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Pause;

impl Handler<Pause> for RunActor {
    type Result = ();

    fn handle(&mut self, _msg: Pause, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "pause", |actor, _| actor.control.pause());
    }
}

/// The name of a torch device as shown in events and the API.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        tch::Device::Mps => "mps".into(),
        tch::Device::Vulkan => "vulkan".into(),
    }
}
