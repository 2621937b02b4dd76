//! Command runs on several slots: one process per slot, each a `torch.distributed`
//! rank with the variables `torchrun` sets, ending together. The first tests use
//! shell ranks (fast, and exact about signals and variables); the rest train a real
//! PyTorch model data-parallel with the gloo backend (`examples/ddp/train_ddp.py`),
//! with the torch of the virtual environment `make test` makes under `target/`.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, client, dead, get_json_at, poll_until, read, spawn_app_with, types,
    wait_for_run_at, wait_ready, TestApp, TIMEOUT,
};

/// How often a file the ranks write is looked for.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);
use crate::server::{Launch, Server};
use runyard::train::command::group_gone;

/// A server that accepts command runs, with two CPU slots.
async fn two_slot_app() -> TestApp {
    spawn_app_with(|c| {
        c.runs.allow_commands = true;
        c.train.cpu_slots = 2;
    })
    .await
}

/// A command run of `bash -c SCRIPT` on two slots whose `$OUT` is `out`.
fn ranks_of_bash(name: &str, script: &str, out: &Path) -> Value {
    json!({
        "name": name,
        "kind": "command",
        "slots": 2,
        "argv": ["bash", "-c", script],
        "env": {"OUT": out.to_string_lossy()},
    })
}

/// The pid of each rank of a live run, from its view: rank 0's `process`, the
/// others' `ranks`.
fn rank_pids(run: &Value) -> Vec<i32> {
    let mut pids = vec![run["process"]["pid"].as_i64().expect("rank 0's pid") as i32];
    let ranks = run["ranks"].as_object().expect("ranks");
    for rank in 1..=ranks.len() {
        pids.push(ranks[&rank.to_string()]["pid"].as_i64().expect("pid") as i32);
    }
    pids
}

async fn logs(app: &TestApp, id: &str, query: &str) -> String {
    let response = app.get(&format!("/api/v1/runs/{id}/logs{query}")).await;
    assert_eq!(response.status(), 200, "{query}");
    response.text().await.expect("text")
}

/// Reads a run's log stream to its end: each `line` event's id and data.
async fn log_stream(
    app: &TestApp,
    id: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> Vec<(String, String)> {
    let mut request = app.client.get(format!(
        "{}/api/v1/runs/{id}/logs/stream{query}",
        app.address
    ));
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last);
    }
    let response = request.send().await.expect("stream answered");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(TIMEOUT, async {
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.expect("chunk")).expect("utf-8"));
        }
    })
    .await
    .expect("the stream ended with the run");
    text.split("\n\n")
        .filter(|block| block.contains("event: line"))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .to_string()
            };
            (field("id: "), field("data: "))
        })
        .collect()
}

