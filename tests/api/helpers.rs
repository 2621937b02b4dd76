//! `spawn_app()` and the HTTP helpers the tests share.

use std::time::Duration;

use futures_util::StreamExt;
use runyard::config::Config;
use runyard::startup::Application;
use serde_json::{json, Value};

/// A safety net for anything a test waits on; never the expected wait.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// How often a test re-reads a run while waiting for a state.
const POLL: Duration = Duration::from_millis(20);

/// A server running in this process.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// A client without proxies.
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Starts the server with test settings (port 0, temp data dir, a fast ticker).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the server after `configure` has adjusted the test settings.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    runyard::telemetry::init("warn");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.bind = "127.0.0.1:0".parse().expect("address");
    config.server.data_dir = dir.path().to_path_buf();
    config.train.tick_ms = 20;
    // Torch's thread count is process-wide and every test server in this binary sets
    // it: the same value everywhere keeps the bit-identical checks meaningful.
    config.train.threads_per_slot = 1;
    configure(&mut config);
    let app = Application::build(config).await.expect("server builds");
    let address = format!("http://{}", app.address());
    actix_web::rt::spawn(app.run_until_stopped());
    let test = TestApp {
        address,
        client: client(),
        _dir: dir,
    };
    wait_ready(&test.client, &test.address).await;
    test
}

/// An HTTP client for loopback tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(client: &reqwest::Client, address: &str) {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Ok(r) = client.get(format!("{address}/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .expect("server became ready");
}

/// `GET url` of any server (a child process, where there is no [`TestApp`]),
/// expecting `200` and JSON.
pub async fn get_json_at(http: &reqwest::Client, url: String) -> Value {
    let response = http.get(url).send().await.expect("answered");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// Re-reads run `id` of the server at `address` until `done` holds, and returns it.
pub async fn wait_for_run_at(
    http: &reqwest::Client,
    address: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let run = get_json_at(http, format!("{address}/api/v1/runs/{id}")).await;
            if done(&run) {
                return run;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .expect("run reached the expected state in time")
}

/// A small, quick classification run.
pub fn quick_spec(name: &str) -> Value {
    json!({
        "name": name,
        "model": {"kind": "mlp", "hidden": [32]},
        "data": {"kind": "synthetic", "samples": 2000, "features": 16, "classes": 3, "seed": 7},
        "optimizer": {"kind": "adam", "lr": 0.01},
        "epochs": 3,
        "batch_size": 32,
        "seed": 1
    })
}

/// A run that takes far longer than any test waits for, to be cancelled or killed.
pub fn long_spec(name: &str) -> Value {
    let mut spec = quick_spec(name);
    spec["epochs"] = json!(100_000);
    spec
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// The `id:` field.
    pub id: Option<u64>,
    /// The `event:` field.
    pub event: String,
    /// The `data:` field, parsed.
    pub data: Value,
}

/// One block of a stream (the text up to a blank line): its event, if it has an
/// `event:` field, and its comment lines.
pub fn parse_block(block: &str) -> (Option<SseEvent>, Vec<String>) {
    let (mut id, mut event, mut data) = (None, String::new(), String::new());
    let mut comments = Vec::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse().expect("numeric id"));
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        } else if let Some(v) = line.strip_prefix(':') {
            comments.push(v.trim().to_string());
        }
    }
    let event = (!event.is_empty()).then(|| SseEvent {
        id,
        event,
        data: serde_json::from_str(&data).expect("event data is JSON"),
    });
    (event, comments)
}

/// Parses complete events out of `buffer`, leaving a partial one in place.
fn drain_events(buffer: &mut String, out: &mut Vec<SseEvent>) {
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        out.extend(parse_block(&block).0);
    }
}

impl TestApp {
    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The data root of this server (`DATA_DIR/datasets`), created.
    pub fn datasets(&self) -> std::path::PathBuf {
        let dir = self._dir.path().join("datasets");
        std::fs::create_dir_all(&dir).expect("datasets dir");
        dir
    }

    /// `POST /api/v1/runs` with a JSON body.
    pub async fn submit(&self, spec: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/runs", self.address))
            .json(spec)
            .send()
            .await
            .expect("submit answered")
    }

