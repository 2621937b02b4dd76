//! What a Slurm run keeps in the shared directory, and the two small files the server
//! and its worker exchange through it:
//!
//! ```text
//! SHARED/runs/RUN_ID/
//!   worker/            the worker's data directory: its own journal of the run,
//!                      checkpoints and artifacts (shared by the run's jobs, so a new
//!                      job resumes where the last one stopped)
//!   job-N/             one per Slurm job of the run
//!     job.json         what the worker runs (written by the server before sbatch)
//!     tokens.toml      the hash of the job's secret (the worker's tokens file)
//!     secret           the secret itself, 0600 (the server's bearer token)
//!     job.sh           the batch script
//!     worker.json      the worker's address, written once it listens
//!     output.log       the job's stdout and stderr
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::layout::WORKER_DIR;
use crate::domain::{RunId, RunLayout, RunSpec};

/// `SHARED/runs/RUN_ID`.
pub fn run_dir(shared: &Path, run_id: RunId) -> PathBuf {
    shared.join(RunLayout::relative(run_id))
}

/// The worker's data directory, shared by the run's jobs.
pub fn worker_data_dir(shared: &Path, run_id: RunId) -> PathBuf {
    run_dir(shared, run_id).join(WORKER_DIR)
}

/// The directory of the run's `job`-th job.
pub fn job_dir(shared: &Path, run_id: RunId, job: u32) -> PathBuf {
    run_dir(shared, run_id).join(format!("job-{job}"))
}

/// The Slurm job name of a run's job: found again by name after a crash between
/// `sbatch` and the journal.
pub fn job_name(run_id: RunId, job: u32) -> String {
    format!("runyard-{run_id}-{job}")
}

/// `job.json`: what a worker runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerJob {
    /// The run (the worker's journal knows it by the same id).
    pub run_id: RunId,
    /// Which of the run's jobs this is.
    pub job: u32,
    /// The run's spec.
    pub spec: RunSpec,
    /// The worker's data directory.
    pub data_dir: PathBuf,
    /// Nodes the job's ranks span (`nodes` of the run's spec); the worker runs on the
    /// first and starts the ranks of the others.
    #[serde(default = "one_node")]
    pub nodes: u32,
    /// Where data files may be read from (the server's data roots).
    pub data_roots: Vec<PathBuf>,
    /// Progress sampling interval, in milliseconds.
    pub tick_ms: u64,
    /// Where to register with the server (`POST {server_url}/api/v1/runs/{id}/worker`),
    /// besides `worker.json`.
    #[serde(default)]
    pub server_url: Option<String>,
    /// A sweep trial's rung end: its run pauses, with a checkpoint, once this many
    /// epochs are done, as a local trial does (the worker's journal holds no sweep
    /// to say so). `None`: it trains to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after_epochs: Option<u32>,
}

fn one_node() -> u32 {
    1
}

/// `worker.json`: where the worker of a job listens (also the body of its
/// registration with the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    /// `IP:PORT` the worker's HTTP server is bound to.
    pub address: String,
    /// The node it runs on.
    pub node: String,
    /// The worker's process id (on its node).
    pub pid: u32,
    /// Slurm's job id (`SLURM_JOB_ID`), when it runs under Slurm.
    pub job_id: Option<u64>,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// fsynced, renamed over `path`, and the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads and parses a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The batch script of a job: the worker, in place of the shell, so Slurm's signals
/// reach it.
pub fn batch_script(worker_bin: &Path, job_dir: &Path) -> String {
    format!(
        "#!/bin/sh\n# Written by the runyard server: one job of a Slurm run.\nexec {} worker --job-dir {}\n",
        shell_quote(&worker_bin.display().to_string()),
        shell_quote(&job_dir.display().to_string()),
    )
}

/// `text` in single quotes for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The node's name: Slurm's, else the host name.
pub fn node_name() -> String {
    std::env::var("SLURMD_NODENAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_script_quotes_its_paths() {
        let script = batch_script(Path::new("/opt/run yard/bin"), Path::new("/s/it's"));
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.ends_with("exec '/opt/run yard/bin' worker --job-dir '/s/it'\\''s'\n"));
    }

    #[test]
    fn atomic_writes_replace_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("worker.json");
        assert!(read_json::<Registration>(&path).expect("read").is_none());
        let registration = Registration {
            address: "10.0.0.5:4000".into(),
            node: "n1".into(),
            pid: 7,
            job_id: Some(12),
        };
        write_atomic(
            &path,
            &serde_json::to_vec(&registration).expect("json"),
            0o600,
        )
        .expect("write");
        assert_eq!(read_json(&path).expect("read"), Some(registration));
        std::fs::write(&path, b"{").expect("write");
        let err = read_json::<Registration>(&path).expect_err("bad json");
        assert!(err.to_string().contains("worker.json"), "{err}");
    }
}
