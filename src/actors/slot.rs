//! A slot actor owns one device (a GPU, or a share of the CPU) and runs at most one
//! run on it at a time: it starts the run actor the local executor gives it, forwards
//! cancels to it, and tells the local executor when the slot is free again.
//!
//! A panic in one of its handlers restarts it (see [`super::fault`]); the restart
//! keeps the run actor it started, and re-derives from the journal what a lost
//! message would have told it: a run claimed on this slot that no run actor runs
//! yet is started, and a run actor that went away without saying so frees the slot.

use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::fault::{self, ActorKind, Recover};
use super::journal::{Journal, JournalReader};
use super::run::{device_name, Cancel, CommandBoard, Pause, Resume, RunActor, RunEnded, RunSetup};
use super::ticker::Ticker;
use crate::domain::{RunId, RunSpec, RunState, SlotId};
use crate::train::data::DataRoots;

/// A slot as shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotInfo {
    /// The slot's index.
    pub id: SlotId,
    /// Its torch device, e.g. `cpu` or `cuda:0`.
    pub device: String,
}

/// What every slot hands to the run actors it starts.
#[derive(Clone)]
pub struct SlotContext {
    /// The journal.
    pub journal: Addr<Journal>,
    /// Read access to the journal.
    pub reader: JournalReader,
    /// The ticker sampling live runs.
    pub ticker: Addr<Ticker>,
    /// The ticker period.
    pub tick: Duration,
    /// Every slot's device, by slot id: a run on several slots gets theirs.
    pub devices: std::sync::Arc<[tch::Device]>,
    /// The server's data directory.
    pub data_dir: std::path::PathBuf,
    /// Where data files may be read from.
    pub roots: DataRoots,
    /// Where command runs publish their live figures.
    pub commands: CommandBoard,
    /// Log rotation for command runs (`[runs]`).
    pub command_settings: crate::train::command::CommandSettings,
    /// Where slots and run actors count their restarts after a panic.
    pub instruments: crate::instruments::Instruments,
}

/// The slot actor.
pub struct Slot {
    id: SlotId,
    device: tch::Device,
    context: SlotContext,
    current: Option<(RunId, Addr<RunActor>)>,
    /// Told when the slot is free again (the local executor).
    freed: Option<Recipient<SlotFreed>>,
    /// Restarts after a panic in a handler.
    restarts: prometheus::IntCounter,
}

impl Slot {
    /// A slot for `device`.
    pub fn new(id: SlotId, device: tch::Device, context: SlotContext) -> Self {
        let restarts = context.instruments.actor_restarts(ActorKind::Slot.name());
        Self {
            id,
            device,
            context,
            current: None,
            freed: None,
            restarts,
        }
    }

    /// What the API shows of this slot.
    pub fn info(&self) -> SlotInfo {
        SlotInfo {
            id: self.id,
            device: device_name(self.device),
        }
    }
}

impl Slot {
    /// Starts the run actor of an attempt, unless this slot already runs that run
    /// (a start re-derived after a restart, then the message it stood in for).
    fn start_run(&mut self, attempt: Attempt, ctx: &mut Context<Self>) {
        if let Some((run_id, addr)) = &self.current {
            if *run_id == attempt.run_id && addr.connected() {
                tracing::debug!(run_id = %run_id, slot = %self.id, "run already started on this slot");
                return;
            }
        }
        let actor = RunActor::new(RunSetup {
            run_id: attempt.run_id,
            spec: attempt.spec,
            attempt: attempt.attempt,
            resume: attempt.resume,
            slot: self.id,
            devices: attempt
                .slots
                .iter()
                .map(|slot| {
                    let device = self.context.devices.get(slot.0 as usize).copied();
                    device.unwrap_or(self.device)
                })
                .collect(),
            slots: attempt.slots,
            device: self.device,
            data_dir: self.context.data_dir.clone(),
            roots: self.context.roots.clone(),
            journal: self.context.journal.clone(),
            reader: self.context.reader.clone(),
            ticker: self.context.ticker.clone(),
            ended: ctx.address().recipient(),
            tick: self.context.tick,
            commands: self.context.commands.clone(),
            command_settings: self.context.command_settings,
            restarts: self
                .context
                .instruments
                .actor_restarts(ActorKind::Run.name()),
        });
        self.current = Some((attempt.run_id, actor.start()));
    }

