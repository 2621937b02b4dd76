//! Sweeps: what one searcher decision costs, what ASHA saves over random search, and
//! how fast a promoted trial trains again.
//!
//! - `sweep_decision_us`: one [`runyard::domain::sweep::decide`] over a sweep of
//!   1,000 trials in the middle of an ASHA search (rungs of 1, 3, 9 and 27 epochs,
//!   η = 3: trials waiting at every rung with results, some promoted, some failed,
//!   a slot free), median of the timed rounds, in µs. Issue 17's target: at most 100.
//!
//! The other figures come from a real server in this process (`common::server`: one
//! CPU slot, one torch thread, the default tick, `train.tick_ms` = 200 ms) training the
//! digits data (`data/datasets/digits.csv.gz`, copied into the server's
//! `DATA_DIR/datasets`). Two sweeps run on it, one after the other, both
//! `examples/sweep-digits.json` (its space, its seed 7, so trial `k` has the same point
//! in both) with `max_concurrent` 1:
//!
//! - the ASHA sweep as the example has it (rungs of 1, 3 and 9 epochs, η = 3, 27
//!   trials);
//! - random search: the same spec with the searcher `{"kind": "random",
//!   "max_trials": 27}` and the base's 9 epochs, so every trial trains to ASHA's
//!   `max_epochs`.
//!
//! Each sweep's events are read back from `GET /api/v1/sweeps/{id}/stream` once it has
//! completed (the sweep's own events and its trial runs' events, in journal order).
//!
//! - `asha_vs_random_epochs_to_target` (ratio; target at most 0.33): the target is the
//!   best validation accuracy a random trial has at its end (its `TrialReachedRung`
//!   at 9 epochs), less 0.005. Walking the ASHA sweep's events in `seq` order and
//!   counting every `EpochCompleted` of its trial runs (an epoch trained again after
//!   a resume counts again), the figure is the count when the first `TrialReachedRung`
//!   with a metric at or above the target is journaled, over the `EpochCompleted`
//!   events of the whole random search (27 × 9 = 243). `TrialReachedRung`, not the
//!   first `EpochEvaluated` over the target, marks "ASHA has such a trial": it is the
//!   result the searcher ranks and reports, taken at a rung's end where the trial is
//!   checkpointed, the same kind of result as the random trials' (their value at the
//!   end of their one rung); a trial crossing the target in the middle of a rung is
//!   not yet a result anyone has. It can only count more epochs than the
//!   `EpochEvaluated` reading, which the bench prints beside the figure. Should ASHA
//!   never reach the target, the figure is all of ASHA's epochs over random search's,
//!   and the bench says so.
//! - `trial_promotion_ms` (ms): for each promotion of the ASHA sweep, the time from the
//!   promoted trial's `TrialReachedRung` (its `at`) to the first progress sample of its
//!   run, after the promotion, with more samples than the run had trained before —
//!   the promoted trial training again, as the sweep's stream delivers it to a client
//!   (read live; the server and the client share the host's clock) — median over the
//!   promotions. It takes in what a submission's first progress takes in: the
//!   decision journaled, the run queued and given the slot, the checkpoint and data
//!   loaded, the first batches, the wait for the ticker. With one slot and
//!   `max_concurrent` 1 the slot the rung's pause frees goes straight to the promoted
//!   trial; only promotions decided as soon as the result came in count: those whose
//!   `TrialPromoted` is the sweep's next event after the trial's own
//!   `TrialReachedRung` (a trial promoted later, because another trial's result
//!   made room for it, waited for that result, not for the server).
//! - `sweep_local_submit_to_first_progress_ms` (ms): as `benches/slurm.rs` measures
//!   `local_submit_to_first_progress_ms`, on this server: the time from
//!   `POST /api/v1/runs` to the run's first progress sample (`progress.samples` > 0)
//!   in `GET /api/v1/runs/{id}`, polled every 2 ms, median over 5 runs. Each run is a
//!   digits run on the free slot (the example's base, 1,000 epochs), cancelled once
//!   its progress is seen; they run after the ASHA sweep, on a server as warm as the
//!   promotions had it. The bench prints beside it each run's `RunSubmitted` to
//!   `RunStarted` in the journal.
//! - `trial_promotion_vs_submit_ratio` (ratio; target at most 2): `trial_promotion_ms`
//!   over `sweep_local_submit_to_first_progress_ms`.
//!
//! Without `--bench` (`cargo test --benches`) a few decision rounds run, and the same
//! measurements on a small scale (an ASHA sweep of 9 trials over rungs of 1 and 3
//! epochs, a random one of 9 trials of 3 epochs, one submitted run): it prints what
//! it found and writes nothing.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::server::{client_thread, serve, wait_ended, wait_ready};
use futures_util::StreamExt as _;
use rand::{Rng as _, SeedableRng as _};
use runyard::domain::sweep::{decide, Mode, Schedule, Trial, TrialStatus};
use serde_json::{json, Value};

