//! How fast the state comes back from the log.
//!
//! - `replay_1m_events_s`: [`replay`] of a log of 1,000,000 events (100,000 finished
//!   runs of 10 events each) with no snapshot, against a bare scan of the same sled
//!   tree that reads every record without decoding or folding it
//!   (`replay_1m_vs_raw_scan_ratio`: what decoding, checking checksums and folding
//!   add to reading).
//! - `cold_start_10k_runs_s`: the real binary started on a data directory holding
//!   10,000 finished runs (100,000 events, and the snapshot a running server would have
//!   written), timed from spawn to `/readyz` answering 200; against the same binary
//!   started on an empty data directory (`cold_start_10k_vs_empty_ratio`: what the
//!   journal adds to starting the process, loading libtorch and binding the port).
//!   `cold_start_10k_runs_no_snapshot_s` is the same start with no snapshot.
//!
//! Run without `--bench` it builds tiny logs, checks each step works, and writes no
//! figures.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runyard::domain::{Envelope, Event, RunId, SlotId};
use runyard::store::{replay, EventLog};

/// The ten events of a finished run.
fn finished_run(i: u64) -> Vec<Envelope> {
    let run = RunId::new();
    let slot = SlotId(0);
    let mut events = vec![
        Event::RunSubmitted {
            name: format!("run-{i}"),
            digest: format!("{i:064x}"),
            spec: format!(
                r#"{{"name":"run-{i}","model":{{"kind":"mlp","hidden":[128]}},"data":{{"kind":"synthetic","samples":20000,"features":32,"classes":4,"seed":7}},"epochs":3,"batch_size":64,"seed":{i},"checkpoint":{{"keep":3}}}}"#
            ),
        },
        Event::SlotClaimed { slot },
        Event::RunStarted {
            attempt: 1,
            slot,
            device: "cpu".into(),
        },
    ];
    for epoch in 1..=3 {
        events.push(Event::EpochCompleted {
            epoch,
            train_loss: 1.0 / f64::from(epoch),
            train_accuracy: 0.3 * f64::from(epoch),
            duration_ms: 120,
        });
    }
    events.push(Event::CheckpointSaved {
        path: format!("runs/{run}/checkpoints/ckpt-000000000939.safetensors"),
        epoch: 3,
        batch: 0,
        step: 939,
        sha256: "ab".repeat(32),
        bytes: 20_000,
    });
    events.push(Event::ArtifactSaved {
        name: "final.safetensors".into(),
        path: format!("runs/{run}/artifacts/final.safetensors"),
        sha256: "cd".repeat(32),
        bytes: 20_000,
    });
    events.push(Event::RunCompleted {
        train_loss: 0.33,
        train_accuracy: 0.9,
    });
    events.push(Event::SlotReleased { slot });
    events.into_iter().map(|e| Envelope::now(run, e)).collect()
}

/// Writes `runs` finished runs into the journal of `data_dir`; returns the log.
fn build(data_dir: &Path, runs: u64) -> EventLog {
    let log = EventLog::open(&data_dir.join("journal")).expect("open the log");
    let mut seq = 1;
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..runs {
        batch.extend(finished_run(i));
        if batch.len() >= 10_000 {
            log.append(seq, &batch).expect("append");
            seq += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        log.append(seq, &batch).expect("append");
    }
    log
}

fn raw_scan(dir: &Path) -> (usize, Duration) {
    let db = sled::open(dir.join("journal")).expect("open sled");
    let tree = db.open_tree("events").expect("events tree");
    let started = Instant::now();
    let mut bytes = 0;
    for item in tree.iter() {
        let (_, value) = item.expect("record");
        bytes += value.len();
    }
    (bytes, started.elapsed())
}

/// Starts the binary on `data_dir` and times spawn → `/readyz` 200.
fn cold_start(data_dir: &Path) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let address = line
        .trim()
        .strip_prefix("runyard listening on http://")
        .expect("address")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = loop {
        if ready(&address) {
            break started.elapsed();
        }
        assert!(Instant::now() < deadline, "server never became ready");
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill();
    let _ = child.wait();
    ready
}

fn ready(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64()
}

fn main() {
    let benchmarking = match common::mode() {
        common::Mode::List => return,
        mode => mode == common::Mode::Bench,
    };
    let (replay_runs, start_runs, repeats) = if benchmarking {
        (100_000, 10_000, 3)
    } else {
        (20, 20, 1)
    };
    let target = common::target_dir();
    std::fs::create_dir_all(&target).expect("target dir");

    // Replay of 1M events, no snapshot, against a raw scan.
    let dir = tempfile::tempdir_in(&target).expect("scratch");
    let log = build(dir.path(), replay_runs);
    let mut replays = Vec::new();
    let mut events = 0;
    for _ in 0..repeats {
        let (state, stats) = replay(&log).expect("replay");
        assert_eq!(state.len() as u64, replay_runs);
        assert_eq!(stats.from_snapshot, None);
        events = stats.events;
        replays.push(stats.elapsed);
    }
    drop(log);
    let scans: Vec<Duration> = (0..repeats).map(|_| raw_scan(dir.path()).1).collect();
    drop(dir);

    // Cold starts: 10k finished runs with and without a snapshot, and an empty dir.
    let with_snapshot = tempfile::tempdir_in(&target).expect("scratch");
    let log = build(with_snapshot.path(), start_runs);
    let (state, _) = replay(&log).expect("replay");
    log.write_snapshot(state.last_seq(), &state.to_snapshot(), 2)
        .expect("snapshot");
    drop(log);
    let without_snapshot = tempfile::tempdir_in(&target).expect("scratch");
    drop(build(without_snapshot.path(), start_runs));
    let empty = tempfile::tempdir_in(&target).expect("scratch");
    // One untimed start warms the page cache and the dynamic loader.
    cold_start(empty.path());
    let mut starts = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats {
        starts.0.push(cold_start(with_snapshot.path()));
        starts.1.push(cold_start(without_snapshot.path()));
        starts.2.push(cold_start(empty.path()));
    }

    let mut figures = if benchmarking {
        common::Figures::echoed(4)
    } else {
        common::Figures::quiet()
    };
    let mut put = |name: &str, value: f64, unit: &str| figures.put(name, value, unit);
    let replay_s = median(replays);
    let scan_s = median(scans);
    put("replay_1m_events_s", replay_s, "s");
    put("replay_1m_raw_scan_s", scan_s, "s");
    put("replay_1m_vs_raw_scan_ratio", replay_s / scan_s, "x");
    put("replay_events", events as f64, "events");
    let (snap, no_snap, base) = (median(starts.0), median(starts.1), median(starts.2));
    put("cold_start_10k_runs_s", snap, "s");
    put("cold_start_10k_runs_no_snapshot_s", no_snap, "s");
    put("cold_start_empty_s", base, "s");
    put("cold_start_10k_vs_empty_ratio", snap / base, "x");
    if !benchmarking {
        println!("replay bench: smoke run ok; no figures written (no --bench)");
        return;
    }
    figures.write("replay");
}
