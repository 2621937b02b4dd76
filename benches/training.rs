//! What per-batch progress reporting costs a real training run, and how fast
//! runyard trains against PyTorch itself.
//!
//! - `report_overhead_ratio`: wall time of [`trainer::train_with`] reporting every
//!   batch into the attempt's [`ProgressCells`] (what the server runs), over the same
//!   training with reporting compiled out ([`NoReport`]): same spec, same synthetic
//!   data, same seed, so the very same tensor work. A small MLP on many small
//!   batches, so a per-batch cost would show. The two arms run interleaved in pairs,
//!   the arm that goes first alternating from pair to pair so drift in the machine's
//!   speed hits both alike, and the figure is the median of the per-pair ratios.
//!   Runs are short (one epoch of 63 batches, ~20 ms) and pairs many (801): a run
//!   that a noisy neighbour slows down skews one pair of many, which the median
//!   shrugs off, where with fewer, longer runs every pair would carry some of it.
//!   `report_overhead_pct` is the same as a percentage above 1, and
//!   `report_overhead_pct_stderr` the median's standard error (from the per-pair
//!   spread), the resolution it is to be read with. Every run writes one checkpoint,
//!   at its epoch's end (as many in both arms), into a run directory on a RAM disk
//!   where there is one (`/dev/shm`), so disk weather stays out. Data generation,
//!   model set-up and that checkpoint are about 5 % of a run, the same in both arms,
//!   so they shrink the measured overhead by about as much (0.1 % in the batch loop
//!   reads as 0.095 %).
//! - `report_cost_per_batch_pct`: one [`ProgressCells::report`] timed on its own in
//!   a tight loop, as a share of a batch's time in the reporting arm: what the ratio
//!   would show without noise, if reporting cost no more than its own instructions.
//! - `runyard_train_samples_per_s`: examples per second of [`trainer::train`] (the
//!   reporting arm) over 20,000 examples, 625 batches of 32 an epoch, 2 epochs a run,
//!   8 runs after a warm-up run, counted over the epochs' own durations as the
//!   trainer records them (data generation, model set-up and checkpoints left out,
//!   as `benches/pytorch_mlp.py` leaves them out). `scripts/bench-pytorch.sh` trains
//!   the same MLP on data of the same shape with the same batch size, optimizer,
//!   epochs, runs and thread count in PyTorch, and turns this into
//!   `tch_vs_pytorch_speed_ratio`. It reads those parameters from
//!   `target/bench-figures/training-params.json`, which this bench writes as
//!   `training_param_*` entries in the figures' format, so the report also lists
//!   the conditions the speed was measured under.
//!
//! libtorch runs with its default thread count (one per core). On a two-core machine
//! anything else running at the same time makes both this bench and PyTorch's many
//! times slower, and the overhead's standard error large: run it on a quiet machine.
//!
//! Figures go to `target/bench-figures/training.json` (see `scripts/bench-report.py`).
//! Without `--bench` (`cargo test --benches`) a tiny pair and a tiny speed run train
//! and nothing is written.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use runyard::domain::RunSpec;
use runyard::train::data::DataRoots;
use runyard::train::trainer::{self, Attempt, Finish};
use runyard::train::{NoReport, ProgressCells, RunControl};
use tch::Device;
use tempfile::TempDir;

/// The model, the data and how many runs each part times.
struct Plan {
    /// Features and classes of the synthetic data.
    features: u32,
    classes: u32,
    /// Width of the MLP's one hidden layer.
    hidden: u32,
    batch_size: u32,
    /// Timed pairs of overhead runs (one of each arm), after one untimed pair.
    pairs: usize,
    /// Examples in the overhead runs' data (one epoch a run): few, so runs are short.
    pair_samples: u32,
    /// Examples in the speed runs' data.
    speed_samples: u32,
    /// Epochs of each speed run.
    speed_epochs: u32,
    /// Timed speed runs, after one untimed run.
    speed_runs: u32,
    /// Calls of [`ProgressCells::report`] timed on their own.
    report_calls: u64,
}

/// About 40 s on two cores: 801 pairs of ~20 ms runs, then 8 runs of ~0.4 s.
const BENCH: Plan = Plan {
    features: 32,
    classes: 4,
    hidden: 64,
    batch_size: 32,
    pairs: 801,
    pair_samples: 2_000,
    speed_samples: 20_000,
    speed_epochs: 2,
    speed_runs: 8,
    report_calls: 10_000_000,
};