const TRIALS: u32 = 1000;

/// The sizes of one sitting.
struct Plan {
    /// Trials of both sweeps.
    trials: u32,
    /// ASHA's `max_epochs` and the random trials' epochs.
    max_epochs: u32,
    /// Runs timed from submit to first progress.
    submits: usize,
    /// The longest any sweep may take.
    limit: Duration,
}

const BENCH: Plan = Plan {
    trials: 27,
    max_epochs: 9,
    submits: 5,
    limit: Duration::from_secs(1200),
};

const SMOKE: Plan = Plan {
    trials: 9,
    max_epochs: 3,
    submits: 1,
    limit: Duration::from_secs(600),
};

fn main() {
    let mode = common::mode();
    if mode == common::Mode::List {
        return;
    }
    let bench = mode == common::Mode::Bench;
    let decision_us = decision_us(if bench { 2000 } else { 20 });
    let started = Instant::now();
    let measured = measure(if bench { &BENCH } else { &SMOKE });
    let figures_of = Outcome::of(&measured);
    if bench {
        let mut figures = common::Figures::echoed(3);
        figures.put("sweep_decision_us", decision_us, "us");
        figures_of.put(&mut figures);
        figures_of.notes(&measured);
        figures.write("sweep");
    } else {
        figures_of.notes(&measured);
        println!(
            "sweep bench: smoke run ok ({decision_us:.1} µs a decision; epochs ratio {:.3}, \
             promotion {:.0} ms, submit to first progress {:.0} ms; the server part took {:.1} s); \
             no figures written (no --bench)",
            figures_of.epochs_ratio,
            figures_of.promotion_ms,
            figures_of.submit_ms,
            started.elapsed().as_secs_f64()
        );
    }
}

/// The median time of one decision over `rounds` rounds, in µs.
fn decision_us(rounds: usize) -> f64 {
    let schedule = Schedule {
        rungs: Schedule::asha(1, 27, 3),
        eta: 3,
        max_trials: 2 * TRIALS,
        max_concurrent: 8,
        mode: Mode::Max,
    };
    let trials = mid_search(&schedule);
    let mut times = Vec::with_capacity(rounds);
    let mut decided = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let decisions = std::hint::black_box(decide(&schedule, std::hint::black_box(&trials)));
        times.push(started.elapsed().as_secs_f64() * 1e6);
        decided = decisions.len();
    }
    assert!(decided > 0, "the free slot is given something");
    median(times)
}

/// 1,000 trials as an ASHA search leaves them: each finished rungs up to a random
/// one, the best of each rung promoted, a few failed, seven training and one slot free.
fn mid_search(schedule: &Schedule) -> Vec<Trial> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    let top = schedule.top() as usize;
    (0..TRIALS)
        .map(|number| {
            let reached = match rng.random_range(0..100) {
                0..=69 => 1,
                70..=89 => 2,
                90..=97 => 3,
                _ => top + 1,
            }
            .min(top + 1);
            let results: Vec<f64> = (0..reached).map(|_| rng.random_range(0.5..1.0)).collect();
            let status = if number < 7 {
                TrialStatus::Training { rung: 0 }
            } else if rng.random_bool(0.02) {
                TrialStatus::Failed
            } else if reached > top {
                TrialStatus::Finished
            } else {
                TrialStatus::Waiting {
                    rung: reached as u32 - 1,
                }
            };
            let results = if number < 7 { Vec::new() } else { results };
            Trial {
                number,
                status,
                results,
            }
        })
        .collect()
}

