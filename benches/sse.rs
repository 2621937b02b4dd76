//! What live feeds cost with many subscribers, and what the REST layer adds.
//!
//! The server runs in this process (`Application::build`, default actix workers); the
//! clients run in a child process (this same binary, `RUNYARD_SSE_CHILD` set), so
//! the server's memory is measured alone and each side has its own file descriptors.
//!
//! - `sse_bytes_per_subscriber`: the server process's resident memory (VmRSS) with N
//!   subscribers connected and served one progress tick, minus before they connected,
//!   over N (10,000): everything a connection costs the server (socket state in user
//!   space, actix buffers, the stream task, its channel).
//! - `sse_bare_actix_bytes_per_subscriber`: the same for a bare actix-web server in
//!   its own process (the same `HttpServer` settings, a `Logger`), whose event-stream
//!   handler sends one event and then nothing: what an open HTTP/1 connection costs in
//!   actix-web itself (its 8 KiB read and write buffers, the connection task), the
//!   floor under the figure above.
//! - `sse_tick_p99_ms_1k`, `sse_tick_p99_ms_10k`: one run's progress stream
//!   (`GET /api/v1/runs/{id}/stream`) with 1,000 and 10,000 subscribers. The run is
//!   paused, so the server's own ticker leaves its sample alone; this bench publishes
//!   a new sample (a `Ticker` over the server's `ProgressBoard`, with the run's own
//!   cells) every [`TICK_GAP`], and the child records, per sample, when the last
//!   subscriber received it (wall clock; same machine). The figure is the 99th
//!   percentile over the samples of (last receipt − publish).
//! - `rest_get_run_vs_bare_ratio`: `GET /api/v1/runs/{id}` requests per second against
//!   a bare actix-web handler that returns the same bytes, from the same client (the
//!   child: 32 keep-alive connections, alternating rounds), in the same run.
//!
//! Without `--bench` (`cargo test --benches`) everything runs with 20 subscribers and
//! short rounds, and nothing is written or checked against a target.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runyard::actors::Ticker;
use runyard::config::Config;
use runyard::domain::RunId;
use runyard::startup::Application;
use runyard::train::ProgressCells;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Environment variable that turns this binary into the client process.
const CHILD: &str = "RUNYARD_SSE_CHILD";
/// Time between two published samples.
const TICK_GAP: Duration = Duration::from_millis(400);
/// Connections opened at once by the child (the listen backlog is 1,024).
const CONNECT_AT_ONCE: usize = 256;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let mode = common::mode();
    if mode == common::Mode::List {
        return;
    }
    let bench = mode == common::Mode::Bench;
    let mut figures = if bench {
        common::Figures::echoed(2)
    } else {
        common::Figures::quiet()
    };
    actix_web::rt::System::new().block_on(run(bench, &mut figures));
    if bench {
        figures.write("sse");
    }
}

/// A child process speaking line commands on stdin/stdout.
struct Child {
    process: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    fn spawn(args: &[String]) -> Self {
        let mut process = tokio::process::Command::new(std::env::current_exe().expect("exe"))
            .env(CHILD, "1")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("client process starts");
        let stdout = process.stdout.take().expect("stdout");
        Self {
            process,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(300), self.lines.next_line())
            .await
            .expect("client process answered in time")
            .expect("client stdout")
            .expect("client process exited early")
    }

    async fn say(&mut self, line: &str) {
        let stdin = self.process.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("client stdin");
    }
}

