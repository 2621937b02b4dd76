//! A sweep's spec and its checks: what `POST /api/v1/sweeps` takes.
//!
//! ```json
//! {"name": "digits-asha",
//!  "base": {"name": "digits", "model": {"kind": "mlp", "hidden": [64]}, …},
//!  "space": {"optimizer.lr": {"loguniform": [1e-4, 1e-1]}},
//!  "searcher": {"kind": "asha", "metric": "val_accuracy", "mode": "max",
//!               "min_epochs": 1, "max_epochs": 9, "reduction_factor": 3,
//!               "max_trials": 27, "max_concurrent": 2},
//!  "seed": 7}
//! ```
//!
//! A sweep is refused, naming the path of what is wrong, when its base is not a valid
//! run spec, its space is bad, a value of the space would make a trial's spec invalid
//! (each listed value and both ends of each range are tried, one field at a time on
//! the base), or
//! its searcher's settings are out of range.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::searcher::{Mode, Schedule};
use super::space::{apply, Point, Space};
use crate::domain::spec::parse::whole_numbers;
use crate::domain::spec::{RunKind, RunSpec, Task};

/// Most trials a sweep may make.
pub const MAX_TRIALS: u32 = 10_000;

/// A sweep as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// A name for people.
    pub name: String,
    /// The run spec every trial starts from (a built-in training run or a command).
    #[schema(value_type = Object)]
    pub base: Value,
    /// A distribution per field path of the base, e.g.
    /// `{"optimizer.lr": {"loguniform": [1e-4, 1e-1]}}`.
    #[schema(value_type = Object)]
    pub space: Value,
    /// How trials are chosen and stopped.
    pub searcher: SearcherSpec,
    /// Seeds every trial's point.
    #[serde(default)]
    pub seed: u64,
    /// The trials' priority in the queue.
    #[serde(default)]
    pub priority: i32,
    /// Labels every trial carries, besides its sweep and trial number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The searcher of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SearcherSpec {
    /// Every combination of the `grid` fields (the others drawn), each trained to the
    /// end.
    Grid {
        /// The metric that names the best trial (default `val_accuracy`).
        #[serde(default)]
        metric: Option<String>,
        /// Which way it is better (default: `min` for losses and errors, else `max`).
        #[serde(default)]
        mode: Option<Mode>,
        /// Trials at most (default: the grid's size).
        #[serde(default)]
        max_trials: Option<u32>,
        /// Trials training at once, at most (default 1).
        #[serde(default)]
        max_concurrent: Option<u32>,
    },
    /// `max_trials` points drawn from the space, each trained to the end.
    Random {
        /// See [`SearcherSpec::Grid`].
        #[serde(default)]
        metric: Option<String>,
        /// See [`SearcherSpec::Grid`].
        #[serde(default)]
        mode: Option<Mode>,
        /// Trials to draw.
        max_trials: u32,
        /// See [`SearcherSpec::Grid`].
        #[serde(default)]
        max_concurrent: Option<u32>,
    },
    /// Asynchronous successive halving: trials trained rung by rung, the best
    /// `1/reduction_factor` of each rung going on.
    Asha {
        /// The metric that ranks a rung's trials.
        metric: String,
        /// Which way it is better (default: `min` for losses and errors, else `max`).
        #[serde(default)]
        mode: Option<Mode>,
        /// The first rung's epochs.
        min_epochs: u32,
        /// The epochs a trial trains at most (the top rung).
        max_epochs: u32,
        /// η: rungs grow by it and the best 1/η go on (default 3).
        #[serde(default = "default_reduction")]
        reduction_factor: u32,
        /// Trials at most.
        max_trials: u32,
        /// See [`SearcherSpec::Grid`].
        #[serde(default)]
        max_concurrent: Option<u32>,
    },
}

fn default_reduction() -> u32 {
    3
}

/// What is wrong with a sweep spec, and where (`searcher.min_epochs`,
/// `space.optimizer.lr.loguniform`, `base.epochs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SweepSpecError {
    /// The path of the bad part.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SweepSpecError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A sweep spec that passed its checks: its space, its schedule, the metric, and the
