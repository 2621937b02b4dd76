//! `runyard rank`: one rank of a Slurm command run on a node other than the worker's.
//!
//! The worker of a job on `N` nodes runs on the first node and starts that node's
//! ranks itself, as a local run's (see [`crate::train::command`]). The ranks of the other
//! nodes come from one `srun` step it starts, whose every task is this program: it
//! works out its rank from Slurm's task variables, sets the `torch.distributed`
//! variables, runs the command in a process group of its own with its stdout and
//! stderr in the rank's log files (`logs/rank-R/` in the shared worker directory,
//! where the server's logs API reads them), passes `SIGTERM` and `SIGINT` on to that
//! group, and exits as the command did (128 + the signal when one ended it).
//!
//! Only rank 0's progress counts, and rank 0 is the worker's: here the progress fd
//! (`RUNYARD_PROGRESS_FD`, 3) is `/dev/null`, so a rank's reports cost it nothing and
//! are not read.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::train::command::{open_log, signal_group, spawn_pump, CommandSettings};
use crate::train::logfile::{STDERR_LOG, STDOUT_LOG};
use crate::train::protocol::PROGRESS_FD;

/// Flags of `runyard rank` (the worker writes them; not for use by hand).
#[derive(Debug, Clone, clap::Args)]
pub struct RankArgs {
    /// Ranks in all (`WORLD_SIZE`).
    #[arg(long)]
    pub world: u32,
    /// The rank of this step's first task: the worker's node holds the ranks before.
    #[arg(long)]
    pub first_rank: u32,
    /// Ranks per node (`LOCAL_WORLD_SIZE`).
    #[arg(long)]
    pub local_world: u32,
    /// Rank 0's address (`MASTER_ADDR`).
    #[arg(long)]
    pub master_addr: String,
    /// Rank 0's port (`MASTER_PORT`).
    #[arg(long)]
    pub master_port: u16,
    /// The run's log directory; rank R writes to `rank-R/` in it.
    #[arg(long)]
    pub logs: PathBuf,
    /// The attempt, for the line that starts its output in the logs.
    #[arg(long)]
    pub attempt: u32,
    /// Size at which a log file is rotated.
    #[arg(long)]
    pub log_max_bytes: u64,
    /// Rotated files kept per stream.
    #[arg(long)]
    pub log_keep: u32,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// Where one Slurm task stands: `SLURM_PROCID`, `SLURM_LOCALID`, `SLURM_NODEID` of
/// the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlurmTask {
    /// The task's number in the step (`SLURM_PROCID`).
    pub proc_id: u32,
    /// Its number on its node (`SLURM_LOCALID`).
    pub local_id: u32,
    /// Its node's number in the step (`SLURM_NODEID`).
    pub node_id: u32,
}

impl SlurmTask {
    /// This task's, from Slurm's variables.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| -> anyhow::Result<u32> {
            std::env::var(name)
                .with_context(|| {
                    format!("{name} is not set: `runyard rank` runs as a task of `srun`")
                })?
                .parse()
                .with_context(|| format!("{name} is not a whole number"))
        };
        Ok(Self {
            proc_id: var("SLURM_PROCID")?,
            local_id: var("SLURM_LOCALID")?,
            node_id: var("SLURM_NODEID")?,
        })
    }
}

/// The `torch.distributed` variables of a task of the step: its node is one after the
/// worker's (node 0), its rank `first_rank` on.
pub fn rank_env(args: &RankArgs, task: SlurmTask) -> Vec<(&'static str, String)> {
    let node = task.node_id + 1;
    vec![
        ("WORLD_SIZE", args.world.to_string()),
        ("RANK", (args.first_rank + task.proc_id).to_string()),
        ("LOCAL_RANK", task.local_id.to_string()),
        ("LOCAL_WORLD_SIZE", args.local_world.to_string()),
        ("NODE_RANK", node.to_string()),
        ("GROUP_RANK", node.to_string()),
        ("MASTER_ADDR", args.master_addr.clone()),
        ("MASTER_PORT", args.master_port.to_string()),
    ]
}

