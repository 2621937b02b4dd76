//! The sweep aggregate: a sweep as its events say ([`Sweep`]), what each sweep event
//! may do ([`Sweep::check`]) and changes ([`Sweep::apply`]), and what the sweep does
//! next (its plan, `State::sweep_plan`): the searcher's decisions turned into the
//! events that carry them out, a pure function of the sweep's spec and the journaled
//! state, so a restarted server decides exactly what the stopped one would have.
//!
//! A trial is an ordinary run. The sweep keeps, for each, its number, its run, its
//! point, where it stands in the searcher's eyes ([`TrialStatus`]) and its metric at
//! the end of each rung it finished. Its run's ending is folded in here too: a run
//! that fails, or is cancelled by anyone but the sweep, takes its trial out.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::run::{Run, RunState};
use crate::domain::event::Event;
use crate::domain::ids::{RunId, Seq};
use crate::domain::sweep::{decide, CheckedSweep, Decision, SweepSpec, Trial, TrialStatus};

/// Where a sweep is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SweepState {
    /// Deciding: trials are made, trained, promoted and stopped.
    Running,
    /// Paused by a client: nothing is decided and its trials are paused.
    Paused,
    /// Every trial trained, stopped or failed; the best is known.
    Completed,
    /// Cancelled by a client (or for a trial that could not be made): no more trials.
    Cancelled,
}

impl SweepState {
    /// The name used in the API, e.g. `running`.
    pub fn name(self) -> &'static str {
        match self {
            SweepState::Running => "running",
            SweepState::Paused => "paused",
            SweepState::Completed => "completed",
            SweepState::Cancelled => "cancelled",
        }
    }

    /// Whether the sweep may still make or change trials.
    pub fn is_live(self) -> bool {
        matches!(self, SweepState::Running | SweepState::Paused)
    }
}

/// One trial of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrialRecord {
    /// Its number in the sweep, from 0.
    pub number: u32,
    /// Its run.
    pub run_id: RunId,
    /// Its values, by field path of the base spec.
    #[schema(value_type = Object)]
    pub point: Value,
    /// Where it stands: `training` (towards the end of `rung`), `waiting` (paused at
    /// the end of `rung`), `finished`, `stopped` (by the sweep) or `failed`.
    #[serde(flatten)]
    pub status: TrialStatus,
    /// Its metric at the end of each rung it finished, rung 0 first (`null`: the run
    /// reported none).
    pub results: Vec<Option<f64>>,
}

impl TrialRecord {
    /// The trial as the searcher sees it.
    fn as_trial(&self) -> Trial {
        Trial {
            number: self.number,
            status: self.status,
            results: self.results.iter().map(|r| r.unwrap_or(f64::NAN)).collect(),
        }
    }

    /// Its newest result.
    pub fn metric(&self) -> Option<f64> {
        self.results.last().copied().flatten()
    }
}

/// One rung a trial finished, in the order the sweep learnt of them: what a
/// best-so-far curve is drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RungResult {
    /// The trial.
    pub trial: u32,
    /// The rung it finished.
    pub rung: u32,
    /// Epochs it had trained.
    pub epochs: u32,
    /// Its metric there (`null`: none reported).
    pub metric: Option<f64>,
    /// When the result was journaled.
    pub at: DateTime<Utc>,
}

/// Everything known about one sweep, derived from its events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sweep {
    /// The sweep's id.
    pub id: RunId,
    /// Its name.
    pub name: String,
    /// Hex SHA-256 of its canonical spec.
    pub digest: String,
    /// Lifecycle state.
    pub state: SweepState,
    /// The spec as submitted.
    pub spec: SweepSpec,
    /// Its trials, by number.
    pub trials: Vec<TrialRecord>,
    /// The best trial so far: the best result of the highest rung any trial reached
    /// (once completed, the sweep's answer).
    pub best: Option<u32>,
    /// Every rung result, in journal order.
    #[serde(default)]
    pub results: Vec<RungResult>,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When its last event was recorded.
    pub updated_at: DateTime<Utc>,
    /// Sequence number of its `SweepSubmitted`.
    #[schema(value_type = u64)]
    pub seq: Seq,
    /// Sequence number of its last event.
    #[schema(value_type = u64)]
    pub last_seq: Seq,
    /// The spec's checks passed: the space, the schedule and the base with its
    /// defaults. `None` only for a spec a later build no longer takes (the sweep
    /// then decides nothing).
    #[serde(skip)]
    checked: Option<Arc<CheckedSweep>>,
}

