//! OpenTelemetry traces: an OTLP/HTTP receiver in this process (protobuf bodies
//! decoded with the `opentelemetry-proto` types) gets what servers export. Each test
//! has its own receiver and its own server, whose trace pipeline is its own: tests in
//! this binary run side by side without seeing each other's spans.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use prost::Message as _;
use runyard::config::Config;
use runyard::startup::Application;
use serde_json::{json, Value};

use crate::helpers::{client, long_spec, quick_spec, wait_ready, TIMEOUT};
use crate::server::Server;

/// OTLP span kinds, as the protobuf numbers them.
const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;

/// A span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Received {
    span: Span,
    service: String,
}

impl Received {
    fn name(&self) -> &str {
        &self.span.name
    }

    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }

    fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }

    fn attr(&self, key: &str) -> Option<Any> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    }

    fn str_attr(&self, key: &str) -> Option<String> {
        match self.attr(key) {
            Some(Any::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(Any::IntValue(i)) => Some(i),
            _ => None,
        }
    }

    fn event_names(&self) -> Vec<&str> {
        self.span.events.iter().map(|e| e.name.as_str()).collect()
    }

    fn status(&self) -> (i32, String) {
        let status = self.span.status.clone().unwrap_or_default();
        (status.code, status.message)
    }

    fn run_id(&self) -> Option<String> {
        self.str_attr("runyard.run.id")
    }
}

/// What the receiver got, and a counter of requests that wakes waiters.
struct Store {
    spans: Mutex<Vec<Received>>,
    requests: tokio::sync::watch::Sender<u64>,
}

/// An OTLP/HTTP receiver on a free loopback port: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`.
struct Collector {
    /// `http://127.0.0.1:PORT`, the base URL a server is given.
    url: String,
    store: web::Data<Store>,
    _server: actix_web::dev::ServerHandle,
}

async fn receive(req: HttpRequest, body: web::Bytes, store: web::Data<Store>) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/x-protobuf" {
        return HttpResponse::UnsupportedMediaType().finish();
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return HttpResponse::BadRequest().finish();
    };
    {
        let mut spans = store.spans.lock().expect("store");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.clone())
                .and_then(|v| match v.value {
                    Some(Any::StringValue(s)) => Some(s),
                    _ => None,
                })
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push(Received {
                        span,
                        service: service.clone(),
                    });
                }
            }
        }
    }
    store.requests.send_modify(|n| *n += 1);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

impl Collector {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let store = web::Data::new(Store {
            spans: Mutex::new(Vec::new()),
            requests: tokio::sync::watch::channel(0).0,
        });
        let data = store.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 << 20))
                .route("/v1/traces", web::post().to(receive))
        })
        .listen(listener)
        .expect("listen")
        .workers(1)
        .disable_signals()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url,
            store,
            _server: handle,
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.store.spans.lock().expect("store").clone()
    }

    /// Waits until the spans received satisfy `done`, and returns them all.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let mut requests = self.store.requests.subscribe();
        let waited = tokio::time::timeout(TIMEOUT, async {
            loop {
                let spans = self.spans();
                if done(&spans) {
                    return spans;
                }
                requests.changed().await.expect("receiver alive");
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            let names: Vec<String> = self.spans().iter().map(|s| s.span.name.clone()).collect();
            panic!("the collector never got {what}; it got {names:?}")
        })
    }
}

/// The spans of one run.
fn of_run<'a>(spans: &'a [Received], run: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.run_id().as_deref() == Some(run))
        .collect()
}

fn named<'a>(spans: &[&'a Received], name: &str) -> Vec<&'a Received> {
    spans.iter().copied().filter(|s| s.name() == name).collect()
}

fn one<'a>(spans: &[&'a Received], name: &str) -> &'a Received {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one `{name}` span");
    found[0]
}

fn has_root(spans: &[Received], run: &str) -> bool {
    spans
        .iter()
        .any(|s| s.name() == "run" && s.run_id().as_deref() == Some(run))
}

/// A server in this process whose trace pipeline the test can read.
struct TracedApp {
    address: String,
    http: reqwest::Client,
    app_counts: Box<dyn Fn() -> runyard::telemetry::SpanCounts>,
    _dir: tempfile::TempDir,
}

