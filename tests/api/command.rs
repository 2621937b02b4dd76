//! Command runs: a program of the user's as a child process, reporting over the
//! progress pipe (protocol v1), with the lifecycle of a training run: completion,
//! failures with their exit code or signal, cancel, pause and resume, timeout, stall,
//! and a server killed under a running command.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::helpers::{
    client, dead, get_json_at, read, spawn_app_with, types, wait_for_run_at, wait_ready, TestApp,
    TIMEOUT,
};
use crate::server::Server;
use runyard::train::command::group_gone;

/// A server that accepts command runs, with small log files.
async fn command_app() -> TestApp {
    spawn_app_with(|c| {
        c.runs.allow_commands = true;
        c.runs.log_max_bytes = 1 << 20;
        c.runs.log_keep = 2;
    })
    .await
}

/// A command run of `bash -c SCRIPT` whose `$OUT` is `out`.
fn bash(name: &str, script: &str, out: &Path) -> Value {
    json!({
        "name": name,
        "kind": "command",
        "argv": ["bash", "-c", script],
        "env": {"OUT": out.to_string_lossy()},
    })
}

/// A command run of `python3 -c SCRIPT` whose `$OUT` is `out`.
fn python(name: &str, script: &str, out: &Path) -> Value {
    json!({
        "name": name,
        "kind": "command",
        "argv": ["python3", "-c", script],
        "env": {"OUT": out.to_string_lossy()},
    })
}

/// `DATA_DIR/runs/ID` of a test server.
fn run_dir(app: &TestApp, id: &str) -> PathBuf {
    let data_dir = app.datasets().parent().expect("data dir").to_path_buf();
    data_dir.join("runs").join(id)
}

fn of_type<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == name).collect()
}

/// The journaled process group of a run's (only) command.
fn journaled_pgid(events: &[Value]) -> i32 {
    let started = of_type(events, "CommandStarted");
    started.last().expect("CommandStarted")["data"]["pgid"]
        .as_i64()
        .expect("pgid") as i32
}

