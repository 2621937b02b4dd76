//! Submitting, listing, cancelling runs, and the errors a client can cause.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, long_spec, quick_spec, spawn_app, spawn_app_with, types};

#[actix_web::test]
async fn a_submitted_run_trains_to_completion() {
    let app = spawn_app().await;
    let response = app.submit(&quick_spec("demo")).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    let body: Value = response.json().await.expect("JSON");
    let id = body["id"].as_str().expect("id");
    assert_eq!(location, format!("/api/v1/runs/{id}"));
    assert_eq!(body["digest"].as_str().expect("digest").len(), 64);
    assert_eq!(body["spec"]["model"]["hidden"], json!([32]));
    assert!(body["created_at"].is_string());
    assert!(["queued", "starting", "running"].contains(&body["state"].as_str().expect("state")));

    let run = app.wait_for(id, |r| r["state"] == "completed").await;
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["metrics"]["epochs_completed"], 3);
    assert_eq!(run["epochs"].as_array().expect("epochs").len(), 3);
    let accuracy = run["result"]["train_accuracy"].as_f64().expect("accuracy");
    assert!(accuracy > 0.5, "a 3-class problem learned to {accuracy}");
    assert_eq!(run["slot"], Value::Null);

    let events = app.events(id).await;
    // Checkpoints taken between two ticks are journaled as the newest of them.
    let lifecycle: Vec<String> = types(&events)
        .into_iter()
        .filter(|t| t != "CheckpointSaved")
        .collect();
    assert_eq!(
        lifecycle,
        [
            "RunSubmitted",
            "SlotClaimed",
            "RunStarted",
            "EpochCompleted",
            "EpochCompleted",
            "EpochCompleted",
            "ArtifactSaved",
            "RunCompleted",
            "SlotReleased"
        ]
    );
    let last_checkpoint = events
        .iter()
        .rev()
        .find(|e| e["type"] == "CheckpointSaved")
        .expect("a checkpoint");
    assert_eq!(
        last_checkpoint["data"]["epoch"], 3,
        "the epoch-end checkpoint"
    );
    assert_eq!(run["checkpoint"]["step"], 3 * 63);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Time travel: the run as it was right after each of these events.
    let seq_of = |t: &str| {
        events
            .iter()
            .find(|e| e["type"] == t)
            .and_then(|e| e["seq"].as_u64())
            .expect("event")
    };
    let (_, then) = app
        .get_json(&format!(
            "/api/v1/runs/{id}?at_seq={}",
            seq_of("RunStarted")
        ))
        .await;
    assert_eq!(
        (then["state"].as_str(), then["attempt"].as_u64()),
        (Some("running"), Some(1))
    );
    assert_eq!(then["epochs"], json!([]));
    let (_, then) = app
        .get_json(&format!(
            "/api/v1/runs/{id}?at_seq={}",
            seq_of("SlotClaimed")
        ))
        .await;
    assert_eq!(then["state"], "starting");
    let response = app
        .client
        .get(format!("{}/api/v1/runs/{id}?at_seq=0", app.address))
        .send()
        .await
        .expect("answered");
    assert_problem(response, 404, "run_not_found").await;

    let (status, slots) = app.get_json("/api/v1/slots").await;
    assert_eq!(status, 200);
    assert_eq!(slots[0]["device"], "cpu");
    assert_eq!(slots[0]["run_id"], Value::Null);
    let (_, list) = app.get_json("/api/v1/runs").await;
    assert_eq!(list.as_array().expect("list").len(), 1);
    let (_, completed) = app.get_json("/api/v1/runs?state=completed").await;
    assert_eq!(completed.as_array().expect("list").len(), 1);
    let (_, queued) = app.get_json("/api/v1/runs?state=queued").await;
    assert_eq!(queued.as_array().expect("list").len(), 0);
}

#[actix_web::test]
async fn the_same_spec_twice_answers_the_existing_run() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("twice")).await;
    // Same spec with keys reordered and a default spelled out: same digest.
    let again = json!({
        "seed": 1, "batch_size": 32, "epochs": 3,
        "optimizer": {"lr": 0.01, "kind": "adam"},
        "data": {"seed": 7, "classes": 3, "features": 16, "samples": 2000, "kind": "synthetic"},
        "model": {"activation": "relu", "hidden": [32], "kind": "mlp"},
        "name": "twice"
    });
    let response = app.submit(&again).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["id"], id.as_str());
    let (_, list) = app.get_json("/api/v1/runs").await;
    assert_eq!(list.as_array().expect("list").len(), 1);
    let submitted = types(&app.events(&id).await)
        .iter()
        .filter(|t| *t == "RunSubmitted")
        .count();
    assert_eq!(submitted, 1);
}

