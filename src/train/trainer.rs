//! The training loop: real forward, backward and optimizer steps with tch; progress
//! written to the run's cells; the cancel and pause flags read once per batch;
//! checkpoints at the policy's triggers and at every epoch end.
//!
//! Everything that decides the weights is a function of the spec and the position:
//! the data order of an epoch comes from `(seed, epoch)`, the learning rate from the
//! step, and the optimizer state is in the checkpoint. So a run resumed from a
//! checkpoint on the same device ends with the same bits as one never interrupted.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn;
use tch::{Device, Kind, Tensor};

use super::checkpoint::{self, CheckpointError, Position, Saved};
use super::control::RunControl;
use super::data::{self, DataError, DataRoots, Dataset};
use super::model::{Mode, Net};
use super::optim::{OptimError, Optimizer};
use super::progress::{CheckpointMark, EpochRecord, ProgressCells, Report};
use super::schedule;
use crate::domain::spec::{RunSpec, Task};

/// Torch's parameter initialisation draws from one process-wide generator; seeding it
/// and building the model happen under this lock so concurrent runs stay reproducible.
static TORCH_INIT: Mutex<()> = Mutex::new(());

/// Name of the final weights artifact.
pub const FINAL_WEIGHTS: &str = "final.safetensors";

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// libtorch refused an operation (shape, memory, device).
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// A checkpoint could not be written or read.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The optimizer state in a checkpoint does not fit.
    #[error("optimizer state: {0}")]
    Optimizer(#[from] OptimError),
    /// The data cannot be loaded (it changed since the run was submitted).
    #[error("data: {0}")]
    Data(#[from] DataError),
    /// The loss became NaN or infinite (`fail_on_nan`).
    #[error("loss is {loss} at epoch {epoch}, batch {batch}")]
    NonFinite {
        /// The loss value.
        loss: f64,
        /// 1-based epoch.
        epoch: u64,
        /// 1-based batch in the epoch.
        batch: u64,
    },
}

/// Where to resume from: a journaled checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeFrom {
    /// Absolute path of the checkpoint file.
    pub path: PathBuf,
    /// Its journaled SHA-256, checked before loading.
    pub sha256: String,
}

/// What a training attempt works with.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// What to train.
    pub spec: &'a RunSpec,
    /// The slot's device.
    pub device: Device,
    /// Where progress is reported.
    pub cells: &'a ProgressCells,
    /// Cancel and pause flags.
    pub control: &'a RunControl,
    /// The run's directory (`DATA_DIR/runs/ID`): checkpoints and artifacts go there.
    pub run_dir: PathBuf,
    /// The checkpoint to continue from, if any.
    pub resume: Option<ResumeFrom>,
    /// Where data files may be read from.
    pub roots: &'a DataRoots,
}

/// How a training attempt ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Every epoch ran; the figures are the last epoch's.
    Completed {
        /// Mean training loss of the last epoch.
        train_loss: f64,
        /// Training accuracy of the last epoch.
        train_accuracy: f64,
        /// The final weights file.
        weights: Saved,
    },
    /// The pause flag was seen at a batch boundary; a checkpoint was written.
    Paused,
    /// The cancel flag was seen at a batch boundary.
    Cancelled,
}

/// The order of the examples in epoch `epoch`: a function of the seed and the epoch
/// alone, so a resumed run sees the same order.
fn epoch_order(seed: u64, epoch: u64, n: i64) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

/// A periodic checkpoint (a policy trigger or an epoch end): one that cannot be
/// written (a full disk) does not end the run. Training goes on, and the next trigger
/// writes a newer one; only the pause checkpoint and the final weights must succeed.
fn periodic_checkpoint(
    attempt: &Attempt<'_>,
    vs: &nn::VarStore,
    optimizer: &Optimizer,
    position: &Position,
) {
    if let Err(e) = save_checkpoint(attempt, vs, optimizer, position) {
        tracing::warn!(
            step = position.step,
            error = %e,
            "checkpoint not written; training goes on and writes one at the next trigger"
        );
    }
}

