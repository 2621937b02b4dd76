//! Command runs: one attempt of a `"kind": "command"` run as child processes, with
//! the same lifecycle as a training thread. [`spawn_command`] gives back the same
//! [`TrainingHandle`] (its [`Outcome`] arrives once), so the run actor only picks
//! which to start.
//!
//! An attempt is one process per claimed slot: a run on one slot is one process, a
//! run on `k` slots is a `torch.distributed` job of `k` ranks on this machine, each
//! rank a process group of its own with the variables `torchrun` sets (see
//! [`super::protocol`]). The ranks live and end together: the first to end
//! abnormally unasked has the others stopped, and is the one the failure names.
//!
//! Per attempt there are these threads, none on an actix arbiter: the supervisor
//! (starts every rank, turns cancel, pause, timeout and stall requests into signals
//! to every rank's process group, ends the ranks together), a waiter per rank that
//! blocks in `waitid` until its rank exits (so endings are seen in the order they
//! happen), rank 0's progress reader (see [`super::protocol`], which documents what
//! the command sees and writes) with the checkpoint hasher it starts on the first
//! checkpoint, a drain of each other rank's pipe, and one pump each for every rank's
//! stdout and stderr into its log files (see [`super::logfile`]).
//!
//! The supervisor both signals and reaps the processes, and its waiters see them exit
//! without reaping them (`WNOWAIT`): while a rank has not been reaped its pid, and so
//! its process group id, cannot be given to another process, so a signal never
//! reaches a stranger.
//!
//! [`end_orphans`] is the other half of crash safety: at start, before anything
//! resumes, it ends the process groups that a killed server's commands left running.
//! It knows them from `CommandStarted` and `RankStarted`, which the run actor
//! journals in one append at its first tick after the start (`train.tick_ms`). A
//! server killed within that tick leaves commands the journal does not name; every
//! command carries its run's id in `RUNYARD_RUN_ID`, so those are found by their
//! environment instead ([`end_unjournaled`]).

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::control::RunControl;
use super::logfile::{attempt_header, RotatingLog, LOGS_DIR, STDERR_LOG, STDOUT_LOG};
use super::progress::ProgressCells;
use super::protocol::{self, CommandEnd, CommandFeed, ReaderHandle, ReaderSetup, ReaderStage};
use super::thread::{Outcome, TrainingHandle};
use crate::domain::spec::SpecDuration;
use crate::domain::state::CommandProcess;
use crate::domain::{Event, RunId, RunSpec, State};

/// How often the supervisor looks at the run's flags and the process.
pub const POLL: Duration = Duration::from_millis(25);

/// How long a rank that `SIGTERM` ended unasked, or the `srun` step of a Slurm job's
/// other nodes that ended abnormally, waits for the stop that usually comes with it
/// before the attempt fails on it: Slurm ending a job signals the worker and its
/// commands at once (the worker turns its signal into a pause), and a lost node ends
/// `srun` ("Node failure") as the job's end reaches the worker, either one first.
const TERM_WAIT: Duration = Duration::from_secs(2);

/// Lines of stderr kept for a failure's message.
pub const STDERR_TAIL_LINES: usize = 50;

/// The longest stderr line kept for a failure's message, in bytes.
const STDERR_LINE_BYTES: usize = 1000;

/// How long the supervisor waits, once the process group is gone, for the pipes to
/// be read to their end (a process that left the group may hold them open).
const PIPE_WAIT: Duration = Duration::from_secs(5);

/// How long a killed process group may take to go before the attempt ends anyway.
const GROUP_WAIT: Duration = Duration::from_secs(5);

/// Variables the server sets; the server's own values of them are never passed on.
const SERVER_VARS: [&str; 9] = [
    "RUNYARD_RUN_ID",
    "RUNYARD_ATTEMPT",
    "RUNYARD_DEVICE",
    "RUNYARD_CHECKPOINT_DIR",
    "RUNYARD_RESUME_FROM",
    "RUNYARD_PROGRESS_FD",
    "RUNYARD_PROTOCOL",
    "RUNYARD_PAUSE",
    "CUDA_VISIBLE_DEVICES",
];

/// The `torch.distributed` variables the server sets on each rank of a run with
/// more than one slot (as `torchrun` does); the server's own values of them are
/// never passed on.
const RANK_VARS: [&str; 8] = [
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
];

/// The `[runs]` settings a command attempt needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSettings {
    /// Size at which a log file is rotated (`runs.log_max_bytes`).
    pub log_max_bytes: u64,
    /// Rotated files kept per stream (`runs.log_keep`).
    pub log_keep: u32,
    /// Nodes a run's ranks span: 1 but in the Slurm worker of a job on several nodes,
    /// whose other nodes' ranks it starts with `srun` ([`StartOptions::nodes`]).
    ///
    /// [`StartOptions::nodes`]: crate::startup::StartOptions::nodes
    pub nodes: u32,
    /// This node's address, which the other nodes' ranks reach rank 0 at
    /// (`MASTER_ADDR`); loopback when `None`.
    pub address: Option<std::net::IpAddr>,
    /// In a Slurm worker, a sweep trial's rung end ([`StartOptions::rung_end`]): its
    /// run, tch or command, pauses once this many epochs are done.
    ///
    /// [`StartOptions::rung_end`]: crate::startup::StartOptions::rung_end
    pub rung_end: Option<u32>,
}

impl Default for CommandSettings {
    fn default() -> Self {
        Self::from(&crate::config::RunsConfig::default())
    }
}