#[actix_web::test]
async fn a_command_reports_progress_epochs_and_checkpoints_and_completes() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    let script = r#"
        set -e
        sleep 300 &
        echo $! > "$OUT/grandchild"
        env | grep -E '^(RUNYARD_|CUDA_VISIBLE_DEVICES=|GREETING=)' | sort > "$OUT/env"
        pwd > "$OUT/pwd"
        echo "hello from stdout"
        echo "hello from stderr" >&2
        for e in 1 2 3; do
          for b in 1 2 3 4; do
            echo "{\"epoch\":$e,\"epochs\":3,\"batch\":$b,\"batches\":4,\"loss\":0.5,\"samples\":$(( (e - 1) * 128 + b * 32 )),\"lr\":0.01}" >&3
          done
          echo "{\"type\":\"epoch\",\"epoch\":$e,\"loss\":0.$((6 - e)),\"accuracy\":0.$((6 + e)),\"val_loss\":0.4,\"val_metric\":0.8,\"duration_ms\":5}" >&3
          printf "weights-$e" > "$RUNYARD_CHECKPOINT_DIR/.ckpt-$e.tmp"
          mv "$RUNYARD_CHECKPOINT_DIR/.ckpt-$e.tmp" "$RUNYARD_CHECKPOINT_DIR/ckpt-$e.bin"
          echo "{\"type\":\"checkpoint\",\"path\":\"ckpt-$e.bin\",\"epoch\":$e,\"step\":$((e * 4))}" >&3
        done
    "#;
    let mut spec = bash("reports", script, out.path());
    spec["env"]["GREETING"] = json!("hi");
    spec["checkpoint"] = json!({"keep": 2});
    let id = app.submit_ok(&spec).await;
    let streamed = app.stream(&id, None).await;
    let run = app.run(&id).await;
    assert_eq!(run["state"], "completed", "{run}");
    let dir = run_dir(&app, &id);

    // Progress reached the stream, ending on the command's last report.
    let progress: Vec<_> = streamed.iter().filter(|e| e.event == "progress").collect();
    let last = &progress.last().expect("a progress event").data;
    assert_eq!(
        (
            &last["epoch"],
            &last["epochs"],
            &last["batch"],
            &last["batches_per_epoch"],
            &last["samples"],
            &last["percent"],
        ),
        (
            &json!(3),
            &json!(3),
            &json!(4),
            &json!(4),
            &json!(384),
            &json!(100.0)
        ),
        "{last}"
    );

    // Every epoch journaled once, with its evaluation, and every checkpoint with its
    // real path and hash; no weights artifact.
    let events = app.events(&id).await;
    let epochs: Vec<_> = of_type(&events, "EpochCompleted")
        .iter()
        .map(|e| e["data"]["epoch"].as_u64().expect("epoch"))
        .collect();
    assert_eq!(epochs, [1, 2, 3]);
    assert_eq!(of_type(&events, "EpochEvaluated").len(), 3);
    let checkpoints = of_type(&events, "CheckpointSaved");
    assert_eq!(checkpoints.len(), 3);
    for (i, checkpoint) in checkpoints.iter().enumerate() {
        let e = i + 1;
        let data = &checkpoint["data"];
        assert_eq!(data["path"], format!("runs/{id}/checkpoints/ckpt-{e}.bin"));
        assert_eq!(
            (data["epoch"].as_u64(), data["step"].as_u64()),
            (Some(e as u64), Some(4 * e as u64))
        );
        let content = format!("weights-{e}");
        assert_eq!(data["bytes"], content.len());
        use sha2::Digest as _;
        assert_eq!(data["sha256"], hex::encode(sha2::Sha256::digest(&content)));
    }
    // `keep: 2`: the oldest reported checkpoint's file goes, the newest two stay.
    let checkpoint_file = |e: u32| dir.join("checkpoints").join(format!("ckpt-{e}.bin"));
    tokio::time::timeout(TIMEOUT, async {
        while checkpoint_file(1).exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the oldest checkpoint is pruned");
    assert_eq!(read(&checkpoint_file(3)), "weights-3");
    assert_eq!(read(&checkpoint_file(2)), "weights-2");
    assert!(of_type(&events, "ArtifactSaved").is_empty());
    let history = types(&events);
    let started = history
        .iter()
        .position(|t| t == "CommandStarted")
        .expect("started");
    let exited = history
        .iter()
        .position(|t| t == "CommandExited")
        .expect("exited");
    assert!(
        history[started - 1] == "RunStarted"
            && started
                < history
                    .iter()
                    .position(|t| t == "EpochCompleted")
                    .expect("epoch")
    );
    assert_eq!(history[exited + 1..], ["RunCompleted", "SlotReleased"]);
    let exit = &events[exited]["data"];
    assert_eq!(
        (&exit["status"], &exit["exit_code"]),
        (&json!("exit code 0"), &json!(0))
    );
    assert_eq!(exit["lines"], 18);
    let completed = &events[exited + 1]["data"];
    assert_eq!(
        (&completed["train_loss"], &completed["train_accuracy"]),
        (&json!(0.3), &json!(0.9))
    );

    // The run's view: metrics from the epochs, the pipe's figures, no live process.
    assert_eq!(run["metrics"]["epochs_completed"], 3);
    assert_eq!(
        run["checkpoint"]["path"],
        format!("runs/{id}/checkpoints/ckpt-3.bin")
    );
    assert_eq!(run["protocol"]["lines"], 18);
    assert_eq!(run["protocol"]["bad"], json!({}));
    assert_eq!(run["protocol"]["metrics"], json!({"lr": 0.01}));
    assert!(run.get("process").is_none(), "{run}");

    // What the command saw.
    let env = read(&out.path().join("env"));
    let data_dir = dir.parent().and_then(Path::parent).expect("data dir");
    let absolute = std::path::absolute(data_dir).expect("absolute");
    let expected = [
        "CUDA_VISIBLE_DEVICES=".to_string(),
        "GREETING=hi".to_string(),
        "RUNYARD_ATTEMPT=1".to_string(),
        format!(
            "RUNYARD_CHECKPOINT_DIR={}",
            absolute
                .join("runs")
                .join(&id)
                .join("checkpoints")
                .display()
        ),
        "RUNYARD_DEVICE=cpu".to_string(),
        "RUNYARD_PROGRESS_FD=3".to_string(),
        "RUNYARD_PROTOCOL=1".to_string(),
        format!("RUNYARD_RUN_ID={id}"),
    ];
    // Variables the test itself runs with (`make test` exports RUNYARD_REQUIRE_BROWSER)
    // are inherited through the server, as every server variable is: left out here.
    let inherited: Vec<String> = std::env::vars()
        .map(|(name, _)| name)
        .filter(|name| !expected.iter().any(|e| e.starts_with(&format!("{name}="))))
        .collect();
    let seen: Vec<&str> = env
        .lines()
        .filter(|line| {
            !inherited
                .iter()
                .any(|name| line.starts_with(&format!("{name}=")))
        })
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(
        std::fs::canonicalize(read(&out.path().join("pwd")).trim()).expect("pwd"),
        std::fs::canonicalize(&dir).expect("run dir")
    );

    // Its output, in the log files; and nothing of its group left running.
    let logs = dir.join("logs");
    assert_eq!(
        read(&logs.join("stdout.log")),
        "==> attempt 1 <==\nhello from stdout\n"
    );
    assert_eq!(
        read(&logs.join("stderr.log")),
        "==> attempt 1 <==\nhello from stderr\n"
    );
    let grandchild: i32 = read(&out.path().join("grandchild"))
        .trim()
        .parse()
        .expect("pid");
    assert!(
        dead(grandchild),
        "the command's background process was killed with its group"
    );
    assert!(group_gone(journaled_pgid(&events)));
}

#[actix_web::test]
async fn bad_lines_of_every_kind_are_counted_and_shown_while_the_run_goes_on() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    std::fs::write(out.path().join("outside.bin"), b"not the run's").expect("file");
    let script = r#"
import json, os, time
fd = int(os.environ["RUNYARD_PROGRESS_FD"])
out = os.environ["OUT"]
def w(data):
    os.write(fd, data)
w(b"not json\n")
w(b"[1, 2]\n")
w(b'{"epoch": "two"}\n')
w(b'{"type": "telemetry"}\n')
w(b'{"pad": "' + b"y" * 70000 + b'"}\n')
w(json.dumps({"type": "checkpoint", "path": os.path.join(out, "outside.bin")}).encode() + b"\n")
w(json.dumps({"m%d" % i: i for i in range(40)}).encode() + b"\n")
w(json.dumps({"type": "epoch", "epoch": 1, "loss": 0.25, "accuracy": 0.5}).encode() + b"\n")
while not os.path.exists(os.path.join(out, "go")):
    time.sleep(0.02)
w(b'{"type":"heartbeat"}\n' * 3000)
"#;
    let id = app
        .submit_ok(&python("bad-lines", script, out.path()))
        .await;
    let expected_bad = json!({
        "not_json": 1, "not_object": 1, "bad_field": 1, "unknown_type": 1,
        "too_long": 1, "bad_checkpoint": 1, "metric_dropped": 1,
    });
    // Shown live, while the command runs.
    let run = app
        .wait_for(&id, |r| r["protocol"]["bad"] == expected_bad)
        .await;
    assert_eq!(run["state"], "running", "{run}");
    assert_eq!(run["protocol"]["lines"], 8);
    assert_eq!(
        run["protocol"]["metrics"]
            .as_object()
            .expect("metrics")
            .len(),
        32
    );
    assert!(run["protocol"]["last_error"].is_string(), "{run}");
    std::fs::write(out.path().join("go"), b"").expect("go");

    let run = app.wait_for(&id, |r| r["state"] == "completed").await;
    let protocol = &run["protocol"];
    assert_eq!(protocol["lines"], 8 + 3000);
    let bad = protocol["bad"].as_object().expect("bad");
    assert!(bad["too_fast"].as_u64().unwrap_or(0) >= 1, "{protocol}");
    for (kind, n) in expected_bad.as_object().expect("object") {
        assert_eq!(&bad[kind], n, "{kind}: {protocol}");
    }
    assert_eq!(run["result"]["train_loss"], 0.25);
    let events = app.events(&id).await;
    let exited = of_type(&events, "CommandExited");
    assert_eq!(
        exited[0]["data"]["bad"], protocol["bad"],
        "journaled as shown"
    );
    assert!(of_type(&events, "CheckpointSaved").is_empty());
}

