//! One server per data directory: a second `runyard serve`, or a journal command, on a
//! directory a server uses is refused at once in one line naming the directory and the
//! holder's PID, and the first server keeps serving.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::{client, quick_spec, wait_ready};
use crate::server::Server;

/// Runs the binary to its end: (success, stdout, stderr, how long it took).
fn runyard(args: &[&str], data_dir: &Path) -> (bool, String, String, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

#[actix_web::test]
async fn a_second_server_or_journal_command_on_a_live_directory_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let first = Server::start(&data_dir, "first.log");
    let http = client();
    wait_ready(&http, &first.address).await;
    let expected = format!(
        "runyard: {} is in use by runyard pid {}; stop it or choose another --data-dir",
        data_dir.display(),
        first.pid()
    );

    for args in [
        &["serve", "--bind", "127.0.0.1:0"][..],
        &["journal", "verify"][..],
        &["journal", "export"][..],
    ] {
        let (ok, stdout, stderr, _) = runyard(args, &data_dir);
        assert!(!ok, "`runyard {}` ran on a live directory", args.join(" "));
        assert_eq!(stderr.trim(), expected, "runyard {}", args.join(" "));
        assert!(stdout.is_empty(), "runyard {}: {stdout}", args.join(" "));
    }

    // The first server is untouched: it still takes a run and answers for it.
    let answer = http
        .post(format!("{}/api/v1/runs", first.address))
        .json(&quick_spec("after-the-refusals"))
        .send()
        .await
        .expect("submit");
    assert_eq!(answer.status(), 201);
    first.kill();

    // Once it is gone (even by SIGKILL), the directory is free.
    let (ok, stdout, stderr, _) = runyard(&["journal", "verify"], &data_dir);
    assert!(ok, "verify after the holder died: {stdout}{stderr}");
}
