//! `runyard sweep submit | ls | show | watch | cancel | pause | resume`.
//!
//! `watch` follows the sweep's stream (reconnecting as `runyard watch` does) and keeps
//! a table of its trials from the events themselves — which trial was made with what
//! point, the rung results, promotions, stops and each trial run's state — redrawn in
//! place on stderr when it is a terminal, with one line per sweep decision above it;
//! at the end it prints the final table and the best trial, and exits 0 when the
//! sweep completed, 6 when it was cancelled.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::Value;

use super::api::Client;
use super::common::{print_json, ClientError, Connection, Output, OutputArg};
use super::output::{event_line, local_time, num, segment, table, text, ValMetric};
use super::runs::{content_type, read_spec};
use super::watch::{follow_stream, Sink, WatchOptions};

/// Events after which a sweep's stream ends.
const TERMINAL: [&str; 2] = ["SweepCompleted", "SweepCancelled"];

/// The sweep's own decisions, printed one line each while watching.
const DECISIONS: [&str; 9] = [
    "SweepSubmitted",
    "TrialCreated",
    "TrialReachedRung",
    "TrialPromoted",
    "TrialStopped",
    "SweepPaused",
    "SweepResumed",
    "SweepCompleted",
    "SweepCancelled",
];

/// Shortest time between two redraws of the live table.
const REDRAW_EVERY: Duration = Duration::from_millis(150);

/// Arguments of `runyard sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SweepCommand,
}

/// The `runyard sweep` commands.
#[derive(Debug, clap::Subcommand)]
pub enum SweepCommand {
    /// Submit a sweep spec (JSON, YAML or TOML, by the file's extension; `-` reads
    /// JSON from stdin) and print the sweep's id.
    Submit(SubmitArgs),
    /// List sweeps, newest first.
    Ls(ListArgs),
    /// Show one sweep and its trials.
    Show(IdArgs),
    /// Follow a sweep live: a table of its trials and one line per decision; exits 0
    /// when it completes, 6 when it is cancelled.
    Watch(WatchArgs),
    /// Cancel a sweep: no more trials, and its live trials are cancelled.
    Cancel(IdArgs),
    /// Pause a sweep: nothing more is decided, and its training trials pause.
    Pause(IdArgs),
    /// Resume a paused sweep.
    Resume(IdArgs),
}