impl From<&crate::config::RunsConfig> for CommandSettings {
    fn from(runs: &crate::config::RunsConfig) -> Self {
        Self {
            log_max_bytes: runs.log_max_bytes,
            log_keep: runs.log_keep,
            nodes: 1,
            address: None,
            rung_end: None,
        }
    }
}

/// The checkpoint an attempt continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResume {
    /// Its path (`RUNYARD_RESUME_FROM` is made absolute from it).
    pub path: PathBuf,
    /// Epochs fully done when it was taken.
    pub epoch: u32,
    /// Its step.
    pub step: u64,
}

/// What the supervisor of one attempt is given.
#[derive(Debug)]
pub struct CommandJob {
    /// The run.
    pub run_id: RunId,
    /// The attempt number (1-based).
    pub attempt: u32,
    /// The run's spec (`argv`, `cwd`, `env`, `timeout`, `grace`).
    pub spec: RunSpec,
    /// The device of each claimed slot: one rank per slot, rank 0 on the first.
    pub devices: Vec<tch::Device>,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// `DATA_DIR/runs/ID`.
    pub run_dir: PathBuf,
    /// The attempt's progress cells (made with [`ProgressCells::open_ended`]).
    pub cells: Arc<ProgressCells>,
    /// The run actor's cancel and pause flags.
    pub control: Arc<RunControl>,
    /// What the attempt shares with the run actor and the API.
    pub feed: Arc<CommandFeed>,
    /// The checkpoint to continue from.
    pub resume: Option<CommandResume>,
    /// Log rotation.
    pub settings: CommandSettings,
}

/// Starts the supervisor thread of one attempt; the process starts on it.
pub fn spawn_command(job: CommandJob) -> std::io::Result<TrainingHandle> {
    let (tx, rx) = oneshot::channel();
    let name = format!("cmd-{}", &job.run_id.to_string()[..8]);
    std::thread::Builder::new().name(name).spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| supervise(&job)))
            .unwrap_or_else(|_| Outcome::Failed("the command's supervisor thread panicked".into()));
        // The run actor may be gone (server stopping); nothing else to tell then.
        let _ = tx.send(outcome);
    })?;
    Ok(TrainingHandle { outcome: rx })
}

/// Why the server stopped the command.
#[derive(Debug, Clone, PartialEq)]
enum Stop {
    Cancel,
    Pause,
    Timeout(SpecDuration),
    Stalled(String),
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Code(i32),
    Signal(i32),
    /// Reaped by someone else, or `waitid` failed: how it ended is not known.
    Unknown(Errno),
}

impl Ending {
    fn describe(self) -> String {
        match self {
            Ending::Code(code) => format!("exit code {code}"),
            Ending::Signal(signal) => {
                format!("killed by signal {signal} ({})", signal_name(signal))
            }
            Ending::Unknown(errno) => format!("ended; its status was lost ({errno})"),
        }
    }
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| "unknown".into(), |s| s.to_string())
}

fn device_env(device: tch::Device) -> (String, String) {
    match device {
        tch::Device::Cuda(i) => (format!("cuda:{i}"), i.to_string()),
        tch::Device::Cpu => ("cpu".into(), String::new()),
        tch::Device::Mps => ("mps".into(), String::new()),
        tch::Device::Vulkan => ("vulkan".into(), String::new()),
    }
}

/// Sends `signal` to a process group; a group that is gone already is no error.
pub(crate) fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "could not signal the command's process group")
        }
    }
}

/// Between fork and exec: the pipe's write end becomes fd 3, open across exec. Only
/// async-signal-safe calls here.
pub(crate) fn give_progress_fd(fd: RawFd) -> std::io::Result<()> {
    use nix::libc;
    if fd == protocol::PROGRESS_FD {
        // dup2 onto itself would leave close-on-exec set.
        // SAFETY: fcntl on a descriptor this process owns; no memory is touched.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    } else if unsafe {
        // SAFETY: dup2 between descriptors of this process; the new one has
        // close-on-exec clear.
        libc::dup2(fd, protocol::PROGRESS_FD)
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The last lines of stderr, for a failure's message.
#[derive(Debug, Default)]
pub(crate) struct StderrTail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl StderrTail {
    fn push(&mut self, mut data: &[u8]) {
        while let Some(end) = data.iter().position(|b| *b == b'\n') {
            self.extend_partial(&data[..end]);
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            if self.lines.len() == STDERR_TAIL_LINES {
                self.lines.pop_front();
            }
            self.lines.push_back(line);
            data = &data[end + 1..];
        }
        self.extend_partial(data);
    }

    fn extend_partial(&mut self, data: &[u8]) {
        let room = STDERR_LINE_BYTES.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&data[..data.len().min(room)]);
    }

    fn text(&self) -> String {
        let mut lines: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        let skip = lines.len().saturating_sub(STDERR_TAIL_LINES);
        lines.split_off(skip).join("\n")
    }
}

/// Copies one of the command's output streams into its log file (and stderr into
/// the tail) until every writer has closed it; receives `()` then.
pub(crate) fn spawn_pump(
    mut source: impl Read + Send + 'static,
    mut log: Option<RotatingLog>,
    tail: Option<Arc<Mutex<StderrTail>>>,
    name: String,
) -> std::io::Result<Receiver<()>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if let Some(file) = &mut log {
                if let Err(e) = file.write(&buf[..n]) {
                    // Still drained, so the command never blocks on a full pipe.
                    tracing::warn!(error = %e, "command output not written to its log; the rest is dropped");
                    log = None;
                }
            }
            if let Some(tail) = &tail {
                tail.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(&buf[..n]);
            }
        }
        let _ = tx.send(());
    })?;
    Ok(rx)
}

