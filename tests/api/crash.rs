//! Crash safety: the real binary, killed with SIGKILL while a run trains, restarted on
//! the same data directory.

use serde_json::{json, Value};

use crate::helpers::{client, get_json_at, quick_spec, types, wait_for_run_at, wait_ready};
use crate::server::Server;

async fn all_events(client: &reqwest::Client, address: &str) -> Vec<Value> {
    let runs = get_json_at(client, format!("{address}/api/v1/runs")).await;
    let mut events = Vec::new();
    for run in runs.as_array().expect("runs") {
        let id = run["id"].as_str().expect("id");
        let of_run = get_json_at(client, format!("{address}/api/v1/runs/{id}/events")).await;
        events.extend(of_run.as_array().expect("events").iter().cloned());
    }
    events.sort_by_key(|e| e["seq"].as_u64());
    events
}

#[tokio::test]
async fn a_run_live_at_sigkill_is_trained_again_after_restart_and_nothing_is_lost() {
    let root = tempfile::tempdir().expect("temp dir");
    let data_dir = root.path().join("data");
    let http = client();

    let server = Server::start(&data_dir, "first.log");
    wait_ready(&http, &server.address).await;
    let submit = |spec: Value| {
        let (http, address) = (http.clone(), server.address.clone());
        async move {
            let response = http
                .post(format!("{address}/api/v1/runs"))
                .json(&spec)
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), 201);
            let body: Value = response.json().await.expect("JSON");
            body["id"].as_str().expect("id").to_string()
        }
    };
    let finished = submit(quick_spec("finished-before-the-crash")).await;
    wait_for_run_at(&http, &server.address, &finished, |r| {
        r["state"] == "completed"
    })
    .await;

    let spec_of = |name: &str| {
        let mut spec = quick_spec(name);
        spec["epochs"] = json!(20);
        spec["model"]["hidden"] = json!([128, 128]);
        spec["checkpoint"] = json!({"every_batches": 10});
        spec
    };
    let live = submit(spec_of("live-at-the-crash")).await;
    wait_for_run_at(&http, &server.address, &live, |r| {
        r["state"] == "running" && r["checkpoint"]["epoch"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let before = all_events(&http, &server.address).await;
    server.kill();

    let server = Server::start(&data_dir, "second.log");
    wait_ready(&http, &server.address).await;
    let after_restart = all_events(&http, &server.address).await;
    assert!(
        after_restart.len() >= before.len() && after_restart[..before.len()] == before[..],
        "every event acknowledged before the kill is still there, unchanged"
    );

    let run = wait_for_run_at(&http, &server.address, &live, |r| r["state"] == "completed").await;
    assert_eq!(run["attempt"], 2);
    assert_eq!(run["metrics"]["epochs_completed"], 20);

    let history = types(
        get_json_at(
            &http,
            format!("{}/api/v1/runs/{live}/events", server.address),
        )
        .await
        .as_array()
        .expect("events"),
    );
    let requeued = history
        .iter()
        .position(|t| t == "RunRequeued")
        .expect("requeued");
    assert_eq!(history[..3], ["RunSubmitted", "SlotClaimed", "RunStarted"]);
    assert_eq!(
        history[requeued..requeued + 5],
        [
            "RunRequeued",
            "SlotReleased",
            "SlotClaimed",
            "RunStarted",
            "ResumedFromCheckpoint"
        ],
        "the second attempt continues from the last checkpoint, not from scratch"
    );
    assert_eq!(
        history[history.len() - 2..],
        ["RunCompleted", "SlotReleased"]
    );
    assert_eq!(history.iter().filter(|t| *t == "RunSubmitted").count(), 1);

    // The same training, never interrupted, ends with the same weights, bit for bit.
    let response = http
        .post(format!("{}/api/v1/runs", server.address))
        .json(&spec_of("never-interrupted"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 201);
    let reference: Value = response.json().await.expect("JSON");
    let reference_id = reference["id"].as_str().expect("id");
    let reference = wait_for_run_at(&http, &server.address, reference_id, |r| {
        r["state"] == "completed"
    })
    .await;
    let final_sha = |run: &Value| run["artifacts"][0]["sha256"].as_str().map(str::to_string);
    assert!(final_sha(&run).is_some());
    assert_eq!(
        final_sha(&run),
        final_sha(&reference),
        "bit-identical after kill -9 and resume"
    );

    let kept = get_json_at(&http, format!("{}/api/v1/runs/{finished}", server.address)).await;
    assert_eq!(kept["state"], "completed");
    assert_eq!(kept["attempt"], 1);

    let events = all_events(&http, &server.address).await;
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "sequence numbers are contiguous, none lost or repeated"
    );
    let slots = get_json_at(&http, format!("{}/api/v1/slots", server.address)).await;
    assert_eq!(slots[0]["run_id"], Value::Null);
    let audit = get_json_at(&http, format!("{}/api/v1/slots/audit", server.address)).await;
    assert_eq!(audit["slots"][0]["consistent"], true);
    let recovered = audit["last_replay"]["recovery"]
        .as_array()
        .expect("recovery");
    assert!(
        recovered
            .iter()
            .any(|r| r["run_id"] == live.as_str() && r["event"] == "RunRequeued"),
        "{audit}"
    );
    assert!(recovered.iter().all(|r| r["repair"] == false), "{audit}");
    assert!(
        audit["last_replay"]["from_snapshot"].as_u64().is_some(),
        "the restart replayed from a snapshot: {audit}"
    );
}