/// Arguments of `runyard sweep submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The sweep spec file: `.json`, `.yaml`/`.yml` or `.toml`; `-` for JSON on stdin.
    pub spec: PathBuf,
    /// Then follow the sweep as `runyard sweep watch` does.
    #[arg(long)]
    pub watch: bool,
    /// Options of `--watch`.
    #[command(flatten)]
    pub watch_options: WatchOptions,
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `--output`.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Arguments of `runyard sweep ls`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `--output`.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Arguments of the commands about one sweep.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The sweep's id.
    pub id: String,
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `--output`.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Arguments of `runyard sweep watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The sweep's id.
    pub id: String,
    /// How to follow the stream.
    #[command(flatten)]
    pub options: WatchOptions,
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `--output`.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Runs one `runyard sweep` command.
pub async fn run(args: SweepArgs) -> Result<(), ClientError> {
    match args.command {
        SweepCommand::Submit(args) => submit(args).await,
        SweepCommand::Ls(args) => ls(args).await,
        SweepCommand::Show(args) => show(args).await,
        SweepCommand::Watch(args) => {
            let client = Client::new(&args.connection)?;
            follow(&client, &args.id, &args.options, args.output.output).await
        }
        SweepCommand::Cancel(args) => action(args, "cancel").await,
        SweepCommand::Pause(args) => action(args, "pause").await,
        SweepCommand::Resume(args) => action(args, "resume").await,
    }
}

/// One line about a sweep: `sweep ID (running): asha on val_accuracy (max), rungs
/// 1/3/9, 27 trials at most`.
fn summary(sweep: &Value) -> String {
    let rungs: Vec<String> = sweep["rungs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(text)
        .collect();
    format!(
        "sweep {} ({}): {} on {} ({}), rungs {}, {} trials at most, {} at once",
        text(&sweep["id"]),
        text(&sweep["state"]),
        text(&sweep["searcher"]),
        text(&sweep["metric"]),
        text(&sweep["mode"]),
        rungs.join("/"),
        text(&sweep["max_trials"]),
        text(&sweep["max_concurrent"]),
    )
}

async fn submit(args: SubmitArgs) -> Result<(), ClientError> {
    let body = read_spec(&args.spec)?;
    let client = Client::new(&args.connection)?;
    let request = client
        .request(Method::POST, "/api/v1/sweeps")
        .header(CONTENT_TYPE, content_type(&args.spec))
        .body(body);
    let response = client.send(request).await?;
    let sweep = client.json(response).await?;
    let line = format!("created {}", summary(&sweep));
    if !args.watch {
        return match args.output.output {
            Output::Json => print_json(&sweep),
            Output::Table => {
                outln!("{line}");
                Ok(())
            }
        };
    }
    match args.output.output {
        Output::Json => eprintln!("{line}"),
        Output::Table => outln!("{line}"),
    }
    let id = text(&sweep["id"]);
    follow(&client, &id, &args.watch_options, args.output.output).await
}

/// `27 (3 finished, 24 stopped)`: the trials by status.
fn counts(sweep: &Value) -> String {
    let counts = &sweep["counts"];
    let total: u64 = ["training", "waiting", "finished", "stopped", "failed"]
        .iter()
        .filter_map(|k| counts[*k].as_u64())
        .sum();
    let parts: Vec<String> = ["training", "waiting", "finished", "stopped", "failed"]
        .iter()
        .filter_map(|k| {
            let n = counts[*k].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{n} {k}"))
        })
        .collect();
    if parts.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", parts.join(", "))
    }
}

async fn ls(args: ListArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    let sweeps = client.get_json("/api/v1/sweeps").await?;
    if args.output.output == Output::Json {
        return print_json(&sweeps);
    }
    let rows: Vec<Vec<String>> = sweeps
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                text(&s["id"]),
                text(&s["name"]),
                text(&s["state"]),
                text(&s["searcher"]),
                counts(s),
                best_line(s),
                local_time(&s["created_at"]),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &["ID", "NAME", "STATE", "SEARCHER", "TRIALS", "BEST", "CREATED"],
            &rows
        )
    );
    Ok(())
}

/// `trial 4 val_accuracy 0.9722`, or `-`.
fn best_line(sweep: &Value) -> String {
    let best = &sweep["best"];
    if best.is_null() {
        return "-".into();
    }
    format!(
        "trial {} {} {}",
        text(&best["number"]),
        text(&sweep["metric"]),
        num(&best["metric"])
    )
}

/// A point value for a table cell: numbers to four significant digits.
fn cell(value: &Value) -> String {
    match value.as_f64() {
        Some(v) if !value.is_i64() && !value.is_u64() => format!("{v:.4e}")
            .parse::<f64>()
            .map_or_else(|_| v.to_string(), |v| format!("{v}")),
        _ => text(value).replace(' ', ""),
    }
}

