//! Flags a run actor sets and its training thread reads once per batch.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Requests from the run actor to its training thread.
#[derive(Debug, Default)]
pub struct RunControl {
    cancel: AtomicBool,
    pause: AtomicBool,
    /// Epochs after which to pause (0: none): the end of a sweep trial's rung.
    pause_after: AtomicU32,
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

    /// Asks the thread to checkpoint and stop once `epochs` epochs are done, at that
    /// epoch's end (a sweep trial at the end of its rung); 0 asks for no such stop.
    pub fn pause_after_epochs(&self, epochs: u32) {
        self.pause_after.store(epochs, Ordering::Relaxed);
    }

    /// The epochs after which to pause (0: none).
    pub fn pause_after(&self) -> u32 {
        self.pause_after.load(Ordering::Relaxed)
    }

    /// Whether the thread, with `done` epochs done, is to stop there.
    #[inline]
    pub fn pause_due(&self, done: u64) -> bool {
        let after = self.pause_after.load(Ordering::Relaxed);
        after > 0 && done >= u64::from(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_after_epochs_is_due_from_that_epoch_on_and_zero_is_none() {
        let control = RunControl::default();
        assert!(!control.pause_due(100));
        control.pause_after_epochs(3);
        assert!(!control.pause_due(2));
        assert!(control.pause_due(3) && control.pause_due(4));
        control.pause_after_epochs(0);
        assert!(!control.pause_due(3));
    }
}
