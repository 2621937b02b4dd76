//! The `runyard` command line: one file per command.

pub mod journal;
pub mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A crash-safe orchestrator for machine-learning training runs.
#[derive(Debug, Parser)]
#[command(name = "runyard", version, about)]
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
}

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
    /// When the journal holds a record that cannot be read, move it and every later
    /// record aside into a file under `journal-repairs/` and start, instead of
    /// refusing to start.
    #[arg(long)]
    pub repair: bool,
}

/// Runs the parsed command line; the error is printed as one line by `main`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Journal(command) => journal::run(command),
    }
}
