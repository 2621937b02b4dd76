//! The actors, one per file with their messages beside them.
//!
//! - [`journal::Journal`] appends events with group commit and publishes the state fold.
//! - [`dispatcher::Dispatcher`] journals what clients ask of runs and hands each run
//!   to its executor through the [`executor`] seam (launch, withdraw, stop, resync).
//! - [`local::LocalExecutor`], the local side of that seam, keeps the queue and hands
//!   runs to free slots.
//! - [`slot::Slot`] owns one device and starts the run actor of the run it is given.
//! - [`run::RunActor`] owns one attempt's progress cells and flags, and its thread.
//! - [`sweeper::Sweeper`] journals what clients ask of sweeps and carries out what
//!   each running sweep does next (trials made, promoted, stopped), as the state plans it.
//! - [`ticker::Ticker`] samples live runs' cells and publishes progress.
//! - [`metrics::MetricsWriter`] stores the sampled progress history, off the ticker.
//! - [`files`]: deleting a run's files (the API's `DELETE` and the start-up sweep
//!   that finishes an interrupted one), journaled before anything is removed.
//! - [`follow`]: the one follower of the journal: the newest durable records in a
//!   window the journal fills, shared (and each encoded once) by every reader that
//!   follows the log, the log itself for those further behind.
//! - [`tracer::Tracer`] follows the journal and turns each run's events into its
//!   OpenTelemetry trace (started only when traces are on).
//! - [`slurm::SlurmExecutor`], the Slurm side of the seam, submits Slurm jobs; a [`slurm::RemoteRun`] per job
//!   (`slurm/follower.rs`) follows it through its worker. What their facts and ends
//!   mean is decided in [`crate::domain::slurm`].
//! - [`board::RunBoard`] holds a value per run that an actor writes and the API reads.
//! - [`in_flight`]: the journal answers an actor waits for, counted apart from its
//!   context so that a restarted actor waits for them before it rebuilds.
//! - [`supervisor`] starts them all under actix supervision.

pub mod board;
pub mod dispatcher;
pub mod executor;
pub mod fault;
pub mod files;
pub mod follow;
pub mod in_flight;
pub mod journal;
pub mod local;
pub mod metrics;
pub mod run;
pub mod slot;
pub mod slurm;
pub mod supervisor;
pub mod sweeper;
pub mod ticker;
pub mod tracer;

pub use dispatcher::Dispatcher;
pub use journal::{Journal, JournalReader};
pub use supervisor::Actors;
pub use ticker::{ProgressBoard, Ticker};