#[actix_web::test]
async fn a_chatty_command_is_drained_and_its_logs_are_rotated() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    let script = r#"
import os, sys
fd = int(os.environ["RUNYARD_PROGRESS_FD"])
line = b"x" * 1023 + b"\n"
for i in range(20 * 1024):
    sys.stdout.buffer.write(line)
    if i % 4 == 0:
        sys.stderr.buffer.write(line)
    if i % 2 == 0:
        os.write(fd, b'{"batch":%d,"loss":0.5}\n' % i)
sys.stdout.flush()
"#;
    let id = app.submit_ok(&python("chatty", script, out.path())).await;
    let run = app.wait_for(&id, |r| r["state"] == "completed").await;
    assert_eq!(run["protocol"]["lines"], 10 * 1024);
    let logs = run_dir(&app, &id).join("logs");
    for stream in ["stdout.log", "stderr.log"] {
        for name in [
            stream.to_string(),
            format!("{stream}.1"),
            format!("{stream}.2"),
        ] {
            let size = std::fs::metadata(logs.join(&name)).expect(&name).len();
            assert!(size > 0 && size <= 1 << 20, "{name}: {size} bytes");
        }
        assert!(!logs.join(format!("{stream}.3")).exists(), "log_keep = 2");
    }
    let stdout = read(&logs.join("stdout.log"));
    assert!(stdout.ends_with(&format!("{}\n", "x".repeat(1023))));
}

