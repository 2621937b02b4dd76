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
}