impl TracedApp {
    async fn spawn(otlp_endpoint: &str) -> Self {
        runyard::telemetry::init("warn");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::defaults();
        config.server.bind = "127.0.0.1:0".parse().expect("address");
        config.server.data_dir = dir.path().to_path_buf();
        config.train.tick_ms = 20;
        config.train.threads_per_slot = 1;
        config.telemetry.otlp_endpoint = Some(otlp_endpoint.to_string());
        config.telemetry.export_interval_ms = 50;
        let app = Application::build(config).await.expect("server builds");
        let address = format!("http://{}", app.address());
        let traces = app.traces().expect("traces are on");
        actix_web::rt::spawn(app.run_until_stopped());
        let http = client();
        wait_ready(&http, &address).await;
        Self {
            address,
            http,
            app_counts: Box::new(move || traces.counts()),
            _dir: dir,
        }
    }

    async fn submit(&self, spec: &Value, traceparent: Option<&str>) -> Value {
        submit(&self.http, &self.address, spec, traceparent).await
    }

    async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        wait_for_state(&self.http, &self.address, id, state).await
    }
}

async fn submit(
    http: &reqwest::Client,
    address: &str,
    spec: &Value,
    traceparent: Option<&str>,
) -> Value {
    let mut request = http.post(format!("{address}/api/v1/runs")).json(spec);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("submit answered");
    assert_eq!(response.status(), 201);
    response.json().await.expect("run JSON")
}

async fn wait_for_state(http: &reqwest::Client, address: &str, id: &str, state: &str) -> Value {
    wait_for_run(http, address, id, |run| run["state"] == state).await
}

async fn wait_for_run(
    http: &reqwest::Client,
    address: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait_for_run_every(http, address, id, Duration::from_millis(20), done).await
}

/// Re-reads the run every `every` until `done` holds.
async fn wait_for_run_every(
    http: &reqwest::Client,
    address: &str,
    id: &str,
    every: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let response = http
                .get(format!("{address}/api/v1/runs/{id}"))
                .send()
                .await
                .expect("answered");
            let run: Value = response.json().await.expect("run JSON");
            if done(&run) {
                return run;
            }
            tokio::time::sleep(every).await;
        }
    })
    .await
    .expect("run reached the expected state in time")
}

/// Asks for `action` (`pause`, `resume`, `cancel`) on run `id`, which must take it.
async fn control(http: &reqwest::Client, address: &str, id: &str, action: &str) {
    let response = http
        .post(format!("{address}/api/v1/runs/{id}/{action}"))
        .send()
        .await
        .expect("answered");
    assert!(
        response.status().is_success(),
        "{action}: {}",
        response.text().await.unwrap_or_default()
    );
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}

