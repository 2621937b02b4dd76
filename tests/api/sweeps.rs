//! Sweeps through the REST API: a digits ASHA sweep to its end, its decisions held to
//! the searcher's rules, bad specs refused.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, client, get_json_at, poll_until, quick_spec, read_stream, spawn_app,
    wait_ready, TestApp,
};
use crate::server::Server;

/// The README's digits sweep, its data in place.
fn digits_sweep(app: &TestApp) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("data/datasets/digits.csv.gz"),
        app.datasets().join("digits.csv.gz"),
    )
    .expect("digits.csv.gz present: run scripts/fetch-digits.sh");
    serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/sweep-digits.json")).expect("example"),
    )
    .expect("JSON example")
}

async fn submit_sweep(app: &TestApp, spec: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/sweeps", app.address))
        .json(spec)
        .send()
        .await
        .expect("submit answered")
}

/// Submits `spec` (which must be taken: `201`) and waits until the sweep has ended;
/// its final view.
pub(crate) async fn sweep_to_its_end(app: &TestApp, spec: &Value) -> Value {
    let response = submit_sweep(app, spec).await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.expect("sweep")["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_sweep_ended(app, &id).await
}

/// Re-reads the sweep until it has ended.
async fn wait_sweep_ended(app: &TestApp, id: &str) -> Value {
    poll_until(
        "the sweep ended",
        std::time::Duration::from_millis(100),
        || async {
            let (status, sweep) = app.get_json(&format!("/api/v1/sweeps/{id}")).await;
            assert_eq!(status, 200, "{sweep}");
            ["completed", "cancelled"]
                .contains(&sweep["state"].as_str().unwrap_or(""))
                .then_some(sweep)
        },
    )
    .await
}

#[actix_web::test]
async fn a_digits_asha_sweep_promotes_the_best_and_finds_a_trial_over_96_percent() {
    let app = spawn_app().await;
    let spec = digits_sweep(&app);
    let response = submit_sweep(&app, &spec).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    let created: Value = response.json().await.expect("sweep");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(location, format!("/api/v1/sweeps/{id}"));
    assert_eq!(created["searcher"], "asha");
    assert_eq!(created["rungs"], json!([1, 3, 9]));

    let sweep = wait_sweep_ended(&app, &id).await;
    assert_eq!(sweep["state"], "completed", "{sweep:#}");
    let trials = sweep["trials"].as_array().expect("trials");
    assert_eq!(trials.len(), 27);
    // Every trial ended: trained to the top, or stopped by the sweep at a rung.
    for trial in trials {
        let status = trial["status"].as_str().expect("status");
        assert!(["finished", "stopped"].contains(&status), "{trial}");
        let run_state = trial["run_state"].as_str().expect("run state");
        let expected = if status == "finished" {
            "completed"
        } else {
            "cancelled"
        };
        assert_eq!(run_state, expected, "{trial}");
    }
    let reached = |rung: usize| {
        trials
            .iter()
            .filter(|t| t["results"].as_array().expect("results").len() > rung)
            .count()
    };
    // ASHA's shape: every trial trains rung 0; at least the best third of 27 reach
    // rung 1 and the best third of those the top (more where a trial promoted early
    // was overtaken by later results).
    let (first, second, top) = (reached(0), reached(1), reached(2));
    assert_eq!(first, 27, "{sweep:#}");
    assert!(
        second >= 9 && top >= 3 && top <= second,
        "{first} {second} {top}"
    );
    // Replayed from the sweep's stream, every promotion was of a trial in the best
    // third of its rung's results journaled by then, and every stop of one outside it.
    let events = app
        .stream_at(&format!("/api/v1/sweeps/{id}/stream"), None)
        .await;
    let mut results: Vec<Vec<(f64, u64)>> = vec![Vec::new(); 3];
    let (mut promotions, mut stops) = (0, 0);
    for event in events.iter().filter(|e| e.event != "progress") {
        let data = &event.data["data"];
        match event.event.as_str() {
            "TrialReachedRung" => {
                let rung = data["rung"].as_u64().expect("rung") as usize;
                let metric = data["metric"].as_f64().unwrap_or(f64::NEG_INFINITY);
                results[rung].push((metric, data["trial"].as_u64().expect("trial")));
            }
            "TrialPromoted" | "TrialStopped" => {
                let trial = data["trial"].as_u64().expect("trial");
                let rung = match data["rung"].as_u64() {
                    Some(to) => to as usize - 1,
                    None => results
                        .iter()
                        .rposition(|r| r.iter().any(|(_, t)| *t == trial))
                        .expect("a rung"),
                };
                let mut ranked = results[rung].clone();
                ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let place = ranked
                    .iter()
                    .position(|(_, t)| *t == trial)
                    .expect("ranked");
                if event.event == "TrialPromoted" {
                    promotions += 1;
                    assert!(
                        place < ranked.len() / 3,
                        "trial {trial} promoted from place {place} of {}",
                        ranked.len()
                    );
                } else {
                    stops += 1;
                    assert!(
                        place >= ranked.len() / 3,
                        "trial {trial} stopped at place {place} of {}",
                        ranked.len()
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(promotions, second + top);
    assert_eq!(
        stops,
        27 - top,
        "every trial short of the top was stopped at the end"
    );
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("SweepCompleted")
    );
    let best = &sweep["best"];
    let accuracy = best["metric"].as_f64().expect("best metric");
    assert!(accuracy >= 0.96, "best trial reached {accuracy}: {best}");
    assert_eq!(best["status"], "finished");
    // Trials are runs, labelled with their sweep and number.
    let run = app.run(best["run_id"].as_str().expect("run id")).await;
    assert_eq!(run["labels"]["sweep"], id.as_str());
    assert_eq!(run["labels"]["trial"], best["number"].to_string());
    assert_eq!(run["state"], "completed");
    let (status, listed) = app
        .get_json(&format!("/api/v1/runs?label=sweep={id}&limit=100"))
        .await;
    assert_eq!(status, 200, "{listed}");
}

#[actix_web::test]
async fn bad_sweep_specs_are_refused_naming_the_path_and_nothing_is_written() {
    let app = spawn_app().await;
    let base = quick_spec("base");
    let mut slurm_base = base.clone();
    slurm_base["executor"] = json!("slurm");
    let cases = [
        (
            json!({"name": "s", "base": base, "space": {"optimizer.lr": {"loguniform": [0.0, 0.1]}},
                   "searcher": {"kind": "random", "max_trials": 2}}),
            "space.optimizer.lr.loguniform",
        ),
        (
            json!({"name": "s", "base": base, "space": {"model.width": {"choice": [1, 2]}},
                   "searcher": {"kind": "random", "max_trials": 2}}),
            "space.model.width",
        ),
        (
            json!({"name": "s", "base": base, "space": {"batch_size": {"choice": [0, 2]}},
                   "searcher": {"kind": "random", "max_trials": 2}}),
            "batch_size",
        ),
        (
            json!({"name": "s", "base": base, "space": {"optimizer.lr": {"choice": [0.1]}},
                   "searcher": {"kind": "asha", "metric": "val_accuracy", "min_epochs": 4,
                                "max_epochs": 2, "max_trials": 3}}),
            "searcher.min_epochs",
        ),
    ];
    for (spec, path) in cases {
        let detail = assert_problem(submit_sweep(&app, &spec).await, 422, "invalid_sweep").await;
        assert!(detail.contains(path), "{path}: {detail}");
    }
    // Trials on an executor this server does not have.
    let on_slurm = json!({"name": "s", "base": slurm_base, "space": {"optimizer.lr": {"choice": [0.1]}},
                          "searcher": {"kind": "asha", "metric": "val_accuracy", "min_epochs": 1,
                                       "max_epochs": 3, "max_trials": 3}});
    let detail = assert_problem(
        submit_sweep(&app, &on_slurm).await,
        422,
        "executor_disabled",
    )
    .await;
    assert!(
        detail.starts_with("base.executor: this server does not run Slurm jobs"),
        "{detail}"
    );
    let (status, sweeps) = app.get_json("/api/v1/sweeps").await;
    assert_eq!(status, 200);
    assert_eq!(sweeps, json!([]), "nothing was written");
    let (_, runs) = app.get_json("/api/v1/runs").await;
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
    let missing = app
        .get("/api/v1/sweeps/0197a000-0000-7000-8000-000000000000")
        .await;
    assert_problem(missing, 404, "sweep_not_found").await;
}

/// A sweep's decisions as its stream replays them: each sweep event with its trial,
/// rung, metric and point (run ids left out: a rerun of the sweep makes other runs).
async fn decisions(http: &reqwest::Client, address: &str, id: &str) -> Vec<String> {
    let events = read_stream(http, &format!("{address}/api/v1/sweeps/{id}/stream"), None).await;
    events
        .iter()
        .filter(|e| e.event.starts_with("Trial") || e.event.starts_with("Sweep"))
        .filter(|e| e.event != "SweepSubmitted")
        .map(|e| {
            let mut data = e.data["data"].clone();
            if let Some(fields) = data.as_object_mut() {
                fields.remove("run");
            }
            format!("{} {data}", e.event)
        })
        .collect()
}

#[tokio::test]
async fn a_sweep_killed_halfway_goes_on_after_restart_with_the_same_decisions() {
    let root = tempfile::tempdir().expect("temp dir");
    let data_dir = root.path().join("data");
    std::fs::create_dir_all(data_dir.join("datasets")).expect("datasets");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/datasets/digits.csv.gz"),
        data_dir.join("datasets/digits.csv.gz"),
    )
    .expect("digits.csv.gz present: run scripts/fetch-digits.sh");
    let mut spec: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sweep-digits.json"),
        )
        .expect("example"),
    )
    .expect("JSON");
    // One trial at a time on one slot: the order of results, and so every decision,
    // is the journal's alone, so an uninterrupted sweep decides exactly the same.
    spec["searcher"]["max_concurrent"] = json!(1);
    let http = client();
    let server = Server::start(&data_dir, "first.log");
    wait_ready(&http, &server.address).await;
    let post = |address: String, spec: Value| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("{address}/api/v1/sweeps"))
                .json(&spec)
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), 201);
            let body: Value = response.json().await.expect("JSON");
            body["id"].as_str().expect("id").to_string()
        }
    };
    let id = post(server.address.clone(), spec.clone()).await;
    let sweep_url = |address: &str| format!("{address}/api/v1/sweeps/{id}");
    // Halfway: a dozen rung results in, a trial training.
    let before = poll_until(
        "a dozen rung results",
        std::time::Duration::from_millis(20),
        || async {
            let sweep = get_json_at(&http, sweep_url(&server.address)).await;
            let results = sweep["results"].as_array().map_or(0, Vec::len);
            let training = sweep["trials"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["run_state"] == "running"));
            (results >= 12 && training).then_some(sweep)
        },
    )
    .await;
    server.kill();

    let server = Server::start(&data_dir, "second.log");
    wait_ready(&http, &server.address).await;
    let after = poll_until(
        "the sweep completed",
        std::time::Duration::from_millis(100),
        || async {
            let sweep = get_json_at(&http, sweep_url(&server.address)).await;
            (sweep["state"] == "completed").then_some(sweep)
        },
    )
    .await;
    // Nothing acknowledged before the kill changed: the same trials (runs, points) and
    // the same rung results, in the same order.
    let trials_before = before["trials"].as_array().expect("trials");
    let trials_after = after["trials"].as_array().expect("trials");
    assert_eq!(trials_after.len(), 27);
    for (b, a) in trials_before.iter().zip(trials_after) {
        assert_eq!((&b["run_id"], &b["point"]), (&a["run_id"], &a["point"]));
    }
    let results_before = before["results"].as_array().expect("results");
    assert_eq!(
        results_before[..],
        after["results"].as_array().expect("results")[..results_before.len()]
    );
    // No trial was made twice: 27 runs carry the sweep's label, one per trial.
    let runs = get_json_at(
        &http,
        format!("{}/api/v1/runs?label=sweep={id}&limit=1000", server.address),
    )
    .await;
    let mut numbers: Vec<String> = runs
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            r["labels"]["trial"]
                .as_str()
                .expect("trial label")
                .to_string()
        })
        .collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 27, "{runs}");
    assert_eq!(runs.as_array().map(Vec::len), Some(27));

    // The same sweep never interrupted decides exactly the same, result for result.
    let interrupted = decisions(&http, &server.address, &id).await;
    let reference = post(server.address.clone(), spec).await;
    let uninterrupted = decisions(&http, &server.address, &reference).await;
    assert_eq!(interrupted, uninterrupted);
    assert!(
        after["best"]["metric"].as_f64().expect("best") >= 0.96,
        "{}",
        after["best"]
    );
}

