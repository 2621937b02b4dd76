//! The run actor: one per live attempt. It owns the attempt's progress cells and
//! cancel flag, starts the training thread, journals each finished epoch it finds in
//! the cells, and on the thread's end journals the outcome and the slot's release.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::journal::{Append, AppendError, Journal, JournalReader};
use super::slot::{RunEnded, Slot};
use super::ticker::{Ticker, Unwatch, Watch};
use crate::domain::{Event, RunId, RunSpec, SlotId};
use crate::train::{spawn_training, Outcome, ProgressCells, RunControl};

/// Delay before retrying a final append that the disk refused.
const FINISH_RETRY: Duration = Duration::from_secs(1);

/// Everything a run actor needs to run one attempt.
pub struct RunActor {
    run_id: RunId,
    spec: RunSpec,
    attempt: u32,
    slot: SlotId,
    device: tch::Device,
    cells: Arc<ProgressCells>,
    control: Arc<RunControl>,
    journal: Addr<Journal>,
    reader: JournalReader,
    ticker: Addr<Ticker>,
    slot_addr: Addr<Slot>,
    tick: Duration,
    /// Finished epochs already sent to the journal, so none is journaled twice.
    epochs_journaled: u64,
}

/// The parts of a run actor that come from its slot.
pub struct RunSetup {
    /// The run.
    pub run_id: RunId,
    /// Its spec.
    pub spec: RunSpec,
    /// The attempt number (1-based).
    pub attempt: u32,
    /// The slot it runs on.
    pub slot: SlotId,
    /// The slot's device.
    pub device: tch::Device,
    /// The journal.
    pub journal: Addr<Journal>,
    /// Read access to the journal.
    pub reader: JournalReader,
    /// The ticker that samples the cells.
    pub ticker: Addr<Ticker>,
    /// The slot actor to tell when the run ends.
    pub slot_addr: Addr<Slot>,
    /// How often finished epochs are looked for.
    pub tick: Duration,
}

impl RunActor {
    /// A run actor for one attempt.
    pub fn new(setup: RunSetup) -> Self {
        let batches = setup.spec.batches_per_epoch();
        let samples = u64::from(setup.spec.data.samples());
        let cells = Arc::new(ProgressCells::new(
            u64::from(setup.spec.epochs),
            batches,
            samples,
        ));
        Self {
            run_id: setup.run_id,
            spec: setup.spec,
            attempt: setup.attempt,
            slot: setup.slot,
            device: setup.device,
            cells,
            control: Arc::new(RunControl::default()),
            journal: setup.journal,
            reader: setup.reader,
            ticker: setup.ticker,
            slot_addr: setup.slot_addr,
            tick: setup.tick,
            epochs_journaled: 0,
        }
    }

    /// `EpochCompleted` events for the epochs the thread finished since the last call.
    fn new_epochs(&mut self) -> Vec<(RunId, Event)> {
        let mut events = Vec::new();
        while let Some(record) = self.cells.finished_epoch(self.epochs_journaled) {
            self.epochs_journaled += 1;
            events.push((
                self.run_id,
                Event::EpochCompleted {
                    epoch: self.epochs_journaled as u32,
                    train_loss: record.train_loss,
                    train_accuracy: record.train_accuracy,
                    duration_ms: record.duration_ms,
                },
            ));
        }
        events
    }

    fn journal_epochs(&mut self, ctx: &mut Context<Self>) {
        let records = self.new_epochs();
        if records.is_empty() {
            return;
        }
        let send = self.journal.send(Append { records });
        ctx.spawn(send.into_actor(self).map(|result, actor, _| {
            if let Err(e) = result.map_err(|_| AppendError::Stopped).and_then(|r| r) {
                tracing::warn!(run_id = %actor.run_id, error = %e, "epoch summary not journaled");
            }
        }));
    }