#[actix_web::test]
async fn a_non_zero_exit_fails_with_the_code_and_the_stderr_tail_and_is_retried() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    let script = r#"for i in $(seq 1 60); do echo "err line $i" >&2; done; exit 3"#;
    let mut spec = bash("exit-3", script, out.path());
    spec["max_retries"] = json!(1);
    spec["retry_backoff_secs"] = json!(0.05);
    let id = app.submit_ok(&spec).await;
    let run = app.wait_for(&id, |r| r["state"] == "failed").await;
    assert_eq!(run["attempt"], 2, "{run}");
    let error = run["error"].as_str().expect("error");
    let (head, tail) = error.split_once('\n').expect("stderr lines");
    assert_eq!(head, "exit code 3; last stderr lines:");
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 50);
    assert_eq!((lines[0], lines[49]), ("err line 11", "err line 60"));

    let events = app.events(&id).await;
    let retry = of_type(&events, "RunRetryScheduled");
    assert_eq!(retry.len(), 1);
    assert!(retry[0]["data"]["reason"]
        .as_str()
        .expect("reason")
        .starts_with("exit code 3;"));
    for exited in of_type(&events, "CommandExited") {
        assert_eq!(exited["data"]["exit_code"], 3);
    }
    let stderr = read(&run_dir(&app, &id).join("logs/stderr.log"));
    assert!(
        stderr.starts_with("==> attempt 1 <==\nerr line 1\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("err line 60\n==> attempt 2 <==\nerr line 1\n"),
        "appended across attempts"
    );
}

