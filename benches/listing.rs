//! What a large read costs the writers: submit latency while another client lists
//! runs.
//!
//! The journal holds 5,000 ended runs. The server's one slot is held by a command run
//! that sleeps, so every run submitted here waits in the queue and nothing trains.
//! One client submits one run at a time (`POST /api/v1/runs`, answered once its
//! `RunSubmitted` is durable): 2,000 alone (`submit_p99_ms_idle`) and 2,000 while a
//! second client loops `GET /api/v1/runs?limit=1000` (`submit_p99_ms_while_listing`),
//! in alternating blocks of 200 (the lister parked between its blocks), so a spell
//! of slow disk or a journal that grew lands on both kinds alike rather than on
//! whichever phase it fell in.
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

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Blocks each phase's submissions are split into, alternating with the other's.
    blocks: usize,
}

const BENCH: Plan = Plan {
    runs: 5_000,
    submits: 2_000,
    page: 1_000,
    blocks: 10,
};

const SMOKE: Plan = Plan {
    runs: 50,
    submits: 6,
    page: 20,
    blocks: 2,
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

/// What the submitter tells the lister.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lister {
    /// Wait, sending nothing.
    Parked,
    /// List in a loop.
    Listing,
    /// Return.
    Done,
}

/// The lister: `GET /api/v1/runs?limit=page` in a loop while told to list; it says
/// on `parked` when it is waiting, so no listing runs into an idle block.
async fn list_loop(
    http: reqwest::Client,
    base: String,
    page: usize,
    mut told: tokio::sync::watch::Receiver<Lister>,
    parked: tokio::sync::watch::Sender<bool>,
    listings: Arc<AtomicU64>,
) {
    loop {
        let order = *told.borrow_and_update();
        match order {
            Lister::Done => return,
            Lister::Parked => {
                parked.send_replace(true);
                if told.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Lister::Listing => parked.send_replace(false),
        };
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

/// The submitter's whole part: the slot holder, both timed phases in alternating
/// blocks (the lister runs during the busy ones), then every run it queued
/// cancelled. Returns the figures.
async fn submitter(
    http: reqwest::Client,
    base: String,
    plan: (usize, usize, usize),
) -> (Vec<Duration>, Vec<Duration>, f64) {
    let (submits, page, blocks) = plan;
    wait_ready(&http, &base).await;
    let holder = hold_the_slot(&http, &base).await;

    let (tell, told) = tokio::sync::watch::channel(Lister::Parked);
    let (parked_tx, mut parked) = tokio::sync::watch::channel(false);
    let listings = Arc::new(AtomicU64::new(0));
    let lister = {
        let (base, listings) = (base.clone(), Arc::clone(&listings));
        client_thread(move |http| Box::pin(list_loop(http, base, page, told, parked_tx, listings)))
    };
    let (mut idle, mut busy, mut queued) = (Vec::new(), Vec::new(), Vec::new());
    let (mut listing_time, mut listed) = (Duration::ZERO, 0);
    let per_block = submits.div_ceil(blocks);
    for block in 0..blocks {
        let n = per_block.min(submits - block * per_block);
        // Idle: the lister waits.
        parked.wait_for(|p| *p).await.expect("lister parked");
        let (times, ids) = submit_loop(&http, &base, &format!("idle{block}"), n).await;
        idle.extend(times);
        queued.extend(ids);

        // Busy: the lister is under way before the first timed submission.
        let before = listings.load(Ordering::Relaxed);
        tell.send_replace(Lister::Listing);
        while listings.load(Ordering::Relaxed) < before + 2 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (counted, started) = (listings.load(Ordering::Relaxed), Instant::now());
        let (times, ids) = submit_loop(&http, &base, &format!("busy{block}"), n).await;
        listing_time += started.elapsed();
        listed += listings.load(Ordering::Relaxed) - counted;
        busy.extend(times);
        queued.extend(ids);
        tell.send_replace(Lister::Parked);
    }
    tell.send_replace(Lister::Done);
    lister.join().expect("lister");
    let listing_rate = listed as f64 / listing_time.as_secs_f64();

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
    let (base, sizes) = (served.base.clone(), (plan.submits, plan.page, plan.blocks));
    let (mut idle, mut busy, listing_rate) =
        client_thread(move |http| Box::pin(submitter(http, base, sizes)))
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
