//! What a durable append costs, measured against the disk it lands on.
//!
//! - `fsync_p50_us`, `fsync_p99_us`: writing ~100 bytes to a file and `sync_data()`,
//!   in the directory the journals live in. This is the floor no durable append can
//!   go under, and the baseline the journal figures are read against.
//! - `journal_append_p50_us`, `journal_append_p99_us`: append-to-ack latency through
//!   the [`Journal`] actor with one writer awaiting each append in turn, alternating
//!   one by one with the fsync samples so both see the same disk weather (in blocks of
//!   100, a stall of the disk lands in one kind's block and the ratio swings from 0.6
//!   to 3.3 between sittings);
//!   `journal_append_p99_vs_fsync_p99_ratio` (and the p50 one) is what the journal
//!   adds on top of the disk.
//! - `journal_durable_events_per_s_{1,8,64}w`: acknowledged appends per second with
//!   1, 8 and 64 concurrent writers, each awaiting its own appends in a loop; the
//!   one-writer rate is the baseline for the group-commit speed-ups
//!   (`..._{8,64}w_vs_1w_ratio`), and `journal_flush_batch_mean_64w` is the mean
//!   number of events per flush with 64 writers, from [`GetCounters`].
//!
//! Custom loops rather than criterion, because the figures are percentiles and
//! rates. Every append is a `RunSubmitted` of a fresh run with its own digest, so
//! the state check accepts all of them. Figures go to
//! `target/bench-figures/journal.json` (see `scripts/bench-report.py`).
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it only checks that each
//! loop works, with a few samples, and writes no figures.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use runyard::actors::journal::{Append, GetCounters, JournalCounters};
use runyard::actors::Journal;
use runyard::domain::{Event, RunId, State};
use runyard::store::EventLog;
use tempfile::TempDir;

/// How long each part runs, and how many samples it takes.
struct Plan {
    /// Rounds of interleaved fsync and append latency samples.
    rounds: usize,
    /// Samples of each kind per round.
    per_round: usize,
    /// Untimed appends and fsyncs before the latency rounds (sled and the page cache
    /// warm up on the first ones).
    warm_up: usize,
    /// Timed window of each throughput run.
    window: Duration,
}

/// A few seconds of latency samples (3,000 of each kind, alternating one by one) and
/// 3 × 3 s of throughput.
const BENCH: Plan = Plan {
    rounds: 3000,
    per_round: 1,
    warm_up: 50,
    window: Duration::from_secs(3),
};

/// Enough to see every loop work, for `cargo test --benches`.
const SMOKE: Plan = Plan {
    rounds: 2,
    per_round: 3,
    warm_up: 1,
    window: Duration::from_millis(50),
};

/// Numbers the digests, so no two submitted runs are duplicates of each other.
static NEXT_DIGEST: AtomicU64 = AtomicU64::new(0);

/// A submission of a fresh run, about 100 bytes on disk.
fn fresh_run() -> Append {
    let n = NEXT_DIGEST.fetch_add(1, Ordering::Relaxed);
    Append::one(
        RunId::new(),
        Event::RunSubmitted {
            name: format!("bench-{n}"),
            digest: format!("{n:016x}"),
            spec: "{}".into(),
        },
    )
}

/// A temporary directory under the target directory, so on the repository's disk
/// (`/tmp` may be a RAM disk, where an fsync costs nothing).
fn scratch_dir(target: &Path) -> TempDir {
    std::fs::create_dir_all(target).expect("create the target directory");
    tempfile::tempdir_in(target).expect("create a scratch directory under target/")
}

/// A journal over a fresh log in `dir`, started on the current actix system.
fn start_journal(dir: &Path) -> Addr<Journal> {
    let log = EventLog::open(dir).expect("open the event log");
    let (journal, _reader) = Journal::new(log, State::default());
    journal.start()
}

async fn append(journal: &Addr<Journal>) {
    journal
        .send(fresh_run())
        .await
        .expect("the journal is running")
        .expect("the journal accepts a fresh run");
}

async fn counters(journal: &Addr<Journal>) -> JournalCounters {
    journal
        .send(GetCounters)
        .await
        .expect("the journal is running")
}

/// Appends ~100 bytes and waits until they are on disk.
fn write_and_sync(file: &mut File, record: &[u8]) -> Duration {
    let start = Instant::now();
    file.write_all(record).expect("write to the fsync file");
    file.sync_data().expect("sync_data");
    start.elapsed()
}