    /// Submits and returns the new run's id, checking for `201`.
    pub async fn submit_ok(&self, spec: &Value) -> String {
        let response = self.submit(spec).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("run JSON");
        body["id"].as_str().expect("id").to_string()
    }

    /// `GET` a path, expecting JSON back.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("answered");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// `GET` a path, whatever it answers.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("answered")
    }

    /// `POST` a path without a body.
    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .send()
            .await
            .expect("answered")
    }

    /// The run's JSON.
    pub async fn run(&self, id: &str) -> Value {
        let (status, body) = self.get_json(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The run's journaled events.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.get_json(&format!("/api/v1/runs/{id}/events")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().expect("array").clone()
    }

    /// Re-reads the run until `done` holds, and returns it.
    pub async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let waited = tokio::time::timeout(TIMEOUT, async {
            loop {
                let run = self.run(id).await;
                if done(&run) {
                    return run;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        match waited {
            Ok(run) => run,
            // Say where the run stood, and how it got there.
            Err(_) => {
                let run = self.run(id).await;
                let events: Vec<String> = self
                    .events(id)
                    .await
                    .iter()
                    .map(|e| format!("{} {}", e["type"].as_str().unwrap_or("?"), e["data"]))
                    .collect();
                panic!(
                    "run {id} did not reach the expected state in {TIMEOUT:?}; it is {run:#}\nits events:\n  {}",
                    events.join("\n  ")
                )
            }
        }
    }

    /// Re-reads the run until it has ended (completed, failed or cancelled).
    pub async fn wait_ended(&self, id: &str) -> Value {
        self.wait_for(id, |r| {
            ["completed", "failed", "cancelled"].contains(&r["state"].as_str().unwrap_or(""))
        })
        .await
    }

    /// Reads the run's stream to its end.
    pub async fn stream(&self, id: &str, last_event_id: Option<u64>) -> Vec<SseEvent> {
        self.stream_at(&format!("/api/v1/runs/{id}/stream"), last_event_id)
            .await
    }

    /// Reads the stream at `path` (a run's, a sweep's) to its end.
    pub async fn stream_at(&self, path: &str, last_event_id: Option<u64>) -> Vec<SseEvent> {
        read_stream(
            &self.client,
            &format!("{}{path}", self.address),
            last_event_id,
        )
        .await
    }
}

/// Reads the event stream at `url` to its end.
pub async fn read_stream(
    client: &reqwest::Client,
    url: &str,
    last_event_id: Option<u64>,
) -> Vec<SseEvent> {
    let mut request = client.get(url);
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last.to_string());
    }
    let response = request.send().await.expect("stream answered");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        "text/event-stream"
    );
    let mut body = response.bytes_stream();
    let (mut buffer, mut events) = (String::new(), Vec::new());
    tokio::time::timeout(TIMEOUT, async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("stream chunk");
            buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            drain_events(&mut buffer, &mut events);
        }
    })
    .await
    .expect("stream ended in time");
    events
}

/// Asserts a response is a problem+json with the given status and code, and returns
/// its `detail`.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["title"].is_string() && body["type"].is_string(),
        "{body}"
    );
    body["detail"].as_str().expect("detail").to_string()
}

/// The `type` of each event, in order.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("type").to_string())
        .collect()
}

/// `POST url` with an `Idempotency-Key` (and a JSON body, when given).
pub async fn post_keyed(
    http: &reqwest::Client,
    url: String,
    key: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = http.post(url).header("idempotency-key", key);
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("answered")
}

/// Status, whether `Idempotent-Replayed` is set, `Location` and body of an answer.
pub async fn answer_parts(response: reqwest::Response) -> (u16, bool, Option<String>, String) {
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().expect("ascii").to_string());
    (
        status,
        replayed,
        location,
        response.text().await.expect("body"),
    )
}

/// Calls `probe` every `every` until it answers `Some`, and returns that; panics
/// naming `what` after [`TIMEOUT`].
pub async fn poll_until<T, F, Fut>(what: &str, every: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            tokio::time::sleep(every).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Whether a process is gone (or a zombie no one has reaped yet).
pub fn dead(pid: i32) -> bool {
    runyard::train::command::proc_stat(pid).is_none_or(|s| s.state == 'Z')
}

/// A file's text; panics naming the file.
pub fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