pub(crate) fn open_log(
    dir: &Path,
    name: &str,
    settings: CommandSettings,
    attempt: u32,
) -> Option<RotatingLog> {
    let opened = RotatingLog::open(dir.join(name), settings.log_max_bytes, settings.log_keep)
        .and_then(|mut log| {
            log.write(attempt_header(attempt).as_bytes())?;
            Ok(log)
        });
    match opened {
        Ok(log) => Some(log),
        Err(e) => {
            tracing::warn!(file = %dir.join(name).display(), error = %e, "command log not writable; its output is dropped");
            None
        }
    }
}

/// One rank's process of an attempt (or the `srun` of the ranks on a Slurm job's
/// other nodes) and the threads that read it.
struct RankProcess {
    /// `rank N`, or what the `srun` step holds, for messages.
    name: String,
    /// Whether it is the `srun` step of the other nodes' ranks.
    remote: bool,
    pid: Pid,
    /// Its last stderr lines, for a failure's message.
    tail: Arc<Mutex<StderrTail>>,
    /// Rank 0's progress reader (the run's progress).
    reader: Option<ReaderHandle>,
    /// The other ranks' pipe drain: receives `()` at the pipe's end.
    drained: Option<Receiver<()>>,
    /// The stderr pump: receives `()` at the pipe's end.
    err: Receiver<()>,
    /// How it ended, once it has.
    ending: Option<Ending>,
}

/// What every rank of an attempt shares: where it runs and how it finds the others.
struct Gang<'a> {
    job: &'a CommandJob,
    program: &'a str,
    args: &'a [String],
    cwd: PathBuf,
    checkpoint_dir: PathBuf,
    logs_dir: PathBuf,
    /// `MASTER_PORT`, for a run of more than one rank.
    port: Option<u16>,
}

