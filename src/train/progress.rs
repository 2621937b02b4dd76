//! `ProgressCells`: where a training thread reports progress without blocking,
//! allocating, locking or doing I/O.
//!
//! The live counters are a seqlock: the single writer bumps a sequence counter to an
//! odd value, stores the fields with relaxed atomic stores, then bumps it to the
//! next even value. A reader retries until it sees the same even counter before and
//! after reading, so it never sees a torn snapshot, and the writer never waits for a
//! reader. Finished epochs go into cells allocated before training starts, one per
//! epoch, each published with a release flag, so no epoch summary is ever overwritten
//! before the run actor has journaled it.

use std::hint;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

/// Where the training loop reports after every batch. [`ProgressCells`] is the real
/// one; [`NoReport`] compiles reporting out, so benches can measure what it costs.
pub trait Report {
    /// Records progress after a batch.
    fn report(&self, epoch: u64, batch: u64, samples: u64, loss: f64);
}

impl Report for ProgressCells {
    #[inline]
    fn report(&self, epoch: u64, batch: u64, samples: u64, loss: f64) {
        ProgressCells::report(self, epoch, batch, samples, loss);
    }
}

/// Reporting compiled out (for measuring what reporting costs).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReport;

impl Report for NoReport {
    #[inline(always)]
    fn report(&self, _epoch: u64, _batch: u64, _samples: u64, _loss: f64) {}
}

/// A consistent reading of a run's live counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressSnapshot {
    /// Even sequence counter this snapshot was read at; changes on every report.
    pub version: u64,
    /// 1-based epoch in progress (0 before the first batch).
    pub epoch: u64,
    /// Batches finished in the current epoch.
    pub batch: u64,
    /// Examples processed since the attempt started.
    pub samples: u64,
    /// Loss of the last batch.
    pub loss: f64,
}

/// The summary of a finished epoch, as written by the training thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochRecord {
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Fraction of examples classified correctly.
    pub train_accuracy: f64,
    /// Wall time of the epoch in milliseconds.
    pub duration_ms: u64,
    /// Validation loss after the epoch (NaN without validation data).
    pub val_loss: f64,
    /// Validation accuracy (classification) or mean absolute error (regression); NaN
    /// without validation data.
    pub val_metric: f64,
}

/// A checkpoint the training thread has written and fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointMark {
    /// Optimizer steps taken (names the file).
    pub step: u64,
    /// Epochs fully done.
    pub epoch: u64,
    /// Batches done in the next epoch.
    pub batch: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file.
    pub sha256: [u8; 32],
}

/// The newest checkpoint, behind its own seqlock (written once per checkpoint).
#[derive(Debug, Default)]
struct CheckpointCell {
    seq: AtomicU64,
    step: AtomicU64,
    epoch: AtomicU64,
    batch: AtomicU64,
    bytes: AtomicU64,
    sha256: [AtomicU64; 4],
}

#[derive(Debug, Default)]
struct EpochCell {
    done: AtomicBool,
    loss: AtomicU64,
    accuracy: AtomicU64,
    duration_ms: AtomicU64,
    val_loss: AtomicU64,
    val_metric: AtomicU64,
}

/// Progress of one training attempt, shared between its training thread (the only
/// writer) and its run actor and the ticker (readers).
#[derive(Debug)]
pub struct ProgressCells {
    seq: AtomicU64,
    epoch: AtomicU64,
    batch: AtomicU64,
    samples: AtomicU64,
    loss: AtomicU64,
    /// Epochs the attempt will run: fixed at creation for the training loop; told
    /// as it goes by a command (see [`ProgressCells::open_ended`]).
    epochs: AtomicU64,
    /// Batches in one epoch; set once by the thread when the data is loaded.
    batches_per_epoch: AtomicU64,
    /// Examples in one epoch; set once with `batches_per_epoch`.
    samples_per_epoch: AtomicU64,
    finished: Box<[EpochCell]>,
    checkpoint: CheckpointCell,
}

impl ProgressCells {
    /// Cells for an attempt of `epochs` epochs; the epoch's size comes with
    /// [`ProgressCells::set_epoch_size`] once the data is loaded.
    pub fn new(epochs: u64) -> Self {
        Self::with_epoch_size(epochs, 0, 0)
    }

