//! The run spec: what a run trains, and the rules a spec must follow before it is
//! accepted. The canonical form (every default filled in, fields in declaration
//! order) is what the SHA-256 digest is computed over, so the same training asked
//! for twice has the same digest.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest synthetic data set accepted, in `f32` values (samples x features, and the
/// samples x classes scores it is labelled from): 1 GiB each.
const MAX_DATA_VALUES: u64 = 1 << 28;

/// Largest model accepted, in parameters (512 MiB of `f32`, before optimizer state).
const MAX_PARAMETERS: u64 = 1 << 27;

/// What to train, as submitted by a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// A human name, shown in lists; not unique.
    pub name: String,
    /// The network to train.
    pub model: ModelSpec,
    /// Where the training examples come from.
    pub data: DataSpec,
    /// How parameters are updated.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Passes over the training data.
    pub epochs: u32,
    /// Examples per optimizer step.
    pub batch_size: u32,
    /// Seed for parameter initialisation and the data order.
    #[serde(default)]
    pub seed: u64,
    /// How the learning rate changes over the run.
    #[serde(default)]
    pub lr_schedule: ScheduleSpec,
    /// Largest global L2 norm of the gradients; larger ones are scaled down.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// When checkpoints are written (always also at the end of each epoch).
    #[serde(default)]
    pub checkpoint: CheckpointPolicy,
}

/// When a run writes checkpoints, besides the end of every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPolicy {
    /// Every this many optimizer steps.
    #[serde(default)]
    pub every_batches: Option<u64>,
    /// Every this many seconds of training.
    #[serde(default)]
    pub every_seconds: Option<f64>,
    /// How many of the newest checkpoints are kept on disk.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_keep() -> u32 {
    3
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_batches: None,
            every_seconds: None,
            keep: default_keep(),
        }
    }
}

/// A learning-rate schedule, applied per optimizer step after an optional linear
/// warm-up from 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleSpec {
    /// The optimizer's `lr` throughout.
    Constant(ConstantSchedule),
    /// `lr * gamma^(epoch / step_epochs)`.
    Step(StepSchedule),
    /// Cosine decay from `lr` to `min_lr` over the whole run.
    Cosine(CosineSchedule),
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec::Constant(ConstantSchedule::default())
    }
}

/// See [`ScheduleSpec::Constant`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstantSchedule {
    /// Steps of linear warm-up from 0.
    #[serde(default)]
    pub warmup_steps: u64,
}

/// See [`ScheduleSpec::Step`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSchedule {
    /// Epochs between decays.
    pub step_epochs: u32,
    /// Factor applied at each decay.
    pub gamma: f64,
    /// Steps of linear warm-up from 0.
    #[serde(default)]
    pub warmup_steps: u64,
}

/// See [`ScheduleSpec::Cosine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineSchedule {
    /// The learning rate the decay ends at (reached after the last step).
    #[serde(default)]
    pub min_lr: f64,
    /// Steps of linear warm-up from 0.
    #[serde(default)]
    pub warmup_steps: u64,
}

/// The model architecture.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// A multi-layer perceptron.
    Mlp(MlpSpec),
}

/// A multi-layer perceptron: linear layers with an activation between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    /// Widths of the hidden layers, input side first.
    pub hidden: Vec<u32>,
    /// The non-linearity between layers.
    #[serde(default)]
    pub activation: Activation,
}

/// A non-linearity between layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// max(0, x).
    #[default]
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// Gaussian error linear unit.
    Gelu,
}

/// The training data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// A seeded synthetic classification problem.
    Synthetic(SyntheticSpec),
}

/// A seeded, learnable classification problem: Gaussian features labelled by a random
/// linear teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSpec {
    /// Number of examples.
    pub samples: u32,
    /// Features per example.
    pub features: u32,
    /// Number of classes.
    pub classes: u32,
    /// Seed of the generator; the same seed gives the same data.
    #[serde(default)]
    pub seed: u64,
}

impl DataSpec {
    /// Number of examples in the data set.
    pub fn samples(&self) -> u32 {
        match self {
            DataSpec::Synthetic(s) => s.samples,
        }
    }
}

/// The optimizer and its hyper-parameters. runyard implements them itself (with
/// PyTorch's update rules) so their state can be saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerSpec {
    /// Stochastic gradient descent.
    Sgd(SgdSpec),
    /// Adam (weight decay added to the gradient).
    Adam(AdamSpec),
    /// AdamW (decoupled weight decay).
    Adamw(AdamSpec),
}

impl OptimizerSpec {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerSpec::Sgd(s) => s.lr,
            OptimizerSpec::Adam(a) | OptimizerSpec::Adamw(a) => a.lr,
        }
    }
}

