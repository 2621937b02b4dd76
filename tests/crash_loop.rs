//! The crash loop: the real server is killed with SIGKILL at random moments while runs
//! are submitted, trained, cancelled, paused and resumed, then restarted on the same
//! data directory, again and again. After every kill and every restart:
//!
//! - `runyard journal verify` passes (checksums, contiguity, run index, slot ledger);
//! - the exported journal keeps every record of the previous export unchanged, its
//!   sequence numbers run 1..=last without a gap, no record is written twice, every
//!   run and every spec digest is submitted once, and only runs built to diverge fail;
//! - every event a client was shown (event lists, streams) is in it at the same
//!   sequence number with the same content, every run view and `/readyz` seq a client
//!   got is covered by it, and every acknowledged submission names one run;
//! - after the restart: replay covered the whole journal, the slot ledger is
//!   consistent and repaired nothing, every acknowledged run is there, a run
//!   acknowledged as ended is still ended the same way, an acknowledged cancel has
//!   ended the run, an acknowledged pause left it paused (or ended), nothing is left
//!   pausing, and each run shown to a client reads the same at that sequence number
//!   (`?at_seq=`).
//!
//! A sweep runs through it all (ASHA, its trials runs among the clients' runs, which
//! the clients cancel, pause and resume like any other): after every kill the journal
//! holds each trial once, numbered without a gap, each of its runs made once, each
//! rung result once and the completion at most once; after every restart the sweep
//! shows every trial and rung result it showed before, unchanged and in order.
//!
//! At the end the server runs once more until every run has ended (paused runs are
//! resumed) and the sweep has completed, each of its promotions of a trial in the
//! best third of its rung as journaled by then: completed runs trained every epoch, a
//! few runs that were interrupted are trained again uninterrupted and must end with
//! the same weights.
//!
//! Clients also send some of their requests with an `Idempotency-Key`: after each
//! restart, every keyed answer given since the last one is asked for again with the
//! same key and must come back byte for byte. After each kill, every checkpoint and
//! artifact the journal names for a run whose files were not deleted is on disk with
//! its SHA-256.
//!
//! `RUNYARD_CRASH_CYCLES` (default 25) sets the number of kills, `RUNYARD_CRASH_SEED`
//! the seed of every choice but the exact moment a kill lands (`make crash-loop N=1000`).
//!
//! # The power loop
//!
//! `power_loop` is the same loop with the data directory on `scripts/cutfs.py`, a FUSE
//! filesystem that keeps every write in memory until its file is fsynced: after each
//! SIGKILL the filesystem is cut (killed and mounted again on what it had synced), as
//! a power cut would leave the disk, and every check above runs on what survived.
//! `RUNYARD_POWER_CYCLES` (default 20) and `RUNYARD_POWER_SEED` set it (`make
//! power-loop N=500`); with `RUNYARD_POWER_FIGURES=FILE` it writes its rate there as
//! the figure `power_cut_cycles_per_min` (`make bench` does). Where the filesystem cannot be mounted (no `/dev/fuse`, no
//! fusepy: `scripts/setup-cutfs.sh`), it prints `SKIPPED` and why, or fails when
//! `RUNYARD_REQUIRE_POWER=1` (as `make test` sets it).

#[path = "crash_loop/activity.rs"]
mod activity;
#[path = "crash_loop/cutfs.rs"]
mod cutfs;
#[path = "crash_loop/ledger.rs"]
mod ledger;
#[path = "crash_loop/server.rs"]
mod server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use activity::Clients;
use ledger::{JournalModel, Ledger, DIVERGING};
use server::Server;

/// Kills when `RUNYARD_CRASH_CYCLES` is not set.
const DEFAULT_CYCLES: u64 = 25;

/// Kills and cuts when `RUNYARD_POWER_CYCLES` is not set.
const DEFAULT_POWER_CYCLES: u64 = 20;

/// A safety net for anything the loop waits on; never the expected wait.
const SAFETY: Duration = Duration::from_secs(120);

/// How often a wait re-reads the runs.
const POLL: Duration = Duration::from_millis(50);

/// Most runs left unfinished before the clients stop submitting new ones.
const MAX_UNFINISHED: usize = 8;

/// Interrupted runs trained again without a break at the end.
const REFERENCE_RUNS: usize = 3;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}")),
    )
}

