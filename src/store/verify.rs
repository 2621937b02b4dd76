//! `runyard journal verify`: every check a journal should pass, in one pass — record
//! checksums, contiguous sequence numbers, the per-run index against the records, every
//! event allowed by the state before it, a slot ledger where only live runs hold
//! slots, and a log that reaches as far as its watermark says it was synced.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::log::EventLog;
use crate::domain::{RunId, Seq, State};

/// Problems listed in full; the rest are only counted.
const MAX_LISTED: usize = 50;

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Records read (corrupt ones included).
    pub records: u64,
    /// The last sequence number.
    pub last_seq: Seq,
    /// Runs found.
    pub runs: usize,
    /// Runs by state.
    pub states: BTreeMap<&'static str, usize>,
    /// Entries in the per-run index.
    pub index_entries: usize,
    /// Slots held at the end of the log.
    pub slots_held: usize,
    /// Problems found, the first ones in full.
    pub problems: Vec<String>,
    /// Problems found in all.
    pub problem_count: usize,
}

impl VerifyReport {
    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        }
    }

    /// Whether every check passed.
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }
}

/// Checks the whole log.
pub fn verify(log: &EventLog) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut state = State::default();
    let mut records: HashSet<(RunId, Seq)> = HashSet::new();
    let mut previous: Seq = 0;
    let mut problems = Vec::new();
    log.scan(|record| {
        report.records += 1;
        match record {
            Err(e) => problems.push(e.to_string()),
            Ok((seq, envelope)) => {
                if seq != previous + 1 {
                    problems.push(format!("record {seq} follows record {previous}: sequence numbers are not contiguous"));
                }
                previous = seq;
                if let Err(e) = state.check(envelope.run_id, &envelope.event) {
                    problems.push(format!("record {seq} ({}): {e}", envelope.event.kind().name()));
                }
                state.apply(seq, &envelope);
                records.insert((envelope.run_id, seq));
            }
        }
    });
    if let Err(e) = log.check_reach() {
        problems.insert(0, e.to_string());
    }
    for p in problems {
        report.problem(p);
    }
    report.last_seq = previous;
    match log.index_entries() {
        Err(e) => report.problem(format!("per-run index unreadable: {e}")),
        Ok(entries) => {
            report.index_entries = entries.len();
            let indexed: HashSet<(RunId, Seq)> = entries.into_iter().collect();
            for (run, seq) in indexed.difference(&records) {
                report.problem(format!(
                    "index entry ({run}, {seq}) has no record of that run"
                ));
            }
            for (run, seq) in records.difference(&indexed) {
                report.problem(format!(
                    "record {seq} of run {run} is missing from the per-run index"
                ));
            }
        }
    }
    for run in state.runs() {
        *report.states.entry(run.state.name()).or_default() += 1;
    }
    report.runs = state.len();
    for (slot, holding) in state.slots().held() {
        report.slots_held += 1;
        let live = state.run(holding.run_id).is_some_and(|r| r.state.is_live());
        if !live {
            let what = state
                .run(holding.run_id)
                .map_or("unknown", |r| r.state.name());
            report.problem(format!(
                "{slot} is held by run {} (since record {}), which is {what}",
                holding.run_id, holding.since
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Envelope, Event, SlotId};

    fn submitted(digest: &str) -> Event {
        Event::RunSubmitted {
            name: "n".into(),
            digest: digest.into(),
            spec: "{}".into(),
        }
    }

    #[test]
    fn a_clean_log_passes_and_each_kind_of_damage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open(dir.path()).expect("open");
        let (a, b) = (RunId::new(), RunId::new());
        log.append(
            1,
            &[
                Envelope::now(a, submitted("a")),
                Envelope::now(a, Event::SlotClaimed { slot: SlotId(0) }),
                Envelope::now(b, submitted("b")),
            ],
        )
        .expect("append");
        let report = verify(&log);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!((report.records, report.runs, report.slots_held), (3, 2, 1));

        // An event the state does not allow, and a slot held by a run that ended.
        log.append(
            4,
            &[
                Envelope::now(b, Event::SlotReleased { slot: SlotId(0) }),
                Envelope::now(a, Event::RunCancelled { reason: "x".into() }),
            ],
        )
        .expect("append");
        let report = verify(&log);
        assert_eq!(report.problem_count, 2, "{:?}", report.problems);
        assert!(
            report.problems[0].contains("record 4 (SlotReleased)"),
            "{:?}",
            report.problems
        );
        assert!(
            report.problems[1].contains("which is cancelled"),
            "{:?}",
            report.problems
        );

        // A corrupt record and a gap, made behind the log's back.
        drop(log);
        let db = sled::open(dir.path()).expect("reopen");
        let tree = db.open_tree("events").expect("tree");
        let mut bytes = tree
            .get(2u64.to_be_bytes())
            .expect("get")
            .expect("some")
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        tree.insert(2u64.to_be_bytes(), bytes).expect("corrupt");
        tree.remove(3u64.to_be_bytes()).expect("gap");
        db.flush().expect("flush");
        drop(tree);
        drop(db);
        let log = EventLog::open(dir.path()).expect("open");
        let report = verify(&log);
        let text = report.problems.join("\n");
        assert!(text.contains("record 2 fails its checksum"), "{text}");
        assert!(text.contains("not contiguous"), "{text}");
        assert!(text.contains("has no record of that run"), "{text}");
    }
}
