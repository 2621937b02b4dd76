//! `submit`, `ls`, `show`, `events`, `cancel`, `pause`, `resume`.

use std::io::Read as _;
use std::path::PathBuf;

use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::Value;

use super::api::Client;
use super::common::{print_json, ClientError, Connection, Output, OutputArg};
use super::output::{
    bytes, describe, duration, local_time, num, progress_line, segment, table, text, ValMetric,
};
use super::watch::{self, WatchOptions};

/// Arguments of `runyard submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The spec file: `.json`, `.yaml`/`.yml` or `.toml` (sent with the matching
    /// content type); any other name, or `-` for stdin, is sent as JSON.
    pub spec: PathBuf,
    /// Then follow the run as `runyard watch` does, and exit with its outcome.
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

/// Arguments of `runyard ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only runs in this state (queued, starting, running, pausing, paused,
    /// completed, failed, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// Only runs with this label: `key=value`, or `key` for any value; repeatable,
    /// all must match.
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub label: Vec<String>,
    /// The order: `-created_at` (the default, newest first), `created_at`,
    /// `updated_at`, `-updated_at`, `name`, `-name`, `queue` (queued runs in the order
    /// they will start) or `-queue`.
    #[arg(long)]
    pub sort: Option<String>,
    /// At most this many runs (1 to 1,000), the first in the order; the table is
    /// followed on stderr by how many match in all.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `--output`.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Arguments of `runyard show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The run's id.
    pub id: String,
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `--output`.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Arguments of `runyard events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// The run's id.
    pub id: String,
    /// Only events after this sequence number.
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Only events of this name (`EpochEvaluated`, `RunPaused`, …); repeatable.
    #[arg(long = "type", value_name = "EVENT")]
    pub types: Vec<String>,
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `--output`.
    #[command(flatten)]
    pub output: OutputArg,
}

/// Arguments of `runyard cancel | pause | resume`.
#[derive(Debug, clap::Args)]
pub struct ActionArgs {
    /// The run's id.
    pub id: String,
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `--output`.
    #[command(flatten)]
    pub output: OutputArg,
}

/// What `action` asks the server for.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// `POST /runs/{id}/cancel`.
    Cancel,
    /// `POST /runs/{id}/pause`.
    Pause,
    /// `POST /runs/{id}/resume`.
    Resume,
}

pub(super) fn content_type(spec: &std::path::Path) -> &'static str {
    match spec
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("yaml" | "yml") => "application/yaml",
        Some("toml") => "application/toml",
        _ => "application/json",
    }
}

pub(super) fn read_spec(spec: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    if spec.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Local(format!("cannot read the spec from stdin: {e}")))?;
        return Ok(body);
    }
    std::fs::read(spec)
        .map_err(|e| ClientError::Local(format!("cannot read spec file {}: {e}", spec.display())))
}

/// `runyard submit`.
pub async fn submit(args: SubmitArgs) -> Result<(), ClientError> {
    let body = read_spec(&args.spec)?;
    let client = Client::new(&args.connection)?;
    let request = client
        .request(Method::POST, "/api/v1/runs")
        .header(CONTENT_TYPE, content_type(&args.spec))
        .body(body);
    let response = client.send(request).await?;
    let created = response.status().as_u16() == 201;
    let run = client.json(response).await?;
    let id = text(&run["id"]);
    let summary = if created {
        format!("created run {id} ({})", text(&run["state"]))
    } else {
        format!(
            "existing run {id} ({}): the same spec was submitted before",
            text(&run["state"])
        )
    };
    if !args.watch {
        return match args.output.output {
            Output::Json => print_json(&run),
            Output::Table => {
                outln!("{summary}");
                Ok(())
            }
        };
    }
    // With --watch, stdout is for the run's lines (or, in JSON mode, its final state).
    match args.output.output {
        Output::Json => eprintln!("{summary}"),
        Output::Table => outln!("{summary}"),
    }
    watch::follow(&client, &id, &args.watch_options, args.output.output).await
}

/// `runyard ls`.
pub async fn ls(args: LsArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(state) = &args.state {
        query.push(("state", state.clone()));
    }
    query.extend(args.label.iter().map(|l| ("label", l.clone())));
    if let Some(sort) = &args.sort {
        query.push(("sort", sort.clone()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let request = client.request(Method::GET, "/api/v1/runs").query(&query);
    let response = client.send(request).await?;
    let total = response
        .headers()
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let runs = client.json(response).await?;
    if args.output.output == Output::Json {
        return print_json(&runs);
    }
    let shown = runs.as_array().map_or(0, Vec::len) as u64;
    let rows: Vec<Vec<String>> = runs
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|run| {
            vec![
                text(&run["id"]),
                text(&run["name"]),
                state_of(run),
                format!(
                    "{}/{}",
                    text(&run["metrics"]["epochs_completed"]),
                    text(&run["spec"]["epochs"])
                ),
                run["progress"]["percent"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |p| format!("{p:.1}%")),
                num(&run["metrics"]["train_loss"]),
                val_cell(run),
                local_time(&run["created_at"]),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &["ID", "NAME", "STATE", "EPOCHS", "PROGRESS", "LOSS", "VAL", "CREATED"],
            &rows
        )
    );
    if let Some(total) = total.filter(|t| *t > shown) {
        eprintln!("{shown} of {total} matching runs shown (--limit)");
    }
    Ok(())
}

/// A run's newest validation metric, named: `acc 0.9312` or `mae 0.1234`; `-` before
/// its first evaluation.
fn val_cell(run: &Value) -> String {
    let val = ValMetric::of(run);
    let value = val.value(&run["metrics"], false);
    if value.is_null() {
        return "-".into();
    }
    match val {
        ValMetric::Accuracy => format!("acc {}", num(value)),
        ValMetric::Mae => format!("mae {}", num(value)),
        ValMetric::Unnamed => num(value),
    }
}

/// The state, with `(stalled)` or `(cancelling)` when that applies.
fn state_of(run: &Value) -> String {
    let mut state = text(&run["state"]);
    if run["stalled"] == true {
        state.push_str(" (stalled)");
    }
    if run["cancel_requested"] == true {
        state.push_str(" (cancelling)");
    }
    state
}

/// `runyard show`.
pub async fn show(args: ShowArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    let run = client
        .get_json(&format!("/api/v1/runs/{}", segment(&args.id)))
        .await?;
    match args.output.output {
        Output::Json => print_json(&run),
        Output::Table => {
            out!("{}", describe_run(&run));
            Ok(())
        }
    }
}

/// A Slurm run's job, e.g. `job 41 (1st of the run) on node1, RUNNING, worker
/// 10.0.0.5:4000`; `None` for a local run or before its first job.
fn slurm_line(run: &Value) -> Option<String> {
    let job = run["slurm"].as_object()?;
    let live = &run["slurm_live"];
    let mut line = format!(
        "job {} (#{} of the run)",
        text(&job["job_id"]),
        text(&job["job"])
    );
    if let Some(node) = job["node"].as_str() {
        line += &format!(" on {node}");
    }
    match (job["ended"].as_str(), live["state"].as_str()) {
        (Some(ended), _) => line += &format!(", ended {ended}"),
        (None, Some(state)) => {
            line += &format!(", {state}");
            if let Some(reason) = live["reason"].as_str().filter(|r| *r != "None") {
                line += &format!(" ({reason})");
            }
        }
        (None, None) => {}
    }
    if let Some(worker) = live["worker"].as_str() {
        line += &format!(", worker {worker}");
    }
    if live["unreachable"] == true {
        line += ", UNREACHABLE";
    }
    if job["lost"].as_u64().unwrap_or(0) > 0 {
        line += &format!(", {} job(s) lost to the cluster", text(&job["lost"]));
    }
    Some(line)
}