/// The `q` quantile (nearest rank) of sorted samples, in microseconds.
fn percentile_us(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

struct Latencies {
    fsync: Vec<Duration>,
    append: Vec<Duration>,
}

/// Latency samples, fsyncs in `fsync_dir` and appends to a journal in `log_dir`.
async fn measure_latencies(plan: &Plan, fsync_dir: &Path, log_dir: &Path) -> Latencies {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(fsync_dir.join("fsync.bin"))
        .expect("create the fsync file");
    let record = [0x5a_u8; 100];
    let journal = start_journal(log_dir);

    for _ in 0..plan.warm_up {
        write_and_sync(&mut file, &record);
        append(&journal).await;
    }
    let mut fsync = Vec::with_capacity(plan.rounds * plan.per_round);
    let mut appends = Vec::with_capacity(plan.rounds * plan.per_round);
    for _ in 0..plan.rounds {
        // Blocking the actix thread here is fine: the journal is idle between rounds.
        for _ in 0..plan.per_round {
            fsync.push(write_and_sync(&mut file, &record));
        }
        for _ in 0..plan.per_round {
            let start = Instant::now();
            append(&journal).await;
            appends.push(start.elapsed());
        }
    }
    fsync.sort();
    appends.sort();
    Latencies {
        fsync,
        append: appends,
    }
}

struct Throughput {
    events_per_s: f64,
    /// Events and flushes during the timed window.
    events: u64,
    flushes: u64,
}

/// `writers` tasks appending in a loop for `plan.window`, each awaiting its own
/// appends, on a fresh journal in `log_dir`.
async fn measure_throughput(plan: &Plan, log_dir: &Path, writers: usize) -> Throughput {
    let journal = start_journal(log_dir);
    for _ in 0..plan.warm_up {
        append(&journal).await;
    }
    let before = counters(&journal).await;
    let start = Instant::now();
    let deadline = start + plan.window;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let journal = journal.clone();
            actix::spawn(async move {
                let mut acked = 0u64;
                while Instant::now() < deadline {
                    append(&journal).await;
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    let mut acked = 0;
    for task in tasks {
        acked += task.await.expect("a writer task panicked");
    }
    let elapsed = start.elapsed();
    let after = counters(&journal).await;
    Throughput {
        events_per_s: acked as f64 / elapsed.as_secs_f64(),
        events: after.events - before.events,
        flushes: after.flushes - before.flushes,
    }
}

fn main() {
    let benchmarking = match common::mode() {
        common::Mode::List => return,
        mode => mode == common::Mode::Bench,
    };
    let plan = if benchmarking { &BENCH } else { &SMOKE };
    let target = common::target_dir();

    // The directories outlive the actix system, and with it every journal and its
    // sled database, so sled never finds its directory gone.
    let fsync_dir = scratch_dir(&target);
    let log_dirs: Vec<TempDir> = (0..4).map(|_| scratch_dir(&target)).collect();
    let (latencies, runs) = actix::System::new().block_on(async {
        let latencies = measure_latencies(plan, fsync_dir.path(), log_dirs[0].path()).await;
        let mut runs = Vec::new();
        for (writers, dir) in [1, 8, 64].into_iter().zip(&log_dirs[1..]) {
            runs.push((writers, measure_throughput(plan, dir.path(), writers).await));
        }
        (latencies, runs)
    });
    drop(log_dirs);
    drop(fsync_dir);

    let mut figures = if benchmarking {
        common::Figures::echoed(2)
    } else {
        common::Figures::quiet()
    };
    let mut put = |name: String, value: f64, unit: &str| figures.put(name, value, unit);
    let fsync_p50 = percentile_us(&latencies.fsync, 0.50);
    let fsync_p99 = percentile_us(&latencies.fsync, 0.99);
    let append_p50 = percentile_us(&latencies.append, 0.50);
    let append_p99 = percentile_us(&latencies.append, 0.99);
    put("fsync_p50_us".into(), fsync_p50, "us");
    put("fsync_p99_us".into(), fsync_p99, "us");
    put("journal_append_p50_us".into(), append_p50, "us");
    put("journal_append_p99_us".into(), append_p99, "us");
    put(
        "journal_append_p50_vs_fsync_p50_ratio".into(),
        append_p50 / fsync_p50,
        "x",
    );
    put(
        "journal_append_p99_vs_fsync_p99_ratio".into(),
        append_p99 / fsync_p99,
        "x",
    );
    let one_writer = runs[0].1.events_per_s;
    for (writers, run) in &runs {
        put(
            format!("journal_durable_events_per_s_{writers}w"),
            run.events_per_s,
            "events/s",
        );
        if *writers > 1 {
            put(
                format!("journal_durable_events_per_s_{writers}w_vs_1w_ratio"),
                run.events_per_s / one_writer,
                "x",
            );
        }
        if *writers == 64 && run.flushes > 0 {
            put(
                "journal_flush_batch_mean_64w".into(),
                run.events as f64 / run.flushes as f64,
                "events",
            );
        }
    }

    if !benchmarking {
        println!(
            "journal bench: smoke run of {} fsyncs, {} appends and 3 throughput windows ok; \
             no figures written (no --bench)",
            latencies.fsync.len(),
            latencies.append.len()
        );
        return;
    }
    figures.write("journal");
}
