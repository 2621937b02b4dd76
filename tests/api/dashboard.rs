//! The dashboard: its page and assets over HTTP (open, with validators), the stream
//! routes' `access_token`, and the page itself in a real browser (Debian's `chromium`
//! driven headless through `chromedriver`): a person enters a token, submits a run,
//! watches its bar move, pauses and resumes it on its page, sees it complete with its
//! charts and timeline, reloads without losing an event, and cancels another run.
//!
//! Without chromium or chromedriver the browser test prints `SKIPPED` and returns,
//! unless `RUNYARD_REQUIRE_BROWSER=1` (as `make test` sets), where it fails naming what
//! is missing.

use std::future::Future;
use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt as _;
use runyard::auth::{create_token, Role};
use runyard::domain::{Envelope, Event, RunId, SlotId};
use runyard::store::EventLog;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, long_spec, quick_spec, spawn_app_with, TestApp, TIMEOUT};

/// How often a browser condition is polled.
const POLL: Duration = Duration::from_millis(50);

/// A server with one `write` token, and that token.
async fn app_with_token() -> (TestApp, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens.toml");
    let token = create_token(&file, "dashboard", Role::Write).expect("token");
    let app = spawn_app_with(|config| config.auth.tokens_file = Some(file.clone())).await;
    (app, token, dir)
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ascii header")
}

#[actix_web::test]
async fn the_page_and_its_assets_are_open_typed_and_revalidated() {
    let (app, _token, _dir) = app_with_token().await;
    let get = |path: &str| app.client.get(format!("{}{path}", app.address)).send();

    let page = get("/").await.expect("page");
    assert_eq!(page.status(), 200, "the page needs no token");
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert!(header(&page, "content-security-policy").contains("script-src 'self'"));
    let etag = header(&page, "etag").to_string();
    let html = page.text().await.expect("html");
    assert!(html.contains("/assets/dashboard.js") && html.contains("/assets/dashboard.css"));
    assert!(
        html.contains("\"RunCompleted\""),
        "the event names are in the page"
    );

    let again = app
        .client
        .get(format!("{}/", app.address))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("page again");
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), etag);
    assert!(again.bytes().await.expect("body").is_empty());

    for (path, media) in [
        ("/assets/dashboard.js", "text/javascript; charset=utf-8"),
        ("/assets/dashboard.css", "text/css; charset=utf-8"),
    ] {
        let asset = get(path).await.expect("asset");
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(header(&asset, "content-type"), media, "{path}");
        assert_eq!(header(&asset, "x-content-type-options"), "nosniff");
        assert!(header(&asset, "etag").starts_with('"'), "{path}");
        assert!(!asset.text().await.expect("text").is_empty());
    }
    let missing = get("/assets/nothing.js").await.expect("missing asset");
    assert_problem(missing, 404, "route_not_found").await;
}

#[actix_web::test]
async fn the_stream_routes_take_the_token_as_a_query_parameter_and_no_other_route_does() {
    let (app, token, _dir) = app_with_token().await;
    let id = submit(&app, &token, &quick_spec("query-token")).await;
    let get = |path: String, query: &[(&str, &str)]| {
        app.client
            .get(format!("{}{path}", app.address))
            .query(query)
            .send()
    };

    for path in [
        format!("/api/v1/runs/{id}/stream"),
        "/api/v1/stream".into(),
        format!("/api/v1/runs/{id}/logs/stream"),
    ] {
        let ok = get(path.clone(), &[("access_token", &token)])
            .await
            .expect("stream");
        assert_eq!(ok.status(), 200, "{path}");
        assert_eq!(header(&ok, "content-type"), "text/event-stream");
        drop(ok);
        let wrong = get(path.clone(), &[("access_token", "ry_00")])
            .await
            .expect("stream");
        assert_problem(wrong, 401, "unauthorized").await;
        let none = get(path.clone(), &[]).await.expect("stream");
        let detail = assert_problem(none, 401, "unauthorized").await;
        assert!(detail.contains("access_token"), "{detail}");
    }
    // Elsewhere the query parameter is no token.
    let listed = get("/api/v1/runs".into(), &[("access_token", &token)])
        .await
        .expect("list");
    assert_problem(listed, 401, "unauthorized").await;
    let events = get(
        format!("/api/v1/runs/{id}/events"),
        &[("access_token", &token)],
    )
    .await
    .expect("events");
    assert_problem(events, 401, "unauthorized").await;
}

// ------------------------------------------------------------------ the browser

