//! A run's logs: `GET /api/v1/runs/{id}/logs` and `/logs/stream` over files written
//! into a real server's data directory the way the command runner writes them
//! (`stdout.log`, rotated to `stdout.log.1`, `.2`, …), and `runyard logs` through the
//! real binary.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncBufReadExt;

use crate::helpers::{
    assert_problem, long_spec, quick_spec, spawn_app, spawn_app_with, TestApp, TIMEOUT,
};

/// A syntactically valid run id that names no run.
const UNKNOWN_RUN: &str = "00000000-0000-7000-8000-000000000000";

/// The logs directory of run `id`, created.
fn logs_dir(app: &TestApp, id: &str) -> PathBuf {
    let dir = app.data_dir().join("runs").join(id).join("logs");
    std::fs::create_dir_all(&dir).expect("logs dir");
    dir
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log")
        .write_all(text.as_bytes())
        .expect("write log");
}

/// Renames `path` to `path.1`, shifting the older ones up to `path.keep`, as the
/// runner rotates a file that reached its size.
fn rotate(path: &Path, keep: u32) {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        if numbered(n).exists() {
            std::fs::rename(numbered(n), numbered(n + 1)).expect("shift");
        }
    }
    std::fs::rename(path, numbered(1)).expect("rotate");
}

/// `prefix 1\n` … `prefix N\n`.
fn lines(prefix: &str, from: usize, to: usize) -> String {
    (from..=to).map(|i| format!("{prefix} {i}\n")).collect()
}

/// A stdout of 3 attempts over 3 files: `stdout.log.2` (attempt 1, lines 1-400),
/// `stdout.log.1` (lines 401-800), `stdout.log` (attempt 2 header, lines 801-1000).
fn write_rotated_stdout(dir: &Path) -> PathBuf {
    let path = dir.join("stdout.log");
    append(&path, "==> attempt 1 <==\n");
    append(&path, &lines("out", 1, 400));
    rotate(&path, 3);
    append(&path, &lines("out", 401, 800));
    rotate(&path, 3);
    append(&path, "==> attempt 2 <==\n");
    append(&path, &lines("out", 801, 1000));
    path
}

async fn get_logs(app: &TestApp, id: &str, query: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/api/v1/runs/{id}/logs{query}", app.address))
        .send()
        .await
        .expect("answered")
}

async fn logs_text(app: &TestApp, id: &str, query: &str) -> String {
    let response = get_logs(app, id, query).await;
    assert_eq!(response.status(), 200, "{query}");
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        "text/plain; charset=utf-8"
    );
    response.text().await.expect("text")
}

#[actix_web::test]
async fn the_tail_reads_back_across_rotated_files() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("logs-tail")).await;
    // No log yet (and a run that is not a command run never has one): empty.
    assert_eq!(logs_text(&app, &id, "").await, "");
    assert_eq!(logs_text(&app, &id, "?stream=stderr").await, "");

    let dir = logs_dir(&app, &id);
    write_rotated_stdout(&dir);
    append(&dir.join("stderr.log"), "warning: one\nwarning: two\n");

    // Default: the last 100 lines of stdout.
    assert_eq!(logs_text(&app, &id, "").await, lines("out", 901, 1000));
    assert_eq!(
        logs_text(&app, &id, "?tail=3").await,
        lines("out", 998, 1000)
    );
    // Into the newest rotated file, past the attempt header.
    assert_eq!(
        logs_text(&app, &id, "?tail=202").await,
        format!("out 800\n==> attempt 2 <==\n{}", lines("out", 801, 1000))
    );
    // Across both rotated files.
    assert_eq!(
        logs_text(&app, &id, "?stream=stdout&tail=700").await,
        format!(
            "{}==> attempt 2 <==\n{}",
            lines("out", 302, 800),
            lines("out", 801, 1000)
        )
    );
    // More than there is: everything, oldest first.
    let all = logs_text(&app, &id, "?tail=10000").await;
    assert!(
        all.starts_with("==> attempt 1 <==\nout 1\n"),
        "{}",
        &all[..40]
    );
    assert_eq!(all.lines().count(), 1002);
    assert_eq!(logs_text(&app, &id, "?tail=0").await, "");
    assert_eq!(
        logs_text(&app, &id, "?stream=stderr&tail=1").await,
        "warning: two\n"
    );

    // A line the command is still writing is the last line.
    append(&dir.join("stdout.log"), "half a li");
    assert_eq!(logs_text(&app, &id, "?tail=2").await, "out 1000\nhalf a li");
}

