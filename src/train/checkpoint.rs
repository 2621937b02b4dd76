//! Checkpoints: everything needed to continue a run exactly where it stopped (model
//! weights, optimizer state, the position in the data) in one safetensors file,
//! written atomically: a temporary file, fsynced, renamed into place, then the
//! directory fsynced. A reader sees a whole checkpoint or none.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

/// Prefix of model weights in checkpoint and artifact files.
pub const MODEL_PREFIX: &str = "model.";

const POSITION: &str = "position";
const POSITION_LOSS: &str = "position.loss_sum";

/// Where training stands: what a checkpoint resumes from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Position {
    /// Epochs fully done (0-based index of the epoch in progress).
    pub epoch: u64,
    /// Batches done in the epoch in progress.
    pub batch: u64,
    /// Optimizer steps taken.
    pub step: u64,
    /// Examples processed since the run started.
    pub samples: u64,
    /// Sum of per-example losses in the epoch in progress.
    pub loss_sum: f64,
    /// Correct predictions in the epoch in progress.
    pub correct: i64,
    /// Mean training loss of the last finished epoch (NaN before the first).
    pub last_loss: f64,
    /// Training accuracy of the last finished epoch.
    pub last_accuracy: f64,
}

/// A file written: its absolute path, hash and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Absolute path.
    pub path: PathBuf,
    /// SHA-256 of the contents.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub bytes: u64,
}

/// A checkpoint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// libtorch could not write or parse the tensors.
    #[error("{path}: {source}")]
    Torch {
        /// The file.
        path: PathBuf,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
    /// The file is not the one that was journaled.
    #[error("{path}: SHA-256 is {actual}, the journal says {expected}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Hash journaled when it was written.
        expected: String,
        /// Hash of the file now.
        actual: String,
    },
    /// A tensor the checkpoint must hold is absent or has the wrong shape.
    #[error("{path}: {what}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        what: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file name of the checkpoint taken at optimizer step `step`.
pub fn file_name(step: u64) -> String {
    format!("ckpt-{step:012}.safetensors")
}

/// The step of a checkpoint file name made by [`file_name`].
pub fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("ckpt-")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<([u8; 32], u64), CheckpointError> {
    let mut file = fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hasher.finalize().into(), bytes))
}

/// Writes `tensors` to `dir/name` atomically and durably.
pub fn save(
    dir: &Path,
    name: &str,
    tensors: &[(String, Tensor)],
) -> Result<Saved, CheckpointError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        Tensor::write_safetensors(tensors, &tmp).map_err(|source| CheckpointError::Torch {
            path: tmp.clone(),
            source,
        })?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        let summary = sha256_file(&tmp)?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(summary)
    })();
    let (sha256, bytes) = match written {
        Ok(summary) => summary,
        Err(e) => {
            // A partial file (a full disk) would only take more space.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(Saved {
        path,
        sha256,
        bytes,
    })
}