/// Enough to see every part train, for `cargo test --benches`.
const SMOKE: Plan = Plan {
    features: 8,
    classes: 3,
    hidden: 16,
    batch_size: 32,
    pairs: 1,
    pair_samples: 256,
    speed_samples: 256,
    speed_epochs: 1,
    speed_runs: 1,
    report_calls: 1_000,
};

/// Seed of the data, and of the weights and data order.
const DATA_SEED: u64 = 7;
const SEED: u64 = 1;
/// Adam's learning rate (its other settings are PyTorch's defaults on both sides).
const LR: f64 = 1e-3;

fn spec(plan: &Plan, samples: u32, epochs: u32) -> RunSpec {
    let spec: RunSpec = serde_json::from_value(serde_json::json!({
        "name": "training-bench",
        "model": {"kind": "mlp", "hidden": [plan.hidden]},
        "data": {
            "kind": "synthetic",
            "samples": samples,
            "features": plan.features,
            "classes": plan.classes,
            "seed": DATA_SEED
        },
        "optimizer": {"kind": "adam", "lr": LR},
        "epochs": epochs,
        "batch_size": plan.batch_size,
        "seed": SEED,
        "checkpoint": {"every_batches": null, "every_seconds": null}
    }))
    .expect("the bench spec parses");
    spec.validate().expect("the bench spec is valid");
    spec
}

/// A run directory on a RAM disk where there is one: an fsync there costs nothing,
/// so the epoch-end checkpoints add no disk noise to either arm.
fn run_dir() -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("create a run directory")
}

/// One timed training run.
struct Timing {
    /// The whole [`trainer::train_with`] call.
    wall: Duration,
    /// The epochs' own durations, as the trainer records them.
    epochs: Duration,
    /// Examples trained on.
    samples: u64,
}

/// The two sides of the overhead ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    /// Every batch reported into the attempt's own cells, as in the server
    /// ([`trainer::train`]).
    Reporting,
    /// Per-batch reporting compiled out ([`NoReport`]).
    Silent,
}

/// Trains `spec` from scratch in a fresh run directory.
fn train(spec: &RunSpec, arm: Arm) -> Timing {
    let dir = run_dir();
    let cells = ProgressCells::new(u64::from(spec.epochs));
    let control = RunControl::default();
    let roots = DataRoots::new([dir.path().to_path_buf()]);
    let attempt = Attempt {
        spec,
        device: Device::Cpu,
        cells: &cells,
        control: &control,
        run_dir: dir.path().to_path_buf(),
        resume: None,
        roots: &roots,
    };
    let start = Instant::now();
    let finish = match arm {
        Arm::Reporting => trainer::train_with(&attempt, &cells),
        Arm::Silent => trainer::train_with(&attempt, &NoReport),
    }
    .expect("training runs");
    let wall = start.elapsed();
    assert!(
        matches!(finish, Finish::Completed { .. }),
        "training did not complete: {finish:?}"
    );
    let epochs = (0..u64::from(spec.epochs))
        .map(|i| {
            let record = cells.finished_epoch(i).expect("every epoch is recorded");
            // The trainer records whole milliseconds, cut short: half a millisecond
            // back makes the sum unbiased.
            Duration::from_millis(record.duration_ms) + Duration::from_micros(500)
        })
        .sum();
    let samples = cells.samples_per_epoch() * u64::from(spec.epochs);
    if arm == Arm::Reporting {
        assert_eq!(
            cells.snapshot().samples,
            samples,
            "every batch was reported"
        );
    }
    Timing {
        wall,
        epochs,
        samples,
    }
}

/// Mean time of one [`ProgressCells::report`] over `calls` calls in a tight loop, in
/// ns: the reporting arm's own extra instructions, without the noise of training.
fn report_ns(calls: u64) -> f64 {
    let cells = ProgressCells::with_epoch_size(1, calls, calls);
    let start = Instant::now();
    for i in 0..calls {
        black_box(&cells).report(black_box(1), black_box(i), black_box(i), black_box(0.5));
    }
    start.elapsed().as_secs_f64() * 1e9 / calls.max(1) as f64
}

/// The `q` quantile of `values`, interpolated between the nearest ranks.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = q * (sorted.len() - 1) as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64)
}

/// The median of the reporting arm's over the silent arm's times, pair by pair.
struct Overhead {
    /// Median per-pair ratio.
    ratio: f64,
    /// Standard error of the median, in percent.
    stderr_pct: f64,
    /// Median run time of the reporting arm.
    reporting_ms: f64,
    /// Median run time of the silent arm.
    silent_ms: f64,
    /// Batches in one run.
    batches: u64,
}

