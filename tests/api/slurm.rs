//! The Slurm executor against a real cluster: the one-node cluster that
//! `scripts/setup-slurm.sh` starts (`make test` runs it). Without one these tests say
//! they were skipped, unless `RUNYARD_REQUIRE_SLURM=1` (set by `make test`) makes
//! them fail.
//!
//! The command runs here wait for a gate file the test creates, so what the test sees
//! (live progress, a kill while the job runs) does not depend on timing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, client, get_json_at, long_spec, quick_spec, spawn_app, spawn_app_with, types,
    wait_for_run_at, TestApp,
};
use crate::server::Server;

/// Tests that take the cluster's node down hold it alone; the others share it.
pub(crate) static CLUSTER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Whether a Slurm cluster answers; says why a test is skipped when none does.
pub(crate) fn slurm_up(test: &str) -> bool {
    let up = Command::new("sinfo")
        .args(["--noheader", "--format=%a"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("up"));
    if !up {
        assert!(
            std::env::var("RUNYARD_REQUIRE_SLURM").as_deref() != Ok("1"),
            "RUNYARD_REQUIRE_SLURM=1 but no Slurm cluster answers `sinfo`: run \
             `sudo bash scripts/setup-slurm.sh`"
        );
        eprintln!(
            "SKIPPED: slurm::{test}: no Slurm cluster answers `sinfo`; \
             `sudo bash scripts/setup-slurm.sh` starts a one-node one"
        );
    }
    up
}

/// A server with the Slurm executor over a fresh shared directory, sharing the
/// cluster with the other tests; `None` (having said why) without a cluster.
async fn on_the_cluster(
    test: &str,
) -> Option<(
    TestApp,
    tempfile::TempDir,
    tokio::sync::RwLockReadGuard<'static, ()>,
)> {
    if !slurm_up(test) {
        return None;
    }
    let cluster = CLUSTER.read().await;
    let shared = tempfile::tempdir().expect("shared dir");
    let app = slurm_app(shared.path()).await;
    Some((app, shared, cluster))
}

/// The server's `/metrics` text.
async fn metrics_text(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.expect("text")
}

/// Cancels run `id` and waits until it is cancelled and its job's end journaled.
async fn cancel_and_wait(app: &TestApp, id: &str) -> Value {
    let response = app.post(&format!("/api/v1/runs/{id}/cancel")).await;
    assert!(response.status().is_success(), "{}", response.status());
    app.wait_for(id, |r| {
        r["state"] == "cancelled" && r["slurm"]["ended"].is_string()
    })
    .await
}

/// A server with the Slurm executor over `shared`, running this build's binary as
/// the worker.
pub(crate) async fn slurm_app(shared: &Path) -> TestApp {
    slurm_app_with(shared, |_| {}).await
}

/// [`slurm_app`] after `configure` adjusted the Slurm executor's settings.
async fn slurm_app_with(
    shared: &Path,
    configure: impl FnOnce(&mut runyard::config::SlurmConfig),
) -> TestApp {
    let shared = shared.to_path_buf();
    spawn_app_with(move |config| {
        config.runs.allow_commands = true;
        let slurm = &mut config.executors.slurm;
        slurm.enabled = true;
        slurm.shared_dir = Some(shared);
        slurm.worker_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_runyard")));
        slurm.poll_interval_ms = 200;
        slurm.grace_secs = 5;
        configure(slurm);
    })
    .await
}

/// A command run on Slurm that reports epoch 1, waits for `gate` to exist, then
/// reports epoch 2 and exits 0.
pub(crate) fn gated_spec(name: &str, gate: &Path) -> Value {
    let script = r#"
printf '{"epoch":1,"epochs":2,"batch":5,"batches":10,"samples":50,"loss":0.5}\n' >&3
printf '{"type":"epoch","epoch":1,"loss":0.5}\n' >&3
while [ ! -e "$GATE" ]; do sleep 0.05; done
printf '{"epoch":2,"epochs":2,"batch":10,"batches":10,"samples":200,"loss":0.25}\n' >&3
printf '{"type":"epoch","epoch":2,"loss":0.25}\n' >&3
echo "gated run done" >&2
"#;
    json!({
        "name": name,
        "kind": "command",
        "executor": "slurm",
        "argv": ["sh", "-c", script],
        "env": {"GATE": gate.display().to_string()},
        "grace": "2s",
    })
}

/// `spec` on Slurm.
fn on_slurm(mut spec: Value) -> Value {
    spec["executor"] = json!("slurm");
    spec
}

/// Asserts that no fact was journaled twice: each epoch once, each checkpoint step
/// once, `WorkerSynced` always moving forward; answers the epochs.
fn assert_each_fact_once(events: &[Value]) -> Vec<u64> {
    let mut epochs = Vec::new();
    let mut steps = Vec::new();
    let mut synced = 0;
    for event in events {
        match event["type"].as_str() {
            Some("EpochCompleted") => epochs.push(event["data"]["epoch"].as_u64().expect("epoch")),
            Some("CheckpointSaved") => steps.push(event["data"]["step"].as_u64().expect("step")),
            Some("WorkerSynced") => {
                let through = event["data"]["through_seq"].as_u64().expect("seq");
                assert!(through > synced, "WorkerSynced went back: {events:#?}");
                synced = through;
            }
            _ => {}
        }
    }
    let mut unique = epochs.clone();
    unique.dedup();
    assert_eq!(
        unique,
        epochs,
        "an epoch journaled twice: {:?}",
        types(events)
    );
    let mut unique_steps = steps.clone();
    unique_steps.dedup();
    assert_eq!(unique_steps, steps, "a checkpoint journaled twice");
    epochs
}

/// Slurm's state of a job, from `scontrol`.
fn job_state(job_id: u64) -> String {
    job_field(job_id, "JobState").unwrap_or_else(|| "GONE".into())
}

/// A field of `scontrol show job`, while Slurm remembers the job.
fn job_field(job_id: u64, name: &str) -> Option<String> {
    let output = Command::new("scontrol")
        .args(["show", "job", "--oneliner", &job_id.to_string()])
        .output()
        .expect("scontrol runs");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

#[actix_web::test]
async fn a_slurm_run_trains_in_a_job_and_completes_with_every_fact_once() {
    let Some((app, _shared, _cluster)) =
        on_the_cluster("a_slurm_run_trains_in_a_job_and_completes_with_every_fact_once").await
    else {
        return;
    };
    let mut spec = on_slurm(quick_spec("slurm-train"));
    spec["epochs"] = json!(4);
    spec["checkpoint"] = json!({"every_batches": 40, "keep": 2});
    let response = app.submit(&spec).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("run");
    // The job id is journaled before the answer.
    let job_id = body["slurm"]["job_id"]
        .as_u64()
        .expect("job id in the answer");
    assert_eq!(body["slurm"]["job"], 1);
    let id = body["id"].as_str().expect("id").to_string();
    // The job's end is journaled once Slurm reports it, after the run's.
    let run = app.wait_for(&id, |r| r["slurm"]["ended"].is_string()).await;
    assert_eq!(run["state"], "completed", "{run:#}");
    assert_eq!(run["slurm"]["ended"], "COMPLETED", "{run:#}");
    assert_eq!(
        run["slurm"]["node"].as_str().map(str::is_empty),
        Some(false)
    );
    assert_eq!(run["device"], "cpu");
    assert_eq!(run["metrics"]["epochs_completed"], 4);
    let events = app.events(&id).await;
    assert_eq!(assert_each_fact_once(&events), vec![1, 2, 3, 4]);
    let kinds = types(&events);
    for kind in [
        "SlurmJobSubmitted",
        "SlurmJobStarted",
        "CheckpointSaved",
        "RunCompleted",
        "SlurmJobEnded",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
    }
    // Files the worker wrote in the shared directory download through the server.
    let weights = app
        .get(&format!("/api/v1/runs/{id}/artifacts/final.safetensors"))
        .await;
    assert_eq!(weights.status(), 200);
    assert!(!weights.bytes().await.expect("body").is_empty());
    assert_eq!(job_state(job_id), "COMPLETED");
    // Deleting the run's files removes its directory in the shared directory.
    let run_dir = PathBuf::from(run["slurm"]["dir"].as_str().expect("job dir"))
        .parent()
        .expect("run dir")
        .to_path_buf();
    assert!(run_dir.join("worker").is_dir());
    let response = app
        .client
        .delete(format!("{}/api/v1/runs/{id}/artifacts", app.address))
        .send()
        .await
        .expect("deleted");
    assert_eq!(response.status(), 200);
    assert!(!run_dir.exists(), "{} is still there", run_dir.display());
    let gone = app
        .get(&format!("/api/v1/runs/{id}/artifacts/final.safetensors"))
        .await;
    assert_eq!(gone.status(), 410);
}

#[actix_web::test]
async fn a_slurm_runs_live_progress_reaches_its_stream_and_cancel_reaches_the_job() {
    let Some((app, shared, _cluster)) =
        on_the_cluster("a_slurm_runs_live_progress_reaches_its_stream_and_cancel_reaches_the_job")
            .await
    else {
        return;
    };
    let gate = shared.path().join("gate-live");
    let id = app.submit_ok(&gated_spec("slurm-live", &gate)).await;
    // Live progress from the worker, pulled by the server, while the job runs.
    let run = app.wait_for(&id, |r| r["progress"]["samples"] == 50).await;
    assert_eq!(run["state"], "running");
    assert_eq!(run["slurm_live"]["state"], "RUNNING", "{run:#}");
    assert!(run["slurm_live"]["worker"].is_string(), "{run:#}");
    // The worker registered over HTTP too (its own log says so).
    let output = PathBuf::from(run["slurm"]["dir"].as_str().expect("job dir")).join("output.log");
    let log = std::fs::read_to_string(&output).expect("the job's output");
    assert!(log.contains("registered with the server"), "{log}");
    assert_eq!(run["progress"]["epoch"], 1);
    let metrics = metrics_text(&app).await;
    for line in [
        "runyard_slurm_jobs{state=\"RUNNING\"} 1",
        "runyard_slurm_workers_unreachable 0",
        "runyard_queue_depth 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    // The stream is open before the gate is: it sees the run live, then its end.
    let (stream, ()) = tokio::join!(app.stream(&id, None), async {
        tokio::time::timeout(crate::helpers::TIMEOUT, async {
            while !metrics_text(&app)
                .await
                .lines()
                .any(|l| l == "runyard_sse_clients 1")
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the stream opened");
        std::fs::write(&gate, b"").expect("open the gate");
    });
    let names: Vec<&str> = stream.iter().map(|e| e.event.as_str()).collect();
    assert!(names.contains(&"progress"), "{names:?}");
    assert!(names.contains(&"SlurmJobStarted"), "{names:?}");
    // The stream ends with the run's end; only the job's bookkeeping may follow it
    // (a stream opened after the job ended replays its end too).
    let end = names
        .iter()
        .position(|n| *n == "RunCompleted")
        .unwrap_or_else(|| panic!("no RunCompleted: {names:?}"));
    assert!(
        names[end + 1..]
            .iter()
            .all(|n| *n == "WorkerSynced" || *n == "SlurmJobEnded"),
        "{names:?}"
    );
    let run = app.run(&id).await;
    assert_eq!(run["metrics"]["epochs_completed"], 2);
    // The command's output, written by the worker in the shared directory, is the
    // run's log on the server.
    let log = app
        .get(&format!("/api/v1/runs/{id}/logs?stream=stderr"))
        .await;
    assert_eq!(log.status(), 200);
    let text = log.text().await.expect("log text");
    assert!(text.contains("gated run done"), "{text:?}");

    // Cancel reaches the job: the worker is signalled, the job ends, the run is
    // cancelled.
    let gate = shared.path().join("gate-never");
    let id = app.submit_ok(&gated_spec("slurm-cancel", &gate)).await;
    let run = app.wait_for(&id, |r| r["progress"]["samples"] == 50).await;
    let job_id = run["slurm"]["job_id"].as_u64().expect("job id");
    let run = cancel_and_wait(&app, &id).await;
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("cancelled by request")),
        "{run:#}"
    );
    let state = job_state(job_id);
    assert!(
        ["COMPLETED", "CANCELLED", "GONE"].contains(&state.as_str()),
        "job {job_id} is {state}"
    );
    assert_each_fact_once(&app.events(&id).await);
}

#[actix_web::test]
async fn a_bad_partition_fails_the_run_with_slurms_message_and_no_retry() {
    let Some((app, _shared, _cluster)) =
        on_the_cluster("a_bad_partition_fails_the_run_with_slurms_message_and_no_retry").await
    else {
        return;
    };
    let mut spec = on_slurm(quick_spec("slurm-bad-partition"));
    spec["partition"] = json!("no-such-partition");
    let response = app.submit(&spec).await;
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.expect("run");
    assert_eq!(run["state"], "failed", "{run:#}");
    let error = run["error"].as_str().expect("error");
    assert!(error.contains("Slurm refused the job"), "{error}");
    assert!(error.to_lowercase().contains("partition"), "{error}");
    assert!(run["slurm"].is_null(), "no job: {run:#}");

    let mut spec = on_slurm(quick_spec("slurm-bad-gres"));
    spec["gres"] = json!("gpu:64");
    let run: Value = app.submit(&spec).await.json().await.expect("run");
    assert_eq!(run["state"], "failed", "{run:#}");
    assert!(
        run["error"].as_str().expect("error").contains("gres"),
        "{run:#}"
    );

    // More nodes than the cluster has: Slurm's answer as for any job it cannot
    // place (here it keeps the job pending, saying why), and nothing starts.
    let spec = json!({
        "name": "slurm-too-many-nodes", "kind": "command", "argv": ["true"],
        "executor": "slurm", "nodes": 64, "ranks_per_node": 2,
    });
    let id = app.submit_ok(&spec).await;
    let run = app
        .wait_for(&id, |r| r["slurm_live"]["state"] == "PENDING")
        .await;
    assert_eq!(run["slurm_live"]["reason"], "PartitionConfig", "{run:#}");
    assert_eq!(run["state"], "queued", "{run:#}");
    let job_id = run["slurm"]["job_id"].as_u64().expect("job id");
    assert_eq!(job_field(job_id, "NumNodes").as_deref(), Some("64-64"));
    let run = cancel_and_wait(&app, &id).await;
    assert_eq!(run["attempt"], 0, "never started: {run:#}");
}

#[actix_web::test]
async fn a_slurm_command_run_of_two_tasks_trains_data_parallel_one_rank_per_task() {
    let Some((app, _shared, _cluster)) =
        on_the_cluster("a_slurm_command_run_of_two_tasks_trains_data_parallel_one_rank_per_task")
            .await
    else {
        return;
    };
    let mut spec = crate::ranks::ddp_spec("slurm-ddp", &["--epochs", "3"]);
    spec["slots"] = json!(1);
    spec["executor"] = json!("slurm");
    spec["ranks_per_node"] = json!(2);
    let response = app.submit(&spec).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("run");
    let job_id = body["slurm"]["job_id"].as_u64().expect("job id");
    let id = body["id"].as_str().expect("id").to_string();
    let run = app.wait_for(&id, |r| r["slurm"]["ended"].is_string()).await;
    assert_eq!(run["state"], "completed", "{run:#}");
    // One job, one task per rank.
    assert_eq!(job_field(job_id, "NumTasks").as_deref(), Some("2"));
    assert_eq!(job_field(job_id, "NumNodes").as_deref(), Some("1"));
    // Both ranks trained, each in its own log in the worker's directory, to the same
    // parameters; rank 0's epochs are the run's.
    for rank in 0..2 {
        let text = app
            .get(&format!("/api/v1/runs/{id}/logs?rank={rank}&tail=10000"))
            .await
            .text()
            .await
            .expect("text");
        assert!(text.contains(&format!("rank {rank} of 2")), "{text}");
    }
    let hashes = crate::ranks::parameter_hashes(&app, &id).await;
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(run["epochs"].as_array().map(Vec::len), Some(3), "{run:#}");
}

#[actix_web::test]
async fn a_server_killed_while_its_job_runs_reattaches_and_the_run_completes() {
    if !slurm_up("a_server_killed_while_its_job_runs_reattaches_and_the_run_completes") {
        return;
    }
    let _cluster = CLUSTER.read().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).expect("shared dir");
    let config = dir.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            "[runs]\nallow_commands = true\n\n[executors.slurm]\nenabled = true\nshared_dir = {:?}\nworker_bin = {:?}\npoll_interval_ms = 200\ngrace_secs = 5\n",
            shared.display().to_string(),
            env!("CARGO_BIN_EXE_runyard"),
        ),
    )
    .expect("config");
    let config_arg = config.display().to_string();
    let args = ["--config", config_arg.as_str()];
    let http = client();
    let gate = dir.path().join("gate");

    let server = Server::start_with(&data, "slurm-1.log", &args);
    let response = http
        .post(format!("{}/api/v1/runs", server.address))
        .json(&gated_spec("slurm-crash", &gate))
        .send()
        .await
        .expect("submitted");
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.expect("run");
    let id = run["id"].as_str().expect("id").to_string();
    let job_id = run["slurm"]["job_id"].as_u64().expect("job id");
    wait_for_run_at(&http, &server.address, &id, |r| {
        r["progress"]["samples"] == 50
    })
    .await;
    server.kill();

    // The job runs on without the server.
    assert_eq!(job_state(job_id), "RUNNING");
    let server = Server::start_with(&data, "slurm-2.log", &args);
    // Re-attached: the live figures come from the worker again.
    let run = wait_for_run_at(&http, &server.address, &id, |r| {
        r["slurm_live"]["worker"].is_string() && r["progress"]["samples"] == 50
    })
    .await;
    assert_eq!(run["state"], "running", "{run:#}");
    assert_eq!(run["slurm"]["job"], 1, "no second job: {run:#}");
    std::fs::write(&gate, b"").expect("open the gate");
    let run = wait_for_run_at(&http, &server.address, &id, |r| {
        r["state"] != "running" && r["state"] != "queued"
    })
    .await;
    assert_eq!(run["state"], "completed", "{run:#}");
    assert_eq!(run["slurm"]["job"], 1, "no second job: {run:#}");
    let events = get_json_at(&http, format!("{}/api/v1/runs/{id}/events", server.address)).await;
    let events = events.as_array().expect("events").clone();
    assert_eq!(assert_each_fact_once(&events), vec![1, 2]);
    let submitted: HashMap<String, usize> =
        types(&events)
            .into_iter()
            .fold(HashMap::new(), |mut counts, kind| {
                *counts.entry(kind).or_default() += 1;
                counts
            });
    assert_eq!(
        submitted.get("SlurmJobSubmitted"),
        Some(&1),
        "{submitted:?}"
    );
    assert_eq!(submitted.get("SlurmJobStarted"), Some(&1), "{submitted:?}");
    assert_eq!(submitted.get("RunCompleted"), Some(&1), "{submitted:?}");
    drop(server);
}

