//! The `runyard` command line: one file per command; the client commands, which talk
//! to a running server, live in [`client`].

pub mod client;
pub mod journal;
pub mod serve;
pub mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A crash-safe orchestrator for machine-learning training runs.
#[derive(Debug, Parser)]
#[command(name = "runyard", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server.
    Serve(ServeArgs),
    /// Export, import or verify a data directory's event log.
    #[command(subcommand)]
    Journal(journal::JournalCommand),
    /// Make bearer tokens for the API.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The client commands (`submit`, `watch`, `ls`, …), talking to a running server.
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Run one Slurm job of a run (started by the job's batch script, not by hand).
    Worker(WorkerArgs),
    /// Run one rank of a Slurm run on a node other than its worker's (started by the
    /// worker's `srun`, not by hand).
    #[command(hide = true)]
    Rank(crate::worker::rank::RankArgs),
}

/// Flags of `runyard worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The job's directory in the shared directory, holding its `job.json`.
    #[arg(long)]
    pub job_dir: PathBuf,
}

/// The exit codes, shown by `runyard --help`.
const EXIT_CODES: &str = "Exit codes: 0 ok (watch, logs -f: the run completed), 1 local error (a \
file, the configuration), 2 bad command line, 3 server unreachable, 4 the server answered an \
error, 5 the watched run failed, 6 the watched run was cancelled.";

/// Flags of `runyard serve`; they win over the config file and the environment.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 (server.bind).
    #[arg(long)]
    pub bind: Option<std::net::SocketAddr>,
    /// Data directory holding the journal (server.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A TOML file layered over the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The tokens file (auth.tokens_file); see `runyard token create`.
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// When the journal holds a record that cannot be read, move it and every later
    /// record aside into a file under `journal-repairs/` and start, instead of
    /// refusing to start.
    #[arg(long)]
    pub repair: bool,
    /// Accept runs of `"kind": "command"`, which execute programs on this machine as
    /// the server's user (runs.allow_commands).
    #[arg(long)]
    pub allow_commands: bool,
}

/// Runs the parsed command line; the error is printed as one line by `main`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Journal(command) => journal::run(command),
        Command::Token(command) => token::run(command),
        Command::Client(command) => client::run(command).map_err(anyhow::Error::from),
        Command::Worker(args) => crate::worker::run(&args.job_dir),
        Command::Rank(args) => {
            let code = crate::worker::rank::run(&args)?;
            std::process::exit(code)
        }
    }
}

/// The process exit code for an error from [`run`]: the client's own codes (see
/// [`client::ClientError::exit_code`]), else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<client::ClientError>()
        .map_or(client::EXIT_LOCAL, client::ClientError::exit_code)
}