async fn run(bench: bool, figures: &mut common::Figures) {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
    let mut config = Config::defaults();
    config.server.bind = "127.0.0.1:0".parse().expect("address");
    config.server.data_dir = dir.path().to_path_buf();
    config.train.threads_per_slot = 1;
    config.log.filter = "warn".into();
    let app = Application::build(config).await.expect("server builds");
    let address = app.address().to_string();
    let board = app.actors().board.clone();
    actix_web::rt::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let base = format!("http://{address}");
    wait_ready(&http, &base).await;
    let run_id = paused_run(&http, &base).await;

    // The run's samples come from this ticker from now on.
    let id: RunId = run_id.parse().expect("run id");
    let cells = Arc::new(ProgressCells::with_epoch_size(10, 1_000, 64_000));
    let mut ticker = Ticker::new(TICK_GAP, board);
    ticker.watch(id, Arc::clone(&cells));
    let mut samples = 1_000_000u64;

    let sizes: &[usize] = if bench { &[1_000, 10_000] } else { &[20] };
    let ticks = if bench { 60 } else { 3 };
    for &n in sizes {
        let before = rss_bytes();
        let mut child = Child::spawn(&[
            "stream".into(),
            address.clone(),
            format!("/api/v1/runs/{run_id}/stream"),
            n.to_string(),
        ]);
        assert_eq!(child.line().await, "connected");
        // One sample that every subscriber gets first: all streams in steady state.
        samples += 1;
        cells.report(2, samples % 1_000, samples, 0.5);
        ticker.tick();
        assert_eq!(child.line().await, "ready");
        let bytes_per_subscriber = rss_bytes().saturating_sub(before) as f64 / n as f64;

        let mut published: HashMap<u64, u64> = HashMap::new();
        for _ in 0..ticks {
            tokio::time::sleep(TICK_GAP).await;
            samples += 1;
            cells.report(2, samples % 1_000, samples, 0.5);
            published.insert(samples, now_ns());
            ticker.tick();
        }
        tokio::time::sleep(TICK_GAP * 2).await;
        child.say("report").await;
        let report: Value = serde_json::from_str(&child.line().await).expect("report JSON");
        let mut delays_ms = Vec::new();
        let mut incomplete = 0;
        for (sample, at) in &published {
            let entry = &report[sample.to_string()];
            let (last, count) = (entry[0].as_u64(), entry[1].as_u64().unwrap_or(0));
            if count < n as u64 {
                incomplete += 1;
            }
            if let Some(last) = last {
                delays_ms.push(last.saturating_sub(*at) as f64 / 1e6);
            }
        }
        drop(child);
        delays_ms.sort_by(f64::total_cmp);
        let p99 = delays_ms
            .get(((delays_ms.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN);
        if incomplete > 0 {
            eprintln!("sse: {incomplete} of {ticks} samples did not reach all {n} subscribers (coalesced by a newer one)");
        }
        match n {
            1_000 => figures.put("sse_tick_p99_ms_1k", p99, "ms"),
            10_000 => {
                figures.put("sse_tick_p99_ms_10k", p99, "ms");
                figures.put("sse_bytes_per_subscriber", bytes_per_subscriber, "B");
                let bare = bare_bytes_per_subscriber(n).await;
                figures.put("sse_bare_actix_bytes_per_subscriber", bare, "B");
            }
            _ => {
                let bare = bare_bytes_per_subscriber(n).await;
                println!(
                    "sse smoke: {n} subscribers, p99 {p99:.2} ms, {bytes_per_subscriber:.0} B each (bare actix-web: {bare:.0} B)"
                );
            }
        }
        // Let the server notice the closed connections before the next size.
        tokio::time::sleep(TICK_GAP).await;
    }

    // REST against a bare handler with the same bytes.
    let path = format!("/api/v1/runs/{run_id}");
    let body = http
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("run")
        .bytes()
        .await
        .expect("run body");
    let bare = bare_server(body.to_vec());
    let bare_address = bare.0.to_string();
    let round = if bench { "3000" } else { "200" };
    let (mut ours, mut theirs) = (0u64, 0u64);
    for _ in 0..if bench { 3 } else { 1 } {
        for (target, total) in [(&address, &mut ours), (&bare_address, &mut theirs)] {
            let mut child =
                Child::spawn(&["rest".into(), target.clone(), path.clone(), round.into()]);
            *total += child.line().await.parse::<u64>().expect("count");
        }
    }
    bare.1.stop(false).await;
    let ratio = ours as f64 / theirs.max(1) as f64;
    if bench {
        figures.put("rest_get_run_vs_bare_ratio", ratio, "x");
    } else {
        println!("sse smoke: rest/bare {ratio:.2}");
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..6000 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server not ready");
}

/// A run that trained a little and is paused: its stream stays open and the
/// server's ticker no longer samples it.
async fn paused_run(http: &reqwest::Client, base: &str) -> String {
    let spec = json!({
        "name": "sse-bench",
        "model": {"kind": "mlp", "hidden": [32]},
        "data": {"kind": "synthetic", "samples": 4000, "features": 16, "classes": 3, "seed": 7},
        "optimizer": {"kind": "adam", "lr": 0.01},
        "epochs": 1000,
        "batch_size": 32,
        "seed": 1,
        "checkpoint": {"every_batches": 25, "keep": 1}
    });
    let created: Value = http
        .post(format!("{base}/api/v1/runs"))
        .json(&spec)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("run JSON");
    let id = created["id"].as_str().expect("id").to_string();
    let run_url = format!("{base}/api/v1/runs/{id}");
    for _ in 0..6000 {
        let run: Value = http
            .get(&run_url)
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("JSON");
        if run["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..6000 {
        let _ = http.post(format!("{run_url}/pause")).send().await;
        let run: Value = http
            .get(&run_url)
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("JSON");
        if run["state"] == "paused" {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run did not pause");
}

/// A bare actix-web server answering every request with `body` as JSON.
fn bare_server(body: Vec<u8>) -> (std::net::SocketAddr, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let body = actix_web::web::Bytes::from(body);
    let server = actix_web::HttpServer::new(move || {
        let body = body.clone();
        actix_web::App::new().default_service(actix_web::web::to(move || {
            let body = body.clone();
            async move {
                actix_web::HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body)
            }
        }))
    })
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (address, handle)
}

/// A bare actix-web server in a child process, `n` event-stream subscribers from
/// another: the server's resident memory per subscriber.
async fn bare_bytes_per_subscriber(n: usize) -> f64 {
    let mut server = Child::spawn(&["bare-sse".into()]);
    let address = server.line().await;
    let mut clients = Child::spawn(&["stream".into(), address, "/sse".into(), n.to_string()]);
    assert_eq!(clients.line().await, "connected");
    assert_eq!(clients.line().await, "ready");
    server.say(&format!("measure {n}")).await;
    server.line().await.parse().expect("bytes per subscriber")
}

/// The bare server: prints its address, then answers `measure N` with its resident
/// memory growth since it started listening, over N.
fn bare_sse_server() {
    actix_web::rt::System::new().block_on(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new()
                .wrap(actix_web::middleware::Logger::default())
                .route(
                    "/sse",
                    actix_web::web::get().to(|| async {
                        // One event (the client waits for a first sample), then nothing.
                        let mut first = Some(actix_web::web::Bytes::from_static(
                            b"retry: 1000\n\nevent: progress\ndata: {\"samples\":1}\n\n",
                        ));
                        let body = futures_util::stream::poll_fn(move |_| match first.take() {
                            Some(event) => {
                                std::task::Poll::Ready(Some(Ok::<_, std::convert::Infallible>(
                                    event,
                                )))
                            }
                            None => std::task::Poll::Pending,
                        });
                        actix_web::HttpResponse::Ok()
                            .content_type("text/event-stream")
                            .streaming(body)
                    }),
                )
        })
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_bytes();
        println!("{address}");
        let _ = std::io::stdout().flush();
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            if let Some(n) = line.strip_prefix("measure ") {
                let n: f64 = n.parse().expect("n");
                println!("{}", rss_bytes().saturating_sub(before) as f64 / n);
                let _ = std::io::stdout().flush();
            }
        }
    });
}

// ---- The client process ----

fn child() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("bare-sse") => {
            drop(runtime);
            bare_sse_server();
        }
        Some("stream") => runtime.block_on(stream_clients(
            &args[1],
            &args[2],
            args[3].parse().expect("n"),
        )),
        Some("rest") => runtime.block_on(rest_client(
            &args[1],
            &args[2],
            Duration::from_millis(args[3].parse().expect("ms")),
        )),
        other => panic!("unknown child command {other:?}"),
    }
}

