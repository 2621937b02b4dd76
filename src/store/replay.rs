//! Replay: rebuilding state by folding every record of the log.

use std::time::{Duration, Instant};

use super::log::{EventLog, StoreError};
use crate::domain::State;

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records folded.
    pub events: u64,
    /// Runs found.
    pub runs: usize,
    /// Time the replay took.
    pub elapsed: Duration,
}

/// Folds every record of `log` into a fresh state. A record that fails its checksum
/// stops the replay with an error naming its sequence number and the directory.
pub fn replay(log: &EventLog) -> Result<(State, ReplayStats), StoreError> {
    let started = Instant::now();
    let mut state = State::default();
    let mut events = 0u64;
    log.for_each(|seq, envelope| {
        state.apply(seq, &envelope);
        events += 1;
        Ok(())
    })?;
    let stats = ReplayStats {
        events,
        runs: state.len(),
        elapsed: started.elapsed(),
    };
    Ok((state, stats))
}
