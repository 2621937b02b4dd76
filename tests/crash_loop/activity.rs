//! The clients of one server life: a few tasks submitting, cancelling, pausing and
//! resuming runs, one polling views and events, one reading a stream. Every answer
//! they get goes into the ledger; a transport error means the server is gone and ends
//! the task.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::ledger::{Keyed, Ledger, RunInfo, DIVERGING};

/// What every task of a server life shares.
pub struct Clients {
    pub http: reqwest::Client,
    pub address: String,
    pub ledger: Arc<Mutex<Ledger>>,
    /// New specs the tasks may still submit in this life.
    pub submit_budget: AtomicI64,
    pub cycle: u64,
}

impl Clients {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn violation(&self, text: String) {
        let mut ledger = self.ledger();
        let cycle = ledger.cycle;
        ledger.violations.push(format!("cycle {cycle}: {text}"));
    }

    /// Sends a request; `None` when no complete answer came back (the server is gone).
    async fn send(&self, request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.ok()?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Some((status, body))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.address)
    }

    fn pick(&self, rng: &mut ChaCha8Rng, filter: impl Fn(&RunInfo) -> bool) -> Option<String> {
        let ids = self.ledger().run_ids(filter);
        ids.choose(rng).cloned()
    }

    /// A known run, most often one that has not ended.
    fn pick_target(&self, rng: &mut ChaCha8Rng) -> Option<String> {
        if rng.random_bool(0.8) {
            if let Some(id) = self.pick(rng, |r| !r.is_terminal()) {
                return Some(id);
            }
        }
        self.pick(rng, |_| true)
    }

    /// Answers other than these are broken promises.
    fn unexpected(&self, what: &str, status: u16, body: &Value) {
        self.violation(format!("{what}: unexpected {status} {body}"));
    }

    /// A POST under `/api/v1`, with an `Idempotency-Key` now and then (recorded with
    /// its answer, to be retried after the next restart). `None` when the server is
    /// gone.
    async fn post(
        &self,
        rng: &mut ChaCha8Rng,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let key = rng
            .random_bool(0.3)
            .then(|| format!("c{}-{:016x}", self.cycle, rng.random::<u64>()));
        let mut request = self.http.post(self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = &key {
            request = request.header("idempotency-key", key.as_str());
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.ok()?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let parsed = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        // Answers of 5xx are not kept for retries.
        if let (Some(key), false) = (key, status >= 500) {
            let mut ledger = self.ledger();
            ledger.counters.keyed += 1;
            ledger.keyed.push(Keyed {
                key,
                path: path.to_string(),
                body: body.cloned(),
                status,
                text,
            });
        }
        Some((status, parsed))
    }
}

/// Retries every keyed request answered since the last check, and a few answered
/// before, with the same key: each must get its first answer again, byte for byte,
/// marked replayed. Returns how many were retried.
pub async fn retry_keyed(
    http: &reqwest::Client,
    address: &str,
    ledger: &Mutex<Ledger>,
    rng: &mut ChaCha8Rng,
) -> Result<usize> {
    let (fresh, old): (Vec<Keyed>, Vec<Keyed>) = {
        let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = std::mem::take(&mut ledger.keyed);
        let old = ledger
            .keyed_checked
            .choose_multiple(rng, 3)
            .cloned()
            .collect();
        (fresh, old)
    };
    for keyed in fresh.iter().chain(&old) {
        let mut request = http
            .post(format!("{address}/api/v1{}", keyed.path))
            .header("idempotency-key", keyed.key.as_str());
        if let Some(body) = &keyed.body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("retry of keyed POST {}", keyed.path))?;
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok())
            == Some("true");
        let text = response.text().await.context("retry body")?;
        anyhow::ensure!(
            status == keyed.status && text == keyed.text && replayed,
            "keyed POST {} (key {}) was answered {} {}; its retry after the restart got {status} {text} (replayed: {replayed})",
            keyed.path,
            keyed.key,
            keyed.status,
            keyed.text
        );
    }
    let count = fresh.len() + old.len();
    ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keyed_checked
        .extend(fresh);
    Ok(count)
}