/// Runs this task's rank to its end; answers the exit status to leave with.
pub fn run(args: &RankArgs) -> anyhow::Result<i32> {
    let task = SlurmTask::from_env()?;
    let env = rank_env(args, task);
    let rank = args.first_rank + task.proc_id;
    let (program, rest) = args.argv.split_first().context("no command given")?;
    let logs = crate::domain::layout::rank_logs(&args.logs, rank);
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let settings = CommandSettings {
        log_max_bytes: args.log_max_bytes,
        log_keep: args.log_keep,
        nodes: 1,
        address: None,
        rung_end: None,
    };
    let device = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(visible) if !visible.is_empty() => format!("cuda:{}", task.local_id),
        _ => "cpu".to_string(),
    };
    // SIGTERM and SIGINT are taken by a thread of this process (and passed on to the
    // command's group); the command gets the default handling back.
    let forwarded = {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set
    };
    forwarded
        .thread_block()
        .context("cannot block SIGTERM and SIGINT")?;
    let progress = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    let mut command = Command::new(program);
    command
        .args(rest)
        .envs(env)
        .env("RUNYARD_DEVICE", device)
        .env("RUNYARD_PROGRESS_FD", PROGRESS_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&progress);
    // SAFETY: only async-signal-safe calls (dup2, fcntl, sigprocmask) between fork and
    // exec, touching no memory of the parent's.
    unsafe {
        command.pre_exec(move || {
            crate::train::command::give_progress_fd(fd)?;
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded), None)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{program}` (rank {rank})"))?;
    drop(progress);
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    std::thread::Builder::new()
        .name("rank-signals".into())
        .spawn(move || loop {
            if let Ok(signal) = forwarded.wait() {
                signal_group(group, signal);
            }
        })
        .context("cannot start the signal thread")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let out = spawn_pump(
        stdout,
        open_log(&logs, STDOUT_LOG, settings, args.attempt),
        None,
        format!("rank-{rank}-out"),
    )?;
    let err = spawn_pump(
        stderr,
        open_log(&logs, STDERR_LOG, settings, args.attempt),
        None,
        format!("rank-{rank}-err"),
    )?;
    let status = child.wait().context("cannot wait for the command")?;
    // What is left of its group goes with it.
    signal_group(group, Signal::SIGKILL);
    for pump in [out, err] {
        let _ = pump.recv_timeout(Duration::from_secs(5));
    }
    use std::os::unix::process::ExitStatusExt as _;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    if code != 0 {
        // On srun's stderr, which the worker keeps: the failure names the rank.
        eprintln!("runyard: rank {rank} ended: {status}");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_s_rank_follows_the_worker_s_node() {
        let args = RankArgs {
            world: 8,
            first_rank: 2,
            local_world: 2,
            master_addr: "10.0.0.1".into(),
            master_port: 29_400,
            logs: PathBuf::from("/shared/runs/x/worker/runs/x/logs"),
            attempt: 1,
            log_max_bytes: 1 << 20,
            log_keep: 1,
            argv: vec!["python3".into()],
        };
        // The step's task 3 is the second on its node, the step's second node: the
        // job's third node.
        let env = rank_env(
            &args,
            SlurmTask {
                proc_id: 3,
                local_id: 1,
                node_id: 1,
            },
        );
        let get = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("WORLD_SIZE"), Some("8"));
        assert_eq!(get("RANK"), Some("5"));
        assert_eq!(get("LOCAL_RANK"), Some("1"));
        assert_eq!(get("LOCAL_WORLD_SIZE"), Some("2"));
        assert_eq!(get("NODE_RANK"), Some("2"));
        assert_eq!(get("GROUP_RANK"), Some("2"));
        assert_eq!(get("MASTER_ADDR"), Some("10.0.0.1"));
        assert_eq!(get("MASTER_PORT"), Some("29400"));
    }
}
