//! The dispatcher: takes what clients ask of runs (submit, cancel, pause, resume),
//! journals it, and hands the run to the executor its spec names through the
//! [executor seam](super::executor) — the same messages for every executor, so
//! nothing here depends on which one runs a run. On start it journals the recovery
//! of runs that were live when the previous process died, then lets each executor
//! resync with the journal.
//!
//! A panic in one of its handlers restarts it (see [`super::fault`]). The restart
//! drops the old context's futures, so the answers to appends it was waiting for are
//! lost, though the journal still writes them: the restarted dispatcher first waits
//! until the journal has answered every append it sent, then has every executor
//! resync with the journal's state, which does again what those lost answers would
//! have done (queue a submitted run, pass a cancel or pause on). Recovery at start is
//! not repeated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use super::executor::{Executor, Executors, StopWhy};
use super::fault::{self, ActorKind, Recover};
use super::in_flight::InFlight;
use super::journal::{answered, Append, AppendAllowingDuplicate, AppendError, JournalReader};
use crate::domain::{Event, Rejection, RunId, RunSpec, RunState};
use crate::telemetry::work;
use opentelemetry::trace::SpanContext;

/// Why a command to the dispatcher failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DispatchError {
    /// The journal did not take the event.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// No run has this id.
    #[error("no run with id {0}")]
    NotFound(RunId),
    /// The run's state does not allow the command.
    #[error("{0}")]
    Conflict(String),
}

/// An answer the dispatcher finishes later.
type Later<T> = std::pin::Pin<Box<dyn ActorFuture<Dispatcher, Output = T>>>;

/// The dispatcher actor.
pub struct Dispatcher {
    journal: InFlight,
    reader: JournalReader,
    executors: Executors,
    ready: Arc<AtomicBool>,
    /// Whether recovery at start is journaled (a restart does not repeat it).
    recovered: bool,
    /// Set by a restart, for `started` to wait for the journal first.
    restarted: bool,
    /// Where restarts after a panic are counted, if anywhere.
    restarts: Option<prometheus::IntCounter>,
    /// The data directory, whose deleted runs' leftover files go at start (none
    /// without one).
    data_dir: Option<std::path::PathBuf>,
}

impl Dispatcher {
    /// A dispatcher handing runs to `executors`; `ready` turns true once recovery is
    /// done.
    pub fn new(
        journal: InFlight,
        reader: JournalReader,
        executors: Executors,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self {
            journal,
            reader,
            executors,
            ready,
            recovered: false,
            restarted: false,
            data_dir: None,
            restarts: None,
        }
    }

    /// Also counts in `restarts` each restart after a panic in a handler.
    pub fn with_restart_counter(mut self, restarts: prometheus::IntCounter) -> Self {
        self.restarts = Some(restarts);
        self
    }

    /// Removes, at start, what is left of the files of runs deleted in `data_dir`
    /// before the last stop.
    pub fn with_data_dir(mut self, data_dir: std::path::PathBuf) -> Self {
        self.data_dir = Some(data_dir);
        self
    }

    /// The executor of a run the journal holds (the local one for a run it does not).
    fn executor_of(&self, run_id: RunId) -> Result<Executor, DispatchError> {
        let kind = self
            .reader
            .state()
            .run(run_id)
            .map(|r| r.executor)
            .unwrap_or_default();
        self.executor(kind)
    }

    /// The executor of `kind`, or why this server has none.
    fn executor(&self, kind: crate::domain::spec::Executor) -> Result<Executor, DispatchError> {
        self.executors.of(kind).cloned().ok_or_else(|| {
            DispatchError::Conflict(format!(
                "the {} executor is not enabled on this server (executors.{}.enabled)",
                kind.name(),
                kind.name()
            ))
        })
    }

