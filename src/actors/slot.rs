//! A slot actor owns one device (a GPU, or a share of the CPU) and runs at most one
//! run on it at a time: it starts the run actor the dispatcher gives it, forwards
//! cancels to it, and tells the dispatcher when the slot is free again.

use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::dispatcher::{Dispatcher, SlotFreed};
use super::journal::{Journal, JournalReader};
use super::run::{device_name, Cancel, CommandBoard, Pause, Resume, RunActor, RunSetup};
use super::ticker::Ticker;
use crate::domain::{RunId, RunSpec, SlotId};
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
    /// The server's data directory.
    pub data_dir: std::path::PathBuf,
    /// Where data files may be read from.
    pub roots: DataRoots,
    /// Where command runs publish their live figures.
    pub commands: CommandBoard,
    /// Log rotation for command runs (`[runs]`).
    pub command_settings: crate::train::command::CommandSettings,
}

/// The slot actor.
pub struct Slot {
    id: SlotId,
    device: tch::Device,
    context: SlotContext,
    current: Option<(RunId, Addr<RunActor>)>,
    dispatcher: Option<Addr<Dispatcher>>,
}

impl Slot {
    /// A slot for `device`.
    pub fn new(id: SlotId, device: tch::Device, context: SlotContext) -> Self {
        Self {
            id,
            device,
            context,
            current: None,
            dispatcher: None,
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

impl Actor for Slot {
    type Context = Context<Self>;
}

impl Supervised for Slot {}

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
    /// The dispatcher, told when the slot is free again.
    pub dispatcher: Addr<Dispatcher>,
}

impl Handler<StartRun> for Slot {
    type Result = ();

    #[tracing::instrument(skip_all, fields(run_id = %msg.run_id, slot = %self.id))]
    fn handle(&mut self, msg: StartRun, ctx: &mut Self::Context) {
        self.dispatcher = Some(msg.dispatcher);
        let actor = RunActor::new(RunSetup {
            run_id: msg.run_id,
            spec: msg.spec,
            attempt: msg.attempt,
            resume: msg.resume,
            slot: self.id,
            slots: msg.slots,
            device: self.device,
            data_dir: self.context.data_dir.clone(),
            roots: self.context.roots.clone(),
            journal: self.context.journal.clone(),
            reader: self.context.reader.clone(),
            ticker: self.context.ticker.clone(),
            slot_addr: ctx.address(),
            tick: self.context.tick,
            commands: self.context.commands.clone(),
            command_settings: self.context.command_settings,
        });
        self.current = Some((msg.run_id, actor.start()));
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

    fn handle(&mut self, msg: CancelOnSlot, _ctx: &mut Self::Context) {
        if let Some((run_id, addr)) = &self.current {
            if *run_id == msg.run_id {
                addr.do_send(Cancel);
            }
        }
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

    fn handle(&mut self, msg: PauseOnSlot, _ctx: &mut Self::Context) {
        if let Some((run_id, addr)) = &self.current {
            if *run_id == msg.run_id {
                addr.do_send(Pause);
            }
        }
    }
}

/// Sent by the run actor once its final events (and the slot's release) are durable.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunEnded {
    /// The run that ended.
    pub run_id: RunId,
    /// The slot it released.
    pub slot: SlotId,
}

impl Handler<RunEnded> for Slot {
    type Result = ();

    fn handle(&mut self, msg: RunEnded, _ctx: &mut Self::Context) {
        if self.current.as_ref().map(|(id, _)| *id) == Some(msg.run_id) {
            self.current = None;
        }
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.do_send(SlotFreed {
                slot: msg.slot,
                run_id: msg.run_id,
            });
        }
    }
}
