//! Lifecycle events: one enum of past-tense variants, wrapped in a versioned
//! envelope. A released variant is never edited: a change is a new variant, or an
//! upcaster from the old envelope version in `store::codec`.

use serde::{Deserialize, Serialize};

use super::ids::{RunId, SlotId};

/// Format version of [`Envelope`] written by this build.
pub const ENVELOPE_VERSION: u16 = 1;

/// One lifecycle fact about a run.
///
/// Field types stay plain (numbers, strings, ids) because the journal encodes them
/// with bincode, which cannot decode self-describing values; the spec travels as its
/// canonical JSON text for the same reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A run was accepted; `spec` is the canonical JSON of its spec.
    RunSubmitted {
        /// The spec's name, repeated for cheap listing.
        name: String,
        /// Hex SHA-256 of the canonical spec.
        digest: String,
        /// Canonical JSON of the spec.
        spec: String,
    },
    /// The dispatcher gave the run a slot.
    SlotClaimed {
        /// The slot now held by the run.
        slot: SlotId,
    },
    /// The training thread for an attempt started on the slot's device.
    RunStarted {
        /// 1 for the first attempt, +1 for each restart.
        attempt: u32,
        /// The slot the attempt runs on.
        slot: SlotId,
        /// The torch device, e.g. `cpu` or `cuda:0`.
        device: String,
    },
    /// One pass over the training data finished.
    EpochCompleted {
        /// 1-based epoch number.
        epoch: u32,
        /// Mean training loss over the epoch.
        train_loss: f64,
        /// Fraction of training examples classified correctly during the epoch.
        train_accuracy: f64,
        /// Wall time of the epoch, in milliseconds.
        duration_ms: u64,
    },
    /// Every epoch finished.
    RunCompleted {
        /// Training loss of the last epoch.
        train_loss: f64,
        /// Training accuracy of the last epoch.
        train_accuracy: f64,
    },
    /// The attempt stopped with an error.
    RunFailed {
        /// What went wrong, in one line.
        reason: String,
    },
    /// A client asked to cancel; the run stops at the next batch boundary. Kept so a
    /// cancel acknowledged before a crash is honoured after the restart.
    CancelRequested,
    /// The run stopped because it was cancelled.
    RunCancelled {
        /// Why it stopped.
        reason: String,
    },
    /// A live run went back to the queue (for instance after a server restart).
    RunRequeued {
        /// Why it was re-queued.
        reason: String,
    },
    /// The run gave its slot back.
    SlotReleased {
        /// The slot given back.
        slot: SlotId,
    },
    // New variants go below this line, never between released ones: bincode records
    // a variant by its position.
    /// A checkpoint was written (atomically, fsynced) and can be resumed from.
    CheckpointSaved {
        /// Path of the file, relative to the data directory.
        path: String,
        /// Epochs fully done when it was taken.
        epoch: u32,
        /// Batches done in the epoch after those.
        batch: u64,
        /// Optimizer steps taken.
        step: u64,
        /// Hex SHA-256 of the file.
        sha256: String,
        /// Size of the file in bytes.
        bytes: u64,
    },
    /// A client asked to pause; the run checkpoints at the next batch boundary.
    PauseRequested,
    /// The run stopped with a checkpoint to resume from, and holds no slot.
    RunPaused {
        /// Why it paused.
        reason: String,
    },
    /// A paused run went back to the queue.
    RunResumed,
    /// An attempt started from a checkpoint instead of from scratch.
    ResumedFromCheckpoint {
        /// The checkpoint's optimizer step.
        step: u64,
        /// Its path, relative to the data directory.
        path: String,
    },
    /// A file the run produced (e.g. its final weights).
    ArtifactSaved {
        /// The artifact's name, e.g. `final.safetensors`.
        name: String,
        /// Path relative to the data directory.
        path: String,
        /// Hex SHA-256 of the file.
        sha256: String,
        /// Size in bytes.
        bytes: u64,
    },
    /// The validation data was evaluated after an epoch.
    EpochEvaluated {
        /// 1-based epoch number.
        epoch: u32,
        /// Mean loss on the validation data.
        val_loss: f64,
        /// Accuracy (classification) or mean absolute error (regression).
        val_metric: f64,
    },
    /// An attempt failed and the run will be tried again after a delay, from its
    /// newest checkpoint.
    RunRetryScheduled {
        /// Why the attempt failed.
        reason: String,
        /// Retries scheduled so far, this one included.
        retry: u32,
        /// Wait before the run is queued again, in milliseconds.
        delay_ms: u64,
    },
    /// A live run's batch counter has not moved for longer than its stall threshold.
    RunStalled {
        /// Seconds since the counter last moved.
        idle_secs: f64,
        /// The threshold that was passed, in seconds.
        threshold_secs: f64,
    },
    /// A stalled run's batch counter moved again.
    StallEnded {
        /// Seconds the run made no progress.
        idle_secs: f64,
    },
    /// `runyard serve --repair` moved a bad tail of the journal aside: records
    /// `from_seq..=to_seq` are in `file` and no longer in the log, and this event
    /// takes `from_seq`'s place. About no run: its run id is [`RunId::SYSTEM`].
    JournalRepaired {
        /// The first record moved aside (the one that failed to read).
        from_seq: u64,
        /// The last record moved aside.
        to_seq: u64,
        /// Why the first one could not be read.
        reason: String,
        /// Where the records went, relative to the data directory.
        file: String,
    },
    /// A client deleted an ended run's files (`DATA_DIR/runs/ID`: checkpoints and
    /// artifacts). Journaled before the files are removed: a crash in between leaves
    /// files that the next start removes. The run's history stays.
    ArtifactsDeleted {
        /// Files there were to remove.
        files: u64,
        /// Their total size in bytes.
        bytes: u64,
    },
    /// The run's OpenTelemetry trace was chosen: journaled with `RunSubmitted` when
    /// traces are on, so every span of the run, after a restart too, lands in one
    /// trace under one root span.
    TraceAssigned {
        /// W3C trace id, 32 lowercase hex digits: the caller's (from the submit
        /// request's `traceparent`) or a fresh one.
        trace_id: String,
        /// The run's root span id, 16 lowercase hex digits.
        span_id: String,
        /// The caller's span (from `traceparent`) the root span is a child of.
        parent_span_id: Option<String>,
    },
    /// A command run's process started (journaled after `RunStarted`): what a
    /// restarted server needs to find the process again and end it, should it have
    /// outlived the server.
    CommandStarted {
        /// Its process id.
        pid: u32,
        /// Its process group; the command leads its own, so the same as `pid`.
        pgid: u32,
        /// Its start time in clock ticks after boot (`/proc/PID/stat` field 22): tells
        /// it from a later process given the same pid.
        start_ticks: u64,
    },
    /// A command run's process ended, or was found at a server start left from
    /// before it and ended: how, and what it reported over its progress pipe.
    CommandExited {
        /// How it ended, e.g. `exit code 3` or `killed by signal 9 (SIGKILL)`.
        status: String,
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// The signal that ended it, when one did.
        signal: Option<i32>,
        /// Lines read from its progress pipe, bad ones included.
        lines: u64,
        /// Bad lines by kind (`not_json`, `too_long`, ...), in name order.
        bad: Vec<(String, u64)>,
        /// The error of the last bad line.
        last_error: Option<String>,
        /// The newest value of each free-form metric, in name order.
        metrics: Vec<(String, f64)>,
    },
    /// A Slurm job was submitted for the run: journaled before the submit (or resume,
    /// or retry) is answered, so a restarted server follows the job instead of
    /// submitting another.
    SlurmJobSubmitted {
        /// Slurm's job id.
        job_id: u64,
        /// 1 for the run's first job, +1 for each later one (resume, retry).
        job: u32,
        /// The job's directory in the shared directory (absolute): its script, its
        /// worker's registration and output.
        dir: String,
    },
    /// The run's Slurm worker started an attempt on a node.
    SlurmJobStarted {
        /// Slurm's job id.
        job_id: u64,
        /// The run's attempt number.
        attempt: u32,
        /// The node the job runs on.
        node: String,
        /// The torch device the worker trains on, e.g. `cuda:0`.
        device: String,
    },
    /// The run's Slurm job ended, as Slurm reports it.
    SlurmJobEnded {
        /// Slurm's job id.
        job_id: u64,
        /// Slurm's job state, e.g. `COMPLETED`, `CANCELLED`, `NODE_FAIL`.
        state: String,
        /// Slurm's reason, or how the server learnt of the end.
        reason: String,
    },
    /// The cluster lost the run's job (node failure, preemption): the run is queued
    /// again and a new job resumes from its newest checkpoint after a delay. Counted
    /// apart from failures of the user's code.
    SlurmJobLost {
        /// Slurm's job id.
        job_id: u64,
        /// What happened, e.g. `NODE_FAIL`.
        reason: String,
        /// Jobs lost so far, this one included.
        lost: u32,
        /// Wait before the next job is submitted, in milliseconds.
        delay_ms: u64,
    },
    /// The run's worker facts through `through_seq` (the worker's own sequence
    /// numbers) are journaled: a repeated poll never journals one twice. Appended in
    /// the same batch as the facts it covers.
    WorkerSynced {
        /// The worker's sequence number of the last fact journaled.
        through_seq: u64,
    },
    /// Another rank of a command run with `slots` > 1 started (journaled with the
    /// `CommandStarted` of rank 0, in one append): its process group is what a
    /// restarted server ends as well.
    RankStarted {
        /// The rank, 1 up to `slots - 1`.
        rank: u32,
        /// Its process id.
        pid: u32,
        /// Its process group; each rank leads its own, so the same as `pid`.
        pgid: u32,
        /// Its start time in clock ticks after boot.
        start_ticks: u64,
    },
    /// A sweep was accepted. About the sweep, not a run: the envelope's id is the
    /// sweep's (sweeps and runs share one id space).
    SweepSubmitted {
        /// The sweep's name.
        name: String,
        /// Hex SHA-256 of the canonical sweep spec.
        digest: String,
        /// Canonical JSON of the sweep spec.
        spec: String,
    },
    /// The sweep made trial `trial`: the run `run`, submitted in the same append
    /// just before, with the base spec at `point`.
    TrialCreated {
        /// The trial's number in the sweep, from 0.
        trial: u32,
        /// The trial's run.
        run: RunId,
        /// The trial's point: canonical JSON of its values by field path.
        point: String,
    },
    /// A trial finished a rung: it trained `epochs` epochs and its metric there is
    /// `metric` (NaN when the run reported none).
    TrialReachedRung {
        /// The trial.
        trial: u32,
        /// The rung it finished, from 0.
        rung: u32,
        /// Epochs trained at the end of the rung.
        epochs: u32,
        /// The sweep's metric at that epoch.
        metric: f64,
    },
    /// The sweep promoted a waiting trial to the next rung: its run is resumed (in
    /// the same append) from its checkpoint.
    TrialPromoted {
        /// The trial.
        trial: u32,
        /// The rung it now trains to.
        rung: u32,
    },
    /// The sweep stopped a waiting trial, which goes no further: its run is
    /// cancelled in the same append.
    TrialStopped {
        /// The trial.
        trial: u32,
        /// Why, in one line.
        reason: String,
    },
    /// The sweep is over: every trial trained, stopped or failed.
    SweepCompleted {
        /// Its best trial, when any has a result.
        best: Option<u32>,
    },
    /// A client cancelled the sweep: it makes no more trials, and its live trials'
    /// runs are cancelled.
    SweepCancelled {
        /// Why.
        reason: String,
    },
    /// A client paused the sweep: it decides nothing, and its live trials' runs are
    /// paused.
    SweepPaused,
    /// A paused sweep goes on: the trials it paused are resumed.
    SweepResumed,
}

