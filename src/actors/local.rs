//! The local executor: the side of the [executor seam](super::executor) that trains
//! runs on this server's own slots. It keeps the queue of runs waiting for slots
//! (by priority, then submission) and hands each to free slot actors, journaling the
//! claim first; a run needing `k` slots claims all `k` in one append or waits
//! holding none, and the runs behind it wait too, so it is not starved. A failed
//! attempt with retries left joins the queue again after its delay.
//!
//! It looks at its runs only once the dispatcher's recovery at start is journaled
//! (the first [`Resync`]). A panic in one of its handlers restarts it (see
//! [`super::fault`]): it waits until the journal has answered every claim its old
//! context sent, then rebuilds the queue and the slots' occupancy from the journal's
//! state and does again what the lost answers would have done (hands claimed runs to
//! their slot, passes cancels and pauses on).

use std::collections::VecDeque;

use actix::prelude::*;

use super::executor::{Launch, Restore, Resync, Stop, StopWhy, Withdraw};
use super::fault::{self, ActorKind, Recover};
use super::in_flight::InFlight;
use super::journal::{answered, Append, AppendError, JournalReader};
use super::run::Resume;
use super::slot::{CancelOnSlot, PauseOnSlot, Slot, SlotFreed, SlotInfo, StartRun};
use crate::domain::{Event, RunId, RunSpec, RunState, SlotId};
use crate::telemetry::work;

struct SlotEntry {
    info: SlotInfo,
    addr: Addr<Slot>,
    busy: Option<RunId>,
}

/// The local executor actor.
pub struct LocalExecutor {
    journal: InFlight,
    reader: JournalReader,
    slots: Vec<SlotEntry>,
    /// Queued runs in the order they are served, each with its priority (so placing
    /// a new one reads no run from the state).
    queue: VecDeque<(RunId, i32)>,
    /// Where queue wait times are recorded, if anywhere.
    queue_wait: Option<prometheus::Histogram>,
    /// Whether the first [`Resync`] came (before it, the journal still holds runs
    /// left live by the last stop).
    begun: bool,
    /// Set by a restart, for `started` to wait for the journal first.
    restarted: bool,
    /// Where restarts after a panic are counted, if anywhere.
    restarts: Option<prometheus::IntCounter>,
}

