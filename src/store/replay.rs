//! Replay: rebuilding state by folding every record of the log.

use std::time::{Duration, Instant};

use super::log::{EventLog, StoreError};
use crate::domain::State;

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records folded.
    pub events: u64,
    /// Runs found.
    pub runs: usize,
    /// Time the replay took.
    pub elapsed: Duration,
    /// The snapshot replay started from, if one was valid.
    pub from_snapshot: Option<crate::domain::Seq>,
}

/// Rebuilds the state: from the newest valid snapshot, then every record after it
/// (from scratch when there is none). A record that fails its checksum stops the
/// replay with an error naming its sequence number and the directory; a snapshot that
/// fails its checksum or does not decode is skipped for an older one.
pub fn replay(log: &EventLog) -> Result<(State, ReplayStats), StoreError> {
    // An exported span (`telemetry::work`, whose target this spells out: `store` sits
    // below it), under whatever is being done when it is entered (the start's recovery,
    // the journal's after a failed write).
    let span = tracing::debug_span!(
        target: "runyard::work",
        "store.replay",
        runyard.journal.events = tracing::field::Empty,
        runyard.runs = tracing::field::Empty,
        runyard.journal.from_snapshot = tracing::field::Empty,
        runyard.outcome = tracing::field::Empty,
    );
    let _entered = span.enter();
    let replayed = replay_all(log);
    match &replayed {
        Ok((_, stats)) => {
            span.record("runyard.journal.events", stats.events as i64);
            span.record("runyard.runs", stats.runs as i64);
            if let Some(seq) = stats.from_snapshot {
                span.record("runyard.journal.from_snapshot", seq as i64);
            }
            span.record("runyard.outcome", "replayed");
        }
        Err(_) => {
            span.record("runyard.outcome", "failed");
        }
    }
    replayed
}

fn replay_all(log: &EventLog) -> Result<(State, ReplayStats), StoreError> {
    let started = Instant::now();
    let last = log.last_seq()?;
    let mut from_snapshot = None;
    let mut state = State::default();
    for snapshot in log.snapshots() {
        match snapshot.map(|(seq, payload)| (seq, State::from_snapshot(&payload))) {
            Ok((seq, Ok(restored))) if seq <= last && restored.last_seq() == seq => {
                state = restored;
                from_snapshot = Some(seq);
                break;
            }
            Ok((seq, Ok(_))) => {
                tracing::warn!(seq, last, "snapshot past the end of the log; not used")
            }
            Ok((seq, Err(e))) => {
                tracing::warn!(seq, error = %e, "snapshot does not decode; not used")
            }
            Err(e) => tracing::warn!(error = %e, "snapshot unreadable; not used"),
        }
    }
    let mut events = 0u64;
    log.for_each_after(from_snapshot.unwrap_or(0), |seq, envelope| {
        state.apply(seq, &envelope);
        events += 1;
        Ok(())
    })?;
    let stats = ReplayStats {
        events,
        runs: state.len(),
        elapsed: started.elapsed(),
        from_snapshot,
    };
    Ok((state, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Envelope, Event, RunId, SlotId};

    #[test]
    fn replay_from_a_snapshot_equals_replay_from_scratch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        let mut seq = 0;
        let mut append = |run: RunId, event: Event| {
            seq += 1;
            log.append(seq, &[Envelope::now(run, event)])
                .expect("append");
        };
        let runs: Vec<RunId> = (0..4).map(|_| RunId::new()).collect();
        for (i, run) in runs.iter().enumerate() {
            append(
                *run,
                Event::RunSubmitted {
                    name: format!("r{i}"),
                    digest: format!("d{i}"),
                    spec: "{\"checkpoint\":{\"keep\":2}}".into(),
                },
            );
        }
        append(runs[0], Event::SlotClaimed { slot: SlotId(0) });
        let (middle, _) = replay(&log).expect("replay");
        log.write_snapshot(middle.last_seq(), &middle.to_snapshot(), 2)
            .expect("snapshot");
        append(
            runs[0],
            Event::RunStarted {
                attempt: 1,
                slot: SlotId(0),
                device: "cpu".into(),
            },
        );
        append(runs[1], Event::RunCancelled { reason: "x".into() });

        let (from_snapshot, stats) = replay(&log).expect("replay");
        assert_eq!(stats.from_snapshot, Some(5));
        assert_eq!(
            stats.events, 2,
            "only the events after the snapshot are applied"
        );
        let scratch = State::from_events(
            log.read_after(0, usize::MAX)
                .expect("read")
                .iter()
                .map(|(s, e)| (*s, e)),
        );
        assert_eq!(from_snapshot.fingerprint(), scratch.fingerprint());
        assert_eq!(from_snapshot.queue(), scratch.queue());
    }
}
