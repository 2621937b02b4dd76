//! The searcher: which trial runs next, which is promoted and when a sweep is over,
//! as a pure function of the sweep's settings and where its trials stand.
//!
//! One rule serves every searcher. ASHA (asynchronous successive halving, Li et al.,
//! MLSys 2020) trains each trial to the end of a rung (`min_epochs × ηʳ`, capped at
//! `max_epochs`), then leaves it waiting there with its result. Whenever a slot is
//! free it looks at the rungs from the top down: a trial in the best `⌊n/η⌋` of the
//! `n` results of rung `r` that is still waiting there is promoted to rung `r + 1`;
//! with none to promote, a new trial starts (while `max_trials` allows). A free slot
//! never waits for a rung to fill. Grid and random search are the same with one rung,
//! `max_epochs` long: every trial trains to the end.
//!
//! When nothing trains, nothing can be promoted and no trial may start, the sweep is
//! over: the trials still waiting are stopped, and the best trial is the best result
//! of the highest rung reached. Ties go to the lower trial number, a NaN result is the
//! worst, so every decision is a function of what the journal holds.

use serde::{Deserialize, Serialize};

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Higher is better (accuracy).
    #[default]
    Max,
    /// Lower is better (loss, mean absolute error).
    Min,
}

impl Mode {
    /// Whether `a` is strictly better than `b`; NaN is never better than anything.
    pub fn better(self, a: f64, b: f64) -> bool {
        match (a.is_nan(), b.is_nan()) {
            (true, _) => false,
            (false, true) => true,
            (false, false) => match self {
                Mode::Max => a > b,
                Mode::Min => a < b,
            },
        }
    }
}

/// When trials train, stop and start: the rungs' lengths and the sweep's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The epochs a trial has trained at the end of each rung, increasing; the last is
    /// `max_epochs`.
    pub rungs: Vec<u32>,
    /// The reduction factor η: the best `1/η` of a rung go on.
    pub eta: u32,
    /// Trials the sweep creates at most.
    pub max_trials: u32,
    /// Trials training (or queued to train) at once, at most.
    pub max_concurrent: u32,
    /// Which way the metric is better.
    pub mode: Mode,
}

impl Schedule {
    /// ASHA's rungs: `min_epochs × ηʳ` while below `max_epochs`, then `max_epochs`.
    pub fn asha(min_epochs: u32, max_epochs: u32, eta: u32) -> Vec<u32> {
        let eta = eta.max(2);
        let mut rungs = Vec::new();
        let mut epochs = min_epochs.max(1);
        while epochs < max_epochs {
            rungs.push(epochs);
            epochs = epochs.saturating_mul(eta);
        }
        rungs.push(max_epochs.max(1));
        rungs
    }

    /// The top rung's index.
    pub fn top(&self) -> u32 {
        self.rungs.len().saturating_sub(1) as u32
    }

    /// The epochs at the end of `rung` (the top rung's for any beyond it).
    pub fn epochs(&self, rung: u32) -> u32 {
        let last = self.rungs.last().copied().unwrap_or(1);
        self.rungs.get(rung as usize).copied().unwrap_or(last)
    }
}

/// Where a trial stands, as the sweep's journal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TrialStatus {
    /// Created or promoted: queued or training towards the end of `rung`.
    Training {
        /// The rung it trains to.
        rung: u32,
    },
    /// Paused at the end of `rung` with its result, to be promoted or stopped.
    Waiting {
        /// The rung it finished.
        rung: u32,
    },
    /// Trained through the top rung.
    Finished,
    /// Stopped by the sweep: not among the best of its rung when the sweep ended.
    Stopped,
    /// Failed or cancelled: out of the sweep, its results kept.
    Failed,
}

/// A trial as the searcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Its number in the sweep, from 0 in creation order.
    pub number: u32,
    /// Where it stands.
    pub status: TrialStatus,
    /// Its metric at the end of each rung it finished, rung 0 first.
    pub results: Vec<f64>,
}

impl Trial {
    fn training(&self) -> bool {
        matches!(self.status, TrialStatus::Training { .. })
    }
}