    fn start_thread(&mut self, ctx: &mut Context<Self>) {
        let cancelled = self
            .reader
            .state()
            .run(self.run_id)
            .is_some_and(|run| run.cancel_requested);
        if cancelled {
            self.control.cancel();
        }
        let handle = match spawn_training(
            self.run_id,
            self.spec.clone(),
            self.device,
            Arc::clone(&self.cells),
            Arc::clone(&self.control),
        ) {
            Ok(handle) => handle,
            Err(e) => {
                self.finish(
                    Outcome::Failed(format!("could not start training thread: {e}")),
                    ctx,
                );
                return;
            }
        };
        self.ticker.do_send(Watch {
            run_id: self.run_id,
            cells: Arc::clone(&self.cells),
        });
        ctx.run_interval(self.tick, |actor, ctx| actor.journal_epochs(ctx));
        ctx.spawn(handle.outcome.into_actor(self).map(|outcome, actor, ctx| {
            let outcome = outcome.unwrap_or_else(|_| {
                Outcome::Failed("training thread ended without an outcome".into())
            });
            actor.finish(outcome, ctx);
        }));
    }

    fn finish(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        let mut records = self.new_epochs();
        let terminal = match outcome {
            Outcome::Completed {
                train_loss,
                train_accuracy,
            } => Event::RunCompleted {
                train_loss,
                train_accuracy,
            },
            Outcome::Cancelled => Event::RunCancelled {
                reason: "cancelled by request".into(),
            },
            Outcome::Failed(reason) => Event::RunFailed { reason },
        };
        tracing::info!(run_id = %self.run_id, outcome = terminal.kind().name(), "training attempt ended");
        records.push((self.run_id, terminal));
        records.push((self.run_id, Event::SlotReleased { slot: self.slot }));
        // The final sample is published before the terminal event is journaled, so
        // whoever reads the terminal event can also read the progress it ended with.
        let unwatch = self.ticker.send(Unwatch {
            run_id: self.run_id,
        });
        ctx.wait(unwatch.into_actor(self).map(move |_, actor, ctx| {
            actor.append_final(records, ctx);
        }));
    }

    fn append_final(&mut self, records: Vec<(RunId, Event)>, ctx: &mut Context<Self>) {
        let send = self.journal.send(Append {
            records: records.clone(),
        });
        ctx.spawn(send.into_actor(self).map(move |result, actor, ctx| {
            match result.map_err(|_| AppendError::Stopped).and_then(|r| r) {
                Ok(_) => actor.release(ctx),
                Err(AppendError::Rejected(rejection)) => {
                    tracing::error!(run_id = %actor.run_id, %rejection, "final events refused");
                    actor.release(ctx);
                }
                Err(e) => {
                    tracing::error!(run_id = %actor.run_id, error = %e, "final events not journaled; retrying");
                    ctx.run_later(FINISH_RETRY, move |actor, ctx| actor.append_final(records, ctx));
                }
            }
        }));
    }

    fn release(&mut self, ctx: &mut Context<Self>) {
        self.slot_addr.do_send(RunEnded {
            run_id: self.run_id,
            slot: self.slot,
        });
        ctx.stop();
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let started = Event::RunStarted {
            attempt: self.attempt,
            slot: self.slot,
            device: device_name(self.device),
        };
        let send = self.journal.send(Append::one(self.run_id, started));
        ctx.wait(send.into_actor(self).map(|result, actor, ctx| {
            match result.map_err(|_| AppendError::Stopped).and_then(|r| r) {
                Ok(_) => {
                    tracing::info!(run_id = %actor.run_id, attempt = actor.attempt, slot = %actor.slot, "training attempt started");
                    actor.start_thread(ctx);
                }
                Err(e) => {
                    tracing::error!(run_id = %actor.run_id, error = %e, "could not journal the start");
                    actor.finish(Outcome::Failed(format!("could not start: {e}")), ctx);
                }
            }
        }));
    }
}

/// Asks the run to stop at its next batch boundary.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Cancel;

impl Handler<Cancel> for RunActor {
    type Result = ();

    fn handle(&mut self, _msg: Cancel, _ctx: &mut Self::Context) {
        self.control.cancel();
    }
}

/// The name of a torch device as shown in events and the API.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        tch::Device::Mps => "mps".into(),
        tch::Device::Vulkan => "vulkan".into(),
    }
}
