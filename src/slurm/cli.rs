//! Slurm's own commands, run as child processes: `sbatch --parsable` to submit,
//! `scontrol show job` (then `squeue`) for a job's state, `scancel` to signal or end
//! a job. Blocking: callers run them off the async runtime's threads.
//!
//! A submission, a search for a job by name and a cancel are each an exported span
//! (target `runyard::work`, see `telemetry::work`, which this layer sits below),
//! under whatever span the caller entered (the executor's `slurm.submit`). A job's
//! state, asked every poll, has none: one per poll would drown the trace.

use std::path::Path;
use std::process::Command;

/// Why a Slurm command failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SlurmError {
    /// Slurm answered and refused (bad partition, bad gres, ...): its message.
    #[error("{0}")]
    Refused(String),
    /// The command could not be run or did not answer (no Slurm on this machine,
    /// the controller down): worth trying again.
    #[error("{0}")]
    Unavailable(String),
}

/// A job as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `NODE_FAIL`, ...
    pub state: String,
    /// Why it is in that state (`Priority`, `Resources`, `None`, ...).
    pub reason: String,
    /// Its nodes, once it has some.
    pub nodes: Option<String>,
}

impl JobInfo {
    /// Whether the job is over (Slurm will not run it any more).
    pub fn ended(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
                | "RESV_DEL_HOLD"
        )
    }
}

/// What `sbatch` is given for one job.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    /// The batch script.
    pub script: &'a Path,
    /// `--job-name`.
    pub name: &'a str,
    /// `--output` (stdout and stderr of the script).
    pub output: &'a Path,
    /// `--chdir`.
    pub dir: &'a Path,
    /// `--partition`, `--gres`, `--time`, `--account`, `--qos`, when set.
    pub partition: Option<&'a str>,
    /// See `partition`.
    pub gres: Option<&'a str>,
    /// See `partition`.
    pub time_limit: Option<&'a str>,
    /// See `partition`.
    pub account: Option<&'a str>,
    /// See `partition`.
    pub qos: Option<&'a str>,
    /// `--nodes`, and with `ranks_per_node` `--ntasks-per-node`, when either is over 1.
    pub nodes: u32,
    /// See `nodes`.
    pub ranks_per_node: u32,
    /// More arguments, from the configuration.
    pub extra: &'a [String],
}

/// Submits a job with `sbatch --parsable`; answers its id.
pub fn sbatch(submission: &Submission<'_>) -> Result<u64, SlurmError> {
    let span = tracing::debug_span!(
        target: "runyard::work",
        "slurm.sbatch",
        runyard.slurm.job_name = submission.name,
        runyard.slurm.nodes = i64::from(submission.nodes),
        runyard.slurm.job_id = tracing::field::Empty,
        runyard.outcome = tracing::field::Empty,
    );
    let _entered = span.enter();
    let submitted = submit(submission);
    match &submitted {
        Ok(job_id) => {
            span.record("runyard.slurm.job_id", *job_id as i64);
            span.record("runyard.outcome", "submitted");
        }
        Err(e) => {
            span.record("runyard.outcome", outcome(e));
        }
    }
    submitted
}

/// A failure, as a span's `runyard.outcome`.
fn outcome(e: &SlurmError) -> &'static str {
    match e {
        SlurmError::Refused(_) => "refused",
        SlurmError::Unavailable(_) => "unavailable",
    }
}

