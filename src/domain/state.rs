//! Runs' state as a pure fold over the journal: [`State::check`] decides whether an
//! event may be appended, [`State::apply`] folds an appended event in and never fails.
//! Each aggregate applies its own part of an event: a run its changes (`Run::apply`,
//! in `state/run.rs` with the run's lifecycle states), the slot ledger its claims and
//! releases ([`SlotLedger::apply`]), and the state the journal's own events.

mod run;
mod sweep;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use self::run::{
    Artifact, CheckpointRef, CommandProcess, EpochSummary, FilesDeleted, ProtocolReport, Run,
    RunResult, RunState, SlurmJob,
};
pub use self::sweep::{metric_of, RungResult, Sweep, SweepPlan, SweepState, TrialRecord};
use super::event::{Envelope, Event};
use super::ids::{RunId, Seq, SlotId};
use super::slots::{LedgerError, SlotLedger};

/// Why an event may not be appended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// No run has this id.
    #[error("no run with id {0}")]
    UnknownRun(RunId),
    /// A run with this id already exists.
    #[error("a run with id {0} already exists")]
    RunExists(RunId),
    /// A run with the same spec digest exists.
    #[error("a run with the same spec already exists: {existing}")]
    Duplicate {
        /// The run submitted earlier.
        existing: RunId,
    },
    /// The run's state does not allow the event.
    #[error("run {run_id} is {from:?}; {event} is not allowed")]
    Transition {
        /// The run.
        run_id: RunId,
        /// Its state now.
        from: RunState,
        /// The event refused.
        event: &'static str,
    },
    /// The slot ledger does not allow the claim or release.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// No sweep has this id.
    #[error("no sweep with id {0}")]
    UnknownSweep(RunId),
    /// The sweep's state does not allow the event.
    #[error("{0}")]
    Sweep(String),
}

#[derive(Serialize, Deserialize)]
struct StateSnapshot {
    last_seq: Seq,
    runs: Vec<RunSnapshot>,
    held: Vec<(SlotId, crate::domain::slots::Holding)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    repairs: Vec<JournalRepair>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sweeps: Vec<Sweep>,
}

/// A repair of the journal by `runyard serve --repair`, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JournalRepair {
    /// Sequence number of the [`Event::JournalRepaired`] record.
    #[schema(value_type = u64)]
    pub seq: Seq,
    /// When it was done.
    pub at: DateTime<Utc>,
    /// The first record moved aside.
    #[schema(value_type = u64)]
    pub from_seq: Seq,
    /// The last record moved aside.
    #[schema(value_type = u64)]
    pub to_seq: Seq,
    /// Why the first one could not be read.
    pub reason: String,
    /// The file the records were moved to, relative to the data directory.
    pub file: String,
}

#[derive(Serialize, Deserialize)]
struct RunSnapshot {
    run: Run,
    checkpoints: Vec<CheckpointRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<ProtocolReport>,
}

/// A queued local run's place in the dispatcher's order: higher priority first, then
/// the order runs were queued in (`queued_seq`, the sequence number of the event that
/// queued the run, is one per run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    priority: std::cmp::Reverse<i32>,
    queued_seq: Seq,
    run_id: RunId,
}

impl QueueKey {
    /// The key of `run` while it waits for a local slot.
    fn of(run: &Run) -> Option<Self> {
        (run.state == RunState::Queued && run.executor.is_local()).then_some(Self {
            priority: std::cmp::Reverse(run.priority),
            queued_seq: run.queued_seq,
            run_id: run.id,
        })
    }
}

/// The fold of every event in the journal.
///
/// Its collections are persistent (`imbl`): a clone shares every run with the
/// original and costs O(1), and a change copies only the run it touches and the path
/// to it. So the journal publishes a snapshot of the state after each flush, and a
/// reader that serializes a thousand runs from one never holds up the next flush.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Each run behind its own `Arc`, so copying a map node shares the runs in it and
    /// a change copies only the run it touches.
    runs: imbl::HashMap<RunId, Arc<Run>>,
    /// Run ids in submission order.
    order: imbl::Vector<RunId>,
    by_digest: imbl::HashMap<Arc<str>, RunId>,
    /// The local runs waiting for a slot, in the order the dispatcher serves them:
    /// kept beside the map so the queue and a run's place in it cost no scan of
    /// every run.
    queued: imbl::OrdSet<QueueKey>,
    slots: SlotLedger,
    last_seq: Seq,
    repairs: Vec<JournalRepair>,
    /// Sweeps by id (ids are time-ordered, so oldest first).
    sweeps: imbl::OrdMap<RunId, Arc<Sweep>>,
    /// The sweep and trial number of each trial's run.
    trial_runs: imbl::HashMap<RunId, (RunId, u32)>,
}

