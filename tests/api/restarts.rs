//! Actors that crash come back: the real binary, with one actor's fault point armed by
//! `RUNYARD_FAULT` (debug builds only), so that a handler panics while the server
//! works. Each test shows the actor came back: its work goes on, `/readyz` stays
//! ready, the slot ledger stays consistent, and `/metrics` counts the restart.

use std::future::Future;
use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::{client, get_json_at, long_spec, poll_until, quick_spec, types, wait_ready};
use crate::server::{Launch, Server};

/// How often a test re-reads what it waits for.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The actors with a restart series.
const ACTORS: [&str; 6] = ["journal", "dispatcher", "local", "ticker", "slot", "run"];

/// The server as a child process with fault points armed; killed when dropped.
struct FaultyServer {
    /// The process, killed when this is dropped.
    _process: Server,
    address: String,
    http: reqwest::Client,
}

impl FaultyServer {
    /// Starts the binary on `data_dir` with `RUNYARD_FAULT=fault`; its stderr goes to
    /// a file beside `data_dir`.
    async fn start(data_dir: &Path, fault: &str) -> Self {
        let server = Launch::new(data_dir)
            .env("RUNYARD_FAULT", fault)
            .env("RUNYARD__TRAIN__CPU_SLOTS", "1")
            // One torch thread: the bit-identical check compares two runs' weights.
            .env("RUNYARD__TRAIN__THREADS_PER_SLOT", "1")
            .start();
        let server = Self {
            address: server.address.clone(),
            _process: server,
            http: client(),
        };
        wait_ready(&server.http, &server.address).await;
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    async fn get(&self, path: &str) -> Value {
        get_json_at(&self.http, self.url(path)).await
    }

    async fn submit(&self, spec: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/runs"))
            .json(spec)
            .send()
            .await
            .expect("submit answered")
    }

    async fn submit_ok(&self, spec: &Value) -> String {
        let response = self.submit(spec).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("run JSON");
        body["id"].as_str().expect("id").to_string()
    }

    async fn run(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/runs/{id}")).await
    }

    /// Re-reads the run until `done` holds.
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        eventually(what, || async {
            let run = self.run(id).await;
            done(&run).then_some(run)
        })
        .await
    }

    /// `runyard_actor_restarts_total{actor}` as `/metrics` shows it now.
    async fn restarts(&self, actor: &str) -> u64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answered")
            .text()
            .await
            .expect("metrics text");
        let series = format!("runyard_actor_restarts_total{{actor=\"{actor}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
            .parse()
            .expect("a count")
    }

    /// Waits until `/metrics` counts one restart of `actor`; answers every actor's
    /// count then.
    async fn wait_for_restart(&self, actor: &str) -> Vec<(&'static str, u64)> {
        eventually(&format!("{actor} restarted"), || async {
            (self.restarts(actor).await >= 1).then_some(())
        })
        .await;
        let mut counts = Vec::new();
        for name in ACTORS {
            counts.push((name, self.restarts(name).await));
        }
        counts
    }

    /// Checks what holds after every restart: ready, every slot free and the ledger
    /// consistent, once nothing runs.
    async fn assert_settled(&self) {
        let ready = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("readyz answered");
        assert_eq!(ready.status(), 200, "still ready");
        let slots = self.get("/api/v1/slots").await;
        for slot in slots.as_array().expect("slots") {
            assert_eq!(slot["run_id"], Value::Null, "{slots}");
        }
        let audit = self.get("/api/v1/slots/audit").await;
        for slot in audit["slots"].as_array().expect("audit slots") {
            assert_eq!(slot["consistent"], true, "{audit}");
        }
    }

    async fn event_types(&self, id: &str) -> Vec<String> {
        let events = self.get(&format!("/api/v1/runs/{id}/events")).await;
        types(events.as_array().expect("events"))
    }

    async fn cancel(&self, id: &str) {
        let response = self
            .http
            .post(self.url(&format!("/api/v1/runs/{id}/cancel")))
            .send()
            .await
            .expect("cancel answered");
        assert!(response.status().is_success(), "{}", response.status());
    }
}

