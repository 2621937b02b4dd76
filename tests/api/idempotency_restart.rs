//! `Idempotency-Key` across a crash: the real binary is killed with SIGKILL after
//! answering keyed requests, restarted on the same data directory, and the retries get
//! the first answers, byte for byte, with nothing done twice.

use serde_json::{json, Value};

use crate::helpers::{answer_parts, client, long_spec, wait_ready};
use crate::server::Server;

/// A keyed `POST` and the parts of its answer.
async fn post_keyed(
    http: &reqwest::Client,
    url: String,
    key: &str,
    body: Option<&Value>,
) -> (u16, bool, Option<String>, String) {
    answer_parts(crate::helpers::post_keyed(http, url, key, body).await).await
}

async fn runs_named(http: &reqwest::Client, address: &str, prefix: &str) -> usize {
    let list: Value = http
        .get(format!("{address}/api/v1/runs?name_prefix={prefix}"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    list.as_array().expect("runs").len()
}

#[tokio::test]
async fn keyed_retries_after_a_server_crash_get_the_first_answers() {
    let root = tempfile::tempdir().expect("temp dir");
    let data_dir = root.path().join("data");
    let http = client();

    let server = Server::start(&data_dir, "first.log");
    wait_ready(&http, &server.address).await;
    let runs_url = |address: &str| format!("{address}/api/v1/runs");

    // A run submitted with a key (still live at the crash), and another one cancelled
    // with a key.
    let spec = long_spec("keyed-live");
    let submitted = post_keyed(&http, runs_url(&server.address), "submit-1", Some(&spec)).await;
    assert_eq!((submitted.0, submitted.1), (201, false), "{}", submitted.3);
    let doomed = long_spec("keyed-cancelled");
    let made = post_keyed(&http, runs_url(&server.address), "submit-2", Some(&doomed)).await;
    assert_eq!(made.0, 201, "{}", made.3);
    let doomed_id = serde_json::from_str::<Value>(&made.3).expect("run")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let cancel_url = |address: &str| format!("{address}/api/v1/runs/{doomed_id}/cancel");
    let cancelled = post_keyed(&http, cancel_url(&server.address), "cancel-1", None).await;
    assert_eq!(cancelled.0, 200, "{}", cancelled.3);
    server.kill();

    let server = Server::start(&data_dir, "second.log");
    wait_ready(&http, &server.address).await;

    let again = post_keyed(&http, runs_url(&server.address), "submit-1", Some(&spec)).await;
    assert_eq!(
        (again.0, again.1),
        (201, true),
        "the first answer, replayed after the restart: {}",
        again.3
    );
    assert_eq!(
        (&again.2, &again.3),
        (&submitted.2, &submitted.3),
        "same Location and body, byte for byte"
    );
    assert_eq!(
        runs_named(&http, &server.address, "keyed-live").await,
        1,
        "the retry made no second run"
    );

    let retried = post_keyed(&http, cancel_url(&server.address), "cancel-1", None).await;
    assert_eq!(
        (retried.0, retried.1, &retried.3),
        (200, true, &cancelled.3),
        "the cancel's first answer, replayed"
    );

    // The same key with another body is still refused after the restart.
    let mut other = spec.clone();
    other["epochs"] = json!(7);
    let conflict = post_keyed(&http, runs_url(&server.address), "submit-1", Some(&other)).await;
    assert_eq!(conflict.0, 409, "{}", conflict.3);
    let problem: Value = serde_json::from_str(&conflict.3).expect("problem+json");
    assert_eq!(problem["code"], "idempotency_key_reused", "{problem}");
    assert_eq!(runs_named(&http, &server.address, "keyed-live").await, 1);

    // The live run went on after the restart; cancel it so the server stops quickly.
    let live_id = serde_json::from_str::<Value>(&submitted.3).expect("run")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let status = http
        .post(format!("{}/api/v1/runs/{live_id}/cancel", server.address))
        .send()
        .await
        .expect("answered")
        .status();
    assert!(status == 200 || status == 202, "cancel answered {status}");
}
