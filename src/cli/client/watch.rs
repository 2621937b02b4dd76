//! `runyard watch ID`: follows a run's event stream to its end. Lifecycle events are
//! printed one line each on stdout (stderr with `--output json`, whose stdout holds
//! only the final run); progress is drawn as two bars on stderr when it is a terminal
//! (epochs; batches of the current epoch), and as a plain line every few seconds when
//! it is not. A dropped connection is retried with backoff, resuming after the last
//! event seen (`Last-Event-ID`), so no line is printed twice or missed. A paused run is
//! followed on: resuming it continues the same stream.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Method, Response};
use serde_json::Value;

use super::api::{retryable, Client};
use super::common::{print_json, ClientError, Connection, Output, OutputArg};
use super::output::{duration, event_line, num, progress_line, segment, text, ValMetric};
use super::sse::SseParser;

/// First wait before reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Events after which a run's stream ends.
const TERMINAL: [&str; 3] = ["RunCompleted", "RunFailed", "RunCancelled"];

/// Options of following a stream, shared by `watch` and `submit --watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchOptions {
    /// After the connection drops, keep trying to reach the server again for this
    /// many seconds before giving up (exit code 3).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub retry_for: u64,
}

/// Arguments of `runyard watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The run's id.
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

/// `runyard watch`.
pub async fn run(args: WatchArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    follow(&client, &args.id, &args.options, args.output.output).await
}

/// What a followed stream's events go to.
pub trait Sink {
    /// A lifecycle event (printed once, in order, across reconnections).
    fn event(&mut self, name: &str, data: &Value);
    /// A progress sample.
    fn progress(&mut self, data: &Value);
    /// A note about the connection.
    fn note(&self, note: &str);
    /// The stream is over (or given up on): stop drawing.
    fn finish(&mut self);
}