impl Sweep {
    /// The sweep a `SweepSubmitted` makes.
    pub(super) fn submitted(
        id: RunId,
        name: &str,
        digest: &str,
        spec: &str,
        seq: Seq,
        at: DateTime<Utc>,
    ) -> Option<Self> {
        let spec: SweepSpec = serde_json::from_str(spec).ok()?;
        let mut sweep = Self {
            id,
            name: name.to_string(),
            digest: digest.to_string(),
            state: SweepState::Running,
            spec,
            trials: Vec::new(),
            best: None,
            results: Vec::new(),
            reason: None,
            created_at: at,
            updated_at: at,
            seq,
            last_seq: seq,
            checked: None,
        };
        sweep.recheck();
        Some(sweep)
    }

    /// Derives what the spec's checks give (after a snapshot, which does not hold it).
    pub(super) fn recheck(&mut self) {
        self.checked = self.spec.check().ok().map(Arc::new);
    }

    /// The checked spec: space, schedule, metric and base.
    pub fn checked(&self) -> Option<&CheckedSweep> {
        self.checked.as_deref()
    }

    /// Trial `number`.
    pub fn trial(&self, number: u32) -> Option<&TrialRecord> {
        self.trials.get(number as usize)
    }

    /// The epochs after which trial `number`'s run is to pause: the end of the rung
    /// it trains towards, unless that is the top rung (or the sweep is over).
    pub fn rung_end(&self, number: u32) -> Option<u32> {
        let checked = self.checked()?;
        match self.trial(number)?.status {
            TrialStatus::Training { rung } if rung < checked.schedule.top() => {
                Some(checked.schedule.epochs(rung))
            }
            _ => None,
        }
    }

