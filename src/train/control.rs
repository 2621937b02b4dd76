//! Flags a run actor sets and its training thread reads once per batch.

use std::sync::atomic::{AtomicBool, Ordering};

/// Requests from the run actor to its training thread.
#[derive(Debug, Default)]
pub struct RunControl {
    cancel: AtomicBool,
}

impl RunControl {
    /// Asks the thread to stop at the next batch boundary.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Whether a cancel was asked for.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}
