//! `runyard logs ID`: the last lines of a command run's stdout or stderr. With
//! `-f`, it goes on printing lines as they are written until the run ends, and exits
//! with the run's outcome as `watch` does; a dropped connection is retried with
//! backoff, going on after the last line printed (`Last-Event-ID`), so no line is
//! printed twice or missed. With `--output json`, each line is printed as one JSON
//! object (JSON Lines), with its stream, rank and, when following, its cursor.

use std::time::{Duration, Instant};

use reqwest::{Method, Response};

use super::api::{retryable, Client};
use super::common::{ClientError, Connection, Output};
use super::output::{segment, text};
use super::sse::SseParser;
use super::watch::WatchOptions;
use crate::domain::LogStream;

/// First wait before reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Arguments of `runyard logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The run's id.
    pub id: String,
    /// Which of the command's streams.
    #[arg(long, value_enum, default_value_t)]
    pub stream: LogStream,
    /// Which rank's log, for a run on several slots: its number (0, the default, is
    /// the first), or `all` for every rank's, each line tagged `[rank N]`.
    #[arg(long, value_name = "N|all", default_value = "0", value_parser = parse_rank)]
    pub rank: String,
    /// How many of the last lines to print first (0 to 10000).
    #[arg(
        long,
        short = 'n',
        value_name = "N",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(0..=10_000)
    )]
    pub tail: u32,
    /// Then print lines as they are written until the run ends, and exit with its
    /// outcome (0 completed, 5 failed, 6 cancelled).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How to follow the stream (with `-f`).
    #[command(flatten)]
    pub options: WatchOptions,
    /// The server and token.
    #[command(flatten)]
    pub connection: Connection,
    /// `table`: the lines as the command wrote them. `json`: one JSON object per line
    /// (JSON Lines): `run_id`, `stream`, `rank`, `line` (without the `[rank N] ` tag)
    /// and `cursor` (with `-f`: the stream's id of the line, to resume after it as
    /// `Last-Event-ID`; `null` for a plain tail).
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: Output,
}

/// One log line as `--output json` prints it.
#[derive(Debug, serde::Serialize)]
struct LogLine<'a> {
    run_id: &'a str,
    stream: &'a str,
    /// The rank whose line it is (`null` for an untagged line of `--rank all`).
    rank: Option<u32>,
    line: &'a str,
    cursor: Option<&'a str>,
}

/// How lines are printed: as written, or as JSON Lines.
#[derive(Debug)]
struct Printer {
    json: bool,
    run_id: String,
    stream: &'static str,
    /// The rank asked for; `None` for `all`, whose lines carry their rank's tag.
    rank: Option<u32>,
}

impl Printer {
    fn new(args: &LogsArgs) -> Self {
        Self {
            json: args.output == Output::Json,
            run_id: args.id.clone(),
            stream: args.stream.name(),
            rank: args.rank.parse().ok(),
        }
    }

    /// Adds `line` (with its stream id, when followed) to `out`.
    fn push(&self, out: &mut String, line: &str, cursor: Option<&str>) {
        if !self.json {
            out.push_str(line);
            out.push('\n');
            return;
        }
        let (rank, line) = match self.rank {
            Some(rank) => (Some(rank), line),
            None => untag(line),
        };
        let object = LogLine {
            run_id: &self.run_id,
            stream: self.stream,
            rank,
            line,
            cursor,
        };
        // A struct of strings and numbers always serializes.
        out.push_str(&serde_json::to_string(&object).unwrap_or_default());
        out.push('\n');
    }
}

/// A `--rank all` line's rank and text: `[rank 2] loss 0.3` is rank 2's `loss 0.3`.
fn untag(line: &str) -> (Option<u32>, &str) {
    line.strip_prefix("[rank ")
        .and_then(|rest| rest.split_once("] "))
        .and_then(|(rank, text)| Some((Some(rank.parse().ok()?), text)))
        .unwrap_or((None, line))
}

/// `--rank`: a whole number or `all`.
fn parse_rank(value: &str) -> Result<String, String> {
    if value == "all" || (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "expected a rank's number (0 for the first) or `all`, got `{value}`"
        ))
    }
}