    /// Trials by status name (`training`, `waiting`, ...), every name present.
    pub fn counts(&self) -> [(&'static str, usize); 5] {
        let mut counts = [
            ("training", 0),
            ("waiting", 0),
            ("finished", 0),
            ("stopped", 0),
            ("failed", 0),
        ];
        for trial in &self.trials {
            let i = match trial.status {
                TrialStatus::Training { .. } => 0,
                TrialStatus::Waiting { .. } => 1,
                TrialStatus::Finished => 2,
                TrialStatus::Stopped => 3,
                TrialStatus::Failed => 4,
            };
            counts[i].1 += 1;
        }
        counts
    }

    fn searcher_trials(&self) -> Vec<Trial> {
        self.trials.iter().map(TrialRecord::as_trial).collect()
    }

    fn refresh_best(&mut self) {
        if let Some(checked) = self.checked() {
            self.best = crate::domain::sweep::searcher::best(
                checked.schedule.mode,
                &self.searcher_trials(),
            );
        }
    }

    /// Whether the sweep event `event` may be appended now: `Err` says why not.
    pub(super) fn check(&self, event: &Event) -> Result<(), String> {
        let state = self.state;
        let live_trial = |number: u32| -> Result<&TrialRecord, String> {
            self.trial(number)
                .ok_or_else(|| format!("sweep {} has no trial {number}", self.id))
        };
        match event {
            Event::SweepSubmitted { .. } => Err(format!("sweep {} already exists", self.id)),
            Event::TrialCreated { trial, .. } => {
                if state != SweepState::Running {
                    return Err(format!("sweep {} is {}", self.id, state.name()));
                }
                let next = self.trials.len() as u32;
                if *trial != next {
                    return Err(format!("sweep {}'s next trial is {next}", self.id));
                }
                Ok(())
            }
            Event::TrialReachedRung { trial, rung, .. } => {
                let t = live_trial(*trial)?;
                let open = matches!(
                    t.status,
                    TrialStatus::Training { .. } | TrialStatus::Waiting { .. }
                );
                if !open || t.results.len() != *rung as usize {
                    return Err(format!(
                        "trial {trial} of sweep {} has no rung {rung} to finish",
                        self.id
                    ));
                }
                Ok(())
            }
            Event::TrialPromoted { trial, rung } => {
                let t = live_trial(*trial)?;
                if state != SweepState::Running
                    || *rung == 0
                    || t.status != (TrialStatus::Waiting { rung: rung - 1 })
                {
                    return Err(format!(
                        "trial {trial} of sweep {} cannot be promoted to rung {rung}",
                        self.id
                    ));
                }
                Ok(())
            }
            Event::TrialStopped { trial, .. } => {
                let t = live_trial(*trial)?;
                if !matches!(t.status, TrialStatus::Waiting { .. }) {
                    return Err(format!(
                        "trial {trial} of sweep {} is not waiting at a rung",
                        self.id
                    ));
                }
                Ok(())
            }
            Event::SweepCompleted { .. } if state == SweepState::Running => Ok(()),
            Event::SweepCancelled { .. } if state.is_live() => Ok(()),
            Event::SweepPaused if state == SweepState::Running => Ok(()),
            Event::SweepResumed if state == SweepState::Paused => Ok(()),
            _ => Err(format!(
                "sweep {} is {}; {} is not allowed",
                self.id,
                state.name(),
                event.kind().name()
            )),
        }
    }

    /// Folds a sweep event in (one [`Sweep::check`] allowed; a refused one changes
    /// as little as it can).
    pub(super) fn apply(&mut self, seq: Seq, at: DateTime<Utc>, event: &Event) {
        self.updated_at = at;
        self.last_seq = seq;
        let top = self.checked().map_or(0, |c| c.schedule.top());
        match event {
            Event::TrialCreated { trial, run, point } if *trial as usize == self.trials.len() => {
                self.trials.push(TrialRecord {
                    number: *trial,
                    run_id: *run,
                    point: serde_json::from_str(point).unwrap_or(Value::Null),
                    status: TrialStatus::Training { rung: 0 },
                    results: Vec::new(),
                });
            }
            Event::TrialReachedRung {
                trial,
                rung,
                epochs,
                metric,
            } => {
                let metric = metric.is_finite().then_some(*metric);
                if let Some(t) = self.trials.get_mut(*trial as usize) {
                    if t.results.len() == *rung as usize {
                        self.results.push(RungResult {
                            trial: *trial,
                            rung: *rung,
                            epochs: *epochs,
                            metric,
                            at,
                        });
                        t.results.push(metric);
                        t.status = if *rung >= top {
                            TrialStatus::Finished
                        } else {
                            TrialStatus::Waiting { rung: *rung }
                        };
                    }
                }
                self.refresh_best();
            }
            Event::TrialPromoted { trial, rung } => {
                if let Some(t) = self.trials.get_mut(*trial as usize) {
                    t.status = TrialStatus::Training { rung: *rung };
                }
            }
            Event::TrialStopped { trial, .. } => {
                if let Some(t) = self.trials.get_mut(*trial as usize) {
                    t.status = TrialStatus::Stopped;
                }
            }
            Event::SweepCompleted { best } => {
                self.state = SweepState::Completed;
                self.best = *best;
            }
            Event::SweepCancelled { reason } => {
                self.state = SweepState::Cancelled;
                self.reason = Some(reason.clone());
            }
            Event::SweepPaused => self.state = SweepState::Paused,
            Event::SweepResumed => self.state = SweepState::Running,
            _ => {}
        }
    }

    /// Folds in how trial `number`'s run ended, when it failed or was cancelled by
    /// anyone but the sweep (whose `TrialStopped` comes first).
    pub(super) fn trial_run_ended(&mut self, number: u32, event: &Event) {
        let Some(t) = self.trials.get_mut(number as usize) else {
            return;
        };
        let open = matches!(
            t.status,
            TrialStatus::Training { .. } | TrialStatus::Waiting { .. }
        );
        if open && matches!(event, Event::RunFailed { .. } | Event::RunCancelled { .. }) {
            t.status = TrialStatus::Failed;
        }
    }
}

/// The metric `metric` of `run` once it has trained `epochs` epochs: from that
/// epoch's summary (`val_accuracy` and `val_mae` are its validation metric,
/// `val_loss` and `train_loss` its losses, `train_accuracy` its training accuracy),
/// or else, for a metric a command reports by name, its newest value.
pub fn metric_of(run: &Run, metric: &str, epochs: u32) -> f64 {
    let summary = run.epochs.iter().rev().find(|e| e.epoch == epochs);
    let from_summary = summary.and_then(|e| match metric {
        "val_accuracy" | "val_mae" | "val_metric" => e.val_metric,
        "val_loss" => e.val_loss,
        "train_loss" | "loss" => Some(e.train_loss),
        "train_accuracy" | "accuracy" => Some(e.train_accuracy),
        _ => None,
    });
    from_summary
        .or_else(|| run.protocol.as_ref()?.metrics.get(metric).copied())
        .unwrap_or(f64::NAN)
}

/// The epochs `run` has finished.
fn epochs_done(run: &Run) -> u32 {
    run.epochs.last().map_or(0, |e| e.epoch)
}

/// What a sweep does next: events to journal in one append, then the runs to hand
/// to their executor (made or resumed by those events).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepPlan {
    /// `(id, event)` pairs, in order: sweep events under the sweep's id, run events
    /// under the trial's run.
    pub records: Vec<(RunId, Event)>,
    /// Runs queued by `records`, to launch once they are durable.
    pub launch: Vec<RunId>,
}