/// Polls `probe` every [`POLL`] until it answers `Some`.
async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until(what, POLL, probe).await
}

/// A run of a few seconds here that checkpoints often.
fn checkpointed_spec(name: &str, epochs: u32) -> Value {
    let mut spec = quick_spec(name);
    spec["epochs"] = json!(epochs);
    spec["checkpoint"] = json!({"every_batches": 20});
    spec
}

fn samples(run: &Value) -> u64 {
    run["progress"]["samples"].as_u64().unwrap_or(0)
}

/// Only `actor` restarted, once.
fn assert_only_restart(counts: &[(&str, u64)], actor: &str) {
    for (name, count) in counts {
        let expected = u64::from(*name == actor);
        assert_eq!(*count, expected, "restarts of {name}: {counts:?}");
    }
}

#[tokio::test]
async fn a_journal_that_panics_restarts_and_the_training_run_goes_on() {
    let root = tempfile::tempdir().expect("temp dir");
    // Appends: 1 recovery at start, 2 the submission, 3 the claim, 4 the start, then
    // the run's progress: the 6th is its second progress append.
    let server = FaultyServer::start(&root.path().join("data"), "journal:6").await;
    let epochs = 10;
    let id = server
        .submit_ok(&checkpointed_spec("through-a-journal-restart", epochs))
        .await;
    let counts = server.wait_for_restart("journal").await;
    assert_only_restart(&counts, "journal");

    let run = server
        .wait_for(&id, "the run completed", |r| r["state"] == "completed")
        .await;
    assert_eq!(run["attempt"], 1, "the attempt carried on: {run}");
    assert_eq!(run["metrics"]["epochs_completed"], epochs, "{run}");
    let events = server.get(&format!("/api/v1/runs/{id}/events")).await;
    let journaled: Vec<u64> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "EpochCompleted")
        .map(|e| e["data"]["epoch"].as_u64().expect("epoch"))
        .collect();
    assert_eq!(
        journaled,
        (1..=u64::from(epochs)).collect::<Vec<_>>(),
        "every epoch journaled once, in order, across the restart"
    );
    let seqs: Vec<u64> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    server.assert_settled().await;

    // The restarted journal takes new work as before.
    let next = server.submit_ok(&quick_spec("after-the-restart")).await;
    server
        .wait_for(&next, "the next run completed", |r| {
            r["state"] == "completed"
        })
        .await;
    server.assert_settled().await;
}

#[tokio::test]
async fn a_dispatcher_that_panics_restarts_with_its_queue_and_slots_from_the_journal() {
    let root = tempfile::tempdir().expect("temp dir");
    // The second submission's handler panics.
    let server = FaultyServer::start(&root.path().join("data"), "dispatcher:2").await;
    let live = server
        .submit_ok(&long_spec("live-through-the-restart"))
        .await;
    let before = server
        .wait_for(&live, "the first run trained", |r| {
            r["state"] == "running" && samples(r) > 0
        })
        .await;

    let response = server.submit(&quick_spec("waiting-behind-it")).await;
    assert!(
        response.status().is_server_error(),
        "the panicking submission is answered, not left hanging: {}",
        response.status()
    );
    let counts = server.wait_for_restart("dispatcher").await;
    assert_only_restart(&counts, "dispatcher");
    server
        .wait_for(&live, "the live run kept training", |r| {
            r["state"] == "running" && samples(r) > samples(&before)
        })
        .await;

    // The panic came before anything was journaled: the submission is simply retried.
    let waiting = server.submit_ok(&quick_spec("waiting-behind-it")).await;
    let runs = server.get("/api/v1/runs").await;
    assert_eq!(runs.as_array().expect("runs").len(), 2, "{runs}");
    let queued = server.run(&waiting).await;
    assert_eq!(
        queued["state"], "queued",
        "the only slot is still held after the dispatcher restarted: {queued}"
    );
    assert_eq!(server.run(&live).await["attempt"], 1);

    // It also knows which slot the live run is on: the cancel reaches it.
    server.cancel(&live).await;
    server
        .wait_for(&live, "the live run was cancelled", |r| {
            r["state"] == "cancelled"
        })
        .await;
    let done = server
        .wait_for(&waiting, "the queued run completed", |r| {
            r["state"] == "completed"
        })
        .await;
    assert_eq!(done["attempt"], 1);
    // The restart did not treat the live run as left over from a dead process: one
    // claim, one start, never requeued.
    let history = server.event_types(&live).await;
    let count = |kind: &str| history.iter().filter(|t| *t == kind).count();
    assert_eq!(
        (
            count("SlotClaimed"),
            count("RunStarted"),
            count("RunRequeued")
        ),
        (1, 1, 0),
        "{history:?}"
    );
    assert_eq!(
        history[history.len() - 2..],
        ["RunCancelled", "SlotReleased"]
    );
    server.assert_settled().await;
}