    /// Hands a run the journal holds as queued to its executor and waits until the
    /// executor has taken it.
    async fn launch(executor: Executor, run_id: RunId) -> Result<(), DispatchError> {
        match executor.launch(run_id).await {
            Ok(Ok(())) => Ok(()),
            // The run stays queued; the executor tries again.
            Ok(Err(message)) => {
                tracing::warn!(%run_id, %message, "run not launched yet");
                Ok(())
            }
            Err(_) => Err(DispatchError::Append(AppendError::Stopped)),
        }
    }

    /// Journals the event that stops a run (cancel or pause): done at once when
    /// `immediate`, else a request its executor passes on. Answers whether it was
    /// immediate; a refused transition becomes a conflict worded by `conflict`, and a
    /// run `withdrawn` from its executor goes back to it when the journal fails. Once
    /// journaled, the executor is told to stop the run.
    fn stop(
        &mut self,
        run_id: RunId,
        executor: Executor,
        why: StopWhy,
        (event, immediate, withdrawn): (Event, bool, bool),
        conflict: impl FnOnce(RunState) -> String + 'static,
    ) -> impl ActorFuture<Self, Output = Result<bool, DispatchError>> {
        let span = tracing::debug_span!(
            target: work::TARGET,
            parent: None,
            "dispatch.stop",
            runyard.run.id = %run_id,
            runyard.stop = match why {
                StopWhy::Cancel => "cancel",
                StopWhy::Pause => "pause",
            },
            runyard.immediate = immediate,
            runyard.outcome = tracing::field::Empty,
        );
        let parent = self.span_of(run_id);
        if let Some(parent) = &parent {
            work::set_parent(&span, parent);
        }
        let append = self
            .journal
            .journaled(Append::one(run_id, event).under(work::context_of(&span)));
        append
            .into_actor(self)
            .map(move |result, _dispatcher, _ctx| match answered(result) {
                Ok(_) => {
                    span.record("runyard.outcome", "journaled");
                    executor.stop(run_id, why, withdrawn);
                    Ok(immediate)
                }
                Err(AppendError::Rejected(Rejection::Transition { from, .. })) => {
                    span.record("runyard.outcome", "refused");
                    if withdrawn {
                        executor.restore(run_id);
                    }
                    Err(DispatchError::Conflict(conflict(from)))
                }
                Err(e) => {
                    span.record("runyard.outcome", outcome_of(&e));
                    if withdrawn {
                        executor.restore(run_id);
                    }
                    Err(e.into())
                }
            })
    }

    /// The span of `run_id`'s trace that work on it now goes under, if any
    /// ([`work::current_of`]).
    fn span_of(&self, run_id: RunId) -> Option<SpanContext> {
        self.reader.state().run(run_id).and_then(work::current_of)
    }

    /// Recovery (at the first start), or every executor resynced with the journal
    /// (after a restart).
    fn begin(&mut self, ctx: &mut Context<Self>) {
        if self.recovered {
            self.executors.all().for_each(Executor::resync);
        } else {
            self.recover_at_start(ctx);
        }
    }

