//! The dispatcher: keeps the queue of runs waiting for a slot (FIFO for now) and hands
//! each to a free slot actor, journaling the claim first. On start it recovers runs
//! that were live when the previous process died: they go back to the queue.
//!
//! A panic in one of its handlers restarts it (see [`super::fault`]). The restart
//! drops the old context's futures, so the answers to appends it was waiting for are
//! lost, though the journal still writes them: the restarted dispatcher first waits
//! until the journal has answered every append it sent, then rebuilds the queue and
//! the slots' occupancy from the journal's state, and does again what those lost
//! answers would have done (hands claimed runs to their slot, passes cancels and
//! pauses on). Recovery at start is not repeated.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::watch;

use super::fault::{self, ActorKind, Recover};
use super::journal::{
    answered, Append, AppendAllowingDuplicate, AppendError, Journal, JournalReader,
};
use super::run::Resume;
use super::slot::{CancelOnSlot, PauseOnSlot, Slot, SlotFreed, SlotInfo, StartRun};
use super::slurm::{Launch, SlurmExecutor, StopJob};
use crate::domain::{Event, Rejection, RunId, RunSpec, RunState, Seq, SlotId};

/// The longest a restarted dispatcher waits for the journal to answer the appends its
/// old context sent, before it reads the state anyway.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What an append to the journal answers.
type Appended = Result<Result<Vec<Seq>, AppendError>, MailboxError>;

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

/// Appends sent to the journal and not answered yet, counted apart from the
/// dispatcher's context so that a restart, which drops the futures waiting for the
/// answers, can still wait for them.
#[derive(Clone)]
struct Outstanding(Arc<watch::Sender<usize>>);

impl Default for Outstanding {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl Outstanding {
    /// Counts one append until the guard is dropped.
    fn enter(&self) -> OutstandingGuard {
        self.0.send_modify(|n| *n += 1);
        OutstandingGuard(Arc::clone(&self.0))
    }