/// `runyard logs`.
pub async fn run(args: LogsArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.connection)?;
    let printer = Printer::new(&args);
    let query = [
        ("stream", args.stream.name().to_string()),
        ("tail", args.tail.to_string()),
        ("rank", args.rank.clone()),
    ];
    let id = segment(&args.id);
    if !args.follow {
        let request = client
            .request(Method::GET, &format!("/api/v1/runs/{id}/logs"))
            .query(&query);
        let response = client.send(request).await?;
        let body = response.bytes().await.map_err(|e| client.unreachable(&e))?;
        let body = String::from_utf8_lossy(&body);
        if !printer.json {
            out!("{body}");
            return Ok(());
        }
        let mut lines = String::new();
        if !body.is_empty() {
            // An unterminated last line (one the command is still writing) is a line.
            for line in body.strip_suffix('\n').unwrap_or(&body).split('\n') {
                printer.push(&mut lines, line, None);
            }
        }
        out!("{lines}");
        return Ok(());
    }
    let path = format!("/api/v1/runs/{id}/logs/stream");
    let retry_for = Duration::from_secs(args.options.retry_for);
    let mut last_id: Option<String> = None;
    let mut connected_once = false;
    let mut lost_since: Option<Instant> = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut request = client.request(Method::GET, &path).query(&query);
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id);
        }
        let failure = match client.send_streaming(request).await {
            Ok(response) => {
                connected_once = true;
                let before = last_id.clone();
                let read = print_lines(&client, response, &printer, &mut last_id).await;
                if last_id != before {
                    lost_since = None;
                    backoff = FIRST_BACKOFF;
                }
                match read {
                    // The server ends the stream once the run has ended and its log is
                    // read; it also ends when the server stops.
                    Ok(()) => match outcome(&client, &args.id).await {
                        Ok(Some(result)) => return result,
                        Ok(None) => ClientError::Unreachable {
                            server: client.base().to_string(),
                            reason: "the log stream ended before the run did".into(),
                        },
                        Err(e) => e,
                    },
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        let retry = match &failure {
            ClientError::Unreachable { .. } => connected_once,
            ClientError::Answer { status, .. } => connected_once && retryable(*status),
            _ => false,
        };
        if !retry {
            return Err(failure);
        }
        let since = *lost_since.get_or_insert_with(|| {
            eprintln!("runyard: connection lost ({failure}); reconnecting");
            Instant::now()
        });
        if since.elapsed() >= retry_for {
            return Err(failure);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Prints one connection's `line` events until it ends (`Ok`) or breaks (`Err`),
/// keeping the id of the last line printed.
async fn print_lines(
    client: &Client,
    mut response: Response,
    printer: &Printer,
    last_id: &mut Option<String>,
) -> Result<(), ClientError> {
    let mut parser = SseParser::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(e) => return Err(client.unreachable(&e)),
        };
        let mut lines = String::new();
        for event in parser.feed(&chunk) {
            if event.event != "line" {
                continue;
            }
            printer.push(&mut lines, &event.data, event.id.as_deref());
            if event.id.is_some() {
                *last_id = event.id;
            }
        }
        if !lines.is_empty() {
            out!("{lines}");
        }
    }
}

/// The run's outcome once it has ended (`Ok` when it completed); `None` while it has
/// not.
async fn outcome(
    client: &Client,
    id: &str,
) -> Result<Option<Result<(), ClientError>>, ClientError> {
    let run = client
        .get_json(&format!("/api/v1/runs/{}", segment(id)))
        .await?;
    let reason = text(&run["error"]);
    Ok(match run["state"].as_str().unwrap_or_default() {
        "completed" => Some(Ok(())),
        "failed" => Some(Err(ClientError::RunFailed {
            id: id.to_string(),
            reason,
        })),
        "cancelled" => Some(Err(ClientError::RunCancelled {
            id: id.to_string(),
            reason,
        })),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rank_tag_is_read_off_the_line() {
        assert_eq!(untag("[rank 2] loss 0.3"), (Some(2), "loss 0.3"));
        assert_eq!(untag("[rank 10] "), (Some(10), ""));
        assert_eq!(untag("[rank x] loss"), (None, "[rank x] loss"));
        assert_eq!(untag("plain"), (None, "plain"));
    }

    #[test]
    fn json_lines_carry_the_stream_rank_line_and_cursor() {
        let printer = Printer {
            json: true,
            run_id: "r".into(),
            stream: "stderr",
            rank: None,
        };
        let mut out = String::new();
        printer.push(&mut out, "[rank 1] \"quoted\"", Some("c1"));
        printer.push(&mut out, "untagged", None);
        assert_eq!(
            out,
            "{\"run_id\":\"r\",\"stream\":\"stderr\",\"rank\":1,\"line\":\"\\\"quoted\\\"\",\"cursor\":\"c1\"}\n\
             {\"run_id\":\"r\",\"stream\":\"stderr\",\"rank\":null,\"line\":\"untagged\",\"cursor\":null}\n"
        );
    }
}