#[actix_web::test]
async fn an_invalid_spec_is_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let post_raw = |body: &'static str| {
        app.client
            .post(format!("{}/api/v1/runs", app.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let detail = assert_problem(
        post_raw("{\"name\": ").await.expect("answered"),
        400,
        "malformed_body",
    )
    .await;
    assert!(detail.contains("line 1"), "{detail}");

    let mut spec = quick_spec("bad");
    spec["epochs"] = json!(0);
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.starts_with("epochs:"), "{detail}");

    let mut spec = quick_spec("bad");
    spec["model"]["hidden"] = json!(["wide"]);
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.contains("model.hidden[0]"), "{detail}");

    let mut spec = quick_spec("bad");
    spec["model"]["depth"] = json!(3);
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.contains("depth"), "{detail}");

    let mut spec = quick_spec("bad");
    spec.as_object_mut().expect("object").remove("data");
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.contains("data"), "{detail}");

    let mut spec = quick_spec("bad");
    spec["batch_size"] = json!(5000);
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.starts_with("batch_size:"), "{detail}");

    let response = app
        .client
        .post(format!("{}/api/v1/runs", app.address))
        .header("content-type", "text/plain")
        .body("name: x")
        .send()
        .await
        .expect("answered");
    assert_problem(response, 415, "unsupported_media_type").await;

    let big = "x".repeat(2 << 20);
    let response = app
        .client
        .post(format!("{}/api/v1/runs", app.address))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("answered");
    assert_problem(response, 413, "body_too_large").await;

    let (_, list) = app.get_json("/api/v1/runs").await;
    assert_eq!(list, json!([]));
    let (_, ready) = app.get_json("/readyz").await;
    assert_eq!(ready["last_seq"], 0, "no event was written");
}

#[actix_web::test]
async fn cancelling_a_running_run_stops_it_and_frees_the_slot() {
    let app = spawn_app().await;
    let id = app.submit_ok(&long_spec("to-cancel")).await;
    let running = app
        .wait_for(&id, |r| {
            r["state"] == "running" && r["progress"]["samples"].as_u64().unwrap_or(0) > 0
        })
        .await;
    assert!(running["progress"]["percent"].as_f64().expect("percent") < 100.0);

    let response = app.post(&format!("/api/v1/runs/{id}/cancel")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["slot"], Value::Null);

    // Epochs and checkpoints may finish between the request and the stop; the rest
    // is exact.
    let events: Vec<String> = types(&app.events(&id).await)
        .into_iter()
        .filter(|t| t != "EpochCompleted" && t != "CheckpointSaved")
        .collect();
    assert_eq!(
        events,
        [
            "RunSubmitted",
            "SlotClaimed",
            "RunStarted",
            "CancelRequested",
            "RunCancelled",
            "SlotReleased"
        ]
    );
    let (_, slots) = app.get_json("/api/v1/slots").await;
    assert_eq!(slots[0]["run_id"], Value::Null);

    let response = app.post(&format!("/api/v1/runs/{id}/cancel")).await;
    let detail = assert_problem(response, 409, "conflict").await;
    assert!(detail.contains("already cancelled"), "{detail}");
}

#[actix_web::test]
async fn a_queued_run_is_cancelled_at_once_and_the_queue_moves_on() {
    let app = spawn_app_with(|c| c.train.cpu_slots = 1).await;
    let first = app.submit_ok(&long_spec("holds-the-slot")).await;
    let second = app.submit_ok(&long_spec("waits")).await;
    let third = app.submit_ok(&quick_spec("runs-next")).await;
    app.wait_for(&first, |r| r["state"] == "running").await;
    assert_eq!(app.run(&second).await["state"], "queued");

    let response = app.post(&format!("/api/v1/runs/{second}/cancel")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        types(&app.events(&second).await),
        ["RunSubmitted", "RunCancelled"]
    );

    let response = app.post(&format!("/api/v1/runs/{first}/cancel")).await;
    assert_eq!(response.status(), 200);
    let done = app.wait_for(&third, |r| r["state"] == "completed").await;
    assert_eq!(done["attempt"], 1);
}