#[actix_web::test]
async fn each_rank_gets_the_distributed_variables_its_own_pipe_and_its_own_logs() {
    let app = two_slot_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    let script = r#"
        env | grep -E '^(WORLD_SIZE|RANK|LOCAL_RANK|LOCAL_WORLD_SIZE|NODE_RANK|GROUP_RANK|MASTER_ADDR|MASTER_PORT|CUDA_VISIBLE_DEVICES|RUNYARD_DEVICE)=' | sort > "$OUT/env-$RANK"
        echo "hello from rank $RANK"
        echo "{\"epoch\":1,\"epochs\":1,\"batch\":1,\"batches\":1,\"loss\":0.$((RANK + 1))}" >&3
        if [ "$RANK" = 1 ]; then
          printf w > "$RUNYARD_CHECKPOINT_DIR/from-rank-1"
          echo '{"type":"checkpoint","path":"from-rank-1","epoch":1,"step":1}' >&3
        else
          echo '{"type":"epoch","epoch":1,"loss":0.5}' >&3
        fi
    "#;
    let id = app
        .submit_ok(&ranks_of_bash("variables", script, out.path()))
        .await;
    let run = app.wait_ended(&id).await;
    assert_eq!(run["state"], "completed", "{run}");

    // The variables torchrun sets, the same port for both, no GPU on a CPU slot.
    let env_of = |rank: u32| read(&out.path().join(format!("env-{rank}")));
    let port = env_of(0)
        .lines()
        .find_map(|l| l.strip_prefix("MASTER_PORT="))
        .expect("MASTER_PORT")
        .to_string();
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{port}");
    for rank in 0..2 {
        assert_eq!(
            env_of(rank),
            format!(
                "CUDA_VISIBLE_DEVICES=\nGROUP_RANK=0\nLOCAL_RANK={rank}\nLOCAL_WORLD_SIZE=2\n\
                 MASTER_ADDR=127.0.0.1\nMASTER_PORT={port}\nNODE_RANK=0\nRANK={rank}\n\
                 RUNYARD_DEVICE=cpu\nWORLD_SIZE=2\n"
            )
        );
    }

    // Rank 0's pipe is the run's: its epoch, not rank 1's checkpoint, which is
    // refused and counted; rank 1's lines are drained.
    assert_eq!(run["epochs"].as_array().map(Vec::len), Some(1), "{run}");
    assert!(run["checkpoint"].is_null(), "{run}");
    assert_eq!(run["protocol"]["bad"]["other_rank_checkpoint"], 1, "{run}");
    assert!(
        run["protocol"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("rank 1") && e.contains("only rank 0")),
        "{run}"
    );
    // Both processes were journaled, in one append, and ended as one.
    let events = app.events(&id).await;
    let history = types(&events);
    let started = history
        .iter()
        .position(|t| t == "CommandStarted")
        .expect("CommandStarted");
    assert_eq!(history[started + 1], "RankStarted", "{history:?}");
    assert_eq!(
        events[started]["seq"].as_u64().map(|s| s + 1),
        events[started + 1]["seq"].as_u64()
    );
    assert_eq!(events[started + 1]["data"]["rank"], 1);
    let exited = events
        .iter()
        .find(|e| e["type"] == "CommandExited")
        .expect("CommandExited");
    assert_eq!(
        exited["data"]["status"],
        "rank 0: exit code 0; rank 1: exit code 0"
    );

    // One log per rank; `all` tags each line.
    assert_eq!(
        logs(&app, &id, "?rank=1").await,
        "==> attempt 1 <==\nhello from rank 1\n"
    );
    assert_eq!(
        logs(&app, &id, "").await,
        "==> attempt 1 <==\nhello from rank 0\n"
    );
    assert_eq!(
        logs(&app, &id, "?rank=all").await,
        "[rank 0] ==> attempt 1 <==\n[rank 0] hello from rank 0\n\
         [rank 1] ==> attempt 1 <==\n[rank 1] hello from rank 1\n"
    );
    let refused = app.get(&format!("/api/v1/runs/{id}/logs?rank=2")).await;
    let detail = assert_problem(refused, 400, "invalid_query").await;
    assert!(
        detail.contains("`rank` 2") && detail.contains("it has 2"),
        "{detail}"
    );

    // The stream of every rank, and a reconnection after its first line that goes
    // on with the rest and repeats nothing.
    let streamed = log_stream(&app, &id, "?rank=all", None).await;
    let data: Vec<&str> = streamed.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(
        data,
        [
            "[rank 0] ==> attempt 1 <==",
            "[rank 0] hello from rank 0",
            "[rank 1] ==> attempt 1 <==",
            "[rank 1] hello from rank 1"
        ]
    );
    let rest = log_stream(&app, &id, "?rank=all", Some(&streamed[0].0)).await;
    let rest: Vec<&str> = rest.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(rest, data[1..]);
    let one = log_stream(&app, &id, "?rank=1&tail=1", None).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].1, "hello from rank 1");

    // The CLI shows the same, following to the run's outcome.
    let cli = crate::logs::run_cli;
    let (code, out, err) = cli(&app.address, &["logs", &id, "--rank", "1"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "==> attempt 1 <==\nhello from rank 1\n"),
        "{err}"
    );
    let (code, out, err) = cli(&app.address, &["logs", &id, "--rank", "all", "-f"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), data, "{err}");
    let (code, _, err) = cli(&app.address, &["logs", &id, "--rank", "first"]).await;
    assert_eq!(code, 2, "a bad --rank is the command line's: {err}");
    assert!(err.contains("--rank"), "{err}");
    let (code, _, err) = cli(&app.address, &["logs", &id, "--rank", "5"]).await;
    assert_eq!(
        code, 4,
        "a rank the run does not have is the server's answer: {err}"
    );
    assert!(err.contains("`rank` 5"), "{err}");
}

