//! Sweeps: what one searcher decision costs.
//!
//! - `sweep_decision_us`: one [`runyard::domain::sweep::decide`] over a sweep of
//!   1,000 trials in the middle of an ASHA search (rungs of 1, 3, 9 and 27 epochs,
//!   η = 3: trials waiting at every rung with results, some promoted, some failed,
//!   a slot free), median of the timed rounds, in µs. Issue 17's target: at most 100.
//!
//! Without `--bench` (`cargo test --benches`) a few rounds run and nothing is written.

mod common;

use std::time::Instant;

use rand::{Rng as _, SeedableRng as _};
use runyard::domain::sweep::{decide, Mode, Schedule, Trial, TrialStatus};

const TRIALS: u32 = 1000;

fn main() {
    let mode = common::mode();
    if mode == common::Mode::List {
        return;
    }
    let bench = mode == common::Mode::Bench;
    let schedule = Schedule {
        rungs: Schedule::asha(1, 27, 3),
        eta: 3,
        max_trials: 2 * TRIALS,
        max_concurrent: 8,
        mode: Mode::Max,
    };
    let trials = mid_search(&schedule);
    let rounds = if bench { 2000 } else { 20 };
    let mut times = Vec::with_capacity(rounds);
    let mut decided = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let decisions = std::hint::black_box(decide(&schedule, std::hint::black_box(&trials)));
        times.push(started.elapsed().as_secs_f64() * 1e6);
        decided = decisions.len();
    }
    assert!(decided > 0, "the free slot is given something");
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    if bench {
        let mut figures = common::Figures::echoed(2);
        figures.put("sweep_decision_us", median, "us");
        figures.write("sweep");
    } else {
        println!("sweep bench: smoke run ok ({median:.1} µs a decision); no figures written (no --bench)");
    }
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
