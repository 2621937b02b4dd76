//! The sweeper: carries out what sweeps decide. It takes what clients ask of sweeps
//! (submit, cancel, pause, resume) and journals it; and whenever the journal moves
//! on, it asks the state what each running sweep does next
//! ([`State::sweep_plan`](crate::domain::State::sweep_plan): a finished rung, new
//! trials, promotions, stops, completion), journals that plan in one append, and
//! hands the runs it made or resumed to the dispatcher to launch.
//!
//! It decides nothing itself: every decision is a function of the journaled state,
//! and the journal refuses one that no longer fits (a trial number taken, a sweep
//! paused meanwhile), so one plan is in flight at a time and a restart simply plans
//! again from what is durable. A cancelled or paused sweep's trial runs are stopped
//! through the dispatcher, as a client's cancel or pause would be, until the state
//! shows each stopped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::dispatcher::{CancelRun, Dispatcher, LaunchRun, PauseRun, ResumeRun};
use super::in_flight::InFlight;
use super::journal::{answered, Append, AppendAllowingDuplicate, AppendError, JournalReader};
use crate::domain::sweep::SweepSpec;
use crate::domain::{Event, Rejection, RunId, SweepState};
use crate::telemetry::work;

/// How often the sweeper plans even when the journal has not moved: a safety net
/// for a launch that could not be handed over, and for the start, where recovery
/// may journal nothing.
const REPLAN_EVERY: Duration = Duration::from_secs(1);

/// Why a command to the sweeper failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SweepError {
    /// The journal did not take the event.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// No sweep has this id.
    #[error("no sweep with id {0}")]
    NotFound(RunId),
    /// The sweep's state does not allow the command.
    #[error("{0}")]
    Conflict(String),
}

/// The sweeper actor.
pub struct Sweeper {
    journal: InFlight,
    reader: JournalReader,
    dispatcher: Addr<Dispatcher>,
    ready: Arc<AtomicBool>,
    /// A plan is being journaled: the next waits for its answer.
    busy: bool,
    /// Trial runs already asked to stop by this process: `(run, true)` to cancel,
    /// `(run, false)` to pause.
    asked: HashSet<(RunId, bool)>,
}

impl Sweeper {
    /// A sweeper journaling through `journal` and launching through `dispatcher`; it
    /// plans once `ready` (recovery at start journaled) is true.
    pub fn new(
        journal: InFlight,
        reader: JournalReader,
        dispatcher: Addr<Dispatcher>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self {
            journal,
            reader,
            dispatcher,
            ready,
            busy: false,
            asked: HashSet::new(),
        }
    }

    /// Plans the next step of the first live sweep that has one, journals it, and
    /// plans again once it is durable.
    fn step(&mut self, ctx: &mut Context<Self>) {
        if self.busy || !self.ready.load(Ordering::Acquire) {
            return;
        }
        let state = self.reader.state();
        // An ended sweep's trial runs may still need stopping (cancelled, or resumed
        // by a client after the sweep stopped them).
        for sweep in state.sweeps() {
            let (cancel, pause) = state.sweep_stops(sweep.id);
            for run_id in cancel {
                if self.asked.insert((run_id, true)) {
                    self.dispatcher.do_send(CancelRun { run_id });
                }
            }
            for run_id in pause {
                if self.asked.insert((run_id, false)) {
                    self.dispatcher.do_send(PauseRun { run_id });
                }
            }
            let Some(plan) = state.sweep_plan(sweep.id, &mut RunId::new) else {
                continue;
            };
            self.busy = true;
            let sweep_id = sweep.id;
            let span = plan_span(sweep_id, &plan.records, plan.launch.len());
            let append = self.journal.journaled(AppendAllowingDuplicate {
                records: plan.records,
                parent: work::context_of(&span),
            });
            let launch = plan.launch;
            let done = append.into_actor(self).map(move |result, sweeper, ctx| {
                sweeper.busy = false;
                span.record(
                    "runyard.outcome",
                    match &result {
                        Ok(Ok(_)) => "journaled",
                        Ok(Err(AppendError::Rejected(_))) => "refused",
                        _ => "failed",
                    },
                );
                match answered(result) {
                    Ok(_) => {
                        for run_id in launch {
                            sweeper.dispatcher.do_send(LaunchRun { run_id });
                        }
                        sweeper.step(ctx);
                    }
                    // The state moved on under the plan (a client paused the sweep,
                    // cancelled a trial): the next plan is made from the new state, at
                    // its next change (or the next round), never in a tight loop.
                    Err(AppendError::Rejected(rejection)) => {
                        tracing::info!(%sweep_id, %rejection, "sweep plan refused; planning again");
                    }
                    Err(e) => {
                        tracing::warn!(%sweep_id, error = %e, "sweep plan not journaled");
                    }
                }
            });
            ctx.spawn(done);
            return;
        }
    }

    /// Journals one sweep event, answering a conflict (worded by the state) when the
    /// sweep's state does not allow it.
    fn journal_one(
        &mut self,
        id: RunId,
        event: Event,
    ) -> impl ActorFuture<Self, Output = Result<(), SweepError>> {
        let append = self.journal.journaled(Append::one(id, event));
        append
            .into_actor(self)
            .map(move |result, sweeper, ctx| match answered(result) {
                Ok(_) => {
                    sweeper.step(ctx);
                    Ok(())
                }
                Err(AppendError::Rejected(Rejection::UnknownSweep(id))) => {
                    Err(SweepError::NotFound(id))
                }
                Err(AppendError::Rejected(Rejection::Sweep(why))) => Err(SweepError::Conflict(why)),
                Err(e) => Err(e.into()),
            })
    }
}