/// When the SIGKILL lands.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after the process started: during replay, recovery or dispatch.
    Startup(Duration),
    /// This long after the clients started.
    Activity(Duration),
}

impl Kill {
    fn draw(rng: &mut ChaCha8Rng) -> Self {
        let ms = |rng: &mut ChaCha8Rng, range: std::ops::Range<u64>| {
            Duration::from_millis(rng.random_range(range))
        };
        match rng.random_range(0..100) {
            0..=9 => Kill::Startup(ms(rng, 0..600)),
            10..=74 => Kill::Activity(ms(rng, 0..400)),
            75..=94 => Kill::Activity(ms(rng, 400..1500)),
            _ => Kill::Activity(ms(rng, 1500..4000)),
        }
    }
}

struct Loop {
    seed: u64,
    dir: PathBuf,
    data_dir: PathBuf,
    http: reqwest::Client,
    ledger: Arc<Mutex<Ledger>>,
    model: JournalModel,
    /// Logs of the servers started, newest last.
    logs: Vec<PathBuf>,
    /// What `journal verify` said after the last kill.
    verified: Option<server::Verified>,
    /// The filesystem the data directory is on, in the power loop.
    cutfs: Option<cutfs::CutFs>,
    /// The sweep, once its submission was acknowledged, and its view at the last
    /// restart check.
    sweep: Option<(String, Value)>,
}

/// The sweep that runs through the loop: ASHA over three rungs (1, 3, 9 epochs), one
/// trial at a time, small synthetic trials.
fn sweep_spec() -> Value {
    serde_json::json!({
        "name": "crash-sweep",
        "base": {
            "name": "crash-trial",
            "model": {"kind": "mlp", "hidden": [16]},
            "data": {"kind": "synthetic", "samples": 512, "features": 8, "classes": 3, "seed": 4},
            "validation": {"fraction": 0.2},
            "optimizer": {"kind": "adam", "lr": 0.01},
            "epochs": 9,
            "batch_size": 32,
            "seed": 9,
            "checkpoint": {"every_batches": 4, "keep": 2}
        },
        "space": {
            "optimizer.lr": {"loguniform": [0.001, 0.05]},
            "model.hidden": {"choice": [[8], [16], [32]]}
        },
        "searcher": {"kind": "asha", "metric": "val_accuracy", "min_epochs": 1, "max_epochs": 9,
                     "reduction_factor": 3, "max_trials": 9, "max_concurrent": 1},
        "seed": 21
    })
}

impl Loop {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_server(&mut self, cycle: u64, snapshot_every: u64) -> Result<Server> {
        let log = self.dir.join(format!("server-{cycle:04}.log"));
        self.logs.push(log.clone());
        Server::spawn(&self.data_dir, log, snapshot_every)
    }