    /// After a restart: what the journal says this slot should be doing, where a lost
    /// message left it otherwise.
    fn rederive(&mut self, ctx: &mut Context<Self>) {
        if let Some((run_id, addr)) = &self.current {
            if addr.connected() {
                // Its run actor is not part of the restart and carries on.
                return;
            }
            // The run actor went away without its `RunEnded` being handled: once the
            // journal has the slot back, the dispatcher may give it to the next run.
            let run_id = *run_id;
            let released = self
                .context
                .reader
                .state()
                .slots()
                .holder(self.id)
                .is_none_or(|h| h.run_id != run_id);
            if released {
                self.current = None;
                self.slot_freed(run_id);
            }
            return;
        }
        // A run claimed with this slot first and not started: its `StartRun` was lost.
        let claimed = {
            let state = self.context.reader.state();
            let claimed = state
                .runs()
                .find(|r| {
                    r.slot == Some(self.id)
                        && r.state == RunState::Starting
                        && r.executor.is_local()
                })
                .map(|run| {
                    (
                        run.id,
                        serde_json::from_str::<RunSpec>(run.spec.get()),
                        run.attempt + 1,
                        Resume::of(run),
                        run.slots.clone(),
                    )
                });
            claimed
        };
        let Some((run_id, spec, attempt, resume, slots)) = claimed else {
            return;
        };
        match spec {
            Ok(spec) => {
                tracing::info!(run_id = %run_id, slot = %self.id, attempt, "starting the run claimed on this slot before the restart");
                self.start_run(
                    Attempt {
                        run_id,
                        spec,
                        attempt,
                        resume,
                        slots,
                    },
                    ctx,
                );
            }
            // The dispatcher fails such a run when it reads the spec; nothing to start.
            Err(e) => {
                tracing::warn!(run_id = %run_id, slot = %self.id, error = %e, "claimed run's stored spec is unreadable")
            }
        }
    }

    fn slot_freed(&self, run_id: RunId) {
        if let Some(freed) = &self.freed {
            freed.do_send(SlotFreed {
                slot: self.id,
                run_id,
            });
        }
    }
}

/// What a run actor is started with, besides what the slot itself holds.
struct Attempt {
    run_id: RunId,
    spec: RunSpec,
    attempt: u32,
    resume: Option<Resume>,
    slots: Vec<SlotId>,
}

impl Actor for Slot {
    type Context = Context<Self>;
}

impl Recover for Slot {
    const KIND: ActorKind = ActorKind::Slot;

    fn recover(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Supervised for Slot {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        self.restarts.inc();
        tracing::info!(slot = %self.id, running = ?self.current.as_ref().map(|(id, _)| *id), "slot restarted");
        self.rederive(ctx);
    }
}

/// Starts an attempt of a run on this slot (the claim is already journaled).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StartRun {
    /// The run.
    pub run_id: RunId,
    /// Its spec.
    pub spec: RunSpec,
    /// The attempt number.
    pub attempt: u32,
    /// The checkpoint to continue from.
    pub resume: Option<Resume>,
    /// Every slot claimed for the run, this one first.
    pub slots: Vec<SlotId>,
    /// Told when the slot is free again (the local executor).
    pub freed: Recipient<SlotFreed>,
}

impl Handler<StartRun> for Slot {
    type Result = ();

    #[tracing::instrument(skip_all, fields(run_id = %msg.run_id, slot = %self.id))]
    fn handle(&mut self, msg: StartRun, ctx: &mut Self::Context) {
        // Kept before anything that could panic: a slot that restarts and starts the
        // run from the journal still tells the dispatcher when it ends.
        self.freed = Some(msg.freed);
        let attempt = Attempt {
            run_id: msg.run_id,
            spec: msg.spec,
            attempt: msg.attempt,
            resume: msg.resume,
            slots: msg.slots,
        };
        fault::guard(self, ctx, "start run", |slot, ctx| {
            fault::point(ActorKind::Slot);
            slot.start_run(attempt, ctx);
        });
    }
}

/// Forwards a cancel to the run on this slot, if it is the one named.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CancelOnSlot {
    /// The run to cancel.
    pub run_id: RunId,
}

impl Handler<CancelOnSlot> for Slot {
    type Result = ();

    fn handle(&mut self, msg: CancelOnSlot, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "cancel", |slot, _| {
            if let Some((run_id, addr)) = &slot.current {
                if *run_id == msg.run_id {
                    addr.do_send(Cancel);
                }
            }
        });
    }
}

/// Forwards a pause to the run on this slot, if it is the one named.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PauseOnSlot {
    /// The run to pause.
    pub run_id: RunId,
}

impl Handler<PauseOnSlot> for Slot {
    type Result = ();

    fn handle(&mut self, msg: PauseOnSlot, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "pause", |slot, _| {
            if let Some((run_id, addr)) = &slot.current {
                if *run_id == msg.run_id {
                    addr.do_send(Pause);
                }
            }
        });
    }
}

/// Sent when a run's slot release is durable: the slot can take the next run.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SlotFreed {
    /// The run's first slot (every slot the run held is free).
    pub slot: SlotId,
    /// The run that held it.
    pub run_id: RunId,
}

impl Handler<RunEnded> for Slot {
    type Result = ();

    fn handle(&mut self, msg: RunEnded, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "run ended", |slot, _| {
            if slot.current.as_ref().map(|(id, _)| *id) == Some(msg.run_id) {
                slot.current = None;
            }
            slot.slot_freed(msg.run_id);
        });
    }
}