/// What the searcher decides, to be journaled in this order.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start trial `trial` (the next number) at rung 0.
    Create {
        /// Its number.
        trial: u32,
    },
    /// Resume `trial` from the end of its rung to the end of `rung`.
    Promote {
        /// The trial.
        trial: u32,
        /// The rung it now trains to.
        rung: u32,
    },
    /// End a waiting `trial`: the sweep is over without it going on.
    Stop {
        /// The trial.
        trial: u32,
    },
    /// The sweep is over; `best` is its best trial, if any has a result.
    Complete {
        /// The best trial.
        best: Option<u32>,
    },
}

/// What to do now that `trials` stand as they do: promotions and new trials while
/// fewer than `max_concurrent` train, then, when the sweep is over, the stops and
/// its completion. Empty when nothing changes.
pub fn decide(schedule: &Schedule, trials: &[Trial]) -> Vec<Decision> {
    let mut trials = trials.to_vec();
    let mut decisions = Vec::new();
    while (trials.iter().filter(|t| t.training()).count() as u32) < schedule.max_concurrent {
        let Some(decision) = next_job(schedule, &trials) else {
            break;
        };
        match decision {
            Decision::Promote { trial, rung } => {
                if let Some(t) = trials.iter_mut().find(|t| t.number == trial) {
                    t.status = TrialStatus::Training { rung };
                }
            }
            Decision::Create { trial } => trials.push(Trial {
                number: trial,
                status: TrialStatus::Training { rung: 0 },
                results: Vec::new(),
            }),
            Decision::Stop { .. } | Decision::Complete { .. } => {}
        }
        decisions.push(decision);
    }
    let over = !trials.iter().any(Trial::training) && next_job(schedule, &trials).is_none();
    if over {
        for trial in &trials {
            if let TrialStatus::Waiting { .. } = trial.status {
                decisions.push(Decision::Stop {
                    trial: trial.number,
                });
            }
        }
        decisions.push(Decision::Complete {
            best: best(schedule.mode, &trials),
        });
    }
    decisions
}

/// ASHA's next job: the best promotable trial of the highest rung that has one, else
/// a new trial, else nothing.
fn next_job(schedule: &Schedule, trials: &[Trial]) -> Option<Decision> {
    let eta = schedule.eta.max(2) as usize;
    for rung in (0..schedule.top()).rev() {
        let ranked = ranked(schedule.mode, trials, rung);
        let promotable = ranked
            .iter()
            .take(ranked.len() / eta)
            .find(|t| t.status == TrialStatus::Waiting { rung });
        if let Some(trial) = promotable {
            return Some(Decision::Promote {
                trial: trial.number,
                rung: rung + 1,
            });
        }
    }
    let created = trials.iter().map(|t| t.number + 1).max().unwrap_or(0);
    (created < schedule.max_trials).then_some(Decision::Create { trial: created })
}

/// The trials with a result at `rung`, best first (ties to the lower number).
fn ranked(mode: Mode, trials: &[Trial], rung: u32) -> Vec<&Trial> {
    let mut ranked: Vec<&Trial> = trials
        .iter()
        .filter(|t| t.results.len() > rung as usize)
        .collect();
    let at = |t: &Trial| t.results[rung as usize];
    ranked.sort_by(|a, b| {
        if mode.better(at(a), at(b)) {
            std::cmp::Ordering::Less
        } else if mode.better(at(b), at(a)) {
            std::cmp::Ordering::Greater
        } else {
            a.number.cmp(&b.number)
        }
    });
    ranked
}