/// The middle value (the mean of the two middle ones for an even count); NaN for none.
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

/// One journaled event of a sweep's stream.
#[derive(Debug, Clone)]
struct Journaled {
    seq: u64,
    /// `at`, in µs since the epoch.
    at_us: i64,
    /// When the client read it, in µs since the epoch (the same clock: one host).
    arrived_us: i64,
    run_id: String,
    kind: String,
    data: Value,
}

/// One progress sample of a trial, as the sweep's stream delivered it live.
#[derive(Debug, Clone)]
struct Sample {
    run_id: String,
    /// When the client read it, in µs since the epoch.
    arrived_us: i64,
    samples: u64,
}

/// One sweep, run to its end: its id, its events in journal order and its trials'
/// progress samples as they came.
struct SweepRun {
    id: String,
    events: Vec<Journaled>,
    samples: Vec<Sample>,
    took: Duration,
}

/// What the server part measured.
struct Measured {
    asha: SweepRun,
    random: SweepRun,
    /// The random trials' epochs.
    random_epochs: u32,
    /// Submit to first progress of each timed run, in ms.
    submit_ms: Vec<f64>,
    /// Each timed run's `RunSubmitted` to its `RunStarted` in the journal, in ms.
    submit_journal_ms: Vec<f64>,
}

/// Runs the two sweeps and the timed submissions on a real server.
fn measure(plan: &'static Plan) -> Measured {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let digits = root.join("data/datasets/digits.csv.gz");
    assert!(
        digits.exists(),
        "{} is missing: run `make setup` (scripts/fetch-digits.sh)",
        digits.display()
    );
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/sweep-digits.json")).expect("example"),
    )
    .expect("JSON example");
    let dir = tempfile::tempdir().expect("temp dir");
    let datasets = dir.path().join("datasets");
    std::fs::create_dir_all(&datasets).expect("datasets dir");
    std::fs::copy(&digits, datasets.join("digits.csv.gz")).expect("copy digits");
    let served = serve(dir.path());
    let base = served.base.clone();

    let mut asha = example.clone();
    asha["searcher"]["max_concurrent"] = json!(1);
    asha["searcher"]["max_trials"] = json!(plan.trials);
    asha["searcher"]["max_epochs"] = json!(plan.max_epochs);
    asha["base"]["epochs"] = json!(plan.max_epochs);
    let mut random = example.clone();
    random["name"] = json!("digits-random");
    random["searcher"] = json!({"kind": "random", "max_trials": plan.trials});
    random["base"]["epochs"] = json!(plan.max_epochs);
    let mut probe = example["base"].clone();
    probe["epochs"] = json!(1000);

    let measured = client_thread(move |http| {
        Box::pin(async move {
            wait_ready(&http, &base).await;
            let asha = run_sweep(&http, &base, &asha, plan.limit).await;
            let mut submit_ms = Vec::with_capacity(plan.submits);
            let mut submit_journal_ms = Vec::with_capacity(plan.submits);
            for i in 0..plan.submits {
                probe["name"] = json!(format!("probe-{i}"));
                let (ms, journal_ms) = submit_to_first_progress(&http, &base, &probe).await;
                submit_ms.push(ms);
                submit_journal_ms.push(journal_ms);
            }
            let random = run_sweep(&http, &base, &random, plan.limit).await;
            Measured {
                asha,
                random,
                random_epochs: plan.max_epochs,
                submit_ms,
                submit_journal_ms,
            }
        })
    })
    .join()
    .expect("client thread");
    served.stop();
    drop(dir);
    measured
}