#[actix_web::test]
async fn bad_queries_unknown_runs_and_deleted_files_are_problems() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("logs-bad")).await;
    for route in ["logs", "logs/stream"] {
        for (query, named) in [
            ("?tail=10001", "`tail`"),
            ("?tail=-1", "`tail`"),
            ("?tail=many", "`tail`"),
            ("?stream=both", "`stream`"),
            ("?stream=stdout&stream=stderr", "`stream`"),
            ("?lines=5", "`lines`"),
        ] {
            let response = app
                .client
                .get(format!("{}/api/v1/runs/{id}/{route}{query}", app.address))
                .send()
                .await
                .expect("answered");
            let detail = assert_problem(response, 400, "invalid_query").await;
            assert!(detail.contains(named), "{route}{query}: {detail}");
        }
        for run in [UNKNOWN_RUN, "not-a-run"] {
            let response = app
                .client
                .get(format!("{}/api/v1/runs/{run}/{route}", app.address))
                .send()
                .await
                .expect("answered");
            assert_problem(response, 404, "run_not_found").await;
        }
    }
    let response = app
        .client
        .get(format!("{}/api/v1/runs/{id}/logs/stream", app.address))
        .header("Last-Event-ID", "12")
        .send()
        .await
        .expect("answered");
    let detail = assert_problem(response, 400, "invalid_header").await;
    assert!(detail.contains("Last-Event-ID"), "{detail}");

    // Once the run's files are deleted, its logs are gone with them.
    append(&logs_dir(&app, &id).join("stdout.log"), "bye\n");
    app.wait_for(&id, |r| r["state"] == "completed").await;
    let deleted = app
        .client
        .delete(format!("{}/api/v1/runs/{id}/artifacts", app.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(deleted.status(), 200);
    for route in ["logs", "logs/stream"] {
        let response = app
            .client
            .get(format!("{}/api/v1/runs/{id}/{route}", app.address))
            .send()
            .await
            .expect("answered");
        let detail = assert_problem(response, 410, "artifact_deleted").await;
        assert!(detail.contains("logs"), "{detail}");
    }
}

/// A log stream read event by event.
struct LogEvents {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<actix_web::web::Bytes>>>>,
    buffer: String,
}

impl LogEvents {
    async fn open(app: &TestApp, id: &str, query: &str, last_event_id: Option<&str>) -> Self {
        let mut request = app.client.get(format!(
            "{}/api/v1/runs/{id}/logs/stream{query}",
            app.address
        ));
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last);
        }
        let response = request.send().await.expect("stream answered");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().expect("ascii"),
            "text/event-stream"
        );
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next block of the stream (up to a blank line); `None` once it has ended.
    async fn block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                return Some(self.buffer.drain(..end + 2).collect());
            }
            let chunk = tokio::time::timeout(TIMEOUT, self.body.next())
                .await
                .expect("the stream went on in time")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.expect("chunk")).expect("utf-8"));
        }
    }

    /// The next `line` event as `(id, data)`; `None` once the stream has ended.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            let block = self.block().await?;
            let (mut id, mut event, mut data) = (None, None, Vec::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v.to_string());
                }
            }
            match event.as_deref() {
                Some("line") => return Some((id.expect("a line has an id"), data.join("\n"))),
                None => {}
                Some(other) => panic!("unexpected event `{other}` in {block:?}"),
            }
        }
    }

    /// Reads until a keep-alive comment, with no line before it.
    async fn keep_alive(&mut self) {
        loop {
            let block = self.block().await.expect("the stream goes on");
            if block == ": keep-alive\n\n" {
                return;
            }
            assert!(!block.contains("event:"), "{block:?}");
        }
    }

    /// The data of the next `n` lines.
    async fn take(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let (_, data) = self.next().await.expect("the stream ended early");
            out.push(data);
        }
        out
    }

    /// The data of every line left, until the stream ends.
    async fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((_, data)) = self.next().await {
            out.push(data);
        }
        out
    }
}