fn submit(submission: &Submission<'_>) -> Result<u64, SlurmError> {
    let mut command = Command::new("sbatch");
    // Retries are runyard's (a new job from the checkpoint, counted): Slurm must not
    // requeue the job itself after a node failure.
    command
        .arg("--parsable")
        .arg("--no-requeue")
        .arg(format!("--job-name={}", submission.name))
        .arg(format!("--output={}", submission.output.display()))
        .arg(format!("--chdir={}", submission.dir.display()));
    let options = [
        ("--partition", submission.partition),
        ("--gres", submission.gres),
        ("--time", submission.time_limit),
        ("--account", submission.account),
        ("--qos", submission.qos),
    ];
    for (flag, value) in options {
        if let Some(value) = value {
            command.arg(format!("{flag}={value}"));
        }
    }
    if submission.nodes > 1 || submission.ranks_per_node > 1 {
        // One task per rank: Slurm places the job, or refuses a count it cannot.
        command
            .arg(format!("--nodes={}", submission.nodes))
            .arg(format!("--ntasks-per-node={}", submission.ranks_per_node));
    }
    command.args(submission.extra).arg(submission.script);
    let output = run(&mut command, "sbatch")?;
    if !output.status.success() {
        return Err(SlurmError::Refused(message(&output, "sbatch")));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    // `JOBID` or `JOBID;CLUSTER`.
    let id = stdout.trim().split(';').next().unwrap_or_default();
    id.parse()
        .map_err(|_| SlurmError::Unavailable(format!("sbatch answered {stdout:?}, not a job id")))
}

/// The state of a job: `scontrol show job` (which knows ended jobs for
/// `MinJobAge`), then `squeue`. `Ok(None)`: Slurm no longer knows the job.
pub fn job_info(job_id: u64) -> Result<Option<JobInfo>, SlurmError> {
    let output = run(
        Command::new("scontrol")
            .args(["show", "job", "--oneliner"])
            .arg(job_id.to_string()),
        "scontrol",
    );
    match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let field = |name: &str| {
                text.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            if let Some(state) = field("JobState") {
                return Ok(Some(JobInfo {
                    state,
                    reason: field("Reason").unwrap_or_else(|| "None".into()),
                    nodes: field("NodeList").filter(|n| n != "(null)" && !n.is_empty()),
                }));
            }
        }
        Ok(output) => {
            let message = message(&output, "scontrol");
            if message.contains("Invalid job id") {
                return Ok(None);
            }
        }
        Err(_) => {}
    }
    // `scontrol` failed in another way: ask `squeue`, which lists live jobs.
    let output = run(
        Command::new("squeue")
            .args(["--noheader", "--format=%T|%r|%N", "--jobs"])
            .arg(job_id.to_string()),
        "squeue",
    )?;
    if !output.status.success() {
        let message = message(&output, "squeue");
        if message.contains("Invalid job id") {
            return Ok(None);
        }
        return Err(SlurmError::Unavailable(message));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(line) = text.lines().find(|l| !l.trim().is_empty()) else {
        return Ok(None);
    };
    let mut parts = line.trim().split('|');
    Ok(Some(JobInfo {
        state: parts.next().unwrap_or_default().to_string(),
        reason: parts.next().unwrap_or("None").to_string(),
        nodes: parts.next().filter(|n| !n.is_empty()).map(str::to_owned),
    }))
}

/// The id of a live job of this name, if Slurm has one: a job submitted just before a
/// crash, whose id was never journaled.
pub fn find_job(name: &str) -> Result<Option<u64>, SlurmError> {
    let span = tracing::debug_span!(
        target: "runyard::work",
        "slurm.find_job",
        runyard.slurm.job_name = name,
        runyard.slurm.job_id = tracing::field::Empty,
        runyard.outcome = tracing::field::Empty,
    );
    let _entered = span.enter();
    let found = find(name);
    match &found {
        Ok(Some(job_id)) => {
            span.record("runyard.slurm.job_id", *job_id as i64);
            span.record("runyard.outcome", "found");
        }
        Ok(None) => {
            span.record("runyard.outcome", "none");
        }
        Err(e) => {
            span.record("runyard.outcome", outcome(e));
        }
    }
    found
}

fn find(name: &str) -> Result<Option<u64>, SlurmError> {
    let output = run(
        Command::new("squeue")
            .args(["--noheader", "--format=%i"])
            .arg(format!("--name={name}")),
        "squeue",
    )?;
    if !output.status.success() {
        return Err(SlurmError::Unavailable(message(&output, "squeue")));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .find_map(|id| id.parse().ok()))
}

/// `scancel`: with `signal`, sends it to the job's batch script and steps
/// (`--full`); without, ends the job.
pub fn scancel(job_id: u64, signal: Option<&str>) -> Result<(), SlurmError> {
    let span = tracing::debug_span!(
        target: "runyard::work",
        "slurm.scancel",
        runyard.slurm.job_id = job_id as i64,
        runyard.slurm.signal = signal.unwrap_or("none"),
        runyard.outcome = tracing::field::Empty,
    );
    let _entered = span.enter();
    let cancelled = cancel(job_id, signal);
    span.record(
        "runyard.outcome",
        cancelled.as_ref().map_or_else(outcome, |()| "sent"),
    );
    cancelled
}

fn cancel(job_id: u64, signal: Option<&str>) -> Result<(), SlurmError> {
    let mut command = Command::new("scancel");
    if let Some(signal) = signal {
        command.arg(format!("--signal={signal}")).arg("--full");
    }
    command.arg(job_id.to_string());
    let output = run(&mut command, "scancel")?;
    if output.status.success() {
        Ok(())
    } else {
        Err(SlurmError::Refused(message(&output, "scancel")))
    }
}

fn run(command: &mut Command, name: &str) -> Result<std::process::Output, SlurmError> {
    command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| SlurmError::Unavailable(format!("cannot run {name}: {e}")))
}

/// Slurm's message, in one line: the lines of stderr (else stdout) joined.
fn message(output: &std::process::Output, name: &str) -> String {
    let text = if output.stderr.is_empty() {
        &output.stdout
    } else {
        &output.stderr
    };
    let joined = String::from_utf8_lossy(text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if joined.is_empty() {
        format!("{name} exited with {}", output.status)
    } else {
        joined
    }
}