    /// Resolves once no append is outstanding (or after [`SETTLE_LIMIT`]).
    fn settled(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut count = self.0.subscribe();
        async move {
            let settled = tokio::time::timeout(SETTLE_LIMIT, count.wait_for(|n| *n == 0)).await;
            if settled.is_err() {
                tracing::warn!(
                    limit_secs = SETTLE_LIMIT.as_secs(),
                    "journal answers still outstanding after a dispatcher restart; reading the state anyway"
                );
            }
        }
    }
}

struct OutstandingGuard(Arc<watch::Sender<usize>>);

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

struct SlotEntry {
    info: SlotInfo,
    addr: Addr<Slot>,
    busy: Option<RunId>,
}

/// The dispatcher actor.
pub struct Dispatcher {
    journal: Addr<Journal>,
    reader: JournalReader,
    slots: Vec<SlotEntry>,
    /// Queued runs in the order they are served, each with its priority (so placing
    /// a new one reads no run from the state).
    queue: VecDeque<(RunId, i32)>,
    ready: Arc<AtomicBool>,
    /// Where queue wait times are recorded, if anywhere.
    queue_wait: Option<prometheus::Histogram>,
    /// The Slurm executor, which queues and runs `"executor": "slurm"` runs.
    slurm: Option<Addr<SlurmExecutor>>,
    /// Appends the journal has not answered yet.
    outstanding: Outstanding,
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
    /// A dispatcher over the given slots; `ready` turns true once recovery is done.
    pub fn new(
        journal: Addr<Journal>,
        reader: JournalReader,
        slots: Vec<(SlotInfo, Addr<Slot>)>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self {
            journal,
            reader,
            slots: slots
                .into_iter()
                .map(|(info, addr)| SlotEntry {
                    info,
                    addr,
                    busy: None,
                })
                .collect(),
            queue: VecDeque::new(),
            ready,
            queue_wait: None,
            slurm: None,
            outstanding: Outstanding::default(),
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

    /// Sends `msg` to the journal; the answer is awaited off the dispatcher's context
    /// too, so that it is counted as answered even when a restart dropped the future
    /// that waited for it.
    fn journaled<M>(&self, msg: M) -> impl std::future::Future<Output = Appended> + 'static
    where
        M: Message<Result = Result<Vec<Seq>, AppendError>> + Send + 'static,
        Journal: Handler<M>,
    {
        let request = self.journal.send(msg);
        let counted = self.outstanding.enter();
        let answer = actix_rt::spawn(async move {
            let answer = request.await;
            drop(counted);
            answer
        });
        async move { answer.await.unwrap_or(Err(MailboxError::Closed)) }
    }

    /// Removes, at start, what is left of the files of runs deleted in `data_dir`
    /// before the last stop.
    pub fn with_data_dir(mut self, data_dir: std::path::PathBuf) -> Self {
        self.data_dir = Some(data_dir);
        self
    }

    /// Hands runs with `"executor": "slurm"` to `slurm` (when there is one).
    pub fn with_slurm(mut self, slurm: Option<Addr<SlurmExecutor>>) -> Self {
        self.slurm = slurm;
        self
    }

    /// Whether the run is Slurm's to run.
    fn is_slurm(&self, run_id: RunId) -> bool {
        self.reader
            .state()
            .run(run_id)
            .is_some_and(|r| !r.executor.is_local())
    }

    /// Submits the run's next Slurm job and waits until it is journaled.
    fn launch(
        &self,
        run_id: RunId,
    ) -> impl std::future::Future<Output = Result<(), DispatchError>> + 'static {
        let slurm = self.slurm.clone();
        async move {
            let Some(slurm) = slurm else {
                return Err(DispatchError::Conflict(
                    "the Slurm executor is not enabled on this server (executors.slurm.enabled)"
                        .into(),
                ));
            };
            match slurm.send(Launch { run_id }).await {
                Ok(Ok(())) => Ok(()),
                // The run stays queued; the executor tries again.
                Ok(Err(message)) => {
                    tracing::warn!(%run_id, %message, "slurm job not submitted yet");
                    Ok(())
                }
                Err(_) => Err(DispatchError::Append(AppendError::Stopped)),
            }
        }
    }

    /// Tells the Slurm executor to stop the run's job.
    fn stop_job(&self, run_id: RunId) {
        if let Some(slurm) = &self.slurm {
            slurm.do_send(StopJob { run_id });
        }
    }

    /// Also records, in `queue_wait` (seconds), how long each run waited in the queue
    /// before its slots were claimed.
    pub fn with_queue_wait_histogram(mut self, queue_wait: prometheus::Histogram) -> Self {
        self.queue_wait = Some(queue_wait);
        self
    }

    /// Rebuilds the queue and slot occupancy from the published state; runs waiting
    /// out a retry delay join the queue when it is over.
    fn rebuild(&mut self, ctx: &mut Context<Self>) {
        let state = self.reader.state();
        let mut waiting = Vec::new();
        self.queue = state
            .queue()
            .into_iter()
            .filter(|id| match retry_wait(state.run(*id)) {
                Some(wait) => {
                    waiting.push((*id, wait));
                    false
                }
                None => true,
            })
            .map(|id| (id, state.run(id).map_or(0, |r| r.priority)))
            .collect();
        for entry in &mut self.slots {
            entry.busy = state.slots().holder(entry.info.id).map(|h| h.run_id);
        }
        drop(state);
        for (id, wait) in waiting {
            self.enqueue_after(id, wait, ctx);
        }
    }

    /// Queues `run_id` after `wait`, if it is still queued then.
    fn enqueue_after(&mut self, run_id: RunId, wait: std::time::Duration, ctx: &mut Context<Self>) {
        tracing::info!(run_id = %run_id, wait_ms = wait.as_millis() as u64, "retry scheduled");
        ctx.run_later(wait, move |dispatcher, ctx| {
            fault::guard(dispatcher, ctx, "retry", |dispatcher, ctx| {
                let queued = dispatcher
                    .reader
                    .state()
                    .run(run_id)
                    .is_some_and(|r| r.state == RunState::Queued);
                if queued && !dispatcher.queue.iter().any(|(id, _)| *id == run_id) {
                    dispatcher.enqueue(run_id);
                    dispatcher.schedule(ctx);
                }
            });
        });
    }

    /// Starts queued runs, in queue order, while the run at the head finds enough free
    /// slots. A run needing `k` slots claims all `k` in one journal append, or waits
    /// holding none; the runs behind it wait too, so it is not starved.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        while let Some(&(run_id, _)) = self.queue.front() {
            let (spec, attempt, resume, queued_since) = {
                let state = self.reader.state();
                let Some(run) = state
                    .run(run_id)
                    .filter(|r| r.state == RunState::Queued && r.executor.is_local())
                else {
                    self.queue.pop_front();
                    continue;
                };
                // An attempt continues from the run's newest checkpoint.
                let resume = Resume::of(run);
                (
                    serde_json::from_str::<RunSpec>(run.spec.get()),
                    run.attempt + 1,
                    resume,
                    // A queued run's last event put it in the queue (submitted,
                    // requeued, resumed, or its retry scheduled).
                    run.updated_at,
                )
            };
            let spec = match spec {
                Ok(spec) => spec,
                Err(e) => {
                    self.queue.pop_front();
                    let failed = Event::RunFailed {
                        reason: format!("stored spec is unreadable: {e}"),
                    };
                    self.journal.do_send(Append::one(run_id, failed));
                    continue;
                }
            };
            let wanted = spec.slots.max(1) as usize;
            let free: Vec<usize> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.busy.is_none())
                .map(|(i, _)| i)
                .take(wanted)
                .collect();
            if free.len() < wanted {
                return;
            }
            self.queue.pop_front();
            for &i in &free {
                self.slots[i].busy = Some(run_id);
            }
            let slots: Vec<SlotId> = free.iter().map(|&i| self.slots[i].info.id).collect();
            let claims = slots
                .iter()
                .map(|slot| (run_id, Event::SlotClaimed { slot: *slot }))
                .collect();
            let claim = self.journaled(Append { records: claims });
            let claimed = claim.into_actor(self).map(move |result, dispatcher, ctx| {
                match answered(result) {
                    Ok(_) => {
                        tracing::info!(run_id = %run_id, slots = ?slots, attempt, "slots claimed");
                        if let Some(queue_wait) = &dispatcher.queue_wait {
                            let waited = chrono::Utc::now().signed_duration_since(queued_since);
                            queue_wait.observe(waited.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
                        }
                        dispatcher.slots[free[0]].addr.do_send(StartRun {
                            run_id,
                            spec,
                            attempt,
                            resume,
                            slots,
                            freed: ctx.address().recipient(),
                        });
                    }
                    Err(AppendError::Rejected(rejection)) => {
                        // The run was cancelled meanwhile: nothing to start.
                        tracing::info!(run_id = %run_id, %rejection, "claim refused");
                        for &i in &free {
                            dispatcher.slots[i].busy = None;
                        }
                        dispatcher.schedule(ctx);
                    }
                    Err(e) => {
                        tracing::error!(run_id = %run_id, error = %e, "claim not journaled; run stays queued");
                        for &i in &free {
                            dispatcher.slots[i].busy = None;
                        }
                        dispatcher.requeue_at_front(run_id);
                        // Try again once the journal may take writes again.
                        ctx.run_later(super::journal::RECOVERY_INTERVAL, |dispatcher, ctx| {
                            fault::guard(dispatcher, ctx, "schedule", Self::schedule);
                        });
                    }
                }
            });
            ctx.spawn(fault::guarded_unit("claim answer", claimed));
        }
    }