/// base written out with its defaults (what points apply to).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedSweep {
    /// The search space.
    pub space: Space,
    /// The rungs and limits.
    pub schedule: Schedule,
    /// The metric that ranks trials.
    pub metric: String,
    /// The base spec as JSON with its defaults (and, for ASHA, `max_epochs` epochs).
    pub base: Value,
}

impl CheckedSweep {
    /// Trial `trial`'s run spec: the base with the trial's point, its name and labels
    /// saying whose trial it is, and the sweep's priority.
    pub fn trial_spec(
        &self,
        sweep: &SweepSpec,
        sweep_id: &str,
        trial: u32,
    ) -> Result<RunSpec, SweepSpecError> {
        let point = self.space.point(sweep.seed, trial);
        let mut spec =
            apply(&self.base, &point).map_err(|e| SweepSpecError::new(e.path, e.reason))?;
        spec["name"] = Value::from(format!("{}-t{trial}", sweep.name));
        spec["priority"] = Value::from(sweep.priority);
        let mut labels = sweep.labels.clone();
        labels.insert("sweep".into(), sweep_id.into());
        labels.insert("trial".into(), trial.to_string());
        spec["labels"] = serde_json::to_value(labels).unwrap_or_default();
        serde_json::from_value(spec).map_err(|e| SweepSpecError::new("base", e.to_string()))
    }
}

/// The metrics a built-in training run reports.
const TRAIN_METRICS: [&str; 4] = ["val_accuracy", "val_loss", "val_mae", "train_loss"];

impl SweepSpec {
    /// The spec as compact JSON, fields in declaration order: what the journal keeps.
    pub fn canonical_json(&self) -> String {
        // Plain data always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Hex SHA-256 of [`SweepSpec::canonical_json`].
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }

