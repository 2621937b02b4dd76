//! `runyard serve --repair`: moving a bad tail of the journal aside.
//!
//! When replay meets a record it cannot read (a failed checksum, a torn or malformed
//! record), that record and every record after it are written to a JSON-lines file
//! under `journal-repairs/` in the data directory, one line per record with its
//! sequence number, its bytes in hex, and its decoded envelope when it decodes.
//! Only then are they removed from the log, in one transaction. Records before the
//! bad one are never touched. The caller journals an
//! [`Event::JournalRepaired`](crate::domain::Event::JournalRepaired) in the bad
//! record's place.
//!
//! When the log ends short of its watermark (sled ended its recovery at a damaged
//! message, so the records after it cannot be read through sled at all),
//! [`move_short_log_aside`] copies the log's files as they are into
//! `journal-repairs/log-FROM-TO-TIME/` for whoever wants to dig the records out, and
//! the log goes on from the last record sled could read.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::codec;
use super::log::{EventLog, StoreError};
use crate::domain::{Envelope, Seq};

/// Directory, under the data directory, that moved-aside tails are written to.
pub const REPAIRS_DIR: &str = "journal-repairs";

/// What a repair moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The first record moved (the bad one).
    pub from_seq: Seq,
    /// The last record moved.
    pub to_seq: Seq,
    /// Why the first one could not be read.
    pub reason: String,
    /// The file they were written to, relative to the data directory.
    pub file: String,
}

/// A failure of the repair itself: nothing was removed from the log.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Reading or truncating the log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file the tail goes to could not be written.
    #[error("cannot write the moved-aside records to {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    seq: Seq,
    /// The stored bytes (checksum and payload), in hex.
    raw: String,
    /// The decoded envelope, when the record decodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    envelope: Option<&'a Envelope>,
    /// Why it does not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Moves record `bad` and every later record of `log` into a new file under
/// `data_dir/journal-repairs/`, then removes them from the log. `reason` says what
/// was wrong with `bad`.
pub fn move_tail_aside(
    log: &EventLog,
    data_dir: &Path,
    bad: Seq,
    reason: &str,
) -> Result<RepairReport, RepairError> {
    let records = log.raw_from(bad)?;
    let to_seq = records.last().map_or(bad, |(seq, _)| *seq);
    let dir = data_dir.join(REPAIRS_DIR);
    let name = format!(
        "tail-{bad}-{to_seq}-{}.jsonl",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let path = dir.join(&name);
    let file_err = |source| RepairError::File {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(file_err)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(file_err)?);
    for (seq, bytes) in &records {
        let decoded = codec::decode(*seq, bytes);
        let line = Line {
            seq: *seq,
            raw: hex::encode(bytes),
            envelope: decoded.as_ref().ok(),
            error: decoded.as_ref().err().map(ToString::to_string),
        };
        serde_json::to_writer(&mut out, &line).map_err(|e| file_err(std::io::Error::other(e)))?;
        out.write_all(b"\n").map_err(file_err)?;
    }
    let file = out
        .into_inner()
        .map_err(|e| file_err(std::io::Error::other(e.to_string())))?;
    file.sync_all().map_err(file_err)?;
    // The file's name is durable before the records leave the log.
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err)?;
    log.truncate_from(bad)?;
    Ok(RepairReport {
        from_seq: bad,
        to_seq,
        reason: reason.to_string(),
        file: format!("{REPAIRS_DIR}/{name}"),
    })
}

/// Copies the files of a log that ends short of its watermark (or whose watermark is
/// damaged) into a new directory under `data_dir/journal-repairs/`, synced, then takes
/// the log as it is now as its reach. `why` is the failed [`EventLog::check_reach`].
/// Records `last + 1 ..= synced` could not be read; the report names them (an empty
/// range, `from_seq > to_seq`, for a damaged watermark over a whole log).
pub fn move_short_log_aside(
    log: &EventLog,
    data_dir: &Path,
    why: &StoreError,
) -> Result<RepairReport, RepairError> {
    let last = log.last_seq()?;
    let synced = match why {
        StoreError::Short { synced, .. } => *synced,
        _ => last,
    };
    let name = format!(
        "log-{}-{synced}-{}",
        last + 1,
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let dest = data_dir.join(REPAIRS_DIR).join(&name);
    copy_synced(log.dir(), &dest)?;
    for dir in [dest.as_path(), &data_dir.join(REPAIRS_DIR)] {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| RepairError::File {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    log.accept_reach()?;
    Ok(RepairReport {
        from_seq: last + 1,
        to_seq: synced,
        reason: why.to_string(),
        file: format!("{REPAIRS_DIR}/{name}"),
    })
}

/// Copies the directory `from` into `to` (new), every file fsynced.
fn copy_synced(from: &Path, to: &Path) -> Result<(), RepairError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RepairError::File { path, source }
    };
    std::fs::create_dir_all(to).map_err(err(to))?;
    for entry in std::fs::read_dir(from).map_err(err(from))? {
        let entry = entry.map_err(err(from))?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(err(&entry.path()))?.is_dir() {
            copy_synced(&entry.path(), &target)?;
            std::fs::File::open(&target)
                .and_then(|d| d.sync_all())
                .map_err(err(&target))?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(err(&target))?;
            std::fs::File::open(&target)
                .and_then(|f| f.sync_all())
                .map_err(err(&target))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, RunId};
    use crate::store::replay;

    #[test]
    fn only_the_tail_from_the_bad_record_is_moved_and_replay_then_succeeds() {
        let data = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(&data.path().join("journal")).expect("open");
        let run = RunId::new();
        let events: Vec<Envelope> = (0..6)
            .map(|i| {
                Envelope::now(
                    run,
                    if i == 0 {
                        Event::RunSubmitted {
                            name: "r".into(),
                            digest: "d".into(),
                            spec: "{}".into(),
                        }
                    } else {
                        Event::RunRequeued {
                            reason: format!("r{i}"),
                        }
                    },
                )
            })
            .collect();
        log.append(1, &events).expect("append");
        let state = replay(&log).expect("replay").0;
        log.write_snapshot(5, &state.to_snapshot(), 2)
            .expect("snapshot");
        log.corrupt_for_tests(4);

        let err = replay(&log).map(|_| ()).expect_err("bad record");
        assert_eq!(err.bad_record(), Some(4), "{err}");
        let report = move_tail_aside(&log, data.path(), 4, &err.to_string()).expect("repair");
        assert_eq!((report.from_seq, report.to_seq), (4, 6));
        assert_eq!(log.last_seq().expect("last"), 3);
        assert!(
            log.snapshots().is_empty(),
            "the snapshot past the cut is gone"
        );
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(data.path().join(&report.file))
            .expect("file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["seq"], 4);
        assert!(lines[0]["error"].as_str().is_some(), "{}", lines[0]);
        assert!(lines[1]["envelope"].is_object(), "{}", lines[1]);
        let (state, _) = replay(&log).expect("replay after repair");
        assert_eq!(state.last_seq(), 3);
        assert_eq!(
            log.read_run_after(run, 0, 100).expect("index").len(),
            3,
            "index entries past the cut are gone"
        );
    }
}