#[actix_web::test]
async fn the_first_rank_to_fail_ends_the_others_is_named_and_the_retry_starts_every_rank() {
    let app = two_slot_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    // Attempt 1: rank 1 fails once rank 0 is up; rank 0 ignores SIGTERM, so it is
    // ended with SIGKILL after the grace. Attempt 2: both complete.
    let script = r#"
        if [ "$RUNYARD_ATTEMPT" = 2 ]; then
          echo "$RANK" > "$OUT/again-$RANK"
          exit 0
        fi
        if [ "$RANK" = 1 ]; then
          until [ -e "$OUT/rank0-up" ]; do sleep 0.02; done
          echo "rank 1 broke" >&2
          exit 3
        fi
        trap '' TERM
        echo $$ > "$OUT/rank0-pid"
        touch "$OUT/rank0-up"
        while true; do sleep 0.05; done
    "#;
    let mut spec = ranks_of_bash("fail-fast", script, out.path());
    spec["grace"] = json!("1s");
    spec["max_retries"] = json!(1);
    spec["retry_backoff_secs"] = json!(0.1);
    let id = app.submit_ok(&spec).await;
    let run = app.wait_ended(&id).await;
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(run["attempt"], 2);
    assert_eq!(read(&out.path().join("again-0")).trim(), "0");
    assert_eq!(read(&out.path().join("again-1")).trim(), "1");
    let rank0: i32 = read(&out.path().join("rank0-pid"))
        .trim()
        .parse()
        .expect("pid");
    assert!(dead(rank0), "rank 0 of the failed attempt is gone");

    let events = app.events(&id).await;
    let exited = events
        .iter()
        .find(|e| e["type"] == "CommandExited")
        .expect("CommandExited");
    let status = exited["data"]["status"].as_str().expect("status");
    assert!(
        status.starts_with("rank 1 exit code 3 first;")
            && status.contains("rank 0: killed by signal 9 (SIGKILL)"),
        "{status}"
    );
    assert_eq!(exited["data"]["exit_code"], 3);
    let retry = events
        .iter()
        .find(|e| e["type"] == "RunRetryScheduled")
        .expect("a retry");
    let reason = retry["data"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("rank 1 exit code 3; every other rank was stopped")
            && reason.contains("last stderr lines of rank 1:\nrank 1 broke"),
        "{reason}"
    );
}

