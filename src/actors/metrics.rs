//! The metrics writer: stores the progress samples the ticker hands it in the `metrics`
//! tree (layout and downsampling in [`crate::store::metrics`]), on its own thread, so
//! the ticker never touches the disk and never waits for it.
//!
//! The ticker offers at most one batch per tick, the samples of the runs whose
//! progress changed. While [`MAX_PENDING_BATCHES`] batches wait for the writer, a new
//! batch is dropped and its samples counted in [`MetricsStats::samples_dropped`]: the
//! next tick's samples supersede them anyway. A run's final sample, taken when it is
//! unwatched, is always queued, and the ticker answers the `Unwatch` only once it is
//! stored (or after [`FINAL_SAMPLE_WAIT`]), so a client that reads a run's terminal
//! event also finds its last point.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde::Serialize;

use crate::domain::Progress;
use crate::domain::RunId;
use crate::store::metrics::{self, Metric, MetricsError, Sample, MAX_POINTS};
use crate::store::EventLog;

/// Batches that may wait for the writer before the ticker drops new ones.
pub const MAX_PENDING_BATCHES: u64 = 4;

/// The longest an `Unwatch` waits for the run's final sample to be stored.
pub const FINAL_SAMPLE_WAIT: Duration = Duration::from_secs(5);

/// The writer's counters, shared with the ticker that feeds it.
#[derive(Debug, Default)]
struct Counters {
    /// Batches queued and not yet handled: the ticker's back-pressure signal.
    pending: AtomicU64,
    batches_written: AtomicU64,
    samples_written: AtomicU64,
    samples_dropped: AtomicU64,
    write_failures: AtomicU64,
}

/// What the metrics writer has done, for observability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricsStats {
    /// Batches queued and not yet written.
    pub pending: u64,
    /// Batches written.
    pub batches_written: u64,
    /// Samples written (one point per finite metric each).
    pub samples_written: u64,
    /// Samples dropped because the writer was behind or gone.
    pub samples_dropped: u64,
    /// Batches that failed to write (sled error, database being reopened).
    pub write_failures: u64,
}

/// The actor that writes samples to the `metrics` tree, on a `SyncArbiter` thread.
pub struct MetricsWriter {
    log: EventLog,
    counters: Arc<Counters>,
}

impl Actor for MetricsWriter {
    type Context = SyncContext<Self>;
}

/// Stores a batch of samples.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RecordSamples {
    /// The samples, at most one per run.
    pub samples: Vec<Sample>,
}

impl Handler<RecordSamples> for MetricsWriter {
    type Result = ();

    #[tracing::instrument(skip_all, fields(samples = msg.samples.len()))]
    fn handle(&mut self, msg: RecordSamples, _ctx: &mut Self::Context) {
        let log = &self.log;
        // The tree is asked for on every batch: after a reopen an old handle is stale.
        let written = catch_unwind(AssertUnwindSafe(|| {
            let tree = log.metrics_tree()?;
            metrics::record(&tree, &msg.samples, MAX_POINTS)?;
            Ok::<_, MetricsError>(())
        }));
        let counters = &self.counters;
        match written {
            Ok(Ok(())) => {
                counters.batches_written.fetch_add(1, Ordering::Relaxed);
                counters
                    .samples_written
                    .fetch_add(msg.samples.len() as u64, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                counters.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "progress history not written");
            }
            Err(_) => {
                counters.write_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("progress history writer panicked; batch dropped");
            }
        }
        counters.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The ticker's handle on the metrics writer: hands it samples without ever blocking.
#[derive(Clone)]
pub struct MetricsSink {
    addr: Addr<MetricsWriter>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for MetricsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSink")
            .field("stats", &self.stats())
            .finish()
    }
}

impl MetricsSink {
    /// Starts the writer on its own thread over `log`; must run inside an actix system.
    pub fn start(log: EventLog) -> Self {
        let counters = Arc::new(Counters::default());
        let shared = Arc::clone(&counters);
        let addr = SyncArbiter::start_with_thread_builder(
            1,
            || std::thread::Builder::new().name("metrics-writer".into()),
            move || MetricsWriter {
                log: log.clone(),
                counters: Arc::clone(&shared),
            },
        );
        Self { addr, counters }
    }

    /// Whether the writer has room for another batch (fewer than
    /// [`MAX_PENDING_BATCHES`] wait): the ticker takes no samples for it otherwise.
    pub fn has_room(&self) -> bool {
        self.counters.pending.load(Ordering::Acquire) < MAX_PENDING_BATCHES
    }

    /// Counts samples the ticker did not take because the writer was behind.
    pub fn count_dropped(&self, samples: u64) {
        self.counters
            .samples_dropped
            .fetch_add(samples, Ordering::Relaxed);
    }