/// The `sweep.plan` span of one plan journaled: what the sweep decided (trials made,
/// rungs reached, promotions, stops) and how many runs it launches. A sweep has no
/// trace of its own: each plan is a root.
fn plan_span(sweep_id: RunId, records: &[(RunId, Event)], launches: usize) -> tracing::Span {
    let count = |kind: fn(&Event) -> bool| records.iter().filter(|(_, e)| kind(e)).count() as i64;
    tracing::debug_span!(
        target: work::TARGET,
        parent: None,
        "sweep.plan",
        runyard.sweep.id = %sweep_id,
        runyard.journal.events = records.len() as i64,
        runyard.sweep.trials_created = count(|e| matches!(e, Event::TrialCreated { .. })),
        runyard.sweep.rungs_reached = count(|e| matches!(e, Event::TrialReachedRung { .. })),
        runyard.sweep.promoted = count(|e| matches!(e, Event::TrialPromoted { .. })),
        runyard.sweep.stopped = count(|e| matches!(e, Event::TrialStopped { .. })),
        runyard.sweep.completed = records
            .iter()
            .any(|(_, e)| matches!(e, Event::SweepCompleted { .. })),
        runyard.sweep.launches = launches as i64,
        runyard.outcome = tracing::field::Empty,
    )
}

impl Actor for Sweeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every durable change may be a sweep's next cue.
        let mut tail = self.reader.subscribe();
        let me = ctx.address();
        actix_rt::spawn(async move {
            while tail.changed().await.is_ok() {
                if me.try_send(Wake).is_err() && !me.connected() {
                    break;
                }
            }
        });
        ctx.run_interval(REPLAN_EVERY, |sweeper, ctx| sweeper.step(ctx));
        self.step(ctx);
    }
}

impl Supervised for Sweeper {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.busy = false;
        self.asked.clear();
    }
}

/// The journal moved on: plan again.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Wake;

impl Handler<Wake> for Sweeper {
    type Result = ();

    fn handle(&mut self, _msg: Wake, ctx: &mut Self::Context) {
        self.step(ctx);
    }
}

/// Submits a sweep: journals `SweepSubmitted`; its first trials follow.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SweepError>")]
pub struct SubmitSweep {
    /// The new sweep's id.
    pub id: RunId,
    /// Its spec, checked.
    pub spec: SweepSpec,
}

impl Handler<SubmitSweep> for Sweeper {
    type Result = ResponseActFuture<Self, Result<(), SweepError>>;

    fn handle(&mut self, msg: SubmitSweep, _ctx: &mut Self::Context) -> Self::Result {
        let event = Event::SweepSubmitted {
            name: msg.spec.name.clone(),
            digest: msg.spec.digest(),
            spec: msg.spec.canonical_json(),
        };
        Box::pin(self.journal_one(msg.id, event))
    }
}

/// What a client asks of a whole sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepCommand {
    /// No more trials; every live trial's run is cancelled.
    Cancel,
    /// Nothing is decided; every trial training is paused.
    Pause,
    /// Decisions go on; the trials the pause stopped are resumed.
    Resume,
}

/// Cancels, pauses or resumes a sweep.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SweepError>")]
pub struct ControlSweep {
    /// The sweep.
    pub id: RunId,
    /// What to do.
    pub command: SweepCommand,
}

impl Handler<ControlSweep> for Sweeper {
    type Result = ResponseActFuture<Self, Result<(), SweepError>>;

    fn handle(&mut self, msg: ControlSweep, _ctx: &mut Self::Context) -> Self::Result {
        let id = msg.id;
        let state = self.reader.state();
        let Some(sweep) = state.sweep(id) else {
            return Box::pin(fut::ready(Err(SweepError::NotFound(id))));
        };
        let conflict = |what: &str| {
            Err(SweepError::Conflict(format!(
                "sweep {id} is {}; only a {what} sweep can be {}",
                sweep.state.name(),
                match msg.command {
                    SweepCommand::Cancel => "cancelled",
                    SweepCommand::Pause => "paused",
                    SweepCommand::Resume => "resumed",
                }
            )))
        };
        let event = match (msg.command, sweep.state) {
            (SweepCommand::Cancel, s) if s.is_live() => Event::SweepCancelled {
                reason: "cancelled by request".into(),
            },
            (SweepCommand::Pause, SweepState::Running) => Event::SweepPaused,
            (SweepCommand::Resume, SweepState::Paused) => Event::SweepResumed,
            (SweepCommand::Cancel, _) => {
                return Box::pin(fut::ready(conflict("running or paused")))
            }
            (SweepCommand::Pause, _) => return Box::pin(fut::ready(conflict("running"))),
            (SweepCommand::Resume, _) => return Box::pin(fut::ready(conflict("paused"))),
        };
        let command = msg.command;
        Box::pin(
            self.journal_one(id, event)
                .map(move |result, sweeper, _ctx| {
                    if result.is_ok() && command == SweepCommand::Resume {
                        // The pause stopped these runs; stops asked for again later
                        // are new ones.
                        for run_id in sweeper.reader.state().sweep_resumable(id) {
                            sweeper.asked.remove(&(run_id, false));
                            sweeper.dispatcher.do_send(ResumeRun { run_id });
                        }
                    }
                    result
                }),
        )
    }
}
