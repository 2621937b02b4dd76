//! The run spec: what a run trains, and the rules a spec must follow before it is
//! accepted. The canonical form (every default filled in, fields in declaration
//! order) is what the SHA-256 digest is computed over, so the same training asked
//! for twice has the same digest. Reading one from the bytes it was sent as (JSON,
//! YAML or TOML) is [`parse`].

pub mod parse;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// Largest synthetic data set accepted, in `f32` values (samples x features, and the
/// samples x classes scores it is labelled from): 1 GiB each.
const MAX_DATA_VALUES: u64 = 1 << 28;

/// Largest model accepted, in parameters (512 MiB of `f32`, before optimizer state).
const MAX_PARAMETERS: u64 = 1 << 27;

/// What to train, as submitted by a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// A human name, shown in lists; not unique.
    pub name: String,
    /// What runs: `train` (the default: the built-in training loop over `model`,
    /// `data`, `epochs` and `batch_size`) or `command` (`argv`, a process of the
    /// user's that reports its progress over a pipe).
    #[serde(default, skip_serializing_if = "RunKind::is_train")]
    pub kind: RunKind,
    /// The program and its arguments (`command` runs), e.g. `["python3", "train.py"]`;
    /// the program is looked up in `PATH` when it has no `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// The command's working directory (default: the run's directory under the data
    /// directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment variables set for the command, over the server's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Longest an attempt of the command may run (`"2h"`, `"90m"`, `"30s"`); it is
    /// then stopped as on cancel, and fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub timeout: Option<SpecDuration>,
    /// Time between `SIGTERM` and `SIGKILL` when the command is stopped (cancel,
    /// pause, timeout); 10 s when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub grace: Option<SpecDuration>,
    /// Stop the command when it is reported stalled (see `stall_after_secs`); the
    /// attempt then fails (and is retried as `max_retries` allows).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kill_on_stall: bool,
    /// The network to train (`train` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// Where the training examples come from (`train` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSpec>,
    /// How parameters are updated.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Passes over the training data (`train` runs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epochs: u32,
    /// Examples per optimizer step (`train` runs).
    #[serde(default, skip_serializing_if = "is_zero")]
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
    /// What is learned: classes (cross-entropy, accuracy) or values (MSE, MAE).
    #[serde(default)]
    pub task: Task,
    /// Data held out of training and evaluated after every epoch.
    #[serde(default)]
    pub validation: Option<ValidationSpec>,
    /// Queue priority: higher runs first, first come first served within a priority.
    #[serde(default)]
    pub priority: i32,
    /// Times a failed attempt is retried (from the newest checkpoint) before the run
    /// fails for good.
    #[serde(default)]
    pub max_retries: u32,
    /// Wait before the first retry, in seconds; each further retry waits twice as long
    /// (at most an hour).
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff_secs: f64,
    /// Fail the attempt when the loss becomes NaN or infinite.
    #[serde(default = "default_true")]
    pub fail_on_nan: bool,
    /// Slots claimed together for the run; it waits until that many are free. A
    /// built-in training run takes one (it trains on one device); a command run may
    /// take several, and then starts one process (a `torch.distributed` rank) on each.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Seconds without a finished batch before the run is reported stalled; by default
    /// 10 times its median batch time, and at least 30 seconds.
    #[serde(default)]
    pub stall_after_secs: Option<f64>,
    /// Free-form `key: value` metadata for finding runs (`GET /runs?label=k=v`).
    /// Not part of the digest: the same training with other labels is the same run.
    /// Left out of the canonical JSON when empty, so digests of specs written before
    /// labels existed do not change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Where the run trains: `local` (the server's own slots, the default) or `slurm`
    /// (a job on the Slurm cluster, when the server has `executors.slurm` enabled).
    /// Left out of the canonical JSON when local, so earlier digests do not change.
    #[serde(default, skip_serializing_if = "Executor::is_local")]
    pub executor: Executor,
    /// Slurm partition (`sbatch --partition`); the server's `executors.slurm.partition`
    /// when absent. Slurm runs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Generic resources per node (`sbatch --gres`), e.g. `gpu:2`. Slurm runs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// The job's time limit in Slurm's format (`sbatch --time`), e.g. `90`, `2:00:00`
    /// or `1-12:00:00`. Slurm runs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<String>,
    /// Account charged for the job (`sbatch --account`). Slurm runs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Quality of service (`sbatch --qos`). Slurm runs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Nodes a Slurm command run's ranks span (`sbatch --nodes`), 1 to 1024. Slurm
    /// runs only; left out of the canonical JSON when 1.
    #[serde(default = "default_one", skip_serializing_if = "is_one")]
    pub nodes: u32,
    /// Ranks (processes) of a Slurm command run on each node
    /// (`sbatch --ntasks-per-node`), 1 to 64: `nodes × ranks_per_node` ranks in all.
    /// Slurm runs only (a local run's ranks are its `slots`); left out of the
    /// canonical JSON when 1.
    #[serde(default = "default_one", skip_serializing_if = "is_one")]
    pub ranks_per_node: u32,
}

/// Where a run trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Executor {
    /// The server's own slots, through its dispatcher.
    #[default]
    Local,
    /// A Slurm job running `runyard worker`; queued by Slurm, not by the dispatcher.
    Slurm,
}

