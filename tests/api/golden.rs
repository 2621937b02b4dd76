//! Golden journals: logs exported by a released version and committed under
//! `tests/golden/`. Every later version must import them, replay them to the same
//! state fingerprint, find nothing wrong in them, and export them back byte for byte.
//! A change to an event's shape that breaks this needs an upcaster, not a new golden
//! file.
//!
//! These journals are JSON, which names variants; the journal on disk is bincode, which
//! numbers them by position. The stored bytes of records of every variant are pinned
//! apart, in `tests/golden/records-v1.hex`, by the tests in `src/store/codec.rs`.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;

use runyard::store::portable::{export, import};
use runyard::store::verify::verify;
use runyard::store::{replay, EventLog};

fn goldens() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/golden")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden journal in {}", dir.display());
    files
}

#[test]
fn golden_journals_replay_to_their_recorded_state() {
    for golden in goldens() {
        let expected = std::fs::read_to_string(golden.with_extension("state-sha256"))
            .expect("recorded fingerprint");
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let file = std::fs::File::open(&golden).expect("golden");
        let (count, imported) = import(&data, BufReader::new(file)).expect("imports");
        assert!(count > 0);
        assert_eq!(
            imported.fingerprint(),
            expected.trim(),
            "{}",
            golden.display()
        );

        let log = EventLog::open(&data.join("journal")).expect("journal");
        let (replayed, stats) = replay(&log).expect("replays");
        assert_eq!(stats.events, count);
        assert_eq!(
            replayed.fingerprint(),
            expected.trim(),
            "{}",
            golden.display()
        );
        let report = verify(&log);
        assert!(
            report.is_clean(),
            "{}: {:?}",
            golden.display(),
            report.problems
        );

        let mut exported = Vec::new();
        export(&log, &mut exported).expect("exports");
        assert_eq!(
            String::from_utf8(exported).expect("utf-8"),
            std::fs::read_to_string(&golden).expect("golden"),
            "export round-trips {}",
            golden.display()
        );
    }
}

fn journal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_runyard"))
        .arg("journal")
        .args(args)
        .output()
        .expect("binary runs")
}

#[test]
fn the_journal_commands_work_on_a_real_data_directory() {
    let golden = goldens().remove(0);
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let data_arg = data.display().to_string();
    let golden_arg = golden.display().to_string();

    let out = journal(&["import", "--data-dir", &data_arg, "--in", &golden_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = journal(&["verify", "--data-dir", &data_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok: every check passed"), "{stdout}");
    let out = journal(&["export", "--data-dir", &data_arg]);
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&golden).expect("golden"));

    // A non-empty target is refused, and a bad line stops the import leaving nothing.
    let out = journal(&["import", "--data-dir", &data_arg, "--in", &golden_arg]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    let text = std::fs::read_to_string(&golden).expect("golden");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(1, 2);
    let broken = root.path().join("broken.jsonl");
    std::fs::write(&broken, lines.join("\n")).expect("write");
    let fresh = root.path().join("fresh");
    let out = journal(&[
        "import",
        "--data-dir",
        &fresh.display().to_string(),
        "--in",
        &broken.display().to_string(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!fresh.exists(), "a failed import leaves nothing behind");
    let leftovers = std::fs::read_dir(root.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".runyard-import-")
        })
        .count();
    assert_eq!(leftovers, 0);

    let out = journal(&[
        "verify",
        "--data-dir",
        &root.path().join("nothing").display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no journal"));
}