/// A small synthetic-data MLP that trains in a fraction of a second to about two
/// seconds (so kills land in training), or one that diverges to a NaN loss in its
/// first epoch (and may be retried).
pub fn new_spec(rng: &mut ChaCha8Rng, name: String) -> Value {
    let diverging = name.starts_with(DIVERGING);
    let samples = [512, 1024, 1536].choose(rng).copied().unwrap_or(1024);
    let mut spec = json!({
        "name": name,
        "model": {"kind": "mlp", "hidden": [rng.random_range(8..=32)]},
        "data": {
            "kind": "synthetic",
            "samples": samples,
            "features": 8,
            "classes": 3,
            "seed": rng.random_range(0..1000),
        },
        "optimizer": {"kind": "adam", "lr": 0.01},
        "epochs": rng.random_range(3..=10),
        "batch_size": 32,
        "seed": rng.random_range(0..1000),
        "checkpoint": {"every_batches": rng.random_range(2..=8), "keep": rng.random_range(1..=3)},
        "priority": rng.random_range(-1..=1),
    });
    if rng.random_bool(0.3) {
        spec["validation"] = json!({"fraction": 0.2});
    }
    // No `slots: 2`: the built-in loop trains on one device and is refused more (a
    // gang of slots is a command run's, with one rank per slot).
    if diverging {
        spec["model"]["hidden"] = json!([64, 64, 64]);
        spec["optimizer"] = json!({"kind": "sgd", "lr": 10, "momentum": 0.99, "nesterov": true});
        spec["max_retries"] = json!(rng.random_range(0..=2));
        spec["retry_backoff_secs"] = json!(0);
    }
    spec
}

/// Starts the tasks of one server life.
pub fn start(clients: Arc<Clients>, rng: &mut ChaCha8Rng) -> Vec<JoinHandle<()>> {
    let workers = rng.random_range(2..=3);
    let mut tasks: Vec<JoinHandle<()>> = (0..workers)
        .map(|w| tokio::spawn(worker(Arc::clone(&clients), w, rng.random())))
        .collect();
    tasks.push(tokio::spawn(poller(Arc::clone(&clients), rng.random())));
    tasks.push(tokio::spawn(streamer(Arc::clone(&clients), rng.random())));
    tasks
}

/// Waits for the tasks after the kill; they end at their next request.
pub async fn finish(tasks: Vec<JoinHandle<()>>, safety: Duration) -> Result<()> {
    for task in tasks {
        tokio::time::timeout(safety, task)
            .await
            .context("a client task did not notice the server was gone")?
            .context("a client task panicked")?;
    }
    Ok(())
}

async fn think(rng: &mut ChaCha8Rng, max_ms: u64) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..=max_ms))).await;
}

/// Submits, resubmits, cancels, pauses, resumes and reads runs until the server dies.
async fn worker(clients: Arc<Clients>, index: u32, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut made = 0;
    loop {
        think(&mut rng, 40).await;
        let alive = match rng.random_range(0..20) {
            0..=4 => {
                if clients.submit_budget.fetch_sub(1, Ordering::SeqCst) > 0 {
                    let prefix = if rng.random_bool(0.08) {
                        DIVERGING
                    } else {
                        "run-"
                    };
                    let name = format!("{prefix}c{}-w{index}-{made}", clients.cycle);
                    made += 1;
                    let spec = new_spec(&mut rng, name);
                    // Now and then the same new spec twice at once: one run, both
                    // answers naming it.
                    let twice = rng.random_bool(0.15);
                    {
                        let mut ledger = clients.ledger();
                        ledger.specs.push(spec.clone());
                        ledger.counters.submits += 1;
                        ledger.counters.duplicates += u32::from(twice);
                    }
                    if twice {
                        let (mut one, mut two) = (rng.clone(), rng.clone());
                        two.random::<u64>();
                        let (a, b) = tokio::join!(
                            submit(&clients, &mut one, &spec),
                            submit(&clients, &mut two, &spec)
                        );
                        a && b
                    } else {
                        submit(&clients, &mut rng, &spec).await
                    }
                } else {
                    read(&clients, &mut rng).await
                }
            }
            5 => {
                let spec = clients.ledger().specs.choose(&mut rng).cloned();
                match spec {
                    Some(spec) => {
                        clients.ledger().counters.duplicates += 1;
                        submit(&clients, &mut rng, &spec).await
                    }
                    None => read(&clients, &mut rng).await,
                }
            }
            6 => stop(&clients, &mut rng, "cancel").await,
            7 | 8 => stop(&clients, &mut rng, "pause").await,
            9..=11 => resume(&clients, &mut rng).await,
            _ => read(&clients, &mut rng).await,
        };
        if !alive {
            return;
        }
    }
}

async fn submit(clients: &Clients, rng: &mut ChaCha8Rng, spec: &Value) -> bool {
    let Some((status, body)) = clients.post(rng, "/runs", Some(spec)).await else {
        return false;
    };
    match status {
        200 | 201 => clients.ledger().submitted(status, &body),
        _ => clients.unexpected(
            &format!("submission of spec {}", spec["name"]),
            status,
            &body,
        ),
    }
    true
}