impl Gang<'_> {
    /// Ranks on this node: one per slot.
    fn local(&self) -> u32 {
        self.job.devices.len() as u32
    }

    /// Ranks in all, on every node.
    fn world(&self) -> u32 {
        self.local() * self.job.settings.nodes.max(1)
    }

    /// `MASTER_ADDR`: this node's address when other nodes must reach it.
    fn master_addr(&self) -> String {
        match self.job.settings.address {
            Some(address) if self.job.settings.nodes > 1 => address.to_string(),
            _ => "127.0.0.1".into(),
        }
    }

    /// The command with what every rank gets: the spec's environment and the
    /// server's variables (none of the server's own values of them).
    fn command(&self, program: &str) -> Command {
        let job = self.job;
        let absolute =
            |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut command = Command::new(program);
        command
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for var in SERVER_VARS.iter().chain(&RANK_VARS) {
            command.env_remove(var);
        }
        command
            .envs(&job.spec.env)
            .env("RUNYARD_RUN_ID", job.run_id.to_string())
            .env("RUNYARD_ATTEMPT", job.attempt.to_string())
            .env("RUNYARD_CHECKPOINT_DIR", absolute(&self.checkpoint_dir))
            .env("RUNYARD_PROGRESS_FD", protocol::PROGRESS_FD.to_string())
            .env("RUNYARD_PROTOCOL", protocol::VERSION.to_string());
        if let Some(resume) = &job.resume {
            command.env("RUNYARD_RESUME_FROM", absolute(&resume.path));
        }
        command
    }

    /// Starts the ranks of a Slurm job's other nodes: one `srun` step on nodes 1 to
    /// N−1 of the allocation, `local` tasks each, every task `runyard rank` (see
    /// [`crate::worker::rank`]). It is one member of the gang: it ends when they all have,
    /// Slurm ends every task when one fails (`--kill-on-bad-exit`), and a signal to
    /// it reaches every task.
    fn start_remote(&self) -> Result<RankProcess, String> {
        let job = self.job;
        let (first, world, nodes) = (self.local(), self.world(), job.settings.nodes);
        let span = |what: &str, from: u32, to: u32| {
            if from == to {
                format!("{what} {from}")
            } else {
                format!("{what}s {from}-{to}")
            }
        };
        let name = format!(
            "{} on {} (srun)",
            span("rank", first, world - 1),
            span("node", 1, nodes - 1)
        );
        let runyard = std::env::current_exe()
            .map_err(|e| format!("cannot find the runyard program for `srun`: {e}"))?;
        let logs = self.logs_dir.join("srun");
        std::fs::create_dir_all(&logs)
            .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        let mut command = self.command("srun");
        command
            .env_remove("CUDA_VISIBLE_DEVICES")
            .arg("--relative=1")
            .arg(format!("--nodes={}", nodes - 1))
            .arg(format!("--ntasks={}", world - first))
            .arg(format!("--ntasks-per-node={first}"))
            .arg("--kill-on-bad-exit=1")
            .arg(runyard)
            .arg("rank")
            .args(["--world", &world.to_string()])
            .args(["--first-rank", &first.to_string()])
            .args(["--local-world", &first.to_string()])
            .args(["--master-addr", &self.master_addr()])
            .args(["--master-port", &self.port.unwrap_or_default().to_string()])
            .arg("--logs")
            .arg(std::path::absolute(&self.logs_dir).unwrap_or_else(|_| self.logs_dir.clone()))
            .args(["--attempt", &job.attempt.to_string()])
            .args(["--log-max-bytes", &job.settings.log_max_bytes.to_string()])
            .args(["--log-keep", &job.settings.log_keep.to_string()])
            .arg("--")
            .arg(self.program)
            .args(self.args);
        let mut child = command
            .spawn()
            .map_err(|e| format!("could not start `srun` for {name}: {e}"))?;
        let pid = Pid::from_raw(child.id() as i32);
        let tail = Arc::new(Mutex::new(StderrTail::default()));
        let short = &job.run_id.to_string()[..8];
        let pumps = (|| {
            let stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
            let stderr = child.stderr.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
            let out = open_log(&logs, STDOUT_LOG, job.settings, job.attempt);
            let err = open_log(&logs, STDERR_LOG, job.settings, job.attempt);
            spawn_pump(stdout, out, None, format!("cmd-{short}-srun-out"))?;
            spawn_pump(
                stderr,
                err,
                Some(Arc::clone(&tail)),
                format!("cmd-{short}-srun-err"),
            )
        })();
        drop(child);
        match pumps {
            Ok(err) => Ok(RankProcess {
                name,
                remote: true,
                pid,
                tail,
                reader: None,
                drained: None,
                err,
                ending: None,
            }),
            Err(e) => {
                end_group(pid);
                Err(format!("could not start the threads that read `srun`: {e}"))
            }
        }
    }

    /// Starts rank `rank` and the threads that read its pipes; a rank whose pipes
    /// could not be given a reader is killed before this answers.
    fn start(&self, rank: u32) -> Result<RankProcess, String> {
        let job = self.job;
        let logs = crate::domain::layout::rank_logs(&self.logs_dir, rank);
        std::fs::create_dir_all(&logs)
            .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        let stdout_log = open_log(&logs, STDOUT_LOG, job.settings, job.attempt);
        let stderr_log = open_log(&logs, STDERR_LOG, job.settings, job.attempt);
        let (pipe_reader, pipe_writer) =
            std::io::pipe().map_err(|e| format!("cannot create the progress pipe: {e}"))?;
        let device = job.devices[rank as usize];
        let (device_name, cuda_visible) = device_env(device);
        let mut command = self.command(self.program);
        command
            .args(self.args)
            .env("RUNYARD_DEVICE", device_name)
            // Empty on a CPU slot: no GPU of the machine is visible to it.
            .env("CUDA_VISIBLE_DEVICES", cuda_visible);
        if let Some(port) = self.port {
            command
                .env("WORLD_SIZE", self.world().to_string())
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("LOCAL_WORLD_SIZE", self.local().to_string())
                .env("NODE_RANK", "0")
                .env("GROUP_RANK", "0")
                .env("MASTER_ADDR", self.master_addr())
                .env("MASTER_PORT", port.to_string());
        }
        let write_fd = pipe_writer.as_raw_fd();
        // SAFETY: the closure only calls fcntl and dup2, which are async-signal-safe,
        // and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || give_progress_fd(write_fd));
        }
        let spawned = command.spawn();
        // The command holds the write end now; the reader sees the end of the pipe
        // when the command (and whatever it started) has closed it.
        drop(pipe_writer);
        let mut child = spawned.map_err(|e| {
            let rank = if self.world() > 1 {
                format!(" (rank {rank})")
            } else {
                String::new()
            };
            format!("could not start `{}`{rank}: {e}", self.program)
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        let short = &job.run_id.to_string()[..8];
        let name = |what: &str| {
            if rank == 0 {
                format!("cmd-{short}-{what}")
            } else {
                format!("cmd-{short}-{what}{rank}")
            }
        };
        let tail = Arc::new(Mutex::new(StderrTail::default()));
        let threads = (|| {
            let stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
            let stderr = child.stderr.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
            let (reader, drained) = if rank == 0 {
                let reader = protocol::spawn_reader(
                    pipe_reader,
                    ReaderSetup {
                        feed: Arc::clone(&job.feed),
                        cells: Arc::clone(&job.cells),
                        data_dir: job.data_dir.clone(),
                        run_dir: job.run_dir.clone(),
                        checkpoint_dir: self.checkpoint_dir.clone(),
                        epochs_done: job.resume.as_ref().map_or(0, |r| u64::from(r.epoch)),
                        step: job.resume.as_ref().map_or(0, |r| r.step),
                    },
                    name("pipe"),
                )?;
                (Some(reader), None)
            } else {
                let (tx, rx) = mpsc::channel();
                let feed = Arc::clone(&job.feed);
                std::thread::Builder::new()
                    .name(name("pipe"))
                    .spawn(move || {
                        protocol::drain_rank(pipe_reader, &feed, rank);
                        let _ = tx.send(());
                    })?;
                (None, Some(rx))
            };
            spawn_pump(stdout, stdout_log, None, name("out"))?;
            let err = spawn_pump(stderr, stderr_log, Some(Arc::clone(&tail)), name("err"))?;
            Ok::<_, std::io::Error>((reader, drained, err))
        })();
        // Dropping the handle neither kills nor reaps: `pid` stays the process's until
        // it is reaped by `end_group`.
        drop(child);
        match threads {
            Ok((reader, drained, err)) => Ok(RankProcess {
                name: format!("rank {rank}"),
                remote: false,
                pid,
                tail,
                reader,
                drained,
                err,
                ending: None,
            }),
            Err(e) => {
                // Nothing would drain its pipes: it must not run.
                end_group(pid);
                Err(format!(
                    "could not start the threads that read the command: {e}"
                ))
            }
        }
    }
}

/// Kills what is left of a started process's group, reaps it and waits for the
/// group to go.
fn end_group(pid: Pid) {
    signal_group(pid, Signal::SIGKILL);
    while let Err(Errno::EINTR) = waitpid(pid, None) {}
    if !wait_group_gone(pid.as_raw(), GROUP_WAIT) {
        tracing::warn!(
            pgid = pid.as_raw(),
            "the command's process group did not go after SIGKILL"
        );
    }
}