#[actix_web::test]
async fn cancel_ends_every_rank_and_a_killed_server_leaves_no_rank_behind() {
    let root = tempfile::tempdir().expect("temp dir");
    let data_dir = root.path().join("data");
    let out = root.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let http = client();
    // Each rank starts a process of its own group and waits; a resumed attempt
    // records that it started and waits too.
    let script = r#"
        echo "$RUNYARD_ATTEMPT" > "$OUT/attempt-$RANK"
        sleep 300 &
        echo $! > "$OUT/child-$RANK-$RUNYARD_ATTEMPT"
        wait
    "#;
    let launch = || {
        Launch::new(&data_dir)
            .env("RUNYARD__TRAIN__CPU_SLOTS", "2")
            .args(&["--allow-commands"])
    };
    let server = launch().log(&root.path().join("first.log")).start();
    wait_ready(&http, &server.address).await;
    let url = |server: &Server, path: &str| format!("{}/api/v1{path}", server.address);
    let answer = http
        .post(url(&server, "/runs"))
        .json(&ranks_of_bash("outlives", script, &out))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 201);
    let id = answer.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let run = wait_for_run_at(&http, &server.address, &id, |r| {
        r["process"].is_object() && r["ranks"]["1"].is_object()
    })
    .await;
    let pids = rank_pids(&run);
    let children = |attempt: u32| -> Vec<PathBuf> {
        (0..2)
            .map(|rank| out.join(format!("child-{rank}-{attempt}")))
            .collect()
    };
    poll_until("every rank started its child", POLL, || async {
        children(1).iter().all(|f| f.exists()).then_some(())
    })
    .await;
    server.kill();
    assert!(
        pids.iter().all(|pid| !dead(*pid) && !group_gone(*pid)),
        "the ranks outlive the killed server"
    );

    let server = launch().log(&root.path().join("second.log")).start();
    wait_ready(&http, &server.address).await;
    // Every rank's group was ended before the server took a request.
    for (pid, child) in pids.iter().zip(children(1)) {
        let child: i32 = read(&child).trim().parse().expect("pid");
        assert!(
            group_gone(*pid) && dead(*pid) && dead(child),
            "rank {pid} swept"
        );
    }
    let events = get_json_at(&http, url(&server, &format!("/runs/{id}/events"))).await;
    let exited = events
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "CommandExited")
        .expect("CommandExited")
        .clone();
    let status = exited["data"]["status"].as_str().expect("status");
    assert!(
        status.starts_with("rank 0: still running when the server restarted")
            && status.contains("; rank 1: still running when the server restarted"),
        "{status}"
    );

    // The run went on with a new attempt of both ranks; cancel ends both.
    let run = wait_for_run_at(&http, &server.address, &id, |r| {
        r["attempt"] == 2 && r["ranks"]["1"].is_object()
    })
    .await;
    let pids = rank_pids(&run);
    poll_until(
        "every rank of attempt 2 started its child",
        POLL,
        || async { children(2).iter().all(|f| f.exists()).then_some(()) },
    )
    .await;
    let cancel = http
        .post(url(&server, &format!("/runs/{id}/cancel")))
        .send()
        .await
        .expect("answered");
    assert!(cancel.status().is_success());
    let run = wait_for_run_at(&http, &server.address, &id, |r| r["state"] == "cancelled").await;
    assert!(run["ranks"].is_null() && run["process"].is_null(), "{run}");
    for (pid, child) in pids.iter().zip(children(2)) {
        let child: i32 = read(&child).trim().parse().expect("pid");
        assert!(group_gone(*pid) && dead(child), "rank {pid} cancelled");
    }
    // Every slot is free again.
    let slots = get_json_at(&http, url(&server, "/slots")).await;
    let slots = slots.as_array().expect("slots");
    assert_eq!(slots.len(), 2);
    assert!(slots.iter().all(|s| s["run_id"].is_null()), "{slots:?}");
}

/// The Python of the virtual environment with torch that `make test` makes (shared
/// with the benchmarks): `TARGET/bench-venv/bin/python`.
pub(crate) fn torch_python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let python = std::path::absolute(target.join("bench-venv/bin/python")).expect("absolute");
    assert!(
        python.exists(),
        "{} is missing: `make test` makes it (or `bash scripts/setup-torch.sh`)",
        python.display()
    );
    python
}

