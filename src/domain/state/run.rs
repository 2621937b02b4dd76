//! The run aggregate: where a run is in its lifecycle and which events move it
//! ([`RunState::after`]), everything known about a run ([`Run`]), and what each event
//! about it changes ([`Run::apply`]). The slot ledger's part of an event and the
//! journal's own events are folded in by [`State`](super::State).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::event::{Event, EventKind};
use crate::domain::ids::{RunId, Seq, SlotId};

/// Where a run is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for a slot.
    Queued,
    /// Holds a slot; the training thread is being started.
    Starting,
    /// The training thread is working.
    Running,
    /// A pause was asked for; the thread checkpoints at the next batch boundary.
    Pausing,
    /// Stopped with a checkpoint; resumes from it when asked.
    Paused,
    /// Every epoch finished.
    Completed,
    /// The run stopped with an error.
    Failed,
    /// The run was cancelled.
    Cancelled,
}

impl RunState {
    /// Every state, for exhaustive tests.
    pub const ALL: [RunState; 8] = [
        RunState::Queued,
        RunState::Starting,
        RunState::Running,
        RunState::Pausing,
        RunState::Paused,
        RunState::Completed,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// Whether the run has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Cancelled
        )
    }

    /// Whether the run holds (or is about to hold) a slot and a thread.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            RunState::Starting | RunState::Running | RunState::Pausing
        )
    }

    /// The name used in the API, e.g. `running`.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Pausing => "pausing",
            RunState::Paused => "paused",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// The state after an event of `kind`, or `None` when the transition is refused.
    /// `None` as `from` means the run does not exist yet.
    pub fn after(from: Option<RunState>, kind: EventKind) -> Option<RunState> {
        use EventKind as K;
        use RunState as S;
        match (from, kind) {
            (None, K::RunSubmitted) => Some(S::Queued),
            (None, _) | (Some(_), K::RunSubmitted) => None,
            // A run needing several slots claims them in one append, one event each.
            (Some(S::Queued | S::Starting), K::SlotClaimed) => Some(S::Starting),
            (Some(S::Starting), K::RunStarted) => Some(S::Running),
            (Some(S::Running), K::ResumedFromCheckpoint) => Some(S::Running),
            (
                Some(s @ (S::Running | S::Pausing)),
                K::EpochCompleted
                | K::EpochEvaluated
                | K::CheckpointSaved
                | K::ArtifactSaved
                | K::RunStalled
                | K::StallEnded,
            ) => Some(s),
            (Some(S::Running | S::Pausing), K::RunCompleted) => Some(S::Completed),
            (Some(S::Queued | S::Starting | S::Running | S::Pausing), K::RunFailed) => {
                Some(S::Failed)
            }
            (Some(s @ (S::Queued | S::Starting | S::Running | S::Pausing)), K::CancelRequested) => {
                Some(s)
            }
            (
                Some(S::Queued | S::Starting | S::Running | S::Pausing | S::Paused),
                K::RunCancelled,
            ) => Some(S::Cancelled),
            (Some(S::Starting | S::Running), K::RunRequeued) => Some(S::Queued),
            (Some(S::Starting | S::Running | S::Pausing), K::RunRetryScheduled) => Some(S::Queued),
            (Some(S::Running), K::PauseRequested) => Some(S::Pausing),
            // A sweep trial pauses by itself at the end of its rung.
            (Some(S::Queued | S::Running | S::Pausing), K::RunPaused) => Some(S::Paused),
            (Some(S::Paused), K::RunResumed) => Some(S::Queued),
            // Only an ended run's files can go: a paused one resumes from them.
            (Some(s), K::ArtifactsDeleted) if s.is_terminal() => Some(s),
            // Releasing a slot never changes the state; the ledger decides if it fits.
            (Some(s), K::SlotReleased) => Some(s),
            // Which trace the run's spans go to is no lifecycle step.
            (Some(s), K::TraceAssigned) => Some(s),
            // A command run's process starts and ends within an attempt.
            (
                Some(s @ (S::Running | S::Pausing)),
                K::CommandStarted | K::RankStarted | K::CommandExited,
            ) => Some(s),
            // A Slurm run is queued by Slurm: its job is submitted while it is queued,
            // and starts it running; a lost job queues it again.
            (Some(S::Queued), K::SlurmJobSubmitted) => Some(S::Queued),
            (Some(S::Queued | S::Running), K::SlurmJobStarted) => Some(S::Running),
            (Some(S::Queued | S::Running), K::SlurmJobLost) => Some(S::Queued),
            (Some(s), K::SlurmJobEnded | K::WorkerSynced) => Some(s),
            _ => None,
        }
    }
}

