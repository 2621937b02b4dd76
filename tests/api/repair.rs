//! A record that fails its checksum: the server refuses to start and says which
//! record and where; `serve --repair` moves that record and the rest of the tail
//! aside into a file, journals the repair, and starts.

use std::path::Path;
use std::process::Command;

use runyard::domain::{Envelope, Event, RunId};
use runyard::store::EventLog;
use serde_json::Value;

use crate::helpers::{client, quick_spec, wait_ready};
use crate::server::Server;

fn runyard(args: &[&str], data_dir: &Path) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Three runs, each submitted then cancelled: records 1 to 6.
fn write_journal(data_dir: &Path) -> Vec<RunId> {
    let log = EventLog::open(&data_dir.join("journal")).expect("journal");
    let runs: Vec<RunId> = (0..3).map(|_| RunId::new()).collect();
    let mut records = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let name = format!("r{i}");
        records.push(Envelope::now(
            *run,
            Event::RunSubmitted {
                name: name.clone(),
                digest: format!("{i:064}"),
                spec: quick_spec(&name).to_string(),
            },
        ));
        records.push(Envelope::now(
            *run,
            Event::RunCancelled {
                reason: "test".into(),
            },
        ));
    }
    log.append(1, &records).expect("append");
    runs
}

/// Flips a byte of record `seq` with sled directly, as a bad disk would.
fn corrupt(data_dir: &Path, seq: u64) {
    let db = sled::open(data_dir.join("journal")).expect("sled");
    let events = db.open_tree("events").expect("events tree");
    let mut bytes = events
        .get(seq.to_be_bytes())
        .expect("read")
        .expect("record")
        .to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    events.insert(seq.to_be_bytes(), bytes).expect("write");
    db.flush().expect("flush");
}

#[actix_web::test]
async fn a_corrupt_record_stops_the_start_and_repair_moves_only_the_tail_aside() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let runs = write_journal(&data_dir);
    corrupt(&data_dir, 4);

    // Without --repair: a non-zero exit naming the record and the directory.
    let (ok, _, stderr) = runyard(&["serve", "--bind", "127.0.0.1:0"], &data_dir);
    assert!(!ok, "the server started on a corrupt journal");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("record 4"), "{stderr}");
    assert!(stderr.contains(&data_dir.display().to_string()), "{stderr}");
    assert!(stderr.contains("--repair"), "{stderr}");
    let (ok, stdout, _) = runyard(&["journal", "verify"], &data_dir);
    assert!(!ok, "verify passed a corrupt journal: {stdout}");

    // With --repair: it starts; the runs before the bad record are intact.
    let server = Server::start_with(&data_dir, "repair.log", &["--repair"]);
    let client = client();
    wait_ready(&client, &server.address).await;
    let audit: Value = client
        .get(format!("{}/api/v1/slots/audit", server.address))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let repairs = audit["journal_repairs"].as_array().expect("repairs");
    assert_eq!(repairs.len(), 1, "{audit}");
    assert_eq!(repairs[0]["from_seq"], 4);
    assert_eq!(repairs[0]["to_seq"], 6);
    assert_eq!(
        repairs[0]["seq"], 4,
        "the repair takes the bad record's place"
    );
    let file = data_dir.join(repairs[0]["file"].as_str().expect("file"));
    let run_of = |i: usize| format!("{}/api/v1/runs/{}", server.address, runs[i]);
    let first: Value = client
        .get(run_of(0))
        .send()
        .await
        .expect("run")
        .json()
        .await
        .expect("json");
    assert_eq!(first["state"], "cancelled", "{first}");
    let second = client.get(run_of(1)).send().await.expect("run");
    assert_eq!(
        second.status(),
        200,
        "run 1 was submitted before the bad record"
    );
    let third = client.get(run_of(2)).send().await.expect("run");
    assert_eq!(third.status(), 404, "run 2 was only in the moved tail");
    server.kill();

    // The tail is in the file, one line per record, the bad one with its error.
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .expect("repair file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| l["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
    assert!(
        lines[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("checksum")),
        "{}",
        lines[0]
    );
    assert!(lines[1]["envelope"].is_object() && lines[2]["envelope"].is_object());

    // The repaired journal verifies, and a second start needs no repair.
    let (ok, stdout, stderr) = runyard(&["journal", "verify"], &data_dir);
    assert!(ok, "verify after repair: {stdout}{stderr}");
    let again = Server::start(&data_dir, "again.log");
    wait_ready(&client, &again.address).await;
    again.kill();
}

/// A text found in record `seq` of [`write_batches`]'s journal and in no other.
fn marker(seq: u64) -> String {
    format!("only-in-record-{seq}")
}

/// Three runs, each submitted then cancelled in a batch of its own (records 1 to 6);
/// record `seq` holds [`marker`]`(seq)` (a run's name, a cancel's reason).
fn write_batches(data_dir: &Path) -> Vec<RunId> {
    let log = EventLog::open(&data_dir.join("journal")).expect("journal");
    let runs: Vec<RunId> = (0..3).map(|_| RunId::new()).collect();
    for (i, run) in runs.iter().enumerate() {
        let first = i as u64 * 2 + 1;
        let name = marker(first);
        let records = [
            Envelope::now(
                *run,
                Event::RunSubmitted {
                    name: name.clone(),
                    digest: format!("{i:064}"),
                    spec: quick_spec(&name).to_string(),
                },
            ),
            Envelope::now(
                *run,
                Event::RunCancelled {
                    reason: marker(first + 1),
                },
            ),
        ];
        log.append(first, &records).expect("append");
    }
    runs
}