    /// Checks every rule; answers what a sweep needs to run.
    pub fn check(&self) -> Result<CheckedSweep, SweepSpecError> {
        if self.name.trim().is_empty() {
            return Err(SweepSpecError::new("name", "must not be empty"));
        }
        let base: RunSpec = serde_path_to_error::deserialize(whole_numbers(self.base.clone()))
            .map_err(|e| {
                let path = e.path().to_string();
                let at = if path == "." {
                    "base".to_string()
                } else {
                    format!("base.{path}")
                };
                SweepSpecError::new(at, e.into_inner().to_string())
            })?;
        base.validate()
            .map_err(|e| SweepSpecError::new(format!("base.{}", e.field), e.reason))?;
        let space = Space::parse(&self.space).map_err(|e| SweepSpecError::new(e.path, e.reason))?;
        let (metric, mode, rungs, max_trials, max_concurrent) = match &self.searcher {
            SearcherSpec::Grid {
                metric,
                mode,
                max_trials,
                max_concurrent,
            } => (
                metric.clone(),
                *mode,
                vec![base.epochs.max(1)],
                max_trials.unwrap_or(space.grid_size().min(u64::from(MAX_TRIALS)) as u32),
                *max_concurrent,
            ),
            SearcherSpec::Random {
                metric,
                mode,
                max_trials,
                max_concurrent,
            } => (
                metric.clone(),
                *mode,
                vec![base.epochs.max(1)],
                *max_trials,
                *max_concurrent,
            ),
            SearcherSpec::Asha {
                metric,
                mode,
                min_epochs,
                max_epochs,
                reduction_factor,
                max_trials,
                max_concurrent,
            } => {
                let range = |field: &str, value: u32, lo: u32, hi: u32| {
                    if (lo..=hi).contains(&value) {
                        Ok(())
                    } else {
                        Err(SweepSpecError::new(
                            format!("searcher.{field}"),
                            format!("must be from {lo} to {hi}, got {value}"),
                        ))
                    }
                };
                range("max_epochs", *max_epochs, 1, 100_000)?;
                range("min_epochs", *min_epochs, 1, *max_epochs)?;
                range("reduction_factor", *reduction_factor, 2, 100)?;
                if space.dims().any(|(path, _)| path == "epochs") {
                    return Err(SweepSpecError::new(
                        "space.epochs",
                        "ASHA sets each trial's epochs itself (rung by rung, up to max_epochs)",
                    ));
                }
                (
                    Some(metric.clone()),
                    *mode,
                    Schedule::asha(*min_epochs, *max_epochs, *reduction_factor),
                    *max_trials,
                    *max_concurrent,
                )
            }
        };
        if !(1..=MAX_TRIALS).contains(&max_trials) {
            return Err(SweepSpecError::new(
                "searcher.max_trials",
                format!("must be from 1 to {MAX_TRIALS}, got {max_trials}"),
            ));
        }
        let max_concurrent = max_concurrent.unwrap_or(1);
        if !(1..=1024).contains(&max_concurrent) {
            return Err(SweepSpecError::new(
                "searcher.max_concurrent",
                format!("must be from 1 to 1024, got {max_concurrent}"),
            ));
        }
        let default_metric = match base.task {
            Task::Regression => "val_mae",
            Task::Classification => "val_accuracy",
        };
        let metric = metric.unwrap_or_else(|| default_metric.to_string());
        if base.kind == RunKind::Train && !TRAIN_METRICS.contains(&metric.as_str()) {
            return Err(SweepSpecError::new(
                "searcher.metric",
                format!(
                    "a built-in training run reports {}; `{metric}` is for command runs that report it",
                    TRAIN_METRICS.join(", ")
                ),
            ));
        }
        if metric.is_empty() || metric.len() > 64 {
            return Err(SweepSpecError::new(
                "searcher.metric",
                "must be 1 to 64 bytes",
            ));
        }
        let minimized =
            metric.contains("loss") || metric.contains("mae") || metric.contains("error");
        let mode = mode.unwrap_or(if minimized { Mode::Min } else { Mode::Max });
        // The base as points apply to it: its fields with their defaults, and for
        // ASHA over a built-in training run the epochs of the top rung.
        let mut full =
            serde_json::to_value(&base).map_err(|e| SweepSpecError::new("base", e.to_string()))?;
        // A command counts its own epochs (its base says how many, in its argv or env).
        if let (SearcherSpec::Asha { max_epochs, .. }, RunKind::Train) = (&self.searcher, base.kind)
        {
            full["epochs"] = Value::from(*max_epochs);
        }
        for (path, value) in space.corners() {
            let point: Point = [(path.to_string(), value.clone())].into_iter().collect();
            let spec = apply(&full, &point).map_err(|e| SweepSpecError::new(e.path, e.reason))?;
            let problem = match serde_json::from_value::<RunSpec>(spec) {
                Ok(trial) => trial.validate().err().map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(problem) = problem {
                return Err(SweepSpecError::new(
                    format!("space.{path}"),
                    format!("the value {value} makes a trial's spec invalid: {problem}"),
                ));
            }
        }
        Ok(CheckedSweep {
            space,
            schedule: Schedule {
                rungs,
                eta: match &self.searcher {
                    SearcherSpec::Asha {
                        reduction_factor, ..
                    } => *reduction_factor,
                    _ => 3,
                },
                max_trials,
                max_concurrent,
                mode,
            },
            metric,
            base: full,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn digits_base() -> Value {
        json!({
            "name": "digits",
            "model": {"kind": "mlp", "hidden": [64]},
            "data": {"kind": "synthetic", "samples": 512, "features": 8, "classes": 3, "seed": 1},
            "optimizer": {"kind": "adam", "lr": 0.01},
            "epochs": 3,
            "batch_size": 32,
            "validation": {"fraction": 0.2}
        })
    }

    fn sweep(space: Value, searcher: Value) -> SweepSpec {
        serde_json::from_value(json!({
            "name": "s", "base": digits_base(), "space": space, "searcher": searcher, "seed": 7
        }))
        .expect("a sweep spec")
    }

    fn asha() -> Value {
        json!({"kind": "asha", "metric": "val_accuracy", "min_epochs": 1, "max_epochs": 9,
               "max_trials": 27, "max_concurrent": 2})
    }

    #[test]
    fn an_asha_sweep_gets_its_rungs_and_trials_their_points() {
        let spec = sweep(
            json!({"optimizer.lr": {"loguniform": [1e-4, 1e-1]},
                   "model.hidden": {"choice": [[32], [64], [128, 128]]},
                   "batch_size": {"choice": [16, 32, 64]}}),
            asha(),
        );
        let checked = spec.check().expect("valid");
        assert_eq!(checked.schedule.rungs, vec![1, 3, 9]);
        assert_eq!(checked.schedule.mode, Mode::Max);
        assert_eq!(checked.schedule.max_concurrent, 2);
        let trial = checked.trial_spec(&spec, "sw-1", 4).expect("a trial");
        assert_eq!(trial.epochs, 9, "trained rung by rung up to max_epochs");
        assert_eq!(trial.name, "s-t4");
        assert_eq!(trial.labels["sweep"], "sw-1");
        assert_eq!(trial.labels["trial"], "4");
        trial.validate().expect("a valid run spec");
        let again = checked.trial_spec(&spec, "sw-1", 4).expect("a trial");
        assert_eq!(trial, again, "the same trial, the same spec");
    }

    #[test]
    fn bad_sweeps_are_refused_naming_the_path() {
        for (space, searcher, path, says) in [
            (
                json!({"optimizer.lr": {"loguniform": [0, 1]}}),
                asha(),
                "space.optimizer.lr.loguniform",
                "lo must be > 0",
            ),
            (
                json!({"model.width": {"choice": [1, 2]}}),
                asha(),
                "space.model.width",
                "the base has no field model.width",
            ),
            (
                json!({"batch_size": {"choice": [32, 0]}}),
                asha(),
                "space.batch_size",
                "the value 0 makes a trial's spec invalid: batch_size",
            ),
            (
                json!({"epochs": {"choice": [1, 2]}}),
                asha(),
                "space.epochs",
                "ASHA sets",
            ),
            (
                json!({"optimizer.lr": {"uniform": [0.001, 0.1]}}),
                json!({"kind": "asha", "metric": "val_accuracy", "min_epochs": 10, "max_epochs": 9, "max_trials": 3}),
                "searcher.min_epochs",
                "from 1 to 9",
            ),
            (
                json!({"optimizer.lr": {"uniform": [0.001, 0.1]}}),
                json!({"kind": "asha", "metric": "grad_norm", "min_epochs": 1, "max_epochs": 9, "max_trials": 3}),
                "searcher.metric",
                "command runs",
            ),
            (
                json!({"optimizer.lr": {"uniform": [0.001, 0.1]}}),
                json!({"kind": "random", "max_trials": 0}),
                "searcher.max_trials",
                "from 1",
            ),
        ] {
            let err = sweep(space.clone(), searcher).check().expect_err("refused");
            assert_eq!(err.path, path, "{space}: {err}");
            assert!(err.reason.contains(says), "{space}: {err}");
        }
        let mut bad_base = sweep(json!({"optimizer.lr": {"uniform": [0.001, 0.1]}}), asha());
        bad_base.base["epochs"] = json!(0);
        let err = bad_base.check().expect_err("refused");
        assert_eq!(err.path, "base.epochs", "{err}");
    }

    #[test]
    fn a_grid_sweep_makes_every_combination_and_losses_are_minimized() {
        let spec = sweep(
            json!({"batch_size": {"grid": [16, 32]}, "model.hidden": {"grid": [[8], [16], [32]]}}),
            json!({"kind": "grid", "metric": "val_loss", "max_concurrent": 3}),
        );
        let checked = spec.check().expect("valid");
        assert_eq!(checked.schedule.max_trials, 6);
        assert_eq!(
            checked.schedule.rungs,
            vec![3],
            "one rung: the base's epochs"
        );
        assert_eq!(checked.schedule.mode, Mode::Min);
        let sizes: std::collections::BTreeSet<(u32, String)> = (0..6)
            .map(|n| {
                let t = checked.trial_spec(&spec, "g", n).expect("trial");
                (t.batch_size, format!("{:?}", t.model))
            })
            .collect();
        assert_eq!(sizes.len(), 6, "six different trials");
    }
}