/// The data-parallel digits example on two slots, `args` after the script.
pub(crate) fn ddp_spec(name: &str, args: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let digits = root.join("data/datasets/digits.csv.gz");
    assert!(
        digits.exists(),
        "{} is missing: `make setup` fetches it",
        digits.display()
    );
    let mut argv = vec![
        torch_python().to_string_lossy().into_owned(),
        root.join("examples/ddp/train_ddp.py")
            .to_string_lossy()
            .into_owned(),
        "--data".into(),
        digits.to_string_lossy().into_owned(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    json!({
        "name": name,
        "kind": "command",
        "slots": 2,
        "argv": argv,
        "grace": "30s",
    })
}

/// The `params-sha256` line of each rank's log.
pub(crate) async fn parameter_hashes(app: &TestApp, id: &str) -> Vec<String> {
    let mut hashes = Vec::new();
    for rank in 0..2 {
        let text = logs(app, id, &format!("?rank={rank}&tail=10000")).await;
        let hash = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("params-sha256 "))
            .unwrap_or_else(|| panic!("rank {rank} printed no parameter hash:\n{text}"));
        hashes.push(hash.to_string());
    }
    hashes
}

#[actix_web::test]
async fn two_gloo_ranks_train_digits_to_the_same_parameters_through_the_api() {
    let app = two_slot_app().await;
    let id = app.submit_ok(&ddp_spec("ddp", &["--epochs", "6"])).await;
    let run = app.wait_ended(&id).await;
    assert_eq!(run["state"], "completed", "{run}");
    let epochs = run["epochs"].as_array().expect("epochs");
    assert_eq!(epochs.len(), 6, "{run}");
    let loss = |e: &Value| e["train_loss"].as_f64().expect("loss");
    assert!(
        loss(&epochs[5]) < loss(&epochs[0]) * 0.5,
        "the loss falls: {epochs:?}"
    );
    let accuracy = epochs[5]["val_metric"].as_f64().expect("val accuracy");
    assert!(accuracy >= 0.9, "validation accuracy {accuracy}");
    let hashes = parameter_hashes(&app, &id).await;
    assert_eq!(
        hashes[0], hashes[1],
        "the all-reduce kept the ranks identical"
    );
    assert_eq!(
        run["checkpoint"]["epoch"], 6,
        "rank 0's checkpoints are the run's"
    );
}

#[actix_web::test]
async fn a_killed_rank_fails_the_attempt_and_the_retry_resumes_every_rank_from_rank_0s_checkpoint()
{
    let app = two_slot_app().await;
    let mut spec = ddp_spec("ddp-kill", &["--epochs", "5", "--step-delay-ms", "20"]);
    spec["max_retries"] = json!(1);
    spec["retry_backoff_secs"] = json!(0.1);
    spec["grace"] = json!("5s");
    let id = app.submit_ok(&spec).await;
    let run = app
        .wait_for(&id, |r| {
            r["checkpoint"]["epoch"].as_u64() >= Some(1) && r["ranks"]["1"].is_object()
        })
        .await;
    let pids = rank_pids(&run);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[1]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("rank 1 killed");
    let run = app.wait_ended(&id).await;
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(run["attempt"], 2);
    assert!(dead(pids[0]), "rank 0 of the failed attempt is gone");

    let events = app.events(&id).await;
    let history = types(&events);
    let retry = events
        .iter()
        .find(|e| e["type"] == "RunRetryScheduled")
        .expect("a retry");
    let reason = retry["data"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("rank 1 killed by signal 9 (SIGKILL); every other rank was stopped"),
        "{reason}"
    );
    let resumed = history
        .iter()
        .position(|t| t == "ResumedFromCheckpoint")
        .expect("the retry resumed from a checkpoint");
    assert!(
        resumed
            > history
                .iter()
                .position(|t| t == "RunRetryScheduled")
                .expect("retry")
    );
    let hashes = parameter_hashes(&app, &id).await;
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(run["epochs"].as_array().map(Vec::len), Some(5), "{run}");
}

#[actix_web::test]
async fn pause_stops_every_rank_at_rank_0s_checkpoint_and_resume_ends_bit_identical() {
    let app = two_slot_app().await;
    let args = ["--epochs", "4", "--step-delay-ms", "20"];
    let id = app.submit_ok(&ddp_spec("ddp-pause", &args)).await;
    let run = app
        .wait_for(&id, |r| {
            r["checkpoint"]["epoch"].as_u64() >= Some(1) && r["ranks"]["1"].is_object()
        })
        .await;
    let pids = rank_pids(&run);
    assert!(app
        .post(&format!("/api/v1/runs/{id}/pause"))
        .await
        .status()
        .is_success());
    let run = app
        .wait_for(&id, |r| r["state"] == "paused" || r["state"] == "completed")
        .await;
    assert_eq!(run["state"], "paused", "{run}");
    assert!(pids.iter().all(|pid| dead(*pid)), "every rank exited");
    let paused_at = run["checkpoint"]["step"].as_u64().expect("a checkpoint");
    assert!(app
        .post(&format!("/api/v1/runs/{id}/resume"))
        .await
        .status()
        .is_success());
    let run = app.wait_ended(&id).await;
    assert_eq!(run["state"], "completed", "{run}");
    assert!(run["checkpoint"]["step"].as_u64() > Some(paused_at));
    let resumed = parameter_hashes(&app, &id).await;
    assert_eq!(resumed[0], resumed[1]);

    // The same run straight through ends with the very same parameters.
    let twin = app.submit_ok(&ddp_spec("ddp-twin", &args)).await;
    let run = app.wait_ended(&twin).await;
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(parameter_hashes(&app, &twin).await, resumed);
}

/// `runyard rank`, as one task of the worker's `srun` step runs it: the binary with
/// Slurm's task variables set by hand.
fn rank_task(logs: &Path, script: &str, out: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runyard"));
    command
        .args([
            "rank",
            "--world",
            "4",
            "--first-rank",
            "2",
            "--local-world",
            "2",
        ])
        .args([
            "--master-addr",
            "10.1.2.3",
            "--master-port",
            "29411",
            "--logs",
        ])
        .arg(logs)
        .args([
            "--attempt",
            "2",
            "--log-max-bytes",
            "1000000",
            "--log-keep",
            "1",
        ])
        .args(["--", "bash", "-c", script])
        .env("SLURM_PROCID", "1")
        .env("SLURM_LOCALID", "1")
        .env("SLURM_NODEID", "0")
        .env("OUT", out)
        .stderr(std::process::Stdio::piped());
    command
}

#[actix_web::test]
async fn a_rank_on_another_node_gets_its_rank_from_slurm_logs_to_its_own_files_and_passes_sigterm_on(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let script = r#"
        env | grep -E '^(WORLD_SIZE|RANK|LOCAL_RANK|LOCAL_WORLD_SIZE|NODE_RANK|GROUP_RANK|MASTER_ADDR|MASTER_PORT|RUNYARD_DEVICE|RUNYARD_PROGRESS_FD)=' | sort > "$OUT/env"
        echo '{"type":"checkpoint","path":"x"}' >&3
        echo "out of rank $RANK"
        echo "err of rank $RANK" >&2
        exit 3
    "#;
    let output = rank_task(&logs, script, dir.path())
        .env_remove("CUDA_VISIBLE_DEVICES")
        .output()
        .expect("runyard rank runs");
    assert_eq!(output.status.code(), Some(3), "the command's exit code");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("runyard: rank 3 ended"), "{stderr}");
    // Task 1 of the step, the second on the step's first node: the job's rank 3 on
    // its second node.
    assert_eq!(
        read(&dir.path().join("env")),
        "GROUP_RANK=1\nLOCAL_RANK=1\nLOCAL_WORLD_SIZE=2\nMASTER_ADDR=10.1.2.3\n\
         MASTER_PORT=29411\nNODE_RANK=1\nRANK=3\nRUNYARD_DEVICE=cpu\nRUNYARD_PROGRESS_FD=3\n\
         WORLD_SIZE=4\n"
    );
    assert_eq!(
        read(&logs.join("rank-3/stdout.log")),
        "==> attempt 2 <==\nout of rank 3\n"
    );
    assert_eq!(
        read(&logs.join("rank-3/stderr.log")),
        "==> attempt 2 <==\nerr of rank 3\n"
    );

    // SIGTERM to the task reaches the command's own process group.
    let script = r#"
        trap 'echo "stopped on SIGTERM"; exit 0' TERM
        touch "$OUT/up"
        while true; do sleep 0.05; done
    "#;
    let mut task = rank_task(&logs, script, dir.path())
        .spawn()
        .expect("runyard rank starts");
    poll_until("the command to start", POLL, || async {
        dir.path().join("up").exists().then_some(())
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(task.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = tokio::task::spawn_blocking(move || task.wait())
        .await
        .expect("join")
        .expect("exit status");
    assert_eq!(status.code(), Some(0), "it ended as its command did");
    assert!(read(&logs.join("rank-3/stdout.log")).ends_with("stopped on SIGTERM\n"));
}

#[actix_web::test]
async fn a_rank_sigterm_ends_unasked_fails_the_attempt_once_no_stop_comes() {
    let app = two_slot_app().await;
    let out = tempfile::tempdir().expect("tempdir");
    // Rank 1 is sent SIGTERM by no one the server knows (as Slurm ending a job sends
    // it, with the worker's pause usually right behind): with no stop asked for, the
    // attempt fails on it.
    let script = r#"
        if [ "$RANK" = 1 ]; then echo "rank 1 going" >&2; kill -TERM $$; fi
        trap 'exit 0' TERM
        while true; do sleep 0.05; done
    "#;
    let id = app
        .submit_ok(&ranks_of_bash("termed", script, out.path()))
        .await;
    let run = app.wait_ended(&id).await;
    assert_eq!(run["state"], "failed", "{run}");
    let error = run["error"].as_str().expect("error");
    assert!(
        error.starts_with("rank 1 killed by signal 15 (SIGTERM); every other rank was stopped")
            && error.contains("rank 1 going"),
        "{error}"
    );
}
