//! The named training thread: runs the loop off the actix arbiters, turns a panic
//! into a failure instead of a dead server, and reports how it ended exactly once.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use tch::Device;
use tokio::sync::oneshot;

use super::control::RunControl;
use super::progress::ProgressCells;
use super::trainer::{self, Finish};
use crate::domain::{RunId, RunSpec};

/// How a training attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every epoch ran.
    Completed {
        /// Mean training loss of the last epoch.
        train_loss: f64,
        /// Training accuracy of the last epoch.
        train_accuracy: f64,
    },
    /// Stopped at a batch boundary after a cancel.
    Cancelled,
    /// Stopped with an error or a panic; the message says which.
    Failed(String),
}

/// The running thread: its outcome arrives once, when it ends.
#[derive(Debug)]
pub struct TrainingHandle {
    /// Receives the outcome when the thread ends.
    pub outcome: oneshot::Receiver<Outcome>,
}

/// Starts the training thread for one attempt of `run_id`.
pub fn spawn_training(
    run_id: RunId,
    spec: RunSpec,
    device: Device,
    cells: Arc<ProgressCells>,
    control: Arc<RunControl>,
) -> std::io::Result<TrainingHandle> {
    let (tx, rx) = oneshot::channel();
    let name = format!("train-{}", &run_id.to_string()[..8]);
    std::thread::Builder::new().name(name).spawn(move || {
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            trainer::train(&spec, device, &cells, &control)
        }));
        let outcome = match result {
            Ok(Ok(Finish::Completed {
                train_loss,
                train_accuracy,
            })) => Outcome::Completed {
                train_loss,
                train_accuracy,
            },
            Ok(Ok(Finish::Cancelled)) => Outcome::Cancelled,
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(panic) => Outcome::Failed(format!(
                "training thread panicked: {}",
                panic_message(&panic)
            )),
        };
        // The run actor may be gone (server stopping); nothing else to tell then.
        let _ = tx.send(outcome);
    })?;
    Ok(TrainingHandle { outcome: rx })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.lines().next().unwrap_or_default().to_string()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(epochs: u32) -> RunSpec {
        serde_json::from_value(serde_json::json!({
            "name": "t", "model": {"kind": "mlp", "hidden": [16]},
            "data": {"kind": "synthetic", "samples": 512, "features": 8, "classes": 3, "seed": 3},
            "optimizer": {"kind": "adam", "lr": 0.01}, "epochs": epochs, "batch_size": 32, "seed": 5
        }))
        .expect("spec")
    }

    #[test]
    fn a_small_mlp_learns_and_reports_every_epoch() {
        let spec = spec(5);
        let cells = Arc::new(ProgressCells::new(5, spec.batches_per_epoch(), 512));
        let control = Arc::new(RunControl::default());
        let handle = spawn_training(RunId::new(), spec, Device::Cpu, Arc::clone(&cells), control)
            .expect("spawn");
        let outcome = handle.outcome.blocking_recv().expect("outcome");
        let Outcome::Completed { train_accuracy, .. } = outcome else {
            panic!("{outcome:?}");
        };
        let first = cells.finished_epoch(0).expect("epoch 1");
        let last = cells.finished_epoch(4).expect("epoch 5");
        assert!(last.train_loss < first.train_loss, "{first:?} -> {last:?}");
        assert!(train_accuracy > 0.6, "accuracy {train_accuracy}");
        let s = cells.snapshot();
        assert_eq!((s.epoch, s.batch, s.samples), (5, 16, 5 * 512));
    }

    #[test]
    fn a_cancelled_run_stops_at_a_batch_boundary() {
        let spec = spec(1000);
        let cells = Arc::new(ProgressCells::new(1000, spec.batches_per_epoch(), 512));
        let control = Arc::new(RunControl::default());
        control.cancel();
        let handle = spawn_training(RunId::new(), spec, Device::Cpu, Arc::clone(&cells), control)
            .expect("spawn");
        assert_eq!(
            handle.outcome.blocking_recv().expect("outcome"),
            Outcome::Cancelled
        );
        assert_eq!(cells.snapshot().samples, 0);
    }
}
