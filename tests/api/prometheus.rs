//! `GET /metrics`: the Prometheus text exposition, its figures against what the server
//! did, live-run series that go away when the run ends, and auth; Prometheus's own
//! `promtool` on the exposition and on the scrape config and alert rules shipped in
//! `deploy/prometheus/`.
//!
//! Without promtool the promtool test prints `SKIPPED` and returns, unless
//! `RUNYARD_REQUIRE_PROMTOOL=1` (as `make test` sets), where it fails naming what is
//! missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use runyard::auth::{create_token, Role};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

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

#[actix_web::test]
async fn a_live_run_that_stops_making_progress_is_shown_stalled_until_it_goes_on() {
    let app = spawn_app_with(|c| c.runs.allow_commands = true).await;
    let gate = tempfile::tempdir().expect("temp dir");
    let go_on = gate.path().join("go-on");
    // One sign of life, silence until the gate opens, then a heartbeat every 0.1 s.
    let script = r#"
        echo '{"type":"heartbeat"}' >&3
        while [ ! -e "$GATE" ]; do sleep 0.05; done
        while true; do echo '{"type":"heartbeat"}' >&3; sleep 0.1; done
    "#;
    let spec = json!({
        "name": "stuck",
        "kind": "command",
        "argv": ["sh", "-c", script],
        "env": {"GATE": go_on.display().to_string()},
        "stall_after_secs": 1.0,
    });
    let id = app.submit_ok(&spec).await;
    let series = format!(r#"runyard_run_stalled{{name="stuck",run_id="{id}"}}"#);
    let text = wait_metric(&app, &series, |v| v == Some(1.0)).await;
    assert_eq!(value(&text, r#"runyard_runs{state="running"}"#), Some(1.0));
    assert_eq!(app.run(&id).await["stalled"], true);

    std::fs::write(&go_on, b"").expect("gate opened");
    wait_metric(&app, &series, |v| v == Some(0.0)).await;
    assert!(app
        .post(&format!("/api/v1/runs/{id}/cancel"))
        .await
        .status()
        .is_success());
    app.wait_for(&id, |r| r["state"] == "cancelled").await;
    wait_metric(&app, &series, |v| v.is_none()).await;
}

/// Where the shipped Prometheus files are.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

/// Prometheus's promtool: `RUNYARD_PROMTOOL`, else `target/promtool/promtool` (where
/// `make promtool` puts it), else one on `PATH`.
fn find_promtool() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("RUNYARD_PROMTOOL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("RUNYARD_PROMTOOL={} is not a file", path.display()))
        };
    }
    // This binary is TARGET/debug/deps/api-HASH: the target directory is three up,
    // wherever CARGO_TARGET_DIR put it.
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this test: {e}"))?;
    let in_target = exe
        .ancestors()
        .nth(3)
        .map(|target| target.join("promtool/promtool"));
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("promtool"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    in_target
        .into_iter()
        .chain(on_path)
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| "promtool is in neither target/promtool/ nor PATH".to_string())
}

/// promtool for test `test`, or `None` after saying why it is skipped; with
/// `RUNYARD_REQUIRE_PROMTOOL=1` a missing promtool fails it instead.
fn promtool_or_skip(test: &str) -> Option<PathBuf> {
    match find_promtool() {
        Ok(found) => Some(found),
        Err(missing) if std::env::var("RUNYARD_REQUIRE_PROMTOOL").as_deref() == Ok("1") => {
            panic!("RUNYARD_REQUIRE_PROMTOOL=1 but {missing}: `make promtool` fetches it")
        }
        Err(missing) => {
            println!("SKIPPED: {test}: {missing} (`make promtool` fetches it)");
            None
        }
    }
}

/// Runs `promtool ARGS` in `deploy/prometheus/` with `input` on its stdin: whether it
/// exited 0, and everything it printed (stdout, then stderr).
async fn promtool(bin: &Path, args: &[&str], input: &[u8]) -> (bool, String) {
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .current_dir(deploy_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promtool starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("input written");
    drop(stdin);
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("promtool ended in time")
        .expect("promtool ran");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The lines of promtool's output that report something, not success: `check config`
/// and `check rules` name each file they check and say `SUCCESS`.
fn problems(printed: &str) -> Vec<&str> {
    printed
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Checking ")
                && !l.starts_with("SUCCESS")
                && l != &"Unit Testing:  alerts_test.yml"
        })
        .collect()
}

/// The metric families a scrape declares (`# TYPE` lines).
fn families(text: &str) -> BTreeSet<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect()
}

