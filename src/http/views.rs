//! Run views kept as the bytes they were sent as, for the runs nothing live changes.
//!
//! A run's view is a pure function of its fold when the run has no live part (no
//! progress sample, no place in the queue, no live command or Slurm figures): a
//! finished or paused run reads the same until its next event. Serializing it is
//! the largest user-space cost of `GET /api/v1/runs/{id}` (a couple of kilobytes of
//! JSON, its spec and timestamps), so the bytes are kept and sent again while the
//! state still shares the same run. The state replaces a run's `Arc` whenever a fold
//! changes it while anyone else holds it, and this cache holds it: the same `Arc` is
//! the same run, and a changed run is never answered with old bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::web::Bytes;

use crate::domain::{Run, RunId};

/// Views kept before the cache starts again from empty: a bound on its memory (a
/// view is a few kilobytes) that the runs people look at fit in.
const MAX_VIEWS: usize = 4096;

/// Serialized views of runs whose view depends on their fold alone.
#[derive(Debug, Default)]
pub struct ViewCache {
    views: Mutex<HashMap<RunId, (Arc<Run>, Bytes)>>,
}

impl ViewCache {
    /// The bytes of `run`'s view: those kept for this very run when `fold_only` (the
    /// view has no live part), else what `write` makes, kept when `fold_only`.
    pub fn body<E>(
        &self,
        run: &Arc<Run>,
        fold_only: bool,
        write: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Bytes, E> {
        if !fold_only {
            return write().map(Bytes::from);
        }
        if let Some((kept, bytes)) = self.lock().get(&run.id) {
            if Arc::ptr_eq(kept, run) {
                return Ok(bytes.clone());
            }
        }
        let bytes = Bytes::from(write()?);
        let mut views = self.lock();
        if views.len() >= MAX_VIEWS {
            views.clear();
        }
        views.insert(run.id, (Arc::clone(run), bytes.clone()));
        Ok(bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, (Arc<Run>, Bytes)>> {
        self.views
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Envelope, Event, State};

    fn state(events: &[Envelope]) -> State {
        State::from_events(events.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)))
    }

    #[test]
    fn the_same_run_is_written_once_and_a_changed_or_live_one_again() {
        let id = RunId::new();
        let submitted = Envelope::now(
            id,
            Event::RunSubmitted {
                name: "r".into(),
                digest: "d".into(),
                spec: "{}".into(),
            },
        );
        let cache = ViewCache::default();
        let writes = std::cell::Cell::new(0);
        let write = |text: &str| {
            writes.set(writes.get() + 1);
            Ok::<_, std::convert::Infallible>(text.as_bytes().to_vec())
        };

        let before = state(std::slice::from_ref(&submitted));
        let run = before.shared_run(id).expect("run");
        assert_eq!(cache.body(run, true, || write("one")).unwrap(), "one");
        assert_eq!(cache.body(run, true, || write("two")).unwrap(), "one");
        assert_eq!(writes.get(), 1, "the same run is written once");

        // The run after one more event is another Arc: written again.
        let after = state(&[
            submitted,
            Envelope::now(
                id,
                Event::RunCancelled {
                    reason: "test".into(),
                },
            ),
        ]);
        let changed = after.shared_run(id).expect("run");
        assert_eq!(
            cache.body(changed, true, || write("three")).unwrap(),
            "three"
        );
        // A view with a live part is never kept nor taken from the cache.
        assert_eq!(
            cache.body(changed, false, || write("four")).unwrap(),
            "four"
        );
        assert_eq!(
            cache.body(changed, true, || write("five")).unwrap(),
            "three"
        );
        assert_eq!(writes.get(), 3);
    }
}