    /// Queues a tick's samples, or drops (and counts) them while the writer is behind.
    pub fn offer(&self, samples: Vec<Sample>) {
        let n = samples.len() as u64;
        if !self.has_room() {
            self.count_dropped(n);
            return;
        }
        self.counters.pending.fetch_add(1, Ordering::AcqRel);
        if self.addr.try_send(RecordSamples { samples }).is_err() {
            self.counters.pending.fetch_sub(1, Ordering::AcqRel);
            self.count_dropped(n);
        }
    }

    /// Queues a run's final sample, whatever the backlog; the future ends once it is
    /// stored, or after [`FINAL_SAMPLE_WAIT`].
    pub fn record_final(&self, sample: Sample) -> impl std::future::Future<Output = ()> {
        self.counters.pending.fetch_add(1, Ordering::AcqRel);
        let request = self.addr.send(RecordSamples {
            samples: vec![sample],
        });
        let counters = Arc::clone(&self.counters);
        async move {
            match tokio::time::timeout(FINAL_SAMPLE_WAIT, request).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    // Never handled: the writer is gone.
                    counters.pending.fetch_sub(1, Ordering::AcqRel);
                    counters.samples_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(run_id = %sample.run_id, %error, "final progress sample not stored");
                }
                Err(_) => {
                    tracing::warn!(run_id = %sample.run_id, wait_ms = FINAL_SAMPLE_WAIT.as_millis() as u64, "final progress sample not stored in time");
                }
            }
        }
    }

    /// The writer's counters now.
    pub fn stats(&self) -> MetricsStats {
        let c = &self.counters;
        MetricsStats {
            pending: c.pending.load(Ordering::Relaxed),
            batches_written: c.batches_written.load(Ordering::Relaxed),
            samples_written: c.samples_written.load(Ordering::Relaxed),
            samples_dropped: c.samples_dropped.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
        }
    }
}

/// Wall-clock time in ms since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The history sample of a progress reading, `None` before the first batch (or while
/// the epoch's size is unknown).
pub fn sample_of(run_id: RunId, progress: &Progress, time_ms: u64) -> Option<Sample> {
    let per_epoch = progress.batches_per_epoch;
    if progress.epoch == 0 || per_epoch == 0 {
        return None;
    }
    let step = (progress.epoch - 1)
        .saturating_mul(per_epoch)
        .saturating_add(progress.batch);
    let mut values = [f64::NAN; Metric::COUNT];
    values[Metric::Loss.index()] = progress.loss.unwrap_or(f64::NAN);
    values[Metric::SamplesPerSec.index()] = progress.samples_per_sec;
    values[Metric::Percent.index()] = progress.percent;
    values[Metric::Epoch.index()] = step as f64 / per_epoch as f64;
    values[Metric::EtaSecs.index()] = progress.eta_secs.unwrap_or(f64::NAN);
    Some(Sample {
        run_id,
        step,
        time_ms,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::metrics::{read, Query};

    fn progress(epoch: u64, batch: u64) -> Progress {
        Progress {
            epoch,
            epochs: 3,
            batch,
            batches_per_epoch: 10,
            samples: 0,
            loss: Some(0.5),
            percent: 10.0,
            samples_per_sec: 100.0,
            eta_secs: None,
        }
    }

    #[test]
    fn a_sample_is_taken_at_the_step_across_epochs() {
        let run = RunId::new();
        assert_eq!(sample_of(run, &progress(0, 0), 1), None);
        let sample = sample_of(run, &progress(2, 5), 1).expect("a sample");
        assert_eq!(sample.step, 15);
        assert_eq!(sample.values[Metric::Epoch.index()], 1.5);
        assert_eq!(sample.values[Metric::Loss.index()], 0.5);
        assert!(sample.values[Metric::EtaSecs.index()].is_nan());
    }

    #[actix_rt::test]
    async fn offered_and_final_samples_are_written_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        let sink = MetricsSink::start(log.clone());
        let run = RunId::new();
        for batch in 1..=3 {
            let sample = sample_of(run, &progress(1, batch), now_ms()).expect("sample");
            sink.offer(vec![sample]);
        }
        let last = sample_of(run, &progress(2, 0), now_ms()).expect("sample");
        sink.record_final(last).await;
        let stats = sink.stats();
        assert_eq!(stats.pending, 0);
        assert_eq!(stats.samples_written + stats.samples_dropped, 4);
        let tree = log.metrics_tree().expect("tree");
        let query = Query {
            from: None,
            to: None,
            points: 100,
        };
        let series = read(&tree, run, Metric::Loss, &query).expect("read");
        assert_eq!(series.points.last().map(|p| p.step), Some(10));
        assert!(series.points.windows(2).all(|w| w[0].step < w[1].step));
    }
}
