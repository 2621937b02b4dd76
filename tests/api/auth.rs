//! Bearer tokens: `runyard token create` stores only a hash; with tokens configured
//! every `/api` route needs one of a large enough role, health checks stay open; with
//! none the server listens on loopback only.

use std::process::Command;

use runyard::auth::{create_token, Role};
use serde_json::Value;

use crate::helpers::{assert_problem, long_spec, quick_spec, spawn_app_with, TestApp};

struct Tokens {
    read: String,
    write: String,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn app_with_tokens() -> (TestApp, Tokens) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens.toml");
    let tokens = Tokens {
        read: create_token(&file, "reader", Role::Read).expect("token"),
        write: create_token(&file, "writer", Role::Write).expect("token"),
        admin: create_token(&file, "operator", Role::Admin).expect("token"),
        _dir: dir,
    };
    let app = spawn_app_with(|config| config.auth.tokens_file = Some(file.clone())).await;
    (app, tokens)
}

#[actix_web::test]
async fn every_api_route_needs_a_token_of_a_large_enough_role() {
    let (app, tokens) = app_with_tokens().await;
    let url = |path: &str| format!("{}{path}", app.address);

    // Health checks stay open (spawn_app_with already waited on /readyz).
    let health = app
        .client
        .get(url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    // No token, a wrong one, a malformed header: 401 with a challenge.
    let none = app
        .client
        .get(url("/api/v1/runs"))
        .send()
        .await
        .expect("list");
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_problem(none, 401, "unauthorized").await;
    let wrong = app
        .client
        .get(url("/api/v1/runs"))
        .bearer_auth("ry_0000")
        .send()
        .await
        .expect("list");
    assert_problem(wrong, 401, "unauthorized").await;
    let basic = app
        .client
        .get(url("/api/v1/runs"))
        .header("authorization", format!("Basic {}", tokens.read))
        .send()
        .await
        .expect("list");
    assert_problem(basic, 401, "unauthorized").await;
    // Unknown routes under /api are not revealed without a token.
    let hidden = app
        .client
        .get(url("/api/v1/nothing"))
        .send()
        .await
        .expect("404?");
    assert_problem(hidden, 401, "unauthorized").await;

    // read: reads yes, writes no (403 naming the role needed, not the token).
    let list = app
        .client
        .get(url("/api/v1/runs"))
        .bearer_auth(&tokens.read)
        .send()
        .await
        .expect("list");
    assert_eq!(list.status(), 200);
    let refused = app
        .client
        .post(url("/api/v1/runs"))
        .bearer_auth(&tokens.read)
        .json(&quick_spec("auth"))
        .send()
        .await
        .expect("submit");
    let detail = assert_problem(refused, 403, "forbidden").await;
    assert!(
        detail.contains("reader") && detail.contains("write"),
        "{detail}"
    );
    assert!(!detail.contains(&tokens.read), "the token is never echoed");

    // write and admin: writes too.
    let created = app
        .client
        .post(url("/api/v1/runs"))
        .bearer_auth(&tokens.write)
        .json(&long_spec("auth-long"))
        .send()
        .await
        .expect("submit");
    assert_eq!(created.status(), 201);
    let run: Value = created.json().await.expect("run");
    let id = run["id"].as_str().expect("id");
    let cancelled = app
        .client
        .post(url(&format!("/api/v1/runs/{id}/cancel")))
        .bearer_auth(&tokens.admin)
        .send()
        .await
        .expect("cancel");
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
}

#[test]
fn token_create_prints_the_token_once_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("conf/tokens.toml");
    let create = |name: &str, role: &str| {
        Command::new(env!("CARGO_BIN_EXE_runyard"))
            .args([
                "token",
                "create",
                "--name",
                name,
                "--role",
                role,
                "--tokens-file",
            ])
            .arg(&file)
            .output()
            .expect("binary runs")
    };
    let out = create("ci", "write");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let token = token.trim();
    assert!(token.starts_with("ry_"), "{token}");
    let stored = std::fs::read_to_string(&file).expect("tokens file");
    assert!(!stored.contains(token));
    assert!(stored.contains("name = \"ci\"") && stored.contains("role = \"write\""));

    let again = create("ci", "read");
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("exists already"), "{stderr}");
    let bad_role = create("other", "root");
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("root"));
}

#[actix_web::test]
async fn without_tokens_the_server_listens_on_loopback_only() {
    let app = spawn_app_with(|config| {
        config.server.bind = "0.0.0.0:0".parse().expect("address");
    })
    .await;
    assert!(
        app.address.starts_with("http://127.0.0.1:"),
        "{} is not loopback",
        app.address
    );
}

#[test]
fn a_bad_tokens_file_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, "[[tokens]]\nname = 1\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tokens-file")
        .arg(&file)
        .output()
        .expect("binary runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("tokens.toml"), "{stderr}");
}
