//! The ticker: samples every live run's progress cells at a fixed rate, derives rate,
//! percent and ETA, and publishes the newest sample of each run on the
//! [`ProgressBoard`] that streams and the API read. Training threads never wait for it.
//! With a [`MetricsSink`], it also hands the samples that changed to the metrics
//! writer for the progress history, without waiting for it either.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rustc_hash::FxHashMap;

use tokio::sync::watch;

use super::fault::{self, ActorKind, Recover};
use super::metrics::{self, MetricsSink};
use crate::domain::Progress;
use crate::domain::RunId;
use crate::store::metrics::Sample;
use crate::train::ProgressCells;

/// Weight of the newest measurement in the smoothed samples-per-second rate.
const RATE_SMOOTHING: f64 = 0.3;

/// The newest progress of every run sampled since start (the last sample of a run
/// that ended stays), and a counter that changes every tick.
#[derive(Clone)]
pub struct ProgressBoard {
    /// Keyed by run id with FxHash: run ids are random UUIDs, nothing to defend
    /// against, and the ticker writes every live run's entry every tick.
    latest: Arc<RwLock<FxHashMap<RunId, Progress>>>,
    ticks: Arc<watch::Sender<u64>>,
}

impl Default for ProgressBoard {
    fn default() -> Self {
        Self {
            latest: Arc::default(),
            ticks: Arc::new(watch::channel(0).0),
        }
    }
}

impl std::fmt::Debug for ProgressBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressBoard").finish_non_exhaustive()
    }
}

impl ProgressBoard {
    /// The newest progress of a run.
    pub fn get(&self, run_id: RunId) -> Option<Progress> {
        self.latest
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&run_id)
            .copied()
    }

    /// A receiver that changes after every tick.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.ticks.subscribe()
    }

    fn publish(&self, samples: impl Iterator<Item = (RunId, Progress)>) {
        self.latest
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(samples);
        self.notify();
    }

    fn notify(&self) {
        self.ticks.send_modify(|t| *t = t.wrapping_add(1));
    }
}

struct Watched {
    cells: Arc<ProgressCells>,
    last_version: u64,
    last: Option<(Instant, u64)>,
    rate: f64,
    progress: Option<Progress>,
    /// Whether the last sample read a new report (the progress history records only
    /// those).
    fresh: bool,
}

impl Watched {
    fn sample(&mut self, now: Instant) -> Option<Progress> {
        let snap = self.cells.snapshot();
        if let Some((at, samples)) = self.last {
            let dt = now.duration_since(at).as_secs_f64();
            if dt > 0.0 && snap.samples >= samples {
                let instant = (snap.samples - samples) as f64 / dt;
                self.rate = if self.rate == 0.0 {
                    instant
                } else {
                    RATE_SMOOTHING * instant + (1.0 - RATE_SMOOTHING) * self.rate
                };
            }
        }
        self.last = Some((now, snap.samples));
        self.fresh = snap.version != self.last_version || self.progress.is_none();
        if !self.fresh {
            // Nothing new was reported; keep the rate fresh but the sample as it was.
            if let Some(p) = self.progress.as_mut() {
                p.samples_per_sec = self.rate;
            }
            return self.progress;
        }
        self.last_version = snap.version;
        let epochs = self.cells.epochs();
        let per_epoch = self.cells.batches_per_epoch();
        let total = epochs * per_epoch;
        let done = snap.epoch.saturating_sub(1) * per_epoch + snap.batch;
        let total_samples = epochs * self.cells.samples_per_epoch();
        // A command may not say its totals: no percent or ETA then, rather than 100.
        let eta_secs = (self.rate > 0.0 && total_samples > 0)
            .then(|| total_samples.saturating_sub(snap.samples) as f64 / self.rate);
        let progress = Progress {
            epoch: snap.epoch,
            epochs,
            batch: snap.batch,
            batches_per_epoch: per_epoch,
            samples: snap.samples,
            loss: snap.loss.is_finite().then_some(snap.loss),
            percent: if total == 0 {
                0.0
            } else {
                (done as f64 / total as f64 * 100.0).min(100.0)
            },
            samples_per_sec: self.rate,
            eta_secs,
        };
        self.progress = Some(progress);
        self.progress
    }
}

/// The ticker actor.
pub struct Ticker {
    every: Duration,
    board: ProgressBoard,
    /// Watched runs, dense, so a tick walks a slice.
    live: Vec<(RunId, Watched)>,
    /// Ticks whose sampling started later than planned, for lag metrics.
    late_ticks: u64,
    next_due: Option<Instant>,
    /// Where changed samples go for the progress history, if anywhere.
    metrics: Option<MetricsSink>,
    /// Where tick lag is recorded, if anywhere.
    lag: Option<prometheus::Histogram>,
    /// Where restarts after a panic are counted, if anywhere.
    restarts: Option<prometheus::IntCounter>,
}

impl Ticker {
    /// A ticker sampling every `every` into `board`.
    pub fn new(every: Duration, board: ProgressBoard) -> Self {
        Self {
            every,
            board,
            live: Vec::new(),
            late_ticks: 0,
            next_due: None,
            metrics: None,
            lag: None,
            restarts: None,
        }
    }

    /// Also counts in `restarts` each restart after a panic in a handler.
    pub fn with_restart_counter(mut self, restarts: prometheus::IntCounter) -> Self {
        self.restarts = Some(restarts);
        self
    }