fn measure_overhead(plan: &Plan) -> Overhead {
    let spec = spec(plan, plan.pair_samples, 1);
    // One untimed pair: libtorch's allocator, kernels and the page cache warm up.
    train(&spec, Arm::Silent);
    train(&spec, Arm::Reporting);
    let mut ratios = Vec::with_capacity(plan.pairs);
    let (mut reporting, mut silent) = (Vec::new(), Vec::new());
    for pair in 0..plan.pairs {
        let (with, without) = if pair % 2 == 0 {
            let with = train(&spec, Arm::Reporting);
            (with, train(&spec, Arm::Silent))
        } else {
            let without = train(&spec, Arm::Silent);
            (train(&spec, Arm::Reporting), without)
        };
        ratios.push(with.wall.as_secs_f64() / without.wall.as_secs_f64());
        reporting.push(with.wall.as_secs_f64() * 1e3);
        silent.push(without.wall.as_secs_f64() * 1e3);
    }
    // For a roughly normal spread: sigma = IQR / 1.349, and the median's standard
    // error is sqrt(pi / 2) sigma / sqrt(n).
    let iqr = quantile(&ratios, 0.75) - quantile(&ratios, 0.25);
    let stderr = 1.2533 * iqr / 1.349 / (ratios.len() as f64).sqrt();
    Overhead {
        ratio: quantile(&ratios, 0.5),
        stderr_pct: stderr * 100.0,
        reporting_ms: quantile(&reporting, 0.5),
        silent_ms: quantile(&silent, 0.5),
        batches: spec.batches_per_epoch(u64::from(plan.pair_samples)),
    }
}

/// Examples per second of the reporting arm over the epochs' own durations.
fn measure_speed(plan: &Plan) -> f64 {
    let spec = spec(plan, plan.speed_samples, plan.speed_epochs);
    train(&spec, Arm::Reporting);
    let (mut samples, mut seconds) = (0, 0.0);
    for _ in 0..plan.speed_runs {
        let run = train(&spec, Arm::Reporting);
        samples += run.samples;
        seconds += run.epochs.as_secs_f64();
    }
    samples as f64 / seconds
}

fn main() {
    let benchmarking = match common::mode() {
        common::Mode::List => return,
        mode => mode == common::Mode::Bench,
    };
    let plan = if benchmarking { &BENCH } else { &SMOKE };
    let threads = tch::get_num_threads();

    let overhead = measure_overhead(plan);
    let batch_ns = overhead.reporting_ms * 1e6 / overhead.batches as f64;
    let report_share = report_ns(plan.report_calls) / batch_ns * 100.0;
    let samples_per_s = measure_speed(plan);
    println!(
        "training bench: {} pair(s) of {}-batch runs on {threads} threads, median run \
         {:.2} ms reporting, {:.2} ms not",
        plan.pairs, overhead.batches, overhead.reporting_ms, overhead.silent_ms,
    );

    let mut figures = if benchmarking {
        common::Figures::echoed(4)
    } else {
        common::Figures::quiet()
    };
    let mut put = |name: &str, value: f64, unit: &str| figures.put(name, value, unit);
    put("report_overhead_ratio", overhead.ratio, "x");
    put("report_overhead_pct", (overhead.ratio - 1.0) * 100.0, "%");
    put("report_overhead_pct_stderr", overhead.stderr_pct, "%");
    put("report_cost_per_batch_pct", report_share, "%");
    put("runyard_train_samples_per_s", samples_per_s, "samples/s");
    if !benchmarking {
        // `cargo test --benches`: the loops work; the figures of a smoke run mean nothing.
        println!("training bench: smoke run ok; no figures written (no --bench)");
        return;
    }

    let mut params = common::Figures::quiet();
    for (name, value, unit) in [
        ("samples", f64::from(plan.speed_samples), "samples"),
        ("features", f64::from(plan.features), "features"),
        ("classes", f64::from(plan.classes), "classes"),
        ("hidden", f64::from(plan.hidden), "units"),
        ("batch_size", f64::from(plan.batch_size), "samples"),
        ("epochs", f64::from(plan.speed_epochs), "epochs"),
        ("runs", f64::from(plan.speed_runs), "runs"),
        ("threads", f64::from(threads), "threads"),
        ("lr", LR, "lr"),
    ] {
        params.put(format!("training_param_{name}"), value, unit);
    }
    figures.write("training");
    params.write("training-params");
}