/// The variant of an [`Event`], without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// See [`Event::RunSubmitted`].
    RunSubmitted,
    /// See [`Event::SlotClaimed`].
    SlotClaimed,
    /// See [`Event::RunStarted`].
    RunStarted,
    /// See [`Event::EpochCompleted`].
    EpochCompleted,
    /// See [`Event::RunCompleted`].
    RunCompleted,
    /// See [`Event::RunFailed`].
    RunFailed,
    /// See [`Event::CancelRequested`].
    CancelRequested,
    /// See [`Event::RunCancelled`].
    RunCancelled,
    /// See [`Event::RunRequeued`].
    RunRequeued,
    /// See [`Event::SlotReleased`].
    SlotReleased,
    /// See [`Event::CheckpointSaved`].
    CheckpointSaved,
    /// See [`Event::PauseRequested`].
    PauseRequested,
    /// See [`Event::RunPaused`].
    RunPaused,
    /// See [`Event::RunResumed`].
    RunResumed,
    /// See [`Event::ResumedFromCheckpoint`].
    ResumedFromCheckpoint,
    /// See [`Event::ArtifactSaved`].
    ArtifactSaved,
    /// See [`Event::EpochEvaluated`].
    EpochEvaluated,
    /// See [`Event::RunRetryScheduled`].
    RunRetryScheduled,
    /// See [`Event::RunStalled`].
    RunStalled,
    /// See [`Event::StallEnded`].
    StallEnded,
    /// See [`Event::JournalRepaired`].
    JournalRepaired,
    /// See [`Event::ArtifactsDeleted`].
    ArtifactsDeleted,
    /// See [`Event::TraceAssigned`].
    TraceAssigned,
    /// See [`Event::CommandStarted`].
    CommandStarted,
    /// See [`Event::CommandExited`].
    CommandExited,
    /// See [`Event::SlurmJobSubmitted`].
    SlurmJobSubmitted,
    /// See [`Event::SlurmJobStarted`].
    SlurmJobStarted,
    /// See [`Event::SlurmJobEnded`].
    SlurmJobEnded,
    /// See [`Event::SlurmJobLost`].
    SlurmJobLost,
    /// See [`Event::WorkerSynced`].
    WorkerSynced,
    /// See [`Event::RankStarted`].
    RankStarted,
    /// See [`Event::SweepSubmitted`].
    SweepSubmitted,
    /// See [`Event::TrialCreated`].
    TrialCreated,
    /// See [`Event::TrialReachedRung`].
    TrialReachedRung,
    /// See [`Event::TrialPromoted`].
    TrialPromoted,
    /// See [`Event::TrialStopped`].
    TrialStopped,
    /// See [`Event::SweepCompleted`].
    SweepCompleted,
    /// See [`Event::SweepCancelled`].
    SweepCancelled,
    /// See [`Event::SweepPaused`].
    SweepPaused,
    /// See [`Event::SweepResumed`].
    SweepResumed,
}

