//! The client commands, run as the real binary against a real server: output in both
//! formats, exit codes, errors, and a `watch` that survives a server restart.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::helpers::{client, long_spec, quick_spec, spawn_app, types, wait_ready, TIMEOUT};
use crate::server::{Launch, Server};

/// What one run of the binary left behind.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
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

async fn run_cli(mut command: tokio::process::Command, args: &[&str]) -> Ran {
    let output = tokio::time::timeout(TIMEOUT, command.args(args).output())
        .await
        .expect("the command ended in time")
        .expect("the binary runs");
    Ran {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The lifecycle lines of `watch` output (`HH:MM:SS Type details`), as their types.
fn event_types(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let time = words.next()?;
            let is_clock = time.len() == 8 && time.as_bytes()[2] == b':';
            is_clock.then(|| words.next().map(str::to_string)).flatten()
        })
        .collect()
}

fn spec_file(dir: &Path, spec: &Value) -> String {
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).expect("spec file");
    path.to_str().expect("utf-8 path").to_string()
}

fn run_id_of(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .unwrap_or_else(|| panic!("no run id in {line:?}"))
        .to_string()
}

/// A loopback address nothing listens on (port 1 is never handed out as a port-0
/// port, so no other test's server can be there).
const NOWHERE: &str = "http://127.0.0.1:1";

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[actix_web::test]
async fn submit_with_watch_prints_each_event_once_and_exits_zero_on_completion() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = spec_file(dir.path(), &quick_spec("cli-watch"));

    let ran = run_cli(cli(&app.address), &["submit", &spec, "--watch"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let first = ran.stdout.lines().next().expect("a first line");
    assert!(first.starts_with("created run "), "{ran:?}");
    let id = run_id_of(first);
    assert_eq!(
        event_types(&ran.stdout),
        types(&app.events(&id).await),
        "one line per journaled event, in order: {ran:?}"
    );
    for epoch in 1..=3 {
        assert!(
            ran.stdout
                .lines()
                .any(|l| l.contains(&format!("EpochCompleted epoch {epoch} loss "))),
            "{ran:?}"
        );
    }
    let last = ran.stdout.lines().last().expect("a last line");
    assert!(
        last.starts_with(&format!("run {id} completed: 3 epochs")),
        "{ran:?}"
    );

    // The same spec again is the same run, and says so.
    let again = run_cli(cli(&app.address), &["submit", &spec]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again
            .stdout
            .starts_with(&format!("existing run {id} (completed)")),
        "{again:?}"
    );

    // Watching an ended run replays its history and exits with its outcome.
    let json = run_cli(cli(&app.address), &["watch", &id, "--output", "json"]).await;
    assert_eq!(json.code, 0, "{json:?}");
    let shown: Value = serde_json::from_str(&json.stdout).expect("stdout is the run's JSON");
    assert_eq!(shown, app.run(&id).await);
    assert_eq!(event_types(&json.stderr), types(&app.events(&id).await));
}

#[actix_web::test]
async fn read_commands_print_tables_and_the_servers_json() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("cli-read")).await;
    app.wait_for(&id, |r| r["state"] == "completed").await;

    let ls = run_cli(cli(&app.address), &["ls"]).await;
    assert_eq!(ls.code, 0, "{ls:?}");
    let mut lines = ls.stdout.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header[..3], ["ID", "NAME", "STATE"]);
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(row[..4], [id.as_str(), "cli-read", "completed", "3/3"]);

    let ls_json = run_cli(cli(&app.address), &["ls", "-o", "json"]).await;
    let (_, listed) = app.get_json("/api/v1/runs").await;
    assert_eq!(
        serde_json::from_str::<Value>(&ls_json.stdout).expect("JSON"),
        listed
    );
    let running = run_cli(
        cli(&app.address),
        &["ls", "--state", "running", "--output", "json"],
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&running.stdout).expect("JSON"),
        json!([])
    );

    // Filters, an order and a limit, as the API takes them; the count of every match
    // after a table cut short, on stderr.
    let mut labelled = quick_spec("cli-read-labelled");
    labelled["labels"] = json!({"team": "cli"});
    let other = app.submit_ok(&labelled).await;
    app.wait_for(&other, |r| r["state"] == "completed").await;
    let first = run_cli(
        cli(&app.address),
        &["ls", "--sort", "created_at", "--limit", "1"],
    )
    .await;
    assert_eq!(first.code, 0, "{first:?}");
    let rows: Vec<&str> = first.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{first:?}");
    assert!(rows[0].starts_with(&id), "the oldest first: {first:?}");
    assert_eq!(
        first.stderr.trim(),
        "1 of 2 matching runs shown (--limit)",
        "{first:?}"
    );
    let team = run_cli(
        cli(&app.address),
        &["ls", "--label", "team=cli", "--limit", "5"],
    )
    .await;
    assert_eq!(team.code, 0, "{team:?}");
    let rows: Vec<&str> = team.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{team:?}");
    assert!(rows[0].starts_with(&other), "{team:?}");
    assert_eq!(team.stderr, "", "every match shown: {team:?}");

    let show = run_cli(cli(&app.address), &["show", &id]).await;
    assert_eq!(show.code, 0, "{show:?}");
    assert!(
        show.stdout.contains(&format!("id          {id}")),
        "{show:?}"
    );
    assert!(show.stdout.lines().any(|l| l == "state       completed"));
    assert!(show.stdout.contains("artifact    final.safetensors"));
    assert!(show
        .stdout
        .lines()
        .any(|l| l.starts_with("EPOCH  TRAIN_LOSS")));
    let show_json = run_cli(cli(&app.address), &["show", &id, "-o", "json"]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&show_json.stdout).expect("JSON"),
        app.run(&id).await
    );

    let journaled = app.events(&id).await;
    let events = run_cli(cli(&app.address), &["events", &id]).await;
    assert_eq!(events.code, 0, "{events:?}");
    let rows: Vec<&str> = events.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), journaled.len(), "{events:?}");
    for (row, event) in rows.iter().zip(&journaled) {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words[0], event["seq"].to_string());
        assert_eq!(words[3], event["type"].as_str().expect("type"));
    }
    let after = run_cli(
        cli(&app.address),
        &["events", &id, "--after", "3", "-o", "json"],
    )
    .await;
    let after: Value = serde_json::from_str(&after.stdout).expect("JSON");
    assert_eq!(after[0]["seq"], 4);
    assert_eq!(after.as_array().map(Vec::len), Some(journaled.len() - 3));
    let typed = run_cli(
        cli(&app.address),
        &[
            "events",
            &id,
            "--type",
            "EpochCompleted",
            "--type",
            "RunCompleted",
        ],
    )
    .await;
    assert_eq!(typed.code, 0, "{typed:?}");
    let kinds: Vec<&str> = typed
        .stdout
        .lines()
        .skip(1)
        .filter_map(|row| row.split_whitespace().nth(3))
        .collect();
    assert_eq!(
        kinds,
        [
            "EpochCompleted",
            "EpochCompleted",
            "EpochCompleted",
            "RunCompleted"
        ],
        "{typed:?}"
    );

    let slots = run_cli(cli(&app.address), &["slots"]).await;
    assert_eq!(slots.code, 0, "{slots:?}");
    assert_eq!(
        slots
            .stdout
            .lines()
            .next()
            .map(str::split_whitespace)
            .map(Vec::from_iter),
        Some(vec!["ID", "DEVICE", "RUN", "SINCE_SEQ"])
    );
    assert!(slots
        .stdout
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("0 ")));
    let slots_json = run_cli(cli(&app.address), &["slots", "-o", "json"]).await;
    let (_, expected) = app.get_json("/api/v1/slots").await;
    assert_eq!(
        serde_json::from_str::<Value>(&slots_json.stdout).expect("JSON"),
        expected
    );
}

