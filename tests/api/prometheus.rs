//! `GET /metrics`: the Prometheus text exposition, its figures against what the server
//! did, live-run series that go away when the run ends, and auth.

use runyard::auth::{create_token, Role};

use crate::helpers::{long_spec, quick_spec, spawn_app_with, TestApp, TIMEOUT};

/// Time between two scrapes while waiting for a value.
const POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// The scrape, checked to be the text format.
async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let mut request = app.client.get(format!("{}/metrics", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
    (status, response.text().await.expect("body"))
}

/// The value of one series (`name{labels}` exactly as exposed, labels sorted by name).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes until `series` satisfies `ok` (a value of `None`: the series is absent).
async fn wait_metric(app: &TestApp, series: &str, ok: impl Fn(Option<f64>) -> bool) -> String {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let (status, text) = scrape(app, None).await;
            assert_eq!(status, 200, "{text}");
            if ok(value(&text, series)) {
                return text;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{series} never got the expected value"))
}

#[actix_web::test]
async fn metrics_show_what_the_server_did_and_live_runs_only_while_they_live() {
    let app = spawn_app_with(|c| c.train.cpu_slots = 1).await;
    let done = app.submit_ok(&quick_spec("scraped")).await;
    app.wait_for(&done, |r| r["state"] == "completed").await;
    let (status, _) = app
        .get_json("/api/v1/runs/00000000-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, 404);

    let (status, text) = scrape(&app, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        value(&text, r#"runyard_runs{state="completed"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, r#"runyard_runs{state="running"}"#), Some(0.0));
    assert_eq!(value(&text, "runyard_queue_depth"), Some(0.0));
    assert_eq!(value(&text, r#"runyard_slots{state="free"}"#), Some(1.0));
    assert!(
        value(&text, "runyard_queue_wait_seconds_count") >= Some(1.0),
        "{text}"
    );
    // Submit, claim, start, epochs, checkpoints, the end: several appends and flushes.
    assert!(value(&text, "runyard_journal_append_seconds_count") >= Some(5.0));
    assert!(value(&text, "runyard_journal_flush_events_count") >= Some(1.0));
    assert!(value(&text, "runyard_journal_events_total") >= Some(5.0));
    assert!(value(&text, "runyard_ticker_lag_seconds_count") >= Some(1.0));
    assert!(value(&text, "runyard_replay_seconds").is_some());
    assert_eq!(value(&text, "runyard_journal_degraded"), Some(0.0));
    assert!(
        value(
            &text,
            r#"runyard_http_requests_total{method="GET",route="/api/v1/runs/{id}",status="200"}"#
        ) >= Some(1.0),
        "route patterns, not raw paths: {text}"
    );
    assert_eq!(
        value(
            &text,
            r#"runyard_http_requests_total{method="GET",route="/api/v1/runs/{id}",status="404"}"#
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("route=\"/api/v1/runs/0"),
        "no raw paths as labels"
    );
    assert!(value(&text, "process_resident_memory_bytes") > Some(0.0));
    assert!(
        !text.contains(&done),
        "a run that ended has no series: {text}"
    );

    // A live run has its series while it trains, and a stream is counted while open.
    let live = app.submit_ok(&long_spec("scraped-live")).await;
    let samples =
        format!(r#"runyard_run_samples_per_second{{name="scraped-live",run_id="{live}"}}"#);
    let text = wait_metric(&app, &samples, |v| v > Some(0.0)).await;
    assert!(value(
        &text,
        &format!(r#"runyard_run_loss{{name="scraped-live",run_id="{live}"}}"#)
    )
    .is_some());
    assert_eq!(value(&text, r#"runyard_runs{state="running"}"#), Some(1.0));
    assert_eq!(value(&text, "runyard_slot_utilization"), Some(1.0));
    // A second run waits for the one slot.
    let queued = app.submit_ok(&long_spec("scraped-queued")).await;
    let text = wait_metric(&app, "runyard_queue_depth", |v| v == Some(1.0)).await;
    assert!(value(&text, "runyard_queue_oldest_wait_seconds") >= Some(0.0));
    assert!(app
        .post(&format!("/api/v1/runs/{queued}/cancel"))
        .await
        .status()
        .is_success());
    let stream = app
        .client
        .get(format!("{}/api/v1/runs/{live}/stream", app.address))
        .send()
        .await
        .expect("stream opened");
    wait_metric(&app, "runyard_sse_clients", |v| v == Some(1.0)).await;
    drop(stream);
    wait_metric(&app, "runyard_sse_clients", |v| v == Some(0.0)).await;

    assert!(app
        .post(&format!("/api/v1/runs/{live}/cancel"))
        .await
        .status()
        .is_success());
    app.wait_for(&live, |r| r["state"] == "cancelled").await;
    let text = wait_metric(&app, &samples, |v| v.is_none()).await;
    assert!(!text.contains(&live), "the ended run's series are gone");
}

#[actix_web::test]
async fn metrics_need_a_read_token_when_tokens_are_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens.toml");
    let read = create_token(&file, "scraper", Role::Read).expect("token");
    let app = spawn_app_with(|config| config.auth.tokens_file = Some(file.clone())).await;
    let (status, body) = scrape(&app, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = scrape(&app, Some("ry_not_a_token")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = scrape(&app, Some(&read)).await;
    assert_eq!(status, 200);
    // The refused scrapes were counted, as the unauthorized answers they were.
    assert_eq!(
        value(
            &body,
            r#"runyard_http_requests_total{method="GET",route="/metrics",status="401"}"#
        ),
        Some(2.0),
        "{body}"
    );
}

#[actix_web::test]
async fn a_live_sweeps_trials_are_counted_by_status_until_it_ends() {
    let app = spawn_app_with(|_| {}).await;
    let sweep = serde_json::json!({
        "name": "metered",
        "base": long_spec("metered"),
        "space": {"optimizer.lr": {"choice": [0.01, 0.02]}},
        "searcher": {"kind": "random", "max_trials": 2, "max_concurrent": 1}
    });
    let response = app
        .client
        .post(format!("{}/api/v1/sweeps", app.address))
        .json(&sweep)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 201);
    let id = response.json::<serde_json::Value>().await.expect("sweep")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let series = |status: &str| {
        format!("runyard_sweep_trials{{name=\"metered\",status=\"{status}\",sweep=\"{id}\"}}")
    };
    let text = wait_metric(&app, &series("training"), |v| v == Some(1.0)).await;
    assert_eq!(value(&text, &series("finished")), Some(0.0), "{text}");
    assert_eq!(value(&text, "runyard_sweeps_live"), Some(1.0), "{text}");
    let cancelled = app.post(&format!("/api/v1/sweeps/{id}/cancel")).await;
    assert_eq!(cancelled.status(), 200);
    let text = wait_metric(&app, &series("training"), |v| v.is_none()).await;
    assert_eq!(value(&text, "runyard_sweeps_live"), Some(0.0), "{text}");
    // The trials' training threads end before the test does.
    let (_, sweep) = app.get_json(&format!("/api/v1/sweeps/{id}")).await;
    for trial in sweep["trials"].as_array().expect("trials") {
        app.wait_ended(trial["run_id"].as_str().expect("run")).await;
    }
}