impl LocalExecutor {
    /// The local executor over the given slots.
    pub fn new(
        journal: InFlight,
        reader: JournalReader,
        slots: Vec<(SlotInfo, Addr<Slot>)>,
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
            queue_wait: None,
            begun: false,
            restarted: false,
            restarts: None,
        }
    }

    /// Also records, in `queue_wait` (seconds), how long each run waited in the queue
    /// before its slots were claimed.
    pub fn with_queue_wait_histogram(mut self, queue_wait: prometheus::Histogram) -> Self {
        self.queue_wait = Some(queue_wait);
        self
    }

    /// Also counts in `restarts` each restart after a panic in a handler.
    pub fn with_restart_counter(mut self, restarts: prometheus::IntCounter) -> Self {
        self.restarts = Some(restarts);
        self
    }

    /// Waits until the journal answered every claim sent, then rebuilds from its
    /// state, does what lost answers owed and schedules; `wait` holds every other
    /// message meanwhile.
    fn resync(&mut self, ctx: &mut Context<Self>) {
        self.begun = true;
        let settled = fut::wrap_future::<_, Self>(self.journal.settled()).map(|(), local, ctx| {
            local.rebuild(ctx);
            local.reconcile(ctx);
            local.schedule(ctx);
        });
        ctx.wait(fault::guarded_unit("resync", settled));
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

    /// Does again what lost answers would have done, as the journal's state calls
    /// for: a run claimed but not started is handed to its first slot (which ignores a
    /// run it already runs), and a cancel or pause asked for is passed on to the run's
    /// slots again (both are flags: twice is once).
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
                    stops.push((run.id, StopWhy::Cancel));
                } else if run.state == RunState::Pausing {
                    stops.push((run.id, StopWhy::Pause));
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
        for (run_id, why) in stops {
            self.signal(run_id, why);
        }
    }

    /// Passes a cancel or pause on to the slots that run `run_id`.
    fn signal(&self, run_id: RunId, why: StopWhy) {
        for entry in self.slots.iter().filter(|s| s.busy == Some(run_id)) {
            match why {
                StopWhy::Cancel => entry.addr.do_send(CancelOnSlot { run_id }),
                StopWhy::Pause => entry.addr.do_send(PauseOnSlot { run_id }),
            }
        }
    }

    /// Queues `run_id` after `wait`, if it is still queued then.
    fn enqueue_after(&mut self, run_id: RunId, wait: std::time::Duration, ctx: &mut Context<Self>) {
        tracing::info!(run_id = %run_id, wait_ms = wait.as_millis() as u64, "retry scheduled");
        ctx.run_later(wait, move |local, ctx| {
            fault::guard(local, ctx, "retry", |local, ctx| {
                let queued = local
                    .reader
                    .state()
                    .run(run_id)
                    .is_some_and(|r| r.state == RunState::Queued);
                if queued && !local.queue.iter().any(|(id, _)| *id == run_id) {
                    local.enqueue(run_id);
                    local.schedule(ctx);
                }
            });
        });
    }

    /// Starts queued runs, in queue order, while the run at the head finds enough free
    /// slots. A run needing `k` slots claims all `k` in one journal append, or waits
    /// holding none; the runs behind it wait too, so it is not starved.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        while let Some(&(run_id, _)) = self.queue.front() {
            let (spec, attempt, resume, queued_since, queue_wait) = {
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
                    work::queue_wait_of(run),
                )
            };
            let spec = match spec {
                Ok(spec) => spec,
                Err(e) => {
                    self.queue.pop_front();
                    let failed = Event::RunFailed {
                        reason: format!("stored spec is unreadable: {e}"),
                    };
                    self.journal.journal().do_send(Append::one(run_id, failed));
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
            // The claim ends the run's queue wait: under it in the run's trace.
            let span = tracing::debug_span!(
                target: work::TARGET,
                parent: None,
                "slots.claim",
                runyard.run.id = %run_id,
                runyard.attempt = i64::from(attempt),
                runyard.slots = ?slots,
                runyard.slots.count = slots.len() as i64,
                runyard.queue.waiting = self.queue.len() as i64,
                runyard.outcome = tracing::field::Empty,
            );
            work::set_parent(&span, &queue_wait);
            let claim = self
                .journal
                .journaled(Append::new(claims).under(work::context_of(&span)));
            let claimed = claim.into_actor(self).map(move |result, local, ctx| {
                span.record(
                    "runyard.outcome",
                    match &result {
                        Ok(Ok(_)) => "claimed",
                        Ok(Err(AppendError::Rejected(_))) => "refused",
                        _ => "failed",
                    },
                );
                match answered(result) {
                    Ok(_) => {
                        tracing::info!(run_id = %run_id, slots = ?slots, attempt, "slots claimed");
                        if let Some(queue_wait) = &local.queue_wait {
                            let waited = chrono::Utc::now().signed_duration_since(queued_since);
                            queue_wait.observe(waited.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
                        }
                        local.slots[free[0]].addr.do_send(StartRun {
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
                            local.slots[i].busy = None;
                        }
                        local.schedule(ctx);
                    }
                    Err(e) => {
                        tracing::error!(run_id = %run_id, error = %e, "claim not journaled; run stays queued");
                        for &i in &free {
                            local.slots[i].busy = None;
                        }
                        local.requeue_at_front(run_id);
                        // Try again once the journal may take writes again.
                        ctx.run_later(super::journal::RECOVERY_INTERVAL, |local, ctx| {
                            fault::guard(local, ctx, "schedule", Self::schedule);
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

    /// Puts a run taken from the head back there (its claim or stop was not
    /// journaled).
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
}

impl Actor for LocalExecutor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Before the first resync the dispatcher is still recovering; after a restart
        // the journal still writes what the old context sent.
        if std::mem::take(&mut self.restarted) && self.begun {
            self.resync(ctx);
        }
    }
}

impl Recover for LocalExecutor {
    const KIND: ActorKind = ActorKind::Local;

    fn recover(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Supervised for LocalExecutor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if let Some(restarts) = &self.restarts {
            restarts.inc();
        }
        tracing::info!(
            outstanding = self.journal.outstanding(),
            "local executor restarted; rebuilding from the journal once it answered what was sent"
        );
        self.restarted = true;
    }
}

impl Handler<Launch> for LocalExecutor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Launch, ctx: &mut Self::Context) -> Self::Result {
        fault::guard(self, ctx, "launch", |local, ctx| {
            fault::point(ActorKind::Local);
            local.enqueue(msg.run_id);
            local.schedule(ctx);
        })
        .ok_or_else(|| "the local executor restarted; the run stays queued".to_string())
    }
}

impl Handler<Withdraw> for LocalExecutor {
    type Result = bool;

    /// A run is withdrawn while it waits in the queue (not while it waits out a retry
    /// delay, nor once its slots are claimed).
    fn handle(&mut self, msg: Withdraw, ctx: &mut Self::Context) -> bool {
        fault::guard(self, ctx, "withdraw", |local, _| {
            local.take_from_queue(msg.run_id)
        })
        .unwrap_or(false)
    }
}

impl Handler<Restore> for LocalExecutor {
    type Result = ();

    fn handle(&mut self, msg: Restore, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "restore", |local, ctx| {
            local.requeue_at_front(msg.run_id);
            local.schedule(ctx);
        });
    }
}

impl Handler<Stop> for LocalExecutor {
    type Result = ();

    fn handle(&mut self, msg: Stop, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "stop", |local, _| {
            // A withdrawn run holds no slot: nothing runs.
            if !msg.withdrawn {
                local.signal(msg.run_id, msg.why);
            }
        });
    }
}

impl Handler<Resync> for LocalExecutor {
    type Result = ();

    fn handle(&mut self, _msg: Resync, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "resync", Self::resync);
    }
}

impl Handler<SlotFreed> for LocalExecutor {
    type Result = ();

    fn handle(&mut self, msg: SlotFreed, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "slot freed", |local, ctx| {
            local.slot_freed(msg, ctx)
        });
    }
}

impl LocalExecutor {
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

/// How long a queued run still waits out its retry delay, if it does.
fn retry_wait(run: Option<&crate::domain::Run>) -> Option<std::time::Duration> {
    let not_before = run?.not_before?;
    (not_before - chrono::Utc::now()).to_std().ok()
}