fn save_checkpoint(
    attempt: &Attempt<'_>,
    vs: &nn::VarStore,
    optimizer: &Optimizer,
    position: &Position,
) -> Result<(), TrainError> {
    let mut tensors = checkpoint::weight_tensors(vs);
    tensors.extend(optimizer.state_tensors());
    tensors.extend(checkpoint::position_tensors(position));
    let saved = checkpoint::save(
        &attempt.run_dir.join(crate::domain::layout::CHECKPOINTS_DIR),
        &checkpoint::file_name(position.step),
        &tensors,
    )?;
    attempt.cells.publish_checkpoint(CheckpointMark {
        step: position.step,
        epoch: position.epoch,
        batch: position.batch,
        bytes: saved.bytes,
        sha256: saved.sha256,
    });
    Ok(())
}

/// The training loss: cross-entropy over class logits, or mean squared error.
fn loss_of(task: Task, outputs: &Tensor, targets: &Tensor) -> Result<Tensor, tch::TchError> {
    match task {
        Task::Classification => {
            outputs.f_cross_entropy_loss::<Tensor>(targets, None, tch::Reduction::Mean, -100, 0.0)
        }
        Task::Regression => outputs.f_mse_loss(targets, tch::Reduction::Mean),
    }
}

/// Examples evaluated per forward pass on validation data.
const EVAL_BATCH: i64 = 4096;

/// Mean loss and accuracy (classification) or mean absolute error (regression) over
/// `data`, without gradients.
fn evaluate(task: Task, net: &Net, data: &Dataset) -> Result<(f64, f64), tch::TchError> {
    tch::no_grad(|| {
        let n = data.len();
        let (mut loss_sum, mut metric_sum) = (0.0, 0.0);
        let mut start = 0;
        while start < n {
            let len = EVAL_BATCH.min(n - start);
            let xs = data.features.f_narrow(0, start, len)?;
            let ys = data.targets.f_narrow(0, start, len)?;
            let outputs = net.forward(&xs, Mode::Eval)?;
            loss_sum += loss_of(task, &outputs, &ys)?.f_double_value(&[])? * len as f64;
            metric_sum += match task {
                Task::Classification => outputs
                    .f_argmax(-1, false)?
                    .f_eq_tensor(&ys)?
                    .f_sum(Kind::Double)?
                    .f_double_value(&[])?,
                Task::Regression => {
                    let per_value = outputs.f_sub(&ys)?.f_abs()?.f_mean(Kind::Double)?;
                    per_value.f_double_value(&[])? * len as f64
                }
            };
            start += len;
        }
        Ok((loss_sum / n as f64, metric_sum / n as f64))
    })
}

/// Trains one attempt until done, paused or cancelled.
pub fn train(attempt: &Attempt<'_>) -> Result<Finish, TrainError> {
    train_with(attempt, attempt.cells)
}

