//! What clients were told, and what the journal must therefore hold.
//!
//! The server answers a request only after its events are flushed, and publishes (run
//! views, `/readyz`, event lists, streams) only flushed state. So every run view, every
//! event and every sequence number a client receives is an acknowledgment: after any
//! crash it must still be there, unchanged, at the same sequence number.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};

/// Name prefix of specs that diverge on purpose (NaN loss): the only runs allowed to
/// fail or be retried.
pub const DIVERGING: &str = "diverge-";

/// One lifecycle event as a client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenEvent {
    pub run_id: String,
    pub kind: String,
    pub data: Value,
    pub at_micros: i64,
    pub source: &'static str,
}

/// What is known about one acknowledged run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub name: String,
    pub digest: String,
    /// The latest acknowledged view: its `last_seq` and state.
    pub last_seq: u64,
    pub state: String,
    /// A terminal state acknowledged, with the view's or event's sequence number.
    pub terminal: Option<(String, u64)>,
    /// A `CancelRequested` is durable: the run can only end.
    pub cancel_acked: bool,
    /// Highest sequence number of this run's events a client has seen.
    pub event_cursor: u64,
    /// Sequence number of the newest acknowledgment that told the run's state (a view,
    /// or an event that changes the state).
    pub state_seq: u64,
}

impl RunInfo {
    pub fn diverging(&self) -> bool {
        self.name.starts_with(DIVERGING)
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "failed" | "cancelled")
    }
}

/// Counters for the per-cycle summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub submits: u32,
    pub duplicates: u32,
    pub cancels: u32,
    pub pauses: u32,
    pub resumes: u32,
    pub keyed: u32,
}

/// A request sent with an `Idempotency-Key`, and the answer it got: a retry with the
/// same key must get the same answer, byte for byte, after any crash.
#[derive(Debug, Clone)]
pub struct Keyed {
    pub key: String,
    /// The path under `/api/v1`.
    pub path: String,
    pub body: Option<Value>,
    pub status: u16,
    pub text: String,
}

/// Every acknowledgment of the loop.
#[derive(Debug, Default)]
pub struct Ledger {
    pub cycle: u64,
    pub runs: BTreeMap<String, RunInfo>,
    /// Spec digest -> the run every acknowledged submission of it named.
    pub by_digest: HashMap<String, String>,
    /// Every spec sent (acknowledged or not), for deliberate duplicates.
    pub specs: Vec<Value>,
    /// Events seen since the last offline check, by sequence number.
    pub pending_events: BTreeMap<u64, SeenEvent>,
    /// `(run, submitted_seq, digest, last_seq)` of views since the last offline check.
    pub pending_views: BTreeSet<(String, u64, String, u64)>,
    /// The latest view of each run the clients were shown since the last restart
    /// check: `(last_seq, state)`, checked with `?at_seq=` after the next restart.
    pub views_unchecked: BTreeMap<String, (u64, String)>,
    /// The highest sequence number acknowledged, and by what.
    pub max_seq: (u64, String),
    /// Runs whose newest acknowledged state is pausing or paused, with no resume sent
    /// since: after a restart they are paused or ended.
    pub stopped_expected: BTreeSet<String>,
    /// Runs a resume was sent for since the last restart check (an unanswered resume
    /// may still have taken effect).
    pub resumed_since_check: BTreeSet<String>,
    /// Broken promises seen while the server ran.
    pub violations: Vec<String>,
    pub counters: Counters,
    /// Keyed answers not yet retried after a restart.
    pub keyed: Vec<Keyed>,
    /// Keyed answers retried once already (a few are retried again each restart).
    pub keyed_checked: Vec<Keyed>,
}

fn state_after_terminal(kind: &str) -> Option<&'static str> {
    match kind {
        "RunCompleted" => Some("completed"),
        "RunFailed" => Some("failed"),
        "RunCancelled" => Some("cancelled"),
        _ => None,
    }
}

fn is_terminal_state(state: &str) -> bool {
    matches!(state, "completed" | "failed" | "cancelled")
}

impl Ledger {
    fn violation(&mut self, text: String) {
        let cycle = self.cycle;
        self.violations.push(format!("cycle {cycle}: {text}"));
    }

    fn ack_seq(&mut self, seq: u64, source: &str) {
        if seq > self.max_seq.0 {
            self.max_seq = (seq, source.to_string());
        }
    }

    /// `/readyz` said every event up to `seq` is durable.
    pub fn ready(&mut self, seq: u64) {
        self.ack_seq(seq, "readyz");
    }

    /// A new server life starts.
    pub fn new_life(&mut self, cycle: u64) {
        self.cycle = cycle;
        self.counters = Counters::default();
    }