#[actix_web::test]
async fn unknown_runs_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let missing = "0190f2a4-0000-7000-8000-000000000000";
    for path in [
        format!("/api/v1/runs/{missing}"),
        format!("/api/v1/runs/{missing}/events"),
        format!("/api/v1/runs/{missing}/stream"),
        "/api/v1/runs/not-a-run-id".to_string(),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .expect("answered");
        assert_problem(response, 404, "run_not_found").await;
    }
    let response = app.post(&format!("/api/v1/runs/{missing}/cancel")).await;
    assert_problem(response, 404, "run_not_found").await;
    let response = app
        .client
        .get(format!("{}/api/v1/nothing-here", app.address))
        .send()
        .await
        .expect("answered");
    assert_problem(response, 404, "route_not_found").await;
    // A route's path with a method it does not have: 405, and `Allow` names those it has.
    for (method, path, allow) in [
        (
            reqwest::Method::DELETE,
            "/api/v1/runs".to_string(),
            "POST, GET",
        ),
        (
            reqwest::Method::PUT,
            format!("/api/v1/runs/{missing}"),
            "GET",
        ),
        (reqwest::Method::TRACE, "/api/v1/slots".to_string(), "GET"),
        (
            reqwest::Method::GET,
            format!("/api/v1/runs/{missing}/cancel"),
            "POST",
        ),
    ] {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .expect("answered");
        let allowed = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        let detail = assert_problem(response, 405, "method_not_allowed").await;
        assert!(detail.contains(&path), "{detail}");
    }
    let (status, health) = app.get_json("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
}

#[actix_web::test]
async fn higher_priority_runs_leave_the_queue_first() {
    let app = spawn_app_with(|c| c.train.cpu_slots = 1).await;
    let first = app.submit_ok(&long_spec("holds-the-slot")).await;
    app.wait_for(&first, |r| r["state"] == "running").await;
    let low = app.submit_ok(&quick_spec("low")).await;
    let mut urgent = quick_spec("urgent");
    urgent["priority"] = json!(5);
    let urgent = app.submit_ok(&urgent).await;
    assert_eq!(app.run(&urgent).await["queue_position"], 1);
    assert_eq!(app.run(&low).await["queue_position"], 2);
    let (_, queued) = app.get_json("/api/v1/runs?state=queued").await;
    assert_eq!(queued.as_array().expect("list").len(), 2);
    let response = app
        .client
        .get(format!("{}/api/v1/runs?state=sleeping", app.address))
        .send()
        .await
        .expect("answered");
    assert_problem(response, 400, "invalid_query").await;

    assert_eq!(
        app.post(&format!("/api/v1/runs/{first}/cancel"))
            .await
            .status(),
        200
    );
    app.wait_for(&low, |r| r["state"] == "completed").await;
    let claimed = |events: Vec<Value>| {
        events
            .iter()
            .find(|e| e["type"] == "SlotClaimed")
            .and_then(|e| e["seq"].as_u64())
            .expect("claimed")
    };
    assert!(claimed(app.events(&urgent).await) < claimed(app.events(&low).await));
}

#[actix_web::test]
async fn a_run_needing_two_slots_claims_both_together_or_waits_holding_none() {
    let app = spawn_app_with(|c| {
        c.train.cpu_slots = 2;
        c.runs.allow_commands = true;
    })
    .await;
    let blocker = app.submit_ok(&long_spec("holds-one-slot")).await;
    app.wait_for(&blocker, |r| r["state"] == "running").await;

    // The built-in loop trains on one device: it never claims two.
    let mut one_device = quick_spec("two-for-tch");
    one_device["slots"] = json!(2);
    let detail = assert_problem(app.submit(&one_device).await, 422, "invalid_spec").await;
    assert!(
        detail.starts_with("slots:") && detail.contains("\"kind\": \"command\""),
        "{detail}"
    );

    let gang = json!({"name": "needs-two", "kind": "command", "argv": ["true"], "slots": 2});
    let gang = app.submit_ok(&gang).await;
    let (_, slots) = app.get_json("/api/v1/slots").await;
    let held: Vec<&Value> = slots
        .as_array()
        .expect("slots")
        .iter()
        .filter(|s| s["run_id"] == gang.as_str())
        .collect();
    assert!(held.is_empty(), "no partial claim while waiting: {slots}");
    assert_eq!(app.run(&gang).await["state"], "queued");

    let too_many = json!({"name": "needs-three", "kind": "command", "argv": ["true"], "slots": 3});
    let detail = assert_problem(app.submit(&too_many).await, 422, "invalid_spec").await;
    assert!(detail.starts_with("slots:"), "{detail}");

    assert_eq!(
        app.post(&format!("/api/v1/runs/{blocker}/cancel"))
            .await
            .status(),
        200
    );
    let done = app.wait_for(&gang, |r| r["state"] == "completed").await;
    assert_eq!(done["slots"], json!([]));
    let history = types(&app.events(&gang).await);
    assert_eq!(history[..3], ["RunSubmitted", "SlotClaimed", "SlotClaimed"]);
    assert_eq!(
        history[history.len() - 2..],
        ["SlotReleased", "SlotReleased"]
    );
    let (_, slots) = app.get_json("/api/v1/slots").await;
    assert!(slots
        .as_array()
        .expect("slots")
        .iter()
        .all(|s| s["run_id"].is_null()));
}
