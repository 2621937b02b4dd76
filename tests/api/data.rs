//! Training on files: the digits data set, regression on CSV, the checks a submission
//! gets, and retries of a failed attempt.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::{assert_problem, long_spec, spawn_app, spawn_app_with, types};

/// The digits CSV fetched by `scripts/fetch-digits.sh` (run by `make test`).
fn digits_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/datasets/digits.csv.gz")
}

#[actix_web::test]
async fn the_digits_example_reaches_ninety_percent_validation_accuracy() {
    let app = spawn_app().await;
    std::fs::copy(digits_file(), app.datasets().join("digits.csv.gz"))
        .expect("digits.csv.gz present: run scripts/fetch-digits.sh");
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits.json"),
        )
        .expect("example"),
    )
    .expect("example JSON");
    let id = app.submit_ok(&spec).await;
    let run = app.wait_for(&id, |r| r["state"] == "completed").await;
    let accuracy = run["metrics"]["val_metric"]
        .as_f64()
        .expect("validation accuracy");
    assert!(accuracy > 0.9, "validation accuracy {accuracy}");
    assert!(run["metrics"]["best_val_metric"].as_f64().expect("best") >= accuracy);
    let evaluated = types(&app.events(&id).await)
        .iter()
        .filter(|t| *t == "EpochEvaluated")
        .count();
    assert_eq!(evaluated, spec["epochs"].as_u64().expect("epochs") as usize);
}

fn write_regression_csv(dir: &Path) {
    let mut text = String::from("x1,x2,y\n");
    for i in 0..400 {
        let x1 = (i % 20) as f64 / 10.0 - 1.0;
        let x2 = (i / 20) as f64 / 10.0 - 1.0;
        text.push_str(&format!("{x1},{x2},{}\n", 2.0 * x1 - x2 + 0.5));
    }
    std::fs::write(dir.join("lines.csv"), text).expect("csv");
}

fn regression_spec(path: &str) -> Value {
    json!({
        "name": "lines",
        "task": "regression",
        "model": {"kind": "mlp", "hidden": [16]},
        "data": {"kind": "csv", "path": path, "header": true, "target": "y"},
        "validation": {"fraction": 0.25},
        "optimizer": {"kind": "adam", "lr": 0.01},
        "epochs": 20,
        "batch_size": 16,
        "seed": 3
    })
}

#[actix_web::test]
async fn a_regression_on_a_csv_file_learns_and_reports_its_mean_absolute_error() {
    let app = spawn_app().await;
    write_regression_csv(&app.datasets());
    let id = app.submit_ok(&regression_spec("lines.csv")).await;
    let run = app.wait_for(&id, |r| r["state"] == "completed").await;
    let epochs = run["epochs"].as_array().expect("epochs");
    let first = epochs[0]["val_metric"].as_f64().expect("first MAE");
    let last = run["metrics"]["val_metric"].as_f64().expect("last MAE");
    assert!(last < first / 2.0, "MAE {first} -> {last}");
    assert_eq!(run["metrics"]["train_accuracy"], Value::Null);
}

#[actix_web::test]
async fn bad_data_is_refused_at_submission_naming_the_field() {
    let app = spawn_app().await;
    write_regression_csv(&app.datasets());
    std::fs::write(app.datasets().join("bad.csv"), "a,b\n1,2\n3,x\n").expect("csv");

    let cases = [
        (regression_spec("missing.csv"), "data.path", "no file"),
        (
            regression_spec("../../../etc/passwd"),
            "data.path",
            "outside",
        ),
        (
            {
                let mut s = regression_spec("lines.csv");
                s["data"]["target"] = json!("z");
                s
            },
            "data.target",
            "no column named `z`",
        ),
        (
            {
                let mut s = regression_spec("bad.csv");
                s["data"]["target"] = json!("b");
                s
            },
            "data.path",
            "line 3",
        ),
        (
            {
                let mut s = regression_spec("lines.csv");
                s["task"] = json!("classification");
                s
            },
            "data",
            "whole numbers",
        ),
        (
            {
                let mut s = regression_spec("lines.csv");
                s["batch_size"] = json!(1000);
                s
            },
            "batch_size",
            "300 training examples",
        ),
    ];
    for (spec, field, words) in cases {
        let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
        assert!(
            detail.starts_with(&format!("{field}:")),
            "{field}: {detail}"
        );
        assert!(detail.contains(words), "{words}: {detail}");
    }
    let (_, list) = app.get_json("/api/v1/runs").await;
    assert_eq!(list, json!([]), "nothing was written");
}

#[actix_web::test]
async fn a_failed_attempt_is_retried_after_its_backoff_and_can_then_succeed() {
    let app = spawn_app_with(|c| c.train.cpu_slots = 1).await;
    write_regression_csv(&app.datasets());
    let blocker = app.submit_ok(&long_spec("holds-the-slot")).await;
    app.wait_for(&blocker, |r| r["state"] == "running").await;

    let mut spec = regression_spec("lines.csv");
    spec["max_retries"] = json!(2);
    spec["retry_backoff_secs"] = json!(2.0);
    let id = app.submit_ok(&spec).await;
    // The file goes away after the submission was checked: the attempt fails.
    let file = app.datasets().join("lines.csv");
    let kept = std::fs::read(&file).expect("csv");
    std::fs::remove_file(&file).expect("removed");
    assert_eq!(
        app.post(&format!("/api/v1/runs/{blocker}/cancel"))
            .await
            .status(),
        200
    );

    let retried = app.wait_for(&id, |r| r["retries"] == 1).await;
    assert_eq!(retried["state"], "queued");
    assert!(
        retried["error"]
            .as_str()
            .expect("reason")
            .contains("lines.csv"),
        "{retried}"
    );
    std::fs::write(&file, kept).expect("restored");

    let done = app.wait_for(&id, |r| r["state"] == "completed").await;
    assert!(done["attempt"].as_u64().expect("attempt") >= 2);
    let history = types(&app.events(&id).await);
    let retry = history
        .iter()
        .position(|t| t == "RunRetryScheduled")
        .expect("retry");
    assert_eq!(history[retry + 1], "SlotReleased");
    assert_eq!(history.iter().filter(|t| *t == "RunFailed").count(), 0);
}

