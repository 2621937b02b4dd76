//! The Slurm side's decisions, as pure functions of the run and what was seen: what
//! a worker's fact means on the server ([`map_fact`]), and how a run goes on when
//! its job ended without the worker saying so ([`job_end`]). The actors in
//! `actors::slurm` only gather the facts and journal the answers.

use std::time::Duration;

use super::{Event, Run, RunState};

/// Longest wait before a lost job's run gets a new job.
pub const MAX_LOST_DELAY: Duration = Duration::from_secs(300);

/// Where a fact came from: what the server's event about it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactSource {
    /// The Slurm job whose worker journaled it.
    pub job_id: u64,
    /// The node the worker runs on.
    pub node: String,
    /// The worker's data directory, which the paths in its facts are relative to.
    pub worker_dir: std::path::PathBuf,
}

/// What a worker's fact becomes on the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// This event, journaled on the server.
    Journal(Event),
    /// Nothing: the worker's own bookkeeping (its queue, its slot, its process
    /// group), or a pause whose meaning is decided when the job has ended.
    WorkerOwn,
    /// A fact a worker never journals about its run (the server's own Slurm events,
    /// a repair of the worker's journal): the run cannot be followed faithfully.
    Unexpected(String),
}

/// The server's reading of a worker's fact `event`, given the run as the server
/// knows it, and whether it is a sweep trial whose epochs (with the facts before this
/// one) reached the end of its rung (`at_rung_end`: a pause there is the trial's own,
/// as a local trial's is). Every event kind is named here: a new one does not compile
/// until it is given a meaning.
pub fn map_fact(source: &FactSource, run: &Run, event: &Event, at_rung_end: bool) -> Mapped {
    let absolute = |path: &str| source.worker_dir.join(path).display().to_string();
    let unexpected = |what: &str| {
        Mapped::Unexpected(format!(
            "the worker of Slurm job {} journaled {} ({what})",
            source.job_id,
            event.kind().name()
        ))
    };
    match event {
        Event::RunStarted {
            attempt, device, ..
        } => Mapped::Journal(Event::SlurmJobStarted {
            job_id: source.job_id,
            attempt: *attempt,
            node: source.node.clone(),
            device: device.clone(),
        }),
        Event::CheckpointSaved {
            path,
            epoch,
            batch,
            step,
            sha256,
            bytes,
        } => Mapped::Journal(Event::CheckpointSaved {
            path: absolute(path),
            epoch: *epoch,
            batch: *batch,
            step: *step,
            sha256: sha256.clone(),
            bytes: *bytes,
        }),
        Event::ArtifactSaved {
            name,
            path,
            sha256,
            bytes,
        } => Mapped::Journal(Event::ArtifactSaved {
            name: name.clone(),
            path: absolute(path),
            sha256: sha256.clone(),
            bytes: *bytes,
        }),
        Event::ResumedFromCheckpoint { step, path } => {
            Mapped::Journal(Event::ResumedFromCheckpoint {
                step: *step,
                path: absolute(path),
            })
        }
        Event::EpochCompleted { .. }
        | Event::EpochEvaluated { .. }
        | Event::RunStalled { .. }
        | Event::StallEnded { .. }
        | Event::CommandExited { .. }
        | Event::RunCompleted { .. }
        | Event::RunFailed { .. }
        | Event::RunCancelled { .. }
        | Event::RunRetryScheduled { .. } => Mapped::Journal(event.clone()),
        // The worker stops on SIGTERM with a checkpoint: the server asked for a
        // cancel or a pause, or Slurm ended the job (decided by `job_end`); or a sweep
        // trial paused at its rung's end.
        Event::RunPaused { reason } if run.cancel_requested => {
            Mapped::Journal(Event::RunCancelled {
                reason: format!("cancelled by request ({reason})"),
            })
        }
        Event::RunPaused { reason } if run.state == RunState::Pausing || at_rung_end => {
            Mapped::Journal(Event::RunPaused {
                reason: reason.clone(),
            })
        }
        Event::RunPaused { .. } => Mapped::WorkerOwn,
        // The worker's own queue, slot and requests: the server has its own.
        Event::RunSubmitted { .. }
        | Event::SlotClaimed { .. }
        | Event::SlotReleased { .. }
        | Event::RunRequeued { .. }
        | Event::CancelRequested
        | Event::PauseRequested
        | Event::RunResumed
        | Event::TraceAssigned { .. }
        // Process groups on the worker's node, not ones the server may signal.
        | Event::CommandStarted { .. }
        | Event::RankStarted { .. } => Mapped::WorkerOwn,
        Event::JournalRepaired { .. } => unexpected("its journal lost records"),
        Event::SweepSubmitted { .. }
        | Event::TrialCreated { .. }
        | Event::TrialReachedRung { .. }
        | Event::TrialPromoted { .. }
        | Event::TrialStopped { .. }
        | Event::SweepCompleted { .. }
        | Event::SweepCancelled { .. }
        | Event::SweepPaused
        | Event::SweepResumed => unexpected("a worker runs no sweep"),
        Event::ArtifactsDeleted { .. } => unexpected("only the server deletes a run's files"),
        Event::SlurmJobSubmitted { .. }
        | Event::SlurmJobStarted { .. }
        | Event::SlurmJobEnded { .. }
        | Event::SlurmJobLost { .. }
        | Event::WorkerSynced { .. } => unexpected("the server's own Slurm bookkeeping"),
    }
}