#[actix_web::test]
async fn slurm_fields_need_the_slurm_executor_and_a_server_that_has_it() {
    let app = spawn_app().await;
    let mut spec = quick_spec("local-with-partition");
    spec["partition"] = json!("gpu");
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(
        detail.contains("partition") && detail.contains("slurm"),
        "{detail}"
    );

    let mut spec = on_slurm(quick_spec("bad-time-limit"));
    spec["time_limit"] = json!("two hours");
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.contains("time_limit"), "{detail}");

    let spec = on_slurm(quick_spec("no-slurm-here"));
    let detail = assert_problem(app.submit(&spec).await, 422, "executor_disabled").await;
    assert!(detail.contains("executors.slurm"), "{detail}");

    // Ranks over nodes are a Slurm command run's.
    let command = json!({"name": "ranks", "kind": "command", "argv": ["true"]});
    for (field, value, said) in [("ranks_per_node", 2, "slots"), ("nodes", 2, "slurm")] {
        let mut spec = command.clone();
        spec[field] = json!(value);
        let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
        assert!(detail.contains(field) && detail.contains(said), "{detail}");
    }
    let mut spec = on_slurm(quick_spec("tch-over-nodes"));
    spec["ranks_per_node"] = json!(2);
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(
        detail.contains("ranks_per_node") && detail.contains("command"),
        "{detail}"
    );
    let mut spec = on_slurm(command.clone());
    spec["nodes"] = json!(5000);
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.contains("nodes"), "{detail}");
    let (_, runs) = app.get_json("/api/v1/runs").await;
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs:#}");
}

