//! `GET /api/v1/openapi.json`: the document is true to the server. Every documented
//! operation is answered by its handler (not by the fallback) with a status, media type
//! and error code the document lists for it, every query parameter it names is one the
//! handler takes, and every route the server serves is documented.

use std::collections::BTreeSet;

use reqwest::Method;
use runyard::auth::{create_token, Role};
use serde_json::Value;

use crate::helpers::{quick_spec, spawn_app, spawn_app_with, TestApp};

/// A syntactically valid run id that names no run.
const UNKNOWN_RUN: &str = "00000000-0000-7000-8000-000000000000";

/// One documented operation.
struct Operation {
    method: Method,
    /// The path template, e.g. `/api/v1/runs/{id}`.
    path: String,
    spec: Value,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The path with `{id}` set to `run` and `{name}` to an artifact name.
    fn url(&self, app: &TestApp, run: &str) -> String {
        let path = self
            .path
            .replace("{id}", run)
            .replace("{name}", "final.safetensors");
        format!("{}{path}", app.address)
    }

    fn needs_token(&self) -> bool {
        self.spec["security"]
            .as_array()
            .expect("security")
            .iter()
            .any(|requirement| requirement.get("bearer").is_some())
    }
}

/// How the server answered a request.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The media type, without parameters; empty when there is none.
    media: String,
    /// The problem's `code` and `detail`, for a problem.
    problem: Option<(String, String)>,
}

async fn fetch_doc(app: &TestApp) -> Value {
    let response = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(media_type(&response), "application/json");
    response.json().await.expect("the document is JSON")
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, spec) in item.as_object().expect("path item") {
            out.push(Operation {
                method: method.to_uppercase().parse().expect("method"),
                path: path.clone(),
                spec: spec.clone(),
            });
        }
    }
    out
}