    /// A run view from any 2xx answer.
    pub fn view(&mut self, source: &'static str, view: &Value) {
        self.view_with(source, view, true);
    }

    /// A run view; `time_travel`: check it with `?at_seq=` after the next restart.
    pub fn view_with(&mut self, source: &'static str, view: &Value, time_travel: bool) {
        let parsed = (|| {
            Some((
                view["id"].as_str()?.to_string(),
                view["state"].as_str()?.to_string(),
                view["last_seq"].as_u64()?,
                view["submitted_seq"].as_u64()?,
                view["digest"].as_str()?.to_string(),
                view["name"].as_str()?.to_string(),
            ))
        })();
        let Some((id, state, last_seq, submitted_seq, digest, name)) = parsed else {
            self.violation(format!("{source}: a 2xx answer without a run view: {view}"));
            return;
        };
        self.ack_seq(last_seq, source);
        self.pending_views
            .insert((id.clone(), submitted_seq, digest.clone(), last_seq));
        let cancel = view["cancel_requested"].as_bool() == Some(true);
        let info = self.runs.entry(id.clone()).or_insert_with(|| RunInfo {
            name: name.clone(),
            digest: digest.clone(),
            last_seq: 0,
            state: String::new(),
            terminal: None,
            cancel_acked: false,
            event_cursor: 0,
            state_seq: 0,
        });
        let mut problems = Vec::new();
        if info.digest != digest || info.name != name {
            problems.push(format!(
                "{source}: run {id} was {} ({}), now {name} ({digest})",
                info.name, info.digest
            ));
        }
        if let Some((terminal, at)) = &info.terminal {
            if last_seq >= *at && state != *terminal {
                problems.push(format!(
                    "{source}: run {id} was acknowledged {terminal} at seq {at}, now {state} at seq {last_seq}"
                ));
            }
        }
        if is_terminal_state(&state) && info.terminal.is_none() {
            info.terminal = Some((state.clone(), last_seq));
        }
        info.cancel_acked |= cancel;
        if last_seq >= info.last_seq {
            info.last_seq = last_seq;
            info.state = state.clone();
        }
        if time_travel {
            let latest = self
                .views_unchecked
                .entry(id.clone())
                .or_insert((last_seq, state.clone()));
            if last_seq >= latest.0 {
                *latest = (last_seq, state.clone());
            }
        }
        // A sweep resumes its own trials (a promotion): a trial seen paused may run on.
        let trial = view["labels"]["sweep"].is_string();
        self.state_evidence(
            &id,
            last_seq,
            !trial && matches!(state.as_str(), "pausing" | "paused"),
        );
        for p in problems {
            self.violation(p);
        }
    }

    /// The answer to a submission (`201` or `200`).
    pub fn submitted(&mut self, status: u16, view: &Value) {
        self.view("submit", view);
        let (Some(id), Some(digest)) = (view["id"].as_str(), view["digest"].as_str()) else {
            return;
        };
        match self.by_digest.get(digest) {
            Some(existing) if existing != id => {
                let text = format!(
                    "the same spec (digest {digest}) was acknowledged as run {existing} and, with {status}, as run {id}"
                );
                self.violation(text);
            }
            _ => {
                self.by_digest.insert(digest.to_string(), id.to_string());
            }
        }
    }

    /// A resume is about to be sent: the run may leave `paused`.
    pub fn resuming(&mut self, id: &str) {
        self.resumed_since_check.insert(id.to_string());
        self.stopped_expected.remove(id);
    }

    /// The run was `stopped` (pausing or paused) or not as of `seq`. Older news than
    /// what is known already (answers and streams arrive out of order, streams replay
    /// history) changes nothing.
    fn state_evidence(&mut self, id: &str, seq: u64, stopped: bool) {
        let Some(info) = self.runs.get_mut(id) else {
            return;
        };
        if seq < info.state_seq {
            return;
        }
        info.state_seq = seq;
        if stopped && !info.diverging() && !self.resumed_since_check.contains(id) {
            self.stopped_expected.insert(id.to_string());
        } else {
            self.stopped_expected.remove(id);
        }
    }