/// Per sample: when the last subscriber got it, and how many did.
#[derive(Default)]
struct Receipts {
    last_ns: AtomicU64,
    count: AtomicU64,
}

async fn stream_clients(address: &str, path: &str, n: usize) {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n");
    let receipts: Arc<std::sync::Mutex<HashMap<u64, Arc<Receipts>>>> = Arc::default();
    let first_seen = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_AT_ONCE));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            for _ in 0..n {
                let permit = Arc::clone(&gate).acquire_owned().await.expect("gate");
                let mut socket = TcpStream::connect(address)
                    .await
                    .expect("connect (raise `ulimit -n` for many subscribers)");
                socket.write_all(request.as_bytes()).await.expect("request");
                let (receipts, first_seen, connected) = (
                    Arc::clone(&receipts),
                    Arc::clone(&first_seen),
                    Arc::clone(&connected),
                );
                tokio::task::spawn_local(async move {
                    let mut buf = vec![0u8; 2048];
                    let mut carry: Vec<u8> = Vec::new();
                    let mut permit = Some(permit);
                    let mut counted_first = false;
                    loop {
                        let read = match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => read,
                        };
                        let at = now_ns();
                        if permit.take().is_some() {
                            connected.add_permits(1);
                        }
                        carry.extend_from_slice(&buf[..read]);
                        let text = String::from_utf8_lossy(&carry).into_owned();
                        let mut rest = text.as_str();
                        let mut consumed = 0;
                        while let Some(i) = rest.find("\"samples\":") {
                            let digits: String = rest[i + 10..]
                                .chars()
                                .take_while(char::is_ascii_digit)
                                .collect();
                            if i + 10 + digits.len() >= rest.len() {
                                break; // the number may go on in the next read
                            }
                            if let Ok(sample) = digits.parse::<u64>() {
                                if !counted_first {
                                    counted_first = true;
                                    first_seen.fetch_add(1, Ordering::Relaxed);
                                }
                                let entry = Arc::clone(
                                    receipts
                                        .lock()
                                        .expect("receipts")
                                        .entry(sample)
                                        .or_default(),
                                );
                                entry.last_ns.fetch_max(at, Ordering::Relaxed);
                                entry.count.fetch_add(1, Ordering::Relaxed);
                            }
                            let end = i + 10 + digits.len();
                            consumed += end;
                            rest = &rest[end..];
                        }
                        let keep = carry.len() - consumed.min(carry.len());
                        let keep = keep.min(64);
                        carry.drain(..carry.len() - keep);
                    }
                });
            }
            // Every stream answered.
            let all = connected.acquire_many(n as u32).await.expect("connected");
            all.forget();
            println!("connected");
            let _ = std::io::stdout().flush();
            // Every stream got the first sample.
            while first_seen.load(Ordering::Relaxed) < n as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut stdin = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = stdin.next_line().await {
                if line == "report" {
                    let map: serde_json::Map<String, Value> = receipts
                        .lock()
                        .expect("receipts")
                        .iter()
                        .map(|(k, r)| {
                            (
                                k.to_string(),
                                json!([
                                    r.last_ns.load(Ordering::Relaxed),
                                    r.count.load(Ordering::Relaxed)
                                ]),
                            )
                        })
                        .collect();
                    println!("{}", Value::Object(map));
                    let _ = std::io::stdout().flush();
                }
            }
        })
        .await;
}

/// Keep-alive GETs of `path` on 32 connections for `round`; prints the count.
async fn rest_client(address: &str, path: &str, round: Duration) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + round;
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let mut socket = TcpStream::connect(address).await.expect("connect");
                let (request, done) = (request.clone(), Arc::clone(&done));
                tasks.push(tokio::task::spawn_local(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while Instant::now() < deadline {
                        socket.write_all(request.as_bytes()).await.expect("write");
                        let mut have = 0;
                        loop {
                            let read = socket.read(&mut buf[have..]).await.expect("read");
                            assert!(read > 0, "server closed the connection");
                            have += read;
                            let text = &buf[..have];
                            if let Some(head_end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&text[..head_end]);
                                let length: usize = head
                                    .lines()
                                    .find_map(|l| {
                                        let (k, v) = l.split_once(':')?;
                                        k.eq_ignore_ascii_case("content-length")
                                            .then(|| v.trim().parse().ok())?
                                    })
                                    .expect("content-length");
                                if have >= head_end + 4 + length {
                                    break;
                                }
                            }
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for task in tasks {
                task.await.expect("client task");
            }
        })
        .await;
    println!("{}", done.load(Ordering::Relaxed));
}
