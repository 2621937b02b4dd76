//! The named training thread: runs the loop off the actix arbiters, turns a panic
//! into a failure instead of a dead server, and reports how it ended exactly once.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use tch::Device;
use tokio::sync::oneshot;

use super::checkpoint::Saved;
use super::control::RunControl;
use super::data::DataRoots;
use super::progress::ProgressCells;
use super::trainer::{self, Attempt, Finish, ResumeFrom};
use crate::domain::{RunId, RunSpec};

/// How a training attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every epoch ran (a command: it exited with status 0 unasked).
    Completed {
        /// Mean training loss of the last epoch (NaN when a command reported none).
        train_loss: f64,
        /// Training accuracy of the last epoch (NaN when unknown).
        train_accuracy: f64,
        /// The final weights file; `None` for a command run, whose files are its own.
        weights: Option<Saved>,
    },
    /// Stopped at a batch boundary with a checkpoint, after a pause.
    Paused,
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

/// What the training thread of one attempt is given.
#[derive(Debug)]
pub struct TrainingJob {
    /// The run.
    pub run_id: RunId,
    /// Its spec.
    pub spec: RunSpec,
    /// The slot's device.
    pub device: Device,
    /// The attempt's progress cells.
    pub cells: Arc<ProgressCells>,
    /// The attempt's flags.
    pub control: Arc<RunControl>,
    /// `DATA_DIR/runs/ID`.
    pub run_dir: PathBuf,
    /// The checkpoint to continue from.
    pub resume: Option<ResumeFrom>,
    /// Where data files may be read from.
    pub roots: DataRoots,
}

