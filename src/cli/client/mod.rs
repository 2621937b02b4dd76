//! The client commands (`submit`, `watch`, `ls`, `show`, `events`, `cancel`, `pause`,
//! `resume`, `slots`, `logs`, `sweep`): each talks to a running server over its REST API,
//! through one pooled HTTP client on a current-thread runtime.
//!
//! # Layout
//!
//! - `mod.rs`: the command list and [`run`].
//! - `common`: the connection and output flags, [`ClientError`] and its exit codes,
//!   writing to stdout.
//! - `api`: the one pooled HTTP client, and error answers read as problems.
//! - [`config`]: where the server and token come from (flags, environment, file).
//! - `output`: plain aligned tables and one-line summaries of events.
//! - `runs`: `submit`, `ls`, `show`, `events`, `cancel`, `pause`, `resume`.
//! - `slots`: `slots`.
//! - `logs`: `logs`, the last lines of a command run's output, and following them.
//! - [`sse`]: an incremental server-sent events parser.
//! - `watch`: `watch`, following a run's stream with progress bars and reconnecting
//!   (the reconnecting follower is shared with `sweep watch`).
//! - `sweeps`: `sweep submit | ls | show | watch | cancel | pause | resume`.

/// `print!` to stdout, ending the process quietly when the reader went away.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::client::common::write_stdout(&format!($($arg)*))
    };
}

/// `println!` to stdout, ending the process quietly when the reader went away.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::client::common::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod api;
mod common;
pub mod config;
mod logs;
mod output;
mod runs;
mod slots;
pub mod sse;
mod sweeps;
mod watch;

use clap::Subcommand;

pub use common::{
    ClientError, Connection, Output, OutputArg, EXIT_ANSWER, EXIT_LOCAL, EXIT_OK,
    EXIT_RUN_CANCELLED, EXIT_RUN_FAILED, EXIT_UNREACHABLE, EXIT_USAGE,
};
pub use logs::LogsArgs;
pub use runs::{ActionArgs, EventsArgs, LsArgs, ShowArgs, SubmitArgs};
pub use slots::SlotsArgs;
pub use sweeps::SweepArgs;
pub use watch::{WatchArgs, WatchOptions};

/// The client commands, flattened into the top-level command list.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a run spec (JSON, YAML or TOML, by the file's extension; `-` reads JSON
    /// from stdin) and print the run's id.
    Submit(SubmitArgs),
    /// Follow a run live: progress bars, one line per lifecycle event; exits with the
    /// run's outcome (0 completed, 5 failed, 6 cancelled).
    Watch(WatchArgs),
    /// List runs, newest first.
    Ls(LsArgs),
    /// Show one run: state, metrics, progress, epochs, checkpoints, artifacts.
    Show(ShowArgs),
    /// List a run's journaled events.
    Events(EventsArgs),
    /// Cancel a run (a live one stops at its next batch boundary).
    Cancel(ActionArgs),
    /// Pause a run (a live one checkpoints at its next batch boundary).
    Pause(ActionArgs),
    /// Put a paused run back in the queue.
    Resume(ActionArgs),
    /// List the slots and the runs holding them.
    Slots(SlotsArgs),
    /// Print the last lines of a command run's stdout or stderr; with `-f`, follow
    /// them until the run ends and exit with its outcome, as `watch` does.
    Logs(LogsArgs),
    /// Hyperparameter sweeps: `submit`, `ls`, `show`, `watch` (a live table of the
    /// trials), `cancel`, `pause`, `resume`.
    Sweep(SweepArgs),
}

/// Runs one client command to its end on a current-thread runtime.
pub fn run(command: ClientCommand) -> Result<(), ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Local(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        match command {
            ClientCommand::Submit(args) => runs::submit(args).await,
            ClientCommand::Watch(args) => watch::run(args).await,
            ClientCommand::Ls(args) => runs::ls(args).await,
            ClientCommand::Show(args) => runs::show(args).await,
            ClientCommand::Events(args) => runs::events(args).await,
            ClientCommand::Cancel(args) => runs::action(args, runs::Action::Cancel).await,
            ClientCommand::Pause(args) => runs::action(args, runs::Action::Pause).await,
            ClientCommand::Resume(args) => runs::action(args, runs::Action::Resume).await,
            ClientCommand::Slots(args) => slots::run(args).await,
            ClientCommand::Logs(args) => logs::run(args).await,
            ClientCommand::Sweep(args) => sweeps::run(args).await,
        }
    })
}
