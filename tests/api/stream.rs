//! The run stream: progress and lifecycle events, resumable by sequence number.

use crate::helpers::{quick_spec, spawn_app, types};

#[actix_web::test]
async fn the_stream_shows_progress_and_every_lifecycle_event_then_ends() {
    let app = spawn_app().await;
    let mut spec = quick_spec("streamed");
    spec["epochs"] = serde_json::json!(5);
    let id = app.submit_ok(&spec).await;
    let streamed = app.stream(&id, None).await;

    let progress: Vec<_> = streamed.iter().filter(|e| e.event == "progress").collect();
    assert!(!progress.is_empty(), "no progress event");
    for p in &progress {
        assert_eq!(p.id, None, "progress is not a journaled event");
        for key in [
            "epoch",
            "epochs",
            "batch",
            "batches_per_epoch",
            "samples",
            "loss",
            "percent",
            "samples_per_sec",
            "eta_secs",
        ] {
            assert!(
                p.data.get(key).is_some(),
                "progress lacks {key}: {}",
                p.data
            );
        }
    }
    let last = progress.last().expect("one");
    assert_eq!(
        last.data["percent"], 100.0,
        "the stream ends on the final figures"
    );
    assert_eq!(last.data["samples"], 5 * 2000);

    let lifecycle: Vec<_> = streamed.iter().filter(|e| e.event != "progress").collect();
    let journaled = app.events(&id).await;
    assert_eq!(lifecycle.len(), journaled.len());
    for (sse, event) in lifecycle.iter().zip(&journaled) {
        assert_eq!(sse.id, event["seq"].as_u64(), "id is the sequence number");
        assert_eq!(sse.event, event["type"].as_str().expect("type"));
        assert_eq!(&sse.data, event);
    }
    assert_eq!(
        types(&journaled)[journaled.len() - 2..],
        ["RunCompleted", "SlotReleased"]
    );
}

#[actix_web::test]
async fn a_stream_resumes_after_the_last_event_id() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("resumed")).await;
    app.wait_for(&id, |r| r["state"] == "completed").await;
    let journaled = app.events(&id).await;
    let started = journaled
        .iter()
        .find(|e| e["type"] == "RunStarted")
        .and_then(|e| e["seq"].as_u64())
        .expect("RunStarted");

    let resumed = app.stream(&id, Some(started)).await;
    let ids: Vec<u64> = resumed.iter().filter_map(|e| e.id).collect();
    let expected: Vec<u64> = journaled
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .filter(|seq| *seq > started)
        .collect();
    assert_eq!(ids, expected, "no gap and no duplicate after Last-Event-ID");
}