/// [`train`], with the per-batch report going to `per_batch` (the attempt's cells in
/// the server; [`super::progress::NoReport`] in the overhead bench). Epoch summaries
/// and checkpoints still go to the attempt's cells.
pub fn train_with<R: Report>(attempt: &Attempt<'_>, per_batch: &R) -> Result<Finish, TrainError> {
    let spec = attempt.spec;
    let device = attempt.device;
    let cells = attempt.cells;
    let (data, validation) = data::load_run(spec, attempt.roots)?;
    let data = data.to_device(device)?;
    let validation = validation.map(|v| v.to_device(device)).transpose()?;
    let vs = nn::VarStore::new(device);
    let net = {
        let _guard = TORCH_INIT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(spec.seed as i64);
        let (model, _) = spec
            .training_parts()
            .map_err(|e| data::DataError::new(e.field, e.reason))?;
        Net::build(
            &vs.root(),
            model,
            data.feature_count(),
            data.outputs,
            spec.seed,
            attempt.roots,
        )?
    };
    let mut optimizer = Optimizer::new(&spec.optimizer, &vs)?;

    let mut position = Position {
        last_loss: f64::NAN,
        ..Position::default()
    };
    if let Some(resume) = &attempt.resume {
        let named = checkpoint::load(&resume.path, &resume.sha256, device)?;
        checkpoint::restore_weights(&resume.path, &vs, &named)?;
        optimizer.load_state(&named)?;
        position = checkpoint::position_from(&resume.path, &named)?;
    }

    let n = data.len();
    let batch_size = i64::from(spec.batch_size);
    let batches = spec.batches_per_epoch(n as u64);
    cells.set_epoch_size(batches, n as u64);
    let epochs = u64::from(spec.epochs);
    let total_steps = epochs * batches;
    let base_lr = spec.optimizer.lr();
    let policy = &spec.checkpoint;
    let mut last_checkpoint = Instant::now();
    if position.step > 0 {
        cells.report(
            position.epoch + 1,
            position.batch,
            position.samples,
            f64::NAN,
        );
    }

    while position.epoch < epochs {
        // A sweep trial stops at the end of its rung, as a pause would there.
        if attempt.control.pause_due(position.epoch) && position.batch == 0 {
            save_checkpoint(attempt, &vs, &optimizer, &position)?;
            return Ok(Finish::Paused);
        }
        let epoch = position.epoch;
        let started = Instant::now();
        let order = epoch_order(spec.seed, epoch, n);
        let permutation = Tensor::f_from_slice(&order)?.f_to_device(device)?;
        while position.batch < batches {
            if attempt.control.is_cancelled() {
                return Ok(Finish::Cancelled);
            }
            if attempt.control.is_paused() {
                save_checkpoint(attempt, &vs, &optimizer, &position)?;
                return Ok(Finish::Paused);
            }
            let start = position.batch as i64 * batch_size;
            let len = batch_size.min(n - start);
            let index = permutation.f_narrow(0, start, len)?;
            let xs = data.features.f_index_select(0, &index)?;
            let ys = data.targets.f_index_select(0, &index)?;
            let outputs = net.forward(
                &xs,
                Mode::Train {
                    step: position.step,
                },
            )?;
            let loss = loss_of(spec.task, &outputs, &ys)?;
            optimizer.zero_grad();
            loss.backward();
            if let Some(max_norm) = spec.grad_clip {
                optimizer.clip_grad_norm(max_norm)?;
            }
            let lr = schedule::learning_rate(
                &spec.lr_schedule,
                base_lr,
                position.step,
                batches,
                total_steps,
            );
            optimizer.step(lr)?;

            let loss_value = loss.f_double_value(&[])?;
            if spec.fail_on_nan && !loss_value.is_finite() {
                return Err(TrainError::NonFinite {
                    loss: loss_value,
                    epoch: epoch + 1,
                    batch: position.batch + 1,
                });
            }
            let hits = match spec.task {
                Task::Classification => outputs
                    .detach()
                    .f_argmax(-1, false)?
                    .f_eq_tensor(&ys)?
                    .f_sum(Kind::Int64)?
                    .f_int64_value(&[])?,
                Task::Regression => 0,
            };
            position.loss_sum += loss_value * len as f64;
            position.correct += hits;
            position.batch += 1;
            position.step += 1;
            position.samples += len as u64;
            per_batch.report(epoch + 1, position.batch, position.samples, loss_value);

            let by_batches = policy
                .every_batches
                .is_some_and(|k| position.step.is_multiple_of(k));
            let by_time = policy
                .every_seconds
                .is_some_and(|s| last_checkpoint.elapsed().as_secs_f64() >= s);
            if (by_batches || by_time) && position.batch < batches {
                periodic_checkpoint(attempt, &vs, &optimizer, &position);
                last_checkpoint = Instant::now();
            }
        }
        let train_loss = position.loss_sum / n as f64;
        let train_accuracy = match spec.task {
            Task::Classification => position.correct as f64 / n as f64,
            Task::Regression => f64::NAN,
        };
        position.last_loss = train_loss;
        position.last_accuracy = train_accuracy;
        let (val_loss, val_metric) = match &validation {
            Some(v) => evaluate(spec.task, &net, v)?,
            None => (f64::NAN, f64::NAN),
        };
        cells.finish_epoch(
            epoch,
            EpochRecord {
                train_loss,
                train_accuracy,
                duration_ms: started.elapsed().as_millis() as u64,
                val_loss,
                val_metric,
            },
        );
        position.epoch += 1;
        position.batch = 0;
        position.loss_sum = 0.0;
        position.correct = 0;
        periodic_checkpoint(attempt, &vs, &optimizer, &position);
        last_checkpoint = Instant::now();
    }
    let weights = checkpoint::save(
        &attempt.run_dir.join("artifacts"),
        FINAL_WEIGHTS,
        &checkpoint::weight_tensors(&vs),
    )?;
    Ok(Finish::Completed {
        train_loss: position.last_loss,
        train_accuracy: position.last_accuracy,
        weights,
    })
}
