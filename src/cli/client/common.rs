//! What every client command shares: the connection and output flags, the errors
//! and their exit codes, and writing to stdout.

use serde_json::Value;

/// Exit code: the command worked (for `watch`, the run completed).
pub const EXIT_OK: u8 = 0;
/// Exit code: a local problem (unreadable spec or config file, invalid server URL).
pub const EXIT_LOCAL: u8 = 1;
/// Exit code: the command line itself was wrong (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the server could not be reached (or, for `watch`, not reached again
/// within `--retry-for`).
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the server answered with an error (`404 run_not_found`, `409`, `422`, …).
pub const EXIT_ANSWER: u8 = 4;
/// Exit code: the watched run failed.
pub const EXIT_RUN_FAILED: u8 = 5;
/// Exit code: the watched run was cancelled.
pub const EXIT_RUN_CANCELLED: u8 = 6;

/// Where the server is and who is asking; on every client command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Connection {
    /// The server's base URL; default `server` in the config file, else
    /// http://127.0.0.1:8080.
    #[arg(long, env = "RUNYARD_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Sent as `Authorization: Bearer TOKEN`; default `token` in the config file.
    #[arg(long, env = "RUNYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// How read commands print what they got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned plain-text tables and lines.
    #[default]
    Table,
    /// The server's JSON, pretty-printed.
    Json,
}

/// The `--output` flag of read commands.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct OutputArg {
    /// `table` (aligned text) or `json` (the server's JSON, pretty-printed).
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: Output,
}

/// Why a client command failed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Something on this machine: a file, the configuration, the URL.
    #[error("{0}")]
    Local(String),
    /// No answer from the server: refused, timed out, reset.
    #[error("cannot reach the server at {server}: {reason}")]
    Unreachable {
        /// The base URL tried.
        server: String,
        /// The innermost cause, e.g. `Connection refused (os error 111)`.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("the server answered {status} {code}: {detail}")]
    Answer {
        /// The HTTP status.
        status: u16,
        /// The problem's `code`, e.g. `run_not_found`.
        code: String,
        /// The problem's `detail`.
        detail: String,
    },
    /// The watched run ended failed.
    #[error("run {id} failed: {reason}")]
    RunFailed {
        /// The run.
        id: String,
        /// The run's `error`.
        reason: String,
    },
    /// The watched run ended cancelled.
    #[error("run {id} was cancelled: {reason}")]
    RunCancelled {
        /// The run.
        id: String,
        /// The run's `error`.
        reason: String,
    },
    /// The watched sweep ended cancelled.
    #[error("sweep {id} was cancelled: {reason}")]
    SweepCancelled {
        /// The sweep.
        id: String,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// The process exit code for this error; see the `EXIT_*` constants.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Local(_) => EXIT_LOCAL,
            ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
            ClientError::Answer { .. } => EXIT_ANSWER,
            ClientError::RunFailed { .. } => EXIT_RUN_FAILED,
            ClientError::RunCancelled { .. } | ClientError::SweepCancelled { .. } => {
                EXIT_RUN_CANCELLED
            }
        }
    }
}

/// Writes `text` to stdout. A reader that went away (`runyard ls | head`) ends the
/// process quietly, as `SIGPIPE` would; any other failure ends it with exit code 1.
pub fn write_stdout(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(EXIT_OK));
        }
        eprintln!("runyard: cannot write to stdout: {e}");
        std::process::exit(i32::from(EXIT_LOCAL));
    }
}

/// Prints `value` pretty-printed on stdout.
pub(super) fn print_json(value: &Value) -> Result<(), ClientError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ClientError::Local(format!("cannot print JSON: {e}")))?;
    outln!("{text}");
    Ok(())
}
