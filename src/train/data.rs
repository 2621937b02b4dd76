//! Data sets: loading what a spec names (synthetic, CSV, `.npy`, safetensors) into
//! tensors, resolving paths against the configured data roots, and the validation
//! split. Loading also checks the data, so the same code answers a submission's `422`
//! and feeds the training thread.

use std::path::{Component, Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

pub mod error;

pub use error::{DataError, MAX_FEATURE_VALUES};

use super::files;
use crate::domain::spec::{DataShape, DataSpec, RunSpec, Task};

/// The directories data files may be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRoots {
    roots: Vec<PathBuf>,
}

impl DataRoots {
    /// Roots made absolute (relative ones against the current directory).
    pub fn new(roots: impl IntoIterator<Item = PathBuf>) -> Self {
        let cwd = std::env::current_dir().unwrap_or_default();
        Self {
            roots: roots
                .into_iter()
                .map(|r| if r.is_absolute() { r } else { cwd.join(r) })
                .map(|r| normalize(&r))
                .collect(),
        }
    }

    /// The roots, in the order they are searched.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Resolves a path from a spec: a relative path is looked up in each root in turn;
    /// an absolute one must lie inside a root. `..` may not climb out of a root, and a
    /// symbolic link may not point out of one.
    pub fn resolve(&self, field: &str, path: &str) -> Result<PathBuf, DataError> {
        let given = Path::new(path);
        let candidates: Vec<PathBuf> = if given.is_absolute() {
            vec![normalize(given)]
        } else {
            self.roots
                .iter()
                .map(|root| normalize(&root.join(given)))
                .collect()
        };
        let inside = |p: &Path| self.roots.iter().any(|root| p.starts_with(root));
        for candidate in candidates.iter().filter(|c| inside(c)) {
            if let Ok(real) = candidate.canonicalize() {
                let real_inside = self.roots.iter().any(|root| {
                    root.canonicalize()
                        .map(|r| real.starts_with(r))
                        .unwrap_or(false)
                });
                if !real_inside {
                    return Err(DataError::new(
                        field,
                        format!("`{path}` leads outside the data roots"),
                    ));
                }
                // Anything readable but a directory: files, and pipes a pipeline feeds.
                if !real.is_dir() {
                    return Ok(real);
                }
            }
        }
        if !candidates.iter().any(|c| inside(c)) {
            return Err(DataError::new(
                field,
                format!("`{path}` is outside the data roots ({})", self.describe()),
            ));
        }
        Err(DataError::new(
            field,
            format!("no file `{path}` in the data roots ({})", self.describe()),
        ))
    }

    fn describe(&self) -> String {
        self.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Removes `.` and resolves `..` lexically, so a path cannot climb out of a root by
/// text alone.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Features and targets, on the CPU until moved.
#[derive(Debug)]
pub struct Dataset {
    /// `[samples, features]`, `f32`.
    pub features: Tensor,
    /// `[samples]` `i64` class indexes, or `[samples, outputs]` `f32` values.
    pub targets: Tensor,
    /// Classes, or values per example.
    pub outputs: i64,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> i64 {
        self.features.size().first().copied().unwrap_or(0)
    }

    /// Whether the data set has no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Features per example.
    pub fn feature_count(&self) -> i64 {
        self.features.size().get(1).copied().unwrap_or(0)
    }

    /// The shape the spec rules are checked against.
    pub fn shape(&self) -> DataShape {
        DataShape {
            samples: self.len().max(0) as u64,
            features: self.feature_count().max(0) as u64,
            outputs: self.outputs.max(0) as u64,
        }
    }

    /// The same data on `device`.
    pub fn to_device(&self, device: Device) -> Result<Self, tch::TchError> {
        Ok(Self {
            features: self.features.f_to_device(device)?,
            targets: self.targets.f_to_device(device)?,
            outputs: self.outputs,
        })
    }

    fn select(&self, index: &[i64]) -> Result<Self, tch::TchError> {
        let index = Tensor::f_from_slice(index)?;
        Ok(Self {
            features: self.features.f_index_select(0, &index)?,
            targets: self.targets.f_index_select(0, &index)?,
            outputs: self.outputs,
        })
    }

    /// A seeded split: `(training, held out)` with `fraction` of the examples held out.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Self, Self), tch::TchError> {
        let n = self.len();
        let mut order: Vec<i64> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x005E_ED0F_5A11));
        let held = ((n as f64) * fraction).round() as usize;
        let (held_out, kept) = order.split_at(held.min(order.len()));
        let mut kept = kept.to_vec();
        let mut held_out = held_out.to_vec();
        kept.sort_unstable();
        held_out.sort_unstable();
        Ok((self.select(&kept)?, self.select(&held_out)?))
    }
}