/// A TCP port free now at `address`, for `MASTER_PORT`.
fn free_port(address: std::net::IpAddr) -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((address, 0))?
        .local_addr()?
        .port())
}

/// Runs one attempt to its end: every rank is started, watched and ended together.
fn supervise(job: &CommandJob) -> Outcome {
    let fail = |reason: String| {
        // No process runs: nothing to journal but the failure.
        job.feed.set_end(CommandEnd {
            exited: None,
            stop_note: None,
        });
        Outcome::Failed(reason)
    };
    let checkpoint_dir = protocol::checkpoint_dir(&job.run_dir);
    let logs_dir = job.run_dir.join(LOGS_DIR);
    for dir in [&checkpoint_dir, &logs_dir] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return fail(format!("cannot create {}: {e}", dir.display()));
        }
    }
    let Some((program, args)) = job.spec.argv.split_first() else {
        return fail("the spec has no `argv`".into());
    };
    if job.devices.is_empty() {
        return fail("the attempt was given no slot".into());
    }
    let cwd = job.spec.cwd.as_ref().map_or_else(
        || std::path::absolute(&job.run_dir).unwrap_or_else(|_| job.run_dir.clone()),
        PathBuf::from,
    );
    // Checked here: a spawn error would name the program, not the directory.
    if !cwd.is_dir() {
        return fail(format!("`cwd` {} is not a directory", cwd.display()));
    }
    let nodes = job.settings.nodes.max(1);
    let port = if job.devices.len() as u32 * nodes > 1 {
        // Bound where the other nodes' ranks reach rank 0, loopback otherwise.
        let at = match job.settings.address {
            Some(address) if nodes > 1 => address,
            _ => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        match free_port(at) {
            Ok(port) => Some(port),
            Err(e) => return fail(format!("no free port for `MASTER_PORT`: {e}")),
        }
    } else {
        None
    };
    let gang = Gang {
        job,
        program,
        args,
        cwd,
        checkpoint_dir,
        logs_dir,
        port,
    };
    let mut ranks: Vec<RankProcess> = Vec::with_capacity(job.devices.len() + 1);
    let remote = (nodes > 1).then_some(gang.local());
    for member in (0..gang.local()).chain(remote) {
        let started = if member < gang.local() {
            gang.start(member)
        } else {
            gang.start_remote()
        };
        match started {
            Ok(process) => ranks.push(process),
            Err(reason) => {
                for started in ranks {
                    end_group(started.pid);
                }
                return fail(reason);
            }
        }
    }
    let processes = ranks
        .iter()
        .map(|r| CommandProcess {
            pid: r.pid.as_raw() as u32,
            pgid: r.pid.as_raw() as u32,
            start_ticks: proc_stat(r.pid.as_raw()).map_or(0, |s| s.start_ticks),
            attempt: job.attempt,
        })
        .collect();
    job.feed.set_started(processes);
    tracing::info!(run_id = %job.run_id, attempt = job.attempt, pid = ranks[0].pid.as_raw(), ranks = ranks.len(), program = %program, "command started");

    let (stop, killed, failed) = watch(job, &mut ranks);
    for rank in &ranks {
        // Its first process has exited but is not reaped, so the group id is still
        // its own: end what is left of the group, then reap.
        end_group(rank.pid);
    }
    for rank in &ranks {
        if let Some(reader) = &rank.reader {
            match reader.stages.recv_timeout(PIPE_WAIT) {
                // The last reported checkpoint is hashed before the attempt ends, so
                // it is journaled before the attempt's end.
                Ok(ReaderStage::Eof) => {
                    let _ = reader.stages.recv();
                }
                Ok(ReaderStage::Done) | Err(RecvTimeoutError::Disconnected) => {}
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!(run_id = %job.run_id, "the progress pipe is still open (held by a process outside the command's group); its later lines are not journaled with this attempt")
                }
            }
        }
        if let Some(drained) = &rank.drained {
            let _ = drained.recv_timeout(PIPE_WAIT);
        }
        let _ = rank.err.recv_timeout(PIPE_WAIT);
    }
    let ending_of = |rank: &RankProcess| rank.ending.unwrap_or(Ending::Unknown(Errno::ECHILD));
    let gang = ranks.len() > 1;
    // The rank whose ending decides the attempt: the first to end abnormally
    // unasked, else rank 0.
    let decider = &ranks[failed.unwrap_or(0)];
    let ending = ending_of(decider);
    let (exit_code, signal) = match ending {
        Ending::Code(code) => (Some(code), None),
        Ending::Signal(signal) => (None, Some(signal)),
        Ending::Unknown(_) => (None, None),
    };
    let grace = SpecDuration::from_millis(job.spec.grace_period().as_millis() as u64);
    let after_term = |ending: Ending| match ending {
        Ending::Signal(9) if killed => {
            format!("it did not stop on SIGTERM; SIGKILL ended it after the {grace} grace period")
        }
        Ending::Signal(15) => "SIGTERM ended it".to_string(),
        Ending::Code(code) => format!("it exited with code {code} after SIGTERM"),
        other => format!("{} after SIGTERM", other.describe()),
    };
    let per_rank = |describe: &dyn Fn(Ending) -> String| {
        ranks
            .iter()
            .map(|r| format!("{}: {}", r.name, describe(ending_of(r))))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let stop_note = stop.as_ref().map(|_| {
        if gang {
            per_rank(&after_term)
        } else {
            after_term(ending)
        }
    });
    let status = match failed {
        _ if !gang => ending.describe(),
        Some(_) => format!(
            "{} {} first; {}",
            decider.name,
            ending.describe(),
            per_rank(&|e: Ending| e.describe())
        ),
        None => per_rank(&|e: Ending| e.describe()),
    };
    let exited = job.feed.exited_event(status, exit_code, signal);
    job.feed.set_end(CommandEnd {
        exited: Some(exited),
        stop_note: stop_note.clone(),
    });
    let note = stop_note.unwrap_or_default();
    let outcome = match stop {
        Some(Stop::Cancel) => Outcome::Cancelled,
        Some(Stop::Pause) if job.control.is_cancelled() => Outcome::Cancelled,
        Some(Stop::Pause) => Outcome::Paused,
        Some(Stop::Timeout(after)) => Outcome::Failed(format!("timed out after {after}; {note}")),
        Some(Stop::Stalled(why)) => {
            Outcome::Failed(format!("{why}; stopped (kill_on_stall): {note}"))
        }
        None if failed.is_none() => {
            let last = job.feed.last_epoch();
            Outcome::Completed {
                train_loss: last.map_or(f64::NAN, |e| e.train_loss),
                train_accuracy: last.map_or(f64::NAN, |e| e.train_accuracy),
                weights: None,
            }
        }
        None => {
            let tail = decider
                .tail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .text();
            let whose = if gang {
                format!(" of {}", decider.name)
            } else {
                String::new()
            };
            let stderr_part = if tail.is_empty() {
                format!(" (nothing on stderr{whose})")
            } else {
                format!("; last stderr lines{whose}:\n{tail}")
            };
            if gang {
                Outcome::Failed(format!(
                    "{} {}; every other rank was stopped{stderr_part}",
                    decider.name,
                    ending.describe()
                ))
            } else {
                Outcome::Failed(format!("{}{stderr_part}", ending.describe()))
            }
        }
    };
    tracing::info!(run_id = %job.run_id, attempt = job.attempt, status = %ending.describe(), "command ended");
    outcome
}