impl EventKind {
    /// Every kind, for exhaustive tests.
    pub const ALL: [EventKind; 40] = [
        EventKind::RunSubmitted,
        EventKind::SlotClaimed,
        EventKind::RunStarted,
        EventKind::EpochCompleted,
        EventKind::RunCompleted,
        EventKind::RunFailed,
        EventKind::CancelRequested,
        EventKind::RunCancelled,
        EventKind::RunRequeued,
        EventKind::SlotReleased,
        EventKind::CheckpointSaved,
        EventKind::PauseRequested,
        EventKind::RunPaused,
        EventKind::RunResumed,
        EventKind::ResumedFromCheckpoint,
        EventKind::ArtifactSaved,
        EventKind::EpochEvaluated,
        EventKind::RunRetryScheduled,
        EventKind::RunStalled,
        EventKind::StallEnded,
        EventKind::JournalRepaired,
        EventKind::ArtifactsDeleted,
        EventKind::TraceAssigned,
        EventKind::CommandStarted,
        EventKind::CommandExited,
        EventKind::SlurmJobSubmitted,
        EventKind::SlurmJobStarted,
        EventKind::SlurmJobEnded,
        EventKind::SlurmJobLost,
        EventKind::WorkerSynced,
        EventKind::RankStarted,
        EventKind::SweepSubmitted,
        EventKind::TrialCreated,
        EventKind::TrialReachedRung,
        EventKind::TrialPromoted,
        EventKind::TrialStopped,
        EventKind::SweepCompleted,
        EventKind::SweepCancelled,
        EventKind::SweepPaused,
        EventKind::SweepResumed,
    ];