#[tokio::test]
async fn a_local_executor_that_panics_restarts_with_its_queue_and_slots_from_the_journal() {
    let root = tempfile::tempdir().expect("temp dir");
    // The second launch (the second submission's) panics, after the run is journaled.
    let server = FaultyServer::start(&root.path().join("data"), "local:2").await;
    let live = server
        .submit_ok(&long_spec("live-through-the-restart"))
        .await;
    let before = server
        .wait_for(&live, "the first run trained", |r| {
            r["state"] == "running" && samples(r) > 0
        })
        .await;

    // The submission is durable before its launch: it is answered as created, and
    // the restarted executor finds the run in the journal's queue.
    let waiting = server.submit_ok(&quick_spec("waiting-behind-it")).await;
    let counts = server.wait_for_restart("local").await;
    assert_only_restart(&counts, "local");
    server
        .wait_for(&live, "the live run kept training", |r| {
            r["state"] == "running" && samples(r) > samples(&before)
        })
        .await;
    let runs = server.get("/api/v1/runs").await;
    assert_eq!(runs.as_array().expect("runs").len(), 2, "{runs}");
    let queued = server.run(&waiting).await;
    assert_eq!(
        queued["state"], "queued",
        "the restarted executor knows the only slot is held: {queued}"
    );
    assert_eq!(server.run(&live).await["attempt"], 1);

    // It knows which slot the live run is on: the cancel reaches it, and the freed
    // slot goes to the run it rebuilt its queue with.
    server.cancel(&live).await;
    server
        .wait_for(&live, "the live run was cancelled", |r| {
            r["state"] == "cancelled"
        })
        .await;
    let done = server
        .wait_for(&waiting, "the queued run completed", |r| {
            r["state"] == "completed"
        })
        .await;
    assert_eq!(done["attempt"], 1);
    let history = server.event_types(&live).await;
    let count = |kind: &str| history.iter().filter(|t| *t == kind).count();
    assert_eq!(
        (
            count("SlotClaimed"),
            count("RunStarted"),
            count("RunRequeued")
        ),
        (1, 1, 0),
        "{history:?}"
    );
    let waited = server.event_types(&waiting).await;
    assert_eq!(
        waited.iter().filter(|t| *t == "SlotClaimed").count(),
        1,
        "one claim of the rebuilt queue's run: {waited:?}"
    );
    server.assert_settled().await;
}

#[tokio::test]
async fn a_ticker_that_panics_restarts_and_progress_keeps_ticking() {
    let root = tempfile::tempdir().expect("temp dir");
    // The third tick with a live run to sample panics.
    let server = FaultyServer::start(&root.path().join("data"), "ticker:3").await;
    let id = server
        .submit_ok(&long_spec("sampled-through-the-restart"))
        .await;
    let counts = server.wait_for_restart("ticker").await;
    assert_only_restart(&counts, "ticker");

    // Progress is only published by ticks while the run trains: a sample newer than
    // the one seen after the restart is a tick of the restarted ticker.
    let after = server
        .wait_for(&id, "a sample after the restart", |r| samples(r) > 0)
        .await;
    server
        .wait_for(&id, "progress ticked on", |r| {
            r["state"] == "running" && samples(r) > samples(&after)
        })
        .await;
    assert_eq!(server.run(&id).await["attempt"], 1);

    server.cancel(&id).await;
    server
        .wait_for(&id, "the run was cancelled", |r| r["state"] == "cancelled")
        .await;
    server.assert_settled().await;
}

