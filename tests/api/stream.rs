//! The run stream: progress and lifecycle events, resumable by sequence number.

use std::sync::Arc;

use actix_web::web::Bytes;
use futures_util::StreamExt;
use runyard::config::Config;
use runyard::http::stream::{StreamCounts, StreamStats};
use runyard::startup::Application;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    assert_problem, client, long_spec, parse_block, quick_spec, spawn_app, types, wait_ready,
    TIMEOUT,
};

#[actix_web::test]
async fn the_stream_shows_progress_and_every_lifecycle_event_then_ends() {
    let app = spawn_app().await;
    let mut spec = quick_spec("streamed");
    spec["epochs"] = serde_json::json!(5);
    let id = app.submit_ok(&spec).await;
    let streamed = app.stream(&id, None).await;

    let progress: Vec<_> = streamed.iter().filter(|e| e.event == "progress").collect();
    assert!(!progress.is_empty(), "no progress event");
    for p in &progress {
        assert_eq!(p.id, None, "progress is not a journaled event");
        for key in [
            "epoch",
            "epochs",
            "batch",
            "batches_per_epoch",
            "samples",
            "loss",
            "percent",
            "samples_per_sec",
            "eta_secs",
        ] {
            assert!(
                p.data.get(key).is_some(),
                "progress lacks {key}: {}",
                p.data
            );
        }
    }
    let last = progress.last().expect("one");
    assert_eq!(
        last.data["percent"], 100.0,
        "the stream ends on the final figures"
    );
    assert_eq!(last.data["samples"], 5 * 2000);

    let lifecycle: Vec<_> = streamed.iter().filter(|e| e.event != "progress").collect();
    let journaled = app.events(&id).await;
    assert_eq!(lifecycle.len(), journaled.len());
    for (sse, event) in lifecycle.iter().zip(&journaled) {
        assert_eq!(sse.id, event["seq"].as_u64(), "id is the sequence number");
        assert_eq!(sse.event, event["type"].as_str().expect("type"));
        assert_eq!(&sse.data, event);
    }
    assert_eq!(
        types(&journaled)[journaled.len() - 2..],
        ["RunCompleted", "SlotReleased"]
    );
}

#[actix_web::test]
async fn a_stream_resumes_after_the_last_event_id() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("resumed")).await;
    app.wait_for(&id, |r| r["state"] == "completed").await;
    let journaled = app.events(&id).await;
    let started = journaled
        .iter()
        .find(|e| e["type"] == "RunStarted")
        .and_then(|e| e["seq"].as_u64())
        .expect("RunStarted");

    let resumed = app.stream(&id, Some(started)).await;
    let ids: Vec<u64> = resumed.iter().filter_map(|e| e.id).collect();
    let expected: Vec<u64> = journaled
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .filter(|seq| *seq > started)
        .collect();
    assert_eq!(ids, expected, "no gap and no duplicate after Last-Event-ID");
}

// ---- The all-runs stream, filters, `?every=`, bad queries, slow and gone clients ----

/// One item of an event stream: an event, or a comment such as the keep-alive.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// An event with its `id:`, `event:` and parsed `data:`.
    Event(Option<u64>, String, Value),
    /// A `:` comment line.
    Comment(String),
}

/// Reads an event stream item by item.
pub(crate) struct SseReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>>>>,
    buffer: String,
    items: std::collections::VecDeque<Item>,
}