    /// Events from `GET /runs/{id}/events` or a stream.
    pub fn events(&mut self, source: &'static str, events: &[Value]) {
        for event in events {
            let parsed = (|| {
                let at = event["at"].as_str()?;
                let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
                Some((
                    event["seq"].as_u64()?,
                    SeenEvent {
                        run_id: event["run_id"].as_str()?.to_string(),
                        kind: event["type"].as_str()?.to_string(),
                        data: event["data"].clone(),
                        at_micros: at.timestamp_micros(),
                        source,
                    },
                ))
            })();
            let Some((seq, seen)) = parsed else {
                self.violation(format!("{source}: not an event: {event}"));
                continue;
            };
            self.ack_seq(seq, source);
            if let Some(before) = self.pending_events.get(&seq) {
                if !same_event(before, &seen) {
                    let text = format!("seq {seq} was shown as {before:?} and later as {seen:?}");
                    self.violation(text);
                }
                continue;
            }
            if let Some(info) = self.runs.get_mut(&seen.run_id) {
                info.event_cursor = info.event_cursor.max(seq);
                if seen.kind == "CancelRequested" {
                    info.cancel_acked = true;
                }
                if let Some(state) = state_after_terminal(&seen.kind) {
                    match &info.terminal {
                        Some((other, _)) if other != state => {
                            let text = format!(
                                "cycle {}: run {} was acknowledged {other}, then {} at seq {seq}",
                                self.cycle, seen.run_id, seen.kind
                            );
                            self.violations.push(text);
                        }
                        _ => info.terminal = Some((state.to_string(), seq)),
                    }
                }
            }
            match seen.kind.as_str() {
                "PauseRequested" | "RunPaused" => self.state_evidence(&seen.run_id, seq, true),
                // Events that leave the state as it is.
                "SlotReleased" | "CheckpointSaved" | "EpochCompleted" | "EpochEvaluated"
                | "ArtifactSaved" | "RunStalled" | "StallEnded" | "CancelRequested" => {}
                _ => self.state_evidence(&seen.run_id, seq, false),
            }
            self.pending_events.insert(seq, seen);
        }
    }