fn torch(field: &str) -> impl Fn(tch::TchError) -> DataError + '_ {
    move |e| DataError::new(field, format!("torch: {e}"))
}

/// Loads one data spec, checked for the task. `field` names it in errors (`data` or
/// `validation.data`).
pub fn load(
    spec: &DataSpec,
    task: Task,
    roots: &DataRoots,
    field: &str,
) -> Result<Dataset, DataError> {
    let (features, targets) = match spec {
        DataSpec::Synthetic(s) => {
            return synthetic(s.samples, s.features, s.classes, s.seed).map_err(torch(field))
        }
        DataSpec::Csv(csv) => {
            let path = roots.resolve(&format!("{field}.path"), &csv.path)?;
            files::load_csv(csv, &path, field)?
        }
        DataSpec::Npy(npy) => {
            let features = roots.resolve(&format!("{field}.features"), &npy.features)?;
            let targets = roots.resolve(&format!("{field}.targets"), &npy.targets)?;
            files::load_npy(&features, &targets, field)?
        }
        DataSpec::Safetensors(st) => {
            let path = roots.resolve(&format!("{field}.path"), &st.path)?;
            files::load_safetensors(st, &path, field)?
        }
    };
    finish(features, targets, task, field)
}

/// Checks and converts raw tensors: features flattened to `[n, f]` `f32`; targets to
/// class indexes (classification) or `[n, k]` `f32` values (regression).
fn finish(
    features: Tensor,
    targets: Tensor,
    task: Task,
    field: &str,
) -> Result<Dataset, DataError> {
    let err = torch(field);
    let n = features.size().first().copied().unwrap_or(0);
    if n == 0 {
        return Err(DataError::new(field, "holds no example"));
    }
    let features = features
        .f_reshape([n, -1])
        .and_then(|f| f.f_to_kind(Kind::Float))
        .map_err(&err)?;
    if features.size()[1] * n > MAX_FEATURE_VALUES {
        return Err(DataError::new(
            field,
            format!(
                "{} feature values, more than the limit of {MAX_FEATURE_VALUES}",
                features.size()[1] * n
            ),
        ));
    }
    if targets.size().first().copied() != Some(n) {
        return Err(DataError::new(
            field,
            format!(
                "{n} examples but {} targets",
                targets.size().first().copied().unwrap_or(0)
            ),
        ));
    }
    let finite = features
        .f_isfinite()
        .and_then(|t| t.f_all())
        .map_err(&err)?;
    if !bool::try_from(&finite).unwrap_or(false) {
        return Err(DataError::new(
            field,
            "features hold NaN or infinite values",
        ));
    }
    match task {
        Task::Classification => {
            if targets.dim() != 1 {
                return Err(DataError::new(
                    field,
                    format!(
                        "class labels must be one per example, got shape {:?}",
                        targets.size()
                    ),
                ));
            }
            let as_float = targets.f_to_kind(Kind::Double).map_err(&err)?;
            let whole = as_float
                .f_eq_tensor(&as_float.f_round().map_err(&err)?)
                .and_then(|t| t.f_all())
                .map_err(&err)?;
            let min = as_float.f_min().map_err(&err)?.double_value(&[]);
            let max = as_float.f_max().map_err(&err)?.double_value(&[]);
            if !bool::try_from(&whole).unwrap_or(false) || !min.is_finite() || min < 0.0 {
                return Err(DataError::new(
                    field,
                    "class labels must be whole numbers from 0 up",
                ));
            }
            if max >= 65_536.0 {
                return Err(DataError::new(
                    field,
                    format!("class label {max} is above 65535"),
                ));
            }
            let targets = as_float.f_to_kind(Kind::Int64).map_err(&err)?;
            Ok(Dataset {
                features,
                targets,
                outputs: (max as i64 + 1).max(2),
            })
        }
        Task::Regression => {
            let targets = targets
                .f_reshape([n, -1])
                .and_then(|t| t.f_to_kind(Kind::Float))
                .map_err(&err)?;
            let finite = targets.f_isfinite().and_then(|t| t.f_all()).map_err(&err)?;
            if !bool::try_from(&finite).unwrap_or(false) {
                return Err(DataError::new(field, "targets hold NaN or infinite values"));
            }
            let outputs = targets.size()[1];
            Ok(Dataset {
                features,
                targets,
                outputs,
            })
        }
    }
}