/// Submits a sweep and follows its stream live to its end: every journaled event,
/// and the trials' progress samples with the time each arrived.
async fn run_sweep(http: &reqwest::Client, base: &str, spec: &Value, limit: Duration) -> SweepRun {
    let started = Instant::now();
    let response = http
        .post(format!("{base}/api/v1/sweeps"))
        .json(spec)
        .send()
        .await
        .expect("sweep submitted");
    let status = response.status();
    let created: Value = response.json().await.expect("sweep JSON");
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("sweep id").to_string();
    let (events, samples) = tokio::time::timeout(limit, read_stream(http, base, &id))
        .await
        .unwrap_or_else(|_| panic!("sweep {id} still running after {limit:?}"));
    let took = started.elapsed();
    assert_eq!(
        events.last().map(|e| e.kind.as_str()),
        Some("SweepCompleted"),
        "the sweep ran to its end"
    );
    SweepRun {
        id,
        events,
        samples,
        took,
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The journaled events of sweep `id`'s stream, from the start to its end, and the
/// progress samples it sent meanwhile; a `resume` (the client was too slow)
/// reconnects after it.
async fn read_stream(
    http: &reqwest::Client,
    base: &str,
    id: &str,
) -> (Vec<Journaled>, Vec<Sample>) {
    let mut events = Vec::new();
    let mut samples = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let url = match after {
            Some(after) => format!("{base}/api/v1/sweeps/{id}/stream?after={after}"),
            None => format!("{base}/api/v1/sweeps/{id}/stream"),
        };
        let response = http.get(url).send().await.expect("stream answered");
        assert_eq!(response.status(), 200, "sweep stream");
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        let mut resume = None;
        while let Some(chunk) = body.next().await {
            buffer.extend_from_slice(&chunk.expect("stream chunk"));
            let arrived_us = now_us();
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buffer.drain(..end + 2).collect();
                let block = std::str::from_utf8(&block).expect("utf-8 block");
                let (mut event, mut data) = ("", String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                match event {
                    "" => {}
                    "progress" => {
                        let data: Value = serde_json::from_str(&data).expect("progress JSON");
                        samples.push(Sample {
                            run_id: data["run_id"].as_str().expect("run id").to_string(),
                            arrived_us,
                            samples: data["samples"].as_u64().unwrap_or(0),
                        });
                    }
                    "resume" => {
                        let data: Value = serde_json::from_str(&data).expect("resume JSON");
                        resume = Some(data["after"].as_u64().expect("resume cursor"));
                    }
                    _ => {
                        let view: Value = serde_json::from_str(&data).expect("event JSON");
                        let at = view["at"].as_str().expect("at");
                        events.push(Journaled {
                            seq: view["seq"].as_u64().expect("seq"),
                            at_us: chrono::DateTime::parse_from_rfc3339(at)
                                .expect("RFC 3339 at")
                                .timestamp_micros(),
                            arrived_us,
                            run_id: view["run_id"].as_str().expect("run id").to_string(),
                            kind: view["type"].as_str().expect("type").to_string(),
                            data: view["data"].clone(),
                        });
                    }
                }
            }
        }
        match resume {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "the stream is in journal order"
    );
    (events, samples)
}

/// Submits `spec` and answers the time to its first progress sample in
/// `GET /runs/{id}`, in ms; then cancels the run and waits until it has ended, so the
/// slot is free again. Answers too the time from its `RunSubmitted` to its
/// `RunStarted` in the journal (their `at`s), in ms.
async fn submit_to_first_progress(http: &reqwest::Client, base: &str, spec: &Value) -> (f64, f64) {
    let started = Instant::now();
    let response = http
        .post(format!("{base}/api/v1/runs"))
        .json(spec)
        .send()
        .await
        .expect("submitted");
    let status = response.status();
    let body: Value = response.json().await.expect("run");
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let deadline = started + Duration::from_secs(180);
    let elapsed = loop {
        let run: Value = http
            .get(format!("{base}/api/v1/runs/{id}"))
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("run JSON");
        if run["progress"]["samples"].as_u64().is_some_and(|s| s > 0) {
            break started.elapsed();
        }
        assert!(
            !matches!(
                run["state"].as_str(),
                Some("completed" | "failed" | "cancelled" | "paused")
            ),
            "run {id} stopped before any progress: {run}"
        );
        assert!(Instant::now() < deadline, "no progress from {id}: {run}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let cancel = http
        .post(format!("{base}/api/v1/runs/{id}/cancel"))
        .send()
        .await
        .expect("cancel");
    assert!(
        cancel.status().is_success(),
        "cancel {id}: {}",
        cancel.status()
    );
    wait_ended(http, base, &id, Duration::from_secs(120)).await;
    let events: Value = http
        .get(format!("{base}/api/v1/runs/{id}/events"))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("events JSON");
    let at = |kind: &str| {
        let event = events
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("{id} has no {kind}: {events}"));
        chrono::DateTime::parse_from_rfc3339(event["at"].as_str().expect("at"))
            .expect("RFC 3339 at")
            .timestamp_micros()
    };
    let journal_ms = (at("RunStarted") - at("RunSubmitted")) as f64 / 1e3;
    (elapsed.as_secs_f64() * 1e3, journal_ms)
}

/// Where ASHA stood against the target.
#[derive(Debug, Clone, Copy, PartialEq)]
struct EpochsToTarget {
    /// Epochs trained when the first `TrialReachedRung` at or over the target was
    /// journaled.
    at_rung: Option<u64>,
    /// Epochs trained when the first `EpochEvaluated` at or over the target was.
    at_evaluation: Option<u64>,
    /// Every epoch the sweep trained.
    total: u64,
}

/// Counts the trial runs' `EpochCompleted` events of a sweep, in journal order, up to
/// the first result at or over `target` (higher is better).
fn epochs_to_target(sweep: &SweepRun, target: f64) -> EpochsToTarget {
    let mut counted = EpochsToTarget {
        at_rung: None,
        at_evaluation: None,
        total: 0,
    };
    for event in &sweep.events {
        let own = event.run_id == sweep.id;
        match (own, event.kind.as_str()) {
            (false, "EpochCompleted") => counted.total += 1,
            (false, "EpochEvaluated")
                if counted.at_evaluation.is_none()
                    && event.data["val_metric"]
                        .as_f64()
                        .is_some_and(|m| m >= target) =>
            {
                counted.at_evaluation = Some(counted.total);
            }
            (true, "TrialReachedRung")
                if counted.at_rung.is_none()
                    && event.data["metric"].as_f64().is_some_and(|m| m >= target) =>
            {
                counted.at_rung = Some(counted.total);
            }
            _ => {}
        }
    }
    counted
}

/// The best result any trial of a one-rung sweep reached at its end, and the trial.
fn best_result(sweep: &SweepRun) -> Option<(f64, u64)> {
    sweep
        .events
        .iter()
        .filter(|e| e.run_id == sweep.id && e.kind == "TrialReachedRung")
        .filter_map(|e| Some((e.data["metric"].as_f64()?, e.data["trial"].as_u64()?)))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
}

/// The promotions of a sweep decided as soon as the promoted trial's result came in,
/// each as the time from its `TrialReachedRung` (journaled) to the first progress
/// sample of its run, after the promotion, showing more samples than it had trained
/// before (training again), in ms; and how many promotions there were in all.
fn promotion_ms(sweep: &SweepRun) -> (Vec<f64>, usize) {
    let mut runs = std::collections::HashMap::new();
    let mut previous: Option<&Journaled> = None;
    let (mut times, mut promotions) = (Vec::new(), 0);
    for event in sweep.events.iter().filter(|e| e.run_id == sweep.id) {
        let trial = event.data["trial"].as_u64();
        match event.kind.as_str() {
            "TrialCreated" => {
                let run = event.data["run"].as_str().expect("trial run").to_string();
                runs.insert(trial.expect("trial"), run);
            }
            "TrialPromoted" => {
                promotions += 1;
                let right_after = previous
                    .filter(|p| p.kind == "TrialReachedRung" && p.data["trial"].as_u64() == trial);
                if let Some(reached) = right_after {
                    let run = runs
                        .get(&trial.expect("trial"))
                        .expect("a promoted trial was created");
                    let of_run = || sweep.samples.iter().filter(|s| &s.run_id == run);
                    let trained = of_run()
                        .filter(|s| s.arrived_us <= event.arrived_us)
                        .map(|s| s.samples)
                        .max()
                        .unwrap_or(0);
                    let again =
                        of_run().find(|s| s.arrived_us >= event.arrived_us && s.samples > trained);
                    if let Some(again) = again {
                        times.push((again.arrived_us - reached.at_us) as f64 / 1e3);
                    }
                }
            }
            _ => {}
        }
        previous = Some(event);
    }
    (times, promotions)
}

/// The figures, worked out from what was measured.
struct Outcome {
    target: f64,
    random_best: Option<(f64, u64)>,
    random_epochs: u64,
    asha: EpochsToTarget,
    epochs_ratio: f64,
    promotions: Vec<f64>,
    all_promotions: usize,
    promotion_ms: f64,
    submit_ms: f64,
}

impl Outcome {
    fn of(measured: &Measured) -> Self {
        let random_best = best_result(&measured.random);
        let target = random_best.map_or(f64::NAN, |(best, _)| best - 0.005);
        let random_epochs = epochs_to_target(&measured.random, f64::INFINITY).total;
        let asha = epochs_to_target(&measured.asha, target);
        let epochs_ratio = asha.at_rung.unwrap_or(asha.total) as f64 / random_epochs.max(1) as f64;
        let (promotions, all_promotions) = promotion_ms(&measured.asha);
        let promotion_ms = median(promotions.clone());
        Self {
            target,
            random_best,
            random_epochs,
            asha,
            epochs_ratio,
            promotions,
            all_promotions,
            promotion_ms,
            submit_ms: median(measured.submit_ms.clone()),
        }
    }

    fn put(&self, figures: &mut common::Figures) {
        figures.put(
            "asha_vs_random_epochs_to_target",
            self.epochs_ratio,
            "ratio",
        );
        figures.put("trial_promotion_ms", self.promotion_ms, "ms");
        figures.put(
            "sweep_local_submit_to_first_progress_ms",
            self.submit_ms,
            "ms",
        );
        figures.put(
            "trial_promotion_vs_submit_ratio",
            self.promotion_ms / self.submit_ms,
            "ratio",
        );
    }

    /// Prints how the figures came about.
    fn notes(&self, measured: &Measured) {
        let trials = |s: &SweepRun| {
            s.events
                .iter()
                .filter(|e| e.run_id == s.id && e.kind == "TrialCreated")
                .count()
        };
        let (random_trials, asha_trials) = (trials(&measured.random), trials(&measured.asha));
        match self.random_best {
            Some((best, trial)) => println!(
                "  random search: {random_trials} trials, {} epochs in {:.1} s; best {best:.4} \
                 (trial {trial}), so the target is {:.4}",
                self.random_epochs,
                measured.random.took.as_secs_f64(),
                self.target
            ),
            None => println!("  random search: NOTE: no trial reported a result"),
        }
        let expected = random_trials as u64 * u64::from(measured.random_epochs);
        if self.random_epochs != expected {
            println!(
                "  random search: NOTE: {} epochs trained, not {random_trials} × {} = {expected}",
                self.random_epochs, measured.random_epochs
            );
        }
        let asha = &self.asha;
        match asha.at_rung {
            Some(epochs) => println!(
                "  ASHA: {asha_trials} trials, {} epochs in {:.1} s; a rung result at or over \
                 the target after {epochs} epochs (the first evaluation over it after {})",
                asha.total,
                measured.asha.took.as_secs_f64(),
                asha.at_evaluation
                    .map_or_else(|| "none".to_string(), |e| e.to_string()),
            ),
            None => println!(
                "  ASHA: NOTE: {asha_trials} trials, {} epochs in {:.1} s, and no rung result \
                 reached the target {:.4} (the first evaluation over it: {}); the figure is all \
                 of ASHA's epochs over random search's",
                asha.total,
                measured.asha.took.as_secs_f64(),
                self.target,
                asha.at_evaluation
                    .map_or_else(|| "none".to_string(), |e| format!("after {e} epochs")),
            ),
        }
        let mut sorted = self.promotions.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "  ASHA promotions: {} in all, {} decided at once, from {:.0} to {:.0} ms",
            self.all_promotions,
            sorted.len(),
            sorted.first().copied().unwrap_or(f64::NAN),
            sorted.last().copied().unwrap_or(f64::NAN),
        );
        if sorted.is_empty() {
            println!("  ASHA promotions: NOTE: none decided at once; no promotion time");
        }
        let rounded = |v: &[f64]| {
            let each: Vec<String> = v.iter().map(|ms| format!("{ms:.1}")).collect();
            format!("[{}]", each.join(", "))
        };
        println!(
            "  submit to first progress: {} ms (RunSubmitted to RunStarted in the journal: \
             {} ms)",
            rounded(&measured.submit_ms),
            rounded(&measured.submit_journal_ms),
        );
    }
}