/// A Slurm run's newest job, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlurmJob {
    /// Slurm's job id.
    pub job_id: u64,
    /// Which of the run's jobs it is (1 for the first).
    pub job: u32,
    /// The job's directory in the shared directory.
    pub dir: String,
    /// The node it runs on, once its worker started.
    pub node: Option<String>,
    /// Slurm's state for it once it ended (`COMPLETED`, `NODE_FAIL`, ...).
    pub ended: Option<String>,
    /// Jobs of the run the cluster lost (node failure, preemption), retried apart
    /// from failures of the user's code.
    pub lost: u32,
    /// The worker's sequence number of the last fact journaled.
    pub synced_seq: u64,
}

/// The summary of one finished epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EpochSummary {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Mean training loss (`null` when it was not a number).
    #[serde(with = "nan_as_null")]
    pub train_loss: f64,
    /// Training accuracy (`null` for regression runs, and command runs that report
    /// none).
    #[serde(with = "nan_as_null")]
    pub train_accuracy: f64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Validation loss, when the run has validation data.
    pub val_loss: Option<f64>,
    /// Validation accuracy (classification) or mean absolute error (regression).
    pub val_metric: Option<f64>,
}

/// Everything known about one run, derived from its events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    /// The run's id.
    pub id: RunId,
    /// The spec's name.
    pub name: String,
    /// Lifecycle state.
    pub state: RunState,
    /// Hex SHA-256 of the canonical spec.
    pub digest: String,
    /// The canonical spec, kept as the JSON text it was journaled as: replay does not
    /// build a tree of it for every run (readers parse it when they need it).
    #[schema(value_type = crate::domain::spec::RunSpec)]
    pub spec: Box<serde_json::value::RawValue>,
    /// The task, from the spec.
    pub task: crate::domain::spec::Task,
    /// How many checkpoints the spec's keep policy leaves on disk.
    pub keep: u32,
    /// The spec's labels (metadata, not part of the digest).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where the run trains (from the spec).
    #[serde(default)]
    pub executor: crate::domain::spec::Executor,
    /// A Slurm run's newest job, once one was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmJob>,
    /// When `RunSubmitted` was recorded.
    pub created_at: DateTime<Utc>,
    /// When the last event about the run was recorded.
    pub updated_at: DateTime<Utc>,
    /// Number of attempts started so far.
    pub attempt: u32,
    /// The slot the run trains on, if it holds any (the first of `slots`).
    pub slot: Option<SlotId>,
    /// Every slot held now.
    pub slots: Vec<SlotId>,
    /// The device of the latest attempt.
    pub device: Option<String>,
    /// Queue priority from the spec (higher first).
    pub priority: i32,
    /// Retries scheduled after failed attempts.
    pub retries: u32,
    /// A retried run waits in the queue until this time.
    pub not_before: Option<DateTime<Utc>>,
    /// Whether the live run has made no progress for longer than its threshold.
    pub stalled: bool,
    /// Whether a cancel was asked for and not yet carried out.
    pub cancel_requested: bool,
    /// Finished epochs: those of the current attempt, and those before the checkpoint
    /// it resumed from.
    pub epochs: Vec<EpochSummary>,
    /// The newest checkpoint: the next attempt resumes from it.
    pub checkpoint: Option<CheckpointRef>,
    /// Journaled checkpoints, oldest first (the newest 1,000); the API shows the ones
    /// the keep policy leaves on disk.
    #[serde(skip)]
    pub checkpoints: Vec<CheckpointRef>,
    /// Files the run produced, by name (still listed after they are deleted: the
    /// history stays).
    pub artifacts: Vec<Artifact>,
    /// Set once the run's files were deleted; its artifacts and checkpoints cannot be
    /// downloaded any more.
    #[serde(default)]
    pub files_deleted: Option<FilesDeleted>,
    /// The OpenTelemetry trace id of the run's spans (32 hex digits), when traces
    /// were on at its submission: what to search for in a trace viewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The process of the current attempt of a command run, from its
    /// `CommandStarted` to its `CommandExited`: what a restarted server looks for to
    /// end a command that outlived it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<CommandProcess>,
    /// The processes of the current attempt's other ranks (a command run with
    /// `slots` > 1), by rank, from their `RankStarted` to the attempt's
    /// `CommandExited`: each is a process group a restarted server ends too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ranks: BTreeMap<u32, CommandProcess>,
    /// What the last ended attempt of a command run reported over its progress pipe
    /// (journaled with `CommandExited`). Kept out of the run's JSON: the API shows it
    /// as `protocol`, the live figures while the command runs.
    #[serde(skip)]
    pub protocol: Option<ProtocolReport>,
    /// The final summary of a completed run.
    pub result: Option<RunResult>,
    /// Why the run failed or was cancelled.
    pub error: Option<String>,
    /// Sequence number of `RunSubmitted`.
    #[schema(value_type = u64)]
    pub submitted_seq: Seq,
    /// Sequence number of the event that last put the run in the queue: the
    /// dispatcher serves runs in this order.
    #[schema(value_type = u64)]
    pub queued_seq: Seq,
    /// Sequence number of the last event about the run.
    #[schema(value_type = u64)]
    pub last_seq: Seq,
    /// Sequence number of the event that began the run's pause (`PauseRequested`, or
    /// `RunPaused` when nobody asked), until it resumes or ends: its trace's `pause`
    /// span is named by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub pause_seq: Option<Seq>,
}