/// The `runyard_*` metrics the alert rules read, as families (a histogram's
/// `_bucket`, `_sum` and `_count` are its family).
fn metrics_in_rules(rules: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = rules;
    while let Some(at) = rest.find("runyard_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(family.to_string());
    }
    names
}

#[actix_web::test]
async fn promtool_finds_no_problem_in_the_metrics_nor_in_the_shipped_config_and_rules() {
    let Some(bin) = promtool_or_skip(
        "promtool_finds_no_problem_in_the_metrics_nor_in_the_shipped_config_and_rules",
    ) else {
        return;
    };
    // One slot, and the Slurm executor on (no job is sent to it) for its families.
    let shared = tempfile::tempdir().expect("temp dir");
    let shared_dir = shared.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.train.cpu_slots = 1;
        let slurm = &mut c.executors.slurm;
        slurm.enabled = true;
        slurm.shared_dir = Some(shared_dir);
        slurm.worker_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_runyard")));
    })
    .await;

    // Every family with samples: a completed run, a live one, a queued one, a sweep
    // whose trial waits for the slot, an event stream opened and closed, answers of
    // several statuses.
    let done = app.submit_ok(&quick_spec("promtool-done")).await;
    app.wait_for(&done, |r| r["state"] == "completed").await;
    let live = app.submit_ok(&long_spec("promtool-live")).await;
    let samples =
        format!(r#"runyard_run_samples_per_second{{name="promtool-live",run_id="{live}"}}"#);
    wait_metric(&app, &samples, |v| v > Some(0.0)).await;
    let queued = app.submit_ok(&long_spec("promtool-queued")).await;
    let sweep = json!({
        "name": "promtool-sweep",
        "base": long_spec("promtool-sweep"),
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
    let sweep = response.json::<serde_json::Value>().await.expect("sweep")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let stream = app
        .client
        .get(format!("{}/api/v1/runs/{live}/stream", app.address))
        .send()
        .await
        .expect("stream opened");
    wait_metric(&app, "runyard_sse_clients", |v| v == Some(1.0)).await;
    drop(stream);
    let (status, _) = app.get_json("/api/v1/runs/not-a-run").await;
    assert_eq!(status, 404);
    let text = wait_metric(
        &app,
        &format!(
            r#"runyard_sweep_trials{{name="promtool-sweep",status="training",sweep="{sweep}"}}"#
        ),
        |v| v == Some(1.0),
    )
    .await;
    assert_eq!(value(&text, "runyard_queue_depth"), Some(2.0), "{text}");
    assert_eq!(
        value(
            &text,
            &format!(r#"runyard_run_stalled{{name="promtool-live",run_id="{live}"}}"#)
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value(&text, "runyard_slurm_workers_unreachable"), Some(0.0));

    // The exposition as Prometheus reads it: no lint problem, not even a warning.
    let (ok, printed) = promtool(&bin, &["check", "metrics"], text.as_bytes()).await;
    assert!(ok && printed.trim().is_empty(), "{printed}\n---\n{text}");

    // The shipped scrape config (with the rules it loads), the rules, and the rules'
    // unit tests: each alert fires on a series that should trigger it.
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
        &["test", "rules", "alerts_test.yml"],
    ] {
        let (ok, printed) = promtool(&bin, args, b"").await;
        assert!(ok, "promtool {}: {printed}", args.join(" "));
        assert_eq!(
            problems(&printed),
            Vec::<&str>::new(),
            "promtool {}: {printed}",
            args.join(" ")
        );
    }

    // The rules read only metrics the server exports.
    let rules = std::fs::read_to_string(deploy_dir().join("alerts.yml")).expect("alerts.yml");
    let exported = families(&text);
    let unknown: Vec<_> = metrics_in_rules(&rules)
        .into_iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(unknown.is_empty(), "not exported: {unknown:?}\n{text}");

    // Every run's thread ends before the test does.
    assert_eq!(
        app.post(&format!("/api/v1/sweeps/{sweep}/cancel"))
            .await
            .status(),
        200
    );
    for id in [&queued, &live] {
        assert!(app
            .post(&format!("/api/v1/runs/{id}/cancel"))
            .await
            .status()
            .is_success());
    }
    let (_, sweep) = app.get_json(&format!("/api/v1/sweeps/{sweep}")).await;
    for trial in sweep["trials"].as_array().expect("trials") {
        app.wait_ended(trial["run_id"].as_str().expect("run")).await;
    }
    app.wait_ended(&live).await;
    app.wait_ended(&queued).await;
}
