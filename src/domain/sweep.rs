//! Hyperparameter sweeps: many runs (trials) of one base spec over a search space
//! ([`space`]: each trial's point, from the sweep's seed and its number), and the
//! searcher that decides which trials train, which go on and when the sweep is over
//! ([`searcher`]), a pure function of the sweep's settings and its trials' journaled
//! results, so a restart replays to the same decisions; and the sweep's spec with its
//! checks ([`spec`]).

pub mod searcher;
pub mod space;
pub mod spec;

pub use searcher::{decide, Decision, Mode, Schedule, Trial, TrialStatus};
pub use space::{apply, Distribution, Point, Space, SpaceError};
pub use spec::{CheckedSweep, SearcherSpec, SweepSpec, SweepSpecError};