/// Most checkpoints remembered per run; `checkpoint.keep` is at most this.
const MAX_CHECKPOINTS_REMEMBERED: usize = 1000;

/// A journaled checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointRef {
    /// Path relative to the data directory.
    pub path: String,
    /// Epochs fully done.
    pub epoch: u32,
    /// Batches done in the next epoch.
    pub batch: u64,
    /// Optimizer steps taken.
    pub step: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Sequence number of its `CheckpointSaved` event.
    #[schema(value_type = u64)]
    pub seq: Seq,
}

/// A file a run produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    /// Its name, e.g. `final.safetensors`.
    pub name: String,
    /// Path relative to the data directory.
    pub path: String,
    /// Hex SHA-256.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// A command run's process, as journaled by [`Event::CommandStarted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandProcess {
    /// Process id.
    pub pid: u32,
    /// Process group id.
    pub pgid: u32,
    /// Start time in clock ticks after boot, to tell it from a recycled pid.
    pub start_ticks: u64,
    /// The attempt it belongs to.
    pub attempt: u32,
}

/// What a command reported over its progress pipe (protocol v1): lines read, bad
/// lines by kind with the last error, and the newest free-form metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProtocolReport {
    /// Lines read, bad ones included (blank lines are not counted).
    pub lines: u64,
    /// Bad lines by kind: `not_json`, `not_object`, `bad_field`, `unknown_type`,
    /// `too_long`, `too_fast`, `bad_checkpoint`, `metric_dropped`,
    /// `other_rank_checkpoint`.
    pub bad: BTreeMap<String, u64>,
    /// The error of the last bad line.
    pub last_error: Option<String>,
    /// The newest value of each free-form metric.
    pub metrics: BTreeMap<String, f64>,
    /// Lines read from the other ranks' pipes (a run with `slots` > 1), by rank:
    /// drained and counted, never applied. Shown while the command runs; not
    /// journaled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rank_lines: BTreeMap<u32, u64>,
}

/// When and what [`Event::ArtifactsDeleted`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FilesDeleted {
    /// Sequence number of the event.
    #[schema(value_type = u64)]
    pub seq: Seq,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// Files removed.
    pub files: u64,
    /// Bytes removed.
    pub bytes: u64,
}

/// The final figures of a completed run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunResult {
    /// Training loss of the last epoch (`null` when it was not a number).
    #[serde(with = "nan_as_null")]
    pub train_loss: f64,
    /// Training accuracy of the last epoch (`null` when there is none).
    #[serde(with = "nan_as_null")]
    pub train_accuracy: f64,
}

/// JSON has no NaN or infinity: such a figure is written `null` and read back as
/// NaN, so a state holding one (regression runs have no accuracy) still makes a
/// snapshot that decodes.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else {
            serializer.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

/// The few spec fields the fold needs, read without building the whole spec.
#[derive(Deserialize, Default)]
struct SpecHead {
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    task: crate::domain::spec::Task,
    #[serde(default)]
    checkpoint: KeepHead,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    executor: crate::domain::spec::Executor,
}

#[derive(Deserialize)]
struct KeepHead {
    #[serde(default = "default_keep")]
    keep: u32,
}

impl Default for KeepHead {
    fn default() -> Self {
        Self {
            keep: default_keep(),
        }
    }
}

fn default_keep() -> u32 {
    3
}