/// The sha256 of a completed run's final weights.
fn final_weights(run: &Value) -> String {
    run["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["name"] == "final.safetensors")
        .and_then(|a| a["sha256"].as_str())
        .expect("final weights")
        .to_string()
}

#[actix_web::test]
async fn a_promoted_trial_ends_bit_identical_to_its_point_trained_straight_through() {
    let app = spawn_app().await;
    let mut base = quick_spec("twin");
    base["checkpoint"] = json!({"every_batches": 7});
    // The base has no validation data: the trials are ranked by training loss.
    let sweep = json!({
        "name": "twins",
        "base": base,
        "space": {"optimizer.lr": {"choice": [0.002, 0.01, 0.03]}, "model.hidden": {"choice": [[16], [32]]}},
        "searcher": {"kind": "asha", "metric": "train_loss", "mode": "min", "min_epochs": 1,
                     "max_epochs": 3, "reduction_factor": 3, "max_trials": 3, "max_concurrent": 1},
        "seed": 11
    });
    let done = sweep_to_its_end(&app, &sweep).await;
    assert_eq!(done["state"], "completed", "{done:#}");
    let best = &done["best"];
    assert_eq!(best["status"], "finished", "{done:#}");
    assert_eq!(
        best["results"].as_array().map(Vec::len),
        Some(2),
        "rungs 1 and 3"
    );
    let promoted = app.run(best["run_id"].as_str().expect("run")).await;
    // It paused at the end of rung 0 and resumed from that checkpoint.
    let history = crate::helpers::types(&app.events(best["run_id"].as_str().expect("run")).await);
    assert!(history.iter().any(|t| t == "RunPaused"), "{history:?}");
    assert!(
        history.iter().any(|t| t == "ResumedFromCheckpoint"),
        "{history:?}"
    );
    assert_eq!(
        history.iter().filter(|t| *t == "RunStarted").count(),
        2,
        "{history:?}"
    );

    // Its point, trained straight to the end as a run of its own.
    let mut twin = promoted["spec"].clone();
    twin["name"] = json!("straight-through");
    twin.as_object_mut().expect("spec").remove("labels");
    let twin_id = app.submit_ok(&twin).await;
    let twin = app.wait_ended(&twin_id).await;
    assert_eq!(twin["state"], "completed");
    assert_eq!(twin["attempt"], 1);
    assert_eq!(final_weights(&promoted), final_weights(&twin));
    // A trial stopped at rung 0 is not: it trained one epoch of three.
    let stopped = done["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .find(|t| t["status"] == "stopped")
        .expect("a stopped trial");
    let stopped_run = app.run(stopped["run_id"].as_str().expect("run")).await;
    assert_eq!(stopped_run["state"], "cancelled");
    assert!(
        stopped_run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped by sweep"),
        "{stopped_run}"
    );
}

/// A command trial: a stand-in for a training script (standard library only) that
/// reports an epoch summary with a free-form `score` each epoch, checkpoints after
/// each, resumes from `RUNYARD_RESUME_FROM`, and on SIGTERM stops at once (dropping a
/// partial epoch; its last checkpoint is reported already).
pub(crate) const TRIAL_SCRIPT: &str = r#"
import json, os, signal, sys, time
out = os.fdopen(int(os.environ["RUNYARD_PROGRESS_FD"]), "w", buffering=1)
lr, epochs = float(os.environ["LR"]), int(os.environ["EPOCHS"])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
ckdir = os.environ["RUNYARD_CHECKPOINT_DIR"]
start, w = 0, 0.0
if os.environ.get("RUNYARD_RESUME_FROM"):
    with open(os.environ["RUNYARD_RESUME_FROM"]) as f:
        state = json.load(f)
    start, w = state["epoch"], state["w"]
def send(line):
    out.write(json.dumps(line) + "\n")
for epoch in range(start + 1, epochs + 1):
    for _ in range(5):
        if stop:
            sys.exit(0)
        time.sleep(0.01)
    w = w + lr * (1.0 - w)
    score = 1.0 - abs(0.3 - lr) - 1.0 / (epoch + 1)
    send({"type": "epoch", "epoch": epoch, "loss": 1 - w, "score": score})
    path = os.path.join(ckdir, "ckpt-%d.json" % epoch)
    with open(path + ".tmp", "w") as f:
        json.dump({"epoch": epoch, "w": w}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    send({"type": "checkpoint", "path": path, "epoch": epoch, "step": epoch})
"#;

#[actix_web::test]
async fn command_trials_pause_at_their_rung_resume_from_their_checkpoint_and_rank_by_their_metric()
{
    let app = crate::helpers::spawn_app_with(|c| c.runs.allow_commands = true).await;
    let sweep = json!({
        "name": "commands",
        "base": {"name": "script", "kind": "command", "argv": ["python3", "-c", TRIAL_SCRIPT],
                 "env": {"LR": "0.1", "EPOCHS": "3"}},
        "space": {"env.LR": {"grid": ["0.02", "0.3", "0.9"]}},
        "searcher": {"kind": "asha", "metric": "score", "mode": "max", "min_epochs": 1,
                     "max_epochs": 3, "reduction_factor": 3, "max_trials": 3, "max_concurrent": 1}
    });
    let done = sweep_to_its_end(&app, &sweep).await;
    assert_eq!(done["state"], "completed", "{done:#}");
    let trials = done["trials"].as_array().expect("trials");
    // Each trial paused at the end of rung 0 (epoch 1; one more, should the SIGTERM
    // land after the script finished the next), its result the score it reported last.
    let score = |lr: f64, epoch: f64| 1.0 - (0.3 - lr).abs() - 1.0 / (epoch + 1.0);
    for trial in trials {
        let lr: f64 = trial["point"]["env.LR"]
            .as_str()
            .expect("LR")
            .parse()
            .expect("number");
        let first = trial["results"][0].as_f64().expect("a rung-0 result");
        assert!(
            [1.0, 2.0]
                .iter()
                .any(|e| (first - score(lr, *e)).abs() < 1e-9),
            "{trial}"
        );
    }
    // The best (LR 0.3) was promoted: resumed from its checkpoint to epoch 3.
    let best = &done["best"];
    assert_eq!(best["point"]["env.LR"], "0.3", "{done:#}");
    assert_eq!(best["status"], "finished");
    let top = best["results"][1].as_f64().expect("a top-rung result");
    assert!((top - (1.0 - 0.25)).abs() < 1e-9, "{best}");
    let run_id = best["run_id"].as_str().expect("run");
    let history = crate::helpers::types(&app.events(run_id).await);
    assert!(
        history.iter().any(|t| t == "ResumedFromCheckpoint"),
        "{history:?}"
    );
    let run = app.run(run_id).await;
    assert_eq!(run["state"], "completed");
    let epochs: Vec<u64> = run["epochs"]
        .as_array()
        .expect("epochs")
        .iter()
        .filter_map(|e| e["epoch"].as_u64())
        .collect();
    assert_eq!(epochs, [1, 2, 3], "each epoch once: {run}");
    for trial in trials.iter().filter(|t| t["status"] == "stopped") {
        let run = app.run(trial["run_id"].as_str().expect("run")).await;
        assert_eq!(run["state"], "cancelled");
        let lr: f64 = trial["point"]["env.LR"]
            .as_str()
            .expect("LR")
            .parse()
            .expect("number");
        let trained = run["metrics"]["epochs_completed"].as_f64().expect("epochs");
        let first = trial["results"][0].as_f64().expect("result");
        assert!((first - score(lr, trained)).abs() < 1e-9, "{trial} {run}");
    }
}
