//! A sweep's search space: a distribution per field path of the base spec, the
//! point of each trial (a function of the sweep's seed and the trial's number), and
//! the trial's spec (the base with its point applied).
//!
//! ```json
//! {"optimizer.lr": {"loguniform": [1e-4, 1e-1]},
//!  "model.hidden": {"choice": [[64], [128], [256, 256]]},
//!  "batch_size": {"grid": [32, 64, 128]}}
//! ```
//!
//! - `{"choice": [v, …]}`: one of the values, each as likely.
//! - `{"grid": [v, …]}`: every value in turn; several grid fields make their product,
//!   trial `n` taking combination `n` mod the product (the last field varies fastest).
//! - `{"uniform": [lo, hi]}`, `{"loguniform": [lo, hi]}` (`lo > 0`): a number in
//!   `[lo, hi)`, evenly or evenly in its logarithm.
//! - `{"int": [lo, hi]}`: a whole number from `lo` to `hi`, both included.

use std::collections::BTreeMap;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// A field path's distribution.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// One of the values, each as likely.
    Choice(Vec<Value>),
    /// Every value in turn, across trials.
    Grid(Vec<Value>),
    /// Evenly in `[lo, hi)`.
    Uniform(f64, f64),
    /// Evenly in the logarithm, in `[lo, hi)`.
    LogUniform(f64, f64),
    /// A whole number in `[lo, hi]`.
    Int(i64, i64),
}

/// What is wrong with a space, and where (`space.optimizer.lr.loguniform`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SpaceError {
    /// The path of the bad part, from `space`.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SpaceError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The values of one trial, by field path.
pub type Point = BTreeMap<String, Value>;

/// A search space: a distribution per field path, in path order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Space {
    dims: BTreeMap<String, Distribution>,
}

impl Space {
    /// Reads `space` (an object of field paths) as the spec gives it.
    pub fn parse(space: &Value) -> Result<Self, SpaceError> {
        let object = space
            .as_object()
            .ok_or_else(|| SpaceError::new("space", "must be an object of field paths"))?;
        if object.is_empty() {
            return Err(SpaceError::new("space", "must name at least one field"));
        }
        let mut dims = BTreeMap::new();
        for (path, distribution) in object {
            let at = format!("space.{path}");
            let valid_path = !path.is_empty()
                && path.split('.').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if !valid_path {
                return Err(SpaceError::new(
                    at,
                    "a field path is field names joined by `.`, e.g. `optimizer.lr`",
                ));
            }
            dims.insert(path.clone(), parse_distribution(&at, distribution)?);
        }
        Ok(Self { dims })
    }

    /// The field paths and their distributions, in path order.
    pub fn dims(&self) -> impl Iterator<Item = (&str, &Distribution)> {
        self.dims.iter().map(|(path, d)| (path.as_str(), d))
    }

    /// How many combinations the grid fields make (1 without any).
    pub fn grid_size(&self) -> u64 {
        self.dims
            .values()
            .map(|d| match d {
                Distribution::Grid(values) => values.len() as u64,
                _ => 1,
            })
            .fold(1u64, u64::saturating_mul)
    }

    /// Trial `trial`'s point: its grid combination, and a draw of every other field
    /// from a generator seeded by `seed` and `trial` alone, so no other trial, and no
    /// restart, changes it.
    pub fn point(&self, seed: u64, trial: u32) -> Point {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ u64::from(trial).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Mixed radix over the grid fields, the last varying fastest.
        let mut index = u64::from(trial) % self.grid_size().max(1);
        let mut grid = BTreeMap::new();
        for (path, d) in self.dims.iter().rev() {
            if let Distribution::Grid(values) = d {
                let n = values.len() as u64;
                grid.insert(path.clone(), values[(index % n) as usize].clone());
                index /= n;
            }
        }
        self.dims
            .iter()
            .map(|(path, d)| {
                let value = match d {
                    Distribution::Grid(_) => grid.remove(path).unwrap_or(Value::Null),
                    Distribution::Choice(values) => {
                        values[rng.random_range(0..values.len())].clone()
                    }
                    Distribution::Uniform(lo, hi) => number(rng.random_range(*lo..*hi)),
                    Distribution::LogUniform(lo, hi) => {
                        number(rng.random_range(lo.ln()..hi.ln()).exp())
                    }
                    Distribution::Int(lo, hi) => Value::from(rng.random_range(*lo..=*hi)),
                };
                (path.clone(), value)
            })
            .collect()
    }

