//! Pause, resume and artifacts: a paused and resumed run ends with the same weights,
//! bit for bit, as the same run trained without a break.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{assert_problem, quick_spec, spawn_app, types};

fn checkpointed_spec(name: &str) -> Value {
    let mut spec = quick_spec(name);
    spec["model"]["hidden"] = json!([64, 64]);
    spec["data"]["samples"] = json!(4000);
    spec["epochs"] = json!(30);
    spec["checkpoint"] = json!({"every_batches": 25, "keep": 2});
    spec
}

fn final_sha(run: &Value) -> String {
    let artifacts = run["artifacts"].as_array().expect("artifacts");
    let weights = artifacts
        .iter()
        .find(|a| a["name"] == "final.safetensors")
        .expect("final weights");
    weights["sha256"].as_str().expect("sha").to_string()
}

#[actix_web::test]
async fn a_paused_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let app = spawn_app().await;
    let reference = app.submit_ok(&checkpointed_spec("uninterrupted")).await;
    let reference = app
        .wait_for(&reference, |r| r["state"] == "completed")
        .await;

    let id = app
        .submit_ok(&checkpointed_spec("paused-then-resumed"))
        .await;
    app.wait_for(&id, |r| {
        r["state"] == "running" && r["progress"]["samples"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let response = app.post(&format!("/api/v1/runs/{id}/pause")).await;
    assert_eq!(response.status(), 200);
    let paused: Value = response.json().await.expect("JSON");
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["slot"], Value::Null);
    assert!(paused["checkpoint"]["sha256"].is_string(), "{paused}");
    let (_, slots) = app.get_json("/api/v1/slots").await;
    assert_eq!(
        slots[0]["run_id"],
        Value::Null,
        "a paused run holds no slot"
    );

    let response = app.post(&format!("/api/v1/runs/{id}/pause")).await;
    assert_problem(response, 409, "conflict").await;

    let response = app.post(&format!("/api/v1/runs/{id}/resume")).await;
    assert_eq!(response.status(), 200);
    let done = app.wait_for(&id, |r| r["state"] == "completed").await;
    assert_eq!(done["attempt"], 2);
    assert_eq!(done["metrics"]["epochs_completed"], 30);
    assert_eq!(
        final_sha(&done),
        final_sha(&reference),
        "bit-identical weights"
    );
    assert_eq!(done["checkpoints_kept"].as_array().expect("kept").len(), 2);

    let history = types(&app.events(&id).await);
    let paused_at = history
        .iter()
        .position(|t| t == "RunPaused")
        .expect("paused");
    // The pause checkpoint is journaled before RunPaused (when the pause came right at
    // an epoch end, it is the epoch-end checkpoint itself).
    assert!(history[..paused_at].contains(&"CheckpointSaved".to_string()));
    let requested = history
        .iter()
        .position(|t| t == "PauseRequested")
        .expect("requested");
    assert!(requested < paused_at);
    assert_eq!(
        history[paused_at..paused_at + 5],
        [
            "RunPaused",
            "SlotReleased",
            "RunResumed",
            "SlotClaimed",
            "RunStarted"
        ]
    );
    assert_eq!(history[paused_at + 5], "ResumedFromCheckpoint");

    let response = app.post(&format!("/api/v1/runs/{id}/resume")).await;
    assert_problem(response, 409, "conflict").await;
}

#[actix_web::test]
async fn the_final_weights_can_be_downloaded_and_match_their_hash() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("artifacts")).await;
    let run = app.wait_for(&id, |r| r["state"] == "completed").await;
    let response = app
        .client
        .get(format!(
            "{}/api/v1/runs/{id}/artifacts/final.safetensors",
            app.address
        ))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    assert_eq!(hex_sha(&body), final_sha(&run));

    let kept = run["checkpoints_kept"].as_array().expect("kept");
    let newest = kept.last().expect("a checkpoint");
    let name = newest["path"]
        .as_str()
        .expect("path")
        .rsplit('/')
        .next()
        .expect("name");
    let response = app
        .client
        .get(format!("{}/api/v1/runs/{id}/artifacts/{name}", app.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(
        hex_sha(&response.bytes().await.expect("body")),
        newest["sha256"].as_str().expect("sha")
    );

    for bad in ["nothing.bin", "..%2F..%2Fjournal"] {
        let response = app
            .client
            .get(format!("{}/api/v1/runs/{id}/artifacts/{bad}", app.address))
            .send()
            .await
            .expect("answered");
        assert_problem(response, 404, "artifact_not_found").await;
    }
}

#[actix_web::test]
async fn a_queued_run_pauses_at_once_and_resumes_into_the_queue() {
    let app = spawn_app().await;
    let mut long = quick_spec("holds-the-slot");
    long["epochs"] = json!(100_000);
    let first = app.submit_ok(&long).await;
    let second = app.submit_ok(&quick_spec("waits")).await;
    app.wait_for(&first, |r| r["state"] == "running").await;
    let response = app.post(&format!("/api/v1/runs/{second}/pause")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["state"], "paused");
    let response = app.post(&format!("/api/v1/runs/{second}/resume")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.post(&format!("/api/v1/runs/{first}/cancel"))
            .await
            .status(),
        200
    );
    let done = app.wait_for(&second, |r| r["state"] == "completed").await;
    assert_eq!(done["attempt"], 1);
    assert_eq!(
        types(&app.events(&second).await)[..4],
        ["RunSubmitted", "RunPaused", "RunResumed", "SlotClaimed"]
    );
}

fn hex_sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