impl Executor {
    /// Whether this is the server's own slots.
    pub fn is_local(&self) -> bool {
        *self == Executor::Local
    }

    /// The name used in specs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Slurm => "slurm",
        }
    }
}

/// Most labels a run may carry.
pub const MAX_LABELS: usize = 32;

/// Longest label key, in characters.
pub const MAX_LABEL_KEY_CHARS: usize = 63;

/// Longest label value, in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 255;

fn default_slots() -> u32 {
    1
}

fn default_one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// The built-in training loop (tch).
    #[default]
    Train,
    /// A command of the user's, run as a child process.
    Command,
}

impl RunKind {
    /// Whether this is the built-in training loop (left out of the canonical JSON, so
    /// digests of specs written before commands existed do not change).
    pub fn is_train(&self) -> bool {
        *self == RunKind::Train
    }
}

/// A duration in a spec, written `"500ms"`, `"30s"`, `"90m"`, `"2h"` or as a number of
/// seconds; shown in the largest whole unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecDuration {
    millis: u64,
}

impl SpecDuration {
    /// The duration.
    pub fn get(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }

    /// A duration of whole milliseconds.
    pub fn from_millis(millis: u64) -> Self {
        Self { millis }
    }
}

impl std::str::FromStr for SpecDuration {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let text = raw.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let scale = match unit.trim() {
            "ms" => 1.0,
            "" | "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => f64::NAN,
        };
        // Eight digits of whole units at most (31,000 years in seconds' worth of hours
        // would be nonsense anyway), as the OpenAPI document states.
        let whole = number.split('.').next().unwrap_or_default();
        let value: f64 = if whole.len() > 8 {
            f64::NAN
        } else {
            number.parse().unwrap_or(f64::NAN)
        };
        let millis = value * scale;
        if !(millis.is_finite() && (0.0..=1e15).contains(&millis)) {
            return Err(format!(
                "a duration such as \"500ms\", \"30s\", \"90m\" or \"2h\" (at most 8 digits of whole units), got {raw:?}"
            ));
        }
        Ok(Self {
            millis: millis.round() as u64,
        })
    }
}

impl std::fmt::Display for SpecDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.millis;
        match ms {
            0 => write!(f, "0s"),
            _ if ms.is_multiple_of(3_600_000) => write!(f, "{}h", ms / 3_600_000),
            _ if ms.is_multiple_of(60_000) => write!(f, "{}m", ms / 60_000),
            _ if ms.is_multiple_of(1000) => write!(f, "{}s", ms / 1000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

impl Serialize for SpecDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpecDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(secs) => format!("{secs}s").parse(),
            Raw::Text(text) => text.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

fn default_retry_backoff() -> f64 {
    10.0
}

fn default_true() -> bool {
    true
}

impl RunSpec {
    /// The wait before retry number `retry` (1-based): the backoff doubled each time,
    /// capped at an hour.
    pub fn retry_delay(&self, retry: u32) -> std::time::Duration {
        let secs = self.retry_backoff_secs * 2f64.powi(retry.saturating_sub(1).min(30) as i32);
        std::time::Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
    }
}

/// What a run learns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Integer class labels; cross-entropy loss, accuracy.
    #[default]
    Classification,
    /// Real-valued targets; mean squared error loss, mean absolute error.
    Regression,
}

/// Where validation data comes from: a share of the training data, or other data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Share of the examples held out (a seeded split), in (0, 0.9].
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Separate validation data, of the same shape as the training data.
    #[serde(default)]
    pub data: Option<DataSpec>,
}

/// When a run writes checkpoints, besides the end of every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConstantSchedule {
    /// Steps of linear warm-up from 0.
    #[serde(default)]
    pub warmup_steps: u64,
}

/// See [`ScheduleSpec::Step`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// A multi-layer perceptron.
    Mlp(MlpSpec),
    /// A small convolutional network for image-shaped data.
    Cnn(CnnSpec),
    /// A module saved from Python with `torch.jit.save`, trained in-process.
    Torchscript(TorchscriptSpec),
}

/// A TorchScript module: its parameters are registered with the optimizer and
/// trained, not frozen. It maps `[batch, features]` to `[batch, outputs]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TorchscriptSpec {
    /// Path of the `.pt` file, relative to a data root (or absolute, inside one).
    pub path: String,
}

/// Convolutions (same padding, each followed by the activation and an optional max
/// pool), then fully connected layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CnnSpec {
    /// Shape of one example, `[channels, height, width]`; its product must equal the
    /// features per example.
    #[schema(min_items = 3, max_items = 3)]
    pub input: [u32; 3],
    /// Output channels of each convolution.
    pub channels: Vec<u32>,
    /// Kernel size of each convolution (odd); one per entry of `channels`.
    pub kernel_sizes: Vec<u32>,
    /// Max-pool window after each convolution (1 disables pooling).
    #[serde(default = "default_pool")]
    pub pool: u32,
    /// Widths of the fully connected layers after the convolutions.
    #[serde(default)]
    pub hidden: Vec<u32>,
    /// The non-linearity.
    #[serde(default)]
    pub activation: Activation,
    /// Dropout probability before each fully connected layer.
    #[serde(default)]
    pub dropout: f64,
}

