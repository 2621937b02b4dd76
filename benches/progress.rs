//! What reporting and sampling progress costs.
//!
//! - `progress_report_ns`: one [`ProgressCells::report`] from the single training
//!   thread, against the same four stores into a plain struct
//!   (`progress_report_vs_plain_store_ratio`). The plain store is what reporting would
//!   cost with no reader at all, so the ratio is the price of the seqlock.
//! - `ticker_sample_1000_runs_us`: one [`Ticker::tick`] over 1,000 watched runs whose
//!   cells another thread has just updated, against 1,000 bare
//!   [`ProgressCells::snapshot`] calls on the same cells, just as freshly updated
//!   (`ticker_sample_vs_raw_snapshots_ratio`). The snapshots are the reads a tick
//!   cannot avoid, so the ratio is what the ticker adds on top (rate, ETA, the board).
//!
//! Both sides of each ratio are measured in the same run because these machines are
//! noisy: a bare time means little, a ratio much more.
//!
//! Figures go to `target/bench-figures/progress.json` (see `scripts/bench-report.py`).
//! The times are criterion's mean point estimates, read back from the
//! `target/criterion/<group>/<id>/new/estimates.json` files criterion writes during
//! this very run. Without `--bench` (`cargo test --benches`) nothing is written, and
//! with a filter only the estimates this run wrote are reported, never older ones.

mod common;

use std::hint::{self, black_box};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion};
use runyard::actors::{ProgressBoard, Ticker};
use runyard::domain::RunId;
use runyard::train::ProgressCells;

/// Runs the ticker bench samples, as on a busy server.
const RUNS: usize = 1_000;

/// The live fields of [`ProgressCells`], stored with plain writes.
#[derive(Default)]
struct PlainProgress {
    epoch: u64,
    batch: u64,
    samples: u64,
    loss: f64,
}

fn bench_report(c: &mut Criterion) {
    let mut group = c.benchmark_group("progress");
    let cells = ProgressCells::with_epoch_size(10, 1_000, 64_000);
    let mut i = 0u64;
    group.bench_function("report", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(&cells).report(black_box(i), black_box(i), black_box(i), black_box(0.5));
        })
    });
    let mut plain = PlainProgress::default();
    let mut i = 0u64;
    group.bench_function("plain_store", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let p = black_box(&mut plain);
            p.epoch = black_box(i);
            p.batch = black_box(i);
            p.samples = black_box(i);
            p.loss = black_box(0.5);
        })
    });
    group.finish();
}

/// What the writer thread and the measuring thread share.
#[derive(Default)]
struct Sweeps {
    /// Sweeps asked for so far.
    requested: AtomicU64,
    /// Sweeps finished so far.
    done: AtomicU64,
    stop: AtomicBool,
}

/// A thread standing in for the runs' training threads. On request it reports once
/// into every cell, from another core, as training threads do between two ticks; so
/// every measured pass, tick or bare snapshots alike, reads cells that are all fresh
/// (a tick takes its full path, not the "nothing new" shortcut) and whose cache
/// lines all come from the writer's core. A free-running writer would instead leave
/// the short baseline pass with fewer fresh cells than the long tick.
struct Writer {
    sweeps: Arc<Sweeps>,
    thread: thread::JoinHandle<()>,
}

impl Writer {
    fn spawn(cells: Vec<Arc<ProgressCells>>) -> Self {
        let sweeps = Arc::new(Sweeps::default());
        let shared = Arc::clone(&sweeps);
        let thread = thread::Builder::new()
            .name("progress-writer".into())
            .spawn(move || {
                let mut done = 0;
                loop {
                    let wanted = shared.requested.load(Ordering::Acquire);
                    if wanted == done {
                        if shared.stop.load(Ordering::Acquire) {
                            return;
                        }
                        thread::park();
                        continue;
                    }
                    done = wanted;
                    for cells in &cells {
                        let per_epoch = cells.batches_per_epoch();
                        cells.report(
                            1 + done / per_epoch,
                            done % per_epoch,
                            done * 64,
                            1.0 / done as f64,
                        );
                    }
                    shared.done.store(done, Ordering::Release);
                }
            })
            .expect("spawn the writer thread");
        Self { sweeps, thread }
    }