    /// Journals the recovery of runs left live by the last stop, then lets the
    /// executors resync with the journal and says the server is ready.
    fn recover_at_start(&mut self, ctx: &mut Context<Self>) {
        let records = self.reader.state().recovery();
        let recovered = records.len();
        let append = self.journal.journaled(Append::new(records));
        // `wait` holds every other message until recovery is journaled.
        let journaled = append
            .into_actor(self)
            .map(move |result, dispatcher, _ctx| {
                dispatcher.recovered = true;
                match answered(result) {
                    Ok(_) if recovered > 0 => {
                        tracing::info!(
                            events = recovered,
                            "recovered runs that were live at the last stop"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "recovery events not journaled"),
                }
                // Each executor's first look at its runs comes before any launch.
                dispatcher.executors.all().for_each(Executor::resync);
                dispatcher.ready.store(true, Ordering::Release);
            });
        ctx.wait(fault::guarded_unit("recovery answer", journaled));
        // Files of runs whose deletion was journaled but not finished before the last
        // stop go now, off the actor's thread.
        if let Some(data_dir) = self.data_dir.clone() {
            let reader = self.reader.clone();
            std::thread::spawn(move || {
                let state = reader.state();
                super::files::remove_deleted_run_files(&data_dir, &state);
            });
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if std::mem::take(&mut self.restarted) {
            // The journal still writes what the old context sent; what the state says
            // is complete once it has answered all of it. `wait` holds every other
            // message meanwhile.
            let settled = fut::wrap_future::<_, Self>(self.journal.settled())
                .map(|(), dispatcher, ctx| dispatcher.begin(ctx));
            ctx.wait(fault::guarded_unit("restart", settled));
        } else {
            fault::guard(self, ctx, "start", Self::begin);
        }
    }
}

impl Recover for Dispatcher {
    const KIND: ActorKind = ActorKind::Dispatcher;

    fn recover(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// An append's failure, as a span's `runyard.outcome`.
fn outcome_of(e: &AppendError) -> &'static str {
    match e {
        AppendError::Rejected(_) => "refused",
        AppendError::Storage(_) => "journal_failed",
        AppendError::Stopped => "stopped",
    }
}

/// A handler's answer behind [`fault::guarded`]; `None` (the handler panicked) and a
/// panic in the answer's continuations both answer `Stopped`, though a stopping
/// dispatcher's answers go nowhere: the sender sees the mailbox closed.
fn guarded_answer<T: 'static>(
    site: &'static str,
    answer: Option<ResponseActFuture<Dispatcher, Result<T, DispatchError>>>,
) -> ResponseActFuture<Dispatcher, Result<T, DispatchError>> {
    let stopped = || Err(DispatchError::Append(AppendError::Stopped));
    match answer {
        Some(answer) => Box::pin(
            fault::guarded(site, answer).map(move |answer, _, _| answer.unwrap_or_else(stopped)),
        ),
        None => Box::pin(fut::ready(stopped())),
    }
}

impl Supervised for Dispatcher {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if let Some(restarts) = &self.restarts {
            restarts.inc();
        }
        tracing::info!(
            outstanding = self.journal.outstanding(),
            "dispatcher restarted; resyncing the executors once the journal answered what was sent"
        );
        self.restarted = true;
    }
}

/// What a submission did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// The run's id (the existing run's, for a duplicate).
    pub run_id: RunId,
    /// False when a run with the same digest already existed.
    pub created: bool,
}

/// Submits a run: journals `RunSubmitted`, then hands it to its executor.
#[derive(Debug, Message)]
#[rtype(result = "Result<Submitted, DispatchError>")]
pub struct SubmitRun {
    /// The new run's id.
    pub run_id: RunId,
    /// Its validated spec.
    pub spec: RunSpec,
    /// Make a new run even when a run with the same digest exists (`on_duplicate=
    /// rerun`); otherwise such a submission answers the newest existing run.
    pub rerun: bool,
    /// The run's [`Event::TraceAssigned`], journaled in the same append as its
    /// `RunSubmitted` (when traces are on).
    pub trace: Option<Event>,
    /// The span of the request that submits it (when traces are on): the parent of
    /// the dispatcher's `dispatch.submit` span and of the journal flush that makes
    /// `RunSubmitted` durable.
    pub parent: Option<SpanContext>,
}

impl Handler<SubmitRun> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<Submitted, DispatchError>>;

    #[tracing::instrument(skip_all, fields(run_id = %msg.run_id))]
    fn handle(&mut self, msg: SubmitRun, ctx: &mut Self::Context) -> Self::Result {
        let answer = fault::guard(self, ctx, "submit", |dispatcher, _| {
            fault::point(ActorKind::Dispatcher);
            dispatcher.submit(msg)
        });
        guarded_answer("submit answer", answer)
    }
}

