//! The Python client package (`python/runyard`) against real servers: its pytest
//! suite (`python/tests`) runs in the virtual environment `make test` makes
//! (`scripts/setup-python-client.sh`: `pip install ./python[test]` into
//! `<target>/py-venv`), with `RUNYARD_URL` pointing at a server of this process (one
//! CPU slot, command runs allowed) and `RUNYARD_AUTH_URL` at a second one with tokens.
//!
//! The working tree's `python/` comes first on `PYTHONPATH`, so the suite tests the
//! sources as they are now, whatever the venv last installed.
//!
//! Without the venv the test says `SKIPPED` and why, unless
//! `RUNYARD_REQUIRE_PYTHON_CLIENT=1` (as `make test` sets), where it fails naming it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use runyard::auth::{create_token, Role};

use crate::helpers::spawn_app_with;

/// A safety net for the whole suite (a few dozen tiny runs on one slot).
const SUITE_TIMEOUT: Duration = Duration::from_secs(900);

/// `<target>/py-venv/bin/python`, where `scripts/setup-python-client.sh` puts it.
fn venv_python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    std::path::absolute(target.join("py-venv/bin/python")).expect("absolute path")
}

/// The venv's Python, or `None` (after saying why) when it is missing and not
/// required.
fn python_or_skip(test: &str) -> Option<PathBuf> {
    let python = venv_python();
    if python.exists() {
        return Some(python);
    }
    let missing = format!("{} is missing", python.display());
    if std::env::var("RUNYARD_REQUIRE_PYTHON_CLIENT").as_deref() == Ok("1") {
        panic!(
            "RUNYARD_REQUIRE_PYTHON_CLIENT=1 but {missing}: `make python-client` (or \
             `bash scripts/setup-python-client.sh`) makes it"
        );
    }
    println!(
        "SKIPPED: {test}: {missing} (`make python-client` installs the client and pytest \
         into it)"
    );
    None
}

/// The number before `word` in pytest's summary line (`12 passed, 1 skipped in 3.4s`).
fn count(summary: &str, word: &str) -> usize {
    let words: Vec<&str> = summary
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .find(|pair| pair[1] == word)
        .and_then(|pair| pair[0].parse().ok())
        .unwrap_or(0)
}

#[actix_web::test]
async fn the_python_client_passes_its_tests_against_a_real_server() {
    let Some(python) = python_or_skip("the_python_client_passes_its_tests_against_a_real_server")
    else {
        return;
    };
    let app = spawn_app_with(|config| {
        config.train.cpu_slots = 1;
        config.runs.allow_commands = true;
    })
    .await;
    let tokens = tempfile::tempdir().expect("temp dir");
    let file = tokens.path().join("tokens.toml");
    let read = create_token(&file, "py-reader", Role::Read).expect("token");
    let write = create_token(&file, "py-writer", Role::Write).expect("token");
    let auth_app = spawn_app_with(|config| {
        config.train.cpu_slots = 1;
        config.auth.tokens_file = Some(file.clone());
    })
    .await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Async: the servers' actors run on this test's thread, which must not block.
    let run = tokio::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "python/tests",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(root)
        .env("RUNYARD_URL", &app.address)
        .env("RUNYARD_DATA_DIR", app.data_dir())
        .env("RUNYARD_AUTH_URL", &auth_app.address)
        .env("RUNYARD_READ_TOKEN", &read)
        .env("RUNYARD_WRITE_TOKEN", &write)
        .env("PYTHONPATH", root.join("python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("RUNYARD_PROGRESS_FD")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SUITE_TIMEOUT, run)
        .await
        .expect("the pytest suite ended in time")
        .expect("the venv's python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "pytest failed:\n{text}");
    let summary = text
        .lines()
        .rev()
        .find(|line| line.contains(" passed"))
        .unwrap_or_else(|| panic!("no pytest summary line:\n{text}"));
    assert!(count(summary, "passed") >= 20, "too few tests ran:\n{text}");
    assert_eq!(count(summary, "skipped"), 0, "a test was skipped:\n{text}");
    println!("{summary}");
}
