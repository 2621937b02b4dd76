//! The client commands (`submit`, `watch`, `ls`, `show`, `events`, `cancel`, `pause`,
//! `resume`, `slots`, `logs`): each talks to a running server over its REST API,
//! through one pooled HTTP client on a current-thread runtime.
//!
//! # Layout
//!
//! - `mod.rs`: the connection flags, [`ClientError`] and its exit codes, the HTTP client.
//! - [`config`]: where the server and token come from (flags, environment, file).
//! - `output`: plain aligned tables and one-line summaries of events.
//! - `runs`: `submit`, `ls`, `show`, `events`, `cancel`, `pause`, `resume`.
//! - `slots`: `slots`.
//! - `logs`: `logs`, the last lines of a command run's output, and following them.
//! - [`sse`]: an incremental server-sent events parser.
//! - `watch`: `watch`, following a run's stream with progress bars and reconnecting.

/// `print!` to stdout, ending the process quietly when the reader went away.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::client::write_stdout(&format!($($arg)*))
    };
}

/// `println!` to stdout, ending the process quietly when the reader went away.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::client::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub mod config;
mod logs;
mod output;
mod runs;
mod slots;
pub mod sse;
mod watch;

use std::time::Duration;

use clap::Subcommand;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

pub use logs::LogsArgs;
pub use runs::{ActionArgs, EventsArgs, LsArgs, ShowArgs, SubmitArgs};
pub use slots::SlotsArgs;
pub use watch::{WatchArgs, WatchOptions};

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

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence on a connection; streams get a keep-alive comment every 15 s.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a whole answer (not streams): cancel and pause wait up to 30 s
/// server-side for the run to stop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

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
}

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
}

impl ClientError {
    /// The process exit code for this error; see the `EXIT_*` constants.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Local(_) => EXIT_LOCAL,
            ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
            ClientError::Answer { .. } => EXIT_ANSWER,
            ClientError::RunFailed { .. } => EXIT_RUN_FAILED,
            ClientError::RunCancelled { .. } => EXIT_RUN_CANCELLED,
        }
    }
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
        }
    })
}

/// The one HTTP client of the process, bound to a server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The base URL without a trailing slash, as the user gave it (for messages).
    base: String,
    token: Option<String>,
}

impl Client {
    /// Resolves the server and token (flags, environment, config file, default) and
    /// builds the pooled client.
    pub fn new(connection: &Connection) -> Result<Self, ClientError> {
        let resolved = config::resolve(connection)?;
        let url = reqwest::Url::parse(&resolved.server).map_err(|e| {
            ClientError::Local(format!("invalid server URL `{}`: {e}", resolved.server))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ClientError::Local(format!(
                "invalid server URL `{}`: expected http://HOST[:PORT] or https://HOST[:PORT]",
                resolved.server
            )));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("runyard-cli/", env!("CARGO_PKG_VERSION")));
        // A proxy from the environment is for the outside world, never for this
        // machine's own server.
        if is_loopback(&url) {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Local(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: resolved.server.trim_end_matches('/').to_string(),
            token: resolved.token,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/`) with the token attached.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request with the whole-answer timeout; an error status becomes
    /// [`ClientError::Answer`].
    pub async fn send(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        self.send_streaming(builder.timeout(REQUEST_TIMEOUT)).await
    }

    /// Sends a request without a whole-answer timeout (for streams).
    pub async fn send_streaming(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(answer_error(response).await)
        }
    }

    /// `GET path` and its JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let response = self.send(self.request(Method::GET, path)).await?;
        self.json(response).await
    }

    /// The JSON body of a successful answer.
    pub async fn json(&self, response: Response) -> Result<Value, ClientError> {
        response.json().await.map_err(|e| {
            if e.is_decode() {
                ClientError::Local(format!(
                    "the server at {} answered something that is not JSON: {}",
                    self.base,
                    innermost(&e)
                ))
            } else {
                self.unreachable(&e)
            }
        })
    }

    /// The error for a request that got no (complete) answer.
    pub fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            server: self.base.clone(),
            reason: innermost(error),
        }
    }
}

/// Whether `url` names this machine.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The most specific cause in an error's chain, e.g. `Connection refused (os error
/// 111)` rather than reqwest's `error sending request for url (…)`.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = last.source() {
        last = source;
    }
    let text = last.to_string();
    if let Some(e) = error.downcast_ref::<reqwest::Error>() {
        if e.is_timeout() && !text.contains("timed out") {
            return format!("timed out ({text})");
        }
    }
    text
}

/// Turns an error answer into [`ClientError::Answer`], from its problem+json when it
/// has one.
async fn answer_error(response: Response) -> ClientError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(problem) if problem.get("code").is_some() => ClientError::Answer {
            status: status.as_u16(),
            code: problem["code"].as_str().unwrap_or("unknown").to_string(),
            detail: problem["detail"]
                .as_str()
                .or(problem["title"].as_str())
                .unwrap_or("no detail")
                .to_string(),
        },
        _ => ClientError::Answer {
            status: status.as_u16(),
            code: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            detail: short(&text),
        },
    }
}

/// At most one line and 200 characters of a non-problem answer body.
fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return "no detail".into();
    }
    let mut out: String = line.chars().take(200).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// Whether a status is worth retrying while following a stream (the server is
/// restarting or overloaded).
fn retryable(status: u16) -> bool {
    StatusCode::from_u16(status).is_ok_and(|s| s.is_server_error())
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
fn print_json(value: &Value) -> Result<(), ClientError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ClientError::Local(format!("cannot print JSON: {e}")))?;
    outln!("{text}");
    Ok(())
}