/// Watches the running ranks until every one has exited (none reaped): turns the
/// run's requests into signals to every rank's group, and the first rank to end
/// abnormally unasked into SIGTERM to the others (then SIGKILL after `grace`).
/// Answers why the server stopped them (if it did), whether SIGKILL was sent, and
/// the index of the rank that failed first (if one did). Each rank's ending is
/// recorded in it.
/// Whether the command is to pause: a client asked, or it is a sweep trial whose
/// epoch summaries reached the end of its rung (it pauses as on a client's pause,
/// checkpointing on `SIGTERM`).
fn pause_wanted(job: &CommandJob) -> bool {
    let after = u64::from(job.control.pause_after());
    job.control.is_paused() || (after > 0 && job.cells.finished_epoch(after - 1).is_some())
}

fn watch(job: &CommandJob, ranks: &mut [RankProcess]) -> (Option<Stop>, bool, Option<usize>) {
    // A thread per rank blocks until it exits, so the order endings arrive in is
    // the order they happened in: the rank that died first is the one named, not a
    // peer that failed because it died.
    let (tx, endings) = mpsc::channel();
    let mut polled = Vec::new();
    for (i, rank) in ranks.iter().enumerate() {
        let (tx, pid) = (tx.clone(), rank.pid);
        let waiter = std::thread::Builder::new()
            .name(format!("cmd-wait-{}", pid.as_raw()))
            .spawn(move || {
                let _ = tx.send((i, wait_exit(pid)));
            });
        if waiter.is_err() {
            polled.push(i);
        }
    }
    drop(tx);
    let started = Instant::now();
    let grace = job.spec.grace_period();
    let mut stop: Option<Stop> = None;
    let mut failed: Option<usize> = None;
    // A rank SIGTERM ended unasked (or the `srun` step ended abnormally), and when:
    // failed once `TERM_WAIT` passes with no stop asked for.
    let mut termed: Option<(usize, Instant)> = None;
    let mut term_sent: Option<Instant> = None;
    let mut killed = false;
    let signal_live = |ranks: &[RankProcess], signal: Signal| {
        for rank in ranks.iter().filter(|r| r.ending.is_none()) {
            signal_group(rank.pid, signal);
        }
    };
    loop {
        let mut ended: Vec<(usize, Ending)> = Vec::new();
        match endings.recv_timeout(POLL) {
            Ok(first) => {
                ended.push(first);
                ended.extend(endings.try_iter());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if polled.is_empty() {
                    std::thread::sleep(POLL);
                }
            }
        }
        for &i in &polled {
            if ranks[i].ending.is_none() {
                if let Some(ending) = exited(ranks[i].pid) {
                    ended.push((i, ending));
                }
            }
        }
        let now = Instant::now();
        // The first rank to fail ends the others.
        let fail = |i: usize, ranks: &mut [RankProcess]| {
            if ranks.iter().any(|r| r.ending.is_none()) {
                tracing::info!(run_id = %job.run_id, rank = %ranks[i].name, status = ?ranks[i].ending, "a rank failed: SIGTERM to the others");
                signal_live(ranks, Signal::SIGTERM);
                return Some(now);
            }
            None
        };
        for (i, ending) in ended {
            if ranks[i].ending.is_some() {
                continue;
            }
            ranks[i].ending = Some(ending);
            if ending != Ending::Code(0) && stop.is_none() && failed.is_none() && termed.is_none() {
                if ending == Ending::Signal(Signal::SIGTERM as i32) || ranks[i].remote {
                    // Whoever sent it (Slurm ending the job, a preemption) has
                    // likely asked for the stop as well, and a lost node ends `srun`
                    // as the job's end reaches the worker: it gets a moment to arrive.
                    termed = Some((i, now));
                } else {
                    failed = Some(i);
                    term_sent = fail(i, ranks).or(term_sent);
                }
            }
        }
        if let Some((i, since)) = termed {
            if stop.is_some() || job.control.is_cancelled() || pause_wanted(job) {
                termed = None;
            } else if now.duration_since(since) >= TERM_WAIT {
                termed = None;
                failed = Some(i);
                term_sent = fail(i, ranks).or(term_sent);
            }
        }
        if ranks.iter().all(|r| r.ending.is_some()) && termed.is_none() {
            if stop.is_none() && failed.is_none() {
                // A stop that came while a SIGTERM'd rank was waited for.
                stop = if job.control.is_cancelled() {
                    Some(Stop::Cancel)
                } else if pause_wanted(job) {
                    Some(Stop::Pause)
                } else {
                    None
                };
            }
            return (stop, killed, failed);
        }
        if stop.is_none() && failed.is_none() {
            stop = if job.control.is_cancelled() {
                Some(Stop::Cancel)
            } else if pause_wanted(job) {
                Some(Stop::Pause)
            } else if let Some(why) = job.feed.stall_stop() {
                Some(Stop::Stalled(why))
            } else {
                job.spec
                    .timeout
                    .filter(|t| now.duration_since(started) >= t.get())
                    .map(Stop::Timeout)
            };
            if let Some(reason) = &stop {
                tracing::info!(run_id = %job.run_id, pid = ranks[0].pid.as_raw(), ?reason, "stopping the command: SIGTERM");
                signal_live(ranks, Signal::SIGTERM);
                term_sent = Some(now);
            }
        }
        if let Some(sent) = term_sent {
            if !killed && now.duration_since(sent) >= grace {
                tracing::info!(run_id = %job.run_id, pid = ranks[0].pid.as_raw(), "the command outlived its grace period: SIGKILL");
                signal_live(ranks, Signal::SIGKILL);
                killed = true;
            }
        }
    }
}