/// Whether a sweep trial's epochs have reached the end of its rung, as its worker's
/// facts come in: what [`map_fact`]'s `at_rung_end` is for each fact of a batch.
#[derive(Debug, Clone, Copy)]
pub struct RungWatch {
    /// The rung's end in epochs (`None`: not a trial, or at its top rung).
    end: Option<u32>,
    /// Epochs done, as far as the facts seen so far say.
    epochs: u32,
}

impl RungWatch {
    /// A watch over `run`, a trial whose rung ends after `end` epochs (if it is one).
    pub fn new(run: &Run, end: Option<u32>) -> Self {
        let epochs = run.epochs.last().map_or(0, |e| e.epoch);
        Self { end, epochs }
    }

    /// Takes the next fact in; answers whether the rung has ended with it.
    pub fn see(&mut self, event: &Event) -> bool {
        if let Event::EpochCompleted { epoch, .. } = event {
            self.epochs = self.epochs.max(*epoch);
        }
        self.end.is_some_and(|end| self.epochs >= end)
    }
}

/// Whether Slurm's end state for a job says the cluster lost it (not the run's code).
pub fn lost_to_the_cluster(slurm_state: &str) -> bool {
    matches!(slurm_state, "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL")
}

/// How long the `lost`-th lost job of a run waits before the next: doubling from
/// 2 s up to 256 s (the doubling stops at the eighth; [`MAX_LOST_DELAY`] caps it
/// too).
pub fn lost_delay(lost: u32) -> Duration {
    Duration::from_secs(1 << lost.min(8)).min(MAX_LOST_DELAY)
}

