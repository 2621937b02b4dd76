//! Event streams resumed across a server restart: the real binary is killed with
//! SIGKILL while two streams are open, started again on the same data directory, and
//! both streams are resumed with `Last-Event-ID`. What the client got before and
//! after is exactly the journal: no gap, no duplicate.

use serde_json::{json, Value};

use crate::helpers::{client, get_json_at, quick_spec, wait_for_run_at, wait_ready};
use crate::server::Server;
use crate::stream::{Item, SseReader};

async fn open(http: &reqwest::Client, url: String, last_event_id: Option<u64>) -> SseReader {
    let mut request = http.get(url);
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last.to_string());
    }
    SseReader::new(request.send().await.expect("stream answered"))
}

async fn wait_state(http: &reqwest::Client, address: &str, id: &str, state: &str) {
    wait_for_run_at(http, address, id, |run| run["state"] == state).await;
}

/// Reads events until `done` says so or the stream ends; returns the ids seen, in
/// order, with the events' types.
async fn read_ids(
    reader: &mut SseReader,
    ids: &mut Vec<u64>,
    mut done: impl FnMut(u64, &str, &Value) -> bool,
) {
    while let Some(item) = reader.next().await {
        if let Item::Event(Some(id), name, data) = item {
            ids.push(id);
            if done(id, &name, &data) {
                return;
            }
        }
    }
}

/// Says when the second `EpochCompleted` of `run` has been read.
fn two_epochs_of(run: String) -> impl FnMut(u64, &str, &Value) -> bool {
    let mut epochs = 0;
    move |_, name, data| {
        if name == "EpochCompleted" && data["run_id"] == json!(run) {
            epochs += 1;
        }
        epochs >= 2
    }
}

#[tokio::test]
async fn streams_resume_across_a_server_restart_with_no_gap_and_no_duplicate() {
    let root = tempfile::tempdir().expect("temp dir");
    let data_dir = root.path().join("data");
    let http = client();

    let server = Server::start(&data_dir, "stream-first.log");
    wait_ready(&http, &server.address).await;
    let submit = |address: String, spec: Value| {
        let http = http.clone();
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
    let finished = submit(server.address.clone(), quick_spec("before-the-crash")).await;
    wait_state(&http, &server.address, &finished, "completed").await;

    let mut spec = quick_spec("live-at-the-crash");
    spec["epochs"] = json!(20);
    spec["model"]["hidden"] = json!([128, 128]);
    spec["checkpoint"] = json!({"every_batches": 10});
    let live = submit(server.address.clone(), spec).await;

    let all_url = |address: &str| format!("{address}/api/v1/stream");
    let one_url = |address: &str| format!("{address}/api/v1/runs/{live}/stream");
    let mut all = open(&http, all_url(&server.address), None).await;
    let mut one = open(&http, one_url(&server.address), None).await;
    // Both streams are in the middle of the live run's training when it is killed.
    let (mut all_ids, mut one_ids) = (Vec::new(), Vec::new());
    read_ids(&mut all, &mut all_ids, two_epochs_of(live.clone())).await;
    read_ids(&mut one, &mut one_ids, two_epochs_of(live.clone())).await;

    server.kill();
    // What was already on its way arrives; a torn last event is dropped.
    read_ids(&mut all, &mut all_ids, |_, _, _| false).await;
    read_ids(&mut one, &mut one_ids, |_, _, _| false).await;

    let server = Server::start(&data_dir, "stream-second.log");
    wait_ready(&http, &server.address).await;
    let mut one = open(&http, one_url(&server.address), one_ids.last().copied()).await;
    // The run stream ends after the run's terminal event (the run trains again from
    // its checkpoint after the restart).
    read_ids(&mut one, &mut one_ids, |_, _, _| false).await;

    let events_of = |id: String| {
        let (http, address) = (http.clone(), server.address.clone());
        async move {
            get_json_at(&http, format!("{address}/api/v1/runs/{id}/events"))
                .await
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["seq"].as_u64().expect("seq"))
                .collect::<Vec<u64>>()
        }
    };
    let live_seqs = events_of(live.clone()).await;
    assert_eq!(one_ids, live_seqs, "the run stream: no gap, no duplicate");

    let mut journal = events_of(finished.clone()).await;
    journal.extend(&live_seqs);
    journal.sort_unstable();
    let last = *journal.last().expect("events");
    let mut all = open(&http, all_url(&server.address), all_ids.last().copied()).await;
    read_ids(&mut all, &mut all_ids, |id, _, _| id >= last).await;
    assert_eq!(
        all_ids, journal,
        "the all-runs stream: no gap, no duplicate"
    );
}