impl State {
    /// Decides whether `event` about `run_id` may be appended to the journal now.
    pub fn check(&self, run_id: RunId, event: &Event) -> Result<(), Rejection> {
        if let Event::JournalRepaired { .. } = event {
            // About the server, not a run.
            return if run_id == RunId::SYSTEM {
                Ok(())
            } else {
                Err(Rejection::UnknownRun(run_id))
            };
        }
        if event.is_sweep() {
            return self.check_sweep(run_id, event);
        }
        let run = self.runs.get(&run_id).map(|r| &**r);
        if let Event::RunSubmitted { .. } = event {
            if self.sweeps.contains_key(&run_id) {
                return Err(Rejection::RunExists(run_id));
            }
            // A second run of a known digest is a fact the fold accepts (a rerun);
            // refusing it is the submitting command's choice: see
            // [`State::check_new_digest`].
            if run.is_some() {
                return Err(Rejection::RunExists(run_id));
            }
            return Ok(());
        }
        let run = run.ok_or(Rejection::UnknownRun(run_id))?;
        if RunState::after(Some(run.state), event.kind()).is_none() {
            return Err(Rejection::Transition {
                run_id,
                from: run.state,
                event: event.kind().name(),
            });
        }
        match event {
            // A run's files are deleted once.
            Event::ArtifactsDeleted { .. } if run.files_deleted.is_some() => {
                return Err(Rejection::Transition {
                    run_id,
                    from: run.state,
                    event: event.kind().name(),
                })
            }
            // A cancel a client was told about is not lost to a pause or a requeue
            // decided before it was journaled: the run ends cancelled instead.
            Event::RunPaused { .. } | Event::RunRequeued { .. } if run.cancel_requested => {
                return Err(Rejection::Transition {
                    run_id,
                    from: run.state,
                    event: "RunPaused or RunRequeued after CancelRequested",
                })
            }
            Event::SlotClaimed { slot } => self.slots.check_claim(*slot, run_id)?,
            Event::SlotReleased { slot } => self.slots.check_release(*slot, run_id)?,
            Event::RunStarted { slot, .. } => self.slots.check_release(*slot, run_id)?,
            _ => {}
        }
        Ok(())
    }

    /// [`State::check`] of a sweep event about sweep `id`.
    fn check_sweep(&self, id: RunId, event: &Event) -> Result<(), Rejection> {
        let Some(sweep) = self.sweeps.get(&id) else {
            return match event {
                Event::SweepSubmitted { .. } if self.runs.contains_key(&id) => {
                    Err(Rejection::RunExists(id))
                }
                Event::SweepSubmitted { .. } => Ok(()),
                _ => Err(Rejection::UnknownSweep(id)),
            };
        };
        sweep.check(event).map_err(Rejection::Sweep)?;
        if let Event::TrialCreated { run, .. } = event {
            if !self.runs.contains_key(run) || self.trial_runs.contains_key(run) {
                return Err(Rejection::Sweep(format!(
                    "run {run} is not a new run to make a trial of"
                )));
            }
        }
        Ok(())
    }

    /// Refuses a `RunSubmitted` whose digest a run already has, naming the newest
    /// such run: what a submission that does not ask for a rerun checks, in the same
    /// step as [`State::check`], so two racing submissions of one spec make one run.
    pub fn check_new_digest(&self, event: &Event) -> Result<(), Rejection> {
        if let Event::RunSubmitted { digest, .. } = event {
            if let Some(existing) = self.by_digest.get(digest.as_str()) {
                return Err(Rejection::Duplicate {
                    existing: *existing,
                });
            }
        }
        Ok(())
    }

    /// Folds an appended event in. Never fails: an event that [`State::check`] would
    /// refuse (only possible in a hand-edited journal) changes as little as possible.
    pub fn apply(&mut self, seq: Seq, envelope: &Envelope) {
        let run_id = envelope.run_id;
        let before = self.runs.get(&run_id).and_then(|r| QueueKey::of(r));
        self.fold(seq, envelope);
        let after = self.runs.get(&run_id).and_then(|r| QueueKey::of(r));
        if before != after {
            if let Some(key) = before {
                self.queued.remove(&key);
            }
            if let Some(key) = after {
                self.queued.insert(key);
            }
        }
    }

    /// [`State::apply`] less the queue index. The journal's own events are the
    /// state's, a `RunSubmitted` makes a run, and any other event is its run's
    /// ([`Run::apply`]) and the slot ledger's ([`SlotLedger::apply`]).
    fn fold(&mut self, seq: Seq, envelope: &Envelope) {
        self.last_seq = self.last_seq.max(seq);
        let run_id = envelope.run_id;
        let at = envelope.recorded_at();
        match &envelope.event {
            Event::JournalRepaired {
                from_seq,
                to_seq,
                reason,
                file,
            } => self.repairs.push(JournalRepair {
                seq,
                at,
                from_seq: *from_seq,
                to_seq: *to_seq,
                reason: reason.clone(),
                file: file.clone(),
            }),
            Event::RunSubmitted { name, digest, spec } => {
                if self.runs.contains_key(&run_id) {
                    return;
                }
                // The newest run of a digest is the one a duplicate submission finds.
                self.by_digest.insert(Arc::from(digest.as_str()), run_id);
                self.order.push_back(run_id);
                self.runs.insert(
                    run_id,
                    Arc::new(Run::submitted(run_id, name, digest, spec, seq, at)),
                );
            }
            Event::SweepSubmitted { name, digest, spec } => {
                if self.sweeps.contains_key(&run_id) || self.runs.contains_key(&run_id) {
                    return;
                }
                if let Some(sweep) = Sweep::submitted(run_id, name, digest, spec, seq, at) {
                    self.sweeps.insert(run_id, Arc::new(sweep));
                }
            }
            event if event.is_sweep() => {
                let Some(sweep) = self.sweeps.get_mut(&run_id).map(Arc::make_mut) else {
                    return;
                };
                sweep.apply(seq, at, event);
                if let Event::TrialCreated { trial, run, .. } = event {
                    self.trial_runs.insert(*run, (run_id, *trial));
                }
            }
            event => {
                let Some(run) = self.runs.get_mut(&run_id).map(Arc::make_mut) else {
                    return;
                };
                run.apply(seq, at, event);
                self.slots.apply(run_id, seq, event);
                if event.is_terminal() {
                    if let Some((sweep, trial)) = self.trial_runs.get(&run_id).copied() {
                        if let Some(sweep) = self.sweeps.get_mut(&sweep).map(Arc::make_mut) {
                            sweep.trial_run_ended(trial, event);
                        }
                    }
                }
            }
        }
    }