impl SseReader {
    /// Checks the response is an event stream and reads it.
    pub(crate) fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().expect("ascii"),
            "text/event-stream"
        );
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            items: Default::default(),
        }
    }

    /// The next item; `None` at the end of the stream (or when the connection
    /// breaks, as when the server is killed).
    pub(crate) async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Some(item);
            }
            let chunk = match tokio::time::timeout(TIMEOUT, self.body.next())
                .await
                .expect("stream item in time")
            {
                Some(Ok(chunk)) => chunk,
                Some(Err(_)) | None => return None,
            };
            self.buffer
                .push_str(std::str::from_utf8(chunk.as_ref()).expect("utf-8"));
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (event, comments) = parse_block(&block);
                self.items.extend(comments.into_iter().map(Item::Comment));
                if let Some(e) = event {
                    self.items.push_back(Item::Event(e.id, e.event, e.data));
                }
            }
        }
    }

    /// The events up to the first keep-alive comment: every matching event that was
    /// durable when the stream was opened (the stream sends its catch-up first).
    pub(crate) async fn until_keep_alive(&mut self) -> Vec<(Option<u64>, String, Value)> {
        let mut out = Vec::new();
        loop {
            match self.next().await.expect("stream open until its keep-alive") {
                Item::Event(id, name, data) => out.push((id, name, data)),
                Item::Comment(c) if c == "keep-alive" => return out,
                Item::Comment(_) => {}
            }
        }
    }
}

/// A server in this process whose stream counters the test can read.
struct CountedApp {
    address: String,
    http: reqwest::Client,
    stats: Arc<StreamStats>,
    _dir: tempfile::TempDir,
}

async fn counted_app(keep_alive_ms: u64) -> CountedApp {
    runyard::telemetry::init("warn");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.bind = "127.0.0.1:0".parse().expect("address");
    config.server.data_dir = dir.path().to_path_buf();
    config.server.sse_keep_alive_ms = keep_alive_ms;
    config.train.tick_ms = 20;
    config.train.threads_per_slot = 1;
    config.train.cpu_slots = 1;
    let app = Application::build(config).await.expect("server builds");
    let address = format!("http://{}", app.address());
    let stats = app.stream_stats();
    actix_web::rt::spawn(app.run_until_stopped());
    let http = client();
    wait_ready(&http, &address).await;
    CountedApp {
        address,
        http,
        stats,
        _dir: dir,
    }
}