#[actix_web::test]
async fn pausing_a_slurm_run_ends_its_job_and_resuming_starts_a_new_one_from_the_checkpoint() {
    let Some((app, _shared, _cluster)) = on_the_cluster(
        "pausing_a_slurm_run_ends_its_job_and_resuming_starts_a_new_one_from_the_checkpoint",
    )
    .await
    else {
        return;
    };
    let mut spec = on_slurm(long_spec("slurm-pause"));
    spec["checkpoint"] = json!({"every_batches": 20, "keep": 2});
    let id = app.submit_ok(&spec).await;
    // Live figures as for a local run: the rate, and an ETA from it.
    app.wait_for(&id, |r| {
        r["checkpoint"].is_object()
            && r["progress"]["samples_per_sec"].as_f64() > Some(0.0)
            && r["progress"]["eta_secs"].is_number()
    })
    .await;
    let response = app.post(&format!("/api/v1/runs/{id}/pause")).await;
    assert!(response.status().is_success(), "{}", response.status());
    let run = app
        .wait_for(&id, |r| {
            r["state"] == "paused" && r["slurm"]["ended"].is_string()
        })
        .await;
    let paused_at = run["checkpoint"]["step"].as_u64().expect("checkpoint");
    assert_eq!(run["slurm"]["job"], 1);

    let response = app.post(&format!("/api/v1/runs/{id}/resume")).await;
    assert!(response.status().is_success(), "{}", response.status());
    // A new job, journaled before the answer, resuming from the shared checkpoint.
    let run = app.run(&id).await;
    assert_eq!(run["slurm"]["job"], 2, "{run:#}");
    let run = app
        .wait_for(&id, |r| {
            r["state"] == "running" && r["checkpoint"]["step"].as_u64() > Some(paused_at)
        })
        .await;
    assert_eq!(run["attempt"], 2, "{run:#}");
    let events = app.events(&id).await;
    let resumed = events
        .iter()
        .find(|e| e["type"] == "ResumedFromCheckpoint")
        .expect("resumed from the checkpoint");
    assert_eq!(resumed["data"]["step"], paused_at);
    cancel_and_wait(&app, &id).await;
    assert_each_fact_once(&app.events(&id).await[..]);
}