    /// Events that bring the state left by a previous process back to a consistent
    /// one, journaled at start before anything else: runs that were live go back to
    /// the queue (or to `paused`, or `cancelled`, when that was asked for and
    /// acknowledged), and give their slots back; trial runs their sweep had stopped
    /// are cancelled, live or not, rather than started again; then the slot ledger is audited, and
    /// a slot still held by a run that is not live is released (a repair, logged).
    pub fn recovery(&self) -> Vec<(RunId, Event)> {
        let mut records = Vec::new();
        let mut released = std::collections::HashSet::new();
        // Trial runs their sweep stopped (a trial a client resumed, a cancelled
        // sweep's) whose cancel the last process did not journal: never trained again.
        let stopped_by_sweep: std::collections::HashMap<RunId, &str> = self
            .sweeps()
            .flat_map(|sweep| {
                let (cancel, _) = sweep.stops(|run| self.run(run));
                cancel.into_iter().map(|run| (run, sweep.name.as_str()))
            })
            .collect();
        // A Slurm run's job outlives the server: the Slurm executor re-attaches to it.
        for run in self
            .runs()
            .filter(|r| !r.state.is_terminal() && r.executor.is_local())
        {
            let event = if run.cancel_requested {
                Event::RunCancelled {
                    reason: "cancelled by request (carried out after a server restart)".into(),
                }
            } else if let Some(sweep) = stopped_by_sweep.get(&run.id) {
                Event::RunCancelled {
                    reason: format!(
                        "stopped by sweep {sweep} (carried out after a server restart)"
                    ),
                }
            } else if run.state == RunState::Pausing {
                Event::RunPaused {
                    reason: "paused by request (carried out after a server restart)".into(),
                }
            } else if run.state.is_live() {
                Event::RunRequeued {
                    reason: "server restarted while the run was live".into(),
                }
            } else {
                continue;
            };
            records.push((run.id, event));
            for slot in &run.slots {
                records.push((run.id, Event::SlotReleased { slot: *slot }));
                released.insert(*slot);
            }
        }
        for (slot, holding) in self.slots.held() {
            if released.contains(&slot) {
                continue;
            }
            let live = self
                .runs
                .get(&holding.run_id)
                .is_some_and(|r| r.state.is_live());
            if !live {
                tracing::warn!(%slot, run_id = %holding.run_id, since = holding.since, "slot ledger repair: releasing a slot held by a run that is not live");
                records.push((holding.run_id, Event::SlotReleased { slot }));
            }
        }
        records
    }