fn owned(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

/// A run that stays unfinished without training: started, then paused until the
/// test cancels it.
async fn parked_run(app: &TestApp, name: &str) -> String {
    let id = app.submit_ok(&long_spec(name)).await;
    // A run is paused while queued or running, not while it is starting.
    app.wait_for(&id, |r| r["state"] == "running").await;
    let paused = app.post(&format!("/api/v1/runs/{id}/pause")).await;
    assert!(
        [200, 202].contains(&paused.status().as_u16()),
        "{}",
        paused.status()
    );
    app.wait_for(&id, |r| r["state"] == "paused").await;
    id
}

#[actix_web::test]
async fn the_stream_sends_the_tail_then_new_lines_through_rotations_until_the_run_ends() {
    let app = spawn_app_with(|config| config.server.sse_keep_alive_ms = 200).await;
    let id = parked_run(&app, "logs-stream").await;
    let dir = logs_dir(&app, &id);
    let path = dir.join("stderr.log");
    append(&path, "==> attempt 1 <==\n");
    append(&path, &lines("err", 1, 5));
    rotate(&path, 2);
    append(&path, &lines("err", 6, 7));
    append(&path, "err 8 in progr");

    // The last 4 whole lines, across the rotation; the unended one waits.
    let mut stream = LogEvents::open(&app, &id, "?stream=stderr&tail=4", None).await;
    assert_eq!(
        stream.take(4).await,
        owned(&["err 4", "err 5", "err 6", "err 7"])
    );
    append(&path, "ess\nerr 9\n");
    assert_eq!(stream.take(2).await, owned(&["err 8 in progress", "err 9"]));

    // A rotation while following: the old file's last lines, then the new file's.
    append(&path, "err 10\n");
    rotate(&path, 2);
    append(&path, "err 11\n");
    assert_eq!(stream.take(2).await, owned(&["err 10", "err 11"]));
    // Two at once: the file rotated in between is read too.
    append(&path, "err 12\n");
    rotate(&path, 3);
    append(&path, "err 13\n");
    rotate(&path, 3);
    append(&path, "err 14\r\nprogress 10%\rprogress 100%\n");
    assert_eq!(stream.take(3).await, owned(&["err 12", "err 13", "err 14"]));
    let (after_progress, carriage) = stream.next().await.expect("a line");
    assert_eq!(carriage, "progress 10%\nprogress 100%");

    // A client that reconnects goes on after the last line it got, whatever `tail`.
    let mut resumed =
        LogEvents::open(&app, &id, "?stream=stderr&tail=100", Some(&after_progress)).await;
    append(&path, "err 15\n");
    assert_eq!(resumed.take(1).await, owned(&["err 15"]));
    assert_eq!(stream.take(1).await, owned(&["err 15"]));

    // Nothing new for a while: keep-alive comments; both streams are counted.
    stream.keep_alive().await;
    assert!(metrics_line(&app, "runyard_sse_clients").await >= 2.0);

    // The run ends: what was written before is sent, an unended last line too, and
    // the stream ends.
    append(&path, "err 16\nlast words");
    let cancelled = app.post(&format!("/api/v1/runs/{id}/cancel")).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(stream.rest().await, owned(&["err 16", "last words"]));
    assert_eq!(resumed.rest().await, owned(&["err 16", "last words"]));

    // An ended run's stream is its tail, then the end.
    // (`tail` counts whole lines; the unended one comes at the end.)
    let mut ended = LogEvents::open(&app, &id, "?stream=stderr&tail=1", None).await;
    assert_eq!(ended.rest().await, owned(&["err 16", "last words"]));
    let mut empty = LogEvents::open(&app, &id, "?stream=stdout", None).await;
    assert_eq!(empty.rest().await, Vec::<String>::new());
}

/// The value of an unlabelled sample of `/metrics`.
async fn metrics_line(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[actix_web::test]
async fn a_client_that_takes_nothing_is_disconnected_as_slow() {
    let app = spawn_app_with(|config| config.server.sse_keep_alive_ms = 200).await;
    let id = parked_run(&app, "logs-slow").await;
    // 40 MB in the tail: far more than the connection's buffers hold.
    let line = "x".repeat(4000);
    let text: String = (0..10_000).map(|i| format!("{i} {line}\n")).collect();
    append(&logs_dir(&app, &id).join("stdout.log"), &text);
    let response = app
        .client
        .get(format!(
            "{}/api/v1/runs/{id}/logs/stream?tail=10000",
            app.address
        ))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    tokio::time::timeout(TIMEOUT, async {
        let slow = "runyard_sse_disconnects_total{reason=\"slow\"} ";
        loop {
            let text = app
                .client
                .get(format!("{}/metrics", app.address))
                .send()
                .await
                .expect("answered")
                .text()
                .await
                .expect("text");
            if text.lines().any(|l| l == format!("{slow}1")) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the slow client was disconnected and counted");
    drop(response);
}

/// The binary, pointed at `server`, with no config file and no token from outside.
fn cli(server: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runyard"));
    command
        .env("RUNYARD_SERVER", server)
        .env("RUNYARD_CLI_CONFIG", "")
        .env_remove("RUNYARD_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs the binary to its end: exit code, stdout, stderr.
pub(crate) async fn run_cli(server: &str, args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(TIMEOUT, cli(server).args(args).output())
        .await
        .expect("the command ended in time")
        .expect("the binary runs");
    (
        output.status.code().expect("exited"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[actix_web::test]
async fn runyard_logs_prints_the_tail_and_follows_to_the_run_s_outcome() {
    let app = spawn_app().await;
    let done = app.submit_ok(&quick_spec("logs-cli")).await;
    let dir = logs_dir(&app, &done);
    write_rotated_stdout(&dir);
    append(&dir.join("stderr.log"), "oops\n");

    let (code, stdout, stderr) = run_cli(&app.address, &["logs", &done, "--tail", "3"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, lines("out", 998, 1000));
    let (code, stdout, _) = run_cli(&app.address, &["logs", &done]).await;
    assert_eq!(
        (code, stdout),
        (0, lines("out", 901, 1000)),
        "default tail 100"
    );
    let (code, stdout, _) = run_cli(
        &app.address,
        &["logs", &done, "--stream", "stderr", "-n", "5"],
    )
    .await;
    assert_eq!((code, stdout.as_str()), (0, "oops\n"));

    // Errors: one line, the usual exit codes.
    let (code, _, stderr) = run_cli(&app.address, &["logs", UNKNOWN_RUN]).await;
    assert_eq!(code, 4, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("runyard: the server answered 404 run_not_found: "),
        "{stderr}"
    );
    let (code, _, stderr) = run_cli(&app.address, &["logs", &done, "--tail", "10001"]).await;
    assert_eq!(code, 2, "{stderr}");
    let (code, _, _) = run_cli("http://127.0.0.1:1", &["logs", &done, "-f"]).await;
    assert_eq!(code, 3);

    // -f on an ended run: its tail, then its outcome.
    app.wait_for(&done, |r| r["state"] == "completed").await;
    let (code, stdout, stderr) = run_cli(&app.address, &["logs", &done, "-f", "--tail", "2"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, lines("out", 999, 1000));

    // -f on a live run: new lines as they come, through a rotation, until the run
    // ends; the exit code is its outcome (6: cancelled).
    let live = parked_run(&app, "logs-cli-follow").await;
    let path = logs_dir(&app, &live).join("stdout.log");
    append(&path, &lines("live", 1, 3));
    let mut follow = cli(&app.address);
    follow
        .args(["logs", &live, "--follow", "--tail", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = follow.spawn().expect("logs -f starts");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(next_line(&mut out).await, "live 3");
    append(&path, "live 4\n");
    assert_eq!(next_line(&mut out).await, "live 4");
    rotate(&path, 2);
    append(&path, "live 5\n");
    assert_eq!(next_line(&mut out).await, "live 5");
    let cancelled = app.post(&format!("/api/v1/runs/{live}/cancel")).await;
    assert_eq!(cancelled.status(), 200);
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("logs -f ended with the run")
        .expect("exit status");
    assert_eq!(status.code(), Some(6));
}

/// `stdout` as JSON Lines: one object a line.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

#[actix_web::test]
async fn runyard_logs_output_json_prints_one_object_a_line_for_a_tail_and_while_following() {
    use serde_json::json;
    let app = spawn_app().await;
    let done = app.submit_ok(&quick_spec("logs-json")).await;
    let dir = logs_dir(&app, &done);
    write_rotated_stdout(&dir);
    append(&dir.join("stderr.log"), "oops \"quoted\"\nstill writi");

    let (code, stdout, stderr) = run_cli(
        &app.address,
        &["logs", &done, "--tail", "2", "--output", "json"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let line = |stream: &str, rank: u32, line: &str| json!({"run_id": done, "stream": stream, "rank": rank, "line": line, "cursor": null});
    assert_eq!(
        json_lines(&stdout),
        [line("stdout", 0, "out 999"), line("stdout", 0, "out 1000")]
    );
    // An unterminated last line is a line; quotes are escaped.
    let (code, stdout, _) = run_cli(
        &app.address,
        &["logs", &done, "--stream", "stderr", "-o", "json"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        json_lines(&stdout),
        [
            line("stderr", 0, "oops \"quoted\""),
            line("stderr", 0, "still writi")
        ]
    );
    // Every rank's lines: the `[rank N] ` tag becomes the rank.
    let (code, stdout, _) = run_cli(
        &app.address,
        &["logs", &done, "--rank", "all", "-n", "1", "-o", "json"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(json_lines(&stdout), [line("stdout", 0, "out 1000")]);
    // A run with no log yet prints nothing.
    let quiet = app.submit_ok(&quick_spec("logs-json-quiet")).await;
    let (code, stdout, _) = run_cli(&app.address, &["logs", &quiet, "-o", "json"]).await;
    assert_eq!((code, stdout.as_str()), (0, ""));

    // Following: each line as it comes, with the cursor to resume after it.
    let live = parked_run(&app, "logs-json-follow").await;
    let path = logs_dir(&app, &live).join("stdout.log");
    append(&path, &lines("live", 1, 3));
    let mut follow = cli(&app.address);
    follow
        .args(["logs", &live, "-f", "--tail", "1", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = follow.spawn().expect("logs -f starts");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let next = |text: String| -> (String, String) {
        let object = &json_lines(&text)[0];
        assert_eq!(
            (&object["run_id"], &object["stream"], &object["rank"]),
            (&json!(live), &json!("stdout"), &json!(0)),
            "{object}"
        );
        let cursor = object["cursor"].as_str().expect("a cursor").to_string();
        (object["line"].as_str().expect("a line").to_string(), cursor)
    };
    let (first, after_first) = next(next_line(&mut out).await);
    assert_eq!(first, "live 3");
    append(&path, "live 4\n");
    let (second, after_second) = next(next_line(&mut out).await);
    assert_eq!(second, "live 4");
    assert_ne!(after_first, after_second);
    // The cursor is the stream's: sent back as Last-Event-ID, the next line follows.
    let mut resumed = LogEvents::open(&app, &live, "", Some(&after_first)).await;
    assert_eq!(resumed.take(1).await, owned(&["live 4"]));

    let cancelled = app.post(&format!("/api/v1/runs/{live}/cancel")).await;
    assert_eq!(cancelled.status(), 200);
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("logs -f ended with the run")
        .expect("exit status");
    assert_eq!(status.code(), Some(6));
    assert_eq!(next_line_or_end(&mut out).await, None);
    app.wait_ended(&done).await;
    app.wait_ended(&quiet).await;
}

async fn next_line(
    out: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(TIMEOUT, out.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("not the end")
}

/// A TCP proxy to `target` (`http://HOST:PORT`) whose open connections are all cut
/// when the returned sender is bumped; it keeps taking new ones.
async fn cuttable_proxy(target: &str) -> (String, tokio::sync::watch::Sender<u32>) {
    let target = target.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let (cut, _) = tokio::sync::watch::channel(0u32);
    let cuts = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut outbound = tokio::net::TcpStream::connect(&target)
                .await
                .expect("the server takes connections");
            let mut cut = cuts.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.changed() => {}
                }
            });
        }
    });
    (address, cut)
}

#[actix_web::test]
async fn runyard_logs_follow_goes_on_after_the_last_line_when_the_connection_drops() {
    let app = spawn_app().await;
    let (proxy, cut) = cuttable_proxy(&app.address).await;
    let live = parked_run(&app, "logs-cli-reconnect").await;
    let path = logs_dir(&app, &live).join("stdout.log");
    append(&path, &lines("live", 1, 3));
    let mut follow = cli(&proxy);
    follow
        .args(["logs", &live, "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = follow.spawn().expect("logs -f starts");
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    for _ in 0..3 {
        printed.push(next_line(&mut out).await);
    }

    // Every connection through the proxy is cut; lines are written meanwhile.
    cut.send_modify(|n| *n += 1);
    append(&path, &lines("live", 4, 5));
    for _ in 0..2 {
        printed.push(next_line(&mut out).await);
    }
    append(&path, "live 6\n");
    printed.push(next_line(&mut out).await);
    let expected: Vec<String> = (1..=6).map(|i| format!("live {i}")).collect();
    assert_eq!(printed, expected, "each line once, none missed");

    let cancelled = app.post(&format!("/api/v1/runs/{live}/cancel")).await;
    assert_eq!(cancelled.status(), 200);
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("logs -f ended with the run")
        .expect("exit status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    assert_eq!(
        next_line_or_end(&mut out).await,
        None,
        "nothing more printed"
    );
}

async fn next_line_or_end(
    out: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Option<String> {
    tokio::time::timeout(TIMEOUT, out.next_line())
        .await
        .expect("read in time")
        .expect("read")
}