/// The trials table of a sweep view.
fn trials_table(sweep: &Value) -> String {
    let trials = sweep["trials"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let fields: Vec<String> = trials
        .iter()
        .filter_map(|t| t["point"].as_object())
        .flat_map(|p| p.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let metric = text(&sweep["metric"]).to_uppercase();
    let mut headers: Vec<&str> = vec!["TRIAL", "STATUS", "RUNG", &metric, "RUN STATE"];
    headers.extend(fields.iter().map(String::as_str));
    headers.push("RUN");
    let rows: Vec<Vec<String>> = trials
        .iter()
        .map(|t| {
            let mut row = vec![
                text(&t["number"]),
                text(&t["status"]),
                t["rung"].as_u64().map_or_else(
                    || t["results"].as_array().map_or(0, Vec::len).to_string(),
                    |r| r.to_string(),
                ),
                num(&t["metric"]),
                text(&t["run_state"]),
            ];
            row.extend(fields.iter().map(|f| cell(&t["point"][f])));
            row.push(text(&t["run_id"]));
            row
        })
        .collect();
    table(&headers, &rows)
}

async fn show(args: IdArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    let sweep = client
        .get_json(&format!("/api/v1/sweeps/{}", segment(&args.id)))
        .await?;
    if args.output.output == Output::Json {
        return print_json(&sweep);
    }
    outln!("{}", summary(&sweep));
    outln!("trials {}", counts(&sweep));
    outln!("best {}", best_line(&sweep));
    if let Some(reason) = sweep["reason"].as_str() {
        outln!("reason {reason}");
    }
    out!("{}", trials_table(&sweep));
    Ok(())
}

async fn action(args: IdArgs, what: &str) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    let path = format!("/api/v1/sweeps/{}/{what}", segment(&args.id));
    let response = client.send(client.request(Method::POST, &path)).await?;
    let sweep = client.json(response).await?;
    match args.output.output {
        Output::Json => print_json(&sweep),
        Output::Table => {
            outln!("{}", summary(&sweep));
            Ok(())
        }
    }
}

/// Follows sweep `id` to its end: `Ok` when it completed,
/// [`ClientError::SweepCancelled`] when it was cancelled.
async fn follow(
    client: &Client,
    id: &str,
    options: &WatchOptions,
    output: Output,
) -> Result<(), ClientError> {
    let path = format!("/api/v1/sweeps/{}", segment(id));
    let sweep = client.get_json(&path).await?;
    let mut display = LiveTable::new(&sweep, output);
    let terminal = follow_stream(
        client,
        &format!("{path}/stream"),
        options,
        &TERMINAL,
        &mut display,
    )
    .await?;
    let sweep = client.get_json(&path).await?;
    match output {
        Output::Json => print_json(&sweep)?,
        Output::Table => {
            out!("{}", trials_table(&sweep));
            outln!("{}", summary(&sweep));
            outln!("best {}", best_line(&sweep));
        }
    }
    if terminal == "SweepCancelled" {
        return Err(ClientError::SweepCancelled {
            id: id.to_string(),
            reason: text(&sweep["reason"]),
        });
    }
    Ok(())
}

/// One trial as the stream has told of it.
#[derive(Debug, Clone, Default)]
struct Row {
    status: String,
    rung: u64,
    metric: Option<f64>,
    run_state: String,
    epochs: u64,
    point: String,
}

/// The live table of `watch`: built from the events, drawn on stderr.
struct LiveTable {
    metric: String,
    top: u64,
    rows: BTreeMap<u64, Row>,
    /// Trial number by run id.
    runs: BTreeMap<String, u64>,
    /// Lines go to stderr (stdout holds the final JSON).
    lines_to_stderr: bool,
    /// Whether the table is drawn (stderr is a terminal).
    live: bool,
    /// Lines the table took when last drawn.
    drawn: usize,
    last_draw: Option<Instant>,
}

impl LiveTable {
    fn new(sweep: &Value, output: Output) -> Self {
        let top = sweep["rungs"]
            .as_array()
            .map_or(0, |r| r.len().saturating_sub(1) as u64);
        Self {
            metric: text(&sweep["metric"]),
            top,
            rows: BTreeMap::new(),
            runs: BTreeMap::new(),
            lines_to_stderr: output == Output::Json,
            live: std::io::stderr().is_terminal(),
            drawn: 0,
            last_draw: None,
        }
    }

    fn render(&self) -> String {
        let metric = self.metric.to_uppercase();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|(n, r)| {
                vec![
                    n.to_string(),
                    r.status.clone(),
                    r.rung.to_string(),
                    r.metric.map_or_else(|| "-".into(), |m| format!("{m:.4}")),
                    r.run_state.clone(),
                    r.epochs.to_string(),
                    r.point.clone(),
                ]
            })
            .collect();
        table(
            &[
                "TRIAL",
                "STATUS",
                "RUNG",
                &metric,
                "RUN STATE",
                "EPOCHS",
                "POINT",
            ],
            &rows,
        )
    }

    /// Erases the table drawn last.
    fn erase(&mut self) {
        if self.live && self.drawn > 0 {
            eprint!("\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self, force: bool) {
        if !self.live || (!force && self.last_draw.is_some_and(|t| t.elapsed() < REDRAW_EVERY)) {
            return;
        }
        self.erase();
        let text = self.render();
        self.drawn = text.lines().count();
        eprint!("{text}");
        let _ = std::io::stderr().flush();
        self.last_draw = Some(Instant::now());
    }

    fn print_line(&mut self, line: &str) {
        self.erase();
        if self.lines_to_stderr {
            eprintln!("{line}");
        } else {
            outln!("{line}");
        }
        self.draw(true);
    }

    fn row_of_run(&mut self, run: &str) -> Option<&mut Row> {
        let n = *self.runs.get(run)?;
        self.rows.get_mut(&n)
    }
}

impl Sink for LiveTable {
    fn event(&mut self, name: &str, data: &Value) {
        let d = &data["data"];
        let trial = d["trial"].as_u64();
        match (name, trial) {
            ("TrialCreated", Some(n)) => {
                self.runs.insert(text(&d["run"]), n);
                let point = d["point"]
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(k, v)| format!("{k}={}", cell(v)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                self.rows.insert(
                    n,
                    Row {
                        status: "training".into(),
                        run_state: "queued".into(),
                        point,
                        ..Row::default()
                    },
                );
            }
            ("TrialReachedRung", Some(n)) => {
                let top = self.top;
                if let Some(row) = self.rows.get_mut(&n) {
                    let rung = d["rung"].as_u64().unwrap_or(0);
                    row.rung = rung;
                    row.metric = d["metric"].as_f64();
                    row.status = if rung >= top { "finished" } else { "waiting" }.into();
                }
            }
            ("TrialPromoted", Some(n)) => {
                if let Some(row) = self.rows.get_mut(&n) {
                    row.status = "training".into();
                    row.rung = d["rung"].as_u64().unwrap_or(row.rung);
                }
            }
            ("TrialStopped", Some(n)) => {
                if let Some(row) = self.rows.get_mut(&n) {
                    row.status = "stopped".into();
                }
            }
            _ => {
                // A trial run's own event: its state and epochs.
                let run = text(&data["run_id"]);
                let state = match name {
                    "RunStarted" | "ResumedFromCheckpoint" => Some("running"),
                    "RunPaused" => Some("paused"),
                    "RunResumed" | "RunRequeued" | "RunRetryScheduled" => Some("queued"),
                    "RunCompleted" => Some("completed"),
                    "RunFailed" => Some("failed"),
                    "RunCancelled" => Some("cancelled"),
                    _ => None,
                };
                if let Some(row) = self.row_of_run(&run) {
                    if let Some(state) = state {
                        row.run_state = state.into();
                        if state == "failed" {
                            row.status = "failed".into();
                        }
                    }
                    if name == "EpochCompleted" {
                        row.epochs = d["epoch"].as_u64().unwrap_or(row.epochs);
                    }
                }
            }
        }
        if DECISIONS.contains(&name) || name == "RunFailed" {
            // Decisions and failures only: no epoch's validation metric to name.
            self.print_line(&event_line(data, ValMetric::Unnamed));
        } else {
            self.draw(false);
        }
    }

    fn progress(&mut self, _data: &Value) {}

    fn note(&self, note: &str) {
        eprintln!("runyard: {note}");
    }

    fn finish(&mut self) {
        self.erase();
    }
}