    async fn get(&self, address: &str, path: &str) -> Result<Value> {
        let response = self
            .http
            .get(format!("{address}{path}"))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("GET {path}: body"))?;
        ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(body)
    }

    /// Fails with every broken promise the clients noticed.
    fn check_violations(&self) -> Result<()> {
        let violations = std::mem::take(&mut self.ledger().violations);
        if !violations.is_empty() {
            bail!(
                "{} broken promises:\n  {}",
                violations.len(),
                violations.join("\n  ")
            );
        }
        Ok(())
    }

    /// Right after `/readyz`, before any request: the state the restart left.
    async fn check_restart(&mut self, address: &str, ready_seq: u64) -> Result<usize> {
        let audit = self.get(address, "/api/v1/slots/audit").await?;
        let slots = self.get(address, "/api/v1/slots").await?;
        let runs = self.get(address, "/api/v1/runs").await?;
        let runs = runs.as_array().context("runs")?;
        self.ledger().ready(ready_seq);

        let journal_last = self.model.lines.len() as u64;
        let replay = &audit["last_replay"];
        let replayed = replay["from_snapshot"].as_u64().unwrap_or(0)
            + replay["events"].as_u64().context("events")?;
        ensure!(
            replayed == journal_last,
            "replay covered {replayed} records, the journal has {journal_last}: {replay}"
        );
        let recovery = replay["recovery"].as_array().context("recovery")?;
        ensure!(
            recovery.iter().all(|r| r["repair"] == false),
            "the restart had to repair the slot ledger: {replay}"
        );
        if let Some(before) = &self.verified {
            let released = recovery
                .iter()
                .filter(|r| r["event"] == "SlotReleased")
                .count() as u64;
            ensure!(
                released == before.slots_held,
                "{} slots were held at the kill, the restart released {released}: {replay}",
                before.slots_held
            );
            let live = before.count(&["starting", "running", "pausing"]);
            let stopped = recovery.len() as u64 - released;
            ensure!(
                stopped >= live,
                "{live} runs were live at the kill, the restart re-queued, paused or cancelled {stopped}: {replay}"
            );
        }
        ensure!(
            ready_seq >= journal_last + recovery.len() as u64,
            "ready at seq {ready_seq}, but the journal had {journal_last} records and {} recovery events were due",
            recovery.len()
        );

        let by_id: HashMap<&str, &Value> = runs
            .iter()
            .filter_map(|r| Some((r["id"].as_str()?, r)))
            .collect();
        // The sweeper may create a trial between `/readyz` and the listing: a run the
        // journal read offline before the restart cannot hold, and a trial of the sweep.
        let new_trials = runs
            .iter()
            .filter(|r| {
                let id = r["id"].as_str().unwrap_or_default();
                !self.model.runs.contains_key(id)
                    && self.model.sweep.is_some()
                    && r["spec"]["labels"]["sweep"].as_str() == self.model.sweep.as_deref()
            })
            .count();
        ensure!(
            by_id.len() == runs.len() && runs.len() == self.model.runs.len() + new_trials,
            "{} runs listed ({} distinct, {new_trials} trials created since the restart), {} submitted in the journal",
            runs.len(),
            by_id.len(),
            self.model.runs.len()
        );

        let audit_slots = audit["slots"].as_array().context("audit slots")?;
        let listed = slots.as_array().context("slots")?;
        ensure!(
            listed.len() == 2 && audit_slots.len() == 2,
            "two slots expected: {slots} / {audit}"
        );
        let mut held: HashMap<&str, u64> = HashMap::new();
        for (slot, audited) in listed.iter().zip(audit_slots) {
            ensure!(
                slot["id"] == audited["id"] && slot["device"] == audited["device"],
                "/slots and /slots/audit disagree: {slots} / {audit}"
            );
            ensure!(
                audited["consistent"] == true,
                "slot ledger inconsistent after the restart: {audited}"
            );
            if let Some(run) = audited["run_id"].as_str() {
                *held.entry(run).or_default() += 1;
            }
        }
        for (run, count) in held {
            let wanted = by_id
                .get(run)
                .and_then(|r| r["spec"]["slots"].as_u64())
                .unwrap_or(1);
            ensure!(
                count == 1 || count <= wanted,
                "run {run} holds {count} slots but asked for {wanted}: {audit}"
            );
        }

        // What clients were told before the kill, taken before the listing below is
        // read into the ledger: a cancel the restart journaled itself (a sweep
        // stopping a trial a client had resumed) leaves the run running until its
        // next batch boundary, and is not an acknowledged cancel to hold it to.
        let (expect_stopped, views, ledger_runs) = {
            let mut ledger = self.ledger();
            let expected = (
                ledger.stopped_expected.clone(),
                std::mem::take(&mut ledger.views_unchecked),
                ledger.runs.clone(),
            );
            // From here on, what the restart left is the newest news.
            ledger.resumed_since_check.clear();
            for run in runs {
                ledger.view_with("list", run, false);
            }
            expected
        };
        for (id, info) in &ledger_runs {
            let run = by_id
                .get(id.as_str())
                .with_context(|| format!("acknowledged run {id} ({}) is gone", info.name))?;
            let state = run["state"].as_str().context("state")?;
            ensure!(
                state != "pausing",
                "run {id} is pausing right after the restart, before any request: {run}"
            );
            if let Some((terminal, seq)) = &info.terminal {
                ensure!(
                    state == terminal,
                    "run {id} was acknowledged {terminal} (seq {seq}), after the restart it is {state}"
                );
            }
            if info.cancel_acked {
                ensure!(
                    matches!(state, "cancelled" | "completed" | "failed"),
                    "run {id} had an acknowledged cancel, after the restart it is {state}"
                );
            }
            if expect_stopped.contains(id) {
                ensure!(
                    matches!(state, "paused" | "cancelled" | "completed" | "failed"),
                    "run {id} was acknowledged pausing or paused and not resumed, after the restart it is {state}"
                );
            }
        }
        for (id, (seq, state)) in &views {
            let past = self
                .get(address, &format!("/api/v1/runs/{id}?at_seq={seq}"))
                .await?;
            ensure!(
                past["state"] == state.as_str() && past["last_seq"] == *seq,
                "run {id} was shown {state} with last_seq {seq}; at_seq={seq} now reads {} with last_seq {}",
                past["state"],
                past["last_seq"]
            );
        }
        self.check_sweep(address).await?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ ready_seq ^ 0x4B45_59ED);
        activity::retry_keyed(&self.http, address, &self.ledger, &mut rng).await?;
        Ok(recovery.len())
    }

    /// After a restart: the sweep shows every trial and rung result it showed at the
    /// last check, unchanged and in order, its trials numbered without a gap.
    async fn check_sweep(&mut self, address: &str) -> Result<()> {
        let Some((id, before)) = self.sweep.clone() else {
            return Ok(());
        };
        let now = self.get(address, &format!("/api/v1/sweeps/{id}")).await?;
        let trials = now["trials"].as_array().context("trials")?;
        for (i, trial) in trials.iter().enumerate() {
            ensure!(
                trial["number"] == i as u64,
                "sweep {id}: trial {i} is numbered {}",
                trial["number"]
            );
        }
        let old = before["trials"].as_array().context("trials")?;
        ensure!(
            trials.len() >= old.len(),
            "sweep {id} had {} trials, now {}",
            old.len(),
            trials.len()
        );
        for (o, n) in old.iter().zip(trials) {
            ensure!(
                o["run_id"] == n["run_id"] && o["point"] == n["point"],
                "sweep {id}: trial {} was {o}, now {n}",
                o["number"]
            );
        }
        let (old, new) = (
            before["results"].as_array().context("results")?,
            now["results"].as_array().context("results")?,
        );
        ensure!(
            new.len() >= old.len() && new[..old.len()] == old[..],
            "sweep {id}: its rung results changed: were {old:?}, now {new:?}"
        );
        self.sweep = Some((id, now));
        Ok(())
    }

    /// Submits the sweep once, in the first life with clients.
    async fn submit_sweep(&mut self, address: &str) -> Result<()> {
        if self.sweep.is_some() {
            return Ok(());
        }
        let view = self
            .post_ok(address, "/api/v1/sweeps", Some(&sweep_spec()))
            .await?;
        let id = view["id"].as_str().context("sweep id")?.to_string();
        self.model.sweep = Some(id.clone());
        self.sweep = Some((id, view));
        Ok(())
    }

    /// In the power loop, the cut: what was not synced is gone.
    fn cut(&mut self) -> Result<()> {
        match &mut self.cutfs {
            Some(fs) => fs.cut(),
            None => Ok(()),
        }
    }

    /// Every checkpoint and artifact the journal names is there with its SHA-256.
    fn check_files(&self, export: &[String]) -> Result<usize> {
        use sha2::Digest as _;
        let files = ledger::files_named(export)?;
        for (path, sha256) in &files {
            let full = self.data_dir.join(path);
            let bytes = std::fs::read(&full).with_context(|| {
                format!("the journal names {path} (sha256 {sha256}), which cannot be read")
            })?;
            let found = hex::encode(sha2::Sha256::digest(&bytes));
            ensure!(
                &found == sha256,
                "{path} has sha256 {found}; the journal recorded {sha256}"
            );
        }
        Ok(files.len())
    }

    /// With the server down: verify, export, and compare with every acknowledgment.
    fn check_offline(&mut self) -> Result<(server::Verified, ledger::OfflineReport)> {
        if !self.data_dir.join("journal").is_dir() {
            let ledger = self.ledger();
            ensure!(
                ledger.max_seq.0 == 0 && ledger.runs.is_empty() && self.model.lines.is_empty(),
                "the journal directory is gone"
            );
            return Ok((
                server::Verified::default(),
                ledger::OfflineReport::default(),
            ));
        }
        let verified = server::verify(&self.data_dir)?;
        let export = server::export(&self.data_dir, &self.dir.join("export.jsonl"))?;
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = self.model.check(&export, verified.last_seq, &mut ledger)?;
        drop(ledger);
        report.checked_files = self.check_files(&export)?;
        self.verified = Some(verified.clone());
        Ok((verified, report))
    }

    async fn cycle(&mut self, n: u64, total: u64) -> Result<()> {
        let started = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let snapshot_every = [3, 10, 30].choose(&mut rng).copied().unwrap_or(10);
        let kill = Kill::draw(&mut rng);
        self.ledger().new_life(n);
        let mut server = self.start_server(n, snapshot_every)?;
        let mut recovered = None;
        match kill {
            Kill::Startup(delay) => {
                tokio::time::sleep(delay).await;
                server.kill().context("SIGKILL during start-up")?;
            }
            Kill::Activity(delay) => {
                let address = server.address(SAFETY).await?;
                let ready = server.wait_ready(&self.http, &address, SAFETY).await?;
                recovered = Some(
                    self.check_restart(&address, ready)
                        .await
                        .context("check after the restart")?,
                );
                self.submit_sweep(&address)
                    .await
                    .context("submit the sweep")?;
                let unfinished = self
                    .ledger()
                    .runs
                    .values()
                    .filter(|r| !r.is_terminal())
                    .count();
                let budget = if unfinished < MAX_UNFINISHED {
                    rng.random_range(1..=3)
                } else {
                    0
                };
                let clients = Arc::new(Clients {
                    http: self.http.clone(),
                    address,
                    ledger: Arc::clone(&self.ledger),
                    submit_budget: AtomicI64::new(budget),
                    cycle: n,
                });
                let tasks = activity::start(clients, &mut rng);
                tokio::time::sleep(delay).await;
                let killed = server.kill().context("SIGKILL during activity");
                activity::finish(tasks, SAFETY).await?;
                killed?;
            }
        }
        drop(server);
        self.cut()?;
        self.check_violations()?;
        let (verified, report) = self.check_offline().context("check after the kill")?;
        let counters = self.ledger().counters;
        let (kind, delay) = match kill {
            Kill::Startup(d) => ("start-up", d),
            Kill::Activity(d) => ("activity", d),
        };
        eprintln!(
            "cycle {n}/{total}: killed {}ms into {kind}{} (snapshots every {snapshot_every}); journal {} (+{}), {}; recovery events {}; sent {} submit, {} dup, {} cancel, {} pause, {} resume, {} keyed; checked {} views, {} events, {} files; {:.1}s",
            delay.as_millis(),
            if self.cutfs.is_some() { ", then cut" } else { "" },
            report.last_seq,
            report.new_events,
            verified.runs(),
            recovered.map_or("-".into(), |r| r.to_string()),
            counters.submits,
            counters.duplicates,
            counters.cancels,
            counters.pauses,
            counters.resumes,
            counters.keyed,
            report.checked_views,
            report.checked_events,
            report.checked_files,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Re-reads the runs until `done` holds for each; returns them.
    async fn wait_runs(
        &self,
        server: &mut Server,
        address: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + SAFETY;
        loop {
            let runs = self.get(address, "/api/v1/runs").await?;
            let runs = runs.as_array().context("runs")?.clone();
            {
                let mut ledger = self.ledger();
                for run in &runs {
                    ledger.view_with("list", run, false);
                }
            }
            let pending: Vec<String> = runs
                .iter()
                .filter(|r| !done(r))
                .map(|r| format!("{} {} ({})", r["id"], r["state"], r["name"]))
                .collect();
            if pending.is_empty() {
                return Ok(runs);
            }
            server.ensure_alive()?;
            ensure!(
                Instant::now() < deadline,
                "runs still not {what} after {SAFETY:?}: {}",
                pending.join(", ")
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn post_ok(&self, address: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut request = self.http.post(format!("{address}{path}"));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("POST {path}: body"))?;
        ensure!(matches!(status, 200 | 201), "POST {path}: {status} {body}");
        Ok(body)
    }

    /// The last restart: every run must go on to its end.
    async fn finish(&mut self, n: u64) -> Result<()> {
        let started = Instant::now();
        self.ledger().new_life(n);
        let mut server = self.start_server(n, 10)?;
        let address = server.address(SAFETY).await?;
        let ready = server.wait_ready(&self.http, &address, SAFETY).await?;
        self.check_restart(&address, ready)
            .await
            .context("check after the last restart")?;

        let terminal = |r: &Value| {
            matches!(
                r["state"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        };
        let runs = self
            .wait_runs(&mut server, &address, "ended or paused", |r| {
                terminal(r) || r["state"] == "paused"
            })
            .await?;
        let paused: Vec<&str> = runs
            .iter()
            .filter(|r| r["state"] == "paused")
            .filter_map(|r| r["id"].as_str())
            .collect();
        for id in &paused {
            self.ledger().resuming(id);
            let view = self
                .post_ok(&address, &format!("/api/v1/runs/{id}/resume"), None)
                .await?;
            self.ledger().view("resume", &view);
        }
        if let Some((id, _)) = self.sweep.clone() {
            let deadline = Instant::now() + SAFETY;
            loop {
                let sweep = self.get(&address, &format!("/api/v1/sweeps/{id}")).await?;
                if sweep["state"] == "completed" {
                    break;
                }
                server.ensure_alive()?;
                ensure!(
                    Instant::now() < deadline,
                    "the sweep has not completed after {SAFETY:?}: {sweep}"
                );
                tokio::time::sleep(POLL).await;
            }
        }
        let runs = self
            .wait_runs(&mut server, &address, "ended", terminal)
            .await?;

        let mut interrupted = Vec::new();
        for run in &runs {
            let name = run["name"].as_str().unwrap_or_default();
            let state = run["state"].as_str().unwrap_or_default();
            if state == "completed" {
                let epochs = run["spec"]["epochs"].as_u64();
                ensure!(
                    run["metrics"]["epochs_completed"].as_u64() == epochs,
                    "completed run {} trained {} of {epochs:?} epochs",
                    run["id"],
                    run["metrics"]["epochs_completed"]
                );
                ensure!(
                    final_sha(run).is_some(),
                    "completed run {} has no final.safetensors: {}",
                    run["id"],
                    run["artifacts"]
                );
                if run["attempt"].as_u64().unwrap_or(0) > 1 && !name.starts_with(DIVERGING) {
                    interrupted.push(run.clone());
                }
            }
        }
        let slots = self.get(&address, "/api/v1/slots").await?;
        ensure!(
            slots
                .as_array()
                .is_some_and(|s| s.iter().all(|slot| slot["run_id"].is_null())),
            "every run ended, yet slots are held: {slots}"
        );

        // A run resumed after kills and pauses ends bit-identical to an uninterrupted one.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5EED);
        let chosen: Vec<Value> = interrupted
            .choose_multiple(&mut rng, REFERENCE_RUNS)
            .cloned()
            .collect();
        let mut references = Vec::new();
        for run in &chosen {
            let mut spec = run["spec"].clone();
            spec["name"] = Value::String(format!(
                "{}-reference",
                run["name"].as_str().unwrap_or("run")
            ));
            let view = self
                .post_ok(&address, "/api/v1/runs", Some(&spec))
                .await
                .context("submit a reference run")?;
            self.ledger().submitted(201, &view);
            references.push((
                run.clone(),
                view["id"].as_str().unwrap_or_default().to_string(),
            ));
        }
        let runs = self
            .wait_runs(&mut server, &address, "ended", terminal)
            .await?;
        for (run, reference) in &references {
            let reference = runs
                .iter()
                .find(|r| r["id"] == reference.as_str())
                .context("reference run listed")?;
            ensure!(
                reference["state"] == "completed" && final_sha(reference).is_some(),
                "reference run did not complete: {reference}"
            );
            ensure!(
                final_sha(run) == final_sha(reference),
                "run {} ({}, {} attempts) ended with other weights ({:?}) than the same training uninterrupted ({:?})",
                run["id"],
                run["name"],
                run["attempt"],
                final_sha(run),
                final_sha(reference)
            );
        }

        server.kill().context("the last SIGKILL")?;
        drop(server);
        self.cut()?;
        self.check_violations()?;
        let (verified, report) = self.check_offline().context("the last check")?;
        if self.sweep.is_some() {
            let summary = self
                .model
                .check_sweep_complete()
                .context("the sweep's decisions")?;
            eprintln!("final: the sweep completed: {summary}");
        }
        ensure!(
            verified.slots_held == 0
                && verified.count(&["completed", "failed", "cancelled"]) == runs.len() as u64,
            "after the end, the journal holds slots or unfinished runs: {}",
            verified.summary
        );
        let states: HashMap<&str, usize> =
            runs.iter()
                .filter_map(|r| r["state"].as_str())
                .fold(HashMap::new(), |mut m, s| {
                    *m.entry(s).or_default() += 1;
                    m
                });
        eprintln!(
            "final: every run ended ({states:?}), {} resumed from paused, {} compared with an uninterrupted run; journal {} records; {:.1}s",
            paused.len(),
            references.len(),
            report.last_seq,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

fn final_sha(run: &Value) -> Option<String> {
    run["artifacts"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == "final.safetensors")?["sha256"]
        .as_str()
        .map(str::to_string)
}

fn report_failure(
    dir: &Path,
    logs: &[PathBuf],
    (seed, cycle): (u64, u64),
    power: bool,
    error: &anyhow::Error,
) {
    let var = if power { "POWER" } else { "CRASH" };
    eprintln!("\n{var} loop FAILED in cycle {cycle} (seed {seed}): {error:#}");
    for log in logs.iter().rev().take(2).rev() {
        eprintln!(
            "\n--- last lines of {} (successful GETs left out) ---\n{}",
            log.display(),
            server::tail(log, 40)
        );
    }
    eprintln!(
        "\nreproduce with RUNYARD_{var}_SEED={seed} RUNYARD_{var}_CYCLES={cycle}; data, exports and every server log kept in {}",
        dir.display()
    );
}

/// Runs `cycles` kills (each followed by a cut when `power`) and the last restart.
async fn run_loop(name: &str, cycles: u64, seed: u64, power: bool) {
    eprintln!("{name}: {cycles} cycles, seed {seed}");
    let temp = tempfile::Builder::new()
        .prefix(&format!("runyard-{name}-"))
        .tempdir()
        .expect("temp dir");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(SAFETY)
        .build()
        .expect("http client");
    let cutfs = power.then(|| cutfs::CutFs::mount(temp.path()).expect("mount cutfs"));
    let data_dir = match &cutfs {
        Some(fs) => fs.point().join("data"),
        None => temp.path().join("data"),
    };
    let mut run = Loop {
        seed,
        dir: temp.path().to_path_buf(),
        data_dir,
        http,
        ledger: Arc::new(Mutex::new(Ledger::default())),
        model: JournalModel::default(),
        logs: Vec::new(),
        verified: None,
        cutfs,
        sweep: None,
    };
    let started = Instant::now();
    for n in 1..=cycles + 1 {
        let result = if n <= cycles {
            run.cycle(n, cycles).await
        } else {
            run.finish(n).await
        };
        if let Err(error) = result {
            // Unmount first: the backing directory keeps what survived.
            run.cutfs = None;
            let dir = temp.keep();
            report_failure(&dir, &run.logs, (seed, n), power, &error);
            panic!("{name} failed in cycle {n} (seed {seed}): {error:#}");
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let per_min = cycles as f64 / minutes.max(f64::EPSILON);
    eprintln!(
        "{name}: {cycles} cycles passed in {:.1}s (seed {seed}), {per_min:.1} cycles/min",
        started.elapsed().as_secs_f64(),
    );
    // `make bench` asks for the rate as a figure (scripts/bench-report.py reads it).
    if let (true, Some(path)) = (power, std::env::var_os("RUNYARD_POWER_FIGURES")) {
        let figures = serde_json::json!({
            "power_cut_cycles_per_min": {"value": per_min, "unit": "cycles/min"}
        });
        std::fs::write(&path, figures.to_string()).expect("write the power-loop figure");
    }
    drop(run);
}

fn seed_from(var: &str) -> u64 {
    env_u64(var).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop() {
    let cycles = env_u64("RUNYARD_CRASH_CYCLES").unwrap_or(DEFAULT_CYCLES);
    let seed = seed_from("RUNYARD_CRASH_SEED");
    eprintln!("crash loop: RUNYARD_CRASH_SEED={seed} repeats the choices");
    run_loop("crash-loop", cycles, seed, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loop() {
    if let Some(reason) = cutfs::unavailable() {
        let required = std::env::var("RUNYARD_REQUIRE_POWER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "the power-cut test cannot mount its filesystem: {reason} (scripts/setup-cutfs.sh \
             installs what it needs; RUNYARD_REQUIRE_POWER=0 lets it skip)"
        );
        eprintln!("power loop SKIPPED: {reason}");
        return;
    }
    let cycles = env_u64("RUNYARD_POWER_CYCLES").unwrap_or(DEFAULT_POWER_CYCLES);
    let seed = seed_from("RUNYARD_POWER_SEED");
    eprintln!("power loop: RUNYARD_POWER_SEED={seed} repeats the choices");
    run_loop("power-loop", cycles, seed, true).await;
}