/// Reads a checkpoint after checking it is the file that was journaled.
pub fn load(
    path: &Path,
    expected_sha256: &str,
    device: Device,
) -> Result<HashMap<String, Tensor>, CheckpointError> {
    let (sha, _) = sha256_file(path)?;
    let actual = hex::encode(sha);
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    let named = Tensor::read_safetensors(path).map_err(|source| CheckpointError::Torch {
        path: path.to_path_buf(),
        source,
    })?;
    named
        .into_iter()
        .map(|(name, t)| {
            let t = t
                .f_to_device(device)
                .map_err(|source| CheckpointError::Torch {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok((name, t))
        })
        .collect()
}

/// The position as tensors to store beside the weights.
pub fn position_tensors(position: &Position) -> Vec<(String, Tensor)> {
    let counters = [
        position.epoch as i64,
        position.batch as i64,
        position.step as i64,
        position.samples as i64,
        position.correct,
    ];
    vec![
        (POSITION.to_string(), Tensor::from_slice(&counters)),
        (
            POSITION_LOSS.to_string(),
            Tensor::from_slice(&[
                position.loss_sum,
                position.last_loss,
                position.last_accuracy,
            ]),
        ),
    ]
}

/// The position stored by [`position_tensors`].
pub fn position_from(
    path: &Path,
    named: &HashMap<String, Tensor>,
) -> Result<Position, CheckpointError> {
    let content = |what: String| CheckpointError::Content {
        path: path.to_path_buf(),
        what,
    };
    let counters = named
        .get(POSITION)
        .ok_or_else(|| content(format!("no `{POSITION}` tensor")))?;
    let loss = named
        .get(POSITION_LOSS)
        .ok_or_else(|| content(format!("no `{POSITION_LOSS}` tensor")))?;
    if counters.size() != [5] || counters.kind() != Kind::Int64 || loss.size() != [3] {
        return Err(content("position tensors have the wrong shape".into()));
    }
    let c = |i: i64| counters.int64_value(&[i]);
    Ok(Position {
        epoch: c(0).max(0) as u64,
        batch: c(1).max(0) as u64,
        step: c(2).max(0) as u64,
        samples: c(3).max(0) as u64,
        correct: c(4),
        loss_sum: loss.double_value(&[0]),
        last_loss: loss.double_value(&[1]),
        last_accuracy: loss.double_value(&[2]),
    })
}

/// Copies the weights stored under [`MODEL_PREFIX`] into the variables of `vs`; every
/// variable must be present with its shape.
pub fn restore_weights(
    path: &Path,
    vs: &tch::nn::VarStore,
    named: &HashMap<String, Tensor>,
) -> Result<(), CheckpointError> {
    let mut variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    let names: Vec<String> = names.into_iter().cloned().collect();
    tch::no_grad(|| {
        for name in names {
            let key = format!("{MODEL_PREFIX}{name}");
            let stored = named.get(&key).ok_or_else(|| CheckpointError::Content {
                path: path.to_path_buf(),
                what: format!("no weights for `{name}`"),
            })?;
            let Some(var) = variables.get_mut(&name) else {
                continue;
            };
            if stored.size() != var.size() {
                return Err(CheckpointError::Content {
                    path: path.to_path_buf(),
                    what: format!(
                        "`{name}` has shape {:?}, the model needs {:?}",
                        stored.size(),
                        var.size()
                    ),
                });
            }
            var.f_copy_(stored)
                .map_err(|source| CheckpointError::Torch {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        Ok(())
    })
}

/// The weights of `vs` as named tensors, sorted by name.
pub fn weight_tensors(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
    let mut weights: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| {
            (
                format!("{MODEL_PREFIX}{name}"),
                t.detach().to_device(Device::Cpu),
            )
        })
        .collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_a_changed_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let position = Position {
            epoch: 2,
            batch: 17,
            step: 143,
            samples: 9000,
            loss_sum: 12.5,
            correct: 4000,
            last_loss: 0.25,
            last_accuracy: 0.5,
        };
        let mut tensors = position_tensors(&position);
        tensors.push(("model.w".into(), Tensor::from_slice(&[1.0f32, 2.0, 3.0])));
        let saved = save(dir.path(), &file_name(143), &tensors).expect("save");
        assert_eq!(step_of(&file_name(143)), Some(143));
        assert!(saved.path.ends_with("ckpt-000000000143.safetensors"));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());

        let sha = hex::encode(saved.sha256);
        let named = load(&saved.path, &sha, Device::Cpu).expect("load");
        assert_eq!(
            position_from(&saved.path, &named).expect("position"),
            position
        );
        assert!(named["model.w"].equal(&Tensor::from_slice(&[1.0f32, 2.0, 3.0])));

        let mut bytes = fs::read(&saved.path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&saved.path, bytes).expect("write");
        let err = load(&saved.path, &sha, Device::Cpu).expect_err("changed");
        assert!(matches!(err, CheckpointError::Mismatch { .. }), "{err}");
    }
}