/// How the process ended, if it has (it stays unreaped).
fn exited(pid: Pid) -> Option<Ending> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        return match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::Exited(_, code)) => Some(Ending::Code(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => Some(Ending::Signal(signal as i32)),
            Ok(_) => None,
            Err(Errno::EINTR) => continue,
            Err(e) => Some(Ending::Unknown(e)),
        };
    }
}

/// Blocks until the process exits (it stays unreaped).
fn wait_exit(pid: Pid) -> Ending {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    loop {
        return match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::Exited(_, code)) => Ending::Code(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => Ending::Signal(signal as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => Ending::Unknown(e),
        };
    }
}

/// Fields of `/proc/PID/stat` that tell a process apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Its process group.
    pub pgrp: i32,
    /// Its start time in clock ticks after boot (field 22).
    pub start_ticks: u64,
}

/// Reads `/proc/PID/stat`; `None` when there is no such process.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may hold anything.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Live (not zombie) processes of group `pgid`, with their stats.
fn group_members(pgid: i32) -> Vec<(i32, ProcStat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .filter(|(_, s)| s.pgrp == pgid && !matches!(s.state, 'Z' | 'X'))
        .collect()
}

/// Whether process group `pgid` has no live process left.
pub fn group_gone(pgid: i32) -> bool {
    match killpg(Pid::from_raw(pgid), None) {
        Err(Errno::ESRCH) => true,
        // Members left may be zombies waiting for their new parent to reap them.
        _ => group_members(pgid).is_empty(),
    }
}

