//! Hyperparameter sweeps: many runs (trials) of one base spec over a search space,
//! and the searcher that decides which trials train, which go on and when the sweep
//! is over ([`searcher`]), a pure function of the sweep's settings and its trials'
//! journaled results, so a restart replays to the same decisions.

pub mod searcher;

pub use searcher::{decide, Decision, Mode, Schedule, Trial, TrialStatus};