#[actix_web::test]
async fn a_watched_run_that_is_cancelled_exits_with_the_cancelled_code() {
    let app = spawn_app().await;
    let id = app.submit_ok(&long_spec("cli-cancel")).await;
    let mut watch = cli(&app.address);
    watch
        .args(["watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let watch = watch.spawn().expect("watch starts");
    app.wait_for(&id, |r| r["state"] == "running").await;

    let cancel = run_cli(cli(&app.address), &["cancel", &id]).await;
    assert_eq!(cancel.code, 0, "{cancel:?}");
    assert!(
        cancel.stdout.starts_with(&format!("run {id}: ")),
        "{cancel:?}"
    );

    let output = tokio::time::timeout(TIMEOUT, watch.wait_with_output())
        .await
        .expect("watch ended in time")
        .expect("watch ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{stdout}\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("runyard: run {id} was cancelled"))),
        "{stderr}"
    );
    assert_eq!(event_types(&stdout), types(&app.events(&id).await));

    // Cancelling again is a conflict: the server's answer, exit code 4.
    let again = run_cli(cli(&app.address), &["cancel", &id]).await;
    assert_eq!(again.code, 4, "{again:?}");
    assert!(again.stderr.contains("409 conflict"), "{again:?}");
}

#[actix_web::test]
async fn a_watched_run_that_fails_exits_with_the_failed_code() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = quick_spec("cli-diverge");
    spec["model"]["hidden"] = json!([64, 64, 64]);
    spec["optimizer"] = json!({"kind": "sgd", "lr": 10, "momentum": 0.99, "nesterov": true});
    let spec = spec_file(dir.path(), &spec);

    let ran = run_cli(cli(&app.address), &["submit", &spec, "--watch"]).await;
    assert_eq!(ran.code, 5, "{ran:?}");
    let id = run_id_of(ran.stdout.lines().next().expect("a first line"));
    assert_eq!(
        ran.stderr
            .lines()
            .filter(|l| l.starts_with("runyard: "))
            .count(),
        1
    );
    assert!(
        ran.stderr.contains(&format!("runyard: run {id} failed: ")),
        "{ran:?}"
    );
    assert_eq!(event_types(&ran.stdout), types(&app.events(&id).await));
}

#[actix_web::test]
async fn errors_are_one_line_with_their_own_exit_code() {
    let app = spawn_app().await;

    let unknown = "01a20495-e364-759c-a1f8-7846fb819fcd";
    let ran = run_cli(cli(&app.address), &["show", unknown]).await;
    assert_eq!(ran.code, 4, "{ran:?}");
    assert_eq!(ran.stderr.lines().count(), 1, "{ran:?}");
    assert!(
        ran.stderr
            .starts_with("runyard: the server answered 404 run_not_found: "),
        "{ran:?}"
    );
    let too_many = run_cli(cli(&app.address), &["ls", "--limit", "1001"]).await;
    assert_eq!(too_many.code, 2, "{too_many:?}");
    assert!(too_many.stderr.contains("--limit"), "{too_many:?}");
    let bad_sort = run_cli(cli(&app.address), &["ls", "--sort", "size"]).await;
    assert_eq!(bad_sort.code, 4, "{bad_sort:?}");
    assert_eq!(bad_sort.stderr.lines().count(), 1, "{bad_sort:?}");
    assert!(bad_sort.stderr.contains("sort: `size`"), "{bad_sort:?}");

    let bad_state = run_cli(cli(&app.address), &["ls", "--state", "sleeping"]).await;
    assert_eq!(bad_state.code, 4, "{bad_state:?}");
    assert!(
        bad_state.stderr.contains("400 invalid_query"),
        "{bad_state:?}"
    );

    let nowhere = NOWHERE.to_string();
    let ran = run_cli(cli(&nowhere), &["ls"]).await;
    assert_eq!(ran.code, 3, "{ran:?}");
    assert_eq!(ran.stderr.lines().count(), 1, "{ran:?}");
    assert!(
        ran.stderr
            .starts_with(&format!("runyard: cannot reach the server at {nowhere}: ")),
        "{ran:?}"
    );
    let watch = run_cli(cli(&nowhere), &["watch", unknown]).await;
    assert_eq!(watch.code, 3, "{watch:?}");

    let ran = run_cli(cli(&app.address), &["submit", "/nonexistent/spec.json"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.stderr
            .starts_with("runyard: cannot read spec file /nonexistent/spec.json: "),
        "{ran:?}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let spec = spec_file(dir.path(), &json!({"name": "x"}));
    let ran = run_cli(cli(&app.address), &["submit", &spec]).await;
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(ran.stderr.contains("422 invalid_spec"), "{ran:?}");

    let ran = run_cli(cli("not a url"), &["ls"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains("invalid server URL"), "{ran:?}");
}

#[actix_web::test]
async fn the_server_comes_from_the_flag_then_the_environment_then_the_config_file() {
    let app = spawn_app().await;
    let nowhere = NOWHERE.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("cli.toml");
    let config_str = config.to_str().expect("utf-8 path");

    // The file alone.
    std::fs::write(&config, format!("server = \"{}\"\n", app.address)).expect("config");
    let mut from_file = cli("");
    from_file
        .env_remove("RUNYARD_SERVER")
        .env("RUNYARD_CLI_CONFIG", config_str);
    assert_eq!(run_cli(from_file, &["slots"]).await.code, 0);

    // The environment wins over the file.
    let mut env_wins = cli(&nowhere);
    env_wins.env("RUNYARD_CLI_CONFIG", config_str);
    assert_eq!(run_cli(env_wins, &["slots"]).await.code, 3);

    // The flag wins over both.
    let mut flag_wins = cli(&nowhere);
    flag_wins.env("RUNYARD_CLI_CONFIG", config_str);
    let ran = run_cli(flag_wins, &["slots", "--server", &app.address]).await;
    assert_eq!(ran.code, 0, "{ran:?}");

    // A config file with a typo is named, with the key.
    std::fs::write(&config, "sever = \"http://x\"\n").expect("config");
    let mut typo = cli("");
    typo.env_remove("RUNYARD_SERVER")
        .env("RUNYARD_CLI_CONFIG", config_str);
    let ran = run_cli(typo, &["slots"]).await;
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.stderr.contains(config_str) && ran.stderr.contains("sever"),
        "{ran:?}"
    );
}

/// Starts the binary on `port` (the same port after a restart, so a `watch` can find
/// it again), trying a few times while whatever held the port lets it go.
fn start_on(data_dir: &Path, port: u16, log: &Path) -> Server {
    let launch = Launch::new(data_dir)
        .bind(&format!("127.0.0.1:{port}"))
        .log(log);
    for _ in 0..20 {
        if let Ok(server) = launch.try_start() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the server could not bind port {port}");
}

#[tokio::test]
async fn a_watch_survives_a_server_restart_and_prints_each_event_exactly_once() {
    let root = tempfile::tempdir().expect("temp dir");
    let data_dir = root.path().join("data");
    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    let http = client();
    let server = start_on(&data_dir, port, &root.path().join("first.log"));
    wait_ready(&http, &address).await;

    let mut spec = quick_spec("cli-restart");
    spec["epochs"] = json!(30);
    spec["model"]["hidden"] = json!([128, 128]);
    spec["checkpoint"] = json!({"every_batches": 10});
    let response = http
        .post(format!("{address}/api/v1/runs"))
        .json(&spec)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.expect("JSON");
    let id = run["id"].as_str().expect("id").to_string();

    let mut watch = cli(&address)
        .args(["watch", &id, "--retry-for", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch starts");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = rx.recv().await {
            let second_epoch = line.contains("EpochCompleted epoch 2 ");
            seen.push(line);
            if second_epoch {
                return;
            }
        }
        panic!("watch ended early: {seen:?}");
    })
    .await
    .expect("the watch printed two epochs in time");

    server.kill();
    let server = start_on(&data_dir, port, &root.path().join("second.log"));

    // The safety net covers the restart and the rest of the training.
    let status = tokio::time::timeout(TIMEOUT * 2, watch.wait())
        .await
        .expect("the watch ended in time")
        .expect("watch ran");
    while let Some(line) = rx.recv().await {
        seen.push(line);
    }
    let mut stderr = String::new();
    if let Some(mut err) = watch.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = err.read_to_string(&mut stderr).await;
    }
    let all = seen.join("\n");
    assert_eq!(status.code(), Some(0), "{all}\n{stderr}");
    assert!(stderr.contains("reconnect"), "{stderr}");

    let events = http
        .get(format!("{address}/api/v1/runs/{id}/events"))
        .send()
        .await
        .expect("answered")
        .json::<Value>()
        .await
        .expect("JSON");
    let journaled = types(events.as_array().expect("events"));
    assert!(
        journaled.iter().any(|t| t == "RunRequeued"),
        "the run was live at the kill: {journaled:?}"
    );
    assert_eq!(
        event_types(&all),
        journaled,
        "every event printed once, none missed across the restart"
    );
    assert!(all.lines().last().is_some_and(|l| l.contains("completed")));
    drop(server);
}

/// Answers one request with `200 []` and returns the request's head, lowercased.
async fn one_request_head(listener: tokio::net::TcpListener) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut socket, _) = listener.accept().await.expect("a connection");
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buffer).await.expect("request bytes");
        assert!(n > 0, "the request ended early");
        head.extend_from_slice(&buffer[..n]);
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]")
        .await
        .expect("answer");
    String::from_utf8_lossy(&head).to_lowercase()
}