    /// Puts a run in the queue after every run of the same or a higher priority.
    fn enqueue(&mut self, run_id: RunId) {
        let mine = self.priority_of(run_id);
        let at = self
            .queue
            .iter()
            .position(|(_, priority)| *priority < mine)
            .unwrap_or(self.queue.len());
        self.queue.insert(at, (run_id, mine));
    }

    /// Puts a run taken from the head back there (its claim was not journaled).
    fn requeue_at_front(&mut self, run_id: RunId) {
        let priority = self.priority_of(run_id);
        self.queue.push_front((run_id, priority));
    }

    fn priority_of(&self, run_id: RunId) -> i32 {
        self.reader.state().run(run_id).map_or(0, |r| r.priority)
    }

    fn take_from_queue(&mut self, run_id: RunId) -> bool {
        match self.queue.iter().position(|(id, _)| *id == run_id) {
            Some(position) => {
                self.queue.remove(position);
                true
            }
            None => false,
        }
    }

    /// Journals the event that stops a run (cancel or pause): done at once when
    /// `immediate`, else a request its thread acts on. Answers whether it was
    /// immediate; a refused transition becomes a conflict worded by `conflict`, and a
    /// run taken from the queue goes back to it when the journal fails.
    fn stop(
        &mut self,
        run_id: RunId,
        event: Event,
        immediate: bool,
        requeue_on_error: bool,
        conflict: impl FnOnce(RunState) -> String + 'static,
    ) -> impl ActorFuture<Self, Output = Result<bool, DispatchError>> {
        let append = self.journaled(Append::one(run_id, event));
        append
            .into_actor(self)
            .map(move |result, dispatcher, _ctx| match answered(result) {
                Ok(_) => Ok(immediate),
                Err(AppendError::Rejected(Rejection::Transition { from, .. })) => {
                    Err(DispatchError::Conflict(conflict(from)))
                }
                Err(e) => {
                    if requeue_on_error {
                        dispatcher.requeue_at_front(run_id);
                    }
                    Err(e.into())
                }
            })
    }