    /// A SHA-256 over what the fold says of every run and slot, in a form that does
    /// not depend on how the fold is laid out in memory: replaying the same journal
    /// must give the same fingerprint in every later version (the golden-journal
    /// test holds it to that).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let runs: Vec<serde_json::Value> = self
            .runs()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "state": r.state.name(),
                    "digest": r.digest,
                    "attempt": r.attempt,
                    "retries": r.retries,
                    "slots": r.slots,
                    "epochs": r.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
                    "checkpoint": r.checkpoint.as_ref().map(|c| (c.step, c.sha256.clone())),
                    "artifacts": r.artifacts.iter().map(|a| (a.name.clone(), a.sha256.clone())).collect::<Vec<_>>(),
                    "error": r.error,
                })
            })
            .collect();
        let held: Vec<(SlotId, RunId)> = self.slots.held().map(|(s, h)| (s, h.run_id)).collect();
        let mut canonical =
            serde_json::json!({"last_seq": self.last_seq, "runs": runs, "held": held});
        if !self.repairs.is_empty() {
            // Only present when there are any, so older fingerprints stay valid.
            let repairs: Vec<_> = self
                .repairs
                .iter()
                .map(|r| (r.seq, r.from_seq, r.to_seq))
                .collect();
            canonical["repairs"] = serde_json::json!(repairs);
        }
        if !self.sweeps.is_empty() {
            // Likewise: only journals with sweeps fingerprint them.
            let sweeps: Vec<_> = self
                .sweeps()
                .map(|s| {
                    serde_json::json!({
                        "id": s.id, "state": s.state.name(), "best": s.best,
                        "trials": s.trials.iter().map(|t| (t.run_id, t.status, t.results.clone())).collect::<Vec<_>>(),
                    })
                })
                .collect();
            canonical["sweeps"] = serde_json::json!(sweeps);
        }
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }

    /// The whole state as JSON, for a snapshot (checkpoint lists included, which the
    /// API view of a run leaves out).
    pub fn to_snapshot(&self) -> Vec<u8> {
        let snapshot = StateSnapshot {
            last_seq: self.last_seq,
            runs: self
                .runs()
                .map(|run| RunSnapshot {
                    run: run.clone(),
                    checkpoints: run.checkpoints.clone(),
                    protocol: run.protocol.clone(),
                })
                .collect(),
            held: self.slots.held().collect(),
            repairs: self.repairs.clone(),
            sweeps: self.sweeps().cloned().collect(),
        };
        // Plain data always serializes to JSON.
        serde_json::to_vec(&snapshot).unwrap_or_default()
    }

    /// The state a snapshot made by [`State::to_snapshot`] holds.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let snapshot: StateSnapshot = serde_json::from_slice(bytes)?;
        let mut state = State {
            last_seq: snapshot.last_seq,
            repairs: snapshot.repairs,
            ..State::default()
        };
        for RunSnapshot {
            mut run,
            checkpoints,
            protocol,
        } in snapshot.runs
        {
            run.checkpoints = checkpoints;
            run.protocol = protocol;
            // Runs come in submission order: the newest of a digest wins.
            state
                .by_digest
                .insert(Arc::from(run.digest.as_str()), run.id);
            state.order.push_back(run.id);
            if let Some(key) = QueueKey::of(&run) {
                state.queued.insert(key);
            }
            state.runs.insert(run.id, Arc::new(run));
        }
        for (slot, holding) in snapshot.held {
            state.slots.claim(slot, holding.run_id, holding.since);
        }
        for mut sweep in snapshot.sweeps {
            sweep.recheck();
            for trial in &sweep.trials {
                state
                    .trial_runs
                    .insert(trial.run_id, (sweep.id, trial.number));
            }
            state.sweeps.insert(sweep.id, Arc::new(sweep));
        }
        Ok(state)
    }

    /// Folds a whole sequence of events, as replay does.
    pub fn from_events<'a>(events: impl IntoIterator<Item = (Seq, &'a Envelope)>) -> Self {
        let mut state = State::default();
        for (seq, envelope) in events {
            state.apply(seq, envelope);
        }
        state
    }

    /// A run by id.
    pub fn run(&self, id: RunId) -> Option<&Run> {
        self.runs.get(&id).map(|r| &**r)
    }

    /// A run by id, as the state shares it: a fold that changes the run replaces
    /// this `Arc` (while anyone else holds it), so the same `Arc` is the same run.
    pub fn shared_run(&self, id: RunId) -> Option<&Arc<Run>> {
        self.runs.get(&id)
    }

    /// Every run, in submission order.
    pub fn runs(&self) -> impl DoubleEndedIterator<Item = &Run> + '_ {
        self.order
            .iter()
            .filter_map(|id| self.runs.get(id).map(|r| &**r))
    }

    /// The run submitted with this spec digest, if any.
    pub fn run_by_digest(&self, digest: &str) -> Option<&Run> {
        self.by_digest.get(digest).and_then(|id| self.run(*id))
    }

    /// Queued runs in the order the dispatcher serves them: higher priority first,
    /// then the order they were queued in.
    pub fn queue(&self) -> Vec<RunId> {
        self.queued.iter().map(|key| key.run_id).collect()
    }

    /// A queued local run's 1-based place in [`State::queue`].
    pub fn queue_position(&self, id: RunId) -> Option<usize> {
        let key = QueueKey::of(self.run(id)?)?;
        Some(self.queued.range(..key).count() + 1)
    }

    /// The slot ledger.
    pub fn slots(&self) -> &SlotLedger {
        &self.slots
    }

    /// The sequence number of the last event folded in.
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Repairs of the journal, oldest first.
    pub fn repairs(&self) -> &[JournalRepair] {
        &self.repairs
    }

    /// A sweep by id.
    pub fn sweep(&self, id: RunId) -> Option<&Sweep> {
        self.sweeps.get(&id).map(|s| &**s)
    }

    /// Every sweep, oldest first.
    pub fn sweeps(&self) -> impl DoubleEndedIterator<Item = &Sweep> + '_ {
        self.sweeps.values().map(|s| &**s)
    }

    /// The sweep and trial number a run is a trial of.
    pub fn trial_of(&self, run_id: RunId) -> Option<(RunId, u32)> {
        self.trial_runs.get(&run_id).copied()
    }

    /// The epochs after which a trial's run pauses (the end of its rung), if it is a
    /// trial training towards a rung below the top.
    pub fn rung_end(&self, run_id: RunId) -> Option<u32> {
        let (sweep, trial) = self.trial_of(run_id)?;
        self.sweep(sweep)?.rung_end(trial)
    }

    /// What sweep `id` does next, if anything (see [`Sweep`]'s plan): rungs its
    /// trials finished, else the searcher's decisions, new trials' runs taking their
    /// ids from `new_run`.
    pub fn sweep_plan(&self, id: RunId, new_run: &mut dyn FnMut() -> RunId) -> Option<SweepPlan> {
        self.sweep(id)?.plan(|run| self.run(run), new_run)
    }

    /// The trial runs of sweep `id` its state says must stop: `(to cancel, to
    /// pause)`.
    pub fn sweep_stops(&self, id: RunId) -> (Vec<RunId>, Vec<RunId>) {
        self.sweep(id)
            .map(|s| s.stops(|run| self.run(run)))
            .unwrap_or_default()
    }

    /// The trial runs of sweep `id` a resume restarts: those paused short of their
    /// rung's end.
    pub fn sweep_resumable(&self, id: RunId) -> Vec<RunId> {
        self.sweep(id)
            .map(|s| s.resumable(|run| self.run(run)))
            .unwrap_or_default()
    }

    /// Number of runs known.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether no run is known.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;
    use RunState as S;

    fn event_of(kind: EventKind, slot: SlotId) -> Event {
        match kind {
            EventKind::RunSubmitted => Event::RunSubmitted {
                name: "n".into(),
                digest: "d".into(),
                spec: "{}".into(),
            },
            EventKind::SlotClaimed => Event::SlotClaimed { slot },
            EventKind::RunStarted => Event::RunStarted {
                attempt: 1,
                slot,
                device: "cpu".into(),
            },
            EventKind::EpochCompleted => Event::EpochCompleted {
                epoch: 1,
                train_loss: 0.5,
                train_accuracy: 0.5,
                duration_ms: 1,
            },
            EventKind::RunCompleted => Event::RunCompleted {
                train_loss: 0.1,
                train_accuracy: 0.9,
            },
            EventKind::RunFailed => Event::RunFailed {
                reason: "boom".into(),
            },
            EventKind::CancelRequested => Event::CancelRequested,
            EventKind::RunCancelled => Event::RunCancelled {
                reason: "asked".into(),
            },
            EventKind::RunRequeued => Event::RunRequeued {
                reason: "restart".into(),
            },
            EventKind::SlotReleased => Event::SlotReleased { slot },
            EventKind::CheckpointSaved => Event::CheckpointSaved {
                path: "runs/x/checkpoints/ckpt.safetensors".into(),
                epoch: 1,
                batch: 0,
                step: 10,
                sha256: "00".repeat(32),
                bytes: 100,
            },
            EventKind::PauseRequested => Event::PauseRequested,
            EventKind::RunStalled => Event::RunStalled {
                idle_secs: 31.0,
                threshold_secs: 30.0,
            },
            EventKind::StallEnded => Event::StallEnded { idle_secs: 40.0 },
            EventKind::RunRetryScheduled => Event::RunRetryScheduled {
                reason: "boom".into(),
                retry: 1,
                delay_ms: 10,
            },
            EventKind::EpochEvaluated => Event::EpochEvaluated {
                epoch: 1,
                val_loss: 0.5,
                val_metric: 0.5,
            },
            EventKind::RunPaused => Event::RunPaused {
                reason: "asked".into(),
            },
            EventKind::RunResumed => Event::RunResumed,
            EventKind::ResumedFromCheckpoint => Event::ResumedFromCheckpoint {
                step: 10,
                path: "p".into(),
            },
            EventKind::ArtifactSaved => Event::ArtifactSaved {
                name: "final.safetensors".into(),
                path: "p".into(),
                sha256: "00".repeat(32),
                bytes: 1,
            },
            EventKind::JournalRepaired => Event::JournalRepaired {
                from_seq: 4,
                to_seq: 9,
                reason: "record 4 fails its checksum".into(),
                file: "journal-repairs/tail.jsonl".into(),
            },
            EventKind::ArtifactsDeleted => Event::ArtifactsDeleted {
                files: 2,
                bytes: 10,
            },
            EventKind::TraceAssigned => Event::TraceAssigned {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
                parent_span_id: None,
            },
            EventKind::CommandStarted => Event::CommandStarted {
                pid: 4242,
                pgid: 4242,
                start_ticks: 123_456,
            },
            EventKind::CommandExited => Event::CommandExited {
                status: "exit code 0".into(),
                exit_code: Some(0),
                signal: None,
                lines: 12,
                bad: vec![("not_json".into(), 1)],
                last_error: Some("line 3: not JSON".into()),
                metrics: vec![("lr".into(), 0.01)],
            },
            EventKind::SlurmJobSubmitted => Event::SlurmJobSubmitted {
                job_id: 41,
                job: 1,
                dir: "/shared/runyard/runs/x/job-1".into(),
            },
            EventKind::SlurmJobStarted => Event::SlurmJobStarted {
                job_id: 41,
                attempt: 1,
                node: "node1".into(),
                device: "cpu".into(),
            },
            EventKind::SlurmJobEnded => Event::SlurmJobEnded {
                job_id: 41,
                state: "COMPLETED".into(),
                reason: "None".into(),
            },
            EventKind::SlurmJobLost => Event::SlurmJobLost {
                job_id: 41,
                reason: "NODE_FAIL".into(),
                lost: 1,
                delay_ms: 1000,
            },
            EventKind::WorkerSynced => Event::WorkerSynced { through_seq: 9 },
            EventKind::RankStarted => Event::RankStarted {
                rank: 1,
                pid: 4243,
                pgid: 4243,
                start_ticks: 123_457,
            },
            EventKind::SweepSubmitted => Event::SweepSubmitted {
                name: "s".into(),
                digest: "ab".repeat(32),
                spec: "{}".into(),
            },
            EventKind::TrialCreated => Event::TrialCreated {
                trial: 0,
                run: RunId::SYSTEM,
                point: "{}".into(),
            },
            EventKind::TrialReachedRung => Event::TrialReachedRung {
                trial: 0,
                rung: 0,
                epochs: 1,
                metric: 0.5,
            },
            EventKind::TrialPromoted => Event::TrialPromoted { trial: 0, rung: 1 },
            EventKind::TrialStopped => Event::TrialStopped {
                trial: 0,
                reason: "r".into(),
            },
            EventKind::SweepCompleted => Event::SweepCompleted { best: None },
            EventKind::SweepCancelled => Event::SweepCancelled { reason: "r".into() },
            EventKind::SweepPaused => Event::SweepPaused,
            EventKind::SweepResumed => Event::SweepResumed,
        }
    }

    /// The full transition table: (from, event) -> to. Anything absent is refused.
    fn allowed() -> Vec<(Option<S>, EventKind, S)> {
        use EventKind as K;
        let mut table = vec![
            (None, K::RunSubmitted, S::Queued),
            (Some(S::Queued), K::SlotClaimed, S::Starting),
            (Some(S::Starting), K::SlotClaimed, S::Starting),
            (Some(S::Starting), K::RunStarted, S::Running),
            (Some(S::Running), K::ResumedFromCheckpoint, S::Running),
            (Some(S::Starting), K::RunRequeued, S::Queued),
            (Some(S::Running), K::RunRequeued, S::Queued),
            (Some(S::Starting), K::RunRetryScheduled, S::Queued),
            (Some(S::Running), K::RunRetryScheduled, S::Queued),
            (Some(S::Pausing), K::RunRetryScheduled, S::Queued),
            (Some(S::Running), K::PauseRequested, S::Pausing),
            (Some(S::Queued), K::RunPaused, S::Paused),
            (Some(S::Pausing), K::RunPaused, S::Paused),
            (Some(S::Running), K::RunPaused, S::Paused),
            (Some(S::Paused), K::RunResumed, S::Queued),
            (Some(S::Paused), K::RunCancelled, S::Cancelled),
        ];
        for s in [S::Running, S::Pausing] {
            table.push((Some(s), K::EpochCompleted, s));
            table.push((Some(s), K::EpochEvaluated, s));
            table.push((Some(s), K::RunStalled, s));
            table.push((Some(s), K::StallEnded, s));
            table.push((Some(s), K::CheckpointSaved, s));
            table.push((Some(s), K::ArtifactSaved, s));
            table.push((Some(s), K::CommandStarted, s));
            table.push((Some(s), K::RankStarted, s));
            table.push((Some(s), K::CommandExited, s));
            table.push((Some(s), K::RunCompleted, S::Completed));
        }
        for s in [S::Queued, S::Starting, S::Running, S::Pausing] {
            table.push((Some(s), K::RunFailed, S::Failed));
            table.push((Some(s), K::RunCancelled, S::Cancelled));
            table.push((Some(s), K::CancelRequested, s));
        }
        for s in S::ALL {
            table.push((Some(s), K::SlotReleased, s));
            table.push((Some(s), K::TraceAssigned, s));
        }
        for s in [S::Completed, S::Failed, S::Cancelled] {
            table.push((Some(s), K::ArtifactsDeleted, s));
        }
        table.push((Some(S::Queued), K::SlurmJobSubmitted, S::Queued));
        for s in [S::Queued, S::Running] {
            table.push((Some(s), K::SlurmJobStarted, S::Running));
            table.push((Some(s), K::SlurmJobLost, S::Queued));
        }
        for s in S::ALL {
            table.push((Some(s), K::SlurmJobEnded, s));
            table.push((Some(s), K::WorkerSynced, s));
        }
        table
    }

    #[test]
    fn every_transition_is_allowed_or_refused_as_the_table_says() {
        let table = allowed();
        let froms = std::iter::once(None).chain(S::ALL.into_iter().map(Some));
        let mut checked = 0;
        for from in froms {
            for kind in EventKind::ALL {
                let expected = table
                    .iter()
                    .find(|(f, k, _)| *f == from && *k == kind)
                    .map(|(_, _, to)| *to);
                assert_eq!(RunState::after(from, kind), expected, "{from:?} + {kind:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, (RunState::ALL.len() + 1) * EventKind::ALL.len());
    }

    fn append(state: &mut State, seq: &mut Seq, run: RunId, event: Event) -> Result<(), Rejection> {
        state.check(run, &event)?;
        *seq += 1;
        state.apply(*seq, &Envelope::now(run, event));
        Ok(())
    }

    /// The race a sweep's cancel hit: the attempt decided to pause, a client's cancel
    /// was journaled, then the pause came to be journaled. The cancel wins.
    #[test]
    fn given_a_cancel_journaled_while_pausing_when_the_pause_comes_then_it_is_refused_and_the_cancel_taken(
    ) {
        let (mut state, mut seq) = (State::default(), 0);
        let run = RunId::new();
        let slot = SlotId(0);
        for kind in [
            EventKind::RunSubmitted,
            EventKind::SlotClaimed,
            EventKind::RunStarted,
            EventKind::PauseRequested,
            EventKind::CancelRequested,
        ] {
            append(&mut state, &mut seq, run, event_of(kind, slot)).expect("allowed");
        }
        for late in [EventKind::RunPaused, EventKind::RunRequeued] {
            let refused = append(&mut state, &mut seq, run, event_of(late, slot));
            assert!(
                matches!(refused, Err(Rejection::Transition { .. })),
                "{late:?}"
            );
        }
        append(
            &mut state,
            &mut seq,
            run,
            event_of(EventKind::RunCancelled, slot),
        )
        .expect("the cancel");
        assert_eq!(state.run(run).expect("exists").state, S::Cancelled);
    }

    #[test]
    fn a_run_goes_through_its_lifecycle_and_frees_its_slot() {
        let (mut state, mut seq) = (State::default(), 0);
        let run = RunId::new();
        let slot = SlotId(0);
        for kind in [
            EventKind::RunSubmitted,
            EventKind::SlotClaimed,
            EventKind::RunStarted,
            EventKind::EpochCompleted,
            EventKind::RunCompleted,
            EventKind::SlotReleased,
        ] {
            append(&mut state, &mut seq, run, event_of(kind, slot)).expect("allowed");
        }
        let r = state.run(run).expect("exists");
        assert_eq!(r.state, S::Completed);
        assert_eq!(r.epochs.len(), 1);
        assert_eq!(r.slot, None);
        assert!(state.slots().holder(slot).is_none());
        assert_eq!(state.last_seq(), 6);
        // Terminal: nothing but a (refused, since not held) release is possible.
        let err = append(
            &mut state,
            &mut seq,
            run,
            event_of(EventKind::SlotClaimed, slot),
        );
        assert!(matches!(err, Err(Rejection::Transition { .. })));
    }

    #[test]
    fn duplicates_busy_slots_and_unknown_runs_are_refused() {
        let (mut state, mut seq) = (State::default(), 0);
        let (a, b) = (RunId::new(), RunId::new());
        let slot = SlotId(0);
        append(
            &mut state,
            &mut seq,
            a,
            event_of(EventKind::RunSubmitted, slot),
        )
        .expect("ok");
        assert_eq!(
            state.check_new_digest(&event_of(EventKind::RunSubmitted, slot)),
            Err(Rejection::Duplicate { existing: a })
        );
        let other = Event::RunSubmitted {
            name: "n".into(),
            digest: "other".into(),
            spec: "{}".into(),
        };
        append(&mut state, &mut seq, b, other).expect("other digest");
        append(&mut state, &mut seq, a, Event::SlotClaimed { slot }).expect("free");
        assert!(matches!(
            append(&mut state, &mut seq, b, Event::SlotClaimed { slot }),
            Err(Rejection::Ledger(LedgerError::Busy { .. }))
        ));
        assert!(matches!(
            append(&mut state, &mut seq, b, Event::SlotReleased { slot }),
            Err(Rejection::Ledger(LedgerError::NotHeld { .. }))
        ));
        let stranger = RunId::new();
        assert_eq!(
            state.check(stranger, &Event::CancelRequested),
            Err(Rejection::UnknownRun(stranger))
        );
    }

    #[test]
    fn a_rerun_of_a_digest_is_accepted_and_becomes_the_one_duplicates_find() {
        let (mut state, mut seq) = (State::default(), 0);
        let (first, rerun) = (RunId::new(), RunId::new());
        let submitted = event_of(EventKind::RunSubmitted, SlotId(0));
        append(&mut state, &mut seq, first, submitted.clone()).expect("first");
        // The fold accepts a second run of the digest; only the command refuses it.
        append(&mut state, &mut seq, rerun, submitted.clone()).expect("rerun");
        assert_eq!(
            state.check_new_digest(&submitted),
            Err(Rejection::Duplicate { existing: rerun })
        );
        assert_eq!(state.run_by_digest("d").map(|r| r.id), Some(rerun));
        let restored = State::from_snapshot(&state.to_snapshot()).expect("snapshot");
        assert_eq!(restored.run_by_digest("d").map(|r| r.id), Some(rerun));
        assert_eq!(restored.fingerprint(), state.fingerprint());
    }

    #[test]
    fn recovery_requeues_live_runs_and_repairs_the_ledger() {
        let (mut state, mut seq) = (State::default(), 0);
        let (live, done, pausing) = (RunId::new(), RunId::new(), RunId::new());
        let submit = |digest: &str| Event::RunSubmitted {
            name: "n".into(),
            digest: digest.into(),
            spec: "{}".into(),
        };
        for (run, digest, slot) in [(live, "a", 0), (done, "b", 1), (pausing, "c", 2)] {
            append(&mut state, &mut seq, run, submit(digest)).expect("submit");
            append(
                &mut state,
                &mut seq,
                run,
                Event::SlotClaimed { slot: SlotId(slot) },
            )
            .expect("claim");
            append(
                &mut state,
                &mut seq,
                run,
                event_of(EventKind::RunStarted, SlotId(slot)),
            )
            .expect("start");
        }
        append(&mut state, &mut seq, pausing, Event::PauseRequested).expect("pause");
        // A hand-edited or buggy journal: a completed run that never released its slot.
        append(
            &mut state,
            &mut seq,
            done,
            event_of(EventKind::RunCompleted, SlotId(1)),
        )
        .expect("done");

        let records = state.recovery();
        let expected = vec![
            (
                live,
                Event::RunRequeued {
                    reason: "server restarted while the run was live".into(),
                },
            ),
            (live, Event::SlotReleased { slot: SlotId(0) }),
            (
                pausing,
                Event::RunPaused {
                    reason: "paused by request (carried out after a server restart)".into(),
                },
            ),
            (pausing, Event::SlotReleased { slot: SlotId(2) }),
            (done, Event::SlotReleased { slot: SlotId(1) }),
        ];
        assert_eq!(records, expected);
        for (run, event) in records {
            append(&mut state, &mut seq, run, event).expect("recovery events are valid");
        }
        assert_eq!(state.slots().held().count(), 0);
        assert!(state.recovery().is_empty(), "recovery is idempotent");
    }

    #[test]
    fn a_command_process_is_known_from_its_start_to_its_exit_and_through_snapshots() {
        let (mut state, mut seq) = (State::default(), 0);
        let run = RunId::new();
        let slot = SlotId(0);
        for kind in [
            EventKind::RunSubmitted,
            EventKind::SlotClaimed,
            EventKind::RunStarted,
            EventKind::CommandStarted,
        ] {
            append(&mut state, &mut seq, run, event_of(kind, slot)).expect("allowed");
        }
        let process = CommandProcess {
            pid: 4242,
            pgid: 4242,
            start_ticks: 123_456,
            attempt: 1,
        };
        assert_eq!(state.run(run).expect("run").process, Some(process));
        let restored = State::from_snapshot(&state.to_snapshot()).expect("snapshot");
        assert_eq!(restored.run(run).expect("run").process, Some(process));

        append(
            &mut state,
            &mut seq,
            run,
            event_of(EventKind::CommandExited, slot),
        )
        .expect("allowed");
        let r = state.run(run).expect("run");
        assert_eq!(r.process, None);
        let report = r.protocol.clone().expect("journaled figures");
        assert_eq!(report.lines, 12);
        assert_eq!(report.bad.get("not_json"), Some(&1));
        assert_eq!(report.metrics.get("lr"), Some(&0.01));
        let restored = State::from_snapshot(&state.to_snapshot()).expect("snapshot");
        assert_eq!(restored.run(run).expect("run").protocol, Some(report));
        assert_eq!(restored.fingerprint(), state.fingerprint());
        // Ended: no `process` in the run's JSON; `protocol` is the API view's field.
        let json = serde_json::to_value(state.run(run).expect("run")).expect("json");
        assert!(json.get("protocol").is_none() && json.get("process").is_none());
    }

    #[test]
    fn a_state_with_figures_that_are_not_numbers_still_snapshots() {
        let (mut state, mut seq) = (State::default(), 0);
        let run = RunId::new();
        let slot = SlotId(0);
        for kind in [
            EventKind::RunSubmitted,
            EventKind::SlotClaimed,
            EventKind::RunStarted,
        ] {
            append(&mut state, &mut seq, run, event_of(kind, slot)).expect("allowed");
        }
        // A regression run has no accuracy.
        let epoch = Event::EpochCompleted {
            epoch: 1,
            train_loss: 0.5,
            train_accuracy: f64::NAN,
            duration_ms: 10,
        };
        append(&mut state, &mut seq, run, epoch).expect("allowed");
        let snapshot = state.to_snapshot();
        let restored = State::from_snapshot(&snapshot).expect("the snapshot decodes");
        assert_eq!(restored.fingerprint(), state.fingerprint());
        let epochs = &restored.run(run).expect("run").epochs;
        assert!(epochs[0].train_accuracy.is_nan() && epochs[0].train_loss == 0.5);
    }

    #[test]
    fn requeue_puts_a_live_run_at_the_back_of_the_queue() {
        let (mut state, mut seq) = (State::default(), 0);
        let (a, b) = (RunId::new(), RunId::new());
        let slot = SlotId(0);
        let submit = |digest: &str| Event::RunSubmitted {
            name: "n".into(),
            digest: digest.into(),
            spec: "{}".into(),
        };
        append(&mut state, &mut seq, a, submit("a")).expect("ok");
        append(&mut state, &mut seq, b, submit("b")).expect("ok");
        append(&mut state, &mut seq, a, Event::SlotClaimed { slot }).expect("ok");
        assert_eq!(state.queue(), vec![b]);
        append(
            &mut state,
            &mut seq,
            a,
            event_of(EventKind::RunRequeued, slot),
        )
        .expect("ok");
        append(&mut state, &mut seq, a, Event::SlotReleased { slot }).expect("ok");
        assert_eq!(state.queue(), vec![b, a]);
        assert!(state.slots().holder(slot).is_none());
    }
    #[test]
    fn the_queue_serves_higher_priority_first_and_knows_each_place() {
        let (mut state, mut seq) = (State::default(), 0);
        let (a, b, c) = (RunId::new(), RunId::new(), RunId::new());
        let submit = |digest: &str, priority: i32| Event::RunSubmitted {
            name: "n".into(),
            digest: digest.into(),
            spec: format!("{{\"priority\": {priority}}}"),
        };
        append(&mut state, &mut seq, a, submit("a", 0)).expect("ok");
        append(&mut state, &mut seq, b, submit("b", 5)).expect("ok");
        append(&mut state, &mut seq, c, submit("c", 0)).expect("ok");
        assert_eq!(state.queue(), vec![b, a, c]);
        let places: Vec<_> = [a, b, c].map(|id| state.queue_position(id)).into();
        assert_eq!(places, vec![Some(2), Some(1), Some(3)]);

        let cancel = Event::RunCancelled {
            reason: "test".into(),
        };
        append(&mut state, &mut seq, b, cancel).expect("ok");
        assert_eq!(state.queue(), vec![a, c]);
        assert_eq!(state.queue_position(b), None);
        assert_eq!(state.queue_position(c), Some(2));

        // A snapshot restores the same queue.
        let restored = State::from_snapshot(&state.to_snapshot()).expect("snapshot");
        assert_eq!(restored.queue(), vec![a, c]);
        assert_eq!(restored.queue_position(a), Some(1));
    }
}