/// Stochastic gradient descent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdSpec {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 disables it).
    #[serde(default)]
    pub momentum: f64,
    /// Nesterov momentum (needs `momentum` > 0).
    #[serde(default)]
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    #[serde(default)]
    pub weight_decay: f64,
}

/// Adam and AdamW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamSpec {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Added to the denominator for numerical stability.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Weight decay (L2 for Adam, decoupled for AdamW).
    #[serde(default)]
    pub weight_decay: f64,
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}

fn default_eps() -> f64 {
    1e-8
}

impl AdamSpec {
    /// Adam with PyTorch's defaults and the given learning rate.
    pub fn with_lr(lr: f64) -> Self {
        Self {
            lr,
            betas: default_betas(),
            eps: default_eps(),
            weight_decay: 0.0,
        }
    }
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec::Adam(AdamSpec::with_lr(1e-3))
    }
}

/// Deserialization of `{"kind": ..., ...}` objects that keeps the path of a bad field
/// inside the variant (serde's own tagged enums buffer the object and lose it).
mod tagged {
    use serde::de::{DeserializeOwned, Error};
    use serde::{Deserialize, Deserializer};
    use serde_json::{Map, Value};

    /// Splits an object into its `kind` and the rest.
    pub fn split<'de, D: Deserializer<'de>>(
        d: D,
        kinds: &'static [&'static str],
    ) -> Result<(&'static str, Value), D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let kind = match map.remove("kind") {
            Some(Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "kind: expected a string, got {other}"
                )))
            }
            None => return Err(D::Error::missing_field("kind")),
        };
        let known = kinds
            .iter()
            .find(|k| **k == kind)
            .ok_or_else(|| D::Error::unknown_variant(&kind, kinds))?;
        Ok((known, Value::Object(map)))
    }

    /// Deserializes a variant's fields, naming the path of a bad one.
    pub fn variant<T: DeserializeOwned, E: Error>(body: Value) -> Result<T, E> {
        serde_path_to_error::deserialize(body).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                E::custom(inner)
            } else {
                E::custom(format!("{path}: {inner}"))
            }
        })
    }
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (_, body) = tagged::split(d, &["mlp"])?;
        tagged::variant(body).map(ModelSpec::Mlp)
    }
}

impl<'de> Deserialize<'de> for DataSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (_, body) = tagged::split(d, &["synthetic"])?;
        tagged::variant(body).map(DataSpec::Synthetic)
    }
}

impl<'de> Deserialize<'de> for OptimizerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match tagged::split(d, &["sgd", "adam", "adamw"])? {
            ("sgd", body) => tagged::variant(body).map(OptimizerSpec::Sgd),
            ("adam", body) => tagged::variant(body).map(OptimizerSpec::Adam),
            (_, body) => tagged::variant(body).map(OptimizerSpec::Adamw),
        }
    }
}

impl<'de> Deserialize<'de> for ScheduleSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match tagged::split(d, &["constant", "step", "cosine"])? {
            ("constant", body) => tagged::variant(body).map(ScheduleSpec::Constant),
            ("step", body) => tagged::variant(body).map(ScheduleSpec::Step),
            (_, body) => tagged::variant(body).map(ScheduleSpec::Cosine),
        }
    }
}