    /// The slots a run holds (the slot actor running it ignores messages for others).
    fn slots_of(&self, run_id: RunId) -> impl Iterator<Item = &SlotEntry> + '_ {
        self.slots.iter().filter(move |s| s.busy == Some(run_id))
    }

    /// Recovery (at the first start), or the queue rebuilt from the journal (after a
    /// restart).
    fn begin(&mut self, ctx: &mut Context<Self>) {
        if self.recovered {
            self.rebuild(ctx);
            self.reconcile(ctx);
            self.schedule(ctx);
        } else {
            self.recover_at_start(ctx);
        }
    }

    /// After a restart, does again what the answers its old context lost would have
    /// done, as the journal's state calls for: a run claimed but not started is handed
    /// to its first slot (which ignores a run it already runs), and a cancel or pause
    /// asked for is passed on to the run's slots again (both are flags: twice is once).
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        {
            let state = self.reader.state();
            for run in state
                .runs()
                .filter(|r| r.state.is_live() && r.executor.is_local())
            {
                if run.cancel_requested {
                    stops.push((run.id, true));
                } else if run.state == RunState::Pausing {
                    stops.push((run.id, false));
                }
                if let (RunState::Starting, Some(first)) = (run.state, run.slot) {
                    match serde_json::from_str::<RunSpec>(run.spec.get()) {
                        Ok(spec) => starts.push(StartRun {
                            run_id: run.id,
                            spec,
                            attempt: run.attempt + 1,
                            resume: Resume::of(run),
                            slots: run.slots.clone(),
                            freed: ctx.address().recipient(),
                        }),
                        Err(e) => {
                            tracing::warn!(run_id = %run.id, slot = %first, error = %e, "claimed run's stored spec is unreadable; not started")
                        }
                    }
                }
            }
        }
        for start in starts {
            let first = start.slots.first().copied();
            if let Some(entry) = self.slots.iter().find(|s| Some(s.info.id) == first) {
                tracing::info!(run_id = %start.run_id, slot = %entry.info.id, "handing a run claimed before the restart to its slot");
                entry.addr.do_send(start);
            }
        }
        for (run_id, cancel) in stops {
            for entry in self.slots_of(run_id) {
                if cancel {
                    entry.addr.do_send(CancelOnSlot { run_id });
                } else {
                    entry.addr.do_send(PauseOnSlot { run_id });
                }
            }
        }
    }

    /// Journals the recovery of runs left live by the last stop, then starts
    /// scheduling and says the server is ready.
    fn recover_at_start(&mut self, ctx: &mut Context<Self>) {
        let records = self.reader.state().recovery();
        let recovered = records.len();
        let append = self.journaled(Append { records });
        // `wait` holds every other message until recovery is journaled.
        let journaled = append.into_actor(self).map(move |result, dispatcher, ctx| {
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
            dispatcher.rebuild(ctx);
            dispatcher.ready.store(true, Ordering::Release);
            dispatcher.schedule(ctx);
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
            let settled = fut::wrap_future::<_, Self>(self.outstanding.settled())
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
            outstanding = *self.outstanding.0.borrow(),
            "dispatcher restarted; rebuilding from the journal once it answered what was sent"
        );
        self.restarted = true;
    }
}