    /// The name used in the API and on streams, e.g. `RunSubmitted`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::RunSubmitted => "RunSubmitted",
            EventKind::SlotClaimed => "SlotClaimed",
            EventKind::RunStarted => "RunStarted",
            EventKind::EpochCompleted => "EpochCompleted",
            EventKind::RunCompleted => "RunCompleted",
            EventKind::RunFailed => "RunFailed",
            EventKind::CancelRequested => "CancelRequested",
            EventKind::RunCancelled => "RunCancelled",
            EventKind::RunRequeued => "RunRequeued",
            EventKind::SlotReleased => "SlotReleased",
            EventKind::CheckpointSaved => "CheckpointSaved",
            EventKind::PauseRequested => "PauseRequested",
            EventKind::RunPaused => "RunPaused",
            EventKind::RunResumed => "RunResumed",
            EventKind::ResumedFromCheckpoint => "ResumedFromCheckpoint",
            EventKind::ArtifactSaved => "ArtifactSaved",
            EventKind::EpochEvaluated => "EpochEvaluated",
            EventKind::RunRetryScheduled => "RunRetryScheduled",
            EventKind::RunStalled => "RunStalled",
            EventKind::StallEnded => "StallEnded",
            EventKind::JournalRepaired => "JournalRepaired",
            EventKind::ArtifactsDeleted => "ArtifactsDeleted",
            EventKind::TraceAssigned => "TraceAssigned",
            EventKind::CommandStarted => "CommandStarted",
            EventKind::CommandExited => "CommandExited",
            EventKind::SlurmJobSubmitted => "SlurmJobSubmitted",
            EventKind::SlurmJobStarted => "SlurmJobStarted",
            EventKind::SlurmJobEnded => "SlurmJobEnded",
            EventKind::SlurmJobLost => "SlurmJobLost",
            EventKind::WorkerSynced => "WorkerSynced",
            EventKind::RankStarted => "RankStarted",
            EventKind::SweepSubmitted => "SweepSubmitted",
            EventKind::TrialCreated => "TrialCreated",
            EventKind::TrialReachedRung => "TrialReachedRung",
            EventKind::TrialPromoted => "TrialPromoted",
            EventKind::TrialStopped => "TrialStopped",
            EventKind::SweepCompleted => "SweepCompleted",
            EventKind::SweepCancelled => "SweepCancelled",
            EventKind::SweepPaused => "SweepPaused",
            EventKind::SweepResumed => "SweepResumed",
        }
    }
}

