//! What the Slurm executor, its job followers and the API share: the live view of a
//! followed job, the context both actors work in, and the messages that reach a
//! job's follower through the executor.

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::actors::journal::{Journal, JournalReader};
use crate::actors::ticker::Ticker;
use crate::domain::RunId;
use crate::slurm::files::Registration;

/// What the API shows of a Slurm run's job beyond the journal: Slurm's view and the
/// worker's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SlurmLive {
    /// Slurm's job state (`PENDING`, `RUNNING`, ...), as last asked.
    pub state: Option<String>,
    /// Slurm's reason for it (`Priority`, `Resources`, `None`, ...).
    pub reason: Option<String>,
    /// Where the worker listens, once it registered.
    pub worker: Option<String>,
    /// Whether the worker stopped answering (the run is not failed for it).
    pub unreachable: bool,
}

/// The live Slurm view of every followed run.
pub type SlurmBoard = crate::actors::board::RunBoard<SlurmLive>;

/// What the executor needs besides the configuration.
#[derive(Clone)]
pub struct SlurmContext {
    /// The journal.
    pub journal: Addr<Journal>,
    /// Its reader.
    pub reader: JournalReader,
    /// The ticker that samples followed runs' progress.
    pub ticker: Addr<Ticker>,
    /// The progress sampling interval: workers are pulled this often.
    pub tick: Duration,
    /// The server's data roots, given to workers.
    pub data_roots: Vec<PathBuf>,
    /// Where the API finds the live view.
    pub board: SlurmBoard,
}

/// Stops a Slurm run's job: `scancel --signal=TERM` (the worker checkpoints and
/// stops), then `scancel` after the grace period. The caller journaled why
/// (`CancelRequested`, `PauseRequested`, or the run's end).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopJob {
    /// The run.
    pub run_id: RunId,
}

/// A worker registered over HTTP (its secret already checked): its follower starts
/// pulling from it at once, without waiting to find `worker.json`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WorkerRegistered {
    /// The run.
    pub run_id: RunId,
    /// The job the worker runs in (ignored unless it is the run's live job).
    pub job_id: u64,
    /// Where it listens.
    pub registration: Registration,
    /// The job's secret, to pull with.
    pub secret: String,
}