/// How long a queued run still waits out its retry delay, if it does.
fn retry_wait(run: Option<&crate::domain::Run>) -> Option<std::time::Duration> {
    let not_before = run?.not_before?;
    (not_before - chrono::Utc::now()).to_std().ok()
}

/// What a submission did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// The run's id (the existing run's, for a duplicate).
    pub run_id: RunId,
    /// False when a run with the same digest already existed.
    pub created: bool,
}

/// Submits a run: journals `RunSubmitted`, then queues it.
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
        let slurm = !msg.spec.executor.is_local();
        if slurm && self.slurm.is_none() {
            return Box::pin(fut::ready(Err(DispatchError::Conflict(
                "the Slurm executor is not enabled on this server (executors.slurm.enabled)".into(),
            ))));
        }
        let event = Event::RunSubmitted {
            name: msg.spec.name.clone(),
            digest: msg.spec.digest(),
            spec: msg.spec.canonical_json(),
        };
        let mut records = vec![(run_id, event)];
        records.extend(msg.trace.map(|trace| (run_id, trace)));
        let append: std::pin::Pin<Box<dyn std::future::Future<Output = Appended>>> = if msg.rerun {
            Box::pin(self.journaled(AppendAllowingDuplicate { records }))
        } else {
            Box::pin(self.journaled(Append { records }))
        };
        Box::pin(
            append
                .into_actor(self)
                .then(move |result, dispatcher, ctx| {
                    let answer = match answered(result) {
                        Ok(_) if slurm => {
                            // The job id is journaled before the submit is answered.
                            let launched = dispatcher.launch(run_id);
                            let answer =
                                launched.into_actor(dispatcher).map(move |launched, _, _| {
                                    launched.map(|()| Submitted {
                                        run_id,
                                        created: true,
                                    })
                                });
                            return Box::pin(answer) as Later<Result<Submitted, DispatchError>>;
                        }
                        Ok(_) => {
                            dispatcher.enqueue(run_id);
                            dispatcher.schedule(ctx);
                            Ok(Submitted {
                                run_id,
                                created: true,
                            })
                        }
                        Err(AppendError::Rejected(Rejection::Duplicate { existing })) => {
                            Ok(Submitted {
                                run_id: existing,
                                created: false,
                            })
                        }
                        Err(e) => Err(e.into()),
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
        let immediate = match state {
            None => return Box::pin(fut::ready(Err(DispatchError::NotFound(run_id)))),
            Some(s) if s.is_terminal() => {
                let message = format!("run {run_id} is already {}", s.name());
                return Box::pin(fut::ready(Err(DispatchError::Conflict(message))));
            }
            Some(RunState::Paused) => true,
            Some(_) => self.take_from_queue(run_id),
        };
        let event = if immediate {
            Event::RunCancelled {
                reason: "cancelled by request before it started".into(),
            }
        } else {
            Event::CancelRequested
        };
        let requeue = immediate && state == Some(RunState::Queued);
        let stop = self.stop(run_id, event, immediate, requeue, move |from| {
            format!("run {run_id} is already {}", from.name())
        });
        let slurm = self.is_slurm(run_id);
        Box::pin(stop.map(move |result, dispatcher, _ctx| {
            let immediate = result?;
            if slurm && !immediate {
                dispatcher.stop_job(run_id);
            }
            if !immediate {
                for entry in dispatcher.slots_of(run_id) {
                    entry.addr.do_send(CancelOnSlot { run_id });
                }
            }
            Ok(if immediate {
                CancelOutcome::Cancelled
            } else {
                CancelOutcome::Requested
            })
        }))
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
        let immediate = match state {
            None => return Box::pin(fut::ready(Err(DispatchError::NotFound(run_id)))),
            Some(RunState::Queued) if self.take_from_queue(run_id) => true,
            // A Slurm job not yet started is simply cancelled in Slurm.
            Some(RunState::Queued) if self.is_slurm(run_id) => true,
            Some(RunState::Running) => false,
            Some(other) => {
                let message = format!(
                    "run {run_id} is {}; only a queued or running run can be paused",
                    other.name()
                );
                return Box::pin(fut::ready(Err(DispatchError::Conflict(message))));
            }
        };
        let event = if immediate {
            Event::RunPaused {
                reason: "paused by request before it started".into(),
            }
        } else {
            Event::PauseRequested
        };
        let requeue = immediate && !self.is_slurm(run_id);
        let stop = self.stop(run_id, event, immediate, requeue, move |from| {
            format!(
                "run {run_id} is {}; only a queued or running run can be paused",
                from.name()
            )
        });
        let slurm = self.is_slurm(run_id);
        Box::pin(stop.map(move |result, dispatcher, _ctx| {
            let immediate = result?;
            if slurm {
                dispatcher.stop_job(run_id);
            }
            if !immediate {
                for entry in dispatcher.slots_of(run_id) {
                    entry.addr.do_send(PauseOnSlot { run_id });
                }
            }
            Ok(if immediate {
                PauseOutcome::Paused
            } else {
                PauseOutcome::Requested
            })
        }))
    }
}

/// Puts a paused run back in the queue; it continues from its checkpoint.
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
        match self.reader.state().run(run_id).map(|r| r.state) {
            None => return Box::pin(fut::ready(Err(DispatchError::NotFound(run_id)))),
            Some(RunState::Paused) => {}
            Some(other) => {
                let message = format!(
                    "run {run_id} is {}; only a paused run can be resumed",
                    other.name()
                );
                return Box::pin(fut::ready(Err(DispatchError::Conflict(message))));
            }
        }
        let append = self.journaled(Append::one(run_id, Event::RunResumed));
        let slurm = self.is_slurm(run_id);
        Box::pin(
            append
                .into_actor(self)
                .then(move |result, dispatcher, ctx| {
                    let answer = match answered(result) {
                        // A new job resumes from the checkpoint in the shared directory.
                        Ok(_) if slurm => {
                            return Box::pin(dispatcher.launch(run_id).into_actor(dispatcher))
                                as Later<_>;
                        }
                        Ok(_) => {
                            dispatcher.enqueue(run_id);
                            dispatcher.schedule(ctx);
                            Ok(())
                        }
                        Err(AppendError::Rejected(Rejection::Transition { from, .. })) => {
                            Err(DispatchError::Conflict(format!(
                                "run {run_id} is {}; only a paused run can be resumed",
                                from.name()
                            )))
                        }
                        Err(e) => Err(e.into()),
                    };
                    Box::pin(fut::ready(answer)) as Later<_>
                }),
        )
    }
}

impl Handler<SlotFreed> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: SlotFreed, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "slot freed", |dispatcher, ctx| {
            dispatcher.slot_freed(msg, ctx)
        });
    }
}

impl Dispatcher {
    fn slot_freed(&mut self, msg: SlotFreed, ctx: &mut Context<Self>) {
        for entry in self.slots.iter_mut().filter(|s| s.busy == Some(msg.run_id)) {
            entry.busy = None;
        }
        // A failed attempt with retries left is queued again after its delay.
        let retry = {
            let state = self.reader.state();
            let run = state.run(msg.run_id);
            run.filter(|r| r.state == RunState::Queued)
                .map(|r| retry_wait(Some(r)).unwrap_or_default())
        };
        if let Some(wait) = retry {
            self.enqueue_after(msg.run_id, wait, ctx);
        }
        self.schedule(ctx);
    }
}