fn default_pool() -> u32 {
    2
}

impl CnnSpec {
    /// `(channels, height, width)` after the convolutions and pools.
    pub fn conv_output(&self) -> (u64, u64, u64) {
        let [mut c, mut h, mut w] = self.input.map(u64::from);
        let pool = u64::from(self.pool.max(1));
        for out in &self.channels {
            c = u64::from(*out);
            h /= pool;
            w /= pool;
        }
        (c, h, w)
    }
}

/// A multi-layer perceptron: linear layers with an activation between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    /// Widths of the hidden layers, input side first.
    pub hidden: Vec<u32>,
    /// The non-linearity between layers.
    #[serde(default)]
    pub activation: Activation,
    /// Dropout probability after each hidden layer (0 disables it). Masks are drawn
    /// from a generator seeded by the run's seed and the step, so a resumed run drops
    /// the same units.
    #[serde(default)]
    pub dropout: f64,
}

/// A non-linearity between layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// A seeded synthetic classification problem.
    Synthetic(SyntheticSpec),
    /// A CSV file (optionally gzip-compressed): one example per row.
    Csv(CsvSpec),
    /// Two NumPy `.npy` files: features and targets.
    Npy(NpySpec),
    /// Named tensors in a safetensors file.
    Safetensors(SafetensorsSpec),
}

/// A CSV file: numeric columns, one of them the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvSpec {
    /// Path, relative to a data root (or absolute, inside one). `.gz` is decompressed.
    pub path: String,
    /// Whether the first row names the columns.
    #[serde(default)]
    pub header: bool,
    /// The target column, by name (needs a header) or 0-based index; the last column
    /// when absent.
    #[serde(default)]
    pub target: Option<ColumnRef>,
    /// The field separator.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
}

fn default_delimiter() -> char {
    ','
}

/// A column named or counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ColumnRef {
    /// 0-based index.
    Index(u32),
    /// Name from the header row.
    Name(String),
}

/// Features and targets in two `.npy` files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NpySpec {
    /// `[samples, ...]` features (flattened per example).
    pub features: String,
    /// `[samples]` labels or `[samples]`/`[samples, k]` regression targets.
    pub targets: String,
}

/// Features and targets as two named tensors of one safetensors file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetensorsSpec {
    /// Path of the file.
    pub path: String,
    /// Name of the features tensor.
    #[serde(default = "default_features_name")]
    pub features: String,
    /// Name of the targets tensor.
    #[serde(default = "default_targets_name")]
    pub targets: String,
}

fn default_features_name() -> String {
    "features".into()
}

fn default_targets_name() -> String {
    "targets".into()
}

/// A seeded, learnable classification problem: Gaussian features labelled by a random
/// linear teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// Number of examples, when the spec alone says (synthetic data).
    pub fn declared_samples(&self) -> Option<u32> {
        match self {
            DataSpec::Synthetic(s) => Some(s.samples),
            _ => None,
        }
    }
}

/// The optimizer and its hyper-parameters. runyard implements them itself (with
/// PyTorch's update rules) so their state can be saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdamSpec {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    #[serde(default = "default_betas")]
    #[schema(min_items = 2, max_items = 2)]
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
        match tagged::split(d, &["mlp", "cnn", "torchscript"])? {
            ("mlp", body) => tagged::variant(body).map(ModelSpec::Mlp),
            ("cnn", body) => tagged::variant(body).map(ModelSpec::Cnn),
            (_, body) => tagged::variant(body).map(ModelSpec::Torchscript),
        }
    }
}

impl<'de> Deserialize<'de> for DataSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match tagged::split(d, &["synthetic", "csv", "npy", "safetensors"])? {
            ("synthetic", body) => tagged::variant(body).map(DataSpec::Synthetic),
            ("csv", body) => tagged::variant(body).map(DataSpec::Csv),
            ("npy", body) => tagged::variant(body).map(DataSpec::Npy),
            (_, body) => tagged::variant(body).map(DataSpec::Safetensors),
        }
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

/// The shape of a run's training data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DataShape {
    /// Training examples (after any validation split).
    pub samples: u64,
    /// Features per example, flattened.
    pub features: u64,
    /// Model outputs: classes, or regression targets per example.
    pub outputs: u64,
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

/// Rules of a data spec that need no file: ranges of synthetic data, non-empty paths.
fn check_data(field: &str, data: &DataSpec) -> Result<(), SpecError> {
    let path = |name: &str, value: &str| {
        if value.trim().is_empty() {
            Err(SpecError::new(
                format!("{field}.{name}"),
                "must not be empty",
            ))
        } else {
            Ok(())
        }
    };
    match data {
        DataSpec::Synthetic(SyntheticSpec {
            samples,
            features,
            classes,
            ..
        }) => {
            check_range(
                &format!("{field}.samples"),
                u64::from(*samples),
                1,
                10_000_000,
            )?;
            check_range(
                &format!("{field}.features"),
                u64::from(*features),
                1,
                65_536,
            )?;
            check_range(&format!("{field}.classes"), u64::from(*classes), 2, 65_536)?;
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
                        field,
                        format!("{what} is {values}, more than the limit of {MAX_DATA_VALUES}"),
                    ));
                }
            }
        }
        DataSpec::Csv(csv) => {
            path("path", &csv.path)?;
            if !csv.delimiter.is_ascii() || csv.delimiter == '"' || csv.delimiter == '\n' {
                return Err(SpecError::new(
                    format!("{field}.delimiter"),
                    "must be one ASCII character other than a quote or a newline",
                ));
            }
            if matches!(csv.target, Some(ColumnRef::Name(_))) && !csv.header {
                return Err(SpecError::new(
                    format!("{field}.target"),
                    "a column name needs `header: true`",
                ));
            }
        }
        DataSpec::Npy(npy) => {
            path("features", &npy.features)?;
            path("targets", &npy.targets)?;
        }
        DataSpec::Safetensors(st) => {
            path("path", &st.path)?;
            path("features", &st.features)?;
            path("targets", &st.targets)?;
        }
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