/// `chromium` and `chromedriver` (`RUNYARD_CHROMIUM` and `RUNYARD_CHROMEDRIVER` when
/// set, else found on the `PATH` or in `/usr/bin`), or what is missing.
fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let find = |name: &str, variable: &str| match std::env::var_os(variable) {
        Some(path) => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!("{variable}={} is not a file", path.display()))
            }
        }
        None => std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| format!("no `{name}` on the PATH or in /usr/bin")),
    };
    match (
        find("chromium", "RUNYARD_CHROMIUM"),
        find("chromedriver", "RUNYARD_CHROMEDRIVER"),
    ) {
        (Ok(chromium), Ok(driver)) => Ok((chromium, driver)),
        (chromium, driver) => Err([chromium.err(), driver.err()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// A chromedriver process on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(path: &Path) -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = crate::helpers::client();
    let status = format!("{}/status", driver.url);
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Ok(response) = client.get(&status).send().await {
                if let Ok(body) = response.json::<Value>().await {
                    if body["value"]["ready"] == true {
                        return;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .expect("chromedriver became ready");
    driver
}

async fn open_browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,1100",
                // Numbers are written in the browser's locale: the tests read English.
                "--lang=en-US",
                "--accept-lang=en-US",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// Chromium and chromedriver for test `test`, or `None` after saying why it is
/// skipped; with `RUNYARD_REQUIRE_BROWSER=1` a missing browser fails it instead.
fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match find_browser() {
        Ok(found) => Some(found),
        Err(missing) if std::env::var("RUNYARD_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!(
                "RUNYARD_REQUIRE_BROWSER=1 but {missing}: install chromium and chromium-driver \
                 (`make browser`)"
            )
        }
        Err(missing) => {
            println!(
                "SKIPPED: {test}: {missing} (install chromium and chromium-driver; \
                 `make browser` does, as root)"
            );
            None
        }
    }
}

/// One test's Chromium: its driver, its profile and the browser session.
struct Session {
    browser: Client,
    driver: Driver,
    _profile: tempfile::TempDir,
}

impl Session {
    async fn open((chromium, chromedriver): (PathBuf, PathBuf)) -> Self {
        let driver = start_driver(&chromedriver).await;
        let profile = tempfile::tempdir().expect("profile dir");
        let browser = open_browser(&driver, &chromium, profile.path()).await;
        Self {
            browser,
            driver,
            _profile: profile,
        }
    }

    /// Ends the session after `outcome` (the test's body, caught): on a failure what
    /// the page showed goes to `target/dashboard-failure.png`, then the failure goes on.
    async fn finish(self, outcome: std::thread::Result<()>) {
        if outcome.is_err() {
            if let Ok(png) = self.browser.screenshot().await {
                let path = screenshot_path("dashboard-failure.png");
                let _ = std::fs::write(&path, png);
                eprintln!("the page at the failure: {}", path.display());
            }
        }
        let _ = self.browser.close().await;
        drop(self.driver);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Polls `probe` every [`POLL`] until it gives a value.
async fn until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::helpers::poll_until(what, POLL, probe).await
}

/// Runs `script` (a function body; `arguments[0]` is `arg`) in the page.
async fn js(browser: &Client, script: &str, arg: Value) -> Value {
    browser
        .execute(script, vec![arg])
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// The text of the first element matching `css`, or null.
async fn text_of(browser: &Client, css: &str) -> Option<String> {
    js(
        browser,
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        json!(css),
    )
    .await
    .as_str()
    .map(str::to_owned)
}

/// The `aria-valuenow` of the progress bar matching `css`.
async fn bar_value(browser: &Client, css: &str) -> Option<f64> {
    js(
        browser,
        "const e = document.querySelector(arguments[0]); \
         return e ? e.getAttribute('aria-valuenow') : null;",
        json!(css),
    )
    .await
    .as_str()
    .and_then(|v| v.parse().ok())
}

async fn click(browser: &Client, css: &str) -> Result<(), CmdError> {
    browser.find(Locator::Css(css)).await?.click().await
}

/// Waits for the run page's state badge to read `state`.
async fn until_run_page_state(browser: &Client, state: &str) {
    until(&format!("the run page to show `{state}`"), || async move {
        (text_of(browser, "#run-state .state").await.as_deref() == Some(state)).then_some(())
    })
    .await;
}

/// The `data-seq` of every timeline entry, in order.
async fn timeline(browser: &Client) -> Vec<u64> {
    let seqs = js(
        browser,
        "return [...document.querySelectorAll('#timeline li')].map(li => Number(li.dataset.seq));",
        Value::Null,
    )
    .await;
    seqs.as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_u64().expect("seq"))
        .collect()
}

async fn api_event_seqs(app: &TestApp, token: &str, id: &str) -> Vec<u64> {
    let events: Vec<Value> = app
        .client
        .get(format!("{}/api/v1/runs/{id}/events", app.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("events JSON");
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

/// Where screenshots go: the target directory.
fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join(name)
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    let path = screenshot_path(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    println!("screenshot: {}", path.display());
}

#[actix_web::test]
async fn a_person_submits_watches_steers_and_reloads_a_run_in_a_real_browser() {
    let Some(found) = browser_or_skip("the dashboard browser test") else {
        return;
    };
    let (app, token, _dir) = app_with_token().await;
    let session = Session::open(found).await;
    let outcome = AssertUnwindSafe(drive(&session.browser, &app, &token))
        .catch_unwind()
        .await;
    session.finish(outcome).await;
}

/// The browser session of the test above.
async fn drive(browser: &Client, app: &TestApp, token: &str) {
    browser
        .goto(&format!("{}/", app.address))
        .await
        .expect("page");
    collect_errors(browser).await;

    // Without a token the page says it needs one; with it the (empty) runs load.
    until("the page to ask for a token", || async move {
        text_of(browser, "#notice")
            .await
            .filter(|t| t.contains("needs a token"))
    })
    .await;
    let input = browser
        .find(Locator::Css("#token-input"))
        .await
        .expect("token box");
    input.send_keys(token).await.expect("type the token");
    click(browser, "#token-form button[type=submit]")
        .await
        .expect("use the token");
    until("the token to be kept", || async move {
        (text_of(browser, "#token-state").await.as_deref() == Some("token set for this tab"))
            .then_some(())
    })
    .await;
    let kept = js(
        browser,
        "return sessionStorage.getItem('runyard.token');",
        Value::Null,
    )
    .await;
    assert_eq!(kept, json!(token), "the token is in session storage");
    until("the runs to load with the token", || async move {
        let empty = js(
            browser,
            "return !document.getElementById('runs-empty').hidden;",
            Value::Null,
        )
        .await;
        (empty == json!(true) && text_of(browser, "#live").await.as_deref() == Some("live"))
            .then_some(())
    })
    .await;

    // Submit through the form, as a person pastes a spec.
    let mut spec = quick_spec("dashboard");
    spec["epochs"] = json!(150);
    let textarea = browser.find(Locator::Css("#spec")).await.expect("spec box");
    textarea
        .send_keys(&spec.to_string())
        .await
        .expect("type the spec");
    click(browser, "#spec-submit").await.expect("submit");
    let id = until("the submitted run's link", || async move {
        js(
            browser,
            "const a = document.querySelector('#submit-result a[data-run-id]'); \
             return a ? a.dataset.runId : null;",
            Value::Null,
        )
        .await
        .as_str()
        .map(str::to_owned)
    })
    .await;
    let row_css = format!("tr[data-run-id=\"{id}\"]");
    let row = row_css.as_str();

    // Its bar moves while it trains (from the stream's progress events).
    let bar_css = format!("{row} [role=progressbar]");
    let bar = bar_css.as_str();
    tokio::time::timeout(TIMEOUT, async {
        let mut previous = None::<f64>;
        loop {
            let state = text_of(browser, &format!("{row} .state")).await;
            assert_ne!(
                state.as_deref(),
                Some("completed"),
                "the run completed before its bar was seen moving"
            );
            if let Some(value) = bar_value(browser, bar).await {
                if previous.is_some_and(|p| p > 0.0 && value > p && value < 100.0) {
                    return;
                }
                previous = Some(value);
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .expect("the run's progress bar moved while it ran");

    // Its page: pause, resume, and follow it to its end.
    click(browser, &format!("{row} a.run-link"))
        .await
        .expect("open the run page");
    until("the run page", || async move {
        (text_of(browser, "#run-name").await.as_deref() == Some("dashboard")).then_some(())
    })
    .await;
    until("the pause button", || async move {
        let enabled = js(
            browser,
            "return !document.getElementById('run-pause').disabled;",
            Value::Null,
        )
        .await;
        (enabled == json!(true)).then_some(())
    })
    .await;
    // Its live throughput as people write it: `3,560`, never `3.56e+3`.
    let rate = until("the run's samples/s", || async move {
        text_of(browser, "#run-facts [data-fact=\"samples/s\"] dd")
            .await
            .filter(|t| t != "–")
    })
    .await;
    println!("samples/s on the run page: {rate}");
    let whole = rate.split('.').next().unwrap_or_default();
    let digits: Vec<&str> = whole.split(',').collect();
    assert!(
        digits[0].len() <= 3
            && digits[1..].iter().all(|d| d.len() == 3)
            && rate
                .replace([',', '.'], "")
                .chars()
                .all(|c| c.is_ascii_digit()),
        "samples/s reads `{rate}`"
    );
    click(browser, "#run-pause").await.expect("pause");
    let paused = until("the run to pause or end", || async move {
        let state = text_of(browser, "#run-state .state").await?;
        ["paused", "completed"]
            .contains(&state.as_str())
            .then_some(state)
    })
    .await;
    assert_eq!(
        paused, "paused",
        "the run ended before it could be paused: make the test spec longer"
    );
    until("RunPaused in the timeline", || async move {
        text_of(browser, "#timeline li[data-type=RunPaused]").await
    })
    .await;
    click(browser, "#run-resume").await.expect("resume");
    until_run_page_state(browser, "completed").await;
    // Ended, it shows the mean of the throughput the ticker sampled, written the same way.
    let mean = until("the run's mean samples/s", || async move {
        text_of(browser, "#run-facts [data-fact=\"samples/s\"] dd")
            .await
            .and_then(|t| t.strip_suffix(" (mean)").map(str::to_string))
    })
    .await;
    assert!(
        mean.replace([',', '.'], "")
            .chars()
            .all(|c| c.is_ascii_digit())
            && mean != "0",
        "mean samples/s reads `{mean}`"
    );
    until("the run's last events in the timeline", || async move {
        text_of(browser, "#timeline li[data-type=SlotReleased]:last-child").await
    })
    .await;

    // The live timeline is the journal's, no event missing or twice.
    let expected = api_event_seqs(app, token, &id).await;
    assert_eq!(timeline(browser).await, expected);
    let types = js(
        browser,
        "return [...document.querySelectorAll('#timeline li')].map(li => li.dataset.type);",
        Value::Null,
    )
    .await;
    for kind in [
        "RunSubmitted",
        "RunStarted",
        "EpochCompleted",
        "PauseRequested",
        "RunPaused",
        "RunResumed",
        "ResumedFromCheckpoint",
        "RunCompleted",
    ] {
        assert!(
            types.as_array().expect("types").contains(&json!(kind)),
            "{kind} not in the timeline: {types}"
        );
    }
    // The charts: loss per sampled batch (history, then live), accuracy per epoch.
    let points = |css: &'static str| async move {
        js(
            browser,
            "const e = document.querySelector(arguments[0]); \
             return e ? Number(e.dataset.points) : 0;",
            json!(css),
        )
        .await
        .as_u64()
        .unwrap_or(0)
    };
    until("the loss chart", || async move {
        (points("#chart-loss polyline.loss").await >= 10).then_some(())
    })
    .await;
    until("the accuracy chart's 150 epochs", || async move {
        (points("#chart-accuracy polyline.train").await == 150).then_some(())
    })
    .await;
    assert_eq!(bar_value(browser, "#run-progress").await, Some(100.0));
    screenshot(browser, "dashboard-run.png").await;

    // A reload rebuilds the same timeline from the journal.
    assert_no_errors(browser).await;
    browser.refresh().await.expect("reload");
    collect_errors(browser).await;
    let count = expected.len();
    until("the reloaded timeline", || async move {
        (timeline(browser).await.len() == count).then_some(())
    })
    .await;
    assert_eq!(timeline(browser).await, expected);
    until("the mean samples/s after the reload", || async move {
        text_of(browser, "#run-facts [data-fact=\"samples/s\"] dd")
            .await
            .filter(|t| t.ends_with(" (mean)"))
    })
    .await;

    // Back to the list: the run completed; a second one trains on the only slot and a
    // third waits for it.
    click(browser, "a[href=\"#/\"]:not(.brand)")
        .await
        .expect("back to the runs");
    until("the run to read completed in the list", || async move {
        (text_of(browser, &format!("{row} .state")).await.as_deref() == Some("completed"))
            .then_some(())
    })
    .await;
    assert_eq!(bar_value(browser, bar).await, Some(100.0));
    let mut second = quick_spec("dashboard-second");
    second["epochs"] = json!(1000);
    let second_id = submit(app, token, &second).await;
    let waiting_id = submit(app, token, &long_spec("dashboard-waiting")).await;
    let second_row_css = format!("tr[data-run-id=\"{second_id}\"]");
    let second_row = second_row_css.as_str();
    until("the second run's bar to fill a little", || async move {
        let value = bar_value(browser, &format!("{second_row} [role=progressbar]")).await?;
        let state = text_of(browser, &format!("{second_row} .state")).await;
        let slot = text_of(browser, "#slots-body tr td:nth-child(3)").await;
        (value >= 3.0
            && state.as_deref() == Some("running")
            && slot.as_deref() == Some("dashboard-second"))
        .then_some(())
    })
    .await;
    let queued = format!("#queue li[data-run-id=\"{waiting_id}\"]");
    assert!(
        text_of(browser, &queued).await.is_some(),
        "the third run is in the queue"
    );
    screenshot(browser, "dashboard.png").await;

    // More wait than the queue panel shows: it lists the head of the queue in the order
    // the runs will start, and counts the others.
    let mut behind = Vec::new();
    for i in 0..22 {
        behind.push(submit(app, token, &long_spec(&format!("dashboard-queued-{i}"))).await);
    }
    let head: Vec<&String> = std::iter::once(&waiting_id)
        .chain(&behind)
        .take(20)
        .collect();
    let (head, rest) = (
        &head,
        "and 3 others wait (filter the runs by state queued to see them all)",
    );
    until("the queue panel's head and count", || async move {
        let shown = js(
            browser,
            "return [...document.querySelectorAll('#queue li')].map(li => li.dataset.runId);",
            Value::Null,
        )
        .await;
        let more = text_of(browser, "#queue-more").await;
        (shown == json!(head) && more.as_deref() == Some(rest)).then_some(())
    })
    .await;
    // Cancelled while queued, they never train (nor outlive the test's server).
    for id in &behind {
        let response = app
            .client
            .post(format!("{}/api/v1/runs/{id}/cancel", app.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("cancel");
        assert_eq!(response.status(), 200, "cancel {id}");
        let run: Value = response.json().await.expect("run");
        assert_eq!(run["state"], "cancelled", "cancelled while queued: {run}");
    }

    // Cancel both from their pages: the waiting one, then the training one.
    for (id, from) in [(&waiting_id, "queued"), (&second_id, "running")] {
        click(browser, &format!("tr[data-run-id=\"{id}\"] a.run-link"))
            .await
            .expect("open the run page");
        until_run_page_state(browser, from).await;
        click(browser, "#run-cancel").await.expect("cancel");
        until_run_page_state(browser, "cancelled").await;
        until("RunCancelled in the timeline", || async move {
            text_of(browser, "#timeline li[data-type=RunCancelled]").await
        })
        .await;
        click(browser, "a[href=\"#/\"]:not(.brand)")
            .await
            .expect("back to the runs");
    }

    assert_no_errors(browser).await;
}

/// Submits `spec` over the API and returns the new run's id.
async fn submit(app: &TestApp, token: &str, spec: &Value) -> String {
    let response = app
        .client
        .post(format!("{}/api/v1/runs", app.address))
        .bearer_auth(token)
        .json(spec)
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.expect("run");
    run["id"].as_str().expect("id").to_string()
}

/// Keeps the page's uncaught errors where [`assert_no_errors`] reads them.
async fn collect_errors(browser: &Client) {
    js(
        browser,
        "window.__errors = []; \
         addEventListener('error', e => window.__errors.push(String(e.message))); \
         addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));",
        Value::Null,
    )
    .await;
}

async fn assert_no_errors(browser: &Client) {
    let errors = js(browser, "return window.__errors;", Value::Null).await;
    assert_eq!(errors, json!([]), "errors in the page");
}

#[actix_web::test]
async fn a_slurm_runs_job_shows_in_the_runs_table_and_on_its_page() {
    let Some(found) = browser_or_skip("the dashboard's Slurm test") else {
        return;
    };
    if !crate::slurm::slurm_up("the dashboard's Slurm test") {
        return;
    }
    let _cluster = crate::slurm::CLUSTER.read().await;
    let shared = tempfile::tempdir().expect("shared dir");
    let app = crate::slurm::slurm_app(shared.path()).await;
    let gate = shared.path().join("gate");
    let id = app
        .submit_ok(&crate::slurm::gated_spec("slurm-on-the-page", &gate))
        .await;
    let run = app.wait_for(&id, |r| r["progress"]["samples"] == 50).await;
    let job_id = run["slurm"]["job_id"].as_u64().expect("job id");
    let session = Session::open(found).await;
    let browser = &session.browser;
    let outcome = AssertUnwindSafe(async {
        browser
            .goto(&format!("{}/", app.address))
            .await
            .expect("page");
        collect_errors(browser).await;
        let expected = format!("slurm {job_id} RUNNING");
        until("the runs table to show the Slurm job", || {
            let expected = expected.clone();

            async move {
                text_of(browser, "#runs-body")
                    .await
                    .filter(|t| t.contains(&expected))
            }
        })
        .await;
        browser
            .goto(&format!("{}/#/runs/{id}", app.address))
            .await
            .expect("run page");
        let facts = until("the run page to show the Slurm job", || async {
            text_of(browser, "#run-facts")
                .await
                .filter(|t| t.contains("slurm job") && t.contains("RUNNING"))
        })
        .await;
        assert!(facts.contains(&format!("{job_id} (#1)")), "{facts}");
        screenshot(browser, "dashboard-slurm.png").await;
        let epochs = text_of(browser, "#run-facts").await.unwrap_or_default();
        assert!(
            epochs.contains("1 / 2"),
            "a command's epochs from its report: {epochs}"
        );
        std::fs::write(&gate, b"").expect("open the gate");
        until_run_page_state(browser, "completed").await;
        // The job's end is journaled after the run's (the stream has ended by then):
        // the page shows it when opened again.
        app.wait_for(&id, |r| r["slurm"]["ended"].is_string()).await;
        assert_no_errors(browser).await;
        browser.refresh().await.expect("reload");
        collect_errors(browser).await;
        let facts = until("the job's end on the run page", || async {
            text_of(browser, "#run-facts")
                .await
                .filter(|t| t.contains("ended COMPLETED"))
        })
        .await;
        assert!(facts.contains("slurm job"), "{facts}");
        // The command's progress-pipe figures, journaled when it exited.
        assert!(facts.contains("progress pipe4 lines, none bad"), "{facts}");
        assert_no_errors(browser).await;
    })
    .catch_unwind()
    .await;
    session.finish(outcome).await;
}

#[actix_web::test]
async fn a_command_run_s_page_shows_each_rank_s_log_and_every_rank_s_tagged() {
    let Some(found) = browser_or_skip("the dashboard's logs test") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens.toml");
    // Command runs need an admin token.
    let token = create_token(&file, "dashboard", Role::Admin).expect("token");
    let app = spawn_app_with(|config| {
        config.auth.tokens_file = Some(file.clone());
        config.runs.allow_commands = true;
        config.train.cpu_slots = 2;
    })
    .await;
    let spec = json!({
        "name": "ranks-on-the-page",
        "kind": "command",
        "slots": 2,
        "argv": ["bash", "-c", "echo \"hello from rank $RANK\"; echo \"oops $RANK\" >&2"],
    });
    let id = submit(&app, &token, &spec).await;
    let session = Session::open(found).await;
    let browser = &session.browser;
    let outcome = AssertUnwindSafe(async {
        browser
            .goto(&format!("{}/", app.address))
            .await
            .expect("page");
        js(
            browser,
            "sessionStorage.setItem('runyard.token', arguments[0]);",
            json!(token),
        )
        .await;
        browser
            .goto(&format!("{}/#/runs/{id}", app.address))
            .await
            .expect("run page");
        browser.refresh().await.expect("reload with the token");
        collect_errors(browser).await;
        until_run_page_state(browser, "completed").await;
        let logs = |wanted: &'static [&'static str]| {
            until("the log panel's lines", move || async move {
                let text = text_of(browser, "#run-logs").await?;
                wanted.iter().all(|w| text.contains(w)).then_some(text)
            })
        };
        let text = logs(&["hello from rank 0"]).await;
        assert!(!text.contains("rank 1"), "rank 0's log alone: {text}");
        let pick = |css: &'static str, value: &'static str| async move {
            js(
                browser,
                "const [css, value] = arguments[0]; const s = document.querySelector(css); \
                     s.value = value; s.dispatchEvent(new Event('change'));",
                json!([css, value]),
            )
            .await
        };
        pick("#logs-rank", "1").await;
        let text = logs(&["hello from rank 1"]).await;
        assert!(!text.contains("rank 0"), "rank 1's log alone: {text}");
        pick("#logs-rank", "all").await;
        logs(&["[rank 0] hello from rank 0", "[rank 1] hello from rank 1"]).await;
        pick("#logs-stream", "stderr").await;
        logs(&["[rank 0] oops 0", "[rank 1] oops 1"]).await;
        screenshot(browser, "dashboard-ranks.png").await;
        assert_no_errors(browser).await;
    })
    .catch_unwind()
    .await;
    session.finish(outcome).await;
}

// ------------------------------------------------------------------ sweeps

/// The README's digits sweep (`examples/sweep-digits.json`), its data in place.
fn digits_sweep(app: &TestApp) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("data/datasets/digits.csv.gz"),
        app.datasets().join("digits.csv.gz"),
    )
    .expect("digits.csv.gz present: run scripts/fetch-digits.sh");
    serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/sweep-digits.json")).expect("example"),
    )
    .expect("JSON example")
}

/// `POST`s `body` (JSON, when given) to `path` with the token; answers the status and
/// the JSON back.
async fn post_json(app: &TestApp, token: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

async fn get_sweep(app: &TestApp, token: &str, id: &str) -> Value {
    let response = app
        .client
        .get(format!("{}/api/v1/sweeps/{id}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("sweep");
    assert_eq!(response.status(), 200);
    response.json().await.expect("sweep JSON")
}

/// The attribute `name` of the first element matching `css`, or `None`.
async fn attribute(browser: &Client, css: &str, name: &str) -> Option<String> {
    js(
        browser,
        "const [css, name] = arguments[0]; const e = document.querySelector(css); \
         return e ? e.getAttribute(name) : null;",
        json!([css, name]),
    )
    .await
    .as_str()
    .map(str::to_owned)
}

/// How many elements match `css`.
async fn count(browser: &Client, css: &str) -> usize {
    js(
        browser,
        "return document.querySelectorAll(arguments[0]).length;",
        json!(css),
    )
    .await
    .as_u64()
    .unwrap_or(0) as usize
}

/// The trials table's rows in order: each row's trial number and the metric it shows
/// (its `data-value`, `None` while the trial has none).
async fn trial_rows(browser: &Client) -> Vec<(u64, Option<f64>)> {
    let rows = js(
        browser,
        "return [...document.querySelectorAll('#sweep-trials tbody tr[data-trial]')].map(tr => \
         [Number(tr.dataset.trial), tr.querySelector('td.metric').dataset.value]);",
        Value::Null,
    )
    .await;
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            let metric = row[1].as_str().filter(|v| !v.is_empty());
            (
                row[0].as_u64().expect("trial number"),
                metric.map(|v| v.parse().expect("a metric")),
            )
        })
        .collect()
}

/// The trials' numbers ordered by metric as the page documents it: `descending` or
/// `ascending`, trials without a metric last either way, ties by number.
fn by_metric(trials: &[Value], descending: bool) -> Vec<u64> {
    let mut rows: Vec<(u64, Option<f64>)> = trials
        .iter()
        .map(|t| (t["number"].as_u64().expect("number"), t["metric"].as_f64()))
        .collect();
    rows.sort_by(|a, b| match (a.1, b.1) {
        (Some(x), Some(y)) => {
            let order = if descending {
                y.total_cmp(&x)
            } else {
                x.total_cmp(&y)
            };
            order.then(a.0.cmp(&b.0))
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.0.cmp(&b.0),
    });
    rows.into_iter().map(|(n, _)| n).collect()
}

async fn until_sweep_page_state(browser: &Client, state: &str) {
    until(
        &format!("the sweep page to show `{state}`"),
        || async move {
            (text_of(browser, "#sweep-state .state").await.as_deref() == Some(state)).then_some(())
        },
    )
    .await;
}

#[actix_web::test]
async fn a_sweep_s_page_follows_it_live_to_its_end_with_its_trials_table_and_charts() {
    let Some(found) = browser_or_skip("the dashboard's sweep test") else {
        return;
    };
    let (app, token, _dir) = app_with_token().await;
    let spec = digits_sweep(&app);
    let (status, created) = post_json(&app, &token, "/api/v1/sweeps", Some(&spec)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    // Paused at once, so the page is sure to see it run on (resumed from the page).
    let (status, paused) =
        post_json(&app, &token, &format!("/api/v1/sweeps/{id}/pause"), None).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["state"], "paused");
    let session = Session::open(found).await;
    let outcome = AssertUnwindSafe(drive_sweep(&session.browser, &app, &token, &id))
        .catch_unwind()
        .await;
    session.finish(outcome).await;
}

/// The browser session of the test above.
async fn drive_sweep(browser: &Client, app: &TestApp, token: &str, id: &str) {
    browser
        .goto(&format!("{}/", app.address))
        .await
        .expect("page");
    js(
        browser,
        "sessionStorage.setItem('runyard.token', arguments[0]);",
        json!(token),
    )
    .await;
    browser.refresh().await.expect("reload with the token");
    collect_errors(browser).await;

    // The overview lists the sweep, paused, linking to its page.
    let row_css = format!("#sweeps-body tr[data-sweep-id=\"{id}\"]");
    let row = row_css.as_str();
    let link_css = format!("{row} a.sweep-link");
    let link = link_css.as_str();
    until("the sweep in the overview's list, paused", || async move {
        (text_of(browser, &format!("{row} .state")).await.as_deref() == Some("paused"))
            .then_some(())
    })
    .await;
    assert_eq!(
        attribute(browser, link, "href").await,
        Some(format!("#/sweeps/{id}"))
    );
    assert_eq!(text_of(browser, link).await.as_deref(), Some("digits-asha"));
    click(browser, link).await.expect("open the sweep page");
    until_sweep_page_state(browser, "paused").await;
    assert_eq!(
        text_of(browser, "#sweep-name").await.as_deref(),
        Some("digits-asha")
    );

    // While paused it makes no trials: the table shows those it made.
    let made = get_sweep(app, token, id).await["trials"]
        .as_array()
        .expect("trials")
        .len();
    assert!(made < 27, "{made} trials made before the pause");
    until("the trials made before the pause", || async move {
        (trial_rows(browser).await.len() == made).then_some(())
    })
    .await;

    // Resumed from the page, it is followed live (the page reads the sweep again only
    // when its stream brings events) to its end.
    assert_eq!(
        attribute(browser, "#sweep-resume", "disabled").await,
        None,
        "resume is offered"
    );
    click(browser, "#sweep-resume").await.expect("resume");
    until_sweep_page_state(browser, "completed").await;
    until("27 trial rows", || async move {
        (count(browser, "#sweep-trials tbody tr[data-trial]").await == 27).then_some(())
    })
    .await;
    let sweep = get_sweep(app, token, id).await;
    assert_eq!(sweep["state"], "completed", "{sweep:#}");
    let trials = sweep["trials"].as_array().expect("trials");
    assert_eq!(trials.len(), 27);
    until("the sweep ended in the live badge", || async move {
        (text_of(browser, "#live").await.as_deref() == Some("sweep ended")).then_some(())
    })
    .await;

    // Every row shows its trial's metric, in trial order until sorted.
    let rows = trial_rows(browser).await;
    let numbers: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(numbers, (0..27).collect::<Vec<u64>>());
    for (number, metric) in &rows {
        let trial = &trials[*number as usize];
        assert_eq!(*metric, trial["metric"].as_f64(), "trial {number}: {trial}");
    }
    for trial in trials {
        let css = format!(
            "#sweep-trials tr[data-trial=\"{}\"]",
            trial["number"].as_u64().expect("number")
        );
        assert_eq!(
            attribute(browser, &css, "data-status").await.as_deref(),
            trial["status"].as_str()
        );
    }

    // The best trial: named with its metric and run, and marked in the table.
    let best = &sweep["best"];
    let best_number = best["number"].as_u64().expect("a best trial");
    let best_run = best["run_id"].as_str().expect("best run");
    assert_eq!(
        attribute(browser, "#sweep-best", "data-trial").await,
        Some(best_number.to_string())
    );
    let shown: f64 = attribute(browser, "#sweep-best", "data-metric")
        .await
        .expect("best metric")
        .parse()
        .expect("a number");
    assert_eq!(Some(shown), best["metric"].as_f64());
    assert_eq!(
        attribute(browser, "#sweep-best a.best-run", "href").await,
        Some(format!("#/runs/{best_run}"))
    );
    let marked = js(
        browser,
        "return [...document.querySelectorAll('#sweep-trials tbody tr.best')]\
         .map(tr => Number(tr.dataset.trial));",
        Value::Null,
    )
    .await;
    assert_eq!(marked, json!([best_number]));
    assert!(
        text_of(browser, "#sweep-facts")
            .await
            .is_some_and(|t| t.contains("asha") && t.contains("val_accuracy (max)")),
        "the facts name the searcher and metric"
    );

    // The metric's header sorts best first (descending for `max`), again reverses.
    let descending = sweep["mode"] == "max";
    click(browser, "#sweep-trials th[data-sort=metric]")
        .await
        .expect("sort by metric");
    let order: Vec<u64> = trial_rows(browser).await.iter().map(|r| r.0).collect();
    assert_eq!(order, by_metric(trials, descending));
    let direction = |d: bool| if d { "descending" } else { "ascending" };
    assert_eq!(
        attribute(browser, "#sweep-trials th[data-sort=metric]", "aria-sort")
            .await
            .as_deref(),
        Some(direction(descending))
    );
    click(browser, "#sweep-trials th[data-sort=metric]")
        .await
        .expect("sort by metric again");
    let order: Vec<u64> = trial_rows(browser).await.iter().map(|r| r.0).collect();
    assert_eq!(order, by_metric(trials, !descending));
    assert_eq!(
        attribute(browser, "#sweep-trials", "data-sort-dir")
            .await
            .as_deref(),
        Some(direction(!descending))
    );
    // Any other column sorts too: trial number, ascending.
    click(browser, "#sweep-trials th[data-sort=number]")
        .await
        .expect("sort by number");
    let order: Vec<u64> = trial_rows(browser).await.iter().map(|r| r.0).collect();
    assert_eq!(order, (0..27).collect::<Vec<u64>>());

    // The best-so-far curve: every rung result with a metric, and the running best.
    let results: Vec<f64> = sweep["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["metric"].as_f64())
        .collect();
    assert!(results.len() >= 27, "{} results", results.len());
    let running_best = if descending {
        results.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    } else {
        results.iter().copied().fold(f64::INFINITY, f64::min)
    };
    let curve_points = results.len().to_string();
    until("the best-so-far curve", || {
        let expected = curve_points.clone();
        async move {
            (attribute(browser, "#sweep-best-curve polyline.best", "data-points")
                .await
                .as_deref()
                == Some(expected.as_str()))
            .then_some(())
        }
    })
    .await;
    assert_eq!(
        count(browser, "#sweep-best-curve circle.result").await,
        results.len()
    );
    let drawn_best: f64 = attribute(browser, "#sweep-best-curve", "data-best")
        .await
        .expect("running best")
        .parse()
        .expect("a number");
    assert_eq!(drawn_best, running_best);

    // The validation curves: a line per trial with its epochs' metrics, the best marked.
    let curves = js(
        browser,
        "return [...document.querySelectorAll('#sweep-curves polyline.trial')]\
         .map(p => [Number(p.dataset.trial), Number(p.dataset.points), p.classList.contains('best')]);",
        Value::Null,
    )
    .await;
    let curves = curves.as_array().expect("curves");
    let with_curves: Vec<&Value> = trials
        .iter()
        .filter(|t| {
            t["curve"]
                .as_array()
                .is_some_and(|c| c.iter().any(Value::is_f64))
        })
        .collect();
    assert_eq!(curves.len(), with_curves.len(), "{curves:?}");
    assert_eq!(with_curves.len(), 27);
    for line in curves {
        let number = line[0].as_u64().expect("trial");
        let trial = &trials[number as usize];
        let points = trial["curve"]
            .as_array()
            .expect("curve")
            .iter()
            .filter(|v| v.is_f64())
            .count();
        assert_eq!(line[1].as_u64(), Some(points as u64), "trial {number}");
        assert_eq!(line[2].as_bool(), Some(number == best_number));
    }

    // The parallel coordinates: an axis per point field and the metric, a polyline per
    // trial through every axis.
    until("the parallel-coordinates view", || async move {
        (attribute(browser, "#sweep-parallel", "data-lines")
            .await
            .as_deref()
            == Some("27"))
        .then_some(())
    })
    .await;
    let lines = js(
        browser,
        "return [...document.querySelectorAll('#sweep-parallel polyline.trial')]\
         .map(p => [Number(p.dataset.trial), p.getAttribute('points').trim().split(/\\s+/).length, \
                    p.classList.contains('best')]);",
        Value::Null,
    )
    .await;
    let lines = lines.as_array().expect("lines");
    let mut drawn: Vec<u64> = lines.iter().map(|l| l[0].as_u64().expect("n")).collect();
    drawn.sort_unstable();
    assert_eq!(drawn, (0..27).collect::<Vec<u64>>());
    assert!(
        lines.iter().all(|l| l[1] == json!(4)),
        "each line crosses the 4 axes: {lines:?}"
    );
    let best_lines: Vec<&Value> = lines.iter().filter(|l| l[2] == json!(true)).collect();
    assert_eq!(best_lines.len(), 1);
    assert_eq!(best_lines[0][0].as_u64(), Some(best_number));
    let axes = js(
        browser,
        "return Object.fromEntries([...document.querySelectorAll('#sweep-parallel g.axis-group')]\
         .map(g => [g.dataset.field, g.dataset.scale]));",
        Value::Null,
    )
    .await;
    // The learning rate spans 100× (log), the hidden sizes are lists (categories).
    assert_eq!(
        axes,
        json!({"optimizer.lr": "log", "model.hidden": "category", "batch_size": "linear",
               "val_accuracy": "metric"})
    );
    screenshot(browser, "dashboard-sweep.png").await;

    // The best trial's link opens its run's page, which links back to the sweep.
    click(browser, "#sweep-best a.best-run")
        .await
        .expect("open the best run");
    until_run_page_state(browser, "completed").await;
    assert_eq!(
        attribute(browser, "#run-facts a.sweep-link", "href").await,
        Some(format!("#/sweeps/{id}"))
    );
    assert_no_errors(browser).await;

    // The sweep's page loaded by itself shows the sweep alone.
    load_fresh(browser, &format!("{}/#/sweeps/{id}", app.address)).await;
    until_sweep_page_state(browser, "completed").await;
    assert_eq!(
        displayed(browser).await,
        json!({"overview": false, "runs": false, "queue": false, "slots": false,
               "submit": false, "sweeps": false, "run": false, "sweep": true, "compare": false})
    );
    assert_no_errors(browser).await;
}

// ------------------------------------------------------------------ at scale

/// Runs in the journal of the scale test.
const MANY_RUNS: usize = 10_000;
/// Runs per page of the runs table (the script's `RUNS_PAGE`).
const PAGE: usize = 50;

/// The runs of [`write_many_runs`] the test opens.
struct ManyRuns {
    /// A completed classification run with large numbers (loss 12,345.678, a
    /// checkpoint at step 123,456 of 7,654,321 bytes, 3,723 s of training), the newest.
    big: RunId,
    /// A completed regression run (validation MAE 0.1234).
    regression: RunId,
}

/// Journals [`MANY_RUNS`] ended runs into `data_dir`'s journal through the store's own
/// API, as a server would have written them, with nothing trained: half of them
/// completed with an epoch and its evaluation, 3 in 10 failed and 2 in 10 cancelled
/// while queued; each ten labelled `team` vision, speech, nlp or rl in turn. Then the
/// two runs of [`ManyRuns`], the newest.
fn write_many_runs(data_dir: &Path) -> ManyRuns {
    let log = EventLog::open(&data_dir.join("journal")).expect("journal");
    let slot = SlotId(0);
    let mut records = Vec::with_capacity(MANY_RUNS * 7 + 20);
    let submit = |records: &mut Vec<Envelope>, i: usize, spec: &Value| {
        let run = RunId::new();
        records.push(Envelope::now(
            run,
            Event::RunSubmitted {
                name: spec["name"].as_str().expect("name").to_string(),
                digest: format!("{i:064x}"),
                spec: spec.to_string(),
            },
        ));
        run
    };
    let trained = |records: &mut Vec<Envelope>, run: RunId, epoch: EpochFigures| {
        records.push(Envelope::now(run, Event::SlotClaimed { slot }));
        records.push(Envelope::now(
            run,
            Event::RunStarted {
                attempt: 1,
                slot,
                device: "cpu".into(),
            },
        ));
        records.push(Envelope::now(
            run,
            Event::EpochCompleted {
                epoch: 1,
                train_loss: epoch.loss,
                train_accuracy: 0.5,
                duration_ms: epoch.duration_ms,
            },
        ));
        if let Some((step, bytes)) = epoch.checkpoint {
            records.push(Envelope::now(
                run,
                Event::CheckpointSaved {
                    path: format!("runs/{run}/checkpoints/1.ckpt"),
                    epoch: 1,
                    batch: 0,
                    step,
                    sha256: "0".repeat(64),
                    bytes,
                },
            ));
        }
        records.push(Envelope::now(
            run,
            Event::EpochEvaluated {
                epoch: 1,
                val_loss: 0.5,
                val_metric: epoch.val,
            },
        ));
        records.push(Envelope::now(
            run,
            Event::RunCompleted {
                train_loss: epoch.loss,
                train_accuracy: 0.5,
            },
        ));
        records.push(Envelope::now(run, Event::SlotReleased { slot }));
    };
    let teams = ["vision", "speech", "nlp", "rl"];
    for i in 0..MANY_RUNS {
        let mut spec = quick_spec(&format!("run-{i:05}"));
        spec["epochs"] = json!(1);
        spec["labels"] = json!({"team": teams[(i / 10) % teams.len()]});
        let run = submit(&mut records, i, &spec);
        match i % 10 {
            0..=2 => records.push(Envelope::now(
                run,
                Event::RunFailed {
                    reason: "the test says so".into(),
                },
            )),
            3 | 4 => records.push(Envelope::now(
                run,
                Event::RunCancelled {
                    reason: "the test says so".into(),
                },
            )),
            _ => trained(
                &mut records,
                run,
                EpochFigures {
                    loss: 0.5 + (i % 7) as f64 / 10.0,
                    val: 0.75,
                    duration_ms: 800,
                    checkpoint: None,
                },
            ),
        }
    }
    let mut spec = quick_spec("regression-run");
    spec["epochs"] = json!(1);
    spec["task"] = json!("regression");
    let regression = submit(&mut records, MANY_RUNS, &spec);
    trained(
        &mut records,
        regression,
        EpochFigures {
            loss: 0.25,
            val: 0.1234,
            duration_ms: 900,
            checkpoint: None,
        },
    );
    let mut spec = quick_spec("big-numbers");
    spec["epochs"] = json!(1);
    let big = submit(&mut records, MANY_RUNS + 1, &spec);
    trained(
        &mut records,
        big,
        EpochFigures {
            loss: 12_345.678,
            val: 0.9342,
            duration_ms: 3_723_000,
            checkpoint: Some((123_456, 7_654_321)),
        },
    );
    log.append(1, &records).expect("append");
    ManyRuns { big, regression }
}

/// One epoch of a run [`write_many_runs`] journals as trained.
struct EpochFigures {
    loss: f64,
    val: f64,
    duration_ms: u64,
    /// A checkpoint's step and size, when it saved one.
    checkpoint: Option<(u64, u64)>,
}

/// The ids of one page of `GET /api/v1/runs?QUERY`, and its next cursor.
async fn api_page(app: &TestApp, query: &str) -> (Vec<String>, Option<String>) {
    let response = app
        .client
        .get(format!("{}/api/v1/runs?{query}", app.address))
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), 200, "{query}");
    let next = response
        .headers()
        .get("x-next-cursor")
        .map(|v| v.to_str().expect("ascii").to_string());
    let runs: Vec<Value> = response.json().await.expect("runs");
    let ids = runs
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    (ids, next)
}

/// The run ids of the runs table's rows, in order.
async fn row_ids(browser: &Client) -> Vec<String> {
    let ids = js(
        browser,
        "return [...document.querySelectorAll('#runs-body tr')].map(tr => tr.dataset.runId);",
        Value::Null,
    )
    .await;
    ids.as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect()
}

/// Waits until the runs table shows exactly `expected`, in order.
async fn until_rows(browser: &Client, what: &str, expected: &[String]) {
    until(what, || async move {
        (row_ids(browser).await == expected).then_some(())
    })
    .await;
}

/// Sets a `<select>` (or text box) to `value` and fires its `change`, as a person does.
async fn choose(browser: &Client, css: &str, value: &str) {
    js(
        browser,
        "const [css, value] = arguments[0]; const s = document.querySelector(css); \
         s.value = value; s.dispatchEvent(new Event('change'));",
        json!([css, value]),
    )
    .await;
}

/// Loads `url` as a new document (not a hash change of the one shown), as a link
/// opened in a new tab or a reload does.
async fn load_fresh(browser: &Client, url: &str) {
    browser.goto("about:blank").await.expect("blank page");
    browser.goto(url).await.expect("page");
    collect_errors(browser).await;
}

/// Which views and overview parts are displayed (computed, not the `hidden` attribute).
async fn displayed(browser: &Client) -> Value {
    js(
        browser,
        "const shown = id => { const e = document.getElementById(id); \
           return !!e && e.checkVisibility(); }; \
         return { overview: getComputedStyle(document.getElementById('overview')).display !== 'none', \
                  runs: shown('runs'), queue: shown('queue'), slots: shown('slots'), \
                  submit: shown('submit-form'), sweeps: shown('sweeps'), \
                  run: shown('run-view'), sweep: shown('sweep-view'), compare: shown('compare-view') };",
        Value::Null,
    )
    .await
}

/// The page's visible text.
async fn page_text(browser: &Client) -> String {
    js(browser, "return document.body.innerText;", Value::Null)
        .await
        .as_str()
        .expect("text")
        .to_string()
}

/// The text of a run page's fact `name`.
async fn fact(browser: &Client, name: &str) -> Option<String> {
    text_of(browser, &format!("#run-facts [data-fact=\"{name}\"] dd")).await
}

#[actix_web::test]
async fn ten_thousand_runs_page_filter_and_sort_as_the_api_and_a_run_page_shows_alone() {
    let Some(found) = browser_or_skip("the dashboard's scale test") else {
        return;
    };
    let data = tempfile::tempdir().expect("data dir");
    let written = std::time::Instant::now();
    let runs = write_many_runs(data.path());
    println!(
        "journaled {} runs in {:.1} s",
        MANY_RUNS + 2,
        written.elapsed().as_secs_f64()
    );
    let data_dir = data.path().to_path_buf();
    let app = spawn_app_with(move |config| config.server.data_dir = data_dir).await;
    let session = Session::open(found).await;
    let outcome = AssertUnwindSafe(drive_many(&session.browser, &app, &runs))
        .catch_unwind()
        .await;
    session.finish(outcome).await;
}

/// The browser session of the test above.
async fn drive_many(browser: &Client, app: &TestApp, runs: &ManyRuns) {
    browser
        .goto(&format!("{}/", app.address))
        .await
        .expect("page");
    // The time from navigation to the first page of runs drawn, as the page marks it.
    let first_render_ms = until("the first page of runs", || async move {
        js(
            browser,
            "const m = performance.getEntriesByName('runyard:runs-drawn'); \
             return m.length ? m[0].startTime : null;",
            Value::Null,
        )
        .await
        .as_f64()
    })
    .await;
    println!("dashboard_first_render_ms_10k_runs: {first_render_ms:.0} ms");
    if let Some(path) = std::env::var_os("RUNYARD_DASHBOARD_FIGURES") {
        let figures = json!({
            "dashboard_first_render_ms_10k_runs": {"value": first_render_ms, "unit": "ms"}
        });
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("figures directory");
        }
        std::fs::write(&path, figures.to_string()).expect("write the dashboard figure");
    }
    collect_errors(browser).await;
    js(
        browser,
        "performance.setResourceTimingBufferSize(100000);",
        Value::Null,
    )
    .await;
    let locale = js(
        browser,
        "return new Intl.NumberFormat().resolvedOptions().locale;",
        Value::Null,
    )
    .await;
    assert!(
        locale.as_str().is_some_and(|l| l.starts_with("en")),
        "the browser reads English: {locale}"
    );

    // One page, in the API's order, newest first: the big-numbers run on top.
    let (first, next) = api_page(app, &format!("limit={PAGE}")).await;
    assert_eq!(first.len(), PAGE);
    assert_eq!(first[0], runs.big.to_string());
    until_rows(browser, "the first page of runs", &first).await;
    assert_eq!(
        count(browser, "#runs-body tr").await,
        PAGE,
        "one page in the DOM"
    );
    let big_row = format!("tr[data-run-id=\"{}\"]", runs.big);
    assert_eq!(
        text_of(browser, &format!("{big_row} td.loss"))
            .await
            .as_deref(),
        Some("12,350"),
        "a loss of 12,345.678 to 4 significant digits"
    );
    assert_eq!(
        attribute(browser, &format!("{big_row} td.metric"), "data-metric")
            .await
            .as_deref(),
        Some("val_accuracy")
    );
    let regression_row = format!("tr[data-run-id=\"{}\"] td.metric", runs.regression);
    assert_eq!(
        text_of(browser, &regression_row).await.as_deref(),
        Some("val_mae 0.1234")
    );
    let text = page_text(browser).await;
    assert!(
        !text.contains("e+"),
        "exponent notation on the page: {text}"
    );
    assert!(!text.contains("val_metric"), "{text}");

    // Next and Previous follow the API's cursors.
    let (second, _) = api_page(
        app,
        &format!("limit={PAGE}&cursor={}", next.expect("a second page")),
    )
    .await;
    click(browser, "#runs-next").await.expect("next page");
    until_rows(browser, "the second page", &second).await;
    // The journal's ended runs and the two of `ManyRuns`: the pager counts them all.
    let total = MANY_RUNS + 2;
    let of = format!("{},{:03}", total / 1000, total % 1000);
    assert_eq!(
        text_of(browser, "#runs-page").await,
        Some(format!("runs 51–100 of {of}"))
    );
    click(browser, "#runs-prev").await.expect("previous page");
    until_rows(browser, "the first page again", &first).await;

    // Filters by state and label, and the API's sort orders.
    choose(browser, "#filter-state", "failed").await;
    let (failed, _) = api_page(app, &format!("state=failed&limit={PAGE}")).await;
    until_rows(browser, "the failed runs", &failed).await;
    choose(browser, "#filter-label", "team=speech").await;
    click(browser, "#filter-apply").await.expect("filter");
    let (speech, _) = api_page(
        app,
        &format!("state=failed&label=team%3Dspeech&limit={PAGE}"),
    )
    .await;
    assert!(!speech.is_empty() && speech != failed);
    until_rows(browser, "the failed runs of team speech", &speech).await;
    choose(browser, "#filter-sort", "name").await;
    let (by_name, _) = api_page(
        app,
        &format!("state=failed&label=team%3Dspeech&sort=name&limit={PAGE}"),
    )
    .await;
    until_rows(browser, "the same runs by name", &by_name).await;
    let states = js(
        browser,
        "return [...new Set([...document.querySelectorAll('#runs-body tr')].map(tr => tr.dataset.state))];",
        Value::Null,
    )
    .await;
    assert_eq!(states, json!(["failed"]));
    // The filters are in the address: a reload shows the same page.
    let hash = js(browser, "return location.hash;", Value::Null).await;
    assert_eq!(hash, json!("#/?state=failed&label=team%3Dspeech&sort=name"));
    assert_no_errors(browser).await;
    browser.refresh().await.expect("reload");
    collect_errors(browser).await;
    until_rows(browser, "the filtered page after a reload", &by_name).await;
    assert_eq!(
        js(
            browser,
            "return document.getElementById('filter-state').value;",
            Value::Null
        )
        .await,
        json!("failed")
    );

    // Live at scale: a new run shows on top of the first page and its bar moves, from
    // the stream, with no run's events read.
    choose(browser, "#filter-label", "").await;
    click(browser, "#filter-apply").await.expect("no label");
    choose(browser, "#filter-sort", "-created_at").await;
    choose(browser, "#filter-state", "").await;
    until_rows(browser, "the first page once more", &first).await;
    js(
        browser,
        "performance.setResourceTimingBufferSize(100000);",
        Value::Null,
    )
    .await;
    let live_id = app.submit_ok(&long_spec("live-at-scale")).await;
    let live = live_id.as_str();
    let live_row_css = format!("tr[data-run-id=\"{live}\"]");
    let live_row = live_row_css.as_str();
    until("the new run on top, its bar moving", || async move {
        let top = row_ids(browser).await.first().cloned();
        let value = bar_value(browser, &format!("{live_row} [role=progressbar]")).await?;
        (top.as_deref() == Some(live) && value > 0.0).then_some(())
    })
    .await;
    assert_eq!(count(browser, "#runs-body tr").await, PAGE);
    let response = app.post(&format!("/api/v1/runs/{live}/cancel")).await;
    assert!(response.status().is_success(), "{}", response.status());
    until("the new run cancelled in its row", || async move {
        (text_of(browser, &format!("{live_row} .state"))
            .await
            .as_deref()
            == Some("cancelled"))
        .then_some(())
    })
    .await;
    let fetched = js(
        browser,
        "return performance.getEntriesByType('resource').map(e => e.name);",
        Value::Null,
    )
    .await;
    for url in fetched
        .as_array()
        .expect("urls")
        .iter()
        .filter_map(Value::as_str)
    {
        assert!(
            !url.contains("/events"),
            "the overview read a run's events: {url}"
        );
        if url.contains("/api/v1/runs?") {
            assert!(url.contains("limit="), "a list without a page size: {url}");
        }
    }
    screenshot(browser, "dashboard-10k.png").await;
    assert_no_errors(browser).await;

    // A run's page loaded by itself shows that run alone, its numbers as people
    // write them.
    load_fresh(browser, &format!("{}/#/runs/{}", app.address, runs.big)).await;
    until("the big-numbers run's page", || async move {
        (fact(browser, "checkpoint").await.as_deref() == Some("epoch 1, step 123,456, 7.3 MiB"))
            .then_some(())
    })
    .await;
    assert_eq!(
        displayed(browser).await,
        json!({"overview": false, "runs": false, "queue": false, "slots": false,
               "submit": false, "sweeps": false, "run": true, "sweep": false, "compare": false})
    );
    assert_eq!(
        text_of(browser, "#run-name").await.as_deref(),
        Some("big-numbers")
    );
    assert_eq!(fact(browser, "train_loss").await.as_deref(), Some("12,350"));
    assert_eq!(
        fact(browser, "training time").await.as_deref(),
        Some("1 h 02 min")
    );
    assert_eq!(
        fact(browser, "val_accuracy").await.as_deref(),
        Some("93.4%")
    );
    let saved = text_of(browser, "#timeline li[data-type=CheckpointSaved] .data").await;
    assert_eq!(
        saved.as_deref(),
        Some("epoch 1, batch 0, step 123,456, 7.3 MiB")
    );
    let text = page_text(browser).await;
    assert!(
        !text.contains("e+"),
        "exponent notation on the page: {text}"
    );
    assert!(!text.contains("val_metric"), "{text}");
    screenshot(browser, "dashboard-run-alone.png").await;
    assert_no_errors(browser).await;

    // A regression's validation metric is its MAE, named so.
    load_fresh(
        browser,
        &format!("{}/#/runs/{}", app.address, runs.regression),
    )
    .await;
    until("the regression run's page", || async move {
        fact(browser, "val_mae").await.filter(|v| v == "0.1234")
    })
    .await;
    assert_eq!(fact(browser, "val_accuracy").await, None);
    let evaluated = text_of(browser, "#timeline li[data-type=EpochEvaluated] .data").await;
    assert_eq!(
        evaluated.as_deref(),
        Some("epoch 1: val_loss 0.5000, val_mae 0.1234")
    );
    assert_eq!(displayed(browser).await["overview"], json!(false));
    assert_no_errors(browser).await;
}

// ------------------------------------------------------------------ comparing runs

#[actix_web::test]
async fn two_runs_checked_in_the_table_are_compared_curves_overlaid_and_spec_differences_listed() {
    let Some(found) = browser_or_skip("the dashboard's compare test") else {
        return;
    };
    let app = crate::helpers::spawn_app().await;
    let mut ids = Vec::new();
    for lr in [0.01, 0.05] {
        let mut spec = quick_spec(&format!("compare-lr-{lr}"));
        spec["optimizer"]["lr"] = json!(lr);
        spec["epochs"] = json!(4);
        spec["validation"] = json!({"fraction": 0.2});
        ids.push(app.submit_ok(&spec).await);
    }
    for id in &ids {
        let run = app.wait_ended(id).await;
        assert_eq!(run["state"], "completed", "{run}");
    }
    let session = Session::open(found).await;
    let outcome = AssertUnwindSafe(drive_compare(&session.browser, &app, &ids))
        .catch_unwind()
        .await;
    session.finish(outcome).await;
}

#[actix_web::test]
async fn a_comparison_opened_before_its_runs_train_follows_them_live_to_their_end() {
    let Some(found) = browser_or_skip("the dashboard's live compare test") else {
        return;
    };
    // One slot, held: the compared runs wait in the queue while the page opens.
    let app = crate::helpers::spawn_app_with(|c| c.train.cpu_slots = 1).await;
    let blocker = app.submit_ok(&long_spec("compare-blocker")).await;
    app.wait_for(&blocker, |r| r["state"] == "running").await;
    let mut ids = Vec::new();
    for lr in [0.01, 0.05] {
        let mut spec = quick_spec(&format!("live-compare-lr-{lr}"));
        spec["optimizer"]["lr"] = json!(lr);
        spec["epochs"] = json!(4);
        spec["validation"] = json!({"fraction": 0.2});
        ids.push(app.submit_ok(&spec).await);
    }
    let session = Session::open(found).await;
    let outcome = AssertUnwindSafe(async {
        let browser = &session.browser;
        load_fresh(
            browser,
            &format!("{}/#/compare/{}", app.address, ids.join(",")),
        )
        .await;
        until("the compare page following the queued runs", || async move {
            let live = js(browser, "return document.getElementById('live').dataset.state;", Value::Null).await;
            let lines = js(
                browser,
                "return document.querySelectorAll('#compare-legend .run-key, #compare-legend li').length;",
                Value::Null,
            )
            .await;
            (live == json!("live") && lines.as_u64() >= Some(2)).then_some(())
        })
        .await;
        for id in &ids {
            assert_eq!(app.run(id).await["state"], "queued", "not trained yet");
        }
        // The slot is let go: both runs train while the page watches, and their
        // validation curves fill from the stream alone.
        let response = app.post(&format!("/api/v1/runs/{blocker}/cancel")).await;
        assert!(response.status().is_success(), "{}", response.status());
        for id in &ids {
            let run = app.wait_ended(id).await;
            assert_eq!(run["state"], "completed", "{run}");
        }
        check_comparison(browser, &app, &ids).await;
        until("the page to say the runs ended", || async move {
            let live = js(browser, "return document.getElementById('live').dataset.state;", Value::Null).await;
            (live == json!("ended")).then_some(())
        })
        .await;
        assert_no_errors(browser).await;
    })
    .catch_unwind()
    .await;
    session.finish(outcome).await;
}

/// The browser session of the test above.
async fn drive_compare(browser: &Client, app: &TestApp, ids: &[String]) {
    browser
        .goto(&format!("{}/", app.address))
        .await
        .expect("page");
    collect_errors(browser).await;
    let (listed, _) = api_page(app, &format!("limit={PAGE}")).await;
    until_rows(browser, "both runs in the table", &listed).await;
    assert_eq!(
        attribute(browser, "#compare-open", "disabled")
            .await
            .as_deref(),
        Some(""),
        "nothing to compare yet"
    );
    // A classification's validation metric is named val_accuracy in its row.
    for id in ids {
        let cell = format!("tr[data-run-id=\"{id}\"] td.metric");
        assert_eq!(
            attribute(browser, &cell, "data-metric").await.as_deref(),
            Some("val_accuracy")
        );
        click(browser, &format!("tr[data-run-id=\"{id}\"] input.pick"))
            .await
            .expect("check the run");
    }
    assert_eq!(
        text_of(browser, "#compare-count").await.as_deref(),
        Some("2 checked to compare")
    );
    click(browser, "#compare-open").await.expect("compare");
    let hash = format!("#/compare/{}", ids.join(","));
    until("the compare page", || {
        let hash = hash.clone();
        async move {
            (js(browser, "return location.hash;", Value::Null).await == json!(hash)).then_some(())
        }
    })
    .await;
    check_comparison(browser, app, ids).await;

    // The comparison is a link: loaded by itself it shows the same, and nothing else.
    assert_no_errors(browser).await;
    load_fresh(browser, &format!("{}/{hash}", app.address)).await;
    check_comparison(browser, app, ids).await;
    assert_eq!(
        displayed(browser).await,
        json!({"overview": false, "runs": false, "queue": false, "slots": false,
               "submit": false, "sweeps": false, "run": false, "sweep": false, "compare": true})
    );
    screenshot(browser, "dashboard-compare.png").await;
    assert_no_errors(browser).await;
}

/// The compare page of `ids`: a loss and a validation line per run, a legend under
/// each chart naming the runs, and the spec fields that differ.
async fn check_comparison(browser: &Client, app: &TestApp, ids: &[String]) {
    let mut evaluated = Vec::new();
    let mut names = Vec::new();
    for id in ids {
        let events = app.events(id).await;
        evaluated.push(
            events
                .iter()
                .filter(|e| e["type"] == "EpochEvaluated")
                .count() as u64,
        );
        names.push(
            app.run(id).await["name"]
                .as_str()
                .expect("name")
                .to_string(),
        );
    }
    assert_eq!(evaluated, [4, 4]);
    let lines = |chart: &'static str| async move {
        let lines = js(
            browser,
            "return [...document.querySelectorAll(arguments[0] + ' polyline.run')]\
             .map(p => [p.dataset.runId, Number(p.dataset.points), p.getAttribute('stroke')]);",
            json!(chart),
        )
        .await;
        lines.as_array().expect("lines").clone()
    };
    let val = until("a validation curve per run", || {
        let evaluated = evaluated.clone();
        async move {
            let lines = lines("#compare-val").await;
            let points: Vec<u64> = lines.iter().filter_map(|l| l[1].as_u64()).collect();
            (points == evaluated).then_some(lines)
        }
    })
    .await;
    let drawn: Vec<&str> = val.iter().filter_map(|l| l[0].as_str()).collect();
    assert_eq!(drawn, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ne!(val[0][2], val[1][2], "each run in its own colour");
    let loss = until("a loss curve per run", || async move {
        let lines = lines("#compare-loss").await;
        (lines.len() == 2 && lines.iter().all(|l| l[1].as_u64().unwrap_or(0) >= 2)).then_some(lines)
    })
    .await;
    assert_eq!(loss[0][0], json!(ids[0]));
    for legend in ["#compare-loss-key", "#compare-val-key"] {
        let shown = js(
            browser,
            "return [...document.querySelectorAll(arguments[0] + ' .run-key')].map(k => k.textContent);",
            json!(legend),
        )
        .await;
        assert_eq!(shown, json!(names), "{legend}");
    }
    let title = text_of(browser, "#compare-val-title")
        .await
        .unwrap_or_default();
    assert!(title.starts_with("val_accuracy"), "{title}");
    // The specs differ in their name and learning rate only.
    let rows = js(
        browser,
        "return [...document.querySelectorAll('#compare-diff-body tr')].map(tr => \
         [tr.dataset.path, ...[...tr.querySelectorAll('td[data-run-id]')].map(td => td.textContent)]);",
        Value::Null,
    )
    .await;
    assert_eq!(
        rows,
        json!([
            ["name", names[0], names[1]],
            ["optimizer.lr", "0.01", "0.05"],
        ])
    );
    let text = page_text(browser).await;
    assert!(
        !text.contains("e+") && !text.contains("val_metric"),
        "{text}"
    );
}
