//! The sled event log: tree `events` maps a big-endian sequence number to a record,
//! tree `run_index` maps `(run id, sequence number)` to nothing, for per-run reads.
//! Both trees are written in one transaction, then the database is flushed once per
//! batch (group commit). Tree `snapshots` holds state snapshots and tree `metrics` the
//! sampled progress history.
//!
//! A failed write leaves sled refusing every later write until the database is opened
//! again, so the handles live behind one lock that [`EventLog::reopen`] swaps: every
//! clone of an [`EventLog`] then reads the reopened database.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::codec::{self, CodecError};
use crate::domain::{Envelope, RunId, Seq};

const EVENTS_TREE: &str = "events";
const RUN_INDEX_TREE: &str = "run_index";
const SNAPSHOTS_TREE: &str = "snapshots";
const METRICS_TREE: &str = "metrics";

/// A failure of the event log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, corruption of its own files).
    #[error("journal in {dir}: {source}")]
    Sled {
        /// The data directory.
        dir: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A record failed to decode.
    #[error("journal in {dir}: {source}")]
    Record {
        /// The data directory.
        dir: PathBuf,
        /// What was wrong with the record.
        #[source]
        source: CodecError,
    },
    /// A key in the events tree is not a sequence number.
    #[error("journal in {dir}: key {key:?} in the events tree is not a sequence number")]
    BadKey {
        /// The data directory.
        dir: PathBuf,
        /// The key found.
        key: Vec<u8>,
    },
    /// A read on a worker thread did not finish (the thread panicked or the runtime
    /// is shutting down).
    #[error("journal read in {dir} did not finish: {reason}")]
    Interrupted {
        /// The data directory.
        dir: PathBuf,
        /// What happened to the worker.
        reason: String,
    },
    /// The log is closed for a reopen after a failed write.
    #[error("journal in {dir} is being reopened after a failed write")]
    Closed {
        /// The data directory.
        dir: PathBuf,
    },
}

impl StoreError {
    /// The sequence number of the record that could not be read, when the failure is
    /// a bad record that `serve --repair` can move aside (not one from a newer
    /// version, which a newer runyard reads).
    pub fn bad_record(&self) -> Option<Seq> {
        match self {
            StoreError::Record { source, .. } => match source {
                CodecError::Truncated { seq, .. }
                | CodecError::Checksum { seq, .. }
                | CodecError::Malformed { seq, .. }
                | CodecError::UnknownVersion { seq, .. } => Some(*seq),
                CodecError::TooNew { .. } => None,
            },
            _ => None,
        }
    }
}

/// A handle on the event log. Clones share the same database; any clone may read,
/// and only the journal actor writes.
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    /// `None` while a reopen is under way.
    trees: RwLock<Option<Arc<Trees>>>,
}

/// The open database and its trees.
struct Trees {
    db: sled::Db,
    events: sled::Tree,
    run_index: sled::Tree,
    snapshots: sled::Tree,
    metrics: sled::Tree,
}

/// How long [`EventLog::open`] waits for a database that was just closed: sled may
/// finish writing on a background thread, holding the directory's lock, for a moment
/// after the last handle is dropped.
const OPEN_PATIENCE: Duration = Duration::from_secs(3);

impl Trees {
    /// Opens the database, retrying for up to `patience` while another handle (in
    /// this process or another) holds its lock.
    fn open_patiently(dir: &Path, patience: Duration) -> Result<Self, sled::Error> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match Self::open(dir) {
                Err(e)
                    if std::time::Instant::now() < deadline
                        && e.to_string().contains("could not acquire lock") =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                opened => return opened,
            }
        }
    }

    fn open(dir: &Path) -> Result<Self, sled::Error> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        Ok(Self {
            events: db.open_tree(EVENTS_TREE)?,
            run_index: db.open_tree(RUN_INDEX_TREE)?,
            snapshots: db.open_tree(SNAPSHOTS_TREE)?,
            metrics: db.open_tree(METRICS_TREE)?,
            db,
        })
    }
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