impl CountedApp {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("answered")
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON")
    }

    async fn submit(&self, spec: &Value) -> String {
        let response = self
            .http
            .post(format!("{}/api/v1/runs", self.address))
            .json(spec)
            .send()
            .await
            .expect("answered");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").to_string()
    }

    async fn wait_state(&self, id: &str, state: &str) {
        tokio::time::timeout(TIMEOUT, async {
            while self.json(&format!("/api/v1/runs/{id}")).await["state"] != state {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("run reached the state in time");
    }

    async fn events(&self, id: &str) -> Vec<Value> {
        self.json(&format!("/api/v1/runs/{id}/events"))
            .await
            .as_array()
            .expect("events")
            .clone()
    }

    /// Waits until the stream counters satisfy `done`.
    async fn wait_stats(&self, done: impl Fn(StreamCounts) -> bool) {
        tokio::time::timeout(TIMEOUT, async {
            while !done(self.stats.counts()) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("stream counters {:?}", self.stats.counts()));
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

#[actix_web::test]
async fn the_all_runs_stream_sends_every_run_s_events_and_filters_on_the_server() {
    let app = counted_app(100).await;
    let a = app.submit(&quick_spec("all-a")).await;
    let b = app.submit(&quick_spec("all-b")).await;
    app.wait_state(&a, "completed").await;
    app.wait_state(&b, "completed").await;
    let (events_a, events_b) = (app.events(&a).await, app.events(&b).await);
    let mut all: Vec<Value> = events_a.iter().chain(&events_b).cloned().collect();
    all.sort_by_key(|e| e["seq"].as_u64());

    // Everything, in journal order, as `/events` shows it.
    let mut everything = SseReader::new(app.get("/api/v1/stream").await);
    let got = everything.until_keep_alive().await;
    let lifecycle: Vec<_> = got
        .iter()
        .filter(|(_, name, _)| name != "progress")
        .collect();
    assert_eq!(lifecycle.len(), all.len());
    for ((id, name, data), event) in lifecycle.iter().zip(&all) {
        assert_eq!(*id, event["seq"].as_u64());
        assert_eq!(name, event["type"].as_str().expect("type"));
        assert_eq!(data, event);
    }

    // One run, by `run=`.
    let mut one = SseReader::new(app.get(&format!("/api/v1/stream?run={a}")).await);
    let ids: Vec<u64> = one
        .until_keep_alive()
        .await
        .iter()
        .filter_map(|(id, _, _)| *id)
        .collect();
    assert_eq!(ids, seqs(&events_a));

    // Event names, repeatable, with `after=`.
    let after = all[2]["seq"].as_u64().expect("seq");
    let mut typed = SseReader::new(
        app.get(&format!(
            "/api/v1/stream?type=RunCompleted&type=SlotReleased&after={after}"
        ))
        .await,
    );
    let got = typed.until_keep_alive().await;
    let expected: Vec<u64> = all
        .iter()
        .filter(|e| {
            e["seq"].as_u64() > Some(after)
                && (e["type"] == "RunCompleted" || e["type"] == "SlotReleased")
        })
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        got.iter().filter_map(|(id, _, _)| *id).collect::<Vec<_>>(),
        expected
    );
    assert!(
        got.iter().all(|(_, name, _)| name != "progress"),
        "type= leaves progress out"
    );

    // `state=` is the run's state now: both runs are completed, none is queued.
    let mut completed = SseReader::new(app.get("/api/v1/stream?state=completed").await);
    let ids: Vec<u64> = completed
        .until_keep_alive()
        .await
        .iter()
        .filter_map(|(id, _, _)| *id)
        .collect();
    assert_eq!(ids, seqs(&all));
    let mut queued = SseReader::new(app.get("/api/v1/stream?state=queued").await);
    assert!(queued.until_keep_alive().await.is_empty());

    // The live tail: a new run's events arrive on the open stream, after the rest.
    let c = app.submit(&quick_spec("all-c")).await;
    app.wait_state(&c, "completed").await;
    let events_c = app.events(&c).await;
    let mut tail = Vec::new();
    while tail.len() < events_c.len() {
        if let Some(Item::Event(Some(id), _, _)) = everything.next().await {
            tail.push(id);
        }
    }
    assert_eq!(tail, seqs(&events_c), "the live tail, no gap, no duplicate");
}

#[actix_web::test]
async fn every_paces_progress_and_the_run_stream_still_ends() {
    let app = spawn_app().await;
    let mut spec = quick_spec("paced");
    spec["epochs"] = json!(5);
    let id = app.submit_ok(&spec).await;
    let response = app
        .client
        .get(format!(
            "{}/api/v1/runs/{id}/stream?every=100ms",
            app.address
        ))
        .send()
        .await
        .expect("answered");
    let mut reader = SseReader::new(response);
    let mut progress = Vec::new();
    let mut ids = Vec::new();
    while let Some(item) = reader.next().await {
        if let Item::Event(id, name, data) = item {
            match id {
                Some(id) => ids.push(id),
                None => {
                    assert_eq!(name, "progress");
                    progress.push(data);
                }
            }
        }
    }
    assert!(!progress.is_empty());
    assert_eq!(progress.last().expect("one")["percent"], 100.0);
    assert_eq!(ids, seqs(&app.events(&id).await));
}

#[actix_web::test]
async fn bad_stream_queries_are_problems_naming_the_parameter() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("bad-queries")).await;
    for (path, name) in [
        ("/api/v1/stream?every=10ms", "every"),
        ("/api/v1/stream?every=fast", "every"),
        ("/api/v1/stream?every=2h", "every"),
        ("/api/v1/stream?after=x", "after"),
        ("/api/v1/stream?type=Nope", "type"),
        ("/api/v1/stream?state=sleeping", "state"),
        ("/api/v1/stream?run=zzz", "run"),
        ("/api/v1/stream?colour=red", "colour"),
        (&format!("/api/v1/runs/{id}/stream?every=0s"), "every"),
        (&format!("/api/v1/runs/{id}/stream?after=-1"), "after"),
        (&format!("/api/v1/runs/{id}/stream?run={id}"), "run"),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .expect("answered");
        let detail = assert_problem(response, 400, "invalid_query").await;
        assert!(detail.contains(&format!("`{name}`")), "{path}: {detail}");
    }
    let response = app
        .client
        .get(format!("{}/api/v1/stream", app.address))
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .expect("answered");
    let detail = assert_problem(response, 400, "invalid_query").await;
    assert!(detail.contains("Last-Event-ID"), "{detail}");
}

#[actix_web::test]
async fn a_client_that_goes_away_is_freed_and_counted() {
    let app = counted_app(50).await;
    let id = app.submit(&long_spec("watched")).await;
    let mut reader = SseReader::new(app.get(&format!("/api/v1/runs/{id}/stream")).await);
    reader.until_keep_alive().await;
    assert_eq!(app.stats.counts().connected, 1);
    drop(reader);
    // Freed within a keep-alive interval; the counters say so.
    app.wait_stats(|c| c.connected == 0 && c.disconnects == 1)
        .await;
    assert_eq!(app.stats.counts().slow_disconnects, 0);
    let cancel = app
        .http
        .post(format!("{}/api/v1/runs/{id}/cancel", app.address))
        .send()
        .await
        .expect("answered");
    assert!(cancel.status().is_success());
}

#[actix_web::test]
async fn a_client_that_does_not_read_is_disconnected_with_where_to_resume() {
    let app = counted_app(100).await;
    // A backlog far larger than the socket buffers: a run with tiny epochs journals
    // thousands of `EpochCompleted` events in a few seconds.
    let mut spec = long_spec("many-epochs");
    spec["data"]["samples"] = json!(64);
    let busy = app.submit(&spec).await;
    tokio::time::timeout(TIMEOUT, async {
        while app.json("/readyz").await["last_seq"].as_u64() < Some(1000) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a backlog in time");

    // A raw connection with a tiny receive window that reads nothing for now.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let addr: std::net::SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let mut stream = socket.connect(addr).await.expect("connected");
    stream
        .write_all(b"GET /api/v1/stream?after=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request sent");
    app.wait_stats(|c| c.slow_disconnects == 1 && c.connected == 0)
        .await;
    let last_seq = app.json("/readyz").await["last_seq"].as_u64().expect("seq");

    // Now read it all: a prefix of the journal with no gap, then `resume`.
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("read in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let decoded = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let mut ids = Vec::new();
    let mut resume = None;
    for block in decoded.split("\n\n") {
        if let Some(id) = block.lines().find_map(|l| l.strip_prefix("id: ")) {
            ids.push(id.parse::<u64>().expect("id"));
        }
        if block.contains("event: resume") {
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data");
            let data: Value = serde_json::from_str(data).expect("JSON");
            resume = data["after"].as_u64();
        }
    }
    let after = resume.expect("the stream ends with `resume`");
    assert!(
        decoded
            .trim_end()
            .rsplit("\n\n")
            .next()
            .is_some_and(|last| last.contains("event: resume")),
        "resume is the last event"
    );
    assert!(after < last_seq, "the client was behind");
    assert_eq!(ids, (1..=after).collect::<Vec<_>>(), "a prefix, no gap");

    // Resuming from `after` gives the rest, no gap and no duplicate.
    let mut resumed = SseReader::new(app.get(&format!("/api/v1/stream?after={after}")).await);
    let rest: Vec<u64> = resumed
        .until_keep_alive()
        .await
        .iter()
        .filter_map(|(id, _, _)| *id)
        .collect();
    let last = *rest.last().expect("the rest");
    assert!(last >= last_seq);
    assert_eq!(rest, ((after + 1)..=last).collect::<Vec<_>>());
    let cancel = app
        .http
        .post(format!("{}/api/v1/runs/{busy}/cancel", app.address))
        .send()
        .await
        .expect("answered");
    assert!(cancel.status().is_success());
}

/// Undoes HTTP/1.1 chunked transfer encoding.
fn dechunk(mut rest: &str) -> String {
    let mut decoded = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if size == 0 {
            return decoded;
        }
        decoded.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}
