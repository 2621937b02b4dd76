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

use runyard::config::Config;
use runyard::domain::{Envelope, Event, RunId};
use runyard::startup::Application;
use runyard::store::EventLog;
use serde_json::{json, Value};

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

fn spec(name: &str) -> Value {
    json!({
        "name": name,
        "model": {"kind": "mlp", "hidden": [32]},
        "data": {"kind": "synthetic", "samples": 2000, "features": 16, "classes": 3, "seed": 7},
        "optimizer": {"kind": "adam", "lr": 0.01},
        "epochs": 3,
        "batch_size": 32,
        "seed": 1
    })
}

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

/// The server, as its own program would run it: an actix system on a thread of its
/// own, with the actors on that system's thread. Clients never share that thread.
struct Served {
    base: String,
    system: actix::System,
    thread: std::thread::JoinHandle<()>,
}

fn serve(dir: &std::path::Path) -> Served {
    let mut config = Config::defaults();
    config.server.bind = "127.0.0.1:0".parse().expect("address");
    config.server.data_dir = dir.to_path_buf();
    config.train.cpu_slots = 1;
    config.train.threads_per_slot = 1;
    config.runs.allow_commands = true;
    config.log.filter = "warn".into();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let system = actix::System::new();
        let app = system
            .block_on(Application::build(config))
            .expect("server builds");
        let base = format!("http://{}", app.address());
        system.block_on(async move {
            tx.send((base, actix::System::current()))
                .expect("bench waits");
            actix_web::rt::spawn(app.run_until_stopped());
        });
        system.run().expect("server system");
    });
    let (base, system) = rx.recv().expect("server started");
    Served {
        base,
        system,
        thread,
    }
}

/// A client on a thread and runtime of its own, as a separate program would be.
fn client_thread<T: Send + 'static>(
    work: impl FnOnce(reqwest::Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
        + Send
        + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        runtime.block_on(work(http))
    })
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    // The one slot sleeps: every run submitted from here on stays queued.
    let holder = json!({"name": "slot-holder", "kind": "command", "argv": ["sleep", "3600"]});
    let answer = http
        .post(format!("{base}/api/v1/runs"))
        .json(&holder)
        .send()
        .await
        .expect("submit the slot holder");
    assert_eq!(answer.status(), 201, "slot holder");
    let holder: Value = answer.json().await.expect("slot holder view");
    let holder = holder["id"].as_str().expect("slot holder id").to_string();

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

    // The queued runs go first: freed, the slot would start training one while the
    // process exits (libtorch torn down under a starting thread).
    for id in &queued {
        let cancel = http
            .post(format!("{base}/api/v1/runs/{id}/cancel"))
            .send()
            .await
            .expect("cancel a queued run");
        assert!(
            cancel.status().is_success(),
            "cancel {id}: {}",
            cancel.status()
        );
    }
    // No sleeping process outlives the bench.
    let cancel = http
        .post(format!("{base}/api/v1/runs/{holder}/cancel"))
        .send()
        .await
        .expect("cancel the slot holder");
    assert!(cancel.status().is_success(), "cancel: {}", cancel.status());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view: Value = http
            .get(format!("{base}/api/v1/runs/{holder}"))
            .send()
            .await
            .expect("slot holder")
            .json()
            .await
            .expect("view");
        if view["state"] == "cancelled" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot holder not cancelled: {view}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    served.system.stop();
    served.thread.join().expect("server thread");

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