    /// Cells whose epoch size is known up front.
    pub fn with_epoch_size(epochs: u64, batches_per_epoch: u64, samples_per_epoch: u64) -> Self {
        Self {
            seq: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            batch: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            loss: AtomicU64::new(f64::NAN.to_bits()),
            epochs: AtomicU64::new(epochs),
            batches_per_epoch: AtomicU64::new(batches_per_epoch),
            samples_per_epoch: AtomicU64::new(samples_per_epoch),
            finished: (0..epochs).map(|_| EpochCell::default()).collect(),
            checkpoint: CheckpointCell::default(),
        }
    }

    /// Cells for an attempt that tells its epoch count as it goes (a command run):
    /// room for `capacity` epoch summaries, and 0 epochs until
    /// [`ProgressCells::set_epochs`].
    pub fn open_ended(capacity: u64) -> Self {
        let cells = Self::with_epoch_size(capacity, 0, 0);
        cells.epochs.store(0, Ordering::Release);
        cells
    }

    /// Epochs the attempt will run (0 while a command has not said).
    pub fn epochs(&self) -> u64 {
        self.epochs.load(Ordering::Acquire)
    }

    /// Records the epoch count a command reported. Only the writer calls this.
    pub fn set_epochs(&self, epochs: u64) {
        self.epochs.store(epochs, Ordering::Release);
    }

    /// How many epoch summaries the cells have room for.
    pub fn epoch_capacity(&self) -> u64 {
        self.finished.len() as u64
    }

    /// Batches in one epoch (0 until the data is loaded).
    pub fn batches_per_epoch(&self) -> u64 {
        self.batches_per_epoch.load(Ordering::Acquire)
    }

    /// Examples in one epoch (0 until the data is loaded).
    pub fn samples_per_epoch(&self) -> u64 {
        self.samples_per_epoch.load(Ordering::Acquire)
    }

    /// Records the epoch's size. The training thread calls this once, before its first
    /// report.
    pub fn set_epoch_size(&self, batches: u64, samples: u64) {
        self.samples_per_epoch.store(samples, Ordering::Release);
        self.batches_per_epoch.store(batches, Ordering::Release);
    }