    /// Has every cell report once more, and waits until all have.
    fn sweep(&self) {
        let round = self.sweeps.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.thread.thread().unpark();
        while self.sweeps.done.load(Ordering::Acquire) < round {
            hint::spin_loop();
        }
    }

    fn stop(self) {
        self.sweeps.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        self.thread.join().expect("the writer thread panicked");
    }
}

fn bench_ticker(c: &mut Criterion) {
    let cells: Vec<Arc<ProgressCells>> = (0..RUNS)
        .map(|_| Arc::new(ProgressCells::with_epoch_size(10, 1_000, 64_000)))
        .collect();
    let mut ticker = Ticker::new(Duration::from_millis(250), ProgressBoard::default());
    for cells in &cells {
        ticker.watch(RunId::new(), Arc::clone(cells));
    }
    assert_eq!(ticker.watched(), RUNS);
    let writer = Writer::spawn(cells.clone());

    // The sweep is set-up, outside the timed part: one sweep, then one timed pass.
    let mut group = c.benchmark_group("ticker");
    group.bench_function("tick_1000_runs", |b| {
        b.iter_batched(
            || writer.sweep(),
            |()| ticker.tick(),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("snapshot_1000_runs", |b| {
        b.iter_batched(
            || writer.sweep(),
            |()| {
                for cells in &cells {
                    black_box(cells.snapshot());
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    writer.stop();
}

/// Criterion's mean estimate in ns for `group/id`, if it was written by this run.
fn mean_ns(criterion_dir: &Path, group: &str, id: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        eprintln!(
            "progress bench: {} is older than this run; not reported",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).expect("read criterion estimates");
    let estimates: serde_json::Value =
        serde_json::from_str(&text).expect("criterion estimates are JSON");
    estimates["mean"]["point_estimate"].as_f64()
}

fn main() {
    let started = SystemTime::now();
    let target = common::target_dir();
    let criterion_dir = target.join("criterion");
    let mut criterion = Criterion::default()
        .output_directory(&criterion_dir)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_report(&mut criterion);
    bench_ticker(&mut criterion);
    criterion.final_summary();
    if common::mode() != common::Mode::Bench {
        // `cargo test --benches` runs each routine once; there is nothing to report.
        println!("progress bench: not benchmarking (no --bench); no figures written");
        return;
    }

    let mean = |group, id| mean_ns(&criterion_dir, group, id, started);
    let mut figures = common::Figures::quiet();
    let mut put = |name: &str, value: f64, unit: &str| figures.put(name, value, unit);
    let report = mean("progress", "report");
    let plain = mean("progress", "plain_store");
    if let Some(report) = report {
        put("progress_report_ns", report, "ns");
    }
    if let Some(plain) = plain {
        put("progress_plain_store_ns", plain, "ns");
    }
    if let (Some(report), Some(plain)) = (report, plain) {
        put("progress_report_vs_plain_store_ratio", report / plain, "x");
    }
    let tick = mean("ticker", "tick_1000_runs");
    let snapshots = mean("ticker", "snapshot_1000_runs");
    if let Some(tick) = tick {
        put("ticker_sample_1000_runs_us", tick / 1e3, "us");
    }
    if let Some(snapshots) = snapshots {
        put("ticker_raw_snapshots_1000_runs_us", snapshots / 1e3, "us");
    }
    if let (Some(tick), Some(snapshots)) = (tick, snapshots) {
        put(
            "ticker_sample_vs_raw_snapshots_ratio",
            tick / snapshots,
            "x",
        );
    }
    if figures.is_empty() {
        eprintln!("progress bench: no estimate from this run; no figures written");
        return;
    }
    figures.write("progress");
}
