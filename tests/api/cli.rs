//! The binary's answers to bad configuration: one line naming the key, non-zero exit,
//! no server started.

use std::process::Command;

fn serve_with(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

#[test]
fn an_out_of_range_value_names_its_key_and_the_server_does_not_start() {
    let (ok, stderr) = serve_with(&[("RUNYARD__TRAIN__CPU_SLOTS", "0")], &[]);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("train.cpu_slots"), "{stderr}");
}

#[test]
fn an_unknown_key_or_missing_config_file_is_refused() {
    let (ok, stderr) = serve_with(&[("RUNYARD__TRAIN__GPUS", "2")], &[]);
    assert!(!ok);
    assert!(stderr.contains("gpus"), "{stderr}");
    let (ok, stderr) = serve_with(&[], &["--config", "/nonexistent/runyard.toml"]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/runyard.toml"), "{stderr}");
}