impl Dispatcher {
    fn submit(
        &mut self,
        msg: SubmitRun,
    ) -> ResponseActFuture<Self, Result<Submitted, DispatchError>> {
        let run_id = msg.run_id;
        let span = tracing::debug_span!(
            target: work::TARGET,
            parent: None,
            "dispatch.submit",
            runyard.run.id = %run_id,
            runyard.executor = msg.spec.executor.name(),
            runyard.rerun = msg.rerun,
            runyard.outcome = tracing::field::Empty,
        );
        if let Some(parent) = &msg.parent {
            work::set_parent(&span, parent);
        }
        let executor = match self.executor(msg.spec.executor) {
            Ok(executor) => executor,
            Err(e) => {
                span.record("runyard.outcome", "executor_disabled");
                return Box::pin(fut::ready(Err(e)));
            }
        };
        let event = Event::RunSubmitted {
            name: msg.spec.name.clone(),
            digest: msg.spec.digest(),
            spec: msg.spec.canonical_json(),
        };
        let mut records = vec![(run_id, event)];
        records.extend(msg.trace.map(|trace| (run_id, trace)));
        let append: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> = if msg.rerun {
            Box::pin(self.journal.journaled(AppendAllowingDuplicate {
                records,
                parent: msg.parent,
            }))
        } else {
            Box::pin(
                self.journal
                    .journaled(Append::new(records).under(msg.parent)),
            )
        };
        Box::pin(
            append
                .into_actor(self)
                .then(move |result, dispatcher, _ctx| {
                    let answer = match answered(result) {
                        // Answered once the executor has it (a Slurm job is journaled first).
                        Ok(_) => {
                            let launched = Self::launch(executor, run_id).into_actor(dispatcher);
                            let answer = launched.map(move |launched, _, _| {
                                span.record(
                                    "runyard.outcome",
                                    if launched.is_ok() {
                                        "launched"
                                    } else {
                                        "stopped"
                                    },
                                );
                                launched.map(|()| Submitted {
                                    run_id,
                                    created: true,
                                })
                            });
                            return Box::pin(answer) as Later<Result<Submitted, DispatchError>>;
                        }
                        Err(AppendError::Rejected(Rejection::Duplicate { existing })) => {
                            span.record("runyard.outcome", "duplicate");
                            span.record("runyard.run.id", tracing::field::display(existing));
                            Ok(Submitted {
                                run_id: existing,
                                created: false,
                            })
                        }
                        Err(e) => {
                            span.record("runyard.outcome", outcome_of(&e));
                            Err(e.into())
                        }
                    };
                    Box::pin(fut::ready(answer)) as Later<_>
                }),
        )
    }
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The run was queued and is now cancelled.
    Cancelled,
    /// The run is live; its thread stops at the next batch boundary.
    Requested,
}

/// Cancels a run.
#[derive(Debug, Message)]
#[rtype(result = "Result<CancelOutcome, DispatchError>")]
pub struct CancelRun {
    /// The run to cancel.
    pub run_id: RunId,
}

impl Handler<CancelRun> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<CancelOutcome, DispatchError>>;

    #[tracing::instrument(skip_all, fields(run_id = %msg.run_id))]
    fn handle(&mut self, msg: CancelRun, ctx: &mut Self::Context) -> Self::Result {
        let answer = fault::guard(self, ctx, "cancel", |dispatcher, _| dispatcher.cancel(msg));
        guarded_answer("cancel answer", answer)
    }
}

