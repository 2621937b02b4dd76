//! The sled event log: tree `events` maps a big-endian sequence number to a record,
//! tree `run_index` maps `(run id, sequence number)` to nothing, for per-run reads,
//! and tree `meta` holds the commit mark. Tree `snapshots` holds state snapshots and
//! tree `metrics` the sampled progress history.
//!
//! # A batch is all or nothing
//!
//! A batch of appends is written as plain inserts, the records first, then their
//! index entries, then the commit mark (`meta/committed`, the batch's last sequence
//! number), and the database is flushed and synced once (group commit). sled
//! recovers a prefix of its log (it stops at the first message it cannot read back),
//! so when a batch's commit mark survived a crash, all of the batch did. Records past
//! the mark are a batch that was never acknowledged and is not whole: opening the log
//! removes them (index entries first, so none points at a missing record). A sled
//! transaction over the trees would give the same guarantee at about twice the
//! append's cost: its batch manifest is one more message for the flush to write.
//!
//! A failed write leaves sled refusing every later write until the database is opened
//! again, so the handles live behind one lock that [`EventLog::reopen`] swaps: every
//! clone of an [`EventLog`] then reads the reopened database.
//!
//! # Durable means synced
//!
//! sled's own flush makes its log stable on Linux with `sync_file_range(2)`, which
//! neither persists the file's metadata (its size, for a log that grows) nor flushes
//! the disk's volatile cache, and it writes large values (over a quarter of a
//! segment) to files under `blobs/` that it never syncs; only its background flusher
//! calls `fsync`, every 500 ms. So every write here that promises durability
//! ([`EventLog::append`], snapshots, repairs, [`EventLog::insert_durable`]) ends with
//! `Trees::sync`: sled's flush, then `fdatasync` of sled's log file, of every blob
//! file not yet synced, and of the `blobs/` directory when it gained one. One sync per
//! flushed batch: the journal actor's group commit makes it one per batch of appends.
//!
//! # The watermark
//!
//! sled checks its messages when it opens a log and, at the first one that fails,
//! quietly ends its recovery there: a damaged byte would make the journal shorter
//! with nothing said. So the log keeps its own account of how far it reached: the
//! file `watermark` beside sled's files holds the last sequence number known synced,
//! written in place and fdatasynced after each batch is (never before, so a power cut
//! can only leave it behind the log, never ahead). [`EventLog::check_reach`] fails when
//! the log ends short of it, naming both sequence numbers.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::codec::{self, CodecError};
use crate::domain::{Envelope, RunId, Seq};

const EVENTS_TREE: &str = "events";
const RUN_INDEX_TREE: &str = "run_index";
const SNAPSHOTS_TREE: &str = "snapshots";
const METRICS_TREE: &str = "metrics";
const META_TREE: &str = "meta";

/// Key, in tree `meta`, of the last sequence number of the last whole batch. A log
/// written before the mark existed has none (its batches were sled transactions, all
/// whole).
const COMMITTED_KEY: &[u8] = b"committed";

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
    /// Syncing the log's files to stable storage failed: what was written may not
    /// survive a power cut.
    #[error("journal in {dir}: cannot sync {file} to stable storage: {source}")]
    Sync {
        /// The data directory.
        dir: PathBuf,
        /// The file or directory that did not sync.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The log ends before the last record it was known to have synced: sled stopped
    /// its recovery at a damaged message, and every record after it is unreadable.
    #[error(
        "journal in {dir} ends at record {last}, but records through {synced} were synced \
         (its watermark): the log is damaged after record {last}"
    )]
    Short {
        /// The data directory.
        dir: PathBuf,
        /// The last record sled recovered.
        last: Seq,
        /// The last record the watermark says was synced.
        synced: Seq,
    },
    /// The watermark file does not hold a watermark.
    #[error("journal in {dir}: the watermark file {file} is damaged ({reason})")]
    BadWatermark {
        /// The data directory.
        dir: PathBuf,
        /// The watermark file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
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
    /// How far the log is known synced.
    watermark: Watermark,
    /// Why the watermark file could not be read, when it could not.
    watermark_damage: Option<String>,
}

/// The open database and its trees.
struct Trees {
    db: sled::Db,
    events: sled::Tree,
    run_index: sled::Tree,
    snapshots: sled::Tree,
    metrics: sled::Tree,
    meta: sled::Tree,
    /// sled's log file, for `fdatasync`.
    log_file: File,
    /// Blob files already synced, by name, with the length they had then.
    blobs_synced: Mutex<HashMap<OsString, u64>>,
}

/// The file sled keeps its log in, inside its directory.
const SLED_LOG_FILE: &str = "db";