#[actix_web::test]
async fn a_run_is_one_trace_of_its_lifecycle_under_the_callers_span() {
    let collector = Collector::start();
    let app = TracedApp::spawn(&collector.url).await;
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut spec = quick_spec("traced");
    spec["checkpoint"] = json!({"every_batches": 20});
    let before = nanos(SystemTime::now());
    let run = app
        .submit(&spec, Some(&format!("00-{caller_trace}-{caller_span}-01")))
        .await;
    let id = run["id"].as_str().expect("id").to_string();
    assert_eq!(run["trace_id"], caller_trace, "the run names its trace");
    app.wait_for_state(&id, "completed").await;

    // The root span is exported last, when the run ends.
    let spans = collector
        .wait_for("the run's root span", |spans| has_root(spans, &id))
        .await;
    let run_spans = of_run(&spans, &id);
    assert!(
        run_spans.iter().all(|s| s.trace_id() == caller_trace),
        "the whole run is in the caller's trace"
    );
    assert!(run_spans.iter().all(|s| s.service == "runyard"));
    let mut ids: Vec<String> = run_spans.iter().map(|s| s.span_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), run_spans.len(), "no span is exported twice");

    let root = one(&run_spans, "run");
    assert_eq!(
        root.parent_id(),
        caller_span,
        "a child of the caller's span"
    );
    assert_eq!(root.span.kind, KIND_INTERNAL);
    assert_eq!(root.str_attr("runyard.run.name").as_deref(), Some("traced"));
    assert_eq!(
        root.str_attr("runyard.run.digest"),
        run["digest"].as_str().map(String::from)
    );
    assert_eq!(root.int_attr("runyard.run.slots"), Some(1));
    assert_eq!(root.int_attr("runyard.run.attempt"), Some(1));
    assert_eq!(
        root.str_attr("runyard.run.state").as_deref(),
        Some("completed")
    );
    assert_eq!(root.status().0, StatusCode::Unset as i32);
    assert!(root.span.start_time_unix_nano >= before);
    let root_events = root.event_names();
    assert_eq!(root_events.first(), Some(&"RunSubmitted"));
    assert!(root_events.contains(&"RunCompleted"), "{root_events:?}");

    for name in ["queue_wait", "slot_claim", "attempt"] {
        let span = one(&run_spans, name);
        assert_eq!(
            span.parent_id(),
            root.span_id(),
            "{name} is a child of the run"
        );
        assert!(span.span.start_time_unix_nano >= root.span.start_time_unix_nano);
        assert!(span.span.end_time_unix_nano <= root.span.end_time_unix_nano);
    }
    let attempt = one(&run_spans, "attempt");
    assert_eq!(attempt.int_attr("runyard.attempt"), Some(1));
    assert_eq!(attempt.str_attr("runyard.device").as_deref(), Some("cpu"));
    assert_eq!(
        attempt.str_attr("runyard.attempt.outcome").as_deref(),
        Some("completed")
    );
    assert!(attempt.event_names().contains(&"RunStarted"));
    assert!(one(&run_spans, "slot_claim")
        .event_names()
        .contains(&"SlotClaimed"));

    let mut epochs = named(&run_spans, "epoch");
    epochs.sort_by_key(|e| e.int_attr("runyard.epoch"));
    let numbers: Vec<_> = epochs.iter().map(|e| e.int_attr("runyard.epoch")).collect();
    assert_eq!(numbers, [Some(1), Some(2), Some(3)]);
    for epoch in &epochs {
        assert_eq!(
            epoch.parent_id(),
            attempt.span_id(),
            "epochs are children of the attempt"
        );
        assert!(matches!(epoch.attr("runyard.train.loss"), Some(Any::DoubleValue(l)) if l > 0.0));
        assert!(matches!(
            epoch.attr("runyard.train.accuracy"),
            Some(Any::DoubleValue(a)) if (0.0..=1.0).contains(&a)
        ));
        assert!(epoch.span.end_time_unix_nano > epoch.span.start_time_unix_nano);
        assert!(epoch.span.start_time_unix_nano >= attempt.span.start_time_unix_nano);
    }
    let checkpoints = named(&run_spans, "checkpoint");
    // One span per journaled checkpoint: at each epoch's end, and every 20 steps as
    // far as the ticker saw them (a fast run's periodic marks may be sampled
    // together, and only the newest is journaled).
    let events: Vec<Value> = app
        .http
        .get(format!("{}/api/v1/runs/{id}/events", app.address))
        .send()
        .await
        .expect("events answered")
        .json()
        .await
        .expect("events are JSON");
    let journaled = events
        .iter()
        .filter(|e| e["type"] == "CheckpointSaved")
        .count();
    assert!(journaled >= 3, "{journaled} checkpoints journaled");
    assert_eq!(
        checkpoints.len(),
        journaled,
        "one span per journaled checkpoint"
    );
    for checkpoint in &checkpoints {
        assert_eq!(checkpoint.parent_id(), attempt.span_id());
        assert!(checkpoint.int_attr("runyard.checkpoint.step").is_some());
        assert!(checkpoint.str_attr("runyard.checkpoint.sha256").is_some());
    }

    // The submit request has its own span, also a child of the caller's.
    let request = spans
        .iter()
        .find(|s| s.name() == "POST /api/v1/runs")
        .expect("the submit request's span");
    assert_eq!(request.span.kind, KIND_SERVER);
    assert_eq!(request.trace_id(), caller_trace);
    assert_eq!(request.parent_id(), caller_span);
    assert_eq!(request.int_attr("http.response.status_code"), Some(201));
    assert_eq!(
        request.str_attr("http.route").as_deref(),
        Some("/api/v1/runs")
    );
    // A request without `traceparent` starts a trace of its own; one for a run has
    // the route, not the id, in its name.
    let get = spans
        .iter()
        .find(|s| s.name() == "GET /api/v1/runs/{id}")
        .expect("a run read's span");
    assert_ne!(get.trace_id(), caller_trace);
    assert!(get.span.parent_span_id.is_empty());
    assert_eq!(get.str_attr("url.path"), Some(format!("/api/v1/runs/{id}")));
    assert!(
        !spans.iter().any(|s| s.name().contains("readyz")),
        "probes have no spans"
    );

    // A run submitted without `traceparent` gets a fresh trace, with no parent.
    let other = app.submit(&quick_spec("untraced-caller"), None).await;
    let other_id = other["id"].as_str().expect("id").to_string();
    let other_trace = other["trace_id"].as_str().expect("a trace id").to_string();
    assert_eq!(other_trace.len(), 32);
    assert_ne!(other_trace, caller_trace);
    app.wait_for_state(&other_id, "completed").await;
    let spans = collector
        .wait_for("the second run's root span", |spans| {
            has_root(spans, &other_id)
        })
        .await;
    let other_spans = of_run(&spans, &other_id);
    let other_root = one(&other_spans, "run");
    assert!(other_root.span.parent_span_id.is_empty());
    assert!(other_spans.iter().all(|s| s.trace_id() == other_trace));
    assert_eq!((app.app_counts)().dropped, 0);
}