#[actix_web::test]
async fn an_asha_sweep_of_slurm_trials_pauses_each_at_its_rung_and_promotes_into_a_new_job() {
    let Some((app, _shared, _cluster)) = on_the_cluster(
        "an_asha_sweep_of_slurm_trials_pauses_each_at_its_rung_and_promotes_into_a_new_job",
    )
    .await
    else {
        return;
    };
    let mut base = on_slurm(quick_spec("slurm-trial"));
    base["checkpoint"] = json!({"every_batches": 7});
    // No validation data: the trials are ranked by training loss.
    let sweep = json!({
        "name": "slurm-asha",
        "base": base,
        "space": {"optimizer.lr": {"choice": [0.002, 0.01, 0.03]}},
        "searcher": {"kind": "asha", "metric": "train_loss", "mode": "min", "min_epochs": 1,
                     "max_epochs": 3, "reduction_factor": 3, "max_trials": 3, "max_concurrent": 1},
        "seed": 11
    });
    let done = crate::sweeps::sweep_to_its_end(&app, &sweep).await;
    assert_eq!(done["state"], "completed", "{done:#}");
    let best = &done["best"];
    assert_eq!(best["status"], "finished", "{done:#}");
    assert_eq!(
        best["results"].as_array().map(Vec::len),
        Some(2),
        "rungs 1 and 3: {done:#}"
    );
    // The promoted trial: its first job ended with the run paused at the rung's end,
    // its second resumed from that checkpoint and trained on to the end.
    let best_id = best["run_id"].as_str().expect("run");
    let run = app
        .wait_for(best_id, |r| r["slurm"]["ended"].is_string())
        .await;
    assert_eq!(run["state"], "completed", "{run:#}");
    assert_eq!(run["metrics"]["epochs_completed"], 3, "{run:#}");
    assert_eq!(run["slurm"]["job"], 2, "{run:#}");
    let events = app.events(best_id).await;
    assert_eq!(assert_each_fact_once(&events), vec![1, 2, 3]);
    let kinds = types(&events);
    let paused = events
        .iter()
        .find(|e| e["type"] == "RunPaused")
        .unwrap_or_else(|| panic!("no rung pause: {kinds:?}"));
    assert!(
        paused["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("end of its sweep rung")),
        "{paused}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "SlurmJobSubmitted").count(),
        2,
        "{kinds:?}"
    );
    let resumed = events
        .iter()
        .find(|e| e["type"] == "ResumedFromCheckpoint")
        .unwrap_or_else(|| panic!("the second job did not resume: {kinds:?}"));
    assert!(resumed["data"]["step"].as_u64() > Some(0), "{resumed}");
    // The others stopped at rung 0, after one epoch and one job each.
    for trial in done["trials"].as_array().expect("trials") {
        if trial["run_id"] == best["run_id"] {
            continue;
        }
        assert_eq!(trial["status"], "stopped", "{done:#}");
        let run = app.run(trial["run_id"].as_str().expect("run")).await;
        assert_eq!(run["state"], "cancelled", "{run:#}");
        assert_eq!(run["metrics"]["epochs_completed"], 1, "{run:#}");
        assert_eq!(run["slurm"]["job"], 1, "{run:#}");
    }
}

#[actix_web::test]
async fn an_asha_sweep_of_slurm_command_trials_ranks_by_their_metric_and_resumes_the_best() {
    let Some((app, _shared, _cluster)) = on_the_cluster(
        "an_asha_sweep_of_slurm_command_trials_ranks_by_their_metric_and_resumes_the_best",
    )
    .await
    else {
        return;
    };
    // The local command-trial test's script: a free-form `score` each epoch, a
    // checkpoint after each, a resume from `RUNYARD_RESUME_FROM`, a stop on SIGTERM.
    let sweep = json!({
        "name": "slurm-commands",
        "base": {"name": "script", "kind": "command", "executor": "slurm",
                 "argv": ["python3", "-c", crate::sweeps::TRIAL_SCRIPT],
                 "env": {"LR": "0.1", "EPOCHS": "3"}},
        "space": {"env.LR": {"grid": ["0.02", "0.3", "0.9"]}},
        "searcher": {"kind": "asha", "metric": "score", "mode": "max", "min_epochs": 1,
                     "max_epochs": 3, "reduction_factor": 3, "max_trials": 3, "max_concurrent": 1}
    });
    let done = crate::sweeps::sweep_to_its_end(&app, &sweep).await;
    assert_eq!(done["state"], "completed", "{done:#}");
    // The best (LR 0.3) was promoted: a second job resumed it from its checkpoint to
    // epoch 3, each epoch once.
    let best = &done["best"];
    assert_eq!(best["point"]["env.LR"], "0.3", "{done:#}");
    assert_eq!(best["status"], "finished", "{done:#}");
    let top = best["results"][1].as_f64().expect("a top-rung result");
    assert!((top - (1.0 - 0.25)).abs() < 1e-9, "{best}");
    let best_id = best["run_id"].as_str().expect("run");
    let run = app
        .wait_for(best_id, |r| r["slurm"]["ended"].is_string())
        .await;
    assert_eq!(run["state"], "completed", "{run:#}");
    assert_eq!(run["slurm"]["job"], 2, "{run:#}");
    let events = app.events(best_id).await;
    assert_eq!(assert_each_fact_once(&events), vec![1, 2, 3]);
    let kinds = types(&events);
    assert!(
        kinds.iter().any(|k| k == "ResumedFromCheckpoint"),
        "{kinds:?}"
    );
    for trial in done["trials"].as_array().expect("trials") {
        if trial["run_id"] != best["run_id"] {
            assert_eq!(trial["status"], "stopped", "{done:#}");
            let run = app.run(trial["run_id"].as_str().expect("run")).await;
            assert_eq!(run["state"], "cancelled", "{run:#}");
            assert_eq!(run["slurm"]["job"], 1, "{run:#}");
        }
    }
}

/// Brings the test cluster's node back when dropped (a failing test too).
struct NodeBack(String);

impl Drop for NodeBack {
    fn drop(&mut self) {
        // Slurm may have returned it already (`ReturnToService=2`): an error is fine.
        let _ = Command::new("scontrol")
            .args(["update", &format!("nodename={}", self.0), "state=resume"])
            .output();
    }
}

#[actix_web::test]
async fn a_job_lost_with_its_node_is_retried_from_the_checkpoint_and_counted_apart() {
    if !slurm_up("a_job_lost_with_its_node_is_retried_from_the_checkpoint_and_counted_apart") {
        return;
    }
    // Alone on the cluster: the node going down ends every job on it.
    let _cluster = CLUSTER.write().await;
    let shared = tempfile::tempdir().expect("shared dir");
    let app = slurm_app(shared.path()).await;
    let mut spec = on_slurm(long_spec("slurm-node-fail"));
    spec["checkpoint"] = json!({"every_batches": 20, "keep": 2});
    let id = app.submit_ok(&spec).await;
    let run = app
        .wait_for(&id, |r| {
            r["checkpoint"].is_object() && r["progress"].is_object()
        })
        .await;
    let node = run["slurm"]["node"].as_str().expect("node").to_string();
    let _back = NodeBack(node.clone());
    let down = Command::new("scontrol")
        .args([
            "update",
            &format!("nodename={node}"),
            "state=down",
            "reason=runyard-test",
        ])
        .output()
        .expect("scontrol runs");
    assert!(down.status.success(), "{down:?}");
    // The job ended NODE_FAIL: the run is queued again for a new job, counted as
    // lost, not as a failure of its code.
    let events = tokio::time::timeout(crate::helpers::TIMEOUT, async {
        loop {
            let events = app.events(&id).await;
            if events.iter().any(|e| e["type"] == "SlurmJobLost") {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the lost job was journaled");
    let ended = events
        .iter()
        .find(|e| e["type"] == "SlurmJobEnded")
        .expect("the job's end");
    assert_eq!(ended["data"]["state"], "NODE_FAIL", "{ended:#}");
    let lost = events
        .iter()
        .find(|e| e["type"] == "SlurmJobLost")
        .expect("lost");
    assert_eq!(lost["data"]["lost"], 1);
    drop(_back);
    // A new job resumes from the newest checkpoint.
    let run = app
        .wait_for(&id, |r| {
            r["slurm"]["job"] == 2 && r["state"] == "running" && r["attempt"] == 2
        })
        .await;
    assert_eq!(run["slurm"]["lost"], 1, "{run:#}");
    assert_eq!(
        run["retries"], 0,
        "a lost job is not a failure of the run's code: {run:#}"
    );
    let events = app.events(&id).await;
    assert!(
        events.iter().any(|e| e["type"] == "ResumedFromCheckpoint"),
        "{:?}",
        types(&events)
    );
    cancel_and_wait(&app, &id).await;
}

#[actix_web::test]
async fn a_worker_that_stops_answering_shows_unreachable_and_the_run_goes_on() {
    let Some((app, shared, _cluster)) =
        on_the_cluster("a_worker_that_stops_answering_shows_unreachable_and_the_run_goes_on").await
    else {
        return;
    };
    let gate = shared.path().join("gate");
    let id = app.submit_ok(&gated_spec("slurm-unreachable", &gate)).await;
    let run = app.wait_for(&id, |r| r["progress"]["samples"] == 50).await;
    let dir = PathBuf::from(run["slurm"]["dir"].as_str().expect("job dir"));
    let registration: Value =
        serde_json::from_slice(&std::fs::read(dir.join("worker.json")).expect("worker.json"))
            .expect("json");
    let pid = registration["pid"].as_u64().expect("pid").to_string();
    // The worker stops answering (its process stopped, its job still running).
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    };
    signal("STOP");
    let run = app
        .wait_for(&id, |r| r["slurm_live"]["unreachable"] == true)
        .await;
    assert_eq!(run["state"], "running", "not failed: {run:#}");
    assert_eq!(
        run["slurm_live"]["state"], "RUNNING",
        "Slurm's view: {run:#}"
    );
    signal("CONT");
    app.wait_for(&id, |r| r["slurm_live"]["unreachable"] == false)
        .await;
    std::fs::write(&gate, b"").expect("open the gate");
    let run = app
        .wait_for(&id, |r| {
            r["state"] == "completed" && r["slurm"]["ended"].is_string()
        })
        .await;
    assert_eq!(run["metrics"]["epochs_completed"], 2);
    assert_each_fact_once(&app.events(&id).await);
}

#[actix_web::test]
async fn a_job_slurm_holds_is_queued_with_slurms_reason_and_pause_resume_cancel_reach_it() {
    let Some((app, _shared, _cluster)) = on_the_cluster(
        "a_job_slurm_holds_is_queued_with_slurms_reason_and_pause_resume_cancel_reach_it",
    )
    .await
    else {
        return;
    };
    // `held` is down in the test cluster: Slurm keeps its jobs pending.
    let mut spec = on_slurm(quick_spec("slurm-held"));
    spec["partition"] = json!("held");
    let id = app.submit_ok(&spec).await;
    let run = app
        .wait_for(&id, |r| r["slurm_live"]["state"] == "PENDING")
        .await;
    assert_eq!(run["state"], "queued", "{run:#}");
    assert_eq!(run["slurm_live"]["reason"], "PartitionDown", "{run:#}");
    let first_job = run["slurm"]["job_id"].as_u64().expect("job id");

    // Pausing a pending job: paused at once, the job cancelled in Slurm.
    let response = app.post(&format!("/api/v1/runs/{id}/pause")).await;
    assert!(response.status().is_success(), "{}", response.status());
    app.wait_for(&id, |r| {
        r["state"] == "paused" && r["slurm"]["ended"].is_string()
    })
    .await;
    assert_eq!(job_state(first_job), "CANCELLED");
    // Resuming submits the run's second job, pending again.
    let response = app.post(&format!("/api/v1/runs/{id}/resume")).await;
    assert!(response.status().is_success(), "{}", response.status());
    let run = app
        .wait_for(&id, |r| {
            r["slurm"]["job"] == 2 && r["slurm_live"]["state"] == "PENDING"
        })
        .await;
    let second_job = run["slurm"]["job_id"].as_u64().expect("job id");
    assert_ne!(first_job, second_job);

    // Registration over HTTP: only with the job's secret, for the job's id, with an
    // address; then the server pulls from that address.
    let dir = PathBuf::from(run["slurm"]["dir"].as_str().expect("job dir"));
    let secret = std::fs::read_to_string(dir.join("secret")).expect("secret");
    let register = |secret: String, body: Value| {
        app.client
            .post(format!("{}/api/v1/runs/{id}/worker", app.address))
            .bearer_auth(secret)
            .json(&body)
            .send()
    };
    let body = |address: &str, job_id: u64| json!({"address": address, "node": "nowhere", "pid": 1, "job_id": job_id});
    let refused = register("ry_wrong".into(), body("127.0.0.1:9", second_job))
        .await
        .expect("answered");
    assert_problem(refused, 403, "forbidden").await;
    let bad = register(secret.trim().into(), body("not an address", second_job))
        .await
        .expect("answered");
    assert_problem(bad, 400, "malformed_body").await;
    let other = register(secret.trim().into(), body("127.0.0.1:9", first_job))
        .await
        .expect("answered");
    assert_problem(other, 409, "conflict").await;
    let ok = register(secret.trim().into(), body("127.0.0.1:9", second_job))
        .await
        .expect("answered");
    assert_eq!(ok.status(), 204);
    // Nothing listens there: the run shows its worker unreachable, still queued.
    let run = app
        .wait_for(&id, |r| r["slurm_live"]["unreachable"] == true)
        .await;
    assert_eq!(run["slurm_live"]["worker"], "127.0.0.1:9");
    assert_eq!(run["state"], "queued");

    let run = cancel_and_wait(&app, &id).await;
    assert_eq!(run["attempt"], 0, "never started: {run:#}");
    assert_eq!(job_state(second_job), "CANCELLED");
    let kinds = types(&app.events(&id).await);
    assert!(!kinds.iter().any(|k| k == "SlurmJobStarted"), "{kinds:?}");
}

#[actix_web::test]
async fn a_slurm_run_whose_stored_spec_cannot_be_read_fails_naming_why() {
    if !slurm_up("a_slurm_run_whose_stored_spec_cannot_be_read_fails_naming_why") {
        return;
    }
    let _cluster = CLUSTER.read().await;
    // A journal written by a build whose spec this one cannot read (an unknown model
    // kind), but which names the Slurm executor.
    let data = tempfile::tempdir().expect("data dir");
    let id = runyard::domain::RunId::new();
    {
        let log = runyard::store::EventLog::open(&data.path().join("journal")).expect("journal");
        let spec = json!({
            "name": "unreadable",
            "executor": "slurm",
            "model": {"kind": "no-such-model"},
        });
        log.append(
            1,
            &[runyard::domain::Envelope::now(
                id,
                runyard::domain::Event::RunSubmitted {
                    name: "unreadable".into(),
                    digest: "0".repeat(64),
                    spec: spec.to_string(),
                },
            )],
        )
        .expect("append");
    }
    let shared = tempfile::tempdir().expect("shared dir");
    let (data_dir, shared_dir) = (data.path().to_path_buf(), shared.path().to_path_buf());
    let app = spawn_app_with(move |config| {
        config.server.data_dir = data_dir;
        let slurm = &mut config.executors.slurm;
        slurm.enabled = true;
        slurm.shared_dir = Some(shared_dir);
        slurm.worker_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_runyard")));
        slurm.poll_interval_ms = 200;
    })
    .await;
    let run = app
        .wait_for(&id.to_string(), |r| r["state"] == "failed")
        .await;
    let error = run["error"].as_str().expect("error");
    assert!(error.contains("stored spec is unreadable"), "{error}");
    assert!(run["slurm"].is_null(), "no job was submitted: {run}");
}

/// Whether the two-node partition of `scripts/setup-slurm-two-nodes.sh` is up; says
/// why a test is skipped when it is not.
fn two_nodes_up(test: &str) -> bool {
    let output = Command::new("sinfo")
        .args(["--noheader", "--partition=two", "--format=%a %D %t"])
        .output();
    let text = output
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let up = text
        .lines()
        .filter(|l| l.starts_with("up "))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let nodes: u32 = fields.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            let fine = fields
                .get(2)
                .is_some_and(|s| ["idle", "mix", "alloc"].contains(s));
            if fine {
                nodes
            } else {
                0
            }
        })
        .sum::<u32>()
        >= 2;
    if !up {
        eprintln!(
            "SKIPPED: slurm::{test}: no partition `two` with two nodes up (sinfo: {text:?}); \
             `sudo bash scripts/setup-slurm-two-nodes.sh` makes one"
        );
    }
    up
}

#[actix_web::test]
async fn a_slurm_command_run_over_two_nodes_trains_one_rank_on_each() {
    const TEST: &str = "a_slurm_command_run_over_two_nodes_trains_one_rank_on_each";
    if !slurm_up(TEST) || !two_nodes_up(TEST) {
        return;
    }
    let _cluster = CLUSTER.read().await;
    let shared = tempfile::tempdir().expect("shared dir");
    // The first node's name resolves to loopback on this machine: the worker (and so
    // MASTER_ADDR) takes the address the second node reaches it at.
    let app = slurm_app_with(shared.path(), |slurm| {
        slurm.sbatch_args = vec!["--export=ALL,RUNYARD_WORKER_HOST=10.77.0.1".into()];
    })
    .await;
    let mut spec = crate::ranks::ddp_spec("slurm-two-nodes", &["--epochs", "3"]);
    spec["slots"] = json!(1);
    spec["executor"] = json!("slurm");
    spec["partition"] = json!("two");
    spec["nodes"] = json!(2);
    let response = app.submit(&spec).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("run");
    let job_id = body["slurm"]["job_id"].as_u64().expect("job id");
    let id = body["id"].as_str().expect("id").to_string();
    let run = app.wait_for(&id, |r| r["slurm"]["ended"].is_string()).await;
    if run["state"] != "completed" {
        // What each rank wrote to stderr says why (the failure names only srun's).
        let mut stderr = String::new();
        for rank in 0..2 {
            for stream in ["stdout", "stderr"] {
                let text = app
                    .get(&format!(
                        "/api/v1/runs/{id}/logs?rank={rank}&stream={stream}&tail=40"
                    ))
                    .await
                    .text()
                    .await
                    .unwrap_or_default();
                stderr.push_str(&format!("--- rank {rank}'s {stream}:\n{text}\n"));
            }
        }
        panic!("the run did not complete: {run:#}\n{stderr}");
    }
    assert_eq!(job_field(job_id, "NumNodes").as_deref(), Some("2"));
    assert_eq!(job_field(job_id, "NumTasks").as_deref(), Some("2"));
    // Rank 0 ran in the worker on the first node, rank 1 in the srun step on the
    // second; both logs are read through the server.
    let mut hosts = Vec::new();
    for rank in 0..2 {
        let text = app
            .get(&format!("/api/v1/runs/{id}/logs?rank={rank}&tail=10000"))
            .await
            .text()
            .await
            .expect("text");
        let host = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("rank {rank} of 2 on cpu, host ")))
            .unwrap_or_else(|| panic!("rank {rank} said nothing of its host:\n{text}"))
            .to_string();
        hosts.push(host);
    }
    assert_ne!(hosts[0], hosts[1], "one rank on each node: {hosts:?}");
    assert_eq!(hosts[1], "vm2");
    let hashes = crate::ranks::parameter_hashes(&app, &id).await;
    assert_eq!(hashes[0], hashes[1], "the all-reduce crossed the nodes");
    assert_eq!(run["epochs"].as_array().map(Vec::len), Some(3), "{run:#}");
}