fn wait_group_gone(pgid: i32, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if group_gone(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ends the commands that a previous server process left running. For every run that
/// is live in `state` with journaled processes (rank 0's and, for a run of several
/// ranks, the others'): when a process still runs (same pid and start time), or it is
/// gone but processes of its group started after it still run, the group is killed
/// with SIGKILL and waited for (a few seconds at most). Answers a `CommandExited` per
/// such run, saying what was found, to journal before the runs resume. A pid now used
/// by another process is left alone.
pub fn end_orphans(state: &State) -> Vec<(RunId, Event)> {
    let mut records = Vec::new();
    for run in state.runs().filter(|r| r.state.is_live()) {
        let processes: Vec<(u32, CommandProcess)> = run
            .process
            .map(|p| (0, p))
            .into_iter()
            .chain(run.ranks.iter().map(|(rank, p)| (*rank, *p)))
            .collect();
        if processes.is_empty() {
            continue;
        }
        let found: Vec<(u32, String, Option<i32>)> = processes
            .iter()
            .map(|(rank, process)| {
                let (status, signal) = end_orphan(run.id, *rank, process);
                (*rank, status, signal)
            })
            .collect();
        let (status, signal) = match found.as_slice() {
            [(0, status, signal)] => (status.clone(), *signal),
            _ => (
                found
                    .iter()
                    .map(|(rank, status, _)| format!("rank {rank}: {status}"))
                    .collect::<Vec<_>>()
                    .join("; "),
                found.iter().find_map(|(_, _, signal)| *signal),
            ),
        };
        records.push((
            run.id,
            Event::CommandExited {
                status,
                exit_code: None,
                signal,
                lines: 0,
                bad: Vec::new(),
                last_error: None,
                metrics: Vec::new(),
            },
        ));
    }
    records
}

/// Ends one journaled process group of run `run` left from before this start;
/// answers what was found and the signal sent, if one was.
fn end_orphan(run: RunId, rank: u32, process: &CommandProcess) -> (String, Option<i32>) {
    let (pid, pgid) = (process.pid as i32, process.pgid as i32);
    let leader = proc_stat(pid);
    let ours = match leader {
        Some(stat) => stat.start_ticks == process.start_ticks && stat.pgrp == pgid,
        // Gone: anything left in its group started after it is its offspring.
        None => group_members(pgid)
            .iter()
            .any(|(_, s)| s.start_ticks >= process.start_ticks),
    };
    let stranger = leader.is_some_and(|s| s.start_ticks != process.start_ticks);
    if ours {
        signal_group(Pid::from_raw(pgid), Signal::SIGKILL);
        let gone = wait_group_gone(pgid, GROUP_WAIT);
        tracing::warn!(run_id = %run, rank, pid, pgid, gone, "ended a command left running by the previous server process (SIGKILL to its process group)");
        let status = if gone {
            format!(
                "still running when the server restarted: process group {pgid} ended with SIGKILL"
            )
        } else {
            format!("still running when the server restarted: SIGKILL sent to process group {pgid}, which had not gone {}s later", GROUP_WAIT.as_secs())
        };
        (status, Some(Signal::SIGKILL as i32))
    } else if stranger {
        tracing::info!(run_id = %run, rank, pid, "the journaled command's pid belongs to another process now; left alone");
        (
            format!("gone when the server restarted (pid {pid} now belongs to another process)"),
            None,
        )
    } else {
        ("gone when the server restarted".to_string(), None)
    }
}

/// Ends commands of runs live in `state` that no `CommandStarted` names (a server
/// killed between starting a command and journaling it): any process whose
/// environment holds `RUNYARD_RUN_ID` of such a run is a command this data directory's
/// previous server started (run ids are unique), and its process group is killed with
/// SIGKILL. Called at start, before anything resumes, so none of them is this
/// server's. Answers the process groups ended.
pub fn end_unjournaled(state: &State) -> Vec<(RunId, i32)> {
    let wanted: std::collections::HashMap<String, RunId> = state
        .runs()
        .filter(|r| r.state.is_live() && r.process.is_none() && r.executor.is_local())
        .map(|r| (format!("RUNYARD_RUN_ID={}", r.id), r.id))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let my_group = nix::unistd::getpgrp().as_raw();
    let mut groups: Vec<(RunId, i32)> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Unreadable (another user's process, or gone): not ours.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let run = environ
            .split(|b| *b == 0)
            .filter_map(|var| std::str::from_utf8(var).ok())
            .find_map(|var| wanted.get(var).copied());
        let (Some(run), Some(stat)) = (run, proc_stat(pid)) else {
            continue;
        };
        if stat.pgrp != my_group && !groups.iter().any(|(_, g)| *g == stat.pgrp) {
            groups.push((run, stat.pgrp));
        }
    }
    for (run, pgid) in &groups {
        signal_group(Pid::from_raw(*pgid), Signal::SIGKILL);
        let gone = wait_group_gone(*pgid, GROUP_WAIT);
        tracing::warn!(run_id = %run, pgid, gone, "ended a command the previous server process started but had not journaled (found by RUNYARD_RUN_ID; SIGKILL to its process group)");
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_the_journal_does_not_name_is_found_by_its_run_id_and_ended() {
        use crate::domain::{Envelope, SlotId};
        let run = RunId::new();
        let other = RunId::new();
        let mut state = State::default();
        let slot = SlotId(0);
        for (seq, event) in [
            Event::RunSubmitted {
                name: "n".into(),
                digest: "d".into(),
                spec: "{}".into(),
            },
            Event::SlotClaimed { slot },
            Event::RunStarted {
                attempt: 1,
                slot,
                device: "cpu".into(),
            },
        ]
        .into_iter()
        .enumerate()
        {
            state.apply(seq as u64 + 1, &Envelope::now(run, event));
        }
        // The command (with a child of its own) of the live run, and a process of a
        // run this state does not have, each in its own process group.
        let spawn = |id: RunId| {
            Command::new("sh")
                .args(["-c", "sleep 600 & wait"])
                .env("RUNYARD_RUN_ID", id.to_string())
                .process_group(0)
                .spawn()
                .expect("sh starts")
        };
        let mut orphan = spawn(run);
        let mut stranger = spawn(other);
        let pgid = orphan.id() as i32;
        // Wait until the shell has started its child (a member of the group besides it).
        let deadline = Instant::now() + Duration::from_secs(30);
        while group_members(pgid).len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the orphan's child never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }

        let ended = end_unjournaled(&state);
        assert_eq!(ended, vec![(run, pgid)]);
        assert!(group_gone(pgid), "the whole group is gone");
        let _ = orphan.wait();
        assert!(
            stranger.try_wait().expect("status").is_none(),
            "another run's process is left alone"
        );
        signal_group(Pid::from_raw(stranger.id() as i32), Signal::SIGKILL);
        let _ = stranger.wait();
    }

    #[test]
    fn proc_stat_reads_state_group_and_start_time_past_an_odd_name() {
        let line = "4242 (a (weird) name) S 1 4240 4240 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 1 1";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                pgrp: 4240,
                start_ticks: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        let me = proc_stat(std::process::id() as i32).expect("this process");
        assert_eq!(me.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(me.start_ticks > 0);
    }

    #[test]
    fn the_stderr_tail_keeps_the_last_lines_cut_to_length() {
        let mut tail = StderrTail::default();
        for i in 0..60 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        tail.push(b"partial ");
        tail.push(b"end");
        let text = tail.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines[STDERR_TAIL_LINES - 1], "partial end");
        let mut long = StderrTail::default();
        long.push(&vec![b'x'; 5000]);
        long.push(b"\n");
        assert_eq!(long.text().len(), STDERR_LINE_BYTES);
    }
}