impl Event {
    /// The variant of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::RunSubmitted { .. } => EventKind::RunSubmitted,
            Event::SlotClaimed { .. } => EventKind::SlotClaimed,
            Event::RunStarted { .. } => EventKind::RunStarted,
            Event::EpochCompleted { .. } => EventKind::EpochCompleted,
            Event::RunCompleted { .. } => EventKind::RunCompleted,
            Event::RunFailed { .. } => EventKind::RunFailed,
            Event::CancelRequested => EventKind::CancelRequested,
            Event::RunCancelled { .. } => EventKind::RunCancelled,
            Event::RunRequeued { .. } => EventKind::RunRequeued,
            Event::SlotReleased { .. } => EventKind::SlotReleased,
            Event::CheckpointSaved { .. } => EventKind::CheckpointSaved,
            Event::PauseRequested => EventKind::PauseRequested,
            Event::RunPaused { .. } => EventKind::RunPaused,
            Event::RunResumed => EventKind::RunResumed,
            Event::ResumedFromCheckpoint { .. } => EventKind::ResumedFromCheckpoint,
            Event::ArtifactSaved { .. } => EventKind::ArtifactSaved,
            Event::EpochEvaluated { .. } => EventKind::EpochEvaluated,
            Event::RunRetryScheduled { .. } => EventKind::RunRetryScheduled,
            Event::RunStalled { .. } => EventKind::RunStalled,
            Event::StallEnded { .. } => EventKind::StallEnded,
            Event::JournalRepaired { .. } => EventKind::JournalRepaired,
            Event::ArtifactsDeleted { .. } => EventKind::ArtifactsDeleted,
            Event::TraceAssigned { .. } => EventKind::TraceAssigned,
            Event::CommandStarted { .. } => EventKind::CommandStarted,
            Event::CommandExited { .. } => EventKind::CommandExited,
            Event::SlurmJobSubmitted { .. } => EventKind::SlurmJobSubmitted,
            Event::SlurmJobStarted { .. } => EventKind::SlurmJobStarted,
            Event::SlurmJobEnded { .. } => EventKind::SlurmJobEnded,
            Event::SlurmJobLost { .. } => EventKind::SlurmJobLost,
            Event::WorkerSynced { .. } => EventKind::WorkerSynced,
            Event::RankStarted { .. } => EventKind::RankStarted,
            Event::SweepSubmitted { .. } => EventKind::SweepSubmitted,
            Event::TrialCreated { .. } => EventKind::TrialCreated,
            Event::TrialReachedRung { .. } => EventKind::TrialReachedRung,
            Event::TrialPromoted { .. } => EventKind::TrialPromoted,
            Event::TrialStopped { .. } => EventKind::TrialStopped,
            Event::SweepCompleted { .. } => EventKind::SweepCompleted,
            Event::SweepCancelled { .. } => EventKind::SweepCancelled,
            Event::SweepPaused => EventKind::SweepPaused,
            Event::SweepResumed => EventKind::SweepResumed,
        }
    }

    /// Whether this event is about a sweep rather than a run (its envelope's id is a
    /// sweep's).
    pub fn is_sweep(&self) -> bool {
        matches!(
            self,
            Event::SweepSubmitted { .. }
                | Event::TrialCreated { .. }
                | Event::TrialReachedRung { .. }
                | Event::TrialPromoted { .. }
                | Event::TrialStopped { .. }
                | Event::SweepCompleted { .. }
                | Event::SweepCancelled { .. }
                | Event::SweepPaused
                | Event::SweepResumed
        )
    }

    /// Whether this event ends a run's lifecycle (completed, failed or cancelled).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::RunCompleted { .. } | Event::RunFailed { .. } | Event::RunCancelled { .. }
        )
    }

    /// The event's data as JSON, as shown by the API (`spec` is shown as an object).
    pub fn data_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Event::RunSubmitted { name, digest, spec } => {
                let spec = serde_json::from_str::<serde_json::Value>(spec)
                    .unwrap_or_else(|_| serde_json::Value::String(spec.clone()));
                json!({"name": name, "digest": digest, "spec": spec})
            }
            Event::SlotClaimed { slot } | Event::SlotReleased { slot } => json!({"slot": slot}),
            Event::RunStarted {
                attempt,
                slot,
                device,
            } => json!({"attempt": attempt, "slot": slot, "device": device}),
            Event::EpochCompleted {
                epoch,
                train_loss,
                train_accuracy,
                duration_ms,
            } => json!({
                "epoch": epoch,
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "duration_ms": duration_ms,
            }),
            Event::RunCompleted {
                train_loss,
                train_accuracy,
            } => json!({"train_loss": train_loss, "train_accuracy": train_accuracy}),
            Event::RunFailed { reason }
            | Event::RunCancelled { reason }
            | Event::RunRequeued { reason }
            | Event::RunPaused { reason } => json!({"reason": reason}),
            Event::CancelRequested | Event::PauseRequested | Event::RunResumed => json!({}),
            Event::CheckpointSaved {
                path,
                epoch,
                batch,
                step,
                sha256,
                bytes,
            } => json!({
                "path": path, "epoch": epoch, "batch": batch, "step": step,
                "sha256": sha256, "bytes": bytes,
            }),
            Event::ResumedFromCheckpoint { step, path } => json!({"step": step, "path": path}),
            Event::EpochEvaluated {
                epoch,
                val_loss,
                val_metric,
            } => json!({"epoch": epoch, "val_loss": val_loss, "val_metric": val_metric}),
            Event::RunRetryScheduled {
                reason,
                retry,
                delay_ms,
            } => json!({"reason": reason, "retry": retry, "delay_ms": delay_ms}),
            Event::RunStalled {
                idle_secs,
                threshold_secs,
            } => json!({"idle_secs": idle_secs, "threshold_secs": threshold_secs}),
            Event::StallEnded { idle_secs } => json!({"idle_secs": idle_secs}),
            Event::ArtifactSaved {
                name,
                path,
                sha256,
                bytes,
            } => json!({"name": name, "path": path, "sha256": sha256, "bytes": bytes}),
            Event::JournalRepaired {
                from_seq,
                to_seq,
                reason,
                file,
            } => json!({"from_seq": from_seq, "to_seq": to_seq, "reason": reason, "file": file}),
            Event::ArtifactsDeleted { files, bytes } => json!({"files": files, "bytes": bytes}),
            Event::TraceAssigned {
                trace_id,
                span_id,
                parent_span_id,
            } => json!({
                "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent_span_id,
            }),
            Event::CommandStarted {
                pid,
                pgid,
                start_ticks,
            } => json!({"pid": pid, "pgid": pgid, "start_ticks": start_ticks}),
            Event::CommandExited {
                status,
                exit_code,
                signal,
                lines,
                bad,
                last_error,
                metrics,
            } => {
                let bad: serde_json::Map<String, serde_json::Value> =
                    bad.iter().map(|(k, n)| (k.clone(), json!(n))).collect();
                let metrics: serde_json::Map<String, serde_json::Value> =
                    metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                json!({
                    "status": status, "exit_code": exit_code, "signal": signal,
                    "lines": lines, "bad": bad, "last_error": last_error, "metrics": metrics,
                })
            }
            Event::SlurmJobSubmitted { job_id, job, dir } => {
                json!({"job_id": job_id, "job": job, "dir": dir})
            }
            Event::SlurmJobStarted {
                job_id,
                attempt,
                node,
                device,
            } => json!({"job_id": job_id, "attempt": attempt, "node": node, "device": device}),
            Event::SlurmJobEnded {
                job_id,
                state,
                reason,
            } => json!({"job_id": job_id, "state": state, "reason": reason}),
            Event::SlurmJobLost {
                job_id,
                reason,
                lost,
                delay_ms,
            } => json!({"job_id": job_id, "reason": reason, "lost": lost, "delay_ms": delay_ms}),
            Event::WorkerSynced { through_seq } => json!({"through_seq": through_seq}),
            Event::RankStarted {
                rank,
                pid,
                pgid,
                start_ticks,
            } => json!({"rank": rank, "pid": pid, "pgid": pgid, "start_ticks": start_ticks}),
            Event::SweepSubmitted { name, digest, spec } => {
                let spec = serde_json::from_str::<serde_json::Value>(spec)
                    .unwrap_or_else(|_| serde_json::Value::String(spec.clone()));
                json!({"name": name, "digest": digest, "spec": spec})
            }
            Event::TrialCreated { trial, run, point } => {
                let point = serde_json::from_str::<serde_json::Value>(point)
                    .unwrap_or_else(|_| serde_json::Value::String(point.clone()));
                json!({"trial": trial, "run": run, "point": point})
            }
            Event::TrialReachedRung {
                trial,
                rung,
                epochs,
                metric,
            } => json!({"trial": trial, "rung": rung, "epochs": epochs,
                        "metric": metric.is_finite().then_some(*metric)}),
            Event::TrialPromoted { trial, rung } => json!({"trial": trial, "rung": rung}),
            Event::TrialStopped { trial, reason } => json!({"trial": trial, "reason": reason}),
            Event::SweepCompleted { best } => json!({"best": best}),
            Event::SweepCancelled { reason } => json!({"reason": reason}),
            Event::SweepPaused | Event::SweepResumed => json!({}),
        }
    }
}

/// What the journal stores for each sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version of the envelope; see [`ENVELOPE_VERSION`].
    pub version: u16,
    /// When the event was recorded, in microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// The run the event is about.
    pub run_id: RunId,
    /// The event itself.
    pub event: Event,
}

impl Envelope {
    /// Wraps an event recorded now.
    pub fn now(run_id: RunId, event: Event) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            recorded_at_micros: chrono::Utc::now().timestamp_micros(),
            run_id,
            event,
        }
    }

    /// The recording time as a UTC timestamp.
    pub fn recorded_at(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(self.recorded_at_micros).unwrap_or_default()
    }
}