/// A spec that breaks a rule: which field, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// Path of the offending field, e.g. `model.hidden[1]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SpecError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), SpecError> {
    if value < min || value > max {
        return Err(SpecError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

fn check_unit(field: &str, value: f64) -> Result<(), SpecError> {
    if !(value.is_finite() && (0.0..1.0).contains(&value)) {
        return Err(SpecError::new(
            field,
            format!("must be in [0, 1), got {value}"),
        ));
    }
    Ok(())
}

fn check_rate(field: &str, value: f64, min_exclusive: bool) -> Result<(), SpecError> {
    let ok = value.is_finite()
        && if min_exclusive {
            value > 0.0
        } else {
            value >= 0.0
        };
    if !ok || value > 10.0 {
        let bound = if min_exclusive { "> 0" } else { ">= 0" };
        return Err(SpecError::new(
            field,
            format!("must be a finite number {bound} and <= 10, got {value}"),
        ));
    }
    Ok(())
}

impl RunSpec {
    /// Checks every rule a spec must follow; the first broken one is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(SpecError::new("name", "must not be empty"));
        }
        if self.name.chars().count() > 128 {
            return Err(SpecError::new("name", "must be at most 128 characters"));
        }
        if self.name.chars().any(char::is_control) {
            return Err(SpecError::new(
                "name",
                "must not contain control characters",
            ));
        }
        match &self.model {
            ModelSpec::Mlp(MlpSpec { hidden, .. }) => {
                if hidden.len() > 16 {
                    return Err(SpecError::new(
                        "model.hidden",
                        format!("at most 16 hidden layers, got {}", hidden.len()),
                    ));
                }
                for (i, width) in hidden.iter().enumerate() {
                    check_range(&format!("model.hidden[{i}]"), u64::from(*width), 1, 65_536)?;
                }
            }
        }
        match &self.data {
            DataSpec::Synthetic(SyntheticSpec {
                samples,
                features,
                classes,
                ..
            }) => {
                check_range("data.samples", u64::from(*samples), 1, 10_000_000)?;
                check_range("data.features", u64::from(*features), 1, 65_536)?;
                check_range("data.classes", u64::from(*classes), 2, 65_536)?;
                for (what, values) in [
                    (
                        "samples x features",
                        u64::from(*samples) * u64::from(*features),
                    ),
                    (
                        "samples x classes",
                        u64::from(*samples) * u64::from(*classes),
                    ),
                ] {
                    if values > MAX_DATA_VALUES {
                        return Err(SpecError::new(
                            "data",
                            format!("{what} is {values}, more than the limit of {MAX_DATA_VALUES}"),
                        ));
                    }
                }
            }
        }
        match &self.optimizer {
            OptimizerSpec::Sgd(sgd) => {
                check_rate("optimizer.lr", sgd.lr, true)?;
                check_unit("optimizer.momentum", sgd.momentum)?;
                check_rate("optimizer.weight_decay", sgd.weight_decay, false)?;
                if sgd.nesterov && sgd.momentum == 0.0 {
                    return Err(SpecError::new(
                        "optimizer.nesterov",
                        "needs a momentum above 0",
                    ));
                }
            }
            OptimizerSpec::Adam(adam) | OptimizerSpec::Adamw(adam) => {
                check_rate("optimizer.lr", adam.lr, true)?;
                check_unit("optimizer.betas[0]", adam.betas[0])?;
                check_unit("optimizer.betas[1]", adam.betas[1])?;
                if !(adam.eps.is_finite() && adam.eps > 0.0 && adam.eps <= 1.0) {
                    return Err(SpecError::new(
                        "optimizer.eps",
                        format!("must be in (0, 1], got {}", adam.eps),
                    ));
                }
                check_rate("optimizer.weight_decay", adam.weight_decay, false)?;
            }
        }
        match &self.lr_schedule {
            ScheduleSpec::Constant(_) => {}
            ScheduleSpec::Step(step) => {
                check_range(
                    "lr_schedule.step_epochs",
                    u64::from(step.step_epochs),
                    1,
                    100_000,
                )?;
                if !(step.gamma.is_finite() && step.gamma > 0.0 && step.gamma <= 1.0) {
                    return Err(SpecError::new(
                        "lr_schedule.gamma",
                        format!("must be in (0, 1], got {}", step.gamma),
                    ));
                }
            }
            ScheduleSpec::Cosine(cosine) => {
                check_rate("lr_schedule.min_lr", cosine.min_lr, false)?;
                if cosine.min_lr > self.optimizer.lr() {
                    return Err(SpecError::new(
                        "lr_schedule.min_lr",
                        "must not be above optimizer.lr",
                    ));
                }
            }
        }
        if let Some(clip) = self.grad_clip {
            if !(clip.is_finite() && clip > 0.0) {
                return Err(SpecError::new(
                    "grad_clip",
                    format!("must be a finite number > 0, got {clip}"),
                ));
            }
        }
        let policy = &self.checkpoint;
        if let Some(every) = policy.every_batches {
            check_range("checkpoint.every_batches", every, 1, u64::MAX)?;
        }
        if let Some(every) = policy.every_seconds {
            if !(every.is_finite() && every >= 1.0) {
                return Err(SpecError::new(
                    "checkpoint.every_seconds",
                    format!("must be at least 1, got {every}"),
                ));
            }
        }
        check_range("checkpoint.keep", u64::from(policy.keep), 1, 1000)?;
        let parameters = self.parameter_count();
        if parameters > MAX_PARAMETERS {
            return Err(SpecError::new(
                "model",
                format!("{parameters} parameters, more than the limit of {MAX_PARAMETERS}"),
            ));
        }
        check_range("epochs", u64::from(self.epochs), 1, 100_000)?;
        check_range(
            "batch_size",
            u64::from(self.batch_size),
            1,
            u64::from(self.data.samples()),
        )?;
        Ok(())
    }

    /// The canonical JSON form: every default filled in, fields in a fixed order.
    pub fn canonical_json(&self) -> String {
        // Serializing plain structs and enums of numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Hex SHA-256 of the canonical JSON form; equal specs have equal digests.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }

    /// Trainable parameters of the model for this spec's data (weights and biases).
    pub fn parameter_count(&self) -> u64 {
        let (inputs, outputs) = match &self.data {
            DataSpec::Synthetic(s) => (u64::from(s.features), u64::from(s.classes)),
        };
        match &self.model {
            ModelSpec::Mlp(mlp) => {
                let mut widths = vec![inputs];
                widths.extend(mlp.hidden.iter().map(|h| u64::from(*h)));
                widths.push(outputs);
                widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
            }
        }
    }

    /// Optimizer steps in one epoch (the last batch may be short).
    pub fn batches_per_epoch(&self) -> u64 {
        let samples = u64::from(self.data.samples());
        samples.div_ceil(u64::from(self.batch_size.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn demo() -> RunSpec {
        serde_json::from_str(
            r#"{"name":"demo","model":{"kind":"mlp","hidden":[128]},
                "data":{"kind":"synthetic","samples":20000,"features":32,"classes":4,"seed":7},
                "optimizer":{"kind":"adam","lr":0.001},"epochs":3,"batch_size":64,"seed":1}"#,
        )
        .expect("demo spec parses")
    }

    #[test]
    fn demo_spec_is_valid() {
        demo().validate().expect("valid");
        assert_eq!(demo().batches_per_epoch(), 313);
    }

    #[test]
    fn digest_ignores_key_order_and_spelled_out_defaults() {
        let reordered: RunSpec = serde_json::from_str(
            r#"{"seed":1,"batch_size":64,"epochs":3,"optimizer":{"lr":0.001,"kind":"adam"},
                "data":{"seed":7,"classes":4,"features":32,"samples":20000,"kind":"synthetic"},
                "model":{"hidden":[128],"kind":"mlp","activation":"relu"},"name":"demo"}"#,
        )
        .expect("parses");
        assert_eq!(reordered.digest(), demo().digest());
        let mut other = demo();
        other.epochs = 4;
        assert_ne!(other.digest(), demo().digest());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<RunSpec>(
            r#"{"name":"x","model":{"kind":"mlp","hidden":[1],"depth":3},
                "data":{"kind":"synthetic","samples":10,"features":2,"classes":2},
                "epochs":1,"batch_size":1}"#,
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("depth"), "{err}");
    }

    #[test]
    fn type_errors_inside_a_variant_name_the_path() {
        let err = serde_path_to_error::deserialize::<_, RunSpec>(serde_json::json!({
            "name": "x", "model": {"kind": "mlp", "hidden": [4, "wide"]},
            "data": {"kind": "synthetic", "samples": 10, "features": 2, "classes": 2},
            "epochs": 1, "batch_size": 1
        }))
        .expect_err("bad width");
        assert_eq!(err.path().to_string(), "model");
        assert!(
            err.inner()
                .to_string()
                .starts_with("hidden[1]: invalid type"),
            "{err}"
        );
        let err = serde_json::from_value::<RunSpec>(serde_json::json!({
            "name": "x", "model": {"kind": "transformer"},
            "data": {"kind": "synthetic", "samples": 10, "features": 2, "classes": 2},
            "epochs": 1, "batch_size": 1
        }))
        .expect_err("unknown kind");
        assert!(
            err.to_string().contains("unknown variant `transformer`"),
            "{err}"
        );
    }

    #[test]
    fn broken_rules_name_the_field() {
        let mut spec = demo();
        spec.epochs = 0;
        assert_eq!(spec.validate().unwrap_err().field, "epochs");
        let mut spec = demo();
        spec.batch_size = 30_000;
        assert_eq!(spec.validate().unwrap_err().field, "batch_size");
        let mut spec = demo();
        spec.model = ModelSpec::Mlp(MlpSpec {
            hidden: vec![8, 0],
            activation: Activation::Relu,
        });
        assert_eq!(spec.validate().unwrap_err().field, "model.hidden[1]");
        let mut spec = demo();
        spec.optimizer = OptimizerSpec::Adam(AdamSpec::with_lr(f64::NAN));
        assert_eq!(spec.validate().unwrap_err().field, "optimizer.lr");
        let mut spec = demo();
        spec.name = "  ".into();
        assert_eq!(spec.validate().unwrap_err().field, "name");
        let mut spec = demo();
        spec.data = DataSpec::Synthetic(SyntheticSpec {
            samples: 10_000_000,
            features: 65_536,
            classes: 2,
            seed: 0,
        });
        assert_eq!(spec.validate().unwrap_err().field, "data");
        let mut spec = demo();
        spec.model = ModelSpec::Mlp(MlpSpec {
            hidden: vec![65_536, 65_536],
            activation: Activation::Relu,
        });
        assert_eq!(spec.validate().unwrap_err().field, "model");
        assert_eq!(demo().parameter_count(), 32 * 128 + 128 + 128 * 4 + 4);
    }
}