fn index_key(run_id: RunId, seq: Seq) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(run_id.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

impl EventLog {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let trees =
            Trees::open_patiently(dir, OPEN_PATIENCE).map_err(|source| StoreError::Sled {
                dir: dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                trees: RwLock::new(Some(Arc::new(trees))),
            }),
        })
    }

    /// Closes the database and opens it again from what is on disk, for every clone.
    ///
    /// After a failed write sled refuses all later writes, and its in-memory trees may
    /// hold records that never reached the disk; reopening drops both. Reads in other
    /// threads may still hold the old database for a moment, so the open is retried
    /// for up to `patience`; on failure the log stays closed and a later call tries
    /// again.
    pub fn reopen(&self, patience: Duration) -> Result<(), StoreError> {
        let mut slot = self
            .shared
            .trees
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Dropping our handle lets the database close once the last reader is done.
        drop(slot.take());
        let trees =
            Trees::open_patiently(&self.shared.dir, patience).map_err(|e| self.sled_err(e))?;
        *slot = Some(Arc::new(trees));
        Ok(())
    }

    fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        self.shared
            .trees
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Closed {
                dir: self.shared.dir.clone(),
            })
    }

    /// The tree of sampled progress history (see [`crate::store::metrics`]).
    pub fn metrics_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.trees()?.metrics.clone())
    }

    /// The tree of `Idempotency-Key` answers (see [`crate::http::idempotency`]): not
    /// part of the journal's contract, a cache of answers that expires.
    pub fn idempotency_tree(&self) -> Result<sled::Tree, StoreError> {
        let trees = self.trees()?;
        trees
            .db
            .open_tree("idempotency")
            .map_err(|e| self.sled_err(e))
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            dir: self.shared.dir.clone(),
            source,
        }
    }

    fn transaction_err(&self, e: TransactionError<()>) -> StoreError {
        match e {
            TransactionError::Storage(source) => self.sled_err(source),
            TransactionError::Abort(()) => {
                self.sled_err(sled::Error::Unsupported("transaction aborted".into()))
            }
        }
    }

    fn seq_of(&self, key: &[u8]) -> Result<Seq, StoreError> {
        let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::BadKey {
            dir: self.shared.dir.clone(),
            key: key.to_vec(),
        })?;
        Ok(Seq::from_be_bytes(bytes))
    }

    fn decode(&self, seq: Seq, bytes: &[u8]) -> Result<Envelope, StoreError> {
        codec::decode(seq, bytes).map_err(|source| StoreError::Record {
            dir: self.shared.dir.clone(),
            source,
        })
    }

    /// The sequence number of the last record, 0 when the log is empty.
    pub fn last_seq(&self) -> Result<Seq, StoreError> {
        let t = self.trees()?;
        match t.events.last().map_err(|e| self.sled_err(e))? {
            Some((key, _)) => self.seq_of(&key),
            None => Ok(0),
        }
    }

    /// Writes `envelopes` under `first_seq, first_seq + 1, ...` and flushes them to
    /// disk before returning: when this returns `Ok`, the events are durable.
    pub fn append(&self, first_seq: Seq, envelopes: &[Envelope]) -> Result<(), StoreError> {
        let t = self.trees()?;
        let mut events = sled::Batch::default();
        let mut index = sled::Batch::default();
        for (offset, envelope) in envelopes.iter().enumerate() {
            let seq = first_seq + offset as Seq;
            events.insert(&seq.to_be_bytes(), codec::encode(envelope));
            index.insert(&index_key(envelope.run_id, seq), &[]);
        }
        (&t.events, &t.run_index)
            .transaction(|(events_tx, index_tx)| {
                events_tx.apply_batch(&events)?;
                index_tx.apply_batch(&index)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.transaction_err(e))?;
        t.db.flush().map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Up to `limit` records after `after`, in order.
    pub fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Envelope)>, StoreError> {
        let t = self.trees()?;
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in t.events.range(start..).take(limit) {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            let seq = self.seq_of(&key)?;
            out.push((seq, self.decode(seq, &value)?));
        }
        Ok(out)
    }

    /// Every record, in order, handed to `visit` one by one (used by replay).
    pub fn for_each(
        &self,
        visit: impl FnMut(Seq, Envelope) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.for_each_after(0, visit)
    }

    /// Every record after `after`, in order, handed to `visit` one by one.
    ///
    /// Reading and decoding run on a second thread, a chunk ahead of `visit`, so a
    /// replay uses both the disk and the fold at once.
    pub fn for_each_after(
        &self,
        after: Seq,
        mut visit: impl FnMut(Seq, Envelope) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        const CHUNK: usize = 1024;
        let t = self.trees()?;
        std::thread::scope(|scope| {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<Result<Vec<(Seq, Envelope)>, StoreError>>(8);
            let reader = scope.spawn(move || {
                let mut chunk = Vec::with_capacity(CHUNK);
                for item in t.events.range(after.saturating_add(1).to_be_bytes()..) {
                    let record = item.map_err(|e| self.sled_err(e)).and_then(|(key, value)| {
                        let seq = self.seq_of(&key)?;
                        Ok((seq, self.decode(seq, &value)?))
                    });
                    match record {
                        Ok(record) => chunk.push(record),
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                    if chunk.len() == CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                        if tx.send(Ok(full)).is_err() {
                            return;
                        }
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.send(Ok(chunk));
                }
            });
            let mut outcome = Ok(());
            for chunk in rx {
                match chunk {
                    Ok(records) => {
                        for (seq, envelope) in records {
                            if let Err(e) = visit(seq, envelope) {
                                outcome = Err(e);
                                break;
                            }
                        }
                    }
                    Err(e) => outcome = Err(e),
                }
                if outcome.is_err() {
                    break;
                }
            }
            // Dropping the receiver (end of the loop) stops the reader at its next send.
            let _ = reader.join();
            outcome
        })
    }

    /// Every record in order, each decoded on its own: a corrupt record is handed to
    /// `visit` as an error and the scan goes on (used by `runyard journal verify`).
    pub fn scan(&self, mut visit: impl FnMut(Result<(Seq, Envelope), StoreError>)) {
        let t = match self.trees() {
            Ok(t) => t,
            Err(e) => return visit(Err(e)),
        };
        for item in t.events.iter() {
            let record = item.map_err(|e| self.sled_err(e)).and_then(|(key, value)| {
                let seq = self.seq_of(&key)?;
                Ok((seq, self.decode(seq, &value)?))
            });
            visit(record);
        }
    }

    /// Every `(run, seq)` entry of the per-run index, in key order.
    pub fn index_entries(&self) -> Result<Vec<(RunId, Seq)>, StoreError> {
        let t = self.trees()?;
        let mut out = Vec::new();
        for item in t.run_index.iter() {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            if key.len() != 24 {
                return Err(StoreError::BadKey {
                    dir: self.shared.dir.clone(),
                    key: key.to_vec(),
                });
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&key[..16]);
            out.push((RunId::from_bytes(id), self.seq_of(&key[16..])?));
        }
        Ok(out)
    }

    /// Up to `limit` records about `run_id` after `after`, in order.
    pub fn read_run_after(
        &self,
        run_id: RunId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Envelope)>, StoreError> {
        let t = self.trees()?;
        let start = index_key(run_id, after.saturating_add(1));
        let end = index_key(run_id, Seq::MAX);
        let mut out = Vec::new();
        for item in t.run_index.range(start..=end).take(limit) {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            let seq = self.seq_of(&key[16..])?;
            let value = t
                .events
                .get(seq.to_be_bytes())
                .map_err(|e| self.sled_err(e))?;
            // An index entry always has its event: both are written in one transaction.
            if let Some(value) = value {
                out.push((seq, self.decode(seq, &value)?));
            }
        }
        Ok(out)
    }

    /// The stored bytes of every record from `from` on, undecoded, in order (for
    /// moving a bad tail aside).
    pub fn raw_from(&self, from: Seq) -> Result<Vec<(Seq, Vec<u8>)>, StoreError> {
        let t = self.trees()?;
        let mut out = Vec::new();
        for item in t.events.range(from.to_be_bytes()..) {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            out.push((self.seq_of(&key)?, value.to_vec()));
        }
        Ok(out)
    }

    /// Removes every record from `from` on, their per-run index entries and every
    /// snapshot taken at or after `from`, in one transaction, and flushes.
    pub fn truncate_from(&self, from: Seq) -> Result<(), StoreError> {
        let t = self.trees()?;
        let mut events = sled::Batch::default();
        for item in t.events.range(from.to_be_bytes()..) {
            events.remove(item.map_err(|e| self.sled_err(e))?.0);
        }
        // A bad record's run is unknown: look at every index entry.
        let mut index = sled::Batch::default();
        for item in t.run_index.iter() {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            if key.len() == 24 && self.seq_of(&key[16..])? >= from {
                index.remove(key);
            }
        }
        let mut snapshots = sled::Batch::default();
        for item in t.snapshots.range(from.to_be_bytes()..) {
            snapshots.remove(item.map_err(|e| self.sled_err(e))?.0);
        }
        (&t.events, &t.run_index, &t.snapshots)
            .transaction(|(events_tx, index_tx, snapshots_tx)| {
                events_tx.apply_batch(&events)?;
                index_tx.apply_batch(&index)?;
                snapshots_tx.apply_batch(&snapshots)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.transaction_err(e))?;
        t.db.flush().map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Flips the last byte of record `seq`, as a bad disk would.
    #[cfg(test)]
    pub(crate) fn corrupt_for_tests(&self, seq: Seq) {
        let t = self.trees().expect("open");
        let mut bytes = t
            .events
            .get(seq.to_be_bytes())
            .expect("get")
            .expect("record")
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        t.events.insert(seq.to_be_bytes(), bytes).expect("insert");
    }

    /// Stores a snapshot of the state as of `seq` (checksummed), flushes it, and keeps
    /// only the newest `keep` snapshots.
    pub fn write_snapshot(&self, seq: Seq, payload: &[u8], keep: usize) -> Result<(), StoreError> {
        let t = self.trees()?;
        let mut value = Vec::with_capacity(payload.len() + 4);
        value.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
        value.extend_from_slice(payload);
        t.snapshots
            .insert(seq.to_be_bytes(), value)
            .map_err(|e| self.sled_err(e))?;
        let stale: Vec<sled::IVec> = t
            .snapshots
            .iter()
            .rev()
            .skip(keep.max(1))
            .filter_map(|item| item.ok().map(|(key, _)| key))
            .collect();
        for key in stale {
            t.snapshots.remove(key).map_err(|e| self.sled_err(e))?;
        }
        t.db.flush().map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Snapshots, newest first, as `(seq, payload)`; one whose checksum fails is
    /// reported as an error in its place.
    pub fn snapshots(&self) -> Vec<Result<(Seq, Vec<u8>), StoreError>> {
        let t = match self.trees() {
            Ok(t) => t,
            Err(e) => return vec![Err(e)],
        };
        t.snapshots
            .iter()
            .rev()
            .map(|item| {
                let (key, value) = item.map_err(|e| self.sled_err(e))?;
                let seq = self.seq_of(&key)?;
                let corrupt = || StoreError::Record {
                    dir: self.shared.dir.clone(),
                    source: CodecError::Malformed {
                        seq,
                        reason: "snapshot fails its checksum".into(),
                    },
                };
                if value.len() < 4 {
                    return Err(corrupt());
                }
                let (head, payload) = value.split_at(4);
                let stored = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                if stored != crc32c::crc32c(payload) {
                    return Err(corrupt());
                }
                Ok((seq, payload.to_vec()))
            })
            .collect()
    }

    /// Number of records in the log.
    pub fn len(&self) -> Result<usize, StoreError> {
        Ok(self.trees()?.events.len())
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.trees()?.events.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, SlotId};

    #[test]
    fn appends_are_read_back_in_order_and_by_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        assert_eq!(log.last_seq().expect("empty"), 0);
        let (a, b) = (RunId::new(), RunId::new());
        let batch = vec![
            Envelope::now(a, Event::SlotClaimed { slot: SlotId(0) }),
            Envelope::now(b, Event::SlotClaimed { slot: SlotId(1) }),
            Envelope::now(a, Event::SlotReleased { slot: SlotId(0) }),
        ];
        log.append(1, &batch).expect("append");
        assert_eq!(log.last_seq().expect("last"), 3);
        let all = log.read_after(0, 10).expect("read");
        assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
        let of_a = log.read_run_after(a, 0, 10).expect("read a");
        assert_eq!(of_a.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(log.read_run_after(a, 1, 10).expect("after 1").len(), 1);
        drop(log);
        let reopened = EventLog::open(dir.path()).expect("reopen");
        assert_eq!(reopened.last_seq().expect("last"), 3);
        assert_eq!(reopened.read_after(2, 10).expect("tail")[0].1, batch[2]);
    }

    #[test]
    fn a_corrupt_record_is_reported_with_its_seq_and_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        let run = RunId::new();
        log.append(1, &[Envelope::now(run, Event::CancelRequested)])
            .expect("append");
        let mut bytes = log
            .trees()
            .expect("open")
            .events
            .get(1u64.to_be_bytes())
            .expect("get")
            .expect("some")
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        log.trees()
            .expect("open")
            .events
            .insert(1u64.to_be_bytes(), bytes)
            .expect("insert");
        let err = log.read_after(0, 10).expect_err("corrupt").to_string();
        assert!(err.contains("record 1"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