/// How a run goes on after its job `job_id` ended in `slurm_state` without the
/// worker ending or pausing the run (`None`: it had, nothing to add). `last_output`
/// is the job's last line of output, for the failure's reason.
pub fn job_end(
    run: &Run,
    job_id: u64,
    slurm_state: &str,
    last_output: Option<&str>,
    max_lost: u32,
) -> Option<Event> {
    if run.state.is_terminal() || run.state == RunState::Paused {
        return None;
    }
    if run.cancel_requested {
        return Some(Event::RunCancelled {
            reason: format!("cancelled by request (Slurm job {job_id} ended {slurm_state})"),
        });
    }
    if run.state == RunState::Pausing {
        return Some(Event::RunPaused {
            reason: format!("paused by request (Slurm job {job_id} ended {slurm_state})"),
        });
    }
    if lost_to_the_cluster(slurm_state) {
        let lost = run.slurm.as_ref().map_or(0, |j| j.lost) + 1;
        if lost <= max_lost {
            return Some(Event::SlurmJobLost {
                job_id,
                reason: slurm_state.to_string(),
                lost,
                delay_ms: lost_delay(lost).as_millis() as u64,
            });
        }
        return Some(Event::RunFailed {
            reason: format!(
                "the cluster lost {lost} Slurm jobs of this run (the last {slurm_state}); executors.slurm.max_lost is {max_lost}"
            ),
        });
    }
    let last_line = last_output
        .map(|line| {
            format!(
                "; its last output: {}",
                line.chars().take(300).collect::<String>()
            )
        })
        .unwrap_or_default();
    Some(Event::RunFailed {
        reason: format!(
            "Slurm job {job_id} ended {slurm_state} before the run finished{last_line}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Envelope, RunId, State};

    /// A run submitted to Slurm, its first job started and training.
    fn a_slurm_run() -> (State, RunId) {
        let id = RunId::new();
        let mut state = State::default();
        let events = [
            Event::RunSubmitted {
                name: "s".into(),
                digest: "d".into(),
                spec: "{}".into(),
            },
            Event::SlurmJobSubmitted {
                job_id: 7,
                job: 1,
                dir: format!("/shared/runs/{id}/job-1"),
            },
            Event::SlurmJobStarted {
                job_id: 7,
                attempt: 1,
                node: "n1".into(),
                device: "cpu".into(),
            },
        ];
        for (seq, event) in events.into_iter().enumerate() {
            state.apply(seq as u64 + 1, &Envelope::now(id, event));
        }
        (state, id)
    }

    fn then(state: &mut State, id: RunId, event: Event) {
        let seq = state.last_seq() + 1;
        state.apply(seq, &Envelope::now(id, event));
    }

    fn source() -> FactSource {
        FactSource {
            job_id: 7,
            node: "n1".into(),
            worker_dir: "/shared/runs/r/worker".into(),
        }
    }

    #[test]
    fn given_a_worker_checkpoint_when_mapped_then_its_path_is_made_absolute() {
        let (state, id) = a_slurm_run();
        let fact = Event::CheckpointSaved {
            path: "runs/r/checkpoints/step-20.safetensors".into(),
            epoch: 1,
            batch: 20,
            step: 20,
            sha256: "ab".into(),
            bytes: 3,
        };
        let Mapped::Journal(Event::CheckpointSaved { path, step, .. }) =
            map_fact(&source(), state.run(id).expect("run"), &fact, false)
        else {
            panic!("a checkpoint is journaled");
        };
        assert_eq!(
            (path.as_str(), step),
            (
                "/shared/runs/r/worker/runs/r/checkpoints/step-20.safetensors",
                20
            )
        );
    }

    #[test]
    fn given_a_worker_start_when_mapped_then_the_server_journals_the_job_started_on_its_node() {
        let (state, id) = a_slurm_run();
        let fact = Event::RunStarted {
            attempt: 1,
            slot: crate::domain::SlotId(0),
            device: "cpu".into(),
        };
        assert_eq!(
            map_fact(&source(), state.run(id).expect("run"), &fact, false),
            Mapped::Journal(Event::SlurmJobStarted {
                job_id: 7,
                attempt: 1,
                node: "n1".into(),
                device: "cpu".into(),
            })
        );
    }

    #[test]
    fn given_a_pause_on_the_worker_when_the_server_asked_for_a_cancel_then_the_run_is_cancelled() {
        let (mut state, id) = a_slurm_run();
        let fact = Event::RunPaused {
            reason: "SIGTERM".into(),
        };
        // Nobody asked: the job's end decides.
        assert_eq!(
            map_fact(&source(), state.run(id).expect("run"), &fact, false),
            Mapped::WorkerOwn
        );
        then(&mut state, id, Event::CancelRequested);
        assert!(matches!(
            map_fact(&source(), state.run(id).expect("run"), &fact, false),
            Mapped::Journal(Event::RunCancelled { reason }) if reason.contains("SIGTERM")
        ));
    }

    #[test]
    fn given_a_sweep_trial_at_its_rung_end_when_its_worker_pauses_then_the_server_journals_the_pause(
    ) {
        let (mut state, id) = a_slurm_run();
        let fact = Event::RunPaused {
            reason: "paused at the end of its sweep rung (1 epochs)".into(),
        };
        // Its rung reached: the trial's own pause, journaled as a local trial's.
        assert_eq!(
            map_fact(&source(), state.run(id).expect("run"), &fact, true),
            Mapped::Journal(fact.clone())
        );
        // Short of it, a pause nobody asked for is still the job end's to decide.
        assert_eq!(
            map_fact(&source(), state.run(id).expect("run"), &fact, false),
            Mapped::WorkerOwn
        );
        // A cancel asked for meanwhile wins.
        then(&mut state, id, Event::CancelRequested);
        assert!(matches!(
            map_fact(&source(), state.run(id).expect("run"), &fact, true),
            Mapped::Journal(Event::RunCancelled { .. })
        ));
    }

    #[test]
    fn given_a_trials_facts_when_its_last_epoch_of_the_rung_comes_in_then_the_rung_has_ended() {
        let (state, id) = a_slurm_run();
        let run = state.run(id).expect("run");
        let epoch = |epoch| Event::EpochCompleted {
            epoch,
            train_loss: 0.5,
            train_accuracy: 0.5,
            duration_ms: 1,
        };
        let paused = Event::RunPaused {
            reason: "paused at the end of its sweep rung (2 epochs)".into(),
        };
        // A rung of 2 epochs ends within the batch, with its second epoch.
        let mut watch = RungWatch::new(run, Some(2));
        let seen: Vec<bool> = [
            epoch(1),
            Event::StallEnded { idle_secs: 1.0 },
            epoch(2),
            paused.clone(),
        ]
        .iter()
        .map(|fact| watch.see(fact))
        .collect();
        assert_eq!(seen, [false, false, true, true]);
        // Not a trial (or at its top rung): never.
        let mut watch = RungWatch::new(run, None);
        assert!(!watch.see(&epoch(5)) && !watch.see(&paused));
    }

    #[test]
    fn given_the_workers_own_bookkeeping_when_mapped_then_nothing_is_journaled() {
        let (state, id) = a_slurm_run();
        let run = state.run(id).expect("run");
        for fact in [
            Event::SlotClaimed {
                slot: crate::domain::SlotId(0),
            },
            Event::CancelRequested,
            Event::RunResumed,
        ] {
            assert_eq!(
                map_fact(&source(), run, &fact, false),
                Mapped::WorkerOwn,
                "{fact:?}"
            );
        }
    }

    #[test]
    fn given_a_fact_no_worker_journals_when_mapped_then_it_is_an_error_naming_it() {
        let (state, id) = a_slurm_run();
        let fact = Event::WorkerSynced { through_seq: 3 };
        let Mapped::Unexpected(reason) =
            map_fact(&source(), state.run(id).expect("run"), &fact, false)
        else {
            panic!("not silence");
        };
        assert!(
            reason.contains("WorkerSynced") && reason.contains("job 7"),
            "{reason}"
        );
    }

    #[test]
    fn given_a_job_that_ended_with_the_run_live_when_it_failed_then_the_run_fails_with_its_last_output(
    ) {
        let (state, id) = a_slurm_run();
        let end = job_end(
            state.run(id).expect("run"),
            7,
            "FAILED",
            Some("Traceback"),
            3,
        );
        assert!(matches!(
            end,
            Some(Event::RunFailed { reason }) if reason.contains("job 7 ended FAILED") && reason.contains("Traceback")
        ));
    }

    #[test]
    fn given_a_job_the_cluster_lost_when_it_ended_then_the_run_waits_longer_each_time_up_to_max_lost(
    ) {
        let (mut state, id) = a_slurm_run();
        let first = job_end(state.run(id).expect("run"), 7, "NODE_FAIL", None, 2);
        assert_eq!(
            first,
            Some(Event::SlurmJobLost {
                job_id: 7,
                reason: "NODE_FAIL".into(),
                lost: 1,
                delay_ms: 2_000,
            })
        );
        then(&mut state, id, first.expect("lost"));
        then(
            &mut state,
            id,
            Event::SlurmJobSubmitted {
                job_id: 8,
                job: 2,
                dir: format!("/shared/runs/{id}/job-2"),
            },
        );
        let second = job_end(state.run(id).expect("run"), 8, "PREEMPTED", None, 2);
        assert!(matches!(
            second,
            Some(Event::SlurmJobLost {
                lost: 2,
                delay_ms: 4_000,
                ..
            })
        ));
        then(&mut state, id, second.expect("lost"));
        let third = job_end(state.run(id).expect("run"), 9, "BOOT_FAIL", None, 2);
        assert!(matches!(
            third,
            Some(Event::RunFailed { reason }) if reason.contains("lost 3") && reason.contains("max_lost is 2")
        ));
        assert_eq!(lost_delay(30), Duration::from_secs(256));
    }

    #[test]
    fn given_a_requested_pause_or_cancel_when_the_job_ended_then_the_request_decides() {
        let (mut state, id) = a_slurm_run();
        then(&mut state, id, Event::PauseRequested);
        assert_eq!(state.run(id).expect("run").state, RunState::Pausing);
        assert!(matches!(
            job_end(state.run(id).expect("run"), 7, "CANCELLED", None, 3),
            Some(Event::RunPaused { reason }) if reason.contains("paused by request")
        ));
        then(&mut state, id, Event::CancelRequested);
        assert!(matches!(
            job_end(state.run(id).expect("run"), 7, "CANCELLED", None, 3),
            Some(Event::RunCancelled { .. })
        ));
    }
}