/// Follows the stream at `path` until one of the `terminal` events, reconnecting
/// with backoff after a dropped connection and resuming after the last event seen;
/// answers the terminal event's name.
pub async fn follow_stream(
    client: &Client,
    path: &str,
    options: &WatchOptions,
    terminal: &[&str],
    sink: &mut dyn Sink,
) -> Result<String, ClientError> {
    let mut cursor = Cursor::default();
    let mut connected_once = false;
    let mut lost_since: Option<Instant> = None;
    let mut noted_reconnect = false;
    let mut backoff = FIRST_BACKOFF;
    let retry_for = Duration::from_secs(options.retry_for);
    loop {
        let mut request = client.request(Method::GET, path);
        if let Some(seq) = cursor.last_seq {
            request = request.header("Last-Event-ID", seq.to_string());
        }
        let failure = match client.send_streaming(request).await {
            Ok(response) => {
                connected_once = true;
                if lost_since.is_some() && !noted_reconnect {
                    noted_reconnect = true;
                    sink.note("reconnected; resuming the stream");
                }
                let received = cursor.received;
                let result = read_stream(client, response, &mut cursor, terminal, sink).await;
                if cursor.received > received {
                    // Only a connection that delivered something ends an outage: one
                    // that is accepted and closed at once keeps backing off.
                    lost_since = None;
                    noted_reconnect = false;
                    backoff = FIRST_BACKOFF;
                }
                match result {
                    Ok(()) => ClientError::Unreachable {
                        server: client.base().to_string(),
                        reason: "the stream ended before its last event".into(),
                    },
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        if let Some(terminal) = cursor.terminal.take() {
            sink.finish();
            return Ok(terminal);
        }
        let retry = match &failure {
            ClientError::Unreachable { .. } => connected_once,
            ClientError::Answer { status, .. } => connected_once && retryable(*status),
            _ => false,
        };
        if !retry {
            sink.finish();
            return Err(failure);
        }
        let since = *lost_since.get_or_insert_with(|| {
            sink.note(&format!("connection lost ({failure}); reconnecting"));
            Instant::now()
        });
        if since.elapsed() >= retry_for {
            sink.finish();
            return Err(failure);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Follows run `id` to its end and turns its outcome into the result: `Ok` when it
/// completed, [`ClientError::RunFailed`] or [`ClientError::RunCancelled`] otherwise.
pub async fn follow(
    client: &Client,
    id: &str,
    options: &WatchOptions,
    output: Output,
) -> Result<(), ClientError> {
    // The stream's events carry `val_metric`; the run's task says what it measures.
    // A run that cannot be read yet is left for the stream to report.
    let val = client
        .get_json(&format!("/api/v1/runs/{}", segment(id)))
        .await
        .map_or(ValMetric::Unnamed, |run| ValMetric::of(&run));
    let mut display = Display::new(output, val);
    let path = format!("/api/v1/runs/{}/stream", segment(id));
    let terminal = follow_stream(client, &path, options, &TERMINAL, &mut display).await?;
    let run = client
        .get_json(&format!("/api/v1/runs/{}", segment(id)))
        .await;
    let (state, reason) = match &run {
        Ok(run) => (text(&run["state"]), text(&run["error"])),
        Err(_) => (
            match terminal.as_str() {
                "RunCompleted" => "completed",
                "RunFailed" => "failed",
                _ => "cancelled",
            }
            .to_string(),
            "-".to_string(),
        ),
    };
    match (&run, output) {
        (Ok(run), Output::Json) => print_json(run)?,
        (Ok(run), Output::Table) if state == "completed" => {
            let m = &run["metrics"];
            let val = ValMetric::of(run);
            outln!(
                "run {id} completed: {} epochs, train loss {}, acc {}, {} {}, {} training",
                text(&m["epochs_completed"]),
                num(&m["train_loss"]),
                num(&m["train_accuracy"]),
                val.words(),
                num(val.value(m, false)),
                m["training_time_ms"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |ms| duration(ms / 1000.0)),
            );
        }
        _ => {}
    }
    match state.as_str() {
        "completed" => Ok(()),
        "failed" => Err(ClientError::RunFailed {
            id: id.to_string(),
            reason,
        }),
        _ => Err(ClientError::RunCancelled {
            id: id.to_string(),
            reason,
        }),
    }
}

/// How far a watch has got.
#[derive(Debug, Default)]
struct Cursor {
    /// The sequence number of the last lifecycle event printed.
    last_seq: Option<u64>,
    /// The terminal event's type, once seen.
    terminal: Option<String>,
    /// Chunks received so far (the server's first is its `retry:` hint).
    received: u64,
}

/// Reads one connection's events until it ends (`Ok`) or breaks (`Err`).
async fn read_stream(
    client: &Client,
    mut response: Response,
    cursor: &mut Cursor,
    terminal: &[&str],
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let mut parser = SseParser::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(e) => return Err(client.unreachable(&e)),
        };
        cursor.received += 1;
        for event in parser.feed(&chunk) {
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            if event.event == "progress" {
                sink.progress(&data);
                continue;
            }
            let seq = event
                .id
                .as_deref()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if let (Some(seq), Some(last)) = (seq, cursor.last_seq) {
                if seq <= last {
                    // Already printed before a reconnection.
                    continue;
                }
            }
            if seq.is_some() {
                cursor.last_seq = seq;
            }
            sink.event(&event.event, &data);
            if terminal.contains(&event.event.as_str()) {
                cursor.terminal = Some(event.event.clone());
            }
        }
    }
}

/// Where lines and progress go.
struct Display {
    /// Lifecycle lines go to stderr (stdout is for the final JSON).
    lines_to_stderr: bool,
    /// The bars, when stderr is a terminal.
    bars: Option<Bars>,
    /// When the last plain progress line was printed.
    last_plain: Option<Instant>,
    /// What the run's validation metric measures, to name it in lines.
    val: ValMetric,
}

struct Bars {
    multi: MultiProgress,
    epochs: ProgressBar,
    batches: ProgressBar,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Display {
    fn new(output: Output, val: ValMetric) -> Self {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let epochs = multi.add(ProgressBar::new(0));
            epochs.set_style(style(
                "{prefix:>10} [{bar:30.cyan/blue}] {pos}/{len} epochs  {msg}",
            ));
            epochs.set_prefix("run");
            let batches = multi.add(ProgressBar::new(0));
            batches.set_style(style(
                "{prefix:>10} [{bar:30.green/white}] {pos}/{len} batches",
            ));
            Bars {
                multi,
                epochs,
                batches,
            }
        });
        Self {
            lines_to_stderr: output == Output::Json,
            bars,
            last_plain: None,
            val,
        }
    }

    /// Prints a lifecycle line above the bars.
    fn line(&self, line: &str) {
        let print = || {
            if self.lines_to_stderr {
                eprintln!("{line}");
            } else {
                outln!("{line}");
            }
        };
        match &self.bars {
            Some(bars) => bars.multi.suspend(print),
            None => print(),
        }
    }
}

impl Sink for Display {
    fn event(&mut self, name: &str, data: &Value) {
        let line = if data.is_object() {
            event_line(data, self.val)
        } else {
            name.to_string()
        };
        self.line(&line);
    }

    fn progress(&mut self, p: &Value) {
        self.show_progress(p);
    }

    fn note(&self, note: &str) {
        self.print_note(note);
    }

    fn finish(&mut self) {
        self.stop_drawing();
    }
}

impl Display {
    /// Prints a note about the connection on stderr, above the bars.
    fn print_note(&self, note: &str) {
        let print = || eprintln!("runyard: {note}");
        match &self.bars {
            Some(bars) => bars.multi.suspend(print),
            None => print(),
        }
    }

    /// Shows a progress sample.
    fn show_progress(&mut self, p: &Value) {
        if p["batches_per_epoch"].as_u64().unwrap_or(0) == 0 {
            // Sampled before the first batch: nothing to show yet.
            return;
        }
        let Some(bars) = &self.bars else {
            if self
                .last_plain
                .is_none_or(|t| t.elapsed() >= PLAIN_PROGRESS_EVERY)
            {
                self.last_plain = Some(Instant::now());
                eprintln!("progress {}", progress_line(p));
            }
            return;
        };
        let get = |key: &str| p[key].as_u64().unwrap_or(0);
        let (epoch, epochs) = (get("epoch"), get("epochs"));
        let (batch, per_epoch) = (get("batch"), get("batches_per_epoch"));
        let done = epoch.saturating_sub(1) + u64::from(per_epoch > 0 && batch >= per_epoch);
        bars.epochs.set_length(epochs);
        bars.epochs.set_position(done.min(epochs));
        bars.epochs.set_message(format!(
            "loss {}  {} samples/s  ETA {}",
            num(&p["loss"]),
            p["samples_per_sec"]
                .as_f64()
                .map_or_else(|| "-".into(), |v| format!("{v:.0}")),
            p["eta_secs"].as_f64().map_or_else(|| "-".into(), duration),
        ));
        bars.batches.set_prefix(format!("epoch {epoch}"));
        bars.batches.set_length(per_epoch);
        bars.batches.set_position(batch.min(per_epoch));
    }

    /// Leaves the bars as they are on screen and stops drawing them.
    fn stop_drawing(&mut self) {
        if let Some(bars) = self.bars.take() {
            bars.epochs.abandon();
            bars.batches.abandon();
        }
    }
}
