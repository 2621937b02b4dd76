//! The event streams' shared counters and encodings: one [`StreamStats`] per server,
//! in its [`AppState`](crate::http::AppState).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::web;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::domain::{Progress, RunId, Seq};

/// Journal reads of all streams at once. Reads run on blocking threads: a burst of
/// clients catching up (every dashboard reconnecting after a restart) would otherwise
/// start a thread each, up to the runtime's limit, and keep them for a while.
const CONCURRENT_READS: usize = 4;

/// Counters of the event streams, shared by all of them (for metrics).
#[derive(Debug)]
pub struct StreamStats {
    /// Permits for journal reads ([`CONCURRENT_READS`]).
    pub(in crate::http) reads: tokio::sync::Semaphore,
    opened: AtomicU64,
    connected: AtomicU64,
    disconnects: AtomicU64,
    slow_disconnects: AtomicU64,
    /// The newest `progress` event of each run, encoded once and shared: with many
    /// subscribers, a tick is serialized once per run, not once per subscriber.
    encoded: Mutex<FxHashMap<RunId, (Progress, web::Bytes)>>,
}

impl Default for StreamStats {
    fn default() -> Self {
        Self {
            reads: tokio::sync::Semaphore::new(CONCURRENT_READS),
            opened: AtomicU64::default(),
            connected: AtomicU64::default(),
            disconnects: AtomicU64::default(),
            slow_disconnects: AtomicU64::default(),
            encoded: Mutex::default(),
        }
    }
}

/// A copy of [`StreamStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamCounts {
    /// Streams opened since start.
    pub opened: u64,
    /// Streams open now.
    pub connected: u64,
    /// Streams ended since start, for any reason (client gone, run ended, too slow).
    pub disconnects: u64,
    /// Streams ended because the client did not take its events in time.
    pub slow_disconnects: u64,
}

impl StreamStats {
    /// The `progress` event of `progress`, from the shared cache when another stream
    /// encoded it already.
    pub(in crate::http) fn encoded(&self, id: RunId, progress: &Progress) -> web::Bytes {
        let cached = self
            .encoded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&id)
            .filter(|(p, _)| p == progress)
            .map(|(_, event)| event.clone());
        if let Some(event) = cached {
            return event;
        }
        let mut data = serde_json::to_value(progress).unwrap_or_default();
        if let Some(obj) = data.as_object_mut() {
            obj.insert("run_id".into(), serde_json::Value::String(id.to_string()));
        }
        let mut out = String::new();
        sse_event(&mut out, None, "progress", &data.to_string());
        let event = web::Bytes::from(out);
        self.encoded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, (*progress, event.clone()));
        event
    }

    /// Forgets a run's cached event once the run has ended.
    pub(in crate::http) fn forget(&self, id: RunId) {
        self.encoded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&id);
    }

    /// Counts a stream ended because its client did not take its events in time.
    pub(in crate::http) fn count_slow(&self) {
        self.slow_disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> StreamCounts {
        StreamCounts {
            opened: self.opened.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            slow_disconnects: self.slow_disconnects.load(Ordering::Relaxed),
        }
    }
}

/// Counts a stream as connected while it lives (the log streams too).
pub(in crate::http) struct Connected(Arc<StreamStats>);

impl Connected {
    pub(in crate::http) fn new(stats: Arc<StreamStats>) -> Self {
        stats.opened.fetch_add(1, Ordering::Relaxed);
        stats.connected.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
        self.0.disconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends one server-sent event to `out`.
pub(in crate::http) fn sse_event(out: &mut String, id: Option<Seq>, name: &str, data: &str) {
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = writeln!(out, "event: {name}");
    for line in data.lines() {
        let _ = writeln!(out, "data: {line}");
    }
    out.push('\n');
}