    /// The values that stand for the whole space when checking it, each with its
    /// field path: every value of each choice and grid field, both ends of each range.
    pub fn corners(&self) -> Vec<(&str, Value)> {
        self.dims
            .iter()
            .flat_map(|(path, d)| extremes(d).into_iter().map(move |v| (path.as_str(), v)))
            .collect()
    }
}

/// The values that stand for a distribution: every listed value, or a range's ends
/// (the top of a half-open range just below it).
fn extremes(d: &Distribution) -> Vec<Value> {
    match d {
        Distribution::Choice(values) | Distribution::Grid(values) => values.clone(),
        Distribution::Uniform(lo, hi) | Distribution::LogUniform(lo, hi) => {
            vec![number(*lo), number(hi.next_down())]
        }
        Distribution::Int(lo, hi) => vec![Value::from(*lo), Value::from(*hi)],
    }
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn parse_distribution(at: &str, value: &Value) -> Result<Distribution, SpaceError> {
    const KINDS: &str = "`choice`, `grid`, `uniform`, `loguniform` or `int`";
    let object = value.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        SpaceError::new(
            at,
            format!("must be one of {KINDS}, e.g. {{\"choice\": [1, 2]}}"),
        )
    })?;
    let (kind, args) = object
        .iter()
        .next()
        .ok_or_else(|| SpaceError::new(at, "empty"))?;
    let at = format!("{at}.{kind}");
    let list = || {
        args.as_array()
            .filter(|a| !a.is_empty())
            .cloned()
            .ok_or_else(|| SpaceError::new(&at, "must be a list of at least one value"))
    };
    let pair = || -> Result<(f64, f64), SpaceError> {
        match args.as_array().map(Vec::as_slice) {
            Some([lo, hi]) => match (lo.as_f64(), hi.as_f64()) {
                (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() && lo < hi => Ok((lo, hi)),
                (Some(_), Some(_)) => Err(SpaceError::new(&at, "lo must be below hi, both finite")),
                _ => Err(SpaceError::new(&at, "must be two numbers, [lo, hi]")),
            },
            _ => Err(SpaceError::new(&at, "must be two numbers, [lo, hi]")),
        }
    };
    match kind.as_str() {
        "choice" => Ok(Distribution::Choice(list()?)),
        "grid" => Ok(Distribution::Grid(list()?)),
        "uniform" => pair().map(|(lo, hi)| Distribution::Uniform(lo, hi)),
        "loguniform" => {
            let (lo, hi) = pair()?;
            if lo <= 0.0 {
                return Err(SpaceError::new(&at, "lo must be > 0"));
            }
            Ok(Distribution::LogUniform(lo, hi))
        }
        "int" => match args.as_array().map(Vec::as_slice) {
            Some([lo, hi]) => match (lo.as_i64(), hi.as_i64()) {
                (Some(lo), Some(hi)) if lo <= hi => Ok(Distribution::Int(lo, hi)),
                (Some(_), Some(_)) => Err(SpaceError::new(&at, "lo must not be above hi")),
                _ => Err(SpaceError::new(&at, "must be two whole numbers, [lo, hi]")),
            },
            _ => Err(SpaceError::new(&at, "must be two whole numbers, [lo, hi]")),
        },
        _ => Err(SpaceError::new(
            at.clone(),
            format!("unknown distribution; expected {KINDS}"),
        )),
    }
}