    /// Also hands every changed sample to the metrics writer behind `sink`.
    pub fn with_metrics(mut self, sink: MetricsSink) -> Self {
        self.metrics = Some(sink);
        self
    }

    /// Also records how late each tick starts in `lag` (seconds).
    pub fn with_lag_histogram(mut self, lag: prometheus::Histogram) -> Self {
        self.lag = Some(lag);
        self
    }

    /// Starts sampling a run's cells (what the [`Watch`] message does).
    pub fn watch(&mut self, run_id: RunId, cells: Arc<ProgressCells>) {
        let watched = Watched {
            cells,
            last_version: u64::MAX,
            last: None,
            rate: 0.0,
            progress: None,
            fresh: false,
        };
        match self.live.iter_mut().find(|(id, _)| *id == run_id) {
            Some(entry) => entry.1 = watched,
            None => self.live.push((run_id, watched)),
        }
    }

    /// Number of runs being sampled.
    pub fn watched(&self) -> usize {
        self.live.len()
    }

    /// Samples every watched run once and publishes the samples (one tick's work).
    pub fn tick(&mut self) {
        let now = Instant::now();
        if let Some(due) = self.next_due {
            if now > due + self.every {
                self.late_ticks += 1;
            }
            if let Some(lag) = &self.lag {
                lag.observe(now.saturating_duration_since(due).as_secs_f64());
            }
        }
        self.next_due = Some(now + self.every);
        // Samples for the history are taken only while the writer has room for them
        // (while it is behind, the changed runs are only counted as dropped), with one
        // clock read per tick.
        let wall_ms = match &self.metrics {
            Some(sink) if sink.has_room() => Some(metrics::now_ms()),
            _ => None,
        };
        let mut history: Vec<Sample> = match wall_ms {
            Some(_) => Vec::with_capacity(self.live.len()),
            None => Vec::new(),
        };
        let mut skipped = 0;
        {
            // One lock for the whole tick; entries are updated in place.
            let mut latest = self
                .board
                .latest
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (id, watched) in &mut self.live {
                if let Some(progress) = watched.sample(now) {
                    if watched.fresh {
                        match wall_ms {
                            Some(ms) => history.extend(metrics::sample_of(*id, &progress, ms)),
                            None => skipped += 1,
                        }
                    }
                    match latest.get_mut(id) {
                        Some(slot) => *slot = progress,
                        None => {
                            latest.insert(*id, progress);
                        }
                    }
                }
            }
        }
        self.board.notify();
        if let Some(sink) = &self.metrics {
            if !history.is_empty() {
                sink.offer(history);
            }
            if skipped > 0 {
                sink.count_dropped(skipped);
            }
        }
    }
}

impl Actor for Ticker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.every, |ticker, ctx| {
            fault::guard(ticker, ctx, "tick", |ticker, _| {
                // Armed only while there is a run to sample: a test's panic lands in
                // the middle of a live run's progress.
                if !ticker.live.is_empty() {
                    fault::point(ActorKind::Ticker);
                }
                ticker.tick();
            });
        });
    }
}

impl Recover for Ticker {
    const KIND: ActorKind = ActorKind::Ticker;

    fn recover(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Supervised for Ticker {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if let Some(restarts) = &self.restarts {
            restarts.inc();
        }
        // The watched cells are kept: run actors registered them and still own them,
        // and a run that ended since unwatched it (its `Unwatch` waits in the mailbox
        // the restart keeps). `started` runs again and brings the ticks back.
        self.next_due = None;
        tracing::info!(watched = self.live.len(), "ticker restarted");
    }
}

/// Starts sampling a run's cells.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Watch {
    /// The run.
    pub run_id: RunId,
    /// Its attempt's cells.
    pub cells: Arc<ProgressCells>,
}

impl Handler<Watch> for Ticker {
    type Result = ();

    fn handle(&mut self, msg: Watch, ctx: &mut Self::Context) {
        fault::guard(self, ctx, "watch", |ticker, _| {
            ticker.watch(msg.run_id, msg.cells)
        });
    }
}

/// Stops sampling a run after one last sample, published at once. The board keeps
/// that final sample, so a stream reading the run's terminal event (journaled after
/// this message is answered) also finds the progress it ended with; with a metrics
/// writer, the answer also waits (a bounded time) for that sample to be stored in the
/// progress history.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unwatch {
    /// The run.
    pub run_id: RunId,
}

impl Handler<Unwatch> for Ticker {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Unwatch, ctx: &mut Self::Context) -> Self::Result {
        // Forgotten before anything that could panic: a restarted ticker samples no
        // run that ended.
        let position = self.live.iter().position(|(id, _)| *id == msg.run_id);
        let Some((_, mut watched)) = position.map(|i| self.live.swap_remove(i)) else {
            return Box::pin(async {});
        };
        let stored = fault::guard(self, ctx, "unwatch", |ticker, _| {
            let last = watched.sample(Instant::now());
            ticker
                .board
                .publish(last.map(|p| (msg.run_id, p)).into_iter());
            // Recorded even when unchanged since the last tick: that tick's batch may
            // have been dropped, and the same step only overwrites its point.
            ticker.metrics.as_ref().and_then(|sink| {
                let sample = metrics::sample_of(msg.run_id, last.as_ref()?, metrics::now_ms())?;
                Some(sink.record_final(sample))
            })
        })
        .flatten();
        Box::pin(async move {
            if let Some(stored) = stored {
                stored.await;
            }
        })
    }
}
