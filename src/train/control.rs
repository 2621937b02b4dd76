//! Flags a run actor sets and its training thread reads once per batch.

use std::sync::atomic::{AtomicBool, Ordering};

/// Requests from the run actor to its training thread.
#[derive(Debug, Default)]
pub struct RunControl {
    cancel: AtomicBool,
    pause: AtomicBool,
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

    /// Asks the thread to checkpoint and stop at the next batch boundary.
    pub fn pause(&self) {
        self.pause.store(true, Ordering::Relaxed);
    }

    /// Whether a pause was asked for.
    #[inline]
    pub fn is_paused(&self) -> bool {
        self.pause.load(Ordering::Relaxed)
    }
}
