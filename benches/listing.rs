//! What a large read costs the writers: submit latency while another client lists
//! runs.
//!
//! The journal holds 5,000 ended runs. The server's one slot is held by a command run
//! that sleeps, so every run submitted here waits in the queue and nothing trains.
//! One client submits one run at a time (`POST /api/v1/runs`, answered once its
//! `RunSubmitted` is durable): 2,000 alone (`submit_p99_ms_idle`), then 2,000 while a
//! second client loops `GET /api/v1/runs?limit=1000` (`submit_p99_ms_while_listing`).
//! The ratio of the two, `submit_p99_while_listing_ratio`, is what the listing costs
//! an append: a read that held the state while it serialized 1,000 runs would hold
//! every flush behind it. `listing_rounds_per_s` says how hard the second client
//! pushed; the p50s are there for context.
//!
//! The server runs as its own program would, on an actix system of its own; each
//! client has a thread and runtime of its own, so no client shares the actors' thread.
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it checks the loops with
//! a few samples on a small journal and writes no figures.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::{client_thread, hold_the_slot, release, serve, spec, wait_ready};
use runyard::domain::{Envelope, Event, RunId};
use runyard::store::EventLog;
use serde_json::Value;

/// Sizes of one sitting.
struct Plan {
    /// Ended runs in the journal before the server starts.
    runs: usize,
    /// Submissions timed in each phase.
    submits: usize,
    /// `limit` of each listing.
    page: usize,
}

const BENCH: Plan = Plan {
    runs: 5_000,
    submits: 2_000,
    page: 1_000,
};

const SMOKE: Plan = Plan {
    runs: 50,
    submits: 5,
    page: 20,
};

/// `runs` runs submitted and cancelled, written straight into the journal.
fn fill_journal(dir: &std::path::Path, runs: usize) {
    let log = EventLog::open(&dir.join("journal")).expect("journal");
    let mut seq = 1;
    for chunk in (0..runs).collect::<Vec<_>>().chunks(500) {
        let mut batch = Vec::with_capacity(chunk.len() * 2);
        for i in chunk {
            let run = RunId::new();
            let name = format!("ended-{i}");
            batch.push(Envelope::now(
                run,
                Event::RunSubmitted {
                    name: name.clone(),
                    digest: format!("{i:064x}"),
                    spec: spec(&name).to_string(),
                },
            ));
            batch.push(Envelope::now(
                run,
                Event::RunCancelled {
                    reason: "bench".into(),
                },
            ));
        }
        log.append(seq, &batch).expect("append");
        seq += batch.len() as u64;
    }
}

/// The median of samples `p99_ms` has sorted.
fn p50_ms(sorted: &[Duration]) -> f64 {
    sorted[sorted.len() / 2].as_secs_f64() * 1e3
}

fn p99_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    let rank = ((0.99 * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1].as_secs_f64() * 1e3
}

/// Submits `n` runs one at a time: how long each took, and the runs' ids.
async fn submit_loop(
    http: &reqwest::Client,
    base: &str,
    tag: &str,
    n: usize,
) -> (Vec<Duration>, Vec<String>) {
    let mut out = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = spec(&format!("{tag}-{i}"));
        let start = Instant::now();
        let response = http
            .post(format!("{base}/api/v1/runs"))
            .json(&body)
            .send()
            .await
            .expect("submit");
        let status = response.status();
        let body = response.bytes().await.expect("submit body");
        out.push(start.elapsed());
        assert_eq!(status, 201, "submission {tag}-{i}");
        let view: Value = serde_json::from_slice(&body).expect("run view");
        ids.push(view["id"].as_str().expect("run id").to_string());
    }
    (out, ids)
}

/// The lister: `GET /api/v1/runs?limit=page` in a loop until `stop`.
async fn list_loop(
    http: reqwest::Client,
    base: String,
    page: usize,
    stop: Arc<AtomicBool>,
    listings: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let response = http
            .get(format!("{base}/api/v1/runs?limit={page}"))
            .send()
            .await
            .expect("list");
        assert_eq!(response.status(), 200, "listing");
        let body = response.bytes().await.expect("list body");
        assert!(body.len() > page * 100, "a page of {page} runs");
        listings.fetch_add(1, Ordering::Relaxed);
    }
}

/// The submitter's whole part: the slot holder, both timed phases (the lister runs
/// during the second), then every run it queued cancelled. Returns the figures.
async fn submitter(
    http: reqwest::Client,
    base: String,
    plan_submits: usize,
    page: usize,
) -> (Vec<Duration>, Vec<Duration>, f64) {
    wait_ready(&http, &base).await;
    let holder = hold_the_slot(&http, &base).await;

    let (idle, mut queued) = submit_loop(&http, &base, "idle", plan_submits).await;

    let stop = Arc::new(AtomicBool::new(false));
    let listings = Arc::new(AtomicU64::new(0));
    let lister = {
        let (base, stop, listings) = (base.clone(), Arc::clone(&stop), Arc::clone(&listings));
        client_thread(move |http| Box::pin(list_loop(http, base, page, stop, listings)))
    };
    // The lister is under way before the first timed submission.
    while listings.load(Ordering::Relaxed) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let (busy, more) = submit_loop(&http, &base, "busy", plan_submits).await;
    queued.extend(more);
    let listing_rate = listings.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    lister.join().expect("lister");

    release(&http, &base, &queued, &holder).await;
    (idle, busy, listing_rate)
}

fn run(plan: &Plan, figures: &mut common::Figures) {
    let target = common::target_dir();
    std::fs::create_dir_all(&target).expect("target dir");
    // On the repository's disk, as the journal bench: `/tmp` may be a RAM disk.
    let dir = tempfile::tempdir_in(&target).expect("temp dir");
    fill_journal(dir.path(), plan.runs);
    let served = serve(dir.path());
    let (base, submits, page) = (served.base.clone(), plan.submits, plan.page);
    let (mut idle, mut busy, listing_rate) =
        client_thread(move |http| Box::pin(submitter(http, base, submits, page)))
            .join()
            .expect("submitter");
    served.stop();

    let (idle_p99, busy_p99) = (p99_ms(&mut idle), p99_ms(&mut busy));
    let (idle_p50, busy_p50) = (p50_ms(&idle), p50_ms(&busy));
    figures.put(String::from("submit_p50_ms_idle"), idle_p50, "ms");
    figures.put(String::from("submit_p50_ms_while_listing"), busy_p50, "ms");
    figures.put(String::from("submit_p99_ms_idle"), idle_p99, "ms");
    figures.put(String::from("submit_p99_ms_while_listing"), busy_p99, "ms");
    figures.put(
        String::from("submit_p99_while_listing_ratio"),
        busy_p99 / idle_p99,
        "x",
    );
    figures.put(
        String::from("listing_rounds_per_s"),
        listing_rate,
        "rounds/s",
    );
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
        figures.write("listing");
    } else {
        println!("listing bench: smoke run ok; no figures written (no --bench)");
    }
}