#[actix_web::test]
async fn a_rank_failing_on_the_second_node_fails_the_attempt_naming_it_and_stops_the_first() {
    const TEST: &str =
        "a_rank_failing_on_the_second_node_fails_the_attempt_naming_it_and_stops_the_first";
    if !slurm_up(TEST) || !two_nodes_up(TEST) {
        return;
    }
    let _cluster = CLUSTER.read().await;
    let shared = tempfile::tempdir().expect("shared dir");
    let out = shared.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let app = slurm_app(shared.path()).await;
    // Rank 0 waits until stopped; rank 1, on the second node, fails once it runs.
    let script = r#"
        if [ "$RANK" = 1 ]; then echo "rank 1 broke on $(hostname)" >&2; exit 3; fi
        trap 'echo "rank 0 stopped" > "$OUT/rank0-stopped"; exit 0' TERM
        while true; do sleep 0.05; done
    "#;
    let spec = json!({
        "name": "slurm-two-nodes-fail", "kind": "command", "executor": "slurm",
        "partition": "two", "nodes": 2, "argv": ["bash", "-c", script],
        "env": {"OUT": out.display().to_string()}, "grace": "5s",
    });
    let id = app.submit_ok(&spec).await;
    let run = app.wait_for(&id, |r| r["slurm"]["ended"].is_string()).await;
    assert_eq!(run["state"], "failed", "{run:#}");
    let error = run["error"].as_str().expect("error");
    assert!(
        error.starts_with("rank 1 on node 1 (srun) exit code 3;")
            && error.contains("every other rank was stopped")
            && error.contains("runyard: rank 1 ended"),
        "{error}"
    );
    assert!(out.join("rank0-stopped").exists(), "rank 0 got SIGTERM");
    let logs = app
        .get(&format!("/api/v1/runs/{id}/logs?rank=1&stream=stderr"))
        .await
        .text()
        .await
        .expect("text");
    assert!(logs.contains("rank 1 broke on vm2"), "{logs}");
}