/// The base spec (as JSON, its defaults written out) with `point` applied: each path
/// must name a field the base has.
pub fn apply(base: &Value, point: &Point) -> Result<Value, SpaceError> {
    let mut spec = base.clone();
    for (path, value) in point {
        let mut at = &mut spec;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let has = at.as_object().is_some_and(|o| o.contains_key(part));
            if !has {
                return Err(SpaceError::new(
                    format!("space.{path}"),
                    format!("the base has no field {path}"),
                ));
            }
            let next = &mut at[part];
            if parts.peek().is_none() {
                *next = value.clone();
                break;
            }
            at = next;
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn space(value: Value) -> Space {
        Space::parse(&value).expect("a valid space")
    }

    #[test]
    fn bad_distributions_are_named_by_their_path() {
        for (value, path, says) in [
            (
                json!({"optimizer.lr": {"loguniform": [0, 0.1]}}),
                "space.optimizer.lr.loguniform",
                "lo must be > 0",
            ),
            (
                json!({"optimizer.lr": {"uniform": [0.1, 0.1]}}),
                "space.optimizer.lr.uniform",
                "below hi",
            ),
            (
                json!({"epochs": {"int": [5, 2]}}),
                "space.epochs.int",
                "not be above",
            ),
            (
                json!({"epochs": {"int": [1.5, 2]}}),
                "space.epochs.int",
                "whole numbers",
            ),
            (
                json!({"model.hidden": {"choice": []}}),
                "space.model.hidden.choice",
                "at least one",
            ),
            (
                json!({"model.hidden": {"normal": [0, 1]}}),
                "space.model.hidden.normal",
                "unknown distribution",
            ),
            (
                json!({"model.hidden": {"choice": [1], "grid": [2]}}),
                "space.model.hidden",
                "one of",
            ),
            (
                json!({"model..hidden": {"choice": [1]}}),
                "space.model..hidden",
                "field names",
            ),
            (json!({}), "space", "at least one"),
            (json!([1]), "space", "an object"),
        ] {
            let err = Space::parse(&value).expect_err("refused");
            assert_eq!(err.path, path, "{value}");
            assert!(err.reason.contains(says), "{value}: {err}");
        }
    }

    #[test]
    fn a_trial_s_point_depends_on_the_seed_and_its_number_alone() {
        let s = space(json!({
            "optimizer.lr": {"loguniform": [1e-4, 1e-1]},
            "model.hidden": {"choice": [[64], [128]]},
            "epochs": {"int": [1, 3]},
            "validation.fraction": {"uniform": [0.1, 0.3]},
        }));
        let first: Vec<Point> = (0..50).map(|n| s.point(7, n)).collect();
        let again: Vec<Point> = (0..50).rev().map(|n| s.point(7, n)).collect();
        assert_eq!(first, again.into_iter().rev().collect::<Vec<_>>());
        assert_ne!(s.point(7, 0), s.point(8, 0), "another seed, another point");
        for point in &first {
            let lr = point["optimizer.lr"].as_f64().expect("lr");
            assert!((1e-4..1e-1).contains(&lr), "{lr}");
            let epochs = point["epochs"].as_i64().expect("epochs");
            assert!((1..=3).contains(&epochs));
            assert!([json!([64]), json!([128])].contains(&point["model.hidden"]));
        }
        let epochs: std::collections::BTreeSet<i64> =
            first.iter().filter_map(|p| p["epochs"].as_i64()).collect();
        assert_eq!(epochs.len(), 3, "both ends of an int range come up");
    }

    #[test]
    fn grid_fields_take_every_combination_in_turn() {
        let s = space(json!({
            "batch_size": {"grid": [32, 64]},
            "model.hidden": {"grid": [[16], [32], [64]]},
            "optimizer.lr": {"uniform": [0.001, 0.01]},
        }));
        assert_eq!(s.grid_size(), 6);
        let combos: Vec<(Value, Value)> = (0..6)
            .map(|n| {
                let p = s.point(1, n);
                (p["batch_size"].clone(), p["model.hidden"].clone())
            })
            .collect();
        assert_eq!(
            combos,
            vec![
                (json!(32), json!([16])),
                (json!(32), json!([32])),
                (json!(32), json!([64])),
                (json!(64), json!([16])),
                (json!(64), json!([32])),
                (json!(64), json!([64])),
            ]
        );
        assert_eq!(s.point(1, 6)["batch_size"], json!(32), "then round again");
    }

    #[test]
    fn a_point_applies_only_to_fields_the_base_has() {
        let base = json!({"name": "b", "optimizer": {"kind": "adam", "lr": 0.01}, "epochs": 5});
        let point: Point = [
            ("optimizer.lr".to_string(), json!(0.1)),
            ("epochs".to_string(), json!(9)),
        ]
        .into_iter()
        .collect();
        let spec = apply(&base, &point).expect("applied");
        assert_eq!(spec["optimizer"]["lr"], json!(0.1));
        assert_eq!(spec["epochs"], json!(9));
        assert_eq!(spec["optimizer"]["kind"], json!("adam"), "the rest kept");
        let point: Point = [("model.width".to_string(), json!(3))]
            .into_iter()
            .collect();
        let err = apply(&base, &point).expect_err("no such field");
        assert_eq!(
            err.to_string(),
            "space.model.width: the base has no field model.width"
        );
    }

    #[test]
    fn the_corners_hold_every_listed_value_and_both_ends_of_each_range() {
        let s = space(json!({
            "a": {"choice": [1, 2, 3]},
            "b": {"int": [4, 6]},
        }));
        assert_eq!(
            s.corners(),
            vec![
                ("a", json!(1)),
                ("a", json!(2)),
                ("a", json!(3)),
                ("b", json!(4)),
                ("b", json!(6)),
            ]
        );
    }
}