/// The best result of the highest rung any trial finished.
pub fn best(mode: Mode, trials: &[Trial]) -> Option<u32> {
    let highest = trials.iter().map(|t| t.results.len()).max()?;
    let rung = highest.checked_sub(1)? as u32;
    ranked(mode, trials, rung).first().map(|t| t.number)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ASHA over rungs of 1, 3 and 9 epochs (η = 3).
    fn asha(max_trials: u32, max_concurrent: u32) -> Schedule {
        Schedule {
            rungs: Schedule::asha(1, 9, 3),
            eta: 3,
            max_trials,
            max_concurrent,
            mode: Mode::Max,
        }
    }

    fn waiting(number: u32, results: &[f64]) -> Trial {
        Trial {
            number,
            status: TrialStatus::Waiting {
                rung: results.len() as u32 - 1,
            },
            results: results.to_vec(),
        }
    }

    fn training(number: u32, rung: u32, results: &[f64]) -> Trial {
        Trial {
            number,
            status: TrialStatus::Training { rung },
            results: results.to_vec(),
        }
    }

    #[test]
    fn rungs_grow_by_eta_and_end_at_max_epochs() {
        assert_eq!(Schedule::asha(1, 9, 3), vec![1, 3, 9]);
        assert_eq!(Schedule::asha(2, 10, 3), vec![2, 6, 10]);
        assert_eq!(Schedule::asha(1, 16, 2), vec![1, 2, 4, 8, 16]);
        assert_eq!(Schedule::asha(5, 5, 3), vec![5], "one rung: grid or random");
        assert_eq!(asha(9, 3).epochs(7), 9, "past the top: the top's length");
    }

    #[test]
    fn given_an_empty_sweep_when_it_starts_then_it_fills_its_concurrency_with_new_trials() {
        let decisions = decide(&asha(9, 3), &[]);
        assert_eq!(
            decisions,
            vec![
                Decision::Create { trial: 0 },
                Decision::Create { trial: 1 },
                Decision::Create { trial: 2 },
            ]
        );
    }

    #[test]
    fn given_fewer_results_than_eta_when_a_slot_frees_then_a_new_trial_starts_rather_than_waiting()
    {
        // Two results at rung 0: ⌊2/3⌋ = 0 can go on; the slot goes to trial 3.
        let trials = [waiting(0, &[0.9]), waiting(1, &[0.5]), training(2, 0, &[])];
        assert_eq!(
            decide(&asha(9, 3), &trials),
            vec![Decision::Create { trial: 3 }, Decision::Create { trial: 4 }]
        );
    }

    #[test]
    fn given_a_rung_filling_out_of_order_when_its_third_result_comes_then_the_best_is_promoted() {
        // Trial 2 reported before trial 0 and 1 finished their rung: the third
        // result (trial 1's) makes ⌊3/3⌋ = 1 promotable, the best of the three.
        let trials = [
            waiting(0, &[0.6]),
            waiting(1, &[0.8]),
            waiting(2, &[0.7]),
            training(3, 0, &[]),
        ];
        assert_eq!(
            decide(&asha(9, 2), &trials),
            vec![Decision::Promote { trial: 1, rung: 1 }]
        );
    }

    #[test]
    fn given_equal_results_when_one_may_go_on_then_the_lower_trial_number_does() {
        let trials = [waiting(4, &[0.7]), waiting(2, &[0.7]), waiting(3, &[0.7])];
        assert_eq!(
            decide(&asha(5, 1), &trials),
            vec![Decision::Promote { trial: 2, rung: 1 }]
        );
    }

    #[test]
    fn given_a_promotable_trial_in_a_higher_rung_then_it_goes_before_the_lower_rungs() {
        // Trials 0, 1 and 2 finished rung 1; rung 0 holds six results.
        let mut trials = vec![
            waiting(0, &[0.9, 0.80]),
            waiting(1, &[0.8, 0.85]),
            waiting(2, &[0.7, 0.60]),
        ];
        trials.extend([waiting(3, &[0.1]), waiting(4, &[0.2]), waiting(5, &[0.75])]);
        // Rung 0's top two (⌊6/3⌋) are trials 0 and 1, both promoted already; so the
        // one job is rung 1's best, trial 1, to rung 2.
        assert_eq!(
            decide(&asha(6, 1), &trials),
            vec![Decision::Promote { trial: 1, rung: 2 }]
        );
    }

    #[test]
    fn given_a_trial_that_failed_inside_its_rung_then_its_slot_goes_to_a_new_trial() {
        let trials = [
            Trial {
                number: 0,
                status: TrialStatus::Failed,
                results: Vec::new(),
            },
            training(1, 0, &[]),
        ];
        assert_eq!(
            decide(&asha(9, 2), &trials),
            vec![Decision::Create { trial: 2 }]
        );
    }

    #[test]
    fn given_a_failed_trial_among_the_best_then_the_next_best_waiting_one_is_not_promoted_in_its_place(
    ) {
        // ⌊3/3⌋ = 1: only the best of rung 0 may go on, and it failed later.
        let trials = [
            Trial {
                number: 0,
                status: TrialStatus::Failed,
                results: vec![0.9],
            },
            waiting(1, &[0.8]),
            waiting(2, &[0.7]),
        ];
        assert_eq!(
            decide(&asha(3, 1), &trials),
            vec![
                Decision::Stop { trial: 1 },
                Decision::Stop { trial: 2 },
                Decision::Complete { best: Some(0) },
            ]
        );
    }

    #[test]
    fn given_max_concurrent_trials_training_then_nothing_starts() {
        let trials = [training(0, 0, &[]), training(1, 1, &[0.5])];
        assert_eq!(decide(&asha(9, 2), &trials), vec![]);
    }

    #[test]
    fn given_every_trial_made_and_none_training_then_the_waiting_ones_stop_and_the_best_wins() {
        // Nine trials; rung 0 promoted 0, 1, 2; rung 1's best (trial 1) reached rung 2.
        let mut trials: Vec<Trial> = (3..9)
            .map(|n| waiting(n, &[0.1 * n as f64 / 10.0]))
            .collect();
        trials.push(waiting(0, &[0.90, 0.91]));
        trials.push(Trial {
            number: 1,
            status: TrialStatus::Finished,
            results: vec![0.95, 0.96, 0.97],
        });
        trials.push(waiting(2, &[0.93, 0.92]));
        let decisions = decide(&asha(9, 3), &trials);
        let stopped: Vec<u32> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Stop { trial } => Some(*trial),
                _ => None,
            })
            .collect();
        assert_eq!(stopped, vec![3, 4, 5, 6, 7, 8, 0, 2]);
        assert_eq!(
            decisions.last(),
            Some(&Decision::Complete { best: Some(1) })
        );
    }

    #[test]
    fn given_a_metric_to_minimize_then_the_lowest_goes_on() {
        let mut schedule = asha(4, 1);
        schedule.mode = Mode::Min;
        let trials = [
            waiting(0, &[0.3]),
            waiting(1, &[0.1]),
            waiting(2, &[f64::NAN]),
        ];
        assert_eq!(
            decide(&schedule, &trials),
            vec![Decision::Promote { trial: 1, rung: 1 }]
        );
        assert!(!Mode::Min.better(f64::NAN, 1.0) && Mode::Max.better(0.0, f64::NAN));
    }

    #[test]
    fn given_one_rung_as_grid_or_random_search_then_trials_only_start_and_finish() {
        let schedule = Schedule {
            rungs: vec![5],
            eta: 3,
            max_trials: 3,
            max_concurrent: 2,
            mode: Mode::Max,
        };
        let trials = [
            Trial {
                number: 0,
                status: TrialStatus::Finished,
                results: vec![0.8],
            },
            training(1, 0, &[]),
        ];
        assert_eq!(
            decide(&schedule, &trials),
            vec![Decision::Create { trial: 2 }]
        );
        let done = [
            Trial {
                number: 0,
                status: TrialStatus::Finished,
                results: vec![0.8],
            },
            Trial {
                number: 1,
                status: TrialStatus::Finished,
                results: vec![0.9],
            },
            Trial {
                number: 2,
                status: TrialStatus::Failed,
                results: Vec::new(),
            },
        ];
        assert_eq!(
            decide(&schedule, &done),
            vec![Decision::Complete { best: Some(1) }]
        );
    }

    #[test]
    fn the_same_standing_always_gives_the_same_decisions() {
        let trials = [waiting(0, &[0.5]), waiting(1, &[0.5]), waiting(2, &[0.4])];
        let first = decide(&asha(20, 3), &trials);
        for _ in 0..10 {
            assert_eq!(decide(&asha(20, 3), &trials), first);
        }
    }
}