/// The `show` text of a run.
pub(super) fn describe_run(run: &Value) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("id", text(&run["id"])),
        ("name", text(&run["name"])),
        ("state", state_of(run)),
        ("digest", text(&run["digest"])),
        ("created", local_time(&run["created_at"])),
        ("updated", local_time(&run["updated_at"])),
        (
            "attempt",
            format!(
                "{} (retries {}, device {}, slots {})",
                text(&run["attempt"]),
                text(&run["retries"]),
                text(&run["device"]),
                run["slots"]
                    .as_array()
                    .filter(|s| !s.is_empty())
                    .map_or_else(
                        || "none".into(),
                        |s| s.iter().map(text).collect::<Vec<_>>().join(",")
                    )
            ),
        ),
        ("priority", text(&run["priority"])),
    ];
    if let Some(position) = run["queue_position"].as_u64() {
        fields.push(("queue", format!("position {position}")));
    }
    if let Some(line) = slurm_line(run) {
        fields.push(("slurm", line));
    }
    let metrics = &run["metrics"];
    let val = ValMetric::of(run);
    fields.push((
        "epochs",
        format!(
            "{}/{} done, train loss {}, acc {}, val loss {}, {} {} (best {}), {} training",
            text(&metrics["epochs_completed"]),
            text(&run["spec"]["epochs"]),
            num(&metrics["train_loss"]),
            num(&metrics["train_accuracy"]),
            num(&metrics["val_loss"]),
            val.words(),
            num(val.value(metrics, false)),
            num(val.value(metrics, true)),
            metrics["training_time_ms"]
                .as_f64()
                .map_or_else(|| "-".into(), |ms| duration(ms / 1000.0)),
        ),
    ));
    let progress = &run["progress"];
    if progress.is_object() {
        fields.push(("progress", progress_line(progress)));
    }
    let checkpoint = &run["checkpoint"];
    if checkpoint.is_object() {
        fields.push((
            "checkpoint",
            describe("CheckpointSaved", checkpoint, val)
                + &format!(" {}", text(&checkpoint["path"])),
        ));
    }
    for artifact in run["artifacts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        fields.push((
            "artifact",
            format!(
                "{} ({}, sha256 {})",
                text(&artifact["name"]),
                bytes(&artifact["bytes"]),
                text(&artifact["sha256"])
            ),
        ));
    }
    if !run["error"].is_null() {
        fields.push(("error", text(&run["error"])));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in &fields {
        out.push_str(&format!("{key:<width$}  {value}\n"));
    }
    let epochs = run["epochs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !epochs.is_empty() {
        out.push('\n');
        let val_header = val.name().to_ascii_uppercase();
        let rows: Vec<Vec<String>> = epochs
            .iter()
            .map(|e| {
                vec![
                    text(&e["epoch"]),
                    num(&e["train_loss"]),
                    num(&e["train_accuracy"]),
                    num(&e["val_loss"]),
                    num(&e["val_metric"]),
                    e["duration_ms"]
                        .as_f64()
                        .map_or_else(|| "-".into(), |ms| duration(ms / 1000.0)),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "EPOCH",
                "TRAIN_LOSS",
                "TRAIN_ACC",
                "VAL_LOSS",
                &val_header,
                "TIME",
            ],
            &rows,
        ));
    }
    out
}

