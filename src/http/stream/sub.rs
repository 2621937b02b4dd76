//! One event stream as its hub (or the task catching it up) keeps it.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::slot;
use super::{Connected, End, Filter, Frames, Sent};
use crate::domain::Seq;
use crate::http::AppState;

/// Hands a stream (back) to the hub of the worker it was started on.
pub(super) type Door = mpsc::UnboundedSender<Sub>;

/// One stream as its hub keeps it.
pub(super) struct Sub {
    /// What it sends.
    pub filter: Filter,
    /// The last sequence number handed to (or skipped for) its connection.
    pub cursor: Seq,
    /// The last sample sent of each run (live runs only; pruned every tick).
    pub sent: Sent,
    /// Its hand-over to the connection.
    pub tx: slot::Sender<Frames>,
    /// Since when it has had something to hand over that its slot had no room for
    /// (or since its last chunk, while more waits): a keep-alive interval of this
    /// and it is too slow.
    pub waiting_since: Option<Instant>,
    /// Whether it has caught up with the journal once: chunks of [`CHUNK_BYTES`]
    /// until then, [`LIVE_CHUNK_BYTES`] after.
    pub live: bool,
    /// When `?every=` progress is next due.
    pub progress_due: Instant,
    /// Counted as connected while it lives.
    _connected: Connected,
}

impl Sub {
    /// A stream from after `cursor`.
    pub fn new(state: &AppState, filter: Filter, cursor: Seq, tx: slot::Sender<Frames>) -> Self {
        let progress_due = Instant::now() + filter.every.unwrap_or_default();
        Self {
            filter,
            cursor,
            sent: Sent::default(),
            tx,
            waiting_since: None,
            live: false,
            progress_due,
            _connected: Connected::new(Arc::clone(&state.streams)),
        }
    }

    /// Ends the stream: a `resume` event naming its cursor when it was too slow.
    pub fn end(self, state: &AppState, end: End) {
        let last = match end {
            End::Slow => {
                state.streams.count_slow();
                tracing::info!(
                    after = self.cursor,
                    "stream client too slow; disconnected with the cursor to resume from"
                );
                let mut chunk = String::new();
                super::sse_event(
                    &mut chunk,
                    None,
                    "resume",
                    &serde_json::json!({ "after": self.cursor }).to_string(),
                );
                Some(vec![chunk.into()])
            }
            End::Gone | End::Done => None,
        };
        self.tx.watch(None);
        self.tx.finish(last);
    }
}
