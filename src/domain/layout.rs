//! Where a run's files live: one [`RunLayout`] that every reader and writer of them
//! asks, so no other code spells a run's paths.
//!
//! ```text
//! DATA_DIR/runs/ID/          a local run's files (what deleting them removes)
//!   checkpoints/             its checkpoints
//!   logs/                    a command run's stdout and stderr
//!   ...                      its artifacts (final weights, the user's files)
//! SHARED/runs/ID/            a Slurm run's files, once it had a job (all removed
//!   job-N/                   on delete): each job's directory,
//!   worker/                  and the worker's own data directory, in which the
//!     runs/ID/...            run's files are laid out as a local run's are
//! ```
//!
//! Paths the journal records (checkpoints, artifacts) are relative to the data
//! directory the run's files are laid out in ([`RunLayout::root`]).

use std::path::{Path, PathBuf};

use super::{Run, RunId};

/// The directory of every run's files, under a data directory.
pub const RUNS_DIR: &str = "runs";

/// A run's checkpoints, in its directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// A command run's log files, in its directory.
pub const LOGS_DIR: &str = "logs";

/// A Slurm worker's data directory, in its run's shared directory.
pub const WORKER_DIR: &str = "worker";

/// Where one run's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    run_id: RunId,
    /// The data directory the run's files are laid out in.
    root: PathBuf,
    /// What deleting the run's files removes.
    files: PathBuf,
}

impl RunLayout {
    /// `runs/ID`: a run's directory relative to the data directory it is laid out in.
    pub fn relative(run_id: RunId) -> PathBuf {
        Path::new(RUNS_DIR).join(run_id.to_string())
    }

    /// A run whose files are on this server: `DATA_DIR/runs/ID`.
    pub fn local(data_dir: &Path, run_id: RunId) -> Self {
        let files = data_dir.join(Self::relative(run_id));
        Self {
            run_id,
            root: data_dir.to_path_buf(),
            files,
        }
    }

    /// The run's files as its journal says where they are: in the shared directory
    /// for a Slurm run that had a job, on this server otherwise.
    pub fn of(data_dir: &Path, run: &Run) -> Self {
        match shared_run_dir(run) {
            Some(shared) => Self {
                run_id: run.id,
                root: shared.join(WORKER_DIR),
                files: shared,
            },
            None => Self::local(data_dir, run.id),
        }
    }

    /// The data directory the run's files are laid out in (journaled paths are
    /// relative to it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run's directory: `ROOT/runs/ID`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(Self::relative(self.run_id))
    }

    /// Where its checkpoints are written.
    pub fn checkpoints(&self) -> PathBuf {
        self.dir().join(CHECKPOINTS_DIR)
    }

    /// Where a command run's stdout and stderr are written.
    pub fn logs(&self) -> PathBuf {
        self.dir().join(LOGS_DIR)
    }

    /// Where rank `rank` of a command run writes them: [`RunLayout::logs`] for rank 0
    /// (the only rank of a one-slot run), `logs/rank-N` for the others.
    pub fn rank_logs(&self, rank: u32) -> PathBuf {
        rank_logs(&self.logs(), rank)
    }

    /// What deleting the run's files removes (for a Slurm run, its whole shared
    /// directory: jobs, worker journal and all).
    pub fn files(&self) -> &Path {
        &self.files
    }
}

/// A Slurm run's directory in the shared directory (`SHARED/runs/ID`), once it had a
/// job: the parent of its job's directory.
fn shared_run_dir(run: &Run) -> Option<PathBuf> {
    let job = run.slurm.as_ref()?;
    Path::new(&job.dir).parent().map(Path::to_path_buf)
}

/// The log directory of rank `rank` under a run's log directory `logs`: `logs`
/// itself for rank 0, `logs/rank-N` for the others.
pub fn rank_logs(logs: &Path, rank: u32) -> PathBuf {
    if rank == 0 {
        logs.to_path_buf()
    } else {
        logs.join(format!("rank-{rank}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_runs_files_are_under_the_data_directory() {
        let id = RunId::new();
        let layout = RunLayout::local(Path::new("/data"), id);
        let dir = PathBuf::from(format!("/data/runs/{id}"));
        assert_eq!(layout.dir(), dir);
        assert_eq!(layout.files(), dir);
        assert_eq!(layout.checkpoints(), dir.join("checkpoints"));
        assert_eq!(layout.logs(), dir.join("logs"));
        assert_eq!(layout.root(), Path::new("/data"));
        assert_eq!(RunLayout::relative(id), PathBuf::from(format!("runs/{id}")));
    }

    #[test]
    fn a_slurm_runs_files_are_in_the_shared_directory_once_it_had_a_job() {
        use crate::domain::{Envelope, Event, State};
        let id = RunId::new();
        let mut state = State::default();
        let submitted = Event::RunSubmitted {
            name: "s".into(),
            digest: "d".into(),
            spec: "{}".into(),
        };
        state.apply(1, &Envelope::now(id, submitted));
        let before = state.run(id).expect("submitted");
        assert_eq!(
            RunLayout::of(Path::new("/data"), before),
            RunLayout::local(Path::new("/data"), id)
        );

        let job = Event::SlurmJobSubmitted {
            job_id: 7,
            job: 1,
            dir: format!("/shared/runs/{id}/job-1"),
        };
        state.apply(2, &Envelope::now(id, job));
        let layout = RunLayout::of(Path::new("/data"), state.run(id).expect("run"));
        let shared = PathBuf::from(format!("/shared/runs/{id}"));
        assert_eq!(layout.files(), shared);
        assert_eq!(layout.root(), shared.join("worker"));
        assert_eq!(layout.logs(), shared.join(format!("worker/runs/{id}/logs")));
    }
}