#[actix_web::test]
async fn a_command_killed_by_a_signal_fails_naming_it() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    let id = app
        .submit_ok(&bash(
            "killed",
            r#"echo dying >&2; kill -KILL $$"#,
            out.path(),
        ))
        .await;
    let run = app.wait_for(&id, |r| r["state"] == "failed").await;
    assert_eq!(
        run["error"],
        "killed by signal 9 (SIGKILL); last stderr lines:\ndying"
    );
    let events = app.events(&id).await;
    let exited = &of_type(&events, "CommandExited")[0]["data"];
    assert_eq!(
        (&exited["signal"], &exited["exit_code"]),
        (&json!(9), &Value::Null)
    );
}

#[actix_web::test]
async fn a_command_that_cannot_start_fails_saying_why() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    let mut missing = bash("no-program", "true", out.path());
    missing["argv"] = json!(["/nonexistent/runyard-test-program", "--flag"]);
    let mut nowhere = bash("no-cwd", "true", out.path());
    nowhere["cwd"] = json!(out.path().join("missing").to_string_lossy());
    for (spec, reason) in [
        (
            missing,
            "could not start `/nonexistent/runyard-test-program`: No such file or directory (os error 2)".to_string(),
        ),
        (
            nowhere,
            format!("`cwd` {} is not a directory", out.path().join("missing").display()),
        ),
    ] {
        let id = app.submit_ok(&spec).await;
        let run = app.wait_for(&id, |r| r["state"] == "failed").await;
        assert_eq!(run["error"], reason);
        let history = types(&app.events(&id).await);
        assert!(
            !history.iter().any(|t| t.starts_with("Command")),
            "no process, none journaled: {history:?}"
        );
    }
}

#[actix_web::test]
async fn cancel_sends_sigterm_and_sigkill_after_the_grace_to_a_command_that_ignores_it() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    // One command stops on SIGTERM; the other ignores it (its `sleep`s too).
    let polite = r#"trap 'echo stopping >&2; exit 0' TERM
        echo '{"type":"heartbeat"}' >&3
        while :; do sleep 0.05; done"#;
    let stubborn = r#"trap '' TERM
        echo '{"type":"heartbeat"}' >&3
        while :; do sleep 0.05; done"#;
    for (name, script, reason) in [
        (
            "polite",
            polite,
            "cancelled by request; it exited with code 0 after SIGTERM",
        ),
        (
            "stubborn",
            stubborn,
            "cancelled by request; it did not stop on SIGTERM; SIGKILL ended it after the 300ms grace period",
        ),
    ] {
        let mut spec = bash(name, script, out.path());
        spec["grace"] = json!("300ms");
        let id = app.submit_ok(&spec).await;
        // Its trap is set once it has said something.
        app.wait_for(&id, |r| r["protocol"]["lines"] == 1).await;
        let answer = app.post(&format!("/api/v1/runs/{id}/cancel")).await;
        assert!(answer.status().is_success(), "{}", answer.status());
        let run = app.wait_for(&id, |r| r["state"] == "cancelled").await;
        assert_eq!(run["error"], reason);
        let events = app.events(&id).await;
        assert!(group_gone(journaled_pgid(&events)));
        let exited = &of_type(&events, "CommandExited")[0]["data"];
        match name {
            "polite" => assert_eq!(exited["exit_code"], 0),
            _ => assert_eq!(exited["signal"], 9),
        }
    }
}

