//! Starts the journal, the ticker (and the metrics writer it feeds), the slot actors,
//! the executors (the local one over the slots, the Slurm one when enabled) and the
//! dispatcher, each under an actix `Supervisor`: an actor that stops
//! unexpectedly is restarted in place, and its `Supervised::restarting` hook re-derives
//! its state from the journal. The metrics writer runs on a `SyncArbiter` thread
//! instead, which makes a new writer if one stops.
//!
//! actix restarts an actor only when it stops; a panic would unwind the arbiter and
//! end the server. So these actors' handlers catch their panics
//! ([`super::fault`]) and stop, and the `Supervisor` restarts them. A run actor,
//! one per attempt, hands its attempt back instead (see [`super::run`]). Each comes
//! back counted in `runyard_actor_restarts_total{actor=...}`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::dispatcher::Dispatcher;
use super::executor::{Executor, Executors};
use super::fault::ActorKind;
use super::in_flight::InFlight;
use super::journal::{Journal, JournalReader};
use super::local::LocalExecutor;
use super::metrics::MetricsSink;
use super::run::{device_name, CommandBoard};
use super::slot::{Slot, SlotContext, SlotInfo};
use super::ticker::{ProgressBoard, Ticker};
use crate::domain::{SlotId, State};
use crate::store::EventLog;
use crate::train::data::DataRoots;

/// Addresses and shared views of the running actors.
#[derive(Clone)]
pub struct Actors {
    /// The journal (writes).
    pub journal: Addr<Journal>,
    /// Read access to the journal and the state fold.
    pub reader: JournalReader,
    /// The dispatcher.
    pub dispatcher: Addr<Dispatcher>,
    /// The ticker.
    pub ticker: Addr<Ticker>,
    /// The newest progress of live runs.
    pub board: ProgressBoard,
    /// The progress history writer the ticker feeds, and its counters.
    pub metrics: MetricsSink,
    /// The live progress-pipe figures of running commands.
    pub commands: CommandBoard,
    /// The slot table.
    pub slots: Vec<SlotInfo>,
    /// True once recovery after replay is done.
    pub ready: Arc<AtomicBool>,
    /// The Prometheus instruments the actors update.
    pub instruments: crate::instruments::Instruments,
    /// The Slurm executor, when `executors.slurm.enabled`.
    pub slurm: Option<Addr<super::slurm::SlurmExecutor>>,
    /// The live Slurm view of followed runs.
    pub slurm_board: super::slurm::SlurmBoard,
    /// The sweeper: what clients ask of sweeps, and what sweeps do next.
    pub sweeper: Addr<super::sweeper::Sweeper>,
}

/// The devices slots are made for: one per CUDA device when torch sees any, otherwise
/// `cpu_slots` CPU slots.
pub fn slot_devices(cpu_slots: u32) -> Vec<tch::Device> {
    let cuda = tch::Cuda::device_count();
    if cuda > 0 {
        (0..cuda as usize).map(tch::Device::Cuda).collect()
    } else {
        (0..cpu_slots).map(|_| tch::Device::Cpu).collect()
    }
}

/// Starts every actor over a replayed log; must run inside an actix system.
// Each argument is a separate setting from a separate config section; a struct
// bundling them would only be built here.
#[allow(clippy::too_many_arguments)]
pub fn start(
    log: EventLog,
    state: State,
    devices: &[tch::Device],
    tick: Duration,
    data_dir: &std::path::Path,
    roots: &DataRoots,
    snapshot_every: u64,
    command_settings: crate::train::command::CommandSettings,
    slurm: Option<&crate::config::SlurmConfig>,
) -> Actors {
    let instruments = crate::instruments::Instruments::new();
    instruments.count_restarts_of(&ActorKind::ALL.map(ActorKind::name));
    let (journal, reader) = Journal::with_snapshots(log, state, snapshot_every);
    let journal = journal.with_instruments(instruments.clone());
    let journal = Supervisor::start(move |_| journal);
    let board = ProgressBoard::default();
    let metrics = MetricsSink::start(reader.log().clone());
    let ticker = {
        let (board, metrics, lag) = (
            board.clone(),
            metrics.clone(),
            instruments.ticker_lag.clone(),
        );
        let restarts = instruments.actor_restarts(ActorKind::Ticker.name());
        Supervisor::start(move |_| {
            Ticker::new(tick, board)
                .with_metrics(metrics)
                .with_lag_histogram(lag)
                .with_restart_counter(restarts)
        })
    };
    let commands = CommandBoard::default();
    let context = SlotContext {
        journal: journal.clone(),
        reader: reader.clone(),
        ticker: ticker.clone(),
        tick,
        devices: devices.iter().copied().collect(),
        data_dir: data_dir.to_path_buf(),
        roots: roots.clone(),
        commands: commands.clone(),
        command_settings,
        instruments: instruments.clone(),
    };
    let slots: Vec<(SlotInfo, Addr<Slot>)> = devices
        .iter()
        .enumerate()
        .map(|(i, device)| {
            let slot = Slot::new(SlotId(i as u32), *device, context.clone());
            let info = slot.info();
            (info, Supervisor::start(move |_| slot))
        })
        .collect();
    let infos: Vec<SlotInfo> = slots.iter().map(|(info, _)| info.clone()).collect();
    tracing::info!(slots = infos.len(), device = %devices.first().map(|d| device_name(*d)).unwrap_or_default(), "slots ready");
    let slurm_board = super::slurm::SlurmBoard::default();
    let slurm = slurm.and_then(|config| {
        let shared = config.shared_dir.clone()?;
        let context = super::slurm::SlurmContext {
            journal: journal.clone(),
            reader: reader.clone(),
            ticker: ticker.clone(),
            tick,
            data_roots: roots.roots().to_vec(),
            board: slurm_board.clone(),
        };
        tracing::info!(shared = %shared.display(), "slurm executor on");
        Some(super::slurm::SlurmExecutor::new(config.clone(), shared, context).start())
    });
    let ready = Arc::new(AtomicBool::new(false));
    let local = {
        let (journal, reader) = (InFlight::new(journal.clone()), reader.clone());
        let queue_wait = instruments.queue_wait.clone();
        let restarts = instruments.actor_restarts(ActorKind::Local.name());
        Supervisor::start(move |_| {
            LocalExecutor::new(journal, reader, slots)
                .with_queue_wait_histogram(queue_wait)
                .with_restart_counter(restarts)
        })
    };
    let executors = Executors::new(Executor::of(&local), slurm.as_ref().map(Executor::of));
    let dispatcher = {
        let (journal, reader, ready) = (
            InFlight::new(journal.clone()),
            reader.clone(),
            Arc::clone(&ready),
        );
        let restarts = instruments.actor_restarts(ActorKind::Dispatcher.name());
        let data_dir = data_dir.to_path_buf();
        Supervisor::start(move |_| {
            Dispatcher::new(journal, reader, executors, ready)
                .with_data_dir(data_dir)
                .with_restart_counter(restarts)
        })
    };
    let sweeper = {
        let (journal, reader, dispatcher, ready) = (
            InFlight::new(journal.clone()),
            reader.clone(),
            dispatcher.clone(),
            Arc::clone(&ready),
        );
        Supervisor::start(move |_| super::sweeper::Sweeper::new(journal, reader, dispatcher, ready))
    };
    Actors {
        journal,
        reader,
        dispatcher,
        sweeper,
        ticker,
        board,
        metrics,
        commands,
        slots: infos,
        ready,
        instruments,
        slurm,
        slurm_board,
    }
}