    /// Records progress. Only the training thread calls this: a handful of relaxed
    /// stores between two counter bumps, nothing else.
    #[inline]
    pub fn report(&self, epoch: u64, batch: u64, samples: u64, loss: f64) {
        let start = self.seq.load(Ordering::Relaxed);
        self.seq.store(start.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.epoch.store(epoch, Ordering::Relaxed);
        self.batch.store(batch, Ordering::Relaxed);
        self.samples.store(samples, Ordering::Relaxed);
        self.loss.store(loss.to_bits(), Ordering::Relaxed);
        self.seq.store(start.wrapping_add(2), Ordering::Release);
    }

    /// Reads a consistent snapshot; retries while a report is half-written.
    pub fn snapshot(&self) -> ProgressSnapshot {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                hint::spin_loop();
                continue;
            }
            let epoch = self.epoch.load(Ordering::Relaxed);
            let batch = self.batch.load(Ordering::Relaxed);
            let samples = self.samples.load(Ordering::Relaxed);
            let loss = f64::from_bits(self.loss.load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return ProgressSnapshot {
                    version: before,
                    epoch,
                    batch,
                    samples,
                    loss,
                };
            }
            hint::spin_loop();
        }
    }

    /// Publishes the summary of epoch `index` (0-based). Only the training thread
    /// calls this, once per epoch; indexes past the end are ignored.
    pub fn finish_epoch(&self, index: u64, record: EpochRecord) {
        let Some(cell) = usize::try_from(index)
            .ok()
            .and_then(|i| self.finished.get(i))
        else {
            return;
        };
        cell.loss
            .store(record.train_loss.to_bits(), Ordering::Relaxed);
        cell.accuracy
            .store(record.train_accuracy.to_bits(), Ordering::Relaxed);
        cell.duration_ms
            .store(record.duration_ms, Ordering::Relaxed);
        cell.val_loss
            .store(record.val_loss.to_bits(), Ordering::Relaxed);
        cell.val_metric
            .store(record.val_metric.to_bits(), Ordering::Relaxed);
        cell.done.store(true, Ordering::Release);
    }

    /// Publishes the newest checkpoint. Only the training thread calls this, after the
    /// file is durable.
    pub fn publish_checkpoint(&self, mark: CheckpointMark) {
        let cell = &self.checkpoint;
        let start = cell.seq.load(Ordering::Relaxed);
        cell.seq.store(start.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        cell.step.store(mark.step, Ordering::Relaxed);
        cell.epoch.store(mark.epoch, Ordering::Relaxed);
        cell.batch.store(mark.batch, Ordering::Relaxed);
        cell.bytes.store(mark.bytes, Ordering::Relaxed);
        for (i, word) in cell.sha256.iter().enumerate() {
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(&mark.sha256[i * 8..i * 8 + 8]);
            word.store(u64::from_be_bytes(chunk), Ordering::Relaxed);
        }
        cell.seq.store(start.wrapping_add(2), Ordering::Release);
    }

    /// The newest checkpoint published, if any.
    pub fn latest_checkpoint(&self) -> Option<CheckpointMark> {
        let cell = &self.checkpoint;
        loop {
            let before = cell.seq.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before & 1 == 1 {
                hint::spin_loop();
                continue;
            }
            let mut mark = CheckpointMark {
                step: cell.step.load(Ordering::Relaxed),
                epoch: cell.epoch.load(Ordering::Relaxed),
                batch: cell.batch.load(Ordering::Relaxed),
                bytes: cell.bytes.load(Ordering::Relaxed),
                sha256: [0; 32],
            };
            for (i, word) in cell.sha256.iter().enumerate() {
                mark.sha256[i * 8..i * 8 + 8]
                    .copy_from_slice(&word.load(Ordering::Relaxed).to_be_bytes());
            }
            fence(Ordering::Acquire);
            if cell.seq.load(Ordering::Relaxed) == before {
                return Some(mark);
            }
            hint::spin_loop();
        }
    }

    /// The summary of epoch `index` (0-based), once the thread has published it.
    pub fn finished_epoch(&self, index: u64) -> Option<EpochRecord> {
        let cell = usize::try_from(index)
            .ok()
            .and_then(|i| self.finished.get(i))?;
        if !cell.done.load(Ordering::Acquire) {
            return None;
        }
        Some(EpochRecord {
            train_loss: f64::from_bits(cell.loss.load(Ordering::Relaxed)),
            train_accuracy: f64::from_bits(cell.accuracy.load(Ordering::Relaxed)),
            duration_ms: cell.duration_ms.load(Ordering::Relaxed),
            val_loss: f64::from_bits(cell.val_loss.load(Ordering::Relaxed)),
            val_metric: f64::from_bits(cell.val_metric.load(Ordering::Relaxed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_reader_never_sees_a_torn_snapshot() {
        let cells = Arc::new(ProgressCells::with_epoch_size(1, 1, 1));
        let writer = {
            let cells = Arc::clone(&cells);
            std::thread::spawn(move || {
                for i in 1..=200_000u64 {
                    cells.report(i, i, i, i as f64);
                }
            })
        };
        let mut last = 0;
        while last < 200_000 {
            let s = cells.snapshot();
            assert_eq!(s.epoch, s.batch, "torn: {s:?}");
            assert_eq!(s.batch, s.samples, "torn: {s:?}");
            if s.samples > 0 {
                assert_eq!(s.loss, s.samples as f64, "torn: {s:?}");
            }
            assert!(s.samples >= last, "went backwards: {s:?}");
            last = s.samples;
            if writer.is_finished() && last < 200_000 {
                last = cells.snapshot().samples;
                assert_eq!(last, 200_000);
            }
        }
        writer.join().expect("writer");
    }

    #[test]
    fn the_newest_checkpoint_is_read_whole() {
        let cells = ProgressCells::with_epoch_size(1, 1, 1);
        assert_eq!(cells.latest_checkpoint(), None);
        let mark = CheckpointMark {
            step: 7,
            epoch: 1,
            batch: 3,
            bytes: 99,
            sha256: std::array::from_fn(|i| i as u8),
        };
        cells.publish_checkpoint(mark);
        assert_eq!(cells.latest_checkpoint(), Some(mark));
    }

    #[test]
    fn epoch_summaries_appear_once_published() {
        let cells = ProgressCells::with_epoch_size(2, 10, 100);
        assert_eq!(cells.finished_epoch(0), None);
        let record = EpochRecord {
            train_loss: 0.5,
            train_accuracy: 0.75,
            duration_ms: 12,
            val_loss: 0.6,
            val_metric: f64::NAN,
        };
        cells.finish_epoch(0, record);
        let read = cells.finished_epoch(0).expect("published");
        assert_eq!(read.val_loss, 0.6);
        assert!(read.val_metric.is_nan());
        assert_eq!(cells.finished_epoch(1), None);
        cells.finish_epoch(5, record);
        assert_eq!(cells.finished_epoch(5), None);
    }
}
