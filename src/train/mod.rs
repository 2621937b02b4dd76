//! The training side: progress cells a training thread writes and the ticker reads,
//! the cancel and pause flags, data sets, models, optimizers and schedules,
//! checkpoints, and the training loop with its thread; the check of a run's data and
//! model at submission (`check`); and command runs: a child
//! process per attempt (`command`), its progress protocol (`protocol`) and its
//! rotated log files (`logfile`).

pub mod check;
pub mod checkpoint;
pub mod command;
pub mod control;
pub mod data;
pub mod files;
pub mod logfile;
pub mod model;
pub mod optim;
pub mod progress;
pub mod protocol;
pub mod schedule;
pub mod thread;
pub mod trainer;

pub use command::spawn_command;
pub use control::RunControl;
pub use progress::{
    CheckpointMark, EpochRecord, NoReport, ProgressCells, ProgressSnapshot, Report,
};
pub use thread::{spawn_training, Outcome, TrainingHandle};
pub use trainer::TrainError;