#[actix_web::test]
async fn pause_checkpoints_and_resume_starts_the_command_again_from_it() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    let script = r#"
        if [ -n "$RUNYARD_RESUME_FROM" ]; then
          echo "$RUNYARD_RESUME_FROM" > "$OUT/resumed_from"
          cat "$RUNYARD_RESUME_FROM" > "$OUT/resumed_content"
          echo '{"type":"epoch","loss":0.1}' >&3
          exit 0
        fi
        trap 'printf state-at-pause > "$RUNYARD_CHECKPOINT_DIR/pause.ckpt"
              echo "{\"type\":\"checkpoint\",\"path\":\"pause.ckpt\",\"epoch\":1,\"step\":5}" >&3
              exit 0' TERM
        echo '{"type":"epoch","epoch":1,"loss":0.5}' >&3
        while :; do sleep 0.05; done
    "#;
    let id = app.submit_ok(&bash("paused", script, out.path())).await;
    app.wait_for(&id, |r| r["metrics"]["epochs_completed"] == 1)
        .await;
    let answer = app.post(&format!("/api/v1/runs/{id}/pause")).await;
    assert!(answer.status().is_success(), "{}", answer.status());
    let run = app.wait_for(&id, |r| r["state"] == "paused").await;
    assert_eq!(
        run["error"],
        "paused by request; it exited with code 0 after SIGTERM"
    );
    let checkpoint = format!("runs/{id}/checkpoints/pause.ckpt");
    assert_eq!(run["checkpoint"]["path"], checkpoint);
    assert_eq!(run["checkpoint"]["step"], 5);

    let answer = app.post(&format!("/api/v1/runs/{id}/resume")).await;
    assert!(answer.status().is_success(), "{}", answer.status());
    let run = app.wait_for(&id, |r| r["state"] == "completed").await;
    assert_eq!(run["attempt"], 2);
    assert_eq!(run["metrics"]["epochs_completed"], 2, "{run}");
    let data_dir = run_dir(&app, &id)
        .parent()
        .and_then(Path::parent)
        .expect("data")
        .to_path_buf();
    assert_eq!(
        read(&out.path().join("resumed_from")).trim(),
        std::path::absolute(data_dir.join(&checkpoint))
            .expect("absolute")
            .to_string_lossy()
    );
    assert_eq!(read(&out.path().join("resumed_content")), "state-at-pause");
    let events = app.events(&id).await;
    let resumed = of_type(&events, "ResumedFromCheckpoint");
    assert_eq!(resumed[0]["data"]["path"], checkpoint);
    let epochs: Vec<_> = of_type(&events, "EpochCompleted")
        .iter()
        .map(|e| e["data"]["epoch"].clone())
        .collect();
    assert_eq!(
        epochs,
        [json!(1), json!(2)],
        "the resumed attempt's epochs follow on"
    );
}

#[actix_web::test]
async fn a_command_past_its_timeout_is_stopped_and_fails() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    let mut spec = bash("slow", "sleep 300", out.path());
    spec["timeout"] = json!("1s");
    let id = app.submit_ok(&spec).await;
    let run = app.wait_for(&id, |r| r["state"] == "failed").await;
    assert_eq!(run["error"], "timed out after 1s; SIGTERM ended it");
    assert!(group_gone(journaled_pgid(&app.events(&id).await)));
}

#[actix_web::test]
async fn heartbeats_keep_a_command_alive_and_a_silent_one_is_killed_on_stall() {
    let app = command_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    // Quiet but for heartbeats, for twice its stall threshold.
    let beating = r#"for i in $(seq 1 40); do echo '{"type":"heartbeat"}' >&3; sleep 0.1; done"#;
    let mut spec = bash("beating", beating, out.path());
    spec["stall_after_secs"] = json!(2.0);
    spec["kill_on_stall"] = json!(true);
    let id = app.submit_ok(&spec).await;
    app.wait_for(&id, |r| r["state"] == "completed").await;
    let events = app.events(&id).await;
    assert!(
        of_type(&events, "RunStalled").is_empty(),
        "{:?}",
        types(&events)
    );

    let mut spec = bash(
        "silent",
        r#"echo '{"type":"heartbeat"}' >&3; sleep 300"#,
        out.path(),
    );
    spec["stall_after_secs"] = json!(1.0);
    spec["kill_on_stall"] = json!(true);
    let id = app.submit_ok(&spec).await;
    let run = app.wait_for(&id, |r| r["state"] == "failed").await;
    let error = run["error"].as_str().expect("error");
    assert!(
        error.starts_with("stalled: no progress or heartbeat for ")
            && error.ends_with("(threshold 1s); stopped (kill_on_stall): SIGTERM ended it"),
        "{error}"
    );
    let history = types(&app.events(&id).await);
    let stalled = history
        .iter()
        .position(|t| t == "RunStalled")
        .expect("stalled");
    assert!(
        stalled
            < history
                .iter()
                .position(|t| t == "CommandExited")
                .expect("exited")
    );
}

