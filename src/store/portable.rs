//! The journal as JSON lines, one envelope per line with its sequence number: what
//! `runyard journal export` writes and `runyard journal import` reads. Lines are
//! stable across versions (the envelope's version travels with each), so an export is
//! also a backup, a migration path, and the form of the golden journals in the tests.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::log::{EventLog, StoreError};
use crate::domain::event::ENVELOPE_VERSION;
use crate::domain::{Envelope, Event, RunId, Seq, State};

/// Records written to the log per flush during an import.
const IMPORT_BATCH: usize = 10_000;

/// One exported record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedRecord {
    /// The record's sequence number.
    pub seq: Seq,
    /// Envelope format version.
    pub version: u16,
    /// Microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// The run the event is about.
    pub run_id: RunId,
    /// The event, externally tagged (`{"RunSubmitted": {...}}`).
    pub event: Event,
}

/// An export or import that failed.
#[derive(Debug, thiserror::Error)]
pub enum PortableError {
    /// The log could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the input or writing the output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the input is not a record, or does not follow the one before.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The target data directory is not empty.
    #[error("{0} is not empty; import only into a new or empty data directory")]
    NotEmpty(PathBuf),
}

/// Writes every record of `log` to `out`, one JSON object per line; returns the count.
pub fn export(log: &EventLog, out: &mut impl Write) -> Result<u64, PortableError> {
    let mut count = 0;
    let mut failure = None;
    log.for_each(|seq, envelope| {
        let record = ExportedRecord {
            seq,
            version: envelope.version,
            recorded_at_micros: envelope.recorded_at_micros,
            run_id: envelope.run_id,
            event: envelope.event,
        };
        // Serializing plain data to JSON cannot fail; writing can.
        let line = serde_json::to_string(&record).unwrap_or_default();
        if let Err(source) = writeln!(out, "{line}") {
            failure.get_or_insert(source);
        }
        count += 1;
        Ok(())
    })?;
    if let Some(source) = failure {
        return Err(PortableError::Io {
            what: "writing the export".into(),
            source,
        });
    }
    out.flush().map_err(|source| PortableError::Io {
        what: "writing the export".into(),
        source,
    })?;
    Ok(count)
}

/// Rebuilds a data directory's journal from exported lines. The lines must start at
/// sequence number 1, be contiguous, and each event must be allowed by the state the
/// ones before it built. The journal is built in a temporary directory beside
/// `data_dir` and moved into place only when every line was good, so a failed import
/// leaves nothing behind.
pub fn import(data_dir: &Path, input: impl BufRead) -> Result<(u64, State), PortableError> {
    if data_dir.exists() {
        let empty = std::fs::read_dir(data_dir)
            .map_err(|source| PortableError::Io {
                what: format!("reading {}", data_dir.display()),
                source,
            })?
            .next()
            .is_none();
        if !empty {
            return Err(PortableError::NotEmpty(data_dir.to_path_buf()));
        }
    }
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| PortableError::Io {
        what: format!("creating {}", parent.display()),
        source,
    })?;
    let staging = tempfile::Builder::new()
        .prefix(".runyard-import-")
        .tempdir_in(parent)
        .map_err(|source| PortableError::Io {
            what: format!("creating a staging directory in {}", parent.display()),
            source,
        })?;
    let journal_dir = staging.path().join("journal");
    let (count, state) = {
        let log = EventLog::open(&journal_dir)?;
        let result = import_into(&log, input)?;
        drop(log);
        result
    };
    if data_dir.exists() {
        std::fs::remove_dir(data_dir).map_err(|source| PortableError::Io {
            what: format!("replacing the empty {}", data_dir.display()),
            source,
        })?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, data_dir).map_err(|source| PortableError::Io {
        what: format!("moving the imported journal to {}", data_dir.display()),
        source,
    })?;
    // The journal's files were synced as they were written; the rename that names
    // them is durable once the directory holding it is.
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|source| PortableError::Io {
            what: format!("syncing {}", parent.display()),
            source,
        })?;
    Ok((count, state))
}

fn import_into(log: &EventLog, input: impl BufRead) -> Result<(u64, State), PortableError> {
    let mut state = State::default();
    let mut batch: Vec<Envelope> = Vec::with_capacity(IMPORT_BATCH);
    let mut first_in_batch: Seq = 1;
    let mut expected: Seq = 1;
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|source| PortableError::Io {
            what: format!("reading line {number}"),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| PortableError::Line {
            line: number,
            reason,
        };
        let record: ExportedRecord =
            serde_json::from_str(&line).map_err(|e| bad(format!("not a journal record: {e}")))?;
        if record.seq != expected {
            return Err(bad(format!(
                "sequence number {} where {expected} was expected",
                record.seq
            )));
        }
        if record.version == 0 || record.version > ENVELOPE_VERSION {
            return Err(bad(format!(
                "envelope version {}; this build reads 1 to {ENVELOPE_VERSION}",
                record.version
            )));
        }
        state
            .check(record.run_id, &record.event)
            .map_err(|e| bad(format!("event refused: {e}")))?;
        let envelope = Envelope {
            version: record.version,
            recorded_at_micros: record.recorded_at_micros,
            run_id: record.run_id,
            event: record.event,
        };
        state.apply(record.seq, &envelope);
        batch.push(envelope);
        expected += 1;
        if batch.len() == IMPORT_BATCH {
            log.append(first_in_batch, &batch)?;
            first_in_batch = expected;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        log.append(first_in_batch, &batch)?;
    }
    Ok((expected - 1, state))
}
