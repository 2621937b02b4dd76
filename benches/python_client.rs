//! What the Python client costs on top of the HTTP it speaks: one tiny run (256
//! synthetic samples, one epoch) from submit to completed, driven through
//! `runyard.Client` (`submit`, then `wait`) and through raw HTTP with Python's own
//! `http.client` doing the same requests, in one interpreter
//! (`benches/python_client.py`, timed inside it, so start-up and imports cancel out),
//! against a real server (one CPU slot), rounds alternating which arm goes first.
//!
//! - `python_client_submit_to_completed_ms`, `raw_http_submit_to_completed_ms`: the
//!   median of each arm, in ms.
//! - `python_client_submit_to_completed_overhead_ms`: the ratio of those medians,
//!   client / raw (unit `ratio`; target ≤ 1.1), the figure issue 18 names.
//! - `python_client_minus_raw_http_submit_to_completed_ms`: their difference, in ms.
//!
//! It needs the client's venv (`<target>/py-venv`, `make python-client`; `make bench`
//! makes it first). Without `--bench` (`cargo test --benches`) one round of each arm
//! runs and nothing is written; without the venv that smoke run says `SKIPPED` and
//! why, unless `RUNYARD_REQUIRE_PYTHON_CLIENT=1` (as `make test` sets), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Counted rounds of each arm in a real run, and in the smoke run.
const ROUNDS: usize = 40;
const SMOKE_ROUNDS: usize = 1;

fn main() {
    let mode = common::mode();
    if mode == common::Mode::List {
        return;
    }
    let bench = mode == common::Mode::Bench;
    let python = common::target_dir().join("py-venv/bin/python");
    if !python.exists() {
        let missing = format!("{} is missing", python.display());
        let required = std::env::var("RUNYARD_REQUIRE_PYTHON_CLIENT").as_deref() == Ok("1");
        assert!(
            !bench && !required,
            "python_client bench: {missing}: `make python-client` makes it"
        );
        println!("SKIPPED: python_client bench: {missing} (`make python-client` makes it)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let served = common::server::serve(dir.path());
    let base = served.base.clone();
    common::server::client_thread(move |http| {
        Box::pin(async move { common::server::wait_ready(&http, &base).await })
    })
    .join()
    .expect("server ready");
    let times = drive(
        &python,
        &served.base,
        if bench { ROUNDS } else { SMOKE_ROUNDS },
    );
    served.stop();

    let client = median(&times, "client_ms");
    let raw = median(&times, "raw_ms");
    if bench {
        let mut figures = common::Figures::echoed(3);
        figures.put("python_client_submit_to_completed_ms", client, "ms");
        figures.put("raw_http_submit_to_completed_ms", raw, "ms");
        figures.put(
            "python_client_submit_to_completed_overhead_ms",
            client / raw,
            "ratio",
        );
        figures.put(
            "python_client_minus_raw_http_submit_to_completed_ms",
            client - raw,
            "ms",
        );
        figures.write("python_client");
    } else {
        println!(
            "python_client bench: smoke run ok (client {client:.1} ms, raw HTTP {raw:.1} ms); \
             no figures written (no --bench)"
        );
    }
}

/// Runs the timing script against `base`; answers its `{"client_ms", "raw_ms"}`.
fn drive(python: &Path, base: &str, rounds: usize) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python)
        .arg(root.join("benches/python_client.py"))
        .args([base, &rounds.to_string()])
        // The working tree's package, whatever the venv last installed.
        .env("PYTHONPATH", root.join("python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "benches/python_client.py failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("a line of figures");
    serde_json::from_str(last).expect("the script's JSON")
}

/// The median of the script's list `name`.
fn median(times: &Value, name: &str) -> f64 {
    let mut values: Vec<f64> = times[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} in {times}"))
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    assert!(!values.is_empty(), "no {name} times");
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