impl Dispatcher {
    fn cancel(
        &mut self,
        msg: CancelRun,
    ) -> ResponseActFuture<Self, Result<CancelOutcome, DispatchError>> {
        let run_id = msg.run_id;
        let state = self.reader.state().run(run_id).map(|r| r.state);
        match state {
            None => return Box::pin(fut::ready(Err(DispatchError::NotFound(run_id)))),
            Some(s) if s.is_terminal() => {
                let message = format!("run {run_id} is already {}", s.name());
                return Box::pin(fut::ready(Err(DispatchError::Conflict(message))));
            }
            _ => {}
        }
        let executor = match self.executor_of(run_id) {
            Ok(executor) => executor,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        // A paused run has nothing running; a queued one is cancelled at once if its
        // executor can take it back before it starts.
        let withdraw =
            (state != Some(RunState::Paused)).then(|| executor.withdraw(run_id, StopWhy::Cancel));
        Box::pin(
            async move {
                match withdraw {
                    Some(request) => request.await.map(|withdrawn| (withdrawn, withdrawn)),
                    None => Ok((true, false)),
                }
            }
            .into_actor(self)
            .then(move |withdrawn, dispatcher, _ctx| {
                let Ok((immediate, withdrawn)) = withdrawn else {
                    let stopped = Err(DispatchError::Append(AppendError::Stopped));
                    return Box::pin(fut::ready(stopped)) as Later<_>;
                };
                let event = if immediate {
                    Event::RunCancelled {
                        reason: "cancelled by request before it started".into(),
                    }
                } else {
                    Event::CancelRequested
                };
                let stop = dispatcher.stop(
                    run_id,
                    executor,
                    StopWhy::Cancel,
                    (event, immediate, withdrawn),
                    move |from| format!("run {run_id} is already {}", from.name()),
                );
                Box::pin(stop.map(|result, _, _| {
                    Ok(if result? {
                        CancelOutcome::Cancelled
                    } else {
                        CancelOutcome::Requested
                    })
                })) as Later<_>
            }),
        )
    }
}

/// What a pause did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseOutcome {
    /// The run was queued and is now paused.
    Paused,
    /// The run is live; its thread checkpoints and stops at the next batch boundary.
    Requested,
}

/// Pauses a run: a queued one at once, a running one at its next batch boundary.
#[derive(Debug, Message)]
#[rtype(result = "Result<PauseOutcome, DispatchError>")]
pub struct PauseRun {
    /// The run to pause.
    pub run_id: RunId,
}

impl Handler<PauseRun> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<PauseOutcome, DispatchError>>;

    #[tracing::instrument(skip_all, fields(run_id = %msg.run_id))]
    fn handle(&mut self, msg: PauseRun, ctx: &mut Self::Context) -> Self::Result {
        let answer = fault::guard(self, ctx, "pause", |dispatcher, _| dispatcher.pause(msg));
        guarded_answer("pause answer", answer)
    }
}

impl Dispatcher {
    fn pause(
        &mut self,
        msg: PauseRun,
    ) -> ResponseActFuture<Self, Result<PauseOutcome, DispatchError>> {
        let run_id = msg.run_id;
        let state = self.reader.state().run(run_id).map(|r| r.state);
        let not_pausable = move |state: RunState| {
            format!(
                "run {run_id} is {}; only a queued or running run can be paused",
                state.name()
            )
        };
        match state {
            None => return Box::pin(fut::ready(Err(DispatchError::NotFound(run_id)))),
            Some(RunState::Queued | RunState::Running) => {}
            Some(other) => {
                return Box::pin(fut::ready(Err(DispatchError::Conflict(not_pausable(
                    other,
                )))))
            }
        }
        let executor = match self.executor_of(run_id) {
            Ok(executor) => executor,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        // A queued run is paused at once if its executor can take it back before it
        // starts (a local run waiting out a retry delay cannot be).
        let withdraw =
            (state == Some(RunState::Queued)).then(|| executor.withdraw(run_id, StopWhy::Pause));
        Box::pin(
            async move {
                match withdraw {
                    Some(request) => request.await.map(Some),
                    None => Ok(None),
                }
            }
            .into_actor(self)
            .then(move |withdrawn, dispatcher, _ctx| {
                let withdrawn = match withdrawn {
                    Ok(Some(true)) => true,
                    Ok(None) => false,
                    Ok(Some(false)) => {
                        let refused = Err(DispatchError::Conflict(not_pausable(RunState::Queued)));
                        return Box::pin(fut::ready(refused)) as Later<_>;
                    }
                    Err(_) => {
                        let stopped = Err(DispatchError::Append(AppendError::Stopped));
                        return Box::pin(fut::ready(stopped)) as Later<_>;
                    }
                };
                let event = if withdrawn {
                    Event::RunPaused {
                        reason: "paused by request before it started".into(),
                    }
                } else {
                    Event::PauseRequested
                };
                let stop = dispatcher.stop(
                    run_id,
                    executor,
                    StopWhy::Pause,
                    (event, withdrawn, withdrawn),
                    not_pausable,
                );
                Box::pin(stop.map(|result, _, _| {
                    Ok(if result? {
                        PauseOutcome::Paused
                    } else {
                        PauseOutcome::Requested
                    })
                })) as Later<_>
            }),
        )
    }
}

/// Puts a paused run back in its executor's hands; it continues from its checkpoint.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DispatchError>")]
pub struct ResumeRun {
    /// The run to resume.
    pub run_id: RunId,
}

impl Handler<ResumeRun> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<(), DispatchError>>;