/// Flips one byte of record `seq` inside sled's own log file, as a bad disk would;
/// returns the damaged file's bytes.
fn flip_in_log_file(data_dir: &Path, seq: u64) -> Vec<u8> {
    let db = data_dir.join("journal/db");
    let mut bytes = std::fs::read(&db).expect("sled's log file");
    let marker = marker(seq);
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap_or_else(|| panic!("record {seq}'s marker is in the log file"));
    bytes[at + 3] ^= 0x20;
    std::fs::write(&db, &bytes).expect("write the damaged file");
    bytes
}

#[actix_web::test]
async fn a_flipped_byte_in_the_log_file_stops_the_start_naming_how_far_it_reached() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let runs = write_batches(&data_dir);
    // One byte flipped inside the second run's records in sled's own file, as a bad
    // disk would: sled's recovery ends at that message and drops every later one.
    let bytes = flip_in_log_file(&data_dir, 3);

    // The start is refused in one line with both sequence numbers.
    let (ok, _, stderr) = runyard(&["serve", "--bind", "127.0.0.1:0"], &data_dir);
    assert!(
        !ok,
        "the server started on a log shorter than its watermark"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ends at record 2") && stderr.contains("through 6"),
        "{stderr}"
    );
    assert!(stderr.contains("--repair"), "{stderr}");
    let (ok, stdout, _) = runyard(&["journal", "verify"], &data_dir);
    assert!(!ok, "verify passed a short log: {stdout}");
    assert!(
        stdout.contains("ends at record 2") && stdout.contains("through 6"),
        "{stdout}"
    );

    // --repair keeps what can be read, copies the damaged files aside, and starts.
    let server = Server::start_with(&data_dir, "repair.log", &["--repair"]);
    let client = client();
    wait_ready(&client, &server.address).await;
    let audit: Value = client
        .get(format!("{}/api/v1/slots/audit", server.address))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let repairs = audit["journal_repairs"].as_array().expect("repairs");
    assert_eq!(repairs.len(), 1, "{audit}");
    assert_eq!(
        (
            repairs[0]["from_seq"].as_u64(),
            repairs[0]["to_seq"].as_u64()
        ),
        (Some(3), Some(6)),
        "{audit}"
    );
    let aside = data_dir.join(repairs[0]["file"].as_str().expect("file"));
    // sled zeroes what follows the damage as it opens the log: the file as it was
    // before the first start that found it short is what was kept.
    let copied = std::fs::read(aside.join("db.as-found")).expect("the damaged log file, kept");
    assert!(
        copied == bytes,
        "the copy aside is not the damaged file as it was"
    );
    for copy in ["db.as-found", "db.before-open"] {
        assert!(
            !data_dir.join("journal").join(copy).exists(),
            "{copy} left the journal once moved aside"
        );
    }
    let status_of = |i: usize| {
        let client = client.clone();
        let url = format!("{}/api/v1/runs/{}", server.address, runs[i]);
        async move { client.get(url).send().await.expect("run").status() }
    };
    assert_eq!(
        status_of(0).await,
        200,
        "the first run was before the damage"
    );
    assert_eq!(
        status_of(1).await,
        404,
        "the second run was in the damaged part"
    );
    assert_eq!(status_of(2).await, 404, "the third run was after it");
    server.kill();

    let (ok, stdout, stderr) = runyard(&["journal", "verify"], &data_dir);
    assert!(ok, "verify after repair: {stdout}{stderr}");
    let again = Server::start(&data_dir, "again.log");
    wait_ready(&client, &again.address).await;
    again.kill();
}

/// Whichever record a flipped byte lands in, the first or the last included, the
/// start is refused naming how far the log reached and how far it was synced, and
/// `journal verify` says the same; `--repair` then starts on what could be read and
/// leaves a journal that verifies (every record it kept indexed under its run).
#[actix_web::test]
async fn a_flipped_byte_in_any_record_stops_the_start_naming_both_numbers() {
    let client = client();
    for seq in 1..=6u64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        write_batches(&data_dir);
        flip_in_log_file(&data_dir, seq);

        let (ok, _, stderr) = runyard(&["serve", "--bind", "127.0.0.1:0"], &data_dir);
        assert!(!ok, "record {seq} damaged: the server started");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "record {seq} damaged: {stderr}"
        );
        // The log ends before the damaged record (where depends on the batch it was
        // in); the watermark says all six were synced.
        let ends_at: u64 = stderr
            .split("ends at record ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("record {seq} damaged: no `ends at record N,` in: {stderr}"));
        assert!(ends_at < seq, "record {seq} damaged: {stderr}");
        let expected = [
            format!("ends at record {ends_at},"),
            "through 6 were synced".to_string(),
        ];
        assert!(
            stderr.contains(&expected[1]),
            "record {seq} damaged: {stderr}"
        );
        let (ok, stdout, _) = runyard(&["journal", "verify"], &data_dir);
        assert!(!ok, "record {seq} damaged: verify passed: {stdout}");
        for text in &expected {
            assert!(
                stdout.contains(text.as_str()),
                "record {seq} damaged: `{text}` not in verify's: {stdout}"
            );
        }

        let server = Server::start_with(&data_dir, "repair.log", &["--repair"]);
        wait_ready(&client, &server.address).await;
        server.kill();
        let (ok, stdout, stderr) = runyard(&["journal", "verify"], &data_dir);
        assert!(
            ok,
            "record {seq} damaged: verify after the repair: {stdout}{stderr}"
        );
    }
}