#[tokio::test]
async fn a_slot_that_panics_restarts_and_starts_the_run_claimed_on_it() {
    let root = tempfile::tempdir().expect("temp dir");
    // The slot's first `StartRun` panics: the claim is journaled, the run not started.
    let server = FaultyServer::start(&root.path().join("data"), "slot:1").await;
    let id = server
        .submit_ok(&quick_spec("claimed-before-the-restart"))
        .await;
    let counts = server.wait_for_restart("slot").await;
    assert_only_restart(&counts, "slot");

    let run = server
        .wait_for(&id, "the claimed run completed", |r| {
            r["state"] == "completed"
        })
        .await;
    assert_eq!(run["attempt"], 1, "{run}");
    let history = server.event_types(&id).await;
    assert_eq!(history[..3], ["RunSubmitted", "SlotClaimed", "RunStarted"]);
    assert_eq!(
        history[history.len() - 2..],
        ["RunCompleted", "SlotReleased"]
    );
    server.assert_settled().await;

    // The slot was released to the dispatcher too: the next run gets it.
    let next = server.submit_ok(&quick_spec("on-the-restarted-slot")).await;
    server
        .wait_for(&next, "the next run completed", |r| {
            r["state"] == "completed"
        })
        .await;
    server.assert_settled().await;
}

#[tokio::test]
async fn a_run_actor_that_panics_hands_its_attempt_back_and_the_run_completes() {
    let root = tempfile::tempdir().expect("temp dir");
    // The first progress tick of a run actor panics, a moment into a run long enough
    // (a second or more here) that its thread is still training then.
    let server = FaultyServer::start(&root.path().join("data"), "run:1").await;
    let epochs = 30;
    let id = server
        .submit_ok(&checkpointed_spec("handed-back", epochs))
        .await;
    let counts = server.wait_for_restart("run").await;
    assert_only_restart(&counts, "run");

    let run = server
        .wait_for(&id, "the handed-back run completed", |r| {
            r["state"] == "completed"
        })
        .await;
    assert_eq!(run["attempt"], 2, "a new attempt finished the run: {run}");
    assert_eq!(run["metrics"]["epochs_completed"], epochs, "{run}");
    let history = server.event_types(&id).await;
    let requeued = history
        .iter()
        .position(|t| t == "RunRequeued")
        .unwrap_or_else(|| panic!("requeued: {history:?}"));
    assert_eq!(
        history[requeued..requeued + 5],
        [
            "RunRequeued",
            "SlotReleased",
            "SlotClaimed",
            "RunStarted",
            "ResumedFromCheckpoint"
        ],
        "the attempt went back to the queue and the next resumed from its checkpoint"
    );
    assert_eq!(history[requeued - 1], "CheckpointSaved", "{history:?}");
    assert_eq!(
        history[history.len() - 2..],
        ["RunCompleted", "SlotReleased"]
    );
    server.assert_settled().await;

    // The same training without the panic ends with the same weights, bit for bit.
    let reference = server
        .submit_ok(&checkpointed_spec("never-handed-back", epochs))
        .await;
    let reference = server
        .wait_for(&reference, "the reference run completed", |r| {
            r["state"] == "completed"
        })
        .await;
    assert_eq!(reference["attempt"], 1);
    let final_sha = |run: &Value| run["artifacts"][0]["sha256"].as_str().map(str::to_string);
    assert!(final_sha(&run).is_some(), "{run}");
    assert_eq!(final_sha(&run), final_sha(&reference));
    server.assert_settled().await;
}