#[actix_web::test]
async fn a_cnn_with_dropout_learns_the_digits_as_images() {
    let app = spawn_app().await;
    std::fs::copy(digits_file(), app.datasets().join("digits.csv.gz"))
        .expect("digits.csv.gz present: run scripts/fetch-digits.sh");
    let spec = json!({
        "name": "digits-cnn",
        "model": {"kind": "cnn", "input": [1, 8, 8], "channels": [8, 16], "kernel_sizes": [3, 3],
                  "pool": 2, "hidden": [64], "dropout": 0.1},
        "data": {"kind": "csv", "path": "digits.csv.gz"},
        "validation": {"fraction": 0.2},
        "optimizer": {"kind": "adamw", "lr": 0.003, "weight_decay": 0.01},
        "lr_schedule": {"kind": "cosine", "warmup_steps": 20},
        "grad_clip": 5.0,
        "epochs": 8,
        "batch_size": 32,
        "seed": 2
    });
    let id = app.submit_ok(&spec).await;
    let run = app.wait_for(&id, |r| r["state"] == "completed").await;
    let accuracy = run["metrics"]["val_metric"]
        .as_f64()
        .expect("validation accuracy");
    assert!(accuracy > 0.85, "validation accuracy {accuracy}");

    let mut wrong = spec.clone();
    wrong["model"]["input"] = json!([1, 8, 9]);
    wrong["name"] = json!("wrong-shape");
    let detail = assert_problem(app.submit(&wrong).await, 422, "invalid_spec").await;
    assert!(detail.starts_with("model.input:"), "{detail}");
}

#[actix_web::test]
async fn a_run_that_makes_no_progress_is_reported_stalled_until_it_moves_again() {
    let app = spawn_app_with(|c| c.train.cpu_slots = 1).await;
    write_regression_csv(&app.datasets());
    let csv = std::fs::read(app.datasets().join("lines.csv")).expect("csv");
    let blocker = app.submit_ok(&long_spec("holds-the-slot")).await;
    app.wait_for(&blocker, |r| r["state"] == "running").await;

    let mut spec = regression_spec("feed.csv");
    spec["stall_after_secs"] = json!(1.0);
    let feed = app.datasets().join("feed.csv");
    std::fs::write(&feed, &csv).expect("checked at submission");
    let id = app.submit_ok(&spec).await;
    // By the time the run starts, its data comes through a pipe nobody writes yet:
    // the training thread blocks reading it.
    std::fs::remove_file(&feed).expect("removed");
    let made = std::process::Command::new("mkfifo")
        .arg(&feed)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    assert_eq!(
        app.post(&format!("/api/v1/runs/{blocker}/cancel"))
            .await
            .status(),
        200
    );

    let stalled = app.wait_for(&id, |r| r["stalled"] == true).await;
    assert_eq!(stalled["state"], "running");
    let writer = std::thread::spawn(move || std::fs::write(&feed, csv).expect("fed"));
    let done = app.wait_for(&id, |r| r["state"] == "completed").await;
    writer.join().expect("writer");
    assert_eq!(done["stalled"], false);
    let history = types(&app.events(&id).await);
    let stall = history
        .iter()
        .position(|t| t == "RunStalled")
        .expect("stalled");
    let ended = history
        .iter()
        .position(|t| t == "StallEnded")
        .expect("ended");
    assert!(stall < ended, "{history:?}");
}

#[actix_web::test]
async fn a_torchscript_module_from_python_is_trained_in_process() {
    let app = spawn_app().await;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_mlp.pt");
    std::fs::copy(&fixture, app.datasets().join("tiny_mlp.pt")).expect("fixture");
    let spec = json!({
        "name": "scripted",
        "model": {"kind": "torchscript", "path": "tiny_mlp.pt"},
        "data": {"kind": "synthetic", "samples": 2000, "features": 16, "classes": 3, "seed": 7},
        "optimizer": {"kind": "adam", "lr": 0.01},
        "epochs": 5,
        "batch_size": 32,
        "seed": 1
    });
    let id = app.submit_ok(&spec).await;
    let run = app.wait_for(&id, |r| r["state"] == "completed").await;
    let epochs = run["epochs"].as_array().expect("epochs");
    let first = epochs[0]["train_loss"].as_f64().expect("loss");
    let last = epochs[4]["train_loss"].as_f64().expect("loss");
    assert!(
        last < first,
        "the module's parameters are trained: {first} -> {last}"
    );

    let mut wrong = spec.clone();
    wrong["name"] = json!("wrong-inputs");
    wrong["data"]["features"] = json!(12);
    let detail = assert_problem(app.submit(&wrong).await, 422, "invalid_spec").await;
    assert!(
        detail.starts_with("model.path:") && detail.contains("[batch, 12]"),
        "{detail}"
    );
    let mut missing = spec.clone();
    missing["model"]["path"] = json!("nowhere.pt");
    let detail = assert_problem(app.submit(&missing).await, 422, "invalid_spec").await;
    assert!(detail.contains("no file"), "{detail}");
}