/// Brings `vm2` back after a test killed it: the node resumed, its slurmd started
/// again (`scripts/setup-slurm-two-nodes.sh`, which checks that a job runs on both
/// nodes), and resumed once more in case the check found it still down.
fn bring_second_node_back() {
    let resume = || {
        let _ = Command::new("scontrol")
            .args(["update", "nodename=vm2", "state=resume"])
            .output();
    };
    resume();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-slurm-two-nodes.sh");
    let _ = Command::new("bash").arg(script).output();
    resume();
}

/// [`bring_second_node_back`] when a test that killed `vm2` panics first.
struct SecondNodeBack {
    armed: bool,
}

impl Drop for SecondNodeBack {
    fn drop(&mut self) {
        if self.armed {
            bring_second_node_back();
        }
    }
}

#[actix_web::test]
async fn the_second_node_lost_ends_every_rank_and_a_new_job_runs_them_all_again() {
    const TEST: &str = "the_second_node_lost_ends_every_rank_and_a_new_job_runs_them_all_again";
    if !slurm_up(TEST) || !two_nodes_up(TEST) {
        return;
    }
    // Alone on the cluster: a node goes down.
    let _cluster = CLUSTER.write().await;
    let shared = tempfile::tempdir().expect("shared dir");
    let out = shared.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let app = slurm_app(shared.path()).await;
    // The first attempt's ranks wait with a child each; a later one completes. A rank
    // whose child is killed first (Slurm signals a job's processes in no set order)
    // ends by the child's signal, as a program killed with its job does: a bare
    // `wait` would answer 0, a rank that completed, and the run would end completed
    // before the job's end reached the worker.
    let script = r#"
        echo $$ > "$OUT/rank$RANK-attempt$RUNYARD_ATTEMPT"
        if [ "$RUNYARD_ATTEMPT" != 1 ]; then exit 0; fi
        sleep 300 &
        echo $! > "$OUT/child$RANK"
        wait $!
        status=$?
        if [ $status -gt 128 ]; then kill -s $((status - 128)) $$; fi
        exit $status
    "#;
    let spec = json!({
        "name": "slurm-two-nodes-lost", "kind": "command", "executor": "slurm",
        "partition": "two", "nodes": 2, "argv": ["bash", "-c", script],
        "env": {"OUT": out.display().to_string()}, "grace": "2s",
    });
    let id = app.submit_ok(&spec).await;
    let pid_of = |name: &str| -> Option<i32> {
        std::fs::read_to_string(out.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let ranks = crate::helpers::poll_until(
        "both ranks and their children",
        std::time::Duration::from_millis(50),
        || async {
            Some([
                pid_of("rank0-attempt1")?,
                pid_of("child0")?,
                pid_of("rank1-attempt1")?,
                pid_of("child1")?,
            ])
        },
    )
    .await;
    let mut back = SecondNodeBack { armed: true };
    // The second node is lost: Slurm declares it down (ending the job on every node
    // with NODE_FAIL), and whatever still runs in its network namespace (its slurmd,
    // the step, rank 1) dies with it.
    let down = Command::new("scontrol")
        .args([
            "update",
            "nodename=vm2",
            "state=down",
            "reason=runyard-test",
        ])
        .output()
        .expect("scontrol runs");
    assert!(down.status.success(), "{down:?}");
    let pids = Command::new("ip")
        .args(["netns", "pids", "rynode2"])
        .output()
        .expect("ip runs");
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    let run = app.wait_for(&id, |r| r["slurm"]["lost"] == 1).await;
    assert_eq!(
        run["state"], "queued",
        "a new job waits for two nodes: {run:#}"
    );
    // Slurm ended the job on the first node too: rank 0 and its child are gone.
    let dead = |pid: i32| crate::helpers::dead(pid);
    crate::helpers::poll_until(
        "the first node's rank to end",
        std::time::Duration::from_millis(50),
        || async { (dead(ranks[0]) && dead(ranks[1])).then_some(()) },
    )
    .await;
    assert!(
        dead(ranks[2]) && dead(ranks[3]),
        "the lost node's rank is gone"
    );
    // With the node back, a new job starts every rank again and the run completes.
    back.armed = false;
    tokio::task::spawn_blocking(bring_second_node_back)
        .await
        .expect("the second node comes back");
    assert!(
        two_nodes_up(TEST),
        "the second node did not come back: run scripts/setup-slurm-two-nodes.sh"
    );
    let run = app
        .wait_for(&id, |r| {
            r["state"] == "completed" && r["slurm"]["ended"].is_string()
        })
        .await;
    assert_eq!(run["slurm"]["job"], 2, "{run:#}");
    assert!(pid_of("rank0-attempt2").is_some() && pid_of("rank1-attempt2").is_some());
}