    /// Known runs, for choosing targets.
    pub fn run_ids(&self, filter: impl Fn(&RunInfo) -> bool) -> Vec<String> {
        self.runs
            .iter()
            .filter(|(_, info)| filter(info))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn same_event(a: &SeenEvent, b: &SeenEvent) -> bool {
    a.run_id == b.run_id && a.kind == b.kind && a.data == b.data && a.at_micros == b.at_micros
}

/// An exported record as `(run id, type, data as the API shows it, recorded_at)`.
pub fn normalize(line: &str) -> Result<(u64, SeenEvent)> {
    let record: Value =
        serde_json::from_str(line).with_context(|| format!("export line {line}"))?;
    let seq = record["seq"].as_u64().context("seq")?;
    let run_id = record["run_id"].as_str().context("run_id")?.to_string();
    let at_micros = record["recorded_at_micros"]
        .as_i64()
        .context("recorded_at_micros")?;
    let (kind, data) = match &record["event"] {
        Value::String(unit) => (unit.clone(), json!({})),
        Value::Object(map) if map.len() == 1 => {
            let (kind, data) = map.iter().next().context("event")?;
            let mut data = data.clone();
            if kind == "RunSubmitted" {
                if let Some(spec) = data["spec"].as_str() {
                    data["spec"] = serde_json::from_str(spec).context("spec JSON")?;
                }
            }
            (kind.clone(), data)
        }
        other => bail!("unexpected event shape {other}"),
    };
    Ok((
        seq,
        SeenEvent {
            run_id,
            kind,
            data,
            at_micros,
            source: "export",
        },
    ))
}

fn hash_of(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// What the journal held at the last offline check.
#[derive(Debug, Default)]
pub struct JournalModel {
    /// Hash of each exported line, index = seq - 1.
    pub lines: Vec<u64>,
    /// Run -> (name, digest, seq of `RunSubmitted`).
    pub runs: HashMap<String, (String, String, u64)>,
    pub digests: HashMap<String, String>,
    /// Hashes of `(run, recorded_at, event)`: an event written twice shows up here.
    fingerprints: HashSet<u64>,
    /// The sweep of the loop, once submitted.
    pub sweep: Option<String>,
    /// Its trials' runs, by trial number, as `TrialCreated` journaled them.
    trial_runs: Vec<String>,
    /// Its rung results, in journal order: `(trial, rung, metric)`.
    rung_results: Vec<(u64, u64, f64)>,
    /// Its promotions and stops, in journal order, each with the rung results
    /// journaled before it: `(promoted, trial, rung left, results so far)`.
    decisions: Vec<(bool, u64, u64, usize)>,
    /// Whether `SweepCompleted` was journaled.
    sweep_completed: bool,
}

/// What one offline check found.
#[derive(Debug, Default)]
pub struct OfflineReport {
    pub last_seq: u64,
    pub new_events: u64,
    pub checked_events: usize,
    pub checked_views: usize,
    pub checked_files: usize,
}

/// Every checkpoint and artifact the journal names that must still be on disk: each
/// run's newest checkpoint and its artifacts, unless its files were deleted. Returns
/// `(path relative to the data directory, sha256)`.
pub fn files_named(export: &[String]) -> Result<Vec<(String, String)>> {
    #[derive(Default)]
    struct Files {
        checkpoint: Option<(String, String)>,
        artifacts: BTreeMap<String, (String, String)>,
    }
    let mut runs: BTreeMap<String, Files> = BTreeMap::new();
    for line in export {
        let (_, event) = normalize(line)?;
        let files = runs.entry(event.run_id.clone()).or_default();
        let named = || -> Result<(String, String)> {
            Ok((
                event.data["path"].as_str().context("path")?.to_string(),
                event.data["sha256"].as_str().context("sha256")?.to_string(),
            ))
        };
        match event.kind.as_str() {
            "CheckpointSaved" => files.checkpoint = Some(named()?),
            "ArtifactSaved" => {
                let name = event.data["name"].as_str().context("name")?.to_string();
                files.artifacts.insert(name, named()?);
            }
            "ArtifactsDeleted" => *files = Files::default(),
            _ => {}
        }
    }
    Ok(runs
        .into_values()
        .flat_map(|f| f.checkpoint.into_iter().chain(f.artifacts.into_values()))
        .collect())
}

impl JournalModel {
    /// At the end: the sweep completed, and each promotion was of a trial in the best
    /// third (η = 3) of its rung's results journaled by then, each stop of one
    /// outside it.
    pub fn check_sweep_complete(&self) -> Result<String> {
        ensure!(self.sweep_completed, "the sweep never completed");
        for (promoted, trial, rung, known) in &self.decisions {
            let mut ranked: Vec<(f64, u64)> = self.rung_results[..*known]
                .iter()
                .filter(|r| r.1 == *rung)
                .map(|r| (r.2, r.0))
                .collect();
            ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let place = ranked
                .iter()
                .position(|r| r.1 == *trial)
                .context("a decided trial has a result")?;
            let cut = ranked.len() / 3;
            ensure!(
                *promoted == (place < cut),
                "trial {trial} was {} from place {place} of {} at rung {rung}",
                if *promoted { "promoted" } else { "stopped" },
                ranked.len()
            );
        }
        let promotions = self.decisions.iter().filter(|d| d.0).count();
        Ok(format!(
            "{} trials, {} rung results, {promotions} promotions and {} stops checked",
            self.trial_runs.len(),
            self.rung_results.len(),
            self.decisions.len() - promotions
        ))
    }

    /// Checks a fresh export against the previous one and against every
    /// acknowledgment since; clears the pending acknowledgments it checked.
    pub fn check(
        &mut self,
        export: &[String],
        verified_last_seq: u64,
        ledger: &mut Ledger,
    ) -> Result<OfflineReport> {
        let last = export.len() as u64;
        ensure!(
            last == verified_last_seq,
            "export has {last} records, verify says the last seq is {verified_last_seq}"
        );
        ensure!(
            export.len() >= self.lines.len(),
            "the journal shrank from {} to {} records: durable events were lost",
            self.lines.len(),
            export.len()
        );
        for (i, old) in self.lines.iter().enumerate() {
            if hash_of(&export[i]) != *old {
                bail!(
                    "record {} changed after it was durable (found in an earlier export): now {}",
                    i + 1,
                    export[i]
                );
            }
        }
        let first_new = self.lines.len();
        for (i, line) in export.iter().enumerate().skip(first_new) {
            let (seq, event) = normalize(line)?;
            ensure!(
                seq == i as u64 + 1,
                "record {} of the export has seq {seq}: not contiguous",
                i + 1
            );
            let fingerprint = hash_of(&format!(
                "{}|{}|{}|{}",
                event.run_id, event.at_micros, event.kind, event.data
            ));
            ensure!(
                self.fingerprints.insert(fingerprint),
                "record {seq} repeats an earlier record: {line}"
            );
            match event.kind.as_str() {
                "RunSubmitted" => {
                    let digest = event.data["digest"].as_str().context("digest")?.to_string();
                    let name = event.data["name"].as_str().context("name")?.to_string();
                    if let Some(other) = self.digests.get(&digest) {
                        bail!("record {seq}: spec {digest} submitted again as run {} (first as {other})", event.run_id);
                    }
                    if self.runs.contains_key(&event.run_id) {
                        bail!("record {seq}: run {} submitted twice", event.run_id);
                    }
                    self.digests.insert(digest.clone(), event.run_id.clone());
                    self.runs.insert(event.run_id.clone(), (name, digest, seq));
                }
                "SweepSubmitted" => {
                    ensure!(
                        self.sweep.as_deref() == Some(event.run_id.as_str()),
                        "record {seq}: a sweep submitted that the loop did not acknowledge ({})",
                        event.run_id
                    );
                }
                "TrialCreated" => {
                    let trial = event.data["trial"].as_u64().context("trial")?;
                    let run = event.data["run"].as_str().context("run")?.to_string();
                    ensure!(
                        trial == self.trial_runs.len() as u64,
                        "record {seq}: trial {trial} made after {} trials",
                        self.trial_runs.len()
                    );
                    ensure!(
                        self.runs.contains_key(&run) && !self.trial_runs.contains(&run),
                        "record {seq}: trial {trial}'s run {run} is not a new run"
                    );
                    self.trial_runs.push(run);
                }
                "TrialReachedRung" => {
                    let trial = event.data["trial"].as_u64().context("trial")?;
                    let rung = event.data["rung"].as_u64().context("rung")?;
                    let before = self.rung_results.iter().filter(|r| r.0 == trial).count() as u64;
                    ensure!(
                        rung == before,
                        "record {seq}: trial {trial} reached rung {rung} after {before} rungs"
                    );
                    let metric = event.data["metric"].as_f64().unwrap_or(f64::NEG_INFINITY);
                    self.rung_results.push((trial, rung, metric));
                }
                "TrialPromoted" | "TrialStopped" => {
                    let trial = event.data["trial"].as_u64().context("trial")?;
                    let reached = self.rung_results.iter().filter(|r| r.0 == trial).count() as u64;
                    ensure!(
                        reached > 0,
                        "record {seq}: trial {trial} {} before any result",
                        event.kind
                    );
                    self.decisions.push((
                        event.kind == "TrialPromoted",
                        trial,
                        reached - 1,
                        self.rung_results.len(),
                    ));
                }
                "SweepCompleted" => {
                    ensure!(
                        !self.sweep_completed,
                        "record {seq}: the sweep completed twice"
                    );
                    self.sweep_completed = true;
                }
                "RunFailed" | "RunRetryScheduled" => {
                    let name = self.runs.get(&event.run_id).map(|r| r.0.clone());
                    let name = name.unwrap_or_default();
                    ensure!(
                        name.starts_with(DIVERGING),
                        "record {seq}: run {} ({name}), whose spec trains fine, {}: {}",
                        event.run_id,
                        event.kind,
                        event.data
                    );
                }
                _ => {}
            }
            self.lines.push(hash_of(line));
        }

        ensure!(
            ledger.max_seq.0 <= last,
            "seq {} was acknowledged (by {}) but the journal ends at {last}",
            ledger.max_seq.0,
            ledger.max_seq.1
        );
        let events = std::mem::take(&mut ledger.pending_events);
        for (seq, seen) in &events {
            let line = export
                .get((*seq as usize).wrapping_sub(1))
                .with_context(|| format!("acknowledged event {seq} is missing: {seen:?}"))?;
            let (_, stored) = normalize(line)?;
            ensure!(
                same_event(&stored, seen),
                "acknowledged event {seq} (seen by {}) differs from the journal:\n  seen:    {seen:?}\n  journal: {stored:?}",
                seen.source
            );
        }
        let views = std::mem::take(&mut ledger.pending_views);
        for (id, submitted_seq, digest, last_seq) in &views {
            let submitted = self.runs.get(id).with_context(|| {
                format!("run {id} was acknowledged but has no RunSubmitted in the journal")
            })?;
            ensure!(
                submitted.2 == *submitted_seq && submitted.1 == *digest,
                "run {id} was acknowledged as submitted at seq {submitted_seq} with digest {digest}, the journal has seq {} digest {}",
                submitted.2,
                submitted.1
            );
            let line = export
                .get((*last_seq as usize).wrapping_sub(1))
                .with_context(|| {
                    format!("run {id} was acknowledged up to seq {last_seq}, which is missing")
                })?;
            let (_, stored) = normalize(line)?;
            ensure!(
                stored.run_id == *id,
                "run {id} was acknowledged with last_seq {last_seq}, but record {last_seq} is about run {}",
                stored.run_id
            );
        }
        for (digest, id) in &ledger.by_digest {
            ensure!(
                self.digests.get(digest) == Some(id),
                "a submission of spec {digest} was acknowledged as run {id}; the journal has {:?}",
                self.digests.get(digest)
            );
        }
        Ok(OfflineReport {
            last_seq: last,
            new_events: last - first_new as u64,
            checked_events: events.len(),
            checked_views: views.len(),
            checked_files: 0,
        })
    }
}