#[tokio::test]
async fn a_command_left_by_a_killed_server_is_ended_at_restart_and_the_run_resumes() {
    let root = tempfile::tempdir().expect("temp dir");
    let data_dir = root.path().join("data");
    let out = root.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let http = client();
    let script = r#"
        if [ -n "$RUNYARD_RESUME_FROM" ]; then
          echo "$RUNYARD_RESUME_FROM" > "$OUT/resumed_from"
          exit 0
        fi
        printf one > "$RUNYARD_CHECKPOINT_DIR/c1"
        echo '{"type":"checkpoint","path":"c1","epoch":0,"step":1}' >&3
        sleep 300 &
        echo $! > "$OUT/grandchild"
        wait
    "#;

    let server = Server::start_with(&data_dir, "first.log", &["--allow-commands"]);
    wait_ready(&http, &server.address).await;
    let url = |server: &Server, path: &str| format!("{}/api/v1{path}", server.address);
    let answer = http
        .post(url(&server, "/runs"))
        .json(&bash("outlives", script, &out))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 201);
    let id = answer.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let run = wait_for_run_at(&http, &server.address, &id, |r| {
        r["process"].is_object() && r["checkpoint"]["step"] == 1
    })
    .await;
    let pid = run["process"]["pid"].as_i64().expect("pid") as i32;
    let pgid = run["process"]["pgid"].as_i64().expect("pgid") as i32;
    assert_eq!(pid, pgid, "the command leads its own group");
    let grandchild_file = out.join("grandchild");
    tokio::time::timeout(TIMEOUT, async {
        while !grandchild_file.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the command started its background process");
    server.kill();
    assert!(
        !dead(pid) && !group_gone(pgid),
        "the command outlives the killed server"
    );

    let server = Server::start_with(&data_dir, "second.log", &["--allow-commands"]);
    wait_ready(&http, &server.address).await;
    // Ended before the server took any request.
    assert!(group_gone(pgid), "the old process group is gone");
    let grandchild: i32 = read(&grandchild_file).trim().parse().expect("pid");
    assert!(dead(pid) && dead(grandchild));

    let run = wait_for_run_at(&http, &server.address, &id, |r| r["state"] == "completed").await;
    assert_eq!(run["attempt"], 2);
    let checkpoint = data_dir.join(format!("runs/{id}/checkpoints/c1"));
    assert_eq!(
        read(&out.join("resumed_from")).trim(),
        std::path::absolute(&checkpoint)
            .expect("absolute")
            .to_string_lossy()
    );
    let events = get_json_at(&http, url(&server, &format!("/runs/{id}/events"))).await;
    let events = events.as_array().expect("events");
    let history = types(events);
    let exited = history
        .iter()
        .position(|t| t == "CommandExited")
        .expect("exited");
    assert_eq!(
        history[exited..exited + 6],
        [
            "CommandExited",
            "RunRequeued",
            "SlotReleased",
            "SlotClaimed",
            "RunStarted",
            "ResumedFromCheckpoint"
        ]
    );
    let data = &events[exited]["data"];
    assert_eq!(data["signal"], 9);
    assert_eq!(
        data["status"],
        format!("still running when the server restarted: process group {pgid} ended with SIGKILL")
    );
}