/// The directory sled writes large values to, one file each.
const SLED_BLOBS_DIR: &str = "blobs";

/// The watermark's file, beside sled's.
pub const WATERMARK_FILE: &str = "watermark";

/// A copy of sled's log file as it was before this open. sled zeroes what follows a
/// damaged message while it recovers, so this copy is the only place the records past
/// the damage survive. It is removed once the log is found to reach its watermark; an
/// open that finds the log short keeps it as [`AS_FOUND_COPY`].
pub const PRE_OPEN_COPY: &str = "db.before-open";

/// The pre-open copy of the first open that found the log short of its watermark,
/// synced, kept for `serve --repair` to move aside (later opens, whose copies sled
/// had already zeroed, never replace it).
pub const AS_FOUND_COPY: &str = "db.as-found";

/// sled log files larger than this are opened without a copy (the start would take
/// too long); a damage found then loses the records past it for good.
const PRE_OPEN_COPY_MAX_BYTES: u64 = 1 << 30;

/// Copies sled's log file to [`PRE_OPEN_COPY`]. A failure (a full disk, say) only
/// costs the copy.
fn keep_pre_open_copy(dir: &Path) {
    let (db, copy) = (dir.join(SLED_LOG_FILE), dir.join(PRE_OPEN_COPY));
    let Ok(meta) = std::fs::metadata(&db) else {
        return;
    };
    if meta.len() > PRE_OPEN_COPY_MAX_BYTES {
        return;
    }
    // `std::fs::copy` copies inside the kernel (copy_file_range), or reflinks.
    if let Err(e) = std::fs::copy(&db, &copy) {
        let _ = std::fs::remove_file(&copy);
        tracing::warn!(error = %e, file = %copy.display(), "no copy of the journal taken before opening it");
    }
}

/// `RYWM`, the sequence number (big-endian) and a CRC32C of both.
const WATERMARK_LEN: usize = 16;
const WATERMARK_MAGIC: &[u8; 4] = b"RYWM";

/// `fdatasync` of the file or directory at `path`.
fn sync_path(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_data()
}

/// The last sequence number known synced, in a small file written in place.
struct Watermark {
    path: PathBuf,
    file: File,
    /// The value last written (synced or not), and the lock that keeps writes in
    /// order.
    written: Mutex<Option<Seq>>,
}

impl Watermark {
    fn encode(seq: Seq) -> [u8; WATERMARK_LEN] {
        let mut out = [0u8; WATERMARK_LEN];
        out[..4].copy_from_slice(WATERMARK_MAGIC);
        out[4..12].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&out[..12]);
        out[12..].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// `Ok(None)` for an empty file (created, never written), `Err(reason)` for one
    /// that holds something else.
    fn decode(bytes: &[u8]) -> Result<Option<Seq>, String> {
        if bytes.is_empty() {
            return Ok(None);
        }
        if bytes.len() != WATERMARK_LEN {
            return Err(format!("{} bytes, not {WATERMARK_LEN}", bytes.len()));
        }
        if &bytes[..4] != WATERMARK_MAGIC {
            return Err("no RYWM mark".into());
        }
        let crc = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        if crc != crc32c::crc32c(&bytes[..12]) {
            return Err("it fails its checksum".into());
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[4..12]);
        Ok(Some(Seq::from_be_bytes(seq)))
    }

    /// Opens (or creates, durably) the watermark of the log in `dir`, and reads it.
    fn open(dir: &Path) -> std::io::Result<(Self, Result<Option<Seq>, String>)> {
        let path = dir.join(WATERMARK_FILE);
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if !existed {
            file.sync_all()?;
            sync_path(dir)?;
        }
        let mut bytes = Vec::with_capacity(WATERMARK_LEN);
        std::io::Read::read_to_end(&mut (&file), &mut bytes)?;
        let read = Self::decode(&bytes);
        let watermark = Self {
            path,
            file,
            written: Mutex::new(read.clone().ok().flatten()),
        };
        Ok((watermark, read))
    }

