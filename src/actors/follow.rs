//! One follower of the journal: the durable records after a cursor, for every reader
//! that follows the log as it grows (the event streams, the tracer).
//!
//! The journal puts each batch it has made durable into [`Recent`], a window of the
//! newest [`RECENT`] records, before it moves the tail notification on. A follower
//! whose cursor is inside the window takes its records from there: shared, never
//! read from the log, and each with a slot for its encoded form ([`Followed::frame`])
//! that the first follower to need it fills, so ten thousand subscribers to one feed
//! read and encode a record once. A follower further behind (a client catching up on
//! history, one back from a long stall) reads the log from its own position until it
//! reaches the window, so it still gets exactly what it missed. The reading side is
//! [`JournalReader::records_after`](super::journal::JournalReader::records_after) and
//! [`JournalReader::follow`](super::journal::JournalReader::follow).

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, RwLock};

use crate::domain::{Envelope, RunId, Seq};

/// Records the window keeps: the newest durable ones.
pub const RECENT: usize = 4096;

/// A durable record as followers share it.
#[derive(Debug)]
pub struct Followed {
    /// Its sequence number.
    pub seq: Seq,
    /// The record.
    pub envelope: Envelope,
    /// Its encoded form, made once by the first follower that needs it.
    frame: OnceLock<bytes::Bytes>,
}

impl Followed {
    /// A record read from the log or just made durable.
    pub fn new(seq: Seq, envelope: Envelope) -> Arc<Self> {
        Arc::new(Self {
            seq,
            envelope,
            frame: OnceLock::new(),
        })
    }

    /// The record encoded by `encode`, made at most once for all who share it. Every
    /// caller must encode the same way (there is one encoding: the event streams').
    pub fn frame(&self, encode: impl FnOnce(Seq, &Envelope) -> bytes::Bytes) -> bytes::Bytes {
        self.frame
            .get_or_init(|| encode(self.seq, &self.envelope))
            .clone()
    }
}

/// The window of the newest durable records, filled by the journal.
#[derive(Debug, Default)]
pub struct Recent {
    records: RwLock<VecDeque<Arc<Followed>>>,
}

impl Recent {
    /// Adds a batch the journal has made durable (sequence numbers following the
    /// window's last); the oldest records leave the window beyond [`RECENT`]. A batch
    /// that does not follow on starts the window again from it.
    pub fn push(&self, first_seq: Seq, envelopes: &[Envelope]) {
        let mut records = self.write();
        if records.back().is_some_and(|last| last.seq + 1 != first_seq) {
            records.clear();
        }
        let skip = envelopes.len().saturating_sub(RECENT);
        for (i, envelope) in envelopes.iter().enumerate().skip(skip) {
            records.push_back(Followed::new(first_seq + i as Seq, envelope.clone()));
        }
        while records.len() > RECENT {
            records.pop_front();
        }
    }

    /// Forgets every record: after the journal reopened its log, followers read it
    /// again rather than trust a window that may not match it.
    pub fn clear(&self) {
        self.write().clear();
    }

    /// Up to `limit` records after `after` (only `run`'s, when given), when the
    /// window reaches back to `after`; `None` when it does not.
    pub fn after(
        &self,
        after: Seq,
        limit: usize,
        run: Option<RunId>,
    ) -> Option<Vec<Arc<Followed>>> {
        let records = self
            .records
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = records.front()?.seq;
        if after.saturating_add(1) < first {
            return None;
        }
        let from = usize::try_from(after.saturating_add(1) - first).unwrap_or(usize::MAX);
        Some(
            records
                .iter()
                .skip(from)
                .filter(|r| run.is_none_or(|id| r.envelope.run_id == id))
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// Every record after `after`, or every record when the window does not reach
    /// back to `after`.
    pub fn since(&self, after: Seq) -> Vec<Arc<Followed>> {
        let records = self
            .records
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = records.front().map_or(0, |r| r.seq);
        let from =
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        records.iter().skip(from).cloned().collect()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, VecDeque<Arc<Followed>>> {
        self.records
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Event;

    fn envelopes(n: usize, run: RunId) -> Vec<Envelope> {
        (0..n)
            .map(|_| {
                Envelope::now(
                    run,
                    Event::RunCancelled {
                        reason: "test".into(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_window_answers_from_its_records_and_not_before_them() {
        let recent = Recent::default();
        let (a, b) = (RunId::new(), RunId::new());
        recent.push(1, &envelopes(3, a));
        recent.push(4, &envelopes(2, b));
        let seqs = |v: Vec<Arc<Followed>>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(
            recent.after(0, 10, None).map(seqs),
            Some(vec![1, 2, 3, 4, 5])
        );
        assert_eq!(recent.after(2, 2, None).map(seqs), Some(vec![3, 4]));
        assert_eq!(recent.after(1, 10, Some(b)).map(seqs), Some(vec![4, 5]));
        assert_eq!(recent.after(5, 10, None).map(seqs), Some(vec![]));
        // A batch that does not follow on starts the window again.
        recent.push(10, &envelopes(1, a));
        assert_eq!(recent.after(5, 10, None).map(seqs), None);
        assert_eq!(recent.after(9, 10, None).map(seqs), Some(vec![10]));
    }

    #[test]
    fn the_window_keeps_the_newest_records_and_shares_their_frames() {
        let recent = Recent::default();
        let run = RunId::new();
        recent.push(1, &envelopes(RECENT + 10, run));
        assert!(
            recent.after(9, 1, None).is_none(),
            "record 10 left the window"
        );
        let first = recent.after(10, 1, None).expect("in the window");
        assert_eq!(first[0].seq, 11);
        let again = recent.after(10, 1, None).expect("in the window");
        let mut encoded = 0;
        for record in [&first[0], &again[0]] {
            record.frame(|seq, _| {
                encoded += 1;
                bytes::Bytes::from(seq.to_string())
            });
        }
        assert_eq!(encoded, 1, "one encoding for both followers");
        recent.clear();
        assert!(recent.after(10, 1, None).is_none());
    }
}
