//! The OpenAPI document says what the server checks: schemathesis (`st run … -c all`)
//! sends the real server schema-valid requests that must be taken, schema-violating
//! ones that must be refused, methods a route does not have (`405` with `Allow`), and
//! checks every answer against its documented schema. The stream routes, which never
//! end, are left out. Bounded in examples and time; deterministic generation.
//!
//! The positive-data check is schemathesis's own with one allowance
//! (`tests/schemathesis/hooks.py`): a refusal whose problem names a field of the
//! document's `x-stated-elsewhere` (a rule between fields, or a fact of the server's)
//! passes. schemathesis lives in `<target>/st-venv` (`make schemathesis`); without it
//! the test prints `SKIPPED`, unless `RUNYARD_REQUIRE_SCHEMATHESIS=1` (as `make test`
//! sets), where it fails naming what is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{poll_until, spawn_app};

/// `<target>/st-venv/bin/st`.
fn st() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(t)
            }
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("st-venv/bin/st")
}

#[actix_web::test]
async fn schemathesis_with_every_check_finds_nothing() {
    let st = st();
    if !st.exists() {
        let missing = format!("{} is missing (run `make schemathesis`)", st.display());
        assert!(
            std::env::var("RUNYARD_REQUIRE_SCHEMATHESIS").as_deref() != Ok("1"),
            "RUNYARD_REQUIRE_SCHEMATHESIS=1 but {missing}"
        );
        eprintln!("SKIPPED: schemathesis_with_every_check_finds_nothing: {missing}");
        return;
    }
    let app = spawn_app().await;
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let url = format!("{}/api/v1/openapi.json", app.address);
    let reports = tempfile::tempdir().expect("temp dir");
    let reports_dir = reports.path().to_path_buf();
    let output = actix_web::rt::task::spawn_blocking(move || {
        Command::new(&st)
            .args(["run", &url, "--checks", "all"])
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--exclude-path-regex", "stream"])
            .args(["--max-examples", "10", "--max-time", "150"])
            .args([
                "--generation-deterministic",
                "--workers",
                "1",
                "--no-shrink",
            ])
            .args(["--output-truncate", "false", "--wait-for-schema", "30"])
            .arg("--report-dir")
            .arg(&reports_dir)
            .env("SCHEMATHESIS_HOOKS", "hooks")
            .env("PYTHONPATH", &hooks)
            .env("NO_COLOR", "1")
            .current_dir(&reports_dir)
            .output()
    })
    .await
    .expect("joined")
    .expect("st runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Whatever it submitted ends before the server does.
    stop_everything(&app.client, &app.address).await;

    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    assert!(
        text.contains("passed") && !text.contains(" 0 generated"),
        "schemathesis ran nothing:\n{text}"
    );
}

/// Cancels every sweep and run still live, and waits until each has ended.
async fn stop_everything(client: &reqwest::Client, address: &str) {
    let get = |path: String| {
        let client = client.clone();
        async move {
            let response = client.get(path).send().await.expect("answered");
            response.json::<Value>().await.expect("json")
        }
    };
    let sweeps = get(format!("{address}/api/v1/sweeps")).await;
    for sweep in sweeps.as_array().into_iter().flatten() {
        let id = sweep["id"].as_str().unwrap_or_default();
        let _ = client
            .post(format!("{address}/api/v1/sweeps/{id}/cancel"))
            .send()
            .await;
    }
    poll_until("every run ended", Duration::from_millis(100), || async {
        let runs = get(format!("{address}/api/v1/runs")).await;
        let mut live = 0;
        for run in runs.as_array().into_iter().flatten() {
            let state = run["state"].as_str().unwrap_or_default();
            if !matches!(state, "completed" | "failed" | "cancelled") {
                live += 1;
                let id = run["id"].as_str().unwrap_or_default();
                let _ = client
                    .post(format!("{address}/api/v1/runs/{id}/cancel"))
                    .send()
                    .await;
            }
        }
        (live == 0).then_some(())
    })
    .await;
}