    #[tracing::instrument(skip_all, fields(run_id = %msg.run_id))]
    fn handle(&mut self, msg: ResumeRun, ctx: &mut Self::Context) -> Self::Result {
        let answer = fault::guard(self, ctx, "resume", |dispatcher, _| dispatcher.resume(msg));
        guarded_answer("resume answer", answer)
    }
}

impl Dispatcher {
    fn resume(&mut self, msg: ResumeRun) -> ResponseActFuture<Self, Result<(), DispatchError>> {
        let run_id = msg.run_id;
        let not_resumable = move |state: RunState| {
            format!(
                "run {run_id} is {}; only a paused run can be resumed",
                state.name()
            )
        };
        match self.reader.state().run(run_id).map(|r| r.state) {
            None => return Box::pin(fut::ready(Err(DispatchError::NotFound(run_id)))),
            Some(RunState::Paused) => {}
            Some(other) => {
                let message = not_resumable(other);
                return Box::pin(fut::ready(Err(DispatchError::Conflict(message))));
            }
        }
        let executor = match self.executor_of(run_id) {
            Ok(executor) => executor,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        // In the run's trace, under the pause it ends, with RunResumed's journaling
        // under it.
        let span = tracing::debug_span!(
            target: work::TARGET,
            parent: None,
            "dispatch.resume",
            runyard.run.id = %run_id,
            runyard.outcome = tracing::field::Empty,
        );
        if let Some(pause) = self.reader.state().run(run_id).and_then(work::pause_of) {
            work::set_parent(&span, &pause);
        }
        let append = self
            .journal
            .journaled(Append::one(run_id, Event::RunResumed).under(work::context_of(&span)));
        Box::pin(
            append
                .into_actor(self)
                .then(move |result, dispatcher, _ctx| {
                    let answer = match answered(result) {
                        // It continues from its checkpoint (for Slurm, the shared directory's).
                        Ok(_) => {
                            span.record("runyard.outcome", "journaled");
                            return Box::pin(Self::launch(executor, run_id).into_actor(dispatcher))
                                as Later<_>;
                        }
                        Err(AppendError::Rejected(Rejection::Transition { from, .. })) => {
                            span.record("runyard.outcome", "refused");
                            Err(DispatchError::Conflict(not_resumable(from)))
                        }
                        Err(e) => {
                            span.record("runyard.outcome", outcome_of(&e));
                            Err(e.into())
                        }
                    };
                    Box::pin(fut::ready(answer)) as Later<_>
                }),
        )
    }
}

/// Hands a run the journal already holds as queued to its executor: a sweep's new or
/// promoted trial, journaled by the sweeper.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LaunchRun {
    /// The run.
    pub run_id: RunId,
}

impl Handler<LaunchRun> for Dispatcher {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: LaunchRun, _ctx: &mut Self::Context) -> Self::Result {
        let run_id = msg.run_id;
        let launch = self
            .executor_of(run_id)
            .map(|executor| Self::launch(executor, run_id));
        Box::pin(
            async move {
                let result = match launch {
                    Ok(launch) => launch.await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    tracing::warn!(%run_id, error = %e, "trial run not launched");
                }
            }
            .into_actor(self),
        )
    }
}