fn media_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Sends `operation` for `run` with `query` (and a run spec when it takes a body). A
/// success's body is not read: a stream's never ends, or only with its run.
async fn send(
    app: &TestApp,
    operation: &Operation,
    run: &str,
    query: &[(&str, String)],
    token: Option<&str>,
) -> Answer {
    let mut request = app
        .client
        .request(operation.method.clone(), operation.url(app, run))
        .query(query);
    if operation.spec["requestBody"].is_object() {
        request = request.json(&quick_spec("openapi"));
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    let media = media_type(&response);
    let problem = if media == "application/problem+json" {
        let body: Value = response.json().await.expect("problem JSON");
        let text = |field: &str| body[field].as_str().expect(field).to_string();
        Some((text("code"), text("detail")))
    } else {
        None
    };
    Answer {
        status,
        media,
        problem,
    }
}

/// Asserts the answer came from the operation's handler and is one it documents.
fn assert_documented(operation: &Operation, answer: &Answer) {
    let name = operation.name();
    let code = answer.problem.as_ref().map(|(code, _)| code.as_str());
    assert!(
        answer.status != 405 && code != Some("route_not_found"),
        "{name} was answered by the fallback: {answer:?}"
    );
    let responses = &operation.spec["responses"];
    let documented = &responses[answer.status.to_string()];
    assert!(
        documented.is_object(),
        "{name} answered {answer:?}; it documents {:?}",
        responses.as_object().map(|r| r.keys().collect::<Vec<_>>())
    );
    if let Some(content) = documented["content"].as_object() {
        assert!(
            content.contains_key(&answer.media),
            "{name} answered {answer:?}; {} documents {:?}",
            answer.status,
            content.keys().collect::<Vec<_>>()
        );
    }
    if let Some(code) = code {
        let description = documented["description"].as_str().expect("description");
        assert!(
            description.contains(&format!("`{code}`")),
            "{name} answered `{code}`, which its {} does not name: {description}",
            answer.status
        );
    }
}

/// A value of the parameter's documented type.
fn sample(doc: &Value, parameter: &Value) -> String {
    if let Some(example) = parameter["example"].as_str() {
        return example.to_string();
    }
    let mut schema = &parameter["schema"];
    if schema["type"] == "array" {
        schema = &schema["items"];
    }
    if let Some(target) = schema["$ref"].as_str() {
        schema = doc
            .pointer(target.trim_start_matches('#'))
            .expect("the reference resolves");
    }
    match (&schema["enum"], &schema["type"]) {
        (Value::Array(values), _) => values[0].as_str().expect("a string enum").to_string(),
        (_, Value::String(t)) if t == "integer" => "1".to_string(),
        _ => "x".to_string(),
    }
}

fn assert_refs_resolve(doc: &Value) {
    fn walk<'a>(value: &'a Value, refs: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    refs.push(target);
                }
                map.values().for_each(|v| walk(v, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(doc, &mut refs);
    assert!(!refs.is_empty());
    for target in refs {
        let resolved = target
            .strip_prefix("#/components/")
            .and_then(|_| doc.pointer(&target[1..]));
        assert!(resolved.is_some(), "`{target}` does not resolve");
    }
}

#[actix_web::test]
async fn every_documented_operation_is_answered_by_its_handler_as_documented() {
    let app = spawn_app().await;
    let doc = fetch_doc(&app).await;
    let version = doc["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1."), "{version}");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_refs_resolve(&doc);

    let operations = operations(&doc);
    let documented: BTreeSet<(String, String)> = operations
        .iter()
        .map(|op| (op.method.to_string(), op.path.clone()))
        .collect();
    let served: BTreeSet<(String, String)> = runyard::http::ROUTES
        .iter()
        .map(|route| (route.method.to_string(), route.path.to_string()))
        .collect();
    assert_eq!(
        documented, served,
        "documented (left) and served (right) routes"
    );

    let run = app.submit_ok(&quick_spec("openapi")).await;
    for operation in &operations {
        let runs: &[&str] = if operation.path.contains("{id}") {
            &[&run, UNKNOWN_RUN]
        } else {
            &[""]
        };
        for run in runs {
            let answer = send(&app, operation, run, &[], None).await;
            assert_documented(operation, &answer);
        }
        // Each documented query parameter is one the handler takes: a value of the
        // documented type may be refused, the name never is.
        let parameters = operation.spec["parameters"]
            .as_array()
            .into_iter()
            .flatten();
        for parameter in parameters.filter(|p| p["in"] == "query") {
            let name = parameter["name"].as_str().expect("name");
            let query = [(name, sample(&doc, parameter))];
            let answer = send(&app, operation, &run, &query, None).await;
            assert_documented(operation, &answer);
            if let Some((_, detail)) = &answer.problem {
                assert!(
                    !detail.contains("unknown") && !detail.contains("not a parameter"),
                    "{} refuses the documented parameter `{name}`: {detail}",
                    operation.name()
                );
            }
        }
    }
}

#[actix_web::test]
async fn with_tokens_configured_each_operation_answers_its_documented_auth_statuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens.toml");
    let reader = create_token(&file, "reader", Role::Read).expect("token");
    let app = spawn_app_with(|config| config.auth.tokens_file = Some(file.clone())).await;
    let response = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.address))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.expect("JSON");

    for operation in operations(&doc) {
        let anonymous = send(&app, &operation, UNKNOWN_RUN, &[], None).await;
        assert_documented(&operation, &anonymous);
        assert_eq!(
            anonymous.status == 401,
            operation.needs_token(),
            "{}: {anonymous:?}",
            operation.name()
        );
        let read = send(&app, &operation, UNKNOWN_RUN, &[], Some(&reader)).await;
        assert_documented(&operation, &read);
        let needs_write = operation.spec["security"][1]["bearer"][0] == "write";
        assert_eq!(
            read.status == 403,
            needs_write,
            "{}: {read:?}",
            operation.name()
        );
    }
}