#[tokio::test]
async fn a_token_from_the_flag_or_the_config_file_is_sent_as_a_bearer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("cli.toml");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let request = tokio::spawn(one_request_head(listener));
    let ran = run_cli(cli(&address), &["slots", "--token", "ry_flag"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let head = request.await.expect("request read");
    assert!(head.starts_with("get /api/v1/slots "), "{head}");
    assert!(head.contains("authorization: bearer ry_flag\r\n"), "{head}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    std::fs::write(
        &config,
        format!("server = \"{address}\"\ntoken = \"ry_file\"\n"),
    )
    .expect("config");
    let request = tokio::spawn(one_request_head(listener));
    let mut from_file = cli("");
    from_file
        .env_remove("RUNYARD_SERVER")
        .env("RUNYARD_CLI_CONFIG", &config);
    let ran = run_cli(from_file, &["ls", "-o", "json"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(ran.stdout.trim(), "[]");
    let head = request.await.expect("request read");
    assert!(head.contains("authorization: bearer ry_file\r\n"), "{head}");
}

#[actix_web::test]
async fn sweep_commands_submit_watch_list_show_and_cancel() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let sweep = json!({
        "name": "cli-sweep",
        "base": quick_spec("cli-sweep"),
        "space": {"optimizer.lr": {"choice": [0.01, 0.05, 0.1]}},
        "searcher": {"kind": "random", "max_trials": 3, "max_concurrent": 2},
        "seed": 3
    });
    let file = spec_file(dir.path(), &sweep);
    let ran = run_cli(cli(&app.address), &["sweep", "submit", &file, "--watch"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let types = event_types(&ran.stdout);
    let count = |t: &str| types.iter().filter(|x| *x == t).count();
    assert_eq!(count("TrialCreated"), 3, "{}", ran.stdout);
    assert_eq!(count("TrialReachedRung"), 3, "{}", ran.stdout);
    assert_eq!(count("SweepCompleted"), 1, "{}", ran.stdout);
    assert_eq!(types.last().map(String::as_str), Some("SweepCompleted"));
    let first = ran.stdout.lines().next().expect("a first line");
    assert!(first.starts_with("created sweep "), "{first}");
    let id = run_id_of(first);
    // The final table: a header and one row per trial, every one finished.
    let finished = ran
        .stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("finished"))
        .count();
    assert_eq!(finished, 3, "{}", ran.stdout);
    assert!(ran.stdout.contains("best trial "), "{}", ran.stdout);

    let ls = run_cli(cli(&app.address), &["sweep", "ls"]).await;
    assert_eq!(ls.code, 0, "{ls:?}");
    assert!(ls.stdout.starts_with("ID "), "{}", ls.stdout);
    assert!(
        ls.stdout.contains(&id) && ls.stdout.contains("3 (3 finished)"),
        "{}",
        ls.stdout
    );
    let show = run_cli(
        cli(&app.address),
        &["sweep", "show", &id, "--output", "json"],
    )
    .await;
    assert_eq!(show.code, 0, "{show:?}");
    let shown: Value = serde_json::from_str(&show.stdout).expect("JSON");
    assert_eq!(shown["trials"].as_array().map(Vec::len), Some(3));
    assert_eq!(shown["state"], "completed");
    let again = run_cli(cli(&app.address), &["sweep", "cancel", &id]).await;
    assert_eq!(again.code, 4, "{again:?}");
    assert!(again.stderr.contains("409 conflict"), "{}", again.stderr);

    // A sweep of long trials, watched by one process and cancelled by another.
    let mut long = sweep.clone();
    long["name"] = json!("cli-long");
    long["base"] = long_spec("cli-long");
    let file = spec_file(dir.path(), &long);
    let submitted = run_cli(
        cli(&app.address),
        &["sweep", "submit", &file, "--output", "json"],
    )
    .await;
    assert_eq!(submitted.code, 0, "{submitted:?}");
    let created: Value = serde_json::from_str(&submitted.stdout).expect("JSON");
    let id = created["id"].as_str().expect("id").to_string();
    let mut watch = cli(&app.address);
    watch
        .args(["sweep", "watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let watch = watch.spawn().expect("watch starts");
    // One slot: one trial running, the other queued.
    crate::helpers::poll_until("a trial running", Duration::from_millis(50), || async {
        let (_, sweep) = app.get_json(&format!("/api/v1/sweeps/{id}")).await;
        let running = sweep["trials"].as_array().map_or(0, |t| {
            t.iter().filter(|t| t["run_state"] == "running").count()
        });
        (running == 1).then_some(())
    })
    .await;
    let cancel = run_cli(cli(&app.address), &["sweep", "cancel", &id]).await;
    assert_eq!(cancel.code, 0, "{cancel:?}");
    let watched = tokio::time::timeout(TIMEOUT, watch.wait_with_output())
        .await
        .expect("watch ended in time")
        .expect("watch output");
    let stdout = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.status.code(), Some(6), "{stdout}");
    assert_eq!(
        event_types(&stdout).last().map(String::as_str),
        Some("SweepCancelled"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&watched.stderr);
    assert!(
        stderr.contains(&format!("sweep {id} was cancelled")),
        "{stderr}"
    );
    // Every trial run ends cancelled.
    let (_, sweep) = app.get_json(&format!("/api/v1/sweeps/{id}")).await;
    for trial in sweep["trials"].as_array().expect("trials") {
        app.wait_ended(trial["run_id"].as_str().expect("run")).await;
        assert_eq!(
            app.run(trial["run_id"].as_str().expect("run")).await["state"],
            "cancelled"
        );
    }
}

/// A regression on `DATA_DIR/datasets/lines.csv` (written here), evaluated each epoch.
fn regression_spec(app: &crate::helpers::TestApp) -> Value {
    let mut text = String::from("x1,x2,y\n");
    for i in 0..200 {
        let (x1, x2) = ((i % 20) as f64 / 10.0 - 1.0, (i / 20) as f64 / 10.0 - 1.0);
        text.push_str(&format!("{x1},{x2},{}\n", 2.0 * x1 - x2 + 0.5));
    }
    std::fs::write(app.datasets().join("lines.csv"), text).expect("csv");
    json!({
        "name": "cli-mae",
        "task": "regression",
        "model": {"kind": "mlp", "hidden": [8]},
        "data": {"kind": "csv", "path": "lines.csv", "header": true, "target": "y"},
        "validation": {"fraction": 0.25},
        "optimizer": {"kind": "adam", "lr": 0.01},
        "epochs": 2,
        "batch_size": 16,
        "seed": 3
    })
}

#[actix_web::test]
async fn the_validation_metric_is_named_for_what_it_measures_in_views_and_lines() {
    let app = spawn_app().await;
    let mut classification = quick_spec("cli-accuracy");
    classification["validation"] = json!({"fraction": 0.2});
    let accuracy_run = app.submit_ok(&classification).await;
    let mae_run = app.submit_ok(&regression_spec(&app)).await;
    for (id, name, absent, words, short) in [
        (
            &accuracy_run,
            "val_accuracy",
            "val_mae",
            "val accuracy",
            "acc",
        ),
        (&mae_run, "val_mae", "val_accuracy", "val mae", "mae"),
    ] {
        // The run's view: the named fields beside `val_metric`, the other task's
        // absent.
        let run = app.wait_for(id, |r| r["state"] == "completed").await;
        let metrics = &run["metrics"];
        assert!(metrics[name].is_f64(), "{metrics}");
        assert_eq!(metrics[name], metrics["val_metric"], "{metrics}");
        assert_eq!(
            metrics[format!("best_{name}")],
            metrics["best_val_metric"],
            "{metrics}"
        );
        assert!(metrics.get(absent).is_none(), "{metrics}");
        assert!(metrics.get(format!("best_{absent}")).is_none(), "{metrics}");
        let value = format!("{:.4}", metrics[name].as_f64().expect("a value"));

        let show = run_cli(cli(&app.address), &["show", id]).await;
        assert_eq!(show.code, 0, "{show:?}");
        assert!(
            show.stdout.contains(&format!(", {words} {value} (best ")),
            "{show:?}"
        );
        let header = format!("VAL_LOSS  {}", name.to_ascii_uppercase());
        assert!(show.stdout.contains(&header), "{show:?}");

        let ls = run_cli(cli(&app.address), &["ls"]).await;
        let row = ls
            .stdout
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .expect("the run's row");
        assert!(row.contains(&format!(" {short} {value} ")), "{ls:?}");

        let events = run_cli(cli(&app.address), &["events", id]).await;
        assert_eq!(events.code, 0, "{events:?}");
        let evaluated: Vec<&str> = events
            .stdout
            .lines()
            .filter(|l| l.contains(" EpochEvaluated "))
            .collect();
        assert_eq!(
            Some(evaluated.len() as u64),
            run["spec"]["epochs"].as_u64(),
            "{events:?}"
        );
        assert!(
            evaluated.iter().all(|l| l.contains(&format!(" {name} "))),
            "{events:?}"
        );

        let watch = run_cli(cli(&app.address), &["watch", id]).await;
        assert_eq!(watch.code, 0, "{watch:?}");
        assert!(
            watch
                .stdout
                .lines()
                .filter(|l| l.contains(" EpochEvaluated "))
                .all(|l| l.contains(&format!(" {name} "))),
            "{watch:?}"
        );
        let last = watch.stdout.lines().last().expect("a last line");
        assert!(last.contains(&format!(", {words} {value}, ")), "{watch:?}");
        assert!(!watch.stdout.contains("val_metric"), "{watch:?}");
    }
}
