//! What open event streams cost the writers: sequential submits with many clients on
//! `GET /api/v1/stream`, half reading every event and half never reading.
//!
//! The server's one slot is held by a command that sleeps, so every submitted run
//! waits in the queue and nothing trains. One client submits runs one at a time
//! (`POST /api/v1/runs`, answered once its `RunSubmitted` is durable) and the time
//! for all of them is taken twice: with no stream open (`submit_300_s_no_streams`),
//! then with the streams open (`submit_300_s_with_streams`). Every submission is an
//! event each stream is sent. `submit_with_streams_ratio` is the second over the
//! first: producers must not pay for consumers. Both phases run five times, one
//! after the other, and each figure is the median of the five (300 submits take
//! about 0.15 s here: one sitting's single round swung from 1.64 to 1.99).
//!
//! The streams are plain TCP connections on a thread of their own (the submitter has
//! another, the server a third): a reader takes everything it is sent; a non-reader
//! takes the response head and then nothing, so its socket buffers fill and the
//! server has to keep from waiting on it.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it checks the loops with
//! a few streams and submits and writes no figures.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::server::{client_thread, hold_the_slot, release, serve, spec, wait_ready};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sizes of one sitting.
struct Plan {
    /// Streams opened: half read, half never read.
    streams: usize,
    /// Submissions timed in each phase.
    submits: usize,
    /// Rounds of both phases; the figures are their medians.
    rounds: usize,
}

const BENCH: Plan = Plan {
    streams: 1_000,
    submits: 300,
    rounds: 5,
};

const SMOKE: Plan = Plan {
    streams: 20,
    submits: 10,
    rounds: 2,
};

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Connections opened at once (the listen backlog is 1,024).
const CONNECT_AT_ONCE: usize = 200;

/// Submits `n` runs one at a time: the time for all of them, and their ids.
async fn submit_all(
    http: &reqwest::Client,
    base: &str,
    tag: &str,
    n: usize,
) -> (Duration, Vec<String>) {
    let mut ids = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let response = http
            .post(format!("{base}/api/v1/runs"))
            .json(&spec(&format!("{tag}-{i}")))
            .send()
            .await
            .expect("submit");
        assert_eq!(response.status(), 201, "submission {tag}-{i}");
        let view: Value = response.json().await.expect("run view");
        ids.push(view["id"].as_str().expect("run id").to_string());
    }
    (start.elapsed(), ids)
}

/// Opens one stream and reads its response head.
async fn open_stream(address: &str, after: u64) -> TcpStream {
    let mut socket = TcpStream::connect(address).await.expect("connect");
    let request = format!(
        "GET /api/v1/stream?after={after} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("request");
    let mut head = vec![0u8; 4096];
    let n = socket.read(&mut head).await.expect("response head");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "stream refused: {}",
        String::from_utf8_lossy(&head[..n])
    );
    socket
}

/// Opens `n` streams from after record `after` (half of them then read to the end),
/// tells `ready`, and holds them until `done`.
async fn streams(
    address: String,
    after: u64,
    n: usize,
    ready: mpsc::Sender<()>,
    done: tokio::sync::oneshot::Receiver<()>,
) {
    let mut held = Vec::with_capacity(n / 2 + 1);
    let mut readers = Vec::with_capacity(n / 2 + 1);
    let mut opened = 0;
    while opened < n {
        let batch = CONNECT_AT_ONCE.min(n - opened);
        let sockets =
            futures_util::future::join_all((0..batch).map(|_| open_stream(&address, after))).await;
        for socket in sockets {
            if opened % 2 == 0 {
                readers.push(tokio::spawn(async move {
                    let mut socket = socket;
                    let mut buf = vec![0u8; 16 * 1024];
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                }));
            } else {
                held.push(socket);
            }
            opened += 1;
        }
    }
    ready.send(()).expect("submitter waits");
    let _ = done.await;
    drop(held);
    for reader in readers {
        reader.abort();
    }
}

fn run(plan: &Plan, figures: &mut common::Figures) {
    let target = common::target_dir();
    std::fs::create_dir_all(&target).expect("target dir");
    // On the repository's disk, as the journal bench: `/tmp` may be a RAM disk.
    let dir = tempfile::tempdir_in(&target).expect("temp dir");
    let served = serve(dir.path());
    let base = served.base.clone();
    let (count, submits, rounds) = (plan.streams, plan.submits, plan.rounds);
    let timed = client_thread(move |http| {
        Box::pin(async move {
            wait_ready(&http, &base).await;
            let holder = hold_the_slot(&http, &base).await;
            let mut queued = Vec::new();
            let mut timed = Vec::new();
            for round in 0..rounds {
                let (alone, ids) =
                    submit_all(&http, &base, &format!("alone{round}"), submits).await;
                queued.extend(ids);
                // The streams start at the journal's end: what is timed is what each
                // new event costs, not a thousand clients catching up on the history.
                let last = queued.last().unwrap_or(&holder);
                let view: Value = http
                    .get(format!("{base}/api/v1/runs/{last}"))
                    .send()
                    .await
                    .expect("last run")
                    .json()
                    .await
                    .expect("last run view");
                let after = view["last_seq"].as_u64().expect("last_seq");

                let (ready_tx, ready_rx) = mpsc::channel();
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                let address = base.trim_start_matches("http://").to_string();
                let streams = std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("streams runtime")
                        .block_on(streams(address, after, count, ready_tx, done_rx));
                });
                tokio::task::spawn_blocking(move || ready_rx.recv())
                    .await
                    .expect("wait for the streams")
                    .expect("streams open");
                let (with_streams, ids) =
                    submit_all(&http, &base, &format!("streams{round}"), submits).await;
                queued.extend(ids);
                let _ = done_tx.send(());
                streams.join().expect("streams thread");
                timed.push((alone, with_streams));
            }
            release(&http, &base, &queued, &holder).await;
            timed
        })
    })
    .join()
    .expect("submitter");
    served.stop();

    let seconds = |pick: fn(&(Duration, Duration)) -> Duration| {
        median(timed.iter().map(|t| pick(t).as_secs_f64()).collect())
    };
    figures.put("submit_300_s_no_streams", seconds(|t| t.0), "s");
    figures.put("submit_300_s_with_streams", seconds(|t| t.1), "s");
    let ratios: Vec<f64> = timed
        .iter()
        .map(|(alone, with)| with.as_secs_f64() / alone.as_secs_f64())
        .collect();
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    eprintln!("streams: ratio of each round {}", shown.join(", "));
    figures.put("submit_with_streams_ratio", median(ratios), "x");
    drop(dir);
}

fn main() {
    let benchmarking = match common::mode() {
        common::Mode::List => return,
        mode => mode == common::Mode::Bench,
    };
    let plan = if benchmarking { &BENCH } else { &SMOKE };
    let mut figures = if benchmarking {
        common::Figures::echoed(2)
    } else {
        common::Figures::quiet()
    };
    run(plan, &mut figures);
    if benchmarking {
        figures.write("streams");
    } else {
        println!("streams bench: smoke run ok; no figures written (no --bench)");
    }
}
