//! The progress history: `GET /api/v1/runs/{id}/metrics`.

use serde_json::Value;

use crate::helpers::{assert_problem, quick_spec, spawn_app, TestApp};

/// `GET /api/v1/runs/{id}/metrics?{query}`, expecting `200`.
async fn metrics(app: &TestApp, id: &str, query: &str) -> Value {
    let (status, body) = app
        .get_json(&format!("/api/v1/runs/{id}/metrics?{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn steps(body: &Value) -> Vec<u64> {
    body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["step"].as_u64().expect("step"))
        .collect()
}

#[actix_web::test]
async fn a_finished_run_has_a_history_up_to_its_last_step() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("history")).await;
    app.wait_for(&id, |r| r["state"] == "completed").await;
    // The epoch-end checkpoint of the last epoch names the run's last step.
    let events = app.events(&id).await;
    let last_step = events
        .iter()
        .rev()
        .find(|e| e["type"] == "CheckpointSaved")
        .and_then(|e| e["data"]["step"].as_u64())
        .expect("a checkpoint with its step");

    let loss = metrics(&app, &id, "name=loss").await;
    assert_eq!(loss["run_id"], id.as_str());
    assert_eq!(loss["name"], "loss");
    let points = loss["points"].as_array().expect("points");
    assert!(!points.is_empty(), "{loss}");
    let loss_steps = steps(&loss);
    assert!(
        loss_steps.windows(2).all(|w| w[0] < w[1]),
        "steps increase: {loss_steps:?}"
    );
    assert_eq!(
        loss_steps.last(),
        Some(&last_step),
        "the final step is there"
    );
    for point in points {
        let value = point["value"].as_f64().expect("a number");
        assert!(value.is_finite() && value >= 0.0, "{point}");
        let time = point["time"].as_str().expect("a time");
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "RFC 3339: {time}"
        );
    }
    assert_eq!(loss["total"].as_u64(), Some(points.len() as u64));
    assert_eq!(loss["stride"], 1, "a short run keeps every sampled step");
    assert_eq!(loss["from"], Value::Null);

    // `loss` is the default; empty parameters count as absent.
    let default = metrics(&app, &id, "from=&to=&points=").await;
    assert_eq!(default["name"], "loss");
    assert_eq!(default["points"], loss["points"]);

    let percent = metrics(&app, &id, "name=percent").await;
    let last = percent["points"]
        .as_array()
        .and_then(|p| p.last())
        .expect("a last point");
    assert_eq!(last["step"], last_step);
    assert_eq!(last["value"], 100.0);
    let epoch = metrics(&app, &id, "name=epoch").await;
    let last = epoch["points"]
        .as_array()
        .and_then(|p| p.last())
        .expect("a last point");
    assert_eq!(last["value"], 3.0, "three epochs done");

    let few = metrics(&app, &id, "name=loss&points=5").await;
    let few_steps = steps(&few);
    assert!(!few_steps.is_empty() && few_steps.len() <= 5, "{few}");
    assert_eq!(few_steps.last(), Some(&last_step), "the newest point stays");
    assert!(few_steps.iter().all(|s| loss_steps.contains(s)));
    assert_eq!(few["total"], loss["total"]);

    let tail = metrics(&app, &id, &format!("from={last_step}&to={last_step}")).await;
    assert_eq!(steps(&tail), [last_step]);
    assert_eq!(tail["from"], last_step);
    let none = metrics(&app, &id, &format!("from={}", last_step + 1)).await;
    assert_eq!(none["points"], Value::Array(vec![]));
    assert_eq!(none["total"], 0);
}

#[actix_web::test]
async fn bad_queries_and_unknown_runs_are_problems() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("history errors")).await;
    let get = |query: String| {
        let url = format!("{}/api/v1/runs/{query}", app.address);
        let client = app.client.clone();
        async move { client.get(url).send().await.expect("answered") }
    };

    let unknown = "01930000-0000-7000-8000-000000000000";
    assert_problem(
        get(format!("{unknown}/metrics")).await,
        404,
        "run_not_found",
    )
    .await;
    assert_problem(get("not-a-run/metrics".into()).await, 404, "run_not_found").await;

    let detail = assert_problem(
        get(format!("{id}/metrics?name=accuracy")).await,
        400,
        "invalid_query",
    )
    .await;
    assert!(
        detail.contains("accuracy") && detail.contains("loss, samples_per_sec, percent"),
        "{detail}"
    );
    for (query, param) in [
        ("from=abc", "from"),
        ("to=-1", "to"),
        ("from=10&to=9", "from"),
        ("points=0", "points"),
        ("points=many", "points"),
        ("limit=5", "limit"),
    ] {
        let detail = assert_problem(
            get(format!("{id}/metrics?{query}")).await,
            400,
            "invalid_query",
        )
        .await;
        assert!(detail.contains(param), "{query}: {detail}");
    }
}
