//! The Python helper's own tests (`python/tests/test_report.py`, standard library
//! only), run with the system's `python3 -m unittest` as part of this suite: the
//! helper (`runyard.report`, also importable as `runyard_report`) writes the protocol
//! the server reads, so it is held to it on every `cargo test`, and running it where
//! no HTTP library is installed shows it needs none.

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_helper_passes_its_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let output = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "discover",
            "-v",
            "-s",
            "tests",
            "-p",
            "test_report.py",
        ])
        .current_dir(&dir)
        // Run as it would outside runyard, whatever this process's environment says.
        .env_remove("RUNYARD_PROGRESS_FD")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs (it is needed for the Python helper's tests)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "python3 -m unittest failed in {}:\n{text}",
        dir.display()
    );
    assert!(!text.contains("Ran 0 tests"), "no test ran:\n{text}");
}