    /// Writes `seq`, and syncs it when `sync`. `only_forward`: leave a higher value
    /// as it is.
    fn set(&self, seq: Seq, only_forward: bool, sync: bool) -> std::io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if only_forward && written.is_some_and(|s| s >= seq) {
            return if sync { self.file.sync_data() } else { Ok(()) };
        }
        self.file.write_all_at(&Self::encode(seq), 0)?;
        // Only a damaged file is any other length: an overwrite in place changes no
        // metadata, so its sync is one page and a cache flush.
        if self.file.metadata()?.len() != WATERMARK_LEN as u64 {
            self.file.set_len(WATERMARK_LEN as u64)?;
        }
        if sync {
            self.file.sync_data()?;
        }
        *written = Some(seq);
        Ok(())
    }

    fn get(&self) -> Option<Seq> {
        *self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
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
        let trees = Self {
            events: db.open_tree(EVENTS_TREE)?,
            run_index: db.open_tree(RUN_INDEX_TREE)?,
            snapshots: db.open_tree(SNAPSHOTS_TREE)?,
            metrics: db.open_tree(METRICS_TREE)?,
            meta: db.open_tree(META_TREE)?,
            log_file: File::open(dir.join(SLED_LOG_FILE))?,
            blobs_synced: Mutex::new(HashMap::new()),
            db,
        };
        // A new database's files and directories are durable before anything is
        // written to them (sled syncs neither its `conf` nor the directories).
        trees.sync(dir).map_err(|(_, e)| sled::Error::Io(e))?;
        for file in ["conf", SLED_LOG_FILE, SLED_BLOBS_DIR, "."] {
            let path = dir.join(file);
            if path.exists() {
                sync_path(&path)?;
            }
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent)?;
        }
        Ok(trees)
    }

    /// The commit mark: the last sequence number of the last whole batch (`None` in a
    /// log written before the mark existed).
    fn committed(&self) -> Result<Option<Seq>, sled::Error> {
        let Some(mark) = self.meta.get(COMMITTED_KEY)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = mark.as_ref().try_into().map_err(|_| {
            sled::Error::Unsupported(format!(
                "the journal's commit mark is {} bytes, not 8",
                mark.len()
            ))
        })?;
        Ok(Some(Seq::from_be_bytes(bytes)))
    }

    /// Removes a batch a crash cut short (records past the commit mark, never
    /// acknowledged) and makes the removal durable, given how far the watermark says
    /// the log was synced (`None` when it cannot say).
    ///
    /// The watermark is written only once a batch, its mark included, is on stable
    /// storage, so a whole log's mark is never behind it. A mark behind it means the
    /// file is damaged and sled's recovery stopped inside an acknowledged batch: its
    /// records that could be read are kept, for [`EventLog::check_reach`] to name and
    /// for `--repair` to keep, rather than removed as if never acknowledged.
    fn drop_torn_batch(&self, dir: &Path, synced: Option<Seq>) -> Result<(), StoreError> {
        let sled_err = |source| StoreError::Sled {
            dir: dir.to_path_buf(),
            source,
        };
        let committed = self.committed().map_err(sled_err)?;
        if committed
            .zip(synced)
            .is_some_and(|(mark, synced)| mark < synced)
        {
            return Ok(());
        }
        let dropped = self.drop_uncommitted(committed).map_err(sled_err)?;
        if dropped > 0 {
            tracing::warn!(
                dir = %dir.display(),
                records = dropped,
                "the journal's last batch was cut short before it was acknowledged; its records are removed"
            );
            self.sync(dir).map_err(|(file, source)| StoreError::Sync {
                dir: dir.to_path_buf(),
                file,
                source,
            })?;
        }
        Ok(())
    }

    /// Removes the records past the commit mark `committed`, their index entries
    /// first, and says how many there were. The caller syncs.
    fn drop_uncommitted(&self, committed: Option<Seq>) -> Result<usize, sled::Error> {
        let Some(committed) = committed else {
            return Ok(0);
        };
        let mut torn = Vec::new();
        for item in self
            .events
            .range(committed.saturating_add(1).to_be_bytes()..)
        {
            torn.push(item?);
        }
        let Some(first) = torn.first().and_then(|(key, _)| seq_of_key(key)) else {
            return Ok(0);
        };
        // The record names its run, and so its index entry; one that does not decode
        // (or whose key is malformed) sends us through the whole index instead.
        let mut every_run_known = true;
        for (key, value) in &torn {
            let entry = seq_of_key(key).and_then(|seq| {
                let envelope = codec::decode(seq, value).ok()?;
                Some(index_key(envelope.run_id, seq))
            });
            match entry {
                Some(entry) => drop(self.run_index.remove(entry)?),
                None => every_run_known = false,
            }
        }
        if !every_run_known {
            for key in self.index_keys_from(first)? {
                self.run_index.remove(key)?;
            }
        }
        for (key, _) in &torn {
            self.events.remove(key)?;
        }
        Ok(torn.len())
    }

    /// Every index entry of a record numbered `first` or later, whatever its run (a
    /// bad record's run is unknown): a walk of the whole index.
    fn index_keys_from(&self, first: Seq) -> Result<Vec<sled::IVec>, sled::Error> {
        let mut keys = Vec::new();
        for item in self.run_index.iter() {
            let (key, _) = item?;
            if key.len() == 24 && seq_of_key(&key[16..]).is_some_and(|seq| seq >= first) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Makes everything written so far durable: sled's flush, then `fdatasync` of its
    /// log file and of every blob file written since the last sync (and of the blob
    /// directory that names them). On failure, the path that did not sync.
    fn sync(&self, dir: &Path) -> Result<(), (PathBuf, std::io::Error)> {
        self.db.flush().map_err(|e| (dir.to_path_buf(), e.into()))?;
        let log = dir.join(SLED_LOG_FILE);
        self.log_file.sync_data().map_err(|e| (log, e))?;
        self.sync_blobs(&dir.join(SLED_BLOBS_DIR))
    }

    fn sync_blobs(&self, blobs: &Path) -> Result<(), (PathBuf, std::io::Error)> {
        let entries = match std::fs::read_dir(blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err((blobs.to_path_buf(), e)),
        };
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashMap::new();
        let mut new = false;
        for entry in entries {
            let entry = entry.map_err(|e| (blobs.to_path_buf(), e))?;
            let name = entry.file_name();
            // A blob another thread is still writing may be seen (and synced) half
            // written: one whose length changed since is synced again. sled writes a
            // blob whole before the log message that points at it can be written, so
            // the sync after a flush always sees the blobs that flush points at whole.
            let len = match entry.metadata() {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err((entry.path(), e)),
            };
            if synced.get(&name) != Some(&len) {
                match sync_path(&entry.path()) {
                    Ok(()) => new = true,
                    // sled removed it meanwhile (garbage collection).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err((entry.path(), e)),
                }
            }
            present.insert(name, len);
        }
        if new {
            sync_path(blobs).map_err(|e| (blobs.to_path_buf(), e))?;
        }
        *synced = present;
        Ok(())
    }
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

/// The sequence number an 8-byte key spells, big-endian.
fn seq_of_key(key: &[u8]) -> Option<Seq> {
    Some(Seq::from_be_bytes(key.try_into().ok()?))
}

fn index_key(run_id: RunId, seq: Seq) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(run_id.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

impl EventLog {
    /// Opens (or creates) the log in `dir`.
    ///
    /// A log without a watermark (new, or written by a runyard before it kept one) gets
    /// one at its last sequence number. Opening does not check the log against its
    /// watermark: [`EventLog::check_reach`] does.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        keep_pre_open_copy(dir);
        let trees =
            Trees::open_patiently(dir, OPEN_PATIENCE).map_err(|source| StoreError::Sled {
                dir: dir.to_path_buf(),
                source,
            })?;
        let sync_err = |file: PathBuf, source| StoreError::Sync {
            dir: dir.to_path_buf(),
            file,
            source,
        };
        let (watermark, read) =
            Watermark::open(dir).map_err(|e| sync_err(dir.join(WATERMARK_FILE), e))?;
        trees.drop_torn_batch(dir, read.clone().ok().flatten())?;
        let log = Self {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                trees: RwLock::new(Some(Arc::new(trees))),
                watermark,
                watermark_damage: read.as_ref().err().cloned(),
            }),
        };
        if let Ok(None) = read {
            let last = log.last_seq()?;
            log.shared
                .watermark
                .set(last, true, true)
                .map_err(|e| sync_err(log.shared.watermark.path.clone(), e))?;
        }
        if matches!(log.check_reach(), Err(StoreError::Short { .. })) {
            log.keep_as_found();
        }
        log.remove_copy(PRE_OPEN_COPY);
        Ok(log)
    }

    /// The copy of sled's log file as the first open that found the log short saw it,
    /// while kept.
    pub fn as_found_copy(&self) -> Option<PathBuf> {
        Some(self.shared.dir.join(AS_FOUND_COPY)).filter(|p| p.exists())
    }

    /// Keeps this open's pre-open copy as [`AS_FOUND_COPY`], synced, unless an earlier
    /// open kept one.
    fn keep_as_found(&self) {
        let (copy, kept) = (
            self.shared.dir.join(PRE_OPEN_COPY),
            self.shared.dir.join(AS_FOUND_COPY),
        );
        if kept.exists() || !copy.exists() {
            return;
        }
        let kept_synced = sync_path(&copy)
            .and_then(|()| std::fs::rename(&copy, &kept))
            .and_then(|()| sync_path(&self.shared.dir));
        if let Err(e) = kept_synced {
            tracing::warn!(error = %e, file = %kept.display(), "cannot keep the damaged journal's copy");
        }
    }

    fn remove_copy(&self, name: &str) {
        match std::fs::remove_file(self.shared.dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, name, "cannot remove a copy of the journal"),
        }
    }

    /// The last sequence number the watermark says was synced (`None` when its file
    /// is damaged).
    pub fn watermark(&self) -> Option<Seq> {
        self.shared.watermark.get()
    }

    /// Whether the log reaches as far as its watermark: fails with
    /// [`StoreError::Short`] when sled recovered fewer records than were synced (a
    /// damaged file), and with [`StoreError::BadWatermark`] when the watermark itself
    /// is damaged.
    pub fn check_reach(&self) -> Result<(), StoreError> {
        if let Some(reason) = &self.shared.watermark_damage {
            return Err(StoreError::BadWatermark {
                dir: self.shared.dir.clone(),
                file: self.shared.watermark.path.clone(),
                reason: reason.clone(),
            });
        }
        let last = self.last_seq()?;
        match self.watermark() {
            Some(synced) if synced > last => Err(StoreError::Short {
                dir: self.shared.dir.clone(),
                last,
                synced,
            }),
            _ => Ok(()),
        }
    }

    /// Takes the log as it is now as its reach, for `serve --repair` once what could
    /// not be read was moved aside: the watermark becomes the last sequence number.
    pub fn accept_reach(&self) -> Result<(), StoreError> {
        let last = self.last_seq()?;
        // The records read past the last whole batch's mark were acknowledged (the
        // damage cut their batch, not a crash): they get the index entries the cut
        // may have taken (a batch writes its records before its entries), and the
        // mark moves to them, so the next open keeps them.
        let t = self.trees()?;
        let committed = t.committed().map_err(|e| self.sled_err(e))?;
        if committed < Some(last) {
            let from = committed.map_or(1, |c| c + 1);
            for item in t.events.range(from.to_be_bytes()..) {
                let (key, value) = item.map_err(|e| self.sled_err(e))?;
                let Some(seq) = seq_of_key(&key) else {
                    continue;
                };
                // One that does not decode stops the replay that follows, named.
                if let Ok(envelope) = codec::decode(seq, &value) {
                    t.run_index
                        .insert(index_key(envelope.run_id, seq), &[])
                        .map_err(|e| self.sled_err(e))?;
                }
            }
            t.meta
                .insert(COMMITTED_KEY, &last.to_be_bytes())
                .map_err(|e| self.sled_err(e))?;
            self.sync(&t)?;
        }
        self.set_watermark(last, false)?;
        self.remove_copy(AS_FOUND_COPY);
        Ok(())
    }

    fn set_watermark(&self, seq: Seq, only_forward: bool) -> Result<(), StoreError> {
        self.watermark_io(|w| w.set(seq, only_forward, true))
    }

    fn watermark_io(
        &self,
        io: impl FnOnce(&Watermark) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        io(&self.shared.watermark).map_err(|source| StoreError::Sync {
            dir: self.shared.dir.clone(),
            file: self.shared.watermark.path.clone(),
            source,
        })
    }

    /// Records, synced, that every record up to `seq` is synced (see the module
    /// docs). Call it only after the write that made them durable returned.
    pub fn advance_watermark(&self, seq: Seq) -> Result<(), StoreError> {
        if self.shared.watermark_damage.is_some() {
            return Ok(());
        }
        self.set_watermark(seq, true)
    }

    /// [`EventLog::advance_watermark`] without the sync: the value is in the page
    /// cache (it survives a crash of the process, not of the machine) until
    /// [`EventLog::sync_watermark`]. The journal actor writes it after every batch
    /// and syncs it a moment later, once for many batches.
    pub fn write_watermark(&self, seq: Seq) -> Result<(), StoreError> {
        if self.shared.watermark_damage.is_some() {
            return Ok(());
        }
        self.watermark_io(|w| w.set(seq, true, false))
    }

    /// Syncs the watermark last written.
    pub fn sync_watermark(&self) -> Result<(), StoreError> {
        self.watermark_io(|w| w.file.sync_data())
    }

    fn sync(&self, trees: &Trees) -> Result<(), StoreError> {
        trees
            .sync(&self.shared.dir)
            .map_err(|(file, source)| StoreError::Sync {
                dir: self.shared.dir.clone(),
                file,
                source,
            })
    }

    /// Inserts `key` → `value` into `tree` (a tree of this log's database) and makes it
    /// durable before returning.
    pub fn insert_durable(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        let t = self.trees()?;
        tree.insert(key, value).map_err(|e| self.sled_err(e))?;
        self.sync(&t)
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
        trees.drop_torn_batch(&self.shared.dir, self.watermark())?;
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

    /// Writes `envelopes` under `first_seq, first_seq + 1, ...` and syncs them to
    /// stable storage before returning, then advances the watermark: when this
    /// returns `Ok`, the events are durable.
    pub fn append(&self, first_seq: Seq, envelopes: &[Envelope]) -> Result<(), StoreError> {
        self.append_synced(first_seq, envelopes)?;
        if let Some(last) = (envelopes.len() as Seq).checked_sub(1) {
            self.advance_watermark(first_seq + last)?;
        }
        Ok(())
    }

    /// [`EventLog::append`] without the watermark: the events are durable when this
    /// returns `Ok`, and the caller advances the watermark afterwards (the journal
    /// actor does it after answering, so the watermark's own sync is off the path of
    /// an acknowledgment).
    ///
    /// The batch is whole or absent after a crash (see the module docs): records,
    /// then index entries, then the commit mark, in this order.
    pub fn append_synced(&self, first_seq: Seq, envelopes: &[Envelope]) -> Result<(), StoreError> {
        // An exported span (`telemetry::work`, whose target this spells out: `store`
        // sits below it), under the journal's flush when it enters one.
        let span = tracing::debug_span!(
            target: "runyard::work",
            "store.append",
            runyard.journal.first_seq = first_seq as i64,
            runyard.journal.events = envelopes.len() as i64,
            runyard.journal.bytes = tracing::field::Empty,
            runyard.outcome = tracing::field::Empty,
        );
        let _entered = span.enter();
        let written = self.write_synced(first_seq, envelopes);
        match &written {
            Ok(bytes) => {
                span.record("runyard.journal.bytes", *bytes as i64);
                span.record("runyard.outcome", "synced");
            }
            Err(_) => {
                span.record("runyard.outcome", "failed");
            }
        }
        written.map(drop)
    }

    /// [`EventLog::append_synced`]'s work; answers the bytes of the records written.
    fn write_synced(&self, first_seq: Seq, envelopes: &[Envelope]) -> Result<u64, StoreError> {
        let t = self.trees()?;
        let Some(last) = (envelopes.len() as Seq)
            .checked_sub(1)
            .map(|offset| first_seq + offset)
        else {
            return Ok(0);
        };
        let insert = |tree: &sled::Tree, key: &[u8], value: &[u8]| {
            tree.insert(key, value)
                .map(drop)
                .map_err(|e| self.sled_err(e))
        };
        let mut bytes = 0u64;
        for (offset, envelope) in envelopes.iter().enumerate() {
            let seq = first_seq + offset as Seq;
            let record = codec::encode(envelope);
            bytes += record.len() as u64;
            insert(&t.events, &seq.to_be_bytes(), &record)?;
        }
        for (offset, envelope) in envelopes.iter().enumerate() {
            let seq = first_seq + offset as Seq;
            insert(&t.run_index, &index_key(envelope.run_id, seq), &[])?;
        }
        insert(&t.meta, COMMITTED_KEY, &last.to_be_bytes())?;
        self.sync(&t)?;
        Ok(bytes)
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
            // An index entry always has its event (see the module docs); the check of
            // the run costs nothing and keeps a stray entry from showing another
            // run's record.
            if let Some(value) = value {
                let envelope = self.decode(seq, &value)?;
                if envelope.run_id == run_id {
                    out.push((seq, envelope));
                }
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
    /// snapshot taken at or after `from`, and moves the commit mark back to `from -
    /// 1`, in one transaction, and syncs. The
    /// watermark goes back to `from - 1` first, so a cut in between never leaves it
    /// past the log.
    pub fn truncate_from(&self, from: Seq) -> Result<(), StoreError> {
        self.set_watermark(from.saturating_sub(1), false)?;
        let t = self.trees()?;
        let mut events = sled::Batch::default();
        for item in t.events.range(from.to_be_bytes()..) {
            events.remove(item.map_err(|e| self.sled_err(e))?.0);
        }
        let mut index = sled::Batch::default();
        for key in t.index_keys_from(from).map_err(|e| self.sled_err(e))? {
            index.remove(key);
        }
        let mut snapshots = sled::Batch::default();
        for item in t.snapshots.range(from.to_be_bytes()..) {
            snapshots.remove(item.map_err(|e| self.sled_err(e))?.0);
        }
        let committed = from.saturating_sub(1).to_be_bytes();
        (&t.events, &t.run_index, &t.snapshots, &t.meta)
            .transaction(|(events_tx, index_tx, snapshots_tx, meta_tx)| {
                events_tx.apply_batch(&events)?;
                index_tx.apply_batch(&index)?;
                snapshots_tx.apply_batch(&snapshots)?;
                meta_tx.insert(COMMITTED_KEY, &committed[..])?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.transaction_err(e))?;
        self.sync(&t)
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

    /// Stores a snapshot of the state as of `seq` (checksummed), syncs it, and keeps
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
        self.sync(&t)
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

    /// Writes records `first..` the way a crash in the middle of an append leaves
    /// them: the records and the first `indexed` index entries, no commit mark.
    fn write_torn_batch(
        log: &EventLog,
        first: Seq,
        records: &[Vec<u8>],
        runs: &[RunId],
        indexed: usize,
    ) {
        let t = log.trees().expect("open");
        for (i, bytes) in records.iter().enumerate() {
            t.events
                .insert((first + i as Seq).to_be_bytes(), bytes.as_slice())
                .expect("insert a record");
        }
        for (i, run) in runs.iter().enumerate().take(indexed) {
            t.run_index
                .insert(index_key(*run, first + i as Seq), &[])
                .expect("insert an index entry");
        }
        t.db.flush().expect("flush");
    }

    #[test]
    fn records_of_an_acknowledged_batch_that_damage_cut_are_kept_and_repair_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        let (a, b) = (RunId::new(), RunId::new());
        log.append(
            1,
            &[
                Envelope::now(a, Event::CancelRequested),
                Envelope::now(b, Event::CancelRequested),
            ],
        )
        .expect("append");
        // What sled recovers when a damaged message inside the next batch (records 3
        // and 4, synced and acknowledged) ends its recovery: record 3, neither its
        // index entry (written after the batch's records) nor a mark for it.
        let cut = [Envelope::now(a, Event::SlotClaimed { slot: SlotId(0) })];
        let bytes: Vec<_> = cut.iter().map(codec::encode).collect();
        write_torn_batch(&log, 3, &bytes, &[a], 0);
        log.advance_watermark(4)
            .expect("the watermark of the acknowledged batch");
        drop(log);

        let log = EventLog::open(dir.path()).expect("reopen");
        assert_eq!(log.last_seq().expect("last"), 3, "record 3 was kept");
        let err = log.check_reach().expect_err("short").to_string();
        assert!(
            err.contains("ends at record 3") && err.contains("through 4"),
            "{err}"
        );
        log.accept_reach().expect("repair takes the log as it is");
        drop(log);
        let log = EventLog::open(dir.path()).expect("reopen after the repair");
        assert_eq!(
            log.last_seq().expect("last"),
            3,
            "the repair kept record 3 for later opens"
        );
        log.check_reach().expect("reach");
        let of_a: Vec<_> = log
            .read_run_after(a, 0, 10)
            .expect("a")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(of_a, [1, 3], "record 3 is indexed under its run");
    }

    #[test]
    fn a_batch_cut_short_before_its_commit_mark_is_gone_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        let (a, b) = (RunId::new(), RunId::new());
        let whole = vec![
            Envelope::now(a, Event::CancelRequested),
            Envelope::now(b, Event::CancelRequested),
        ];
        log.append(1, &whole).expect("append");
        let torn = [
            Envelope::now(a, Event::SlotClaimed { slot: SlotId(0) }),
            Envelope::now(b, Event::SlotClaimed { slot: SlotId(1) }),
        ];
        let bytes: Vec<_> = torn.iter().map(codec::encode).collect();
        write_torn_batch(&log, 3, &bytes, &[a, b], 1);
        assert_eq!(
            log.last_seq().expect("last"),
            4,
            "the torn records are there before the reopen"
        );
        drop(log);

        let log = EventLog::open(dir.path()).expect("reopen");
        assert_eq!(log.last_seq().expect("last"), 2);
        assert_eq!(
            log.index_entries()
                .expect("index")
                .iter()
                .map(|(_, s)| *s)
                .max(),
            Some(2),
            "no index entry of the torn batch is left"
        );
        // The next batch takes the torn one's numbers; no stale entry shows it on `a`.
        log.append(3, &[Envelope::now(b, Event::PauseRequested)])
            .expect("append again");
        drop(log);
        let log = EventLog::open(dir.path()).expect("reopen again");
        assert_eq!(log.last_seq().expect("last"), 3);
        let of_a: Vec<_> = log
            .read_run_after(a, 0, 10)
            .expect("a")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let of_b: Vec<_> = log
            .read_run_after(b, 0, 10)
            .expect("b")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!((of_a, of_b), (vec![1], vec![2, 3]));
    }

    #[test]
    fn a_torn_record_that_does_not_decode_loses_its_index_entry_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        let run = RunId::new();
        log.append(1, &[Envelope::now(run, Event::CancelRequested)])
            .expect("append");
        write_torn_batch(&log, 2, &[vec![0xde, 0xad]], &[run], 1);
        drop(log);
        let log = EventLog::open(dir.path()).expect("reopen");
        assert_eq!(log.last_seq().expect("last"), 1);
        assert_eq!(log.index_entries().expect("index"), vec![(run, 1)]);
    }

    #[test]
    fn a_log_without_a_commit_mark_keeps_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        let run = RunId::new();
        log.append(1, &[Envelope::now(run, Event::CancelRequested)])
            .expect("append");
        // As a runyard before the mark wrote it (whole batches, in transactions).
        let t = log.trees().expect("open");
        t.meta.remove(COMMITTED_KEY).expect("remove the mark");
        drop(t);
        let more = Envelope::now(run, Event::PauseRequested);
        write_torn_batch(&log, 2, &[codec::encode(&more)], &[run], 1);
        drop(log);
        let log = EventLog::open(dir.path()).expect("reopen");
        assert_eq!(log.last_seq().expect("last"), 2);
        assert_eq!(log.read_run_after(run, 1, 10).expect("read")[0].1, more);
    }

    #[test]
    fn a_truncation_moves_the_commit_mark_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        let run = RunId::new();
        let three: Vec<_> = (0..3)
            .map(|_| Envelope::now(run, Event::CancelRequested))
            .collect();
        log.append(1, &three).expect("append");
        log.truncate_from(2).expect("truncate");
        // Written after the truncation and not yet marked: a crash here must drop it.
        let later = Envelope::now(run, Event::PauseRequested);
        write_torn_batch(&log, 2, &[codec::encode(&later)], &[run], 1);
        drop(log);
        let log = EventLog::open(dir.path()).expect("reopen");
        assert_eq!(log.last_seq().expect("last"), 1);
        log.append(2, std::slice::from_ref(&later))
            .expect("append after");
        drop(log);
        let log = EventLog::open(dir.path()).expect("reopen again");
        assert_eq!(log.read_after(1, 10).expect("read"), vec![(2, later)]);
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

    fn cancelled(n: usize) -> Vec<Envelope> {
        (0..n)
            .map(|_| Envelope::now(RunId::new(), Event::CancelRequested))
            .collect()
    }

    #[test]
    fn the_watermark_follows_every_synced_batch_and_a_truncation_lowers_it_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        assert_eq!(log.watermark(), Some(0));
        log.append(1, &cancelled(3)).expect("append");
        assert_eq!(log.watermark(), Some(3));
        log.append_synced(4, &cancelled(2)).expect("append");
        assert_eq!(log.watermark(), Some(3), "the caller advances it");
        log.advance_watermark(5).expect("advance");
        log.advance_watermark(4).expect("an older batch's advance");
        assert_eq!(log.watermark(), Some(5), "it never goes back by itself");
        log.check_reach().expect("the log reaches its watermark");
        log.truncate_from(4).expect("truncate");
        assert_eq!(log.watermark(), Some(3));
        drop(log);
        let reopened = EventLog::open(dir.path()).expect("reopen");
        assert_eq!(reopened.watermark(), Some(3), "read back from its file");
        reopened.check_reach().expect("reach");
    }

    #[test]
    fn a_log_short_of_its_watermark_or_with_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        log.append(1, &cancelled(2)).expect("append");
        log.advance_watermark(7).expect("a watermark past the log");
        let err = log.check_reach().expect_err("short").to_string();
        assert!(
            err.contains("ends at record 2") && err.contains("through 7"),
            "{err}"
        );
        log.accept_reach().expect("accept");
        log.check_reach().expect("reach after accepting");
        drop(log);

        let path = dir.path().join(WATERMARK_FILE);
        let mut bytes = std::fs::read(&path).expect("watermark");
        bytes[6] ^= 1;
        std::fs::write(&path, &bytes).expect("damage");
        let log = EventLog::open(dir.path()).expect("open");
        let err = log.check_reach().expect_err("damaged").to_string();
        assert!(
            err.contains("checksum") && err.contains(WATERMARK_FILE),
            "{err}"
        );
        log.accept_reach().expect("repair rewrites it");
        drop(log);
        EventLog::open(dir.path())
            .expect("open")
            .check_reach()
            .expect("a rewritten watermark reads");
    }

    #[test]
    fn a_log_from_before_the_watermark_gets_one_at_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        log.append(1, &cancelled(4)).expect("append");
        drop(log);
        std::fs::remove_file(dir.path().join(WATERMARK_FILE)).expect("remove");
        let log = EventLog::open(dir.path()).expect("open");
        assert_eq!(log.watermark(), Some(4));
        log.check_reach().expect("reach");
    }
}