/// Starts the training thread for one attempt.
pub fn spawn_training(job: TrainingJob) -> std::io::Result<TrainingHandle> {
    let (tx, rx) = oneshot::channel();
    let name = format!("train-{}", &job.run_id.to_string()[..8]);
    std::thread::Builder::new().name(name).spawn(move || {
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            trainer::train(&Attempt {
                spec: &job.spec,
                device: job.device,
                cells: &job.cells,
                control: &job.control,
                run_dir: job.run_dir.clone(),
                resume: job.resume.clone(),
                roots: &job.roots,
            })
        }));
        let outcome = match result {
            Ok(Ok(Finish::Completed {
                train_loss,
                train_accuracy,
                weights,
            })) => Outcome::Completed {
                train_loss,
                train_accuracy,
                weights: Some(weights),
            },
            Ok(Ok(Finish::Paused)) => Outcome::Paused,
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
    use crate::train::checkpoint;

    fn spec(epochs: u32) -> RunSpec {
        serde_json::from_value(serde_json::json!({
            "name": "t", "model": {"kind": "mlp", "hidden": [16]},
            "data": {"kind": "synthetic", "samples": 512, "features": 8, "classes": 3, "seed": 3},
            "optimizer": {"kind": "adam", "lr": 0.01}, "epochs": epochs, "batch_size": 32, "seed": 5
        }))
        .expect("spec")
    }

    fn job(spec: RunSpec, dir: &std::path::Path, resume: Option<ResumeFrom>) -> TrainingJob {
        let cells = Arc::new(ProgressCells::new(u64::from(spec.epochs)));
        TrainingJob {
            run_id: RunId::new(),
            spec,
            device: Device::Cpu,
            cells,
            control: Arc::new(RunControl::default()),
            run_dir: dir.to_path_buf(),
            resume,
            roots: DataRoots::new([dir.to_path_buf()]),
        }
    }

    #[test]
    fn a_small_mlp_learns_and_reports_every_epoch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = job(spec(5), dir.path(), None);
        let cells = Arc::clone(&job.cells);
        let outcome = spawn_training(job)
            .expect("spawn")
            .outcome
            .blocking_recv()
            .expect("outcome");
        let Outcome::Completed {
            train_accuracy,
            weights,
            ..
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        let weights = weights.expect("a training run saves its weights");
        assert!(weights.path.ends_with("artifacts/final.safetensors"));
        let first = cells.finished_epoch(0).expect("epoch 1");
        let last = cells.finished_epoch(4).expect("epoch 5");
        assert!(last.train_loss < first.train_loss, "{first:?} -> {last:?}");
        assert!(train_accuracy > 0.6, "accuracy {train_accuracy}");
        let s = cells.snapshot();
        assert_eq!((s.epoch, s.batch, s.samples), (5, 16, 5 * 512));
        let mark = cells.latest_checkpoint().expect("epoch-end checkpoints");
        assert_eq!((mark.epoch, mark.batch, mark.step), (5, 0, 80));
    }

    #[test]
    fn a_cancelled_run_stops_at_a_batch_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = job(spec(1000), dir.path(), None);
        let cells = Arc::clone(&job.cells);
        job.control.cancel();
        let outcome = spawn_training(job).expect("spawn").outcome.blocking_recv();
        assert_eq!(outcome.expect("outcome"), Outcome::Cancelled);
        assert_eq!(cells.snapshot().samples, 0);
    }

    #[test]
    fn a_non_finite_loss_fails_the_attempt_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows: String = (0..64).map(|i| format!("{i},3e38\n")).collect();
        std::fs::write(dir.path().join("huge.csv"), rows).expect("csv");
        let spec: RunSpec = serde_json::from_value(serde_json::json!({
            "name": "nan", "task": "regression", "model": {"kind": "mlp", "hidden": [4]},
            "data": {"kind": "csv", "path": "huge.csv"},
            "epochs": 1, "batch_size": 16
        }))
        .expect("spec");
        let outcome = spawn_training(job(spec, dir.path(), None))
            .expect("spawn")
            .outcome
            .blocking_recv()
            .expect("outcome");
        let Outcome::Failed(reason) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            reason.contains("loss is inf at epoch 1, batch 1"),
            "{reason}"
        );
    }

    #[test]
    fn a_pause_checkpoints_at_the_next_batch_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = job(spec(3), dir.path(), None);
        let cells = Arc::clone(&first.cells);
        first.control.pause();
        let outcome = spawn_training(first)
            .expect("spawn")
            .outcome
            .blocking_recv();
        assert_eq!(outcome.expect("outcome"), Outcome::Paused);
        let mark = cells.latest_checkpoint().expect("checkpoint at pause");
        assert_eq!((mark.epoch, mark.batch, mark.step), (0, 0, 0));
    }

    #[test]
    fn a_run_paused_at_the_end_of_an_epoch_resumes_to_the_weights_of_one_never_paused() {
        let finish = |job: TrainingJob| {
            spawn_training(job)
                .expect("spawn")
                .outcome
                .blocking_recv()
                .expect("outcome")
        };
        let whole = tempfile::tempdir().expect("tempdir");
        let Outcome::Completed {
            weights: Some(reference),
            ..
        } = finish(job(spec(3), whole.path(), None))
        else {
            panic!("the reference run did not complete");
        };
        // Stopped after its first epoch, as a sweep trial at the end of a rung.
        let dir = tempfile::tempdir().expect("tempdir");
        let first = job(spec(3), dir.path(), None);
        let cells = Arc::clone(&first.cells);
        first.control.pause_after_epochs(1);
        assert_eq!(finish(first), Outcome::Paused);
        let mark = cells
            .latest_checkpoint()
            .expect("a checkpoint at the rung's end");
        assert_eq!((mark.epoch, mark.batch, mark.step), (1, 0, 16));
        assert!(cells.finished_epoch(0).is_some() && cells.finished_epoch(1).is_none());
        let path = dir
            .path()
            .join("checkpoints")
            .join(checkpoint::file_name(16));
        let (sha, _) = checkpoint::sha256_file(&path).expect("the checkpoint");
        // Promoted: resumed with no stop asked for, to the end.
        let Outcome::Completed {
            weights: Some(resumed),
            ..
        } = finish(job(
            spec(3),
            dir.path(),
            Some(ResumeFrom {
                path,
                sha256: hex::encode(sha),
            }),
        ))
        else {
            panic!("the resumed run did not complete");
        };
        assert_eq!(resumed.sha256, reference.sha256, "bit-identical");
    }

    #[test]
    fn a_run_resumed_mid_epoch_ends_bit_identical_to_an_uninterrupted_one() {
        let whole = tempfile::tempdir().expect("tempdir");
        let mut every_7 = spec(3);
        every_7.checkpoint.every_batches = Some(7);
        // Dropout too: its masks must come out the same after the resume.
        every_7.model = serde_json::from_value(serde_json::json!(
            {"kind": "mlp", "hidden": [16], "dropout": 0.2}
        ))
        .expect("model");
        let finish = |job: TrainingJob| match spawn_training(job)
            .expect("spawn")
            .outcome
            .blocking_recv()
            .expect("outcome")
        {
            Outcome::Completed {
                weights: Some(weights),
                ..
            } => weights,
            other => panic!("did not complete: {other:?}"),
        };
        let reference = finish(job(every_7.clone(), whole.path(), None));

        // Step 21 is in the middle of the second epoch (16 batches per epoch).
        let path = whole
            .path()
            .join("checkpoints")
            .join(checkpoint::file_name(21));
        let (sha, _) = checkpoint::sha256_file(&path).expect("checkpoint at step 21");
        let resumed_dir = tempfile::tempdir().expect("tempdir");
        let resumed = finish(job(
            every_7,
            resumed_dir.path(),
            Some(ResumeFrom {
                path,
                sha256: hex::encode(sha),
            }),
        ));
        assert_eq!(
            resumed.sha256, reference.sha256,
            "final weights are bit-identical"
        );
    }
}