/// `runyard events`.
pub async fn events(args: EventsArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    let mut request = client.request(
        Method::GET,
        &format!("/api/v1/runs/{}/events", segment(&args.id)),
    );
    if let Some(after) = args.after {
        request = request.query(&[("after", after)]);
    }
    if let Some(limit) = args.limit {
        request = request.query(&[("limit", limit)]);
    }
    for kind in &args.types {
        request = request.query(&[("type", kind)]);
    }
    let response = client.send(request).await?;
    let events = client.json(response).await?;
    if args.output.output == Output::Json {
        return print_json(&events);
    }
    // The events carry `val_metric`; the run's task says what it measures.
    let val = client
        .get_json(&format!("/api/v1/runs/{}", segment(&args.id)))
        .await
        .map_or(ValMetric::Unnamed, |run| ValMetric::of(&run));
    let rows: Vec<Vec<String>> = events
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let kind = e["type"].as_str().unwrap_or("?");
            vec![
                text(&e["seq"]),
                local_time(&e["at"]),
                kind.to_string(),
                describe(kind, &e["data"], val),
            ]
        })
        .collect();
    out!("{}", table(&["SEQ", "AT", "TYPE", "DETAILS"], &rows));
    Ok(())
}

/// `runyard cancel | pause | resume`.
pub async fn action(args: ActionArgs, action: Action) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    let verb = match action {
        Action::Cancel => "cancel",
        Action::Pause => "pause",
        Action::Resume => "resume",
    };
    let request = client.request(
        Method::POST,
        &format!("/api/v1/runs/{}/{verb}", segment(&args.id)),
    );
    let response = client.send(request).await?;
    let still_stopping = response.status().as_u16() == 202;
    let run = client.json(response).await?;
    if args.output.output == Output::Json {
        return print_json(&run);
    }
    if still_stopping {
        outln!(
            "run {}: {verb} requested, not stopped yet (state {})",
            text(&run["id"]),
            state_of(&run)
        );
    } else {
        outln!("run {}: {}", text(&run["id"]), state_of(&run));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_slurm_runs_job_is_one_line_and_a_local_run_has_none() {
        let pending = json!({
            "slurm": {"job_id": 41, "job": 1, "node": null, "ended": null, "lost": 0},
            "slurm_live": {"state": "PENDING", "reason": "Priority", "worker": null, "unreachable": false},
        });
        assert_eq!(
            slurm_line(&pending).as_deref(),
            Some("job 41 (#1 of the run), PENDING (Priority)")
        );
        let lost = json!({
            "slurm": {"job_id": 42, "job": 2, "node": "n1", "ended": null, "lost": 1},
            "slurm_live": {"state": "RUNNING", "reason": "None", "worker": "10.0.0.5:4000", "unreachable": true},
        });
        assert_eq!(
            slurm_line(&lost).as_deref(),
            Some("job 42 (#2 of the run) on n1, RUNNING, worker 10.0.0.5:4000, UNREACHABLE, 1 job(s) lost to the cluster")
        );
        let ended = json!({
            "slurm": {"job_id": 43, "job": 1, "node": "n1", "ended": "COMPLETED", "lost": 0},
        });
        assert_eq!(
            slurm_line(&ended).as_deref(),
            Some("job 43 (#1 of the run) on n1, ended COMPLETED")
        );
        assert_eq!(slurm_line(&json!({"slurm": null})), None);
    }
}