impl Run {
    /// The run its `RunSubmitted` (sequence number `seq`, recorded `at`) makes:
    /// queued, with the few spec fields the fold needs read from the spec's JSON.
    pub(super) fn submitted(
        id: RunId,
        name: &str,
        digest: &str,
        spec: &str,
        seq: Seq,
        at: DateTime<Utc>,
    ) -> Self {
        let head: SpecHead = serde_json::from_str(spec).unwrap_or_default();
        let spec =
            serde_json::value::RawValue::from_string(spec.to_string()).unwrap_or_else(|_| {
                // Not JSON (only a hand-edited journal): shown as a string.
                let quoted = serde_json::to_string(spec).unwrap_or_else(|_| "null".into());
                serde_json::value::RawValue::from_string(quoted)
                    .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned())
            });
        Run {
            id,
            name: name.to_string(),
            state: RunState::Queued,
            digest: digest.to_string(),
            spec,
            task: head.task,
            keep: head.checkpoint.keep,
            labels: head.labels,
            executor: head.executor,
            slurm: None,
            created_at: at,
            updated_at: at,
            attempt: 0,
            slot: None,
            slots: Vec::new(),
            device: None,
            priority: head.priority,
            retries: 0,
            not_before: None,
            stalled: false,
            cancel_requested: false,
            epochs: Vec::new(),
            checkpoint: None,
            checkpoints: Vec::new(),
            artifacts: Vec::new(),
            files_deleted: None,
            trace_id: None,
            process: None,
            ranks: BTreeMap::new(),
            protocol: None,
            result: None,
            error: None,
            submitted_seq: seq,
            queued_seq: seq,
            last_seq: seq,
            pause_seq: None,
        }
    }

    /// Folds in an event about this run (sequence number `seq`, recorded `at`): the
    /// state moves as [`RunState::after`] says (one the table refuses, only possible
    /// in a hand-edited journal, leaves it where it is), then the event makes its own
    /// changes. Every event is named, so a new one must be given its effect here.
    pub(super) fn apply(&mut self, seq: Seq, at: DateTime<Utc>, event: &Event) {
        if let Some(next) = RunState::after(Some(self.state), event.kind()) {
            self.state = next;
        }
        self.updated_at = at;
        self.last_seq = seq;
        if !self.state.is_live() {
            self.stalled = false;
        }
        // The pause, as the trace's `pause` span has it: from the first of
        // PauseRequested and RunPaused to RunResumed or the run's end.
        match event {
            Event::PauseRequested | Event::RunPaused { .. } => {
                self.pause_seq.get_or_insert(seq);
            }
            Event::RunResumed => self.pause_seq = None,
            _ if self.state.is_terminal() => self.pause_seq = None,
            _ => {}
        }
        match event {
            // The state's: a run is made by its `RunSubmitted`, and a repair is the
            // journal's.
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
            Event::TraceAssigned { trace_id, .. } => self.trace_id = Some(trace_id.clone()),
            Event::CommandStarted {
                pid,
                pgid,
                start_ticks,
            } => {
                self.process = Some(CommandProcess {
                    pid: *pid,
                    pgid: *pgid,
                    start_ticks: *start_ticks,
                    attempt: self.attempt,
                })
            }
            Event::RankStarted {
                rank,
                pid,
                pgid,
                start_ticks,
            } => {
                self.ranks.insert(
                    *rank,
                    CommandProcess {
                        pid: *pid,
                        pgid: *pgid,
                        start_ticks: *start_ticks,
                        attempt: self.attempt,
                    },
                );
            }
            Event::CommandExited {
                lines,
                bad,
                last_error,
                metrics,
                ..
            } => {
                self.process = None;
                self.ranks.clear();
                self.protocol = Some(ProtocolReport {
                    lines: *lines,
                    bad: bad.iter().cloned().collect(),
                    last_error: last_error.clone(),
                    metrics: metrics.iter().cloned().collect(),
                    rank_lines: BTreeMap::new(),
                });
            }
            Event::ArtifactsDeleted { files, bytes } => {
                self.files_deleted = Some(FilesDeleted {
                    seq,
                    at,
                    files: *files,
                    bytes: *bytes,
                });
            }
            Event::SlotClaimed { slot } => {
                self.slots.push(*slot);
                self.slot = self.slots.first().copied();
            }
            Event::RunStarted {
                attempt, device, ..
            } => {
                self.attempt = *attempt;
                self.device = Some(device.clone());
                self.stalled = false;
                self.process = None;
                self.ranks.clear();
                // An attempt resumes from the newest checkpoint: epochs after it are
                // trained again.
                let kept = self.checkpoint.as_ref().map_or(0, |c| c.epoch);
                self.epochs.retain(|e| e.epoch <= kept);
                self.error = None;
            }
            Event::EpochCompleted {
                epoch,
                train_loss,
                train_accuracy,
                duration_ms,
            } => self.epochs.push(EpochSummary {
                epoch: *epoch,
                train_loss: *train_loss,
                train_accuracy: *train_accuracy,
                duration_ms: *duration_ms,
                val_loss: None,
                val_metric: None,
            }),
            Event::EpochEvaluated {
                epoch,
                val_loss,
                val_metric,
            } => {
                if let Some(summary) = self.epochs.iter_mut().rev().find(|e| e.epoch == *epoch) {
                    summary.val_loss = Some(*val_loss);
                    summary.val_metric = Some(*val_metric);
                }
            }
            Event::RunCompleted {
                train_loss,
                train_accuracy,
            } => {
                self.result = Some(RunResult {
                    train_loss: *train_loss,
                    train_accuracy: *train_accuracy,
                });
                self.cancel_requested = false;
            }
            Event::RunFailed { reason } | Event::RunCancelled { reason } => {
                self.error = Some(reason.clone());
                self.cancel_requested = false;
            }
            Event::CancelRequested => self.cancel_requested = true,

            Event::RunRequeued { .. } | Event::RunResumed => self.queued_seq = seq,
            Event::RunRetryScheduled {
                reason,
                retry,
                delay_ms,
            } => {
                self.queued_seq = seq;
                self.retries = *retry;
                self.error = Some(reason.clone());
                self.not_before = Some(
                    at + chrono::Duration::milliseconds(
                        i64::try_from(*delay_ms).unwrap_or(i64::MAX / 2),
                    ),
                );
            }
            Event::CheckpointSaved {
                path,
                epoch,
                batch,
                step,
                sha256,
                bytes,
            } => {
                let checkpoint = CheckpointRef {
                    path: path.clone(),
                    epoch: *epoch,
                    batch: *batch,
                    step: *step,
                    sha256: sha256.clone(),
                    bytes: *bytes,
                    seq,
                };
                self.checkpoint = Some(checkpoint.clone());
                self.checkpoints.push(checkpoint);
                if self.checkpoints.len() > MAX_CHECKPOINTS_REMEMBERED {
                    self.checkpoints.remove(0);
                }
            }
            Event::ArtifactSaved {
                name,
                path,
                sha256,
                bytes,
            } => {
                self.artifacts.retain(|a| a.name != *name);
                self.artifacts.push(Artifact {
                    name: name.clone(),
                    path: path.clone(),
                    sha256: sha256.clone(),
                    bytes: *bytes,
                });
            }
            Event::PauseRequested | Event::ResumedFromCheckpoint { .. } => {}
            Event::RunStalled { .. } => self.stalled = true,
            Event::StallEnded { .. } => self.stalled = false,
            Event::SlurmJobSubmitted { job_id, job, dir } => {
                let (lost, synced_seq) = self
                    .slurm
                    .as_ref()
                    .map_or((0, 0), |j| (j.lost, j.synced_seq));
                self.slurm = Some(SlurmJob {
                    job_id: *job_id,
                    job: *job,
                    dir: dir.clone(),
                    node: None,
                    ended: None,
                    lost,
                    synced_seq,
                });
            }
            Event::SlurmJobStarted {
                attempt,
                node,
                device,
                ..
            } => {
                self.attempt = *attempt;
                self.device = Some(device.clone());
                self.stalled = false;
                let kept = self.checkpoint.as_ref().map_or(0, |c| c.epoch);
                self.epochs.retain(|e| e.epoch <= kept);
                self.error = None;
                if let Some(job) = &mut self.slurm {
                    job.node = Some(node.clone());
                }
            }
            Event::SlurmJobEnded { state, .. } => {
                if let Some(job) = &mut self.slurm {
                    job.ended = Some(state.clone());
                }
            }
            Event::SlurmJobLost {
                reason,
                lost,
                delay_ms,
                ..
            } => {
                self.queued_seq = seq;
                self.error = Some(reason.clone());
                self.not_before = Some(
                    at + chrono::Duration::milliseconds(
                        i64::try_from(*delay_ms).unwrap_or(i64::MAX / 2),
                    ),
                );
                if let Some(job) = &mut self.slurm {
                    job.lost = *lost;
                }
            }
            Event::WorkerSynced { through_seq } => {
                if let Some(job) = &mut self.slurm {
                    job.synced_seq = *through_seq;
                }
            }
            Event::RunPaused { reason } => self.error = Some(reason.clone()),
            Event::SlotReleased { slot } => {
                self.slots.retain(|s| s != slot);
                self.slot = self.slots.first().copied();
            }
        }
    }
}