#[actix_web::test]
async fn with_the_collector_down_training_goes_on_and_lost_spans_are_counted() {
    // A port nothing listens on: every export is refused.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let app = TracedApp::spawn(&format!("http://127.0.0.1:{closed}")).await;
    let mut spec = quick_spec("collector-down");
    spec["checkpoint"] = json!({"every_batches": 20});
    let run = app.submit(&spec, None).await;
    let id = run["id"].as_str().expect("id").to_string();
    let done = app.wait_for_state(&id, "completed").await;
    assert_eq!(done["epochs"].as_array().map(Vec::len), Some(3));

    // Queue wait, claim, attempt, 3 epochs, checkpoints, the root: at least 10 spans
    // of the run, and the requests' own; none gets through, and all are counted.
    let started = Instant::now();
    loop {
        let counts = (app.app_counts)();
        assert_eq!(counts.exported, 0);
        if counts.dropped >= 10 {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "lost spans were never counted: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let global = runyard::telemetry::span_counts();
    assert!(global.dropped >= (app.app_counts)().dropped);
    // The API still answers.
    let response = app
        .http
        .get(format!("{}/api/v1/runs/{id}", app.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    // And `/metrics` shows the loss.
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("text");
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("runyard_trace_spans_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the dropped spans counter");
    assert!(dropped >= 10.0, "{metrics}");
}

#[actix_web::test]
async fn a_collector_that_never_answers_holds_up_nothing() {
    // Connections are taken by the kernel's backlog and never answered: each export
    // hangs until the exporter's timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("address"));
    let app = TracedApp::spawn(&endpoint).await;
    let started = Instant::now();
    let run = app.submit(&quick_spec("collector-silent"), None).await;
    let id = run["id"].as_str().expect("id").to_string();
    let done = app.wait_for_state(&id, "completed").await;
    assert_eq!(done["epochs"].as_array().map(Vec::len), Some(3));
    // The spans wait for the exporter, which waits for the collector; nothing else
    // does. A request hung until the exporter's timeout (10 s) is then counted.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "training was held up"
    );
    assert_eq!((app.app_counts)().exported, 0);
    let waited = Instant::now();
    while (app.app_counts)().dropped == 0 {
        assert!(
            waited.elapsed() < TIMEOUT,
            "the hung export was never counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(silent);
}

/// A config file turning traces on, for the real binary.
fn traced_config(dir: &std::path::Path, collector: &Collector, interval_ms: u64) -> String {
    let path = dir.join("traced.toml");
    std::fs::write(
        &path,
        format!(
            "[telemetry]\notlp_endpoint = \"{}\"\nexport_interval_ms = {interval_ms}\n",
            collector.url
        ),
    )
    .expect("config written");
    path.to_string_lossy().into_owned()
}

#[actix_web::test]
async fn after_a_crash_the_recovered_run_stays_one_trace_linked_to_what_was_cut_short() {
    let collector = Collector::start();
    let root_dir = tempfile::tempdir().expect("temp dir");
    let data_dir = root_dir.path().join("data");
    let config = traced_config(root_dir.path(), &collector, 50);
    let http = client();
    let (caller_trace, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");

    let server = Server::start_with(&data_dir, "traces-first.log", &["--config", &config]);
    wait_ready(&http, &server.address).await;
    let mut spec = quick_spec("traced-through-a-crash");
    spec["epochs"] = json!(20);
    spec["model"]["hidden"] = json!([128, 128]);
    spec["checkpoint"] = json!({"every_batches": 10});
    let run = submit(
        &http,
        &server.address,
        &spec,
        Some(&format!("00-{caller_trace}-{caller_span}-01")),
    )
    .await;
    let id = run["id"].as_str().expect("id").to_string();
    wait_for_run(&http, &server.address, &id, |r| {
        r["state"] == "running" && r["checkpoint"]["epoch"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    // What ended before the crash reached the collector before it.
    collector
        .wait_for("the first slot claim", |spans| {
            spans
                .iter()
                .any(|s| s.name() == "slot_claim" && s.run_id().as_deref() == Some(id.as_str()))
        })
        .await;
    let killed_at = nanos(SystemTime::now());
    server.kill();

    let server = Server::start_with(&data_dir, "traces-second.log", &["--config", &config]);
    wait_ready(&http, &server.address).await;
    let done = wait_for_state(&http, &server.address, &id, "completed").await;
    assert_eq!(done["attempt"], 2);
    assert_eq!(done["trace_id"], caller_trace);
    let spans = collector
        .wait_for("the run's root span", |spans| has_root(spans, &id))
        .await;
    let run_spans = of_run(&spans, &id);
    let strays: Vec<&str> = run_spans
        .iter()
        .filter(|s| s.trace_id() != caller_trace)
        .map(|s| s.name())
        .collect();
    assert!(strays.is_empty(), "one story; out of it: {strays:?}");
    let mut ids: Vec<String> = run_spans.iter().map(|s| s.span_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        run_spans.len(),
        "nothing from before the crash is sent again"
    );

    let root = one(&run_spans, "run");
    assert_eq!(root.parent_id(), caller_span);
    assert!(
        root.span.start_time_unix_nano < killed_at,
        "the root keeps its real start"
    );
    assert_eq!(root.int_attr("runyard.run.attempt"), Some(2));
    assert!(root.event_names().contains(&"ServerRestarted"));
    assert!(root.event_names().contains(&"RunRequeued"));

    let attempts = named(&run_spans, "attempt");
    assert_eq!(attempts.len(), 2);
    let first = attempts
        .iter()
        .find(|a| a.int_attr("runyard.attempt") == Some(1))
        .expect("attempt 1");
    let second = attempts
        .iter()
        .find(|a| a.int_attr("runyard.attempt") == Some(2))
        .expect("attempt 2");
    let (code, message) = first.status();
    assert_eq!(code, StatusCode::Error as i32);
    assert!(message.contains("server stopped"), "{message}");
    assert_eq!(
        first.str_attr("runyard.attempt.outcome").as_deref(),
        Some("interrupted")
    );
    // Ended at the last sign of life of the first server, not at the restart.
    assert!(first.span.end_time_unix_nano <= killed_at);
    assert_eq!(
        second.str_attr("runyard.attempt.outcome").as_deref(),
        Some("completed")
    );
    for attempt in [first, second] {
        assert_eq!(attempt.parent_id(), root.span_id());
    }
    let links_to_first = |span: &Received| {
        span.span.links.iter().any(|link| {
            hex::encode(&link.span_id) == first.span_id()
                && hex::encode(&link.trace_id) == caller_trace
                && link.attributes.iter().any(|kv| {
                    kv.key == "runyard.link.reason"
                        && kv.value.as_ref().and_then(|v| v.value.clone())
                            == Some(Any::StringValue("server_stopped".into()))
                })
        })
    };
    assert!(
        links_to_first(second),
        "the second attempt links to the interrupted one"
    );
    let requeued = named(&run_spans, "queue_wait")
        .into_iter()
        .find(|q| q.str_attr("runyard.queue.reason").as_deref() == Some("requeued"))
        .expect("the queue wait after the restart");
    assert!(links_to_first(requeued));
    // Epochs of both attempts hang under their own attempt.
    let epochs = named(&run_spans, "epoch");
    assert!(epochs.iter().any(|e| e.parent_id() == second.span_id()));
    assert!(epochs
        .iter()
        .all(|e| e.parent_id() == first.span_id() || e.parent_id() == second.span_id()));
    // The submit request's span, sent before the crash, is in the caller's trace too.
    assert!(spans
        .iter()
        .any(|s| s.name() == "POST /api/v1/runs" && s.trace_id() == caller_trace));
    drop(server);
}

#[actix_web::test]
async fn a_graceful_stop_sends_the_spans_still_queued() {
    let collector = Collector::start();
    let root_dir = tempfile::tempdir().expect("temp dir");
    let data_dir = root_dir.path().join("data");
    // Nothing is sent on a timer during this test: only the stop flushes.
    let config = traced_config(root_dir.path(), &collector, 600_000);
    let http = client();
    let server = Server::start_with(&data_dir, "traces-stop.log", &["--config", &config]);
    wait_ready(&http, &server.address).await;
    let run = submit(&http, &server.address, &quick_spec("flushed-at-stop"), None).await;
    let id = run["id"].as_str().expect("id").to_string();
    // Few reads: each has a span, and a full batch (512) would be sent at once.
    wait_for_run_every(
        &http,
        &server.address,
        &id,
        Duration::from_millis(250),
        |r| r["state"] == "completed",
    )
    .await;
    assert!(
        !has_root(&collector.spans(), &id),
        "nothing is sent before the stop"
    );

    let stopping = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // actix-web's own graceful stop (5 s at most for open connections) and the flush
    // (5 s at most).
    assert!(stopping.elapsed() < Duration::from_secs(15));
    let spans = collector.spans();
    assert!(has_root(&spans, &id), "the root span was sent at the stop");
    let run_spans = of_run(&spans, &id);
    assert!(named(&run_spans, "epoch").len() == 3);
}

/// The spans of `run` with `name`, whoever made them (the journal's fold or an actor).
fn child_of<'a>(spans: &'a [Received], parent: &Received, name: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| s.name() == name && s.parent_id() == parent.span_id())
        .collect()
}

#[actix_web::test]
async fn the_actors_work_is_in_the_runs_trace_under_the_span_it_serves() {
    let collector = Collector::start();
    let root_dir = tempfile::tempdir().expect("temp dir");
    let data_dir = root_dir.path().join("data");
    let config = traced_config(root_dir.path(), &collector, 50);
    let http = client();
    let (caller_trace, caller_span) = ("5e1f0a7d3c2b4a69887766554433aa01", "c0ffee00d15ea5e5");

    // The real binary: only `runyard serve` installs the subscriber that exports the
    // actors' spans.
    let server = Server::start_with(&data_dir, "traces-actors.log", &["--config", &config]);
    wait_ready(&http, &server.address).await;
    let run = submit(
        &http,
        &server.address,
        &quick_spec("actors-traced"),
        Some(&format!("00-{caller_trace}-{caller_span}-01")),
    )
    .await;
    let id = run["id"].as_str().expect("id").to_string();
    wait_for_state(&http, &server.address, &id, "completed").await;
    let spans = collector
        .wait_for(
            "the run's root span and its checkpoints' journaling",
            |spans| {
                has_root(spans, &id)
                    && spans
                        .iter()
                        .filter(|s| s.name() == "run.checkpoint")
                        .count()
                        >= 3
            },
        )
        .await;

    // The submit's request span is the parent of the flush that made RunSubmitted
    // durable, and of the dispatcher's decision.
    let request = spans
        .iter()
        .find(|s| s.name() == "POST /api/v1/runs" && s.trace_id() == caller_trace)
        .expect("the submit request's span");
    assert_eq!(request.parent_id(), caller_span);
    let flushes = child_of(&spans, request, "journal.flush");
    assert_eq!(flushes.len(), 1, "one flush made the submission durable");
    let flush = flushes[0];
    assert_eq!(flush.trace_id(), caller_trace);
    assert_eq!(flush.span.kind, KIND_INTERNAL);
    assert_eq!(
        flush.str_attr("runyard.outcome").as_deref(),
        Some("durable")
    );
    assert_eq!(flush.str_attr("runyard.run.id"), Some(id.clone()));
    assert!(flush.int_attr("runyard.journal.appends") >= Some(1));
    // RunSubmitted and TraceAssigned, in one append.
    assert!(flush.int_attr("runyard.journal.events") >= Some(2));
    let first = flush
        .int_attr("runyard.journal.first_seq")
        .expect("first seq");
    let last = flush
        .int_attr("runyard.journal.last_seq")
        .expect("last seq");
    assert!(first >= 1 && last > first, "{first}..{last}");
    let stored = child_of(&spans, flush, "store.append");
    assert_eq!(stored.len(), 1, "the store's write is under the flush");
    assert!(stored[0].int_attr("runyard.journal.bytes") > Some(0));
    assert_eq!(stored[0].int_attr("runyard.journal.first_seq"), Some(first));
    let dispatch = child_of(&spans, request, "dispatch.submit");
    assert_eq!(dispatch.len(), 1);
    assert_eq!(dispatch[0].str_attr("runyard.run.id"), Some(id.clone()));
    assert_eq!(
        dispatch[0].str_attr("runyard.executor").as_deref(),
        Some("local")
    );
    assert_eq!(
        dispatch[0].str_attr("runyard.outcome").as_deref(),
        Some("launched")
    );

    let run_spans = of_run(&spans, &id);
    // The slot claim ends the run's queue wait: it is under it, with its flush under
    // the claim.
    let queue_wait = one(&run_spans, "queue_wait");
    let claim = one(&run_spans, "slots.claim");
    assert_eq!(claim.trace_id(), caller_trace);
    assert_eq!(claim.parent_id(), queue_wait.span_id());
    assert_eq!(claim.int_attr("runyard.slots.count"), Some(1));
    assert_eq!(claim.int_attr("runyard.attempt"), Some(1));
    assert_eq!(
        claim.str_attr("runyard.outcome").as_deref(),
        Some("claimed")
    );
    assert_eq!(child_of(&spans, claim, "journal.flush").len(), 1);

    // Each epoch's checkpoint is journaled under that epoch's span, and the flush
    // that made it durable under that.
    let epochs = named(&run_spans, "epoch");
    assert_eq!(epochs.len(), 3);
    let checkpoints = named(&run_spans, "run.checkpoint");
    assert!(checkpoints.len() >= 3, "{}", checkpoints.len());
    for epoch in &epochs {
        let number = epoch.int_attr("runyard.epoch").expect("epoch number");
        let under = child_of(&spans, epoch, "run.checkpoint");
        assert_eq!(under.len(), 1, "epoch {number}'s checkpoint is under it");
        let checkpoint = under[0];
        assert_eq!(checkpoint.trace_id(), caller_trace);
        assert_eq!(
            checkpoint.int_attr("runyard.checkpoint.epoch"),
            Some(number)
        );
        assert_eq!(checkpoint.int_attr("runyard.checkpoint.batch"), Some(0));
        assert!(checkpoint.int_attr("runyard.checkpoint.bytes") > Some(0));
        assert_eq!(
            checkpoint.str_attr("runyard.outcome").as_deref(),
            Some("journaled")
        );
        // A flush serves every append waiting: under the first one's span, linked to
        // the others'.
        let flushed = spans.iter().any(|s| {
            s.name() == "journal.flush"
                && (s.parent_id() == checkpoint.span_id()
                    || s.span.links.iter().any(|link| {
                        hex::encode(&link.span_id) == checkpoint.span_id()
                            && link.attributes.iter().any(|kv| {
                                kv.key == "runyard.link.reason"
                                    && kv.value.as_ref().and_then(|v| v.value.clone())
                                        == Some(Any::StringValue("same_flush".into()))
                            })
                    }))
        });
        assert!(flushed, "epoch {number}'s checkpoint has its flush");
    }
    // Nothing of the actors' is left out of the run's trace.
    for span in &run_spans {
        assert_eq!(span.trace_id(), caller_trace, "{}", span.name());
    }

    // A resume is journaled under the pause it ends, and the run goes on in the same
    // trace.
    let long = submit(&http, &server.address, &long_spec("actors-resumed"), None).await;
    let long_id = long["id"].as_str().expect("id").to_string();
    wait_for_state(&http, &server.address, &long_id, "running").await;
    control(&http, &server.address, &long_id, "pause").await;
    wait_for_state(&http, &server.address, &long_id, "paused").await;
    control(&http, &server.address, &long_id, "resume").await;
    wait_for_state(&http, &server.address, &long_id, "running").await;
    control(&http, &server.address, &long_id, "cancel").await;
    wait_for_state(&http, &server.address, &long_id, "cancelled").await;
    let spans = collector
        .wait_for("the resumed run's root span", |spans| {
            has_root(spans, &long_id)
        })
        .await;
    let long_spans = of_run(&spans, &long_id);
    let root = one(&long_spans, "run");
    let pause = one(&long_spans, "pause");
    let resume = one(&long_spans, "dispatch.resume");
    assert_eq!(resume.parent_id(), pause.span_id());
    assert_eq!(resume.trace_id(), root.trace_id());
    assert_eq!(
        resume.str_attr("runyard.outcome").as_deref(),
        Some("journaled")
    );
    assert_eq!(
        child_of(&spans, resume, "journal.flush").len(),
        1,
        "RunResumed's flush is under the resume"
    );
    assert_eq!(
        named(&long_spans, "attempt").len(),
        2,
        "paused, then resumed"
    );

    // A restart replays the journal: its spans say how much.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let server = Server::start_with(&data_dir, "traces-actors-2.log", &["--config", &config]);
    wait_ready(&http, &server.address).await;
    // The second server's recovery: it read the journal the first one wrote, from a
    // snapshot when one was taken (then fewer events, or none, after it).
    let recoveries = |spans: &[Received]| {
        spans
            .iter()
            .filter(|s| s.name() == "startup.recover")
            .count()
    };
    let spans = collector
        .wait_for("the restart's replay", |spans| recoveries(spans) >= 2)
        .await;
    let recover = spans
        .iter()
        .filter(|s| s.name() == "startup.recover")
        .max_by_key(|s| s.span.start_time_unix_nano)
        .expect("the restart's recovery");
    let read = recover.int_attr("runyard.journal.events").unwrap_or(0)
        + recover
            .int_attr("runyard.journal.from_snapshot")
            .unwrap_or(0);
    assert!(read > 0, "the restart read the first server's journal");
    assert!(recover.span.parent_span_id.is_empty(), "a trace of its own");
    assert_eq!(recover.int_attr("runyard.runs"), Some(2));
    assert_eq!(recover.int_attr("runyard.recovered"), Some(0));
    let replay = child_of(&spans, recover, "store.replay");
    assert_eq!(replay.len(), 1, "the store's replay is under the recovery");
    assert_eq!(
        replay[0].int_attr("runyard.journal.events"),
        recover.int_attr("runyard.journal.events")
    );
    assert_eq!(
        replay[0].str_attr("runyard.outcome").as_deref(),
        Some("replayed")
    );
    drop(server);
}

#[actix_web::test]
async fn a_dead_collector_holds_up_neither_the_api_nor_training_of_the_real_binary() {
    // Connections are taken by the kernel's backlog and never answered: each export
    // hangs until the exporter's timeout (1 s here), then its spans are counted lost.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let root_dir = tempfile::tempdir().expect("temp dir");
    let data_dir = root_dir.path().join("data");
    let config = root_dir.path().join("silent.toml");
    std::fs::write(
        &config,
        format!(
            "[telemetry]\notlp_endpoint = \"http://{}\"\nexport_interval_ms = 50\n",
            silent.local_addr().expect("address")
        ),
    )
    .expect("config written");
    let http = client();
    let server = crate::server::Launch::new(&data_dir)
        .log(&data_dir.with_extension("silent.log"))
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        .args(&["--config", &config.to_string_lossy()])
        .start();
    wait_ready(&http, &server.address).await;
    let mut spec = quick_spec("collector-silent-process");
    spec["checkpoint"] = json!({"every_batches": 10});
    let run = submit(&http, &server.address, &spec, None).await;
    let id = run["id"].as_str().expect("id").to_string();
    let done = wait_for_state(&http, &server.address, &id, "completed").await;
    assert_eq!(done["epochs"].as_array().map(Vec::len), Some(3));
    let counter = |metrics: &str, name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let waited = Instant::now();
    loop {
        let metrics = http
            .get(format!("{}/metrics", server.address))
            .send()
            .await
            .expect("the API answers")
            .text()
            .await
            .expect("text");
        assert_eq!(counter(&metrics, "runyard_trace_spans_exported_total"), 0.0);
        // The run's spans, the requests' and the actors' (a flush per append): far
        // more than one request's worth, all counted once their export timed out.
        if counter(&metrics, "runyard_trace_spans_dropped_total") >= 20.0 {
            break;
        }
        assert!(waited.elapsed() < TIMEOUT, "lost spans never counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(server);
    drop(silent);
}
