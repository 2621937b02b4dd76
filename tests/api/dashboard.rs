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