/// Checks the labels: at most [`MAX_LABELS`]; keys of 1 to [`MAX_LABEL_KEY_CHARS`]
/// ASCII letters, digits, `.`, `_`, `-` or `/`, starting with a letter or digit (so a
/// `label=key=value` query splits at the first `=`); values of at most
/// [`MAX_LABEL_VALUE_CHARS`] characters, none of them a control character.
fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), SpecError> {
    if labels.len() > MAX_LABELS {
        return Err(SpecError::new(
            "labels",
            format!("at most {MAX_LABELS} labels, got {}", labels.len()),
        ));
    }
    for (key, value) in labels {
        let field = format!("labels.{key}");
        let starts_well = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let allowed = key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !starts_well || !allowed || key.chars().count() > MAX_LABEL_KEY_CHARS {
            return Err(SpecError::new(
                if key.chars().any(char::is_control) {
                    "labels".to_string()
                } else {
                    field
                },
                format!(
                    "label key {key:?} must be 1 to {MAX_LABEL_KEY_CHARS} ASCII letters, digits, \
                     `.`, `_`, `-` or `/`, starting with a letter or digit"
                ),
            ));
        }
        if value.chars().count() > MAX_LABEL_VALUE_CHARS {
            return Err(SpecError::new(
                field,
                format!(
                    "must be at most {MAX_LABEL_VALUE_CHARS} characters, got {}",
                    value.chars().count()
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(SpecError::new(field, "must not contain control characters"));
        }
    }
    Ok(())
}

impl RunSpec {
    /// Checks every rule a spec must follow; the first broken one is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_labels(&self.labels)?;
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
        self.validate_common()?;
        let (model, data) = match self.kind {
            RunKind::Command => return self.validate_command(),
            RunKind::Train => self.training_parts()?,
        };
        if self.slots > 1 {
            // The built-in loop trains on one device: claiming more would hold
            // devices it never uses.
            return Err(SpecError::new(
                "slots",
                format!(
                    "a built-in training run trains on one device, got {}; to train one \
                     model data-parallel over several slots, submit a `\"kind\": \"command\"` \
                     run (a torch.distributed script) with `slots`",
                    self.slots
                ),
            ));
        }
        check_range("epochs", u64::from(self.epochs), 1, 100_000)?;
        check_range("batch_size", u64::from(self.batch_size), 1, 1_000_000)?;
        match model {
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
            ModelSpec::Cnn(cnn) => {
                for (i, side) in cnn.input.iter().enumerate() {
                    check_range(&format!("model.input[{i}]"), u64::from(*side), 1, 4096)?;
                }
                if cnn.channels.is_empty() || cnn.channels.len() > 8 {
                    return Err(SpecError::new(
                        "model.channels",
                        "between 1 and 8 convolutions",
                    ));
                }
                if cnn.kernel_sizes.len() != cnn.channels.len() {
                    return Err(SpecError::new(
                        "model.kernel_sizes",
                        format!(
                            "one per convolution: {} given for {} channels entries",
                            cnn.kernel_sizes.len(),
                            cnn.channels.len()
                        ),
                    ));
                }
                for (i, c) in cnn.channels.iter().enumerate() {
                    check_range(&format!("model.channels[{i}]"), u64::from(*c), 1, 4096)?;
                }
                for (i, k) in cnn.kernel_sizes.iter().enumerate() {
                    check_range(&format!("model.kernel_sizes[{i}]"), u64::from(*k), 1, 15)?;
                    if k % 2 == 0 {
                        return Err(SpecError::new(
                            format!("model.kernel_sizes[{i}]"),
                            "must be odd (same padding)",
                        ));
                    }
                }
                check_range("model.pool", u64::from(cnn.pool), 1, 8)?;
                let (c, h, w) = cnn.conv_output();
                if h == 0 || w == 0 {
                    return Err(SpecError::new(
                        "model.pool",
                        format!(
                            "pools shrink the {}x{} input to nothing",
                            cnn.input[1], cnn.input[2]
                        ),
                    ));
                }
                let _ = c;
                for (i, width) in cnn.hidden.iter().enumerate() {
                    check_range(&format!("model.hidden[{i}]"), u64::from(*width), 1, 65_536)?;
                }
            }
            ModelSpec::Torchscript(_) => {}
        }
        let dropout = match model {
            ModelSpec::Mlp(m) => m.dropout,
            ModelSpec::Cnn(c) => c.dropout,
            ModelSpec::Torchscript(t) => {
                if t.path.trim().is_empty() {
                    return Err(SpecError::new("model.path", "must not be empty"));
                }
                0.0
            }
        };
        if !(dropout.is_finite() && (0.0..=0.9).contains(&dropout)) {
            return Err(SpecError::new(
                "model.dropout",
                format!("must be in [0, 0.9], got {dropout}"),
            ));
        }
        check_data("data", data)?;
        let train_data = data;
        if let Some(validation) = &self.validation {
            match (validation.fraction, &validation.data) {
                (Some(fraction), None) => {
                    if !(fraction.is_finite() && fraction > 0.0 && fraction <= 0.9) {
                        return Err(SpecError::new(
                            "validation.fraction",
                            format!("must be in (0, 0.9], got {fraction}"),
                        ));
                    }
                }
                (None, Some(data)) => {
                    check_data("validation.data", data)?;
                    if std::mem::discriminant(data) != std::mem::discriminant(train_data) {
                        return Err(SpecError::new(
                            "validation.data.kind",
                            "must be the same kind as data",
                        ));
                    }
                }
                _ => {
                    return Err(SpecError::new(
                        "validation",
                        "give exactly one of `fraction` and `data`",
                    ))
                }
            }
        }
        if self.task == Task::Regression && matches!(data, DataSpec::Synthetic(_)) {
            return Err(SpecError::new(
                "task",
                "synthetic data is a classification problem",
            ));
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
        if let DataSpec::Synthetic(s) = data {
            let held_out = self
                .validation
                .as_ref()
                .and_then(|v| v.fraction)
                .map_or(0, |f| (f64::from(s.samples) * f).round() as u64);
            self.validate_shape(&DataShape {
                samples: u64::from(s.samples) - held_out,
                features: u64::from(s.features),
                outputs: u64::from(s.classes),
            })?;
        }
        Ok(())
    }

    /// Rules every kind of run follows: checkpoints, retries, slots, stalls, priority.
    fn validate_common(&self) -> Result<(), SpecError> {
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
        check_range("max_retries", u64::from(self.max_retries), 0, 100)?;
        check_range("slots", u64::from(self.slots), 1, 64)?;
        if let Some(secs) = self.stall_after_secs {
            if !(secs.is_finite() && (1.0..=86_400.0).contains(&secs)) {
                return Err(SpecError::new(
                    "stall_after_secs",
                    format!("must be between 1 and 86400, got {secs}"),
                ));
            }
        }
        if !(self.retry_backoff_secs.is_finite()
            && (0.0..=3600.0).contains(&self.retry_backoff_secs))
        {
            return Err(SpecError::new(
                "retry_backoff_secs",
                format!(
                    "must be between 0 and 3600, got {}",
                    self.retry_backoff_secs
                ),
            ));
        }
        if !(-1000..=1000).contains(&self.priority) {
            return Err(SpecError::new(
                "priority",
                format!("must be between -1000 and 1000, got {}", self.priority),
            ));
        }
        self.validate_executor()
    }

    /// The Slurm fields: only on Slurm runs, each a short printable word (they become
    /// `sbatch` arguments), and a time limit in Slurm's format.
    fn validate_executor(&self) -> Result<(), SpecError> {
        let fields = [
            ("partition", &self.partition),
            ("gres", &self.gres),
            ("time_limit", &self.time_limit),
            ("account", &self.account),
            ("qos", &self.qos),
        ];
        for (field, value) in fields {
            let Some(value) = value else { continue };
            if self.executor.is_local() {
                return Err(SpecError::new(
                    field,
                    "is for `\"executor\": \"slurm\"` runs; this run trains on the server's own slots",
                ));
            }
            let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.:,=+/".contains(c);
            if value.is_empty() || value.len() > 128 || !value.chars().all(allowed) {
                return Err(SpecError::new(
                    field,
                    format!("must be 1 to 128 letters, digits or `_-.:,=+/`, got {value:?}"),
                ));
            }
        }
        if let Some(limit) = &self.time_limit {
            let ok = limit
                .split(['-', ':'])
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
                && limit.matches('-').count() <= 1
                && limit.matches(':').count() <= 2;
            if !ok {
                return Err(SpecError::new(
                    "time_limit",
                    format!(
                        "must be in Slurm's format: minutes, `MM:SS`, `HH:MM:SS`, `D-HH` or `D-HH:MM:SS`, got {limit:?}"
                    ),
                ));
            }
        }
        if !self.executor.is_local() && self.slots != 1 {
            return Err(SpecError::new(
                "slots",
                "is for local runs; a Slurm run asks Slurm for devices with `gres` (e.g. \"gpu:2\") \
                 and for ranks with `nodes` and `ranks_per_node`",
            ));
        }
        for (field, value, max) in [
            ("nodes", self.nodes, 1024),
            ("ranks_per_node", self.ranks_per_node, 64),
        ] {
            if value != 1 && self.executor.is_local() {
                return Err(SpecError::new(
                    field,
                    "is for `\"executor\": \"slurm\"` runs; a local run's ranks are its `slots`",
                ));
            }
            check_range(field, u64::from(value), 1, max)?;
        }
        if self.kind == RunKind::Train && self.nodes * self.ranks_per_node > 1 {
            let field = if self.nodes > 1 {
                "nodes"
            } else {
                "ranks_per_node"
            };
            return Err(SpecError::new(
                field,
                "a built-in training run trains on one device; ranks over several nodes are \
                 for `\"kind\": \"command\"` runs (a torch.distributed script)",
            ));
        }
        Ok(())
    }

    /// The model and data of a `train` run, which must have both and no command.
    pub fn training_parts(&self) -> Result<(&ModelSpec, &DataSpec), SpecError> {
        let command_field = [
            ("argv", !self.argv.is_empty()),
            ("cwd", self.cwd.is_some()),
            ("env", !self.env.is_empty()),
            ("timeout", self.timeout.is_some()),
            ("grace", self.grace.is_some()),
            ("kill_on_stall", self.kill_on_stall),
        ]
        .into_iter()
        .find(|(_, set)| *set);
        if let Some((field, _)) = command_field {
            return Err(SpecError::new(
                field,
                "is for `\"kind\": \"command\"` runs; this spec is a training run",
            ));
        }
        let missing = |field: &str| {
            SpecError::new(
                field,
                "is required for a training run (or set `\"kind\": \"command\"` with `argv`)",
            )
        };
        let model = self.model.as_ref().ok_or_else(|| missing("model"))?;
        let data = self.data.as_ref().ok_or_else(|| missing("data"))?;
        Ok((model, data))
    }

    /// The rules of a `command` run: a program, and none of a training run's fields.
    fn validate_command(&self) -> Result<(), SpecError> {
        let training_field = [
            ("model", self.model.is_some()),
            ("data", self.data.is_some()),
            ("epochs", self.epochs != 0),
            ("batch_size", self.batch_size != 0),
            ("validation", self.validation.is_some()),
            ("grad_clip", self.grad_clip.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set);
        if let Some((field, _)) = training_field {
            return Err(SpecError::new(
                field,
                "is for training runs; a command run reports its own epochs and figures",
            ));
        }
        let Some(program) = self.argv.first() else {
            return Err(SpecError::new(
                "argv",
                "a command run needs the program to run, e.g. [\"python3\", \"train.py\"]",
            ));
        };
        if program.trim().is_empty() {
            return Err(SpecError::new("argv[0]", "must name a program"));
        }
        if self.argv.len() > 4096 {
            return Err(SpecError::new("argv", "at most 4096 arguments"));
        }
        for (i, arg) in self.argv.iter().enumerate() {
            if arg.contains('\0') {
                return Err(SpecError::new(
                    format!("argv[{i}]"),
                    "must not contain a NUL character",
                ));
            }
        }
        if let Some(cwd) = &self.cwd {
            if cwd.trim().is_empty() || cwd.contains('\0') {
                return Err(SpecError::new("cwd", "must be a directory path"));
            }
        }
        if self.env.len() > 1024 {
            return Err(SpecError::new("env", "at most 1024 variables"));
        }
        for (key, value) in &self.env {
            let field = format!("env.{key}");
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(SpecError::new(
                    field,
                    "a variable name must be non-empty, without `=` or NUL",
                ));
            }
            if key.starts_with("RUNYARD_") {
                return Err(SpecError::new(
                    field,
                    "RUNYARD_* variables are set by the server for the command",
                ));
            }
            if value.contains('\0') {
                return Err(SpecError::new(field, "must not contain a NUL character"));
            }
        }
        if let Some(timeout) = self.timeout {
            if timeout.get() < std::time::Duration::from_secs(1) {
                return Err(SpecError::new("timeout", "must be at least 1s"));
            }
        }
        if let Some(grace) = self.grace {
            if grace.get() > std::time::Duration::from_secs(3600) {
                return Err(SpecError::new("grace", "must be at most 1h"));
            }
        }
        Ok(())
    }

    /// How many ranks (processes) an attempt of this run starts: `slots` for a local
    /// command run, `nodes × ranks_per_node` for a Slurm one, one otherwise.
    pub fn ranks(&self) -> u32 {
        match (self.kind, self.executor) {
            (RunKind::Command, Executor::Local) => self.slots.max(1),
            (RunKind::Command, Executor::Slurm) => self.nodes.max(1) * self.ranks_per_node.max(1),
            (RunKind::Train, _) => 1,
        }
    }

    /// [`RunSpec::ranks`] of a stored spec; one when it does not parse.
    pub fn ranks_of(stored: &str) -> u32 {
        serde_json::from_str::<RunSpec>(stored).map_or(1, |spec| spec.ranks())
    }

    /// How long a stopped command gets between `SIGTERM` and `SIGKILL`.
    pub fn grace_period(&self) -> std::time::Duration {
        self.grace
            .map_or(std::time::Duration::from_secs(10), SpecDuration::get)
    }

    /// The rules that need the data's shape (known from the spec for synthetic data,
    /// from the files otherwise).
    pub fn validate_shape(&self, shape: &DataShape) -> Result<(), SpecError> {
        if shape.samples == 0 {
            return Err(SpecError::new("data", "no training example left"));
        }
        if u64::from(self.batch_size) > shape.samples {
            return Err(SpecError::new(
                "batch_size",
                format!(
                    "must be between 1 and the {} training examples, got {}",
                    shape.samples, self.batch_size
                ),
            ));
        }
        if let Some(ModelSpec::Cnn(cnn)) = &self.model {
            let wanted: u64 = cnn.input.iter().map(|d| u64::from(*d)).product();
            if wanted != shape.features {
                return Err(SpecError::new(
                    "model.input",
                    format!(
                        "{:?} is {wanted} values per example, the data has {}",
                        cnn.input, shape.features
                    ),
                ));
            }
        }
        let parameters = self.parameter_count(shape);
        if parameters > MAX_PARAMETERS {
            return Err(SpecError::new(
                "model",
                format!("{parameters} parameters, more than the limit of {MAX_PARAMETERS}"),
            ));
        }
        Ok(())
    }

    /// The canonical JSON form: every default filled in, fields in a fixed order.
    pub fn canonical_json(&self) -> String {
        // Serializing plain structs and enums of numbers and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Hex SHA-256 of the canonical JSON form without the labels; equal specs have
    /// equal digests, whatever their labels.
    pub fn digest(&self) -> String {
        let canonical = if self.labels.is_empty() {
            self.canonical_json()
        } else {
            let unlabelled = RunSpec {
                labels: BTreeMap::new(),
                ..self.clone()
            };
            unlabelled.canonical_json()
        };
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }

    /// Trainable parameters of the model for data of this shape (weights and biases).
    pub fn parameter_count(&self, shape: &DataShape) -> u64 {
        let (inputs, outputs) = (shape.features, shape.outputs);
        let dense = |first: u64, hidden: &[u32]| -> u64 {
            let mut widths = vec![first];
            widths.extend(hidden.iter().map(|h| u64::from(*h)));
            widths.push(outputs);
            widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
        };
        match &self.model {
            None => 0,
            Some(ModelSpec::Mlp(mlp)) => dense(inputs, &mlp.hidden),
            Some(ModelSpec::Cnn(cnn)) => {
                let mut c_in = u64::from(cnn.input[0]);
                let mut conv = 0;
                for (c_out, k) in cnn.channels.iter().zip(&cnn.kernel_sizes) {
                    let (c_out, k) = (u64::from(*c_out), u64::from(*k));
                    conv += c_in * c_out * k * k + c_out;
                    c_in = c_out;
                }
                let (c, h, w) = cnn.conv_output();
                conv + dense(c * h * w, &cnn.hidden)
            }
            // Known only once the module is loaded; its file size bounds it.
            Some(ModelSpec::Torchscript(_)) => 0,
        }
    }

    /// Optimizer steps in one epoch of `samples` examples (the last batch may be short).
    pub fn batches_per_epoch(&self, samples: u64) -> u64 {
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

    fn command(json: &str) -> RunSpec {
        serde_json::from_str(json).expect("command spec parses")
    }

    #[test]
    fn a_command_run_needs_a_program_and_no_training_fields() {
        let spec = command(
            r#"{"name":"py","kind":"command","argv":["python3","train.py","--lr","0.01"],
                "env":{"OMP_NUM_THREADS":"1"},"timeout":"2h","grace":"30s","kill_on_stall":true}"#,
        );
        spec.validate().expect("valid");
        assert_eq!(
            spec.timeout.map(SpecDuration::get),
            Some(std::time::Duration::from_secs(7200))
        );
        assert_eq!(spec.grace_period(), std::time::Duration::from_secs(30));
        let canonical = spec.canonical_json();
        assert!(canonical.contains(r#""kind":"command""#), "{canonical}");
        assert!(canonical.contains(r#""timeout":"2h""#), "{canonical}");
        assert!(!canonical.contains("model"), "{canonical}");
        assert_eq!(
            command(r#"{"name":"py","kind":"command","argv":["true"]}"#).grace_period(),
            std::time::Duration::from_secs(10)
        );

        for (json, field) in [
            (r#"{"name":"x","kind":"command"}"#, "argv"),
            (r#"{"name":"x","kind":"command","argv":[" "]}"#, "argv[0]"),
            (
                r#"{"name":"x","kind":"command","argv":["t"],"epochs":3}"#,
                "epochs",
            ),
            (
                r#"{"name":"x","kind":"command","argv":["t"],"model":{"kind":"mlp","hidden":[4]}}"#,
                "model",
            ),
            (
                r#"{"name":"x","kind":"command","argv":["t"],"env":{"RUNYARD_RUN_ID":"1"}}"#,
                "env.RUNYARD_RUN_ID",
            ),
            (
                r#"{"name":"x","kind":"command","argv":["t"],"env":{"A=B":"1"}}"#,
                "env.A=B",
            ),
            (
                r#"{"name":"x","kind":"command","argv":["t"],"timeout":"10ms"}"#,
                "timeout",
            ),
            (
                r#"{"name":"x","kind":"command","argv":["t"],"grace":"2h"}"#,
                "grace",
            ),
        ] {
            assert_eq!(
                command(json).validate().expect_err(json).field,
                field,
                "{json}"
            );
        }
        // A training run with a command's field, or without its model or data.
        let mut spec = demo();
        spec.argv = vec!["python3".into()];
        assert_eq!(spec.validate().unwrap_err().field, "argv");
        let mut spec = demo();
        spec.model = None;
        let err = spec.validate().unwrap_err();
        assert_eq!(err.field, "model");
        assert!(err.reason.contains("command"), "{}", err.reason);
    }

    #[test]
    fn durations_read_units_or_seconds_and_show_the_largest_whole_unit() {
        for (raw, millis, shown) in [
            ("500ms", 500, "500ms"),
            ("90s", 90_000, "90s"),
            ("90m", 5_400_000, "90m"),
            ("120m", 7_200_000, "2h"),
            ("1.5h", 5_400_000, "90m"),
            ("45", 45_000, "45s"),
        ] {
            let d: SpecDuration = raw.parse().expect(raw);
            assert_eq!(
                (d.get().as_millis() as u64, d.to_string().as_str()),
                (millis, shown)
            );
        }
        for bad in ["", "h", "-1s", "2d", "fast"] {
            assert!(bad.parse::<SpecDuration>().is_err(), "{bad}");
        }
        let from_number: RunSpec =
            command(r#"{"name":"n","kind":"command","argv":["t"],"timeout":90}"#);
        assert_eq!(
            from_number.timeout.map(|t| t.to_string()),
            Some("90s".into())
        );
    }

    #[test]
    fn a_built_in_training_run_takes_one_slot_and_a_command_run_takes_several() {
        let mut spec = demo();
        spec.slots = 2;
        let err = spec
            .validate()
            .expect_err("two devices for the built-in loop");
        assert_eq!(err.field, "slots");
        assert!(
            err.reason.contains("\"kind\": \"command\""),
            "{}",
            err.reason
        );
        spec.slots = 1;
        spec.validate().expect("one slot");
        let gang =
            command(r#"{"name":"ddp","kind":"command","argv":["python3","ddp.py"],"slots":2}"#);
        gang.validate()
            .expect("a command run may claim several slots");
    }

    #[test]
    fn demo_spec_is_valid() {
        demo().validate().expect("valid");
        assert_eq!(demo().batches_per_epoch(20_000), 313);
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
        spec.model = Some(ModelSpec::Mlp(MlpSpec {
            hidden: vec![8, 0],
            activation: Activation::Relu,
            dropout: 0.0,
        }));
        assert_eq!(spec.validate().unwrap_err().field, "model.hidden[1]");
        let mut spec = demo();
        spec.optimizer = OptimizerSpec::Adam(AdamSpec::with_lr(f64::NAN));
        assert_eq!(spec.validate().unwrap_err().field, "optimizer.lr");
        let mut spec = demo();
        spec.name = "  ".into();
        assert_eq!(spec.validate().unwrap_err().field, "name");
        let mut spec = demo();
        spec.data = Some(DataSpec::Synthetic(SyntheticSpec {
            samples: 10_000_000,
            features: 65_536,
            classes: 2,
            seed: 0,
        }));
        assert_eq!(spec.validate().unwrap_err().field, "data");
        let mut spec = demo();
        spec.model = Some(ModelSpec::Mlp(MlpSpec {
            hidden: vec![65_536, 65_536],
            activation: Activation::Relu,
            dropout: 0.0,
        }));
        assert_eq!(spec.validate().unwrap_err().field, "model");
        let shape = DataShape {
            samples: 20_000,
            features: 32,
            outputs: 4,
        };
        assert_eq!(demo().parameter_count(&shape), 32 * 128 + 128 + 128 * 4 + 4);
    }

    #[test]
    fn labels_are_kept_out_of_the_digest_and_checked() {
        let plain = demo();
        let mut labelled = demo();
        labelled.labels.insert("team".into(), "vision".into());
        labelled.labels.insert("exp/arm".into(), "b = 2".into());
        labelled.validate().expect("valid labels");
        assert_eq!(labelled.digest(), plain.digest());
        assert!(labelled
            .canonical_json()
            .contains(r#""labels":{"exp/arm":"b = 2","team":"vision"}"#));
        assert!(!plain.canonical_json().contains("labels"));

        let mut bad = demo();
        bad.labels.insert("no=pe".into(), "x".into());
        assert_eq!(bad.validate().unwrap_err().field, "labels.no=pe");
        let mut bad = demo();
        bad.labels.insert("-lead".into(), "x".into());
        assert_eq!(bad.validate().unwrap_err().field, "labels.-lead");
        let mut bad = demo();
        bad.labels
            .insert("k".repeat(MAX_LABEL_KEY_CHARS + 1), "x".into());
        assert!(bad.validate().unwrap_err().field.starts_with("labels.k"));
        let mut bad = demo();
        bad.labels
            .insert("note".into(), "v".repeat(MAX_LABEL_VALUE_CHARS + 1));
        assert_eq!(bad.validate().unwrap_err().field, "labels.note");
        let mut bad = demo();
        bad.labels.insert("note".into(), "a\nb".into());
        assert_eq!(bad.validate().unwrap_err().field, "labels.note");
        let mut bad = demo();
        for i in 0..=MAX_LABELS {
            bad.labels.insert(format!("k{i}"), String::new());
        }
        assert_eq!(bad.validate().unwrap_err().field, "labels");
    }
}