impl Sweep {
    /// What the sweep does next, if anything, with `run` the state's runs: the rungs
    /// its trials' runs have finished; else the searcher's decisions (new trials, with
    /// ids from `new_run`; promotions; at the end, stops and completion). `None` when
    /// there is nothing to do, or the sweep is not running.
    pub(super) fn plan<'a>(
        &self,
        run_of: impl Fn(RunId) -> Option<&'a Run>,
        new_run: &mut dyn FnMut() -> RunId,
    ) -> Option<SweepPlan> {
        let sweep = self;
        let id = self.id;
        let checked = sweep.checked()?;
        if sweep.state != SweepState::Running {
            return None;
        }
        let schedule = &checked.schedule;
        let mut plan = SweepPlan::default();
        // Rungs finished: a trial's run paused at (or past) its rung's end, or done.
        for trial in &sweep.trials {
            let TrialStatus::Training { rung } = trial.status else {
                continue;
            };
            let Some(run) = run_of(trial.run_id) else {
                continue;
            };
            let done = epochs_done(run);
            // A run that trained past its rung's end (a command that went on) finished
            // every rung up to where it stopped; a completed one, all of them.
            let last = match run.state {
                RunState::Completed => schedule.top(),
                RunState::Paused if done >= schedule.epochs(rung) => (rung..=schedule.top())
                    .rev()
                    .find(|r| schedule.epochs(*r) <= done)
                    .unwrap_or(rung),
                _ => continue,
            };
            for r in rung..=last {
                // The top rung's result is the trial's at its end (a command counts its
                // own epochs, whatever the schedule says).
                let epochs = if r == schedule.top() && done > 0 {
                    done
                } else {
                    schedule.epochs(r)
                };
                plan.records.push((
                    id,
                    Event::TrialReachedRung {
                        trial: trial.number,
                        rung: r,
                        epochs,
                        metric: metric_of(run, &checked.metric, epochs),
                    },
                ));
            }
        }
        if !plan.records.is_empty() {
            return Some(plan);
        }
        let trials = sweep.searcher_trials();
        for decision in decide(schedule, &trials) {
            match decision {
                Decision::Create { trial } => {
                    match checked.trial_spec(&sweep.spec, &id.to_string(), trial) {
                        Ok(spec) => {
                            let run_id = new_run();
                            let point = checked.space.point(sweep.spec.seed, trial);
                            plan.records.push((
                                run_id,
                                Event::RunSubmitted {
                                    name: spec.name.clone(),
                                    digest: spec.digest(),
                                    spec: spec.canonical_json(),
                                },
                            ));
                            plan.records.push((
                                id,
                                Event::TrialCreated {
                                    trial,
                                    run: run_id,
                                    point: serde_json::to_string(&point).unwrap_or_default(),
                                },
                            ));
                            plan.launch.push(run_id);
                        }
                        Err(e) => {
                            plan.records.push((
                                id,
                                Event::SweepCancelled {
                                    reason: format!("trial {trial}'s run spec is not valid: {e}"),
                                },
                            ));
                            break;
                        }
                    }
                }
                Decision::Promote { trial, rung } => {
                    let Some(t) = sweep.trial(trial) else {
                        continue;
                    };
                    plan.records
                        .push((id, Event::TrialPromoted { trial, rung }));
                    // A run a client resumed (or that trained on) needs no resume.
                    if run_of(t.run_id).map(|r| r.state) == Some(RunState::Paused) {
                        plan.records.push((t.run_id, Event::RunResumed));
                        plan.launch.push(t.run_id);
                    }
                }
                Decision::Stop { trial } => {
                    let Some(t) = sweep.trial(trial) else {
                        continue;
                    };
                    let rung = t.results.len().saturating_sub(1);
                    let reason = format!(
                        "stopped by sweep {}: not among the best 1/{} at rung {rung}",
                        sweep.name, schedule.eta
                    );
                    plan.records.push((
                        id,
                        Event::TrialStopped {
                            trial,
                            reason: reason.clone(),
                        },
                    ));
                    // A run a client resumed is cancelled by the sweeper (see
                    // `sweep_stops`); one that ended already stays as it ended.
                    if run_of(t.run_id).map(|r| r.state) == Some(RunState::Paused) {
                        plan.records
                            .push((t.run_id, Event::RunCancelled { reason }));
                    }
                }
                Decision::Complete { best } => {
                    plan.records.push((id, Event::SweepCompleted { best }));
                }
            }
        }
        (!plan.records.is_empty()).then_some(plan)
    }

    /// The runs of the sweep's trials that its state says must stop: to cancel,
    /// every trial run not yet ended or asked to end once the sweep is cancelled, and
    /// a stopped trial's run a client resumed; to pause, the trial runs queued or
    /// training towards a rung while the sweep is paused.
    pub(super) fn stops<'a>(
        &self,
        run_of: impl Fn(RunId) -> Option<&'a Run>,
    ) -> (Vec<RunId>, Vec<RunId>) {
        let (mut cancel, mut pause) = (Vec::new(), Vec::new());
        let sweep = self;
        for trial in &sweep.trials {
            let Some(run) = run_of(trial.run_id) else {
                continue;
            };
            let unstopped = !run.state.is_terminal() && !run.cancel_requested;
            match sweep.state {
                SweepState::Cancelled if unstopped => cancel.push(run.id),
                // Stopped by the sweep, yet running again: a client resumed it.
                _ if unstopped && trial.status == TrialStatus::Stopped => cancel.push(run.id),
                SweepState::Paused
                    if matches!(trial.status, TrialStatus::Training { .. })
                        && matches!(run.state, RunState::Queued | RunState::Running) =>
                {
                    pause.push(run.id)
                }
                _ => {}
            }
        }
        (cancel, pause)
    }

    /// The trial runs a resume of the sweep restarts: those paused short of their
    /// rung's end (by the sweep's pause, or a client's).
    pub(super) fn resumable<'a>(&self, run_of: impl Fn(RunId) -> Option<&'a Run>) -> Vec<RunId> {
        let sweep = self;
        let Some(checked) = sweep.checked() else {
            return Vec::new();
        };
        sweep
            .trials
            .iter()
            .filter_map(|trial| {
                let TrialStatus::Training { rung } = trial.status else {
                    return None;
                };
                let run = run_of(trial.run_id)?;
                (run.state == RunState::Paused && epochs_done(run) < checked.schedule.epochs(rung))
                    .then_some(run.id)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::{Envelope, Rejection, SlotId, State};

    /// A journal in memory: events checked, then folded.
    struct World {
        state: State,
        seq: Seq,
        next_id: u8,
    }

    impl World {
        fn new() -> Self {
            Self {
                state: State::default(),
                seq: 0,
                next_id: 0,
            }
        }

        fn id(&mut self) -> RunId {
            self.next_id += 1;
            RunId::from_bytes([self.next_id; 16])
        }

        fn append(&mut self, id: RunId, event: Event) -> Result<(), Rejection> {
            self.state.check(id, &event)?;
            self.seq += 1;
            self.state.apply(self.seq, &Envelope::now(id, event));
            Ok(())
        }

        fn submit(&mut self, spec: serde_json::Value) -> RunId {
            let spec: SweepSpec = serde_json::from_value(spec).expect("sweep spec");
            spec.check().expect("a valid sweep");
            let id = self.id();
            let event = Event::SweepSubmitted {
                name: spec.name.clone(),
                digest: spec.digest(),
                spec: spec.canonical_json(),
            };
            self.append(id, event).expect("submitted");
            id
        }

        /// The sweep's next plan, journaled; its events, as `Type trial [rung]`.
        fn step(&mut self, sweep: RunId) -> Vec<String> {
            let mut next = self.next_id;
            let plan = self.state.sweep_plan(sweep, &mut || {
                next += 1;
                RunId::from_bytes([next; 16])
            });
            self.next_id = next;
            let Some(plan) = plan else {
                return Vec::new();
            };
            let mut said = Vec::new();
            for (id, event) in plan.records {
                said.push(match &event {
                    Event::TrialCreated { trial, .. } => format!("created {trial}"),
                    Event::TrialReachedRung { trial, rung, .. } => {
                        format!("reached {trial} {rung}")
                    }
                    Event::TrialPromoted { trial, rung } => format!("promoted {trial} {rung}"),
                    Event::TrialStopped { trial, .. } => format!("stopped {trial}"),
                    Event::SweepCompleted { best } => format!("completed {best:?}"),
                    other => format!("{} {}", other.kind().name(), self.trial_number(id)),
                });
                self.append(id, event).expect("a plan the state takes");
            }
            said
        }

        fn trial_number(&self, run: RunId) -> String {
            self.state
                .trial_of(run)
                .map_or_else(|| "?".into(), |(_, n)| n.to_string())
        }

        fn run_of(&self, sweep: RunId, trial: u32) -> RunId {
            self.state
                .sweep(sweep)
                .and_then(|s| s.trial(trial))
                .expect("trial")
                .run_id
        }

        /// Plans the sweep until it has nothing more to say, training each trial it
        /// waits for (but `skip`) to its rung's end at `accuracy(run)`; what it said.
        fn plan_out(
            &mut self,
            sweep: RunId,
            skip: Option<RunId>,
            accuracy: impl Fn(&Self, RunId) -> f64,
        ) -> Vec<String> {
            let mut said = Vec::new();
            for _ in 0..10 {
                let step = self.step(sweep);
                if !step.is_empty() {
                    said.extend(step);
                    continue;
                }
                let waited_for = self.state.sweep(sweep).and_then(|s| {
                    s.trials
                        .iter()
                        .find(|t| {
                            Some(t.run_id) != skip
                                && matches!(t.status, TrialStatus::Training { .. })
                        })
                        .map(|t| t.run_id)
                });
                let Some(run) = waited_for else { break };
                let to = self.state.rung_end(run).unwrap_or(3);
                let accuracy = accuracy(self, run);
                self.train(run, to, accuracy, to == 3);
            }
            said
        }

        /// Trains `run` on slot 0 from where it is through epoch `to`, each epoch's
        /// validation accuracy `accuracy`, then pauses it (or completes it).
        fn train(&mut self, run: RunId, to: u32, accuracy: f64, complete: bool) {
            let slot = SlotId(0);
            let from = self
                .state
                .run(run)
                .and_then(|r| r.epochs.last())
                .map_or(0, |e| e.epoch);
            self.append(run, Event::SlotClaimed { slot })
                .expect("claim");
            let attempt = self.state.run(run).map_or(1, |r| r.attempt + 1);
            let device = "cpu".to_string();
            self.append(
                run,
                Event::RunStarted {
                    attempt,
                    slot,
                    device,
                },
            )
            .expect("start");
            for epoch in from + 1..=to {
                let done = Event::EpochCompleted {
                    epoch,
                    train_loss: 1.0 / f64::from(epoch),
                    train_accuracy: accuracy,
                    duration_ms: 10,
                };
                self.append(run, done).expect("epoch");
                let evaluated = Event::EpochEvaluated {
                    epoch,
                    val_loss: 0.5,
                    val_metric: accuracy,
                };
                self.append(run, evaluated).expect("evaluated");
            }
            let end = if complete {
                Event::RunCompleted {
                    train_loss: 0.1,
                    train_accuracy: accuracy,
                }
            } else {
                Event::RunPaused {
                    reason: "paused at the end of its sweep rung".into(),
                }
            };
            self.append(run, end).expect("end");
            self.append(run, Event::SlotReleased { slot })
                .expect("release");
        }
    }

    /// ASHA over rungs of 1 and 3 epochs (η = 3), three trials, one at a time.
    fn asha_sweep() -> serde_json::Value {
        json!({
            "name": "s",
            "base": {"name": "b", "model": {"kind": "mlp", "hidden": [8]},
                     "data": {"kind": "synthetic", "samples": 100, "features": 4, "classes": 2, "seed": 1},
                     "validation": {"fraction": 0.2}, "epochs": 3, "batch_size": 10},
            "space": {"optimizer.lr": {"choice": [0.001, 0.01, 0.1]}},
            "searcher": {"kind": "asha", "metric": "val_accuracy", "min_epochs": 1, "max_epochs": 3,
                         "reduction_factor": 3, "max_trials": 3, "max_concurrent": 1},
            "seed": 5
        })
    }

    #[test]
    fn an_asha_sweep_trains_rung_by_rung_promotes_the_best_and_completes() {
        let mut world = World::new();
        let sweep = world.submit(asha_sweep());
        // Given a new sweep, when it plans, then it makes its first trial, whose run
        // pauses at the end of rung 0.
        assert_eq!(world.step(sweep), ["RunSubmitted ?", "created 0"]);
        let first = world.run_of(sweep, 0);
        assert_eq!(world.state.rung_end(first), Some(1));
        assert_eq!(
            world.step(sweep),
            Vec::<String>::new(),
            "one trial at a time"
        );
        // When the trials finish rung 0 one after the other (trial 1 the best), then
        // each result is journaled and the next trial made.
        for (trial, accuracy) in [(0, 0.5), (1, 0.9), (2, 0.7)] {
            let run = world.run_of(sweep, trial);
            world.train(run, 1, accuracy, false);
            let said = world.step(sweep);
            assert_eq!(said, [format!("reached {trial} 0")]);
            let next = world.step(sweep);
            if trial < 2 {
                assert_eq!(
                    next,
                    [
                        "RunSubmitted ?".to_string(),
                        format!("created {}", trial + 1)
                    ]
                );
            } else {
                // Then, with three results, the best third (trial 1) is promoted.
                assert_eq!(next, ["promoted 1 1", "RunResumed 1"]);
            }
        }
        let promoted = world.run_of(sweep, 1);
        assert_eq!(
            world.state.rung_end(promoted),
            None,
            "the top rung trains to the end"
        );
        world.train(promoted, 3, 0.95, true);
        assert_eq!(world.step(sweep), ["reached 1 1"]);
        // Then nothing trains and nothing can start: the others are stopped (their
        // paused runs cancelled) and trial 1 is the best.
        assert_eq!(
            world.step(sweep),
            [
                "stopped 0",
                "RunCancelled 0",
                "stopped 2",
                "RunCancelled 2",
                "completed Some(1)"
            ]
        );
        let done = world.state.sweep(sweep).expect("sweep");
        assert_eq!(done.state, SweepState::Completed);
        assert_eq!(done.best, Some(1));
        assert_eq!(done.results.len(), 4);
        assert_eq!(world.step(sweep), Vec::<String>::new());
    }

    /// An ASHA sweep whose trial 0 reached rung 0 (at 0.5) and waits there, and whose
    /// run a client then resumed: the world, the sweep and that run.
    fn first_trial_resumed_by_a_client() -> (World, RunId, RunId) {
        let mut world = World::new();
        let sweep = world.submit(asha_sweep());
        world.step(sweep);
        let first = world.run_of(sweep, 0);
        world.train(first, 1, 0.5, false);
        world.step(sweep);
        world
            .append(first, Event::RunResumed)
            .expect("client resume");
        (world, sweep, first)
    }

    #[test]
    fn a_waiting_trial_a_client_resumed_is_promoted_or_stopped_without_a_second_resume() {
        // Given trial 0 waiting at rung 0, when a client resumes its run and it trains
        // to the end, then the sweep takes its rung results and never resumes it.
        let (mut world, sweep, first) = first_trial_resumed_by_a_client();
        world.step(sweep);
        let second = world.run_of(sweep, 1);
        world.train(second, 1, 0.9, false);
        world.train(first, 3, 0.6, true);
        world.step(sweep);
        let said = world.plan_out(sweep, None, |_, _| 0.7);
        assert!(said.contains(&"stopped 0".to_string()), "{said:?}");
        assert!(
            !said.contains(&"RunCancelled 0".to_string()),
            "its run completed: {said:?}"
        );
        assert!(said.iter().any(|s| s.starts_with("completed")), "{said:?}");
        assert_eq!(
            world.state.run(first).map(|r| r.state),
            Some(RunState::Completed)
        );
    }

    #[test]
    fn a_stopped_trial_a_client_resumed_is_cancelled_by_recovery_not_trained_again() {
        // Given trial 0 waiting at rung 0 and put back in the queue by a client,
        let (mut world, sweep, first) = first_trial_resumed_by_a_client();
        // trial 1 the best of the others,
        let said = world.plan_out(sweep, Some(first), |world, run| {
            if run == world.run_of(sweep, 1) {
                0.9
            } else {
                0.7
            }
        });
        // when the sweep stops it and the process dies before the cancel that stop
        // asks for is journaled,
        assert!(said.contains(&"stopped 0".to_string()), "{said:?}");
        assert_eq!(
            world.state.run(first).map(|r| r.state),
            Some(RunState::Queued)
        );
        assert_eq!(world.state.sweep_stops(sweep).0, [first]);
        // then the next start's recovery cancels it, and nothing is left to stop.
        let records = world.state.recovery();
        assert_eq!(
            records,
            [(
                first,
                Event::RunCancelled {
                    reason: "stopped by sweep s (carried out after a server restart)".into()
                }
            )]
        );
        for (run, event) in records {
            world.append(run, event).expect("recovery events are valid");
        }
        assert_eq!(
            world.state.run(first).map(|r| r.state),
            Some(RunState::Cancelled)
        );
        assert_eq!(world.state.sweep_stops(sweep), (vec![], vec![]));
        assert!(world.state.recovery().is_empty(), "recovery is idempotent");
    }

    #[test]
    fn decisions_that_no_longer_fit_are_refused_and_a_paused_sweep_decides_nothing() {
        let mut world = World::new();
        let sweep = world.submit(asha_sweep());
        world.step(sweep);
        let run = world.run_of(sweep, 0);
        // A trial number taken, a run already a trial, a promotion from the wrong rung.
        let again = Event::TrialCreated {
            trial: 0,
            run,
            point: "{}".into(),
        };
        assert!(matches!(
            world.append(sweep, again),
            Err(Rejection::Sweep(_))
        ));
        let taken = Event::TrialCreated {
            trial: 1,
            run,
            point: "{}".into(),
        };
        assert!(matches!(
            world.append(sweep, taken),
            Err(Rejection::Sweep(_))
        ));
        let early = Event::TrialPromoted { trial: 0, rung: 1 };
        assert!(matches!(
            world.append(sweep, early),
            Err(Rejection::Sweep(_))
        ));
        let stranger = world.id();
        assert_eq!(
            world.append(stranger, Event::SweepPaused),
            Err(Rejection::UnknownSweep(stranger))
        );
        // Paused: the rung result waits; resumed: it is taken.
        world.append(sweep, Event::SweepPaused).expect("pause");
        world.train(run, 1, 0.5, false);
        assert_eq!(world.step(sweep), Vec::<String>::new());
        assert!(world.append(sweep, Event::SweepPaused).is_err());
        world.append(sweep, Event::SweepResumed).expect("resume");
        assert_eq!(world.step(sweep), ["reached 0 0"]);
    }

    #[test]
    fn a_snapshot_keeps_the_sweep_and_the_plan_it_makes() {
        let mut world = World::new();
        let sweep = world.submit(asha_sweep());
        world.step(sweep);
        let run = world.run_of(sweep, 0);
        world.train(run, 1, 0.5, false);
        let restored = State::from_snapshot(&world.state.to_snapshot()).expect("snapshot");
        assert_eq!(restored.fingerprint(), world.state.fingerprint());
        assert_eq!(restored.trial_of(run), Some((sweep, 0)));
        let mut ids = || RunId::from_bytes([99; 16]);
        let mut same = || RunId::from_bytes([99; 16]);
        assert_eq!(
            restored.sweep_plan(sweep, &mut ids),
            world.state.sweep_plan(sweep, &mut same)
        );
        assert!(restored.sweep_plan(sweep, &mut ids).is_some());
    }
}