/// The training data of a run and, when the spec asks for it, its validation data.
pub fn load_run(
    spec: &RunSpec,
    roots: &DataRoots,
) -> Result<(Dataset, Option<Dataset>), DataError> {
    let (_, data_spec) = spec
        .training_parts()
        .map_err(|e| DataError::new(e.field, e.reason))?;
    let data = load(data_spec, spec.task, roots, "data")?;
    let Some(validation) = &spec.validation else {
        return Ok((data, None));
    };
    if let Some(fraction) = validation.fraction {
        let (train, held_out) = data
            .split(fraction, spec.seed)
            .map_err(torch("validation"))?;
        if held_out.is_empty() {
            return Err(DataError::new(
                "validation.fraction",
                "holds out no example",
            ));
        }
        return Ok((train, Some(held_out)));
    }
    let Some(other) = &validation.data else {
        return Ok((data, None));
    };
    let mut held_out = load(other, spec.task, roots, "validation.data")?;
    if held_out.feature_count() != data.feature_count() {
        return Err(DataError::new(
            "validation.data",
            format!(
                "{} features per example, the training data has {}",
                held_out.feature_count(),
                data.feature_count()
            ),
        ));
    }
    let mut data = data;
    match spec.task {
        Task::Classification => {
            let classes = data.outputs.max(held_out.outputs);
            data.outputs = classes;
            held_out.outputs = classes;
        }
        Task::Regression if held_out.outputs != data.outputs => {
            return Err(DataError::new(
                "validation.data",
                format!(
                    "{} targets per example, the training data has {}",
                    held_out.outputs, data.outputs
                ),
            ));
        }
        Task::Regression => {}
    }
    Ok((data, Some(held_out)))
}

/// Gaussian features labelled by a random linear teacher with a little label noise:
/// learnable, but not trivially. The same seed gives bit-identical data on any
/// machine, because it is drawn with a portable generator, not torch's.
fn synthetic(
    samples: u32,
    features: u32,
    classes: u32,
    seed: u64,
) -> Result<Dataset, tch::TchError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, f, c) = (i64::from(samples), i64::from(features), i64::from(classes));
    let mut draw = |count: usize| -> Vec<f32> {
        (0..count)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect::<Vec<f32>>()
    };
    let xs = Tensor::f_from_slice(&draw((n * f) as usize))?.f_reshape([n, f])?;
    let teacher = Tensor::f_from_slice(&draw((f * c) as usize))?.f_reshape([f, c])?;
    let noise = Tensor::f_from_slice(&draw((n * c) as usize))?.f_reshape([n, c])?;
    let scores = xs.f_matmul(&teacher)?.f_add(&noise.f_mul_scalar(0.5)?)?;
    let labels = scores.f_argmax(-1, false)?.f_to_kind(Kind::Int64)?;
    Ok(Dataset {
        features: xs,
        targets: labels,
        outputs: c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::SyntheticSpec;

    fn roots(dir: &Path) -> DataRoots {
        DataRoots::new([dir.to_path_buf()])
    }

    #[test]
    fn synthetic_data_is_deterministic_and_shaped() {
        let spec = DataSpec::Synthetic(SyntheticSpec {
            samples: 100,
            features: 8,
            classes: 3,
            seed: 42,
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load(&spec, Task::Classification, &roots(dir.path()), "data").expect("a");
        let b = load(&spec, Task::Classification, &roots(dir.path()), "data").expect("b");
        assert_eq!(a.features.size(), [100, 8]);
        assert_eq!(a.targets.size(), [100]);
        assert!(a.features.equal(&b.features));
        assert!(a.targets.equal(&b.targets));
        let (train, held) = a.split(0.25, 1).expect("split");
        assert_eq!((train.len(), held.len()), (75, 25));
    }

    #[test]
    fn paths_outside_the_roots_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("in.csv"), "1,2\n").expect("write");
        std::fs::write(outside.path().join("out.csv"), "1,2\n").expect("write");
        let roots = roots(root.path());
        assert!(roots.resolve("data.path", "in.csv").is_ok());
        let err = roots
            .resolve("data.path", "../x/out.csv")
            .expect_err("climbs out");
        assert_eq!(err.field, "data.path");
        let outside_file = outside.path().join("out.csv");
        let err = roots
            .resolve("data.path", &outside_file.display().to_string())
            .expect_err("absolute outside");
        assert!(err.reason.contains("outside the data roots"), "{err}");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside_file, root.path().join("link.csv")).expect("link");
            let err = roots
                .resolve("data.path", "link.csv")
                .expect_err("link out");
            assert!(err.reason.contains("outside"), "{err}");
        }
        let err = roots
            .resolve("data.path", "missing.csv")
            .expect_err("missing");
        assert!(err.reason.contains("no file"), "{err}");
    }
}
