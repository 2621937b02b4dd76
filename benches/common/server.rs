//! A real server and its clients for the benches that time the API: the server as
//! its own program would run it (an actix system on a thread of its own, the actors on
//! that system's thread), each client on a thread and runtime of its own, so no
//! client shares the actors' thread.

use std::time::{Duration, Instant};

use runyard::config::Config;
use runyard::startup::Application;
use serde_json::{json, Value};

/// A running server.
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    system: actix::System,
    thread: std::thread::JoinHandle<()>,
}

impl Served {
    /// Stops the server and waits for its thread.
    pub fn stop(self) {
        self.system.stop();
        self.thread.join().expect("server thread");
    }
}

/// A server on `dir` with one CPU slot and command runs allowed.
pub fn serve(dir: &std::path::Path) -> Served {
    serve_with(dir, |_| {})
}

/// [`serve`] after `configure` adjusted its settings.
pub fn serve_with(dir: &std::path::Path, configure: impl FnOnce(&mut Config)) -> Served {
    let mut config = Config::defaults();
    config.server.bind = "127.0.0.1:0".parse().expect("address");
    config.server.data_dir = dir.to_path_buf();
    config.train.cpu_slots = 1;
    config.train.threads_per_slot = 1;
    config.runs.allow_commands = true;
    config.log.filter = "warn".into();
    configure(&mut config);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let system = actix::System::new();
        let app = system
            .block_on(Application::build(config))
            .expect("server builds");
        let base = format!("http://{}", app.address());
        system.block_on(async move {
            tx.send((base, actix::System::current()))
                .expect("bench waits");
            actix_web::rt::spawn(app.run_until_stopped());
        });
        system.run().expect("server system");
    });
    let (base, system) = rx.recv().expect("server started");
    Served {
        base,
        system,
        thread,
    }
}

/// A client on a thread and runtime of its own, as a separate program would be.
pub fn client_thread<T: Send + 'static>(
    work: impl FnOnce(reqwest::Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
        + Send
        + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        runtime.block_on(work(http))
    })
}

/// Polls run `id` until it has ended (completed, failed or cancelled), within `limit`;
/// answers its view.
pub async fn wait_ended(http: &reqwest::Client, base: &str, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let run: Value = http
            .get(format!("{base}/api/v1/runs/{id}"))
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("run JSON");
        if matches!(
            run["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not end: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the server answers `/readyz` with `200`.
pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small training spec named `name` (it never trains: the benches hold the slot).
pub fn spec(name: &str) -> Value {
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

/// Submits a command run that sleeps in the one slot, so every run submitted after it
/// stays queued and nothing trains; returns its id.
pub async fn hold_the_slot(http: &reqwest::Client, base: &str) -> String {
    let holder = json!({"name": "slot-holder", "kind": "command", "argv": ["sleep", "3600"]});
    let answer = http
        .post(format!("{base}/api/v1/runs"))
        .json(&holder)
        .send()
        .await
        .expect("submit the slot holder");
    assert_eq!(answer.status(), 201, "slot holder");
    let holder: Value = answer.json().await.expect("slot holder view");
    holder["id"].as_str().expect("slot holder id").to_string()
}

/// Cancels the queued runs, then the slot holder, and waits until it is cancelled:
/// freed, the slot would start training a queued run while the process exits
/// (libtorch torn down under a starting thread), and no sleeping process outlives
/// the bench.
pub async fn release(http: &reqwest::Client, base: &str, queued: &[String], holder: &str) {
    for id in queued.iter().map(String::as_str).chain([holder]) {
        let cancel = http
            .post(format!("{base}/api/v1/runs/{id}/cancel"))
            .send()
            .await
            .expect("cancel");
        assert!(
            cancel.status().is_success(),
            "cancel {id}: {}",
            cancel.status()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view: Value = http
            .get(format!("{base}/api/v1/runs/{holder}"))
            .send()
            .await
            .expect("slot holder")
            .json()
            .await
            .expect("view");
        if view["state"] == "cancelled" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot holder not cancelled: {view}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
