//! Deleting a run's files: the one use case behind `DELETE /api/v1/runs/{id}/artifacts`
//! and the start-up sweep that finishes a deletion a stop interrupted.
//!
//! `ArtifactsDeleted` is journaled before anything is removed: a failed append leaves
//! every file in place, and a crash after it leaves files that the next start removes
//! ([`remove_deleted_run_files`]). Removing first could lose files that the journal
//! still lists as downloadable. Where the files are is [`RunLayout::files`], for a
//! local run and a Slurm run alike.

use std::path::{Path, PathBuf};

use actix::Addr;

use super::journal::{answered, Append, AppendError, Journal, JournalReader};
use crate::domain::{Event, Rejection, RunId, RunLayout, State};

/// Why a run's files were not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No run has this id.
    #[error("no run {0}")]
    UnknownRun(RunId),
    /// The run has not ended, still holds a slot, or its Slurm job is still on.
    #[error(
        "run {id} {what}; only the files of a completed, failed or cancelled run can be deleted"
    )]
    NotEnded {
        /// The run.
        id: RunId,
        /// What it is doing, e.g. `is running`.
        what: String,
    },
    /// The files could not be counted; nothing was journaled or removed.
    #[error("cannot read {}: {error}; nothing was deleted", dir.display())]
    Read {
        /// The run's files.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The journal refused the deletion.
    #[error("{0}")]
    Rejected(Rejection),
    /// The journal could not take the deletion; nothing was removed.
    #[error(transparent)]
    Journal(AppendError),
    /// The deletion is journaled but the files could not all be removed.
    #[error("the deletion is journaled but removing {} failed: {error}; it is retried by the next DELETE and at the next start", dir.display())]
    Remove {
        /// The run's files.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// Deletes the files of ended run `id` under `data_dir`: counts them, journals
/// `ArtifactsDeleted` with the count, then removes them. Deleting again journals
/// nothing and removes anything left behind.
pub async fn delete_run_files(
    journal: &Addr<Journal>,
    reader: &JournalReader,
    data_dir: &Path,
    id: RunId,
) -> Result<(), DeleteError> {
    let (already, dir) = {
        let fold = reader.state();
        let run = fold.run(id).ok_or(DeleteError::UnknownRun(id))?;
        let job_running = run.slurm.as_ref().is_some_and(|job| job.ended.is_none());
        if !run.state.is_terminal() || run.slot.is_some() || job_running {
            let what = if run.state.is_terminal() {
                "is still stopping".to_string()
            } else {
                format!("is {}", run.state.name())
            };
            return Err(DeleteError::NotEnded { id, what });
        }
        let dir = RunLayout::of(data_dir, run).files().to_path_buf();
        (run.files_deleted.is_some(), dir)
    };
    if !already {
        let counted = dir.clone();
        let (files, bytes) = blocking(move || count_files(&counted))
            .await
            .map_err(|error| DeleteError::Read {
                dir: dir.clone(),
                error,
            })?;
        let appended = answered(
            journal
                .send(Append::one(id, Event::ArtifactsDeleted { files, bytes }))
                .await,
        );
        match appended {
            Ok(_) => {}
            // A deletion racing this one journaled it first: the same outcome.
            Err(AppendError::Rejected(_))
                if reader
                    .state()
                    .run(id)
                    .is_some_and(|r| r.files_deleted.is_some()) => {}
            Err(AppendError::Rejected(rejection)) => return Err(DeleteError::Rejected(rejection)),
            Err(other) => return Err(DeleteError::Journal(other)),
        }
    }
    let removed = dir.clone();
    blocking(move || remove_run_dir(&removed))
        .await
        .map_err(|error| DeleteError::Remove { dir, error })
}

/// Removes what is left of the files of runs whose `ArtifactsDeleted` is journaled
/// (the server stopped between the event and the removal). Answers how many run
/// directories were removed; a failure is logged and left for the next start.
pub fn remove_deleted_run_files(data_dir: &Path, state: &State) -> usize {
    let mut removed = 0;
    for run in state.runs().filter(|r| r.files_deleted.is_some()) {
        let dir = RunLayout::of(data_dir, run).files().to_path_buf();
        if !dir.exists() {
            continue;
        }
        match remove_run_dir(&dir) {
            Ok(()) => {
                tracing::info!(run_id = %run.id, dir = %dir.display(), "removed the files of a run deleted before the last stop");
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(run_id = %run.id, dir = %dir.display(), error = %e, "cannot remove a deleted run's files; retried at the next start")
            }
        }
    }
    removed
}

/// Runs file work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| std::io::Error::other(format!("file task failed: {e}")))?
}

/// Files under `dir` and their total size; a missing directory holds none.
fn count_files(dir: &Path) -> std::io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let entries = match std::fs::read_dir(&next) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    Ok((files, bytes))
}

/// Removes a run's directory; one already gone is fine.
fn remove_run_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Envelope;

    #[test]
    fn files_of_runs_journaled_as_deleted_are_removed_at_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (deleted, kept) = (RunId::new(), RunId::new());
        let mut events = Vec::new();
        for id in [deleted, kept] {
            let submitted = Event::RunSubmitted {
                name: "n".into(),
                digest: id.to_string(),
                spec: "{}".into(),
            };
            events.push(Envelope::now(id, submitted));
            events.push(Envelope::now(
                id,
                Event::RunCancelled {
                    reason: "test".into(),
                },
            ));
            let files = dir.path().join(RunLayout::relative(id));
            std::fs::create_dir_all(files.join("checkpoints")).expect("dir");
            std::fs::write(files.join("checkpoints/ckpt-1.safetensors"), b"x").expect("file");
        }
        events.push(Envelope::now(
            deleted,
            Event::ArtifactsDeleted { files: 1, bytes: 1 },
        ));
        let state = State::from_events(events.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)));
        assert!(state.run(deleted).and_then(|r| r.files_deleted).is_some());
        assert_eq!(remove_deleted_run_files(dir.path(), &state), 1);
        assert!(!dir.path().join(RunLayout::relative(deleted)).exists());
        assert!(dir.path().join(RunLayout::relative(kept)).exists());
        assert_eq!(
            remove_deleted_run_files(dir.path(), &state),
            0,
            "nothing left"
        );
    }

    #[test]
    fn files_are_counted_below_every_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("dirs");
        std::fs::write(dir.path().join("a/one"), b"123").expect("file");
        std::fs::write(dir.path().join("a/b/two"), b"45").expect("file");
        assert_eq!(count_files(dir.path()).expect("counted"), (2, 5));
        assert_eq!(count_files(&dir.path().join("gone")).expect("none"), (0, 0));
        remove_run_dir(&dir.path().join("a")).expect("removed");
        remove_run_dir(&dir.path().join("a")).expect("already gone is fine");
    }
}