async fn stop(clients: &Clients, rng: &mut ChaCha8Rng, action: &'static str) -> bool {
    let target = if action == "pause" && rng.random_bool(0.7) {
        clients
            .pick(rng, |r| r.state == "running" || r.state == "queued")
            .or_else(|| clients.pick_target(rng))
    } else {
        clients.pick_target(rng)
    };
    let Some(id) = target else {
        return true;
    };
    {
        let mut ledger = clients.ledger();
        match action {
            "cancel" => ledger.counters.cancels += 1,
            _ => ledger.counters.pauses += 1,
        }
    }
    let Some((status, body)) = clients
        .post(rng, &format!("/runs/{id}/{action}"), None)
        .await
    else {
        return false;
    };
    match status {
        200 | 202 => clients.ledger().view(action, &body),
        409 => {}
        _ => clients.unexpected(&format!("{action} of run {id}"), status, &body),
    }
    true
}

async fn resume(clients: &Clients, rng: &mut ChaCha8Rng) -> bool {
    let Some(id) = clients.pick(rng, |r| r.state == "paused") else {
        return read(clients, rng).await;
    };
    {
        let mut ledger = clients.ledger();
        ledger.counters.resumes += 1;
        ledger.resuming(&id);
    }
    let request = clients
        .http
        .post(clients.url(&format!("/runs/{id}/resume")));
    let Some((status, body)) = clients.send(request).await else {
        return false;
    };
    match status {
        200 => clients.ledger().view("resume", &body),
        409 => {}
        _ => clients.unexpected(&format!("resume of run {id}"), status, &body),
    }
    true
}

/// Reads a run's view and its events after the newest one seen.
async fn read(clients: &Clients, rng: &mut ChaCha8Rng) -> bool {
    let Some(id) = clients.pick_target(rng) else {
        return true;
    };
    read_run(clients, &id).await
}

async fn read_run(clients: &Clients, id: &str) -> bool {
    let Some((status, body)) = clients
        .send(clients.http.get(clients.url(&format!("/runs/{id}"))))
        .await
    else {
        return false;
    };
    match status {
        200 => clients.ledger().view("get", &body),
        _ => clients.unexpected(&format!("get of run {id}"), status, &body),
    }
    let after = clients.ledger().runs.get(id).map_or(0, |r| r.event_cursor);
    let request = clients
        .http
        .get(clients.url(&format!("/runs/{id}/events?after={after}")));
    let Some((status, body)) = clients.send(request).await else {
        return false;
    };
    match (status, body.as_array()) {
        (200, Some(events)) => clients.ledger().events("events", events),
        _ => clients.unexpected(&format!("events of run {id}"), status, &body),
    }
    true
}

/// Follows the runs that have not ended.
async fn poller(clients: Arc<Clients>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    loop {
        think(&mut rng, 60).await;
        let live = clients.ledger().run_ids(|r| !r.is_terminal());
        let chosen: Vec<String> = live.choose_multiple(&mut rng, 3).cloned().collect();
        for id in chosen {
            if !read_run(&clients, &id).await {
                return;
            }
        }
        // Nothing to follow yet: still notice when the server is gone.
        if live.is_empty() {
            let request = clients.http.get(format!("{}/healthz", clients.address));
            if clients.send(request).await.is_none() {
                return;
            }
        }
    }
}

/// Reads one run's stream at a time, from the start of its history.
async fn streamer(clients: Arc<Clients>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    loop {
        think(&mut rng, 30).await;
        let Some(id) = clients.pick_target(&mut rng) else {
            let request = clients.http.get(format!("{}/healthz", clients.address));
            if clients.send(request).await.is_none() {
                return;
            }
            continue;
        };
        let Ok(response) = clients
            .http
            .get(clients.url(&format!("/runs/{id}/stream")))
            .send()
            .await
        else {
            return;
        };
        if response.status() != 200 {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            clients.unexpected(&format!("stream of run {id}"), status, &Value::String(body));
            continue;
        }
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                // Cut off by the kill; the complete events before it were recorded.
                return;
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            let (events, problems) = drain_events(&mut buffer);
            if !events.is_empty() {
                clients.ledger().events("stream", &events);
            }
            for problem in problems {
                clients.violation(format!("stream of run {id}: {problem}"));
            }
        }
    }
}

/// Complete lifecycle events (those with an `id:`) out of `buffer`, and what was
/// wrong with any other; a partial event stays in the buffer.
fn drain_events(buffer: &mut String) -> (Vec<Value>, Vec<String>) {
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut id = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        let Some(id) = id else {
            continue;
        };
        match serde_json::from_str::<Value>(&data) {
            Ok(event) if event["seq"].as_u64() == Some(id) => out.push(event),
            _ => problems.push(format!("event with id {id} has data {data:?}")),
        }
    }
    (out, problems)
}
