//! The training loop: real forward, backward and optimizer steps with tch, progress
//! written to the run's cells, the cancel flag read once per batch.

use std::sync::Mutex;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::control::RunControl;
use super::data::Dataset;
use super::model;
use super::progress::{EpochRecord, ProgressCells};
use crate::domain::spec::{OptimizerSpec, RunSpec};

/// Torch's parameter initialisation draws from one process-wide generator; seeding it
/// and building the model happen under this lock so concurrent runs stay reproducible.
static TORCH_INIT: Mutex<()> = Mutex::new(());

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// libtorch refused an operation (shape, memory, device).
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

/// How a training attempt ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finish {
    /// Every epoch ran; the figures are the last epoch's.
    Completed {
        /// Mean training loss of the last epoch.
        train_loss: f64,
        /// Training accuracy of the last epoch.
        train_accuracy: f64,
    },
    /// The cancel flag was seen at a batch boundary.
    Cancelled,
}

/// Trains `spec` on `device`, reporting into `cells`, until done or cancelled.
pub fn train(
    spec: &RunSpec,
    device: Device,
    cells: &ProgressCells,
    control: &RunControl,
) -> Result<Finish, TrainError> {
    let data = Dataset::load(&spec.data, device)?;
    let vs = nn::VarStore::new(device);
    let net = {
        let _guard = TORCH_INIT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(spec.seed as i64);
        model::build(&vs.root(), &spec.model, data.feature_count(), data.classes)
    };
    let mut optimizer = match spec.optimizer {
        OptimizerSpec::Sgd(ref sgd) => nn::Sgd {
            momentum: sgd.momentum,
            ..Default::default()
        }
        .build(&vs, sgd.lr)?,
        OptimizerSpec::Adam(ref adam) | OptimizerSpec::Adamw(ref adam) => {
            nn::Adam::default().build(&vs, adam.lr)?
        }
    };

    let n = data.len();
    let batch_size = i64::from(spec.batch_size);
    let batches = cells.batches_per_epoch();
    let mut order: Vec<i64> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut samples_seen: u64 = 0;
    let mut last = (f64::NAN, 0.0);

    for epoch in 0..u64::from(spec.epochs) {
        let started = Instant::now();
        order.shuffle(&mut rng);
        let permutation = Tensor::f_from_slice(&order)?.f_to_device(device)?;
        // Sums stay on the device so a batch does not wait for the host to read them.
        let mut loss_sum = Tensor::f_zeros([], (Kind::Double, device))?;
        let mut correct = Tensor::f_zeros([], (Kind::Int64, device))?;
        for batch in 0..batches {
            if control.is_cancelled() {
                return Ok(Finish::Cancelled);
            }
            let start = batch as i64 * batch_size;
            let len = batch_size.min(n - start);
            let index = permutation.f_narrow(0, start, len)?;
            let xs = data.features.f_index_select(0, &index)?;
            let ys = data.labels.f_index_select(0, &index)?;
            let logits = model::forward(&net, &xs);
            let loss = logits.f_cross_entropy_loss::<Tensor>(
                &ys,
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            )?;
            optimizer.backward_step(&loss);
            let loss = loss.detach();
            loss_sum = loss_sum.f_add(&loss.f_mul_scalar(len as f64)?)?;
            let hits = logits
                .detach()
                .f_argmax(-1, false)?
                .f_eq_tensor(&ys)?
                .f_sum(Kind::Int64)?;
            correct = correct.f_add(&hits)?;
            samples_seen += len as u64;
            cells.report(
                epoch + 1,
                batch + 1,
                samples_seen,
                loss.f_double_value(&[])?,
            );
        }
        let train_loss = loss_sum.f_double_value(&[])? / n as f64;
        let train_accuracy = correct.f_int64_value(&[])? as f64 / n as f64;
        last = (train_loss, train_accuracy);
        cells.finish_epoch(
            epoch,
            EpochRecord {
                train_loss,
                train_accuracy,
                duration_ms: started.elapsed().as_millis() as u64,
            },
        );
    }
    Ok(Finish::Completed {
        train_loss: last.0,
        train_accuracy: last.1,
    })
}
