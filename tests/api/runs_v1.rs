//! REST v1: specs as YAML and TOML, labels, listing with filters and cursors, the
//! body limit, `on_duplicate`, `Idempotency-Key`, deleting a run's files, and the
//! error table.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::{
    answer_parts, assert_problem, long_spec, quick_spec, spawn_app, spawn_app_with, TestApp,
};

/// `POST /api/v1/runs` with a raw body of the given content type.
async fn post_as(app: &TestApp, path: &str, content_type: &str, body: &str) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.address))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("answered")
}

/// Cancels every run that has not ended and waits until each has stopped, so no
/// training thread is left running when the test binary exits.
async fn cancel_all(app: &TestApp) {
    let (_, runs) = app.get_json("/api/v1/runs").await;
    for run in runs.as_array().expect("runs") {
        let id = run["id"].as_str().expect("id");
        if ["completed", "failed", "cancelled"].contains(&run["state"].as_str().unwrap_or("")) {
            continue;
        }
        app.post(&format!("/api/v1/runs/{id}/cancel")).await;
        app.wait_for(id, |r| {
            ["completed", "failed", "cancelled"].contains(&r["state"].as_str().unwrap_or(""))
                && r["slot"].is_null()
        })
        .await;
    }
}

/// The quick spec of the helpers, written as YAML.
const QUICK_YAML: &str = "\
# the helpers' quick spec
name: same
model: {kind: mlp, hidden: [32]}
data:
  kind: synthetic
  samples: 2000
  features: 16
  classes: 3
  seed: 7
optimizer: {kind: adam, lr: 0.01}
epochs: 3
batch_size: 32
seed: 1
";

/// The quick spec of the helpers, written as TOML.
const QUICK_TOML: &str = r#"
name = "same"
epochs = 3
batch_size = 32
seed = 1

[model]
kind = "mlp"
hidden = [32]

[data]
kind = "synthetic"
samples = 2000
features = 16
classes = 3
seed = 7

[optimizer]
kind = "adam"
lr = 0.01
"#;

#[actix_web::test]
async fn yaml_and_toml_specs_are_the_same_run_as_json() {
    let app = spawn_app().await;
    let response = post_as(&app, "/api/v1/runs", "application/yaml", QUICK_YAML).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("run");
    let id = created["id"].as_str().expect("id");
    assert_eq!(created["spec"]["model"]["hidden"], json!([32]));

    // The same spec as JSON, TOML and the other YAML types: one run.
    let mut json_spec = quick_spec("same");
    json_spec["model"]["activation"] = json!("relu");
    let response = app.submit(&json_spec).await;
    assert_eq!(response.status(), 200);
    let again: Value = response.json().await.expect("run");
    assert_eq!(again["id"], id);
    for content_type in [
        "application/toml",
        "application/x-yaml",
        "text/yaml; charset=utf-8",
    ] {
        let body = if content_type.ends_with("toml") {
            QUICK_TOML
        } else {
            QUICK_YAML
        };
        let response = post_as(&app, "/api/v1/runs", content_type, body).await;
        assert_eq!(response.status(), 200, "{content_type}");
        let again: Value = response.json().await.expect("run");
        assert_eq!(again["id"], id, "{content_type}");
        assert_eq!(again["digest"], created["digest"]);
    }
    cancel_all(&app).await;
}

#[actix_web::test]
async fn the_digits_yaml_example_submits_as_the_json_one() {
    let app = spawn_app().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("data/datasets/digits.csv.gz"),
        app.datasets().join("digits.csv.gz"),
    )
    .expect("digits.csv.gz present: run scripts/fetch-digits.sh");
    let yaml = std::fs::read_to_string(root.join("examples/digits.yaml")).expect("example");
    let response = post_as(&app, "/api/v1/runs", "application/yaml", &yaml).await;
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.expect("run");
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/digits.json")).expect("example"),
    )
    .expect("JSON example");
    let response = app.submit(&example).await;
    assert_eq!(response.status(), 200, "the same spec as JSON");
    let same: Value = response.json().await.expect("run");
    assert_eq!(same["id"], run["id"]);
    cancel_all(&app).await;
}

#[actix_web::test]
async fn malformed_and_invalid_yaml_and_toml_name_the_position_and_the_field() {
    let app = spawn_app().await;
    let runs = "/api/v1/runs";

    let broken = "name: x\nepochs: [3\nmodel: 1\n";
    let detail = assert_problem(
        post_as(&app, runs, "application/yaml", broken).await,
        400,
        "malformed_body",
    )
    .await;
    assert!(
        detail.contains("YAML") && detail.contains("line 3"),
        "{detail}"
    );

    let detail = assert_problem(
        post_as(&app, runs, "application/toml", "name = x\n").await,
        400,
        "malformed_body",
    )
    .await;
    assert!(
        detail.contains("TOML") && detail.contains("line 1 column 8"),
        "{detail}"
    );

    let wrong_width = QUICK_YAML.replace("hidden: [32]", "hidden: [wide]");
    let detail = assert_problem(
        post_as(&app, runs, "application/yaml", &wrong_width).await,
        422,
        "invalid_spec",
    )
    .await;
    assert!(detail.contains("model.hidden[0]"), "{detail}");

    let unknown = format!("{QUICK_YAML}depth: 3\n");
    let detail = assert_problem(
        post_as(&app, runs, "application/yaml", &unknown).await,
        422,
        "invalid_spec",
    )
    .await;
    assert!(detail.contains("depth"), "{detail}");

    let zero = QUICK_TOML.replace("epochs = 3", "epochs = 0");
    let detail = assert_problem(
        post_as(&app, runs, "application/toml", &zero).await,
        422,
        "invalid_spec",
    )
    .await;
    assert!(detail.starts_with("epochs:"), "{detail}");

    let detail = assert_problem(
        post_as(&app, runs, "text/plain", QUICK_YAML).await,
        415,
        "unsupported_media_type",
    )
    .await;
    for accepted in ["application/json", "application/yaml", "application/toml"] {
        assert!(detail.contains(accepted), "{detail}");
    }

    let (_, ready) = app.get_json("/readyz").await;
    assert_eq!(ready["last_seq"], 0, "no event was written");
}

#[actix_web::test]
async fn labels_are_shown_checked_and_not_part_of_the_digest() {
    let app = spawn_app().await;
    let mut spec = quick_spec("labelled");
    spec["labels"] = json!({"team": "vision", "exp/arm": "b"});
    let response = app.submit(&spec).await;
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.expect("run");
    assert_eq!(run["labels"], json!({"exp/arm": "b", "team": "vision"}));
    assert_eq!(run["spec"]["labels"]["team"], "vision");

    // Other labels, same training: the existing run, with its own labels.
    spec["labels"] = json!({"team": "speech"});
    let response = app.submit(&spec).await;
    assert_eq!(response.status(), 200);
    let same: Value = response.json().await.expect("run");
    assert_eq!(same["id"], run["id"]);
    assert_eq!(same["labels"]["team"], "vision");
    let mut unlabelled = quick_spec("labelled");
    unlabelled["seed"] = json!(1);
    let response = app.submit(&unlabelled).await;
    assert_eq!(response.status(), 200);

    spec["labels"] = json!({"bad key": "x"});
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.starts_with("labels.bad key:"), "{detail}");
    spec["labels"] = json!({"team": 3});
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.contains("labels"), "{detail}");
    spec["labels"] = json!({"note": "x".repeat(300)});
    let detail = assert_problem(app.submit(&spec).await, 422, "invalid_spec").await;
    assert!(detail.starts_with("labels.note:"), "{detail}");
    cancel_all(&app).await;
}

#[actix_web::test]
async fn a_runs_events_filter_by_type_and_page_by_what_they_answer() {
    let app = spawn_app().await;
    let id = app.submit_ok(&quick_spec("typed-events")).await;
    let run = app.wait_ended(&id).await;
    assert_eq!(run["state"], "completed", "{run}");
    let all = app.events(&id).await;
    let of = |kinds: &[&str]| -> Vec<Value> {
        all.iter()
            .filter(|e| kinds.contains(&e["type"].as_str().unwrap_or_default()))
            .cloned()
            .collect()
    };
    let epochs = of(&["EpochCompleted"]);
    assert_eq!(epochs.len(), 3, "{all:?}");
    let path = format!("/api/v1/runs/{id}/events");
    let (status, body) = app.get_json(&format!("{path}?type=EpochCompleted")).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!(epochs));
    let (_, body) = app
        .get_json(&format!("{path}?type=RunCompleted&type=EpochCompleted"))
        .await;
    assert_eq!(
        body,
        json!(of(&["EpochCompleted", "RunCompleted"])),
        "in journal order"
    );
    // `limit` counts what is answered; the last one's seq is the next `after`.
    let (_, first) = app
        .get_json(&format!("{path}?type=EpochCompleted&limit=2"))
        .await;
    assert_eq!(first, json!(epochs[..2]));
    let after = first[1]["seq"].as_u64().expect("seq");
    let (_, rest) = app
        .get_json(&format!("{path}?type=EpochCompleted&after={after}"))
        .await;
    assert_eq!(rest, json!(epochs[2..]));
    for (query, named) in [
        ("type=Epoch", "type: `Epoch`"),
        ("after=soon", "after: `soon`"),
        ("kind=RunCompleted", "`kind` is not a parameter"),
    ] {
        let detail = assert_problem(
            app.get(&format!("{path}?{query}")).await,
            400,
            "invalid_query",
        )
        .await;
        assert!(detail.starts_with(named), "{query}: {detail}");
    }
}

/// The names in a list answer, in order.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_string())
        .collect()
}

/// `GET` a list page: its body and the `Link` target of the next page, if any.
async fn page(app: &TestApp, path: &str) -> (Value, Option<String>) {
    let (body, link, _) = counted_page(app, path).await;
    (body, link)
}

/// [`page`], and the page's `X-Total-Count`: every match, whatever the cursor (all of
/// them on a first page with no next).
async fn counted_page(app: &TestApp, path: &str) -> (Value, Option<String>, usize) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200, "{path}");
    let link = response.headers().get("link").map(|l| {
        let l = l.to_str().expect("ascii");
        assert!(l.ends_with(">; rel=\"next\""), "{l}");
        let cursor = response.headers()["x-next-cursor"].to_str().expect("ascii");
        assert!(l.contains(&format!("cursor={cursor}")), "{l}");
        l[1..l.find('>').expect("<...>")].to_string()
    });
    let total: usize = response.headers()["x-total-count"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a count");
    let body: Value = response.json().await.expect("JSON");
    let shown = body.as_array().map_or(0, Vec::len);
    assert!(total >= shown, "{path}: {total} in all, {shown} shown");
    if link.is_none() && !path.contains("cursor=") {
        assert_eq!(total, shown, "{path}: one page holds every match");
    }
    (body, link, total)
}

fn names_of(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Follows `Link: rel="next"` from `first` to the last page; the names in order.
async fn every_page(app: &TestApp, first: &str) -> (Vec<String>, usize) {
    let (mut all, mut pages, mut next) = (Vec::new(), 0, Some(first.to_string()));
    let mut totals = Vec::new();
    while let Some(path) = next {
        let (body, link, total) = counted_page(app, &path).await;
        all.extend(names(&body));
        totals.push(total);
        pages += 1;
        next = link;
    }
    assert!(
        totals.iter().all(|t| *t == all.len()),
        "{first}: X-Total-Count {totals:?} on the pages, {} runs listed",
        all.len()
    );
    (all, pages)
}

#[actix_web::test]
async fn the_list_filters_sorts_and_pages_with_a_cursor() {
    let app = spawn_app_with(|c| c.train.cpu_slots = 1).await;
    let mut blocker = long_spec("blocker");
    blocker["labels"] = json!({"role": "blocker"});
    let blocker = app.submit_ok(&blocker).await;
    app.wait_for(&blocker, |r| r["state"] == "running").await;
    for (name, team) in [
        ("beta-1", "b"),
        ("alpha-1", "a"),
        ("gamma", ""),
        ("alpha-2", "a"),
        ("beta-2", "b"),
    ] {
        let mut spec = quick_spec(name);
        if !team.is_empty() {
            spec["labels"] = json!({"team": team});
        }
        if name == "gamma" {
            // First in the queue, though submitted third.
            spec["priority"] = json!(5);
        }
        app.submit_ok(&spec).await;
    }

    let (all, link) = page(&app, "/api/v1/runs").await;
    assert_eq!(link, None, "no limit, one page");
    assert_eq!(
        names(&all),
        ["beta-2", "alpha-2", "gamma", "alpha-1", "beta-1", "blocker"]
    );
    let (body, _) = page(&app, "/api/v1/runs?name_prefix=alpha").await;
    assert_eq!(names(&body), ["alpha-2", "alpha-1"]);
    let (body, _) = page(&app, "/api/v1/runs?label=team=b").await;
    assert_eq!(names(&body), ["beta-2", "beta-1"]);
    let (body, _) = page(&app, "/api/v1/runs?label=team&sort=created_at").await;
    assert_eq!(names(&body), ["beta-1", "alpha-1", "alpha-2", "beta-2"]);
    let (body, _) = page(&app, "/api/v1/runs?label=team=a&label=role=blocker").await;
    assert_eq!(body, json!([]));
    let (body, _) = page(&app, "/api/v1/runs?state=queued&name_prefix=b").await;
    assert_eq!(names(&body), ["beta-2", "beta-1"]);
    let (body, _) = page(&app, "/api/v1/runs?sort=-name").await;
    assert_eq!(
        names(&body),
        ["gamma", "blocker", "beta-2", "beta-1", "alpha-2", "alpha-1"]
    );

    let (sorted, pages) = every_page(&app, "/api/v1/runs?sort=name&limit=2").await;
    assert_eq!(
        sorted,
        ["alpha-1", "alpha-2", "beta-1", "beta-2", "blocker", "gamma"]
    );
    assert_eq!(pages, 3);
    let (newest_first, pages) = every_page(&app, "/api/v1/runs?limit=4").await;
    assert_eq!(newest_first, names(&all));
    assert_eq!(pages, 2);
    let (queued, _) = every_page(&app, "/api/v1/runs?state=queued&sort=updated_at&limit=1").await;
    assert_eq!(queued.len(), 5);
    // The queue's order: by priority, then as queued; the running blocker after.
    let in_queue = ["gamma", "beta-1", "alpha-1", "alpha-2", "beta-2", "blocker"];
    let (body, _) = page(&app, "/api/v1/runs?sort=queue").await;
    assert_eq!(names(&body), in_queue);
    let positions: Vec<Value> = body.as_array().expect("runs")[..5]
        .iter()
        .map(|r| r["queue_position"].clone())
        .collect();
    assert_eq!(
        positions,
        [json!(1), json!(2), json!(3), json!(4), json!(5)]
    );
    let (paged, pages) = every_page(&app, "/api/v1/runs?sort=queue&limit=2").await;
    assert_eq!((paged, pages), (names_of(&in_queue), 3));
    let (backwards, _) = every_page(&app, "/api/v1/runs?sort=-queue&limit=4").await;
    assert_eq!(
        backwards,
        in_queue
            .iter()
            .rev()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    );

    let (_, link) = page(&app, "/api/v1/runs?sort=name&limit=2").await;
    let cursor = link.expect("a next page");
    let cursor = &cursor[cursor.find("cursor=").expect("cursor") + 7..];
    for (query, named) in [
        ("sort=size", "sort"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        (&*format!("cursor={cursor}"), "sort=name"),
        ("state=sleeping", "state"),
        ("colour=red", "colour"),
    ] {
        let response = app
            .client
            .get(format!("{}/api/v1/runs?{query}", app.address))
            .send()
            .await
            .expect("answered");
        let detail = assert_problem(response, 400, "invalid_query").await;
        assert!(detail.contains(named), "{query}: {detail}");
    }
    cancel_all(&app).await;
}

#[actix_web::test]
async fn the_body_limit_comes_from_the_configuration() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 4096).await;
    // A valid spec padded to just under the limit is taken...
    let spec = serde_json::to_string(&quick_spec("padded")).expect("JSON");
    let padded = format!("{spec}{}", " ".repeat(4096 - spec.len()));
    let response = post_as(&app, "/api/v1/runs", "application/json", &padded).await;
    assert_eq!(response.status(), 201);
    // ...one byte more is not, and the answer names the limit.
    let over = format!("{padded} ");
    let detail = assert_problem(
        post_as(&app, "/api/v1/runs", "application/json", &over).await,
        413,
        "body_too_large",
    )
    .await;
    assert!(
        detail.contains("4096") && detail.contains("server.max_body_bytes"),
        "{detail}"
    );
    let yaml = format!("{QUICK_YAML}{}", "#".repeat(5000));
    assert_problem(
        post_as(&app, "/api/v1/runs", "application/yaml", &yaml).await,
        413,
        "body_too_large",
    )
    .await;
    cancel_all(&app).await;
}

/// `POST /api/v1/runs?QUERY` with a JSON spec.
async fn submit_with(app: &TestApp, query: &str, spec: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/runs?{query}", app.address))
        .json(spec)
        .send()
        .await
        .expect("answered")
}

#[actix_web::test]
async fn on_duplicate_returns_the_existing_run_reruns_or_rejects() {
    let app = spawn_app_with(|c| c.train.cpu_slots = 1).await;
    let spec = long_spec("again");
    let first = app.submit_ok(&spec).await;

    let detail = assert_problem(
        submit_with(&app, "on_duplicate=reject", &spec).await,
        409,
        "duplicate",
    )
    .await;
    assert!(detail.contains(&first), "{detail}");

    let response = submit_with(&app, "on_duplicate=rerun", &spec).await;
    assert_eq!(response.status(), 201);
    let rerun: Value = response.json().await.expect("run");
    let rerun_id = rerun["id"].as_str().expect("id").to_string();
    assert_ne!(rerun_id, first);
    assert_eq!(rerun["digest"], app.run(&first).await["digest"]);

    // The newest run of a digest is the one a duplicate finds.
    for query in ["", "on_duplicate=return_existing", "on_duplicate="] {
        let response = submit_with(&app, query, &spec).await;
        assert_eq!(response.status(), 200, "{query}");
        let same: Value = response.json().await.expect("run");
        assert_eq!(same["id"], rerun_id.as_str(), "{query}");
    }
    let detail = assert_problem(
        submit_with(&app, "on_duplicate=reject", &spec).await,
        409,
        "duplicate",
    )
    .await;
    assert!(detail.contains(&rerun_id), "{detail}");

    let detail = assert_problem(
        submit_with(&app, "on_duplicate=maybe", &spec).await,
        400,
        "invalid_query",
    )
    .await;
    assert!(detail.contains("on_duplicate"), "{detail}");
    let detail = assert_problem(
        submit_with(&app, "colour=red", &spec).await,
        400,
        "invalid_query",
    )
    .await;
    assert!(detail.contains("colour"), "{detail}");

    let (_, list) = app.get_json("/api/v1/runs").await;
    assert_eq!(list.as_array().expect("runs").len(), 2);
    cancel_all(&app).await;
}

/// A keyed `POST` to `path` of `app`.
async fn post_keyed(
    app: &TestApp,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let url = format!("{}{path}", app.address);
    crate::helpers::post_keyed(&app.client, url, key, body).await
}

#[actix_web::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_request() {
    let app = spawn_app_with(|c| c.train.cpu_slots = 1).await;
    let blocker = app.submit_ok(&long_spec("blocker")).await;
    app.wait_for(&blocker, |r| r["state"] == "running").await;

    let spec = quick_spec("keyed");
    let first = answer_parts(post_keyed(&app, "/api/v1/runs", "key-1", Some(&spec)).await).await;
    assert_eq!((first.0, first.1), (201, false));
    let again = answer_parts(post_keyed(&app, "/api/v1/runs", "key-1", Some(&spec)).await).await;
    assert_eq!(
        (again.0, again.1),
        (201, true),
        "the first answer, replayed"
    );
    assert_eq!((&again.2, &again.3), (&first.2, &first.3));
    let run: Value = serde_json::from_str(&first.3).expect("run");
    let id = run["id"].as_str().expect("id").to_string();
    // Without the key the same spec is a duplicate, answered 200.
    assert_eq!(app.submit(&spec).await.status(), 200);

    let mut other = quick_spec("keyed");
    other["epochs"] = json!(4);
    let detail = assert_problem(
        post_keyed(&app, "/api/v1/runs", "key-1", Some(&other)).await,
        409,
        "idempotency_key_reused",
    )
    .await;
    assert!(detail.contains("key-1"), "{detail}");
    let cancel = format!("/api/v1/runs/{id}/cancel");
    assert_problem(
        post_keyed(&app, &cancel, "key-1", None).await,
        409,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(app.run(&id).await["state"], "queued", "nothing was done");

    // A cancel retried with its key gets its first answer, not a conflict.
    let cancelled = answer_parts(post_keyed(&app, &cancel, "cancel-1", None).await).await;
    assert_eq!(cancelled.0, 200);
    let retried = answer_parts(post_keyed(&app, &cancel, "cancel-1", None).await).await;
    assert_eq!(
        (retried.0, retried.1, &retried.3),
        (200, true, &cancelled.3)
    );
    assert_problem(app.post(&cancel).await, 409, "conflict").await;
    // A refusal is an answer too.
    let refused = answer_parts(post_keyed(&app, &cancel, "cancel-2", None).await).await;
    let replayed = answer_parts(post_keyed(&app, &cancel, "cancel-2", None).await).await;
    assert_eq!((refused.0, replayed.0, replayed.1), (409, 409, true));

    for bad in ["", &"k".repeat(300), "with space"] {
        assert_problem(
            post_keyed(&app, "/api/v1/runs", bad, Some(&spec)).await,
            400,
            "invalid_header",
        )
        .await;
    }

    // Two retries at once: one run, one answer.
    let rerun = quick_spec("raced");
    let path = "/api/v1/runs?on_duplicate=rerun";
    let (a, b) = tokio::join!(
        post_keyed(&app, path, "race", Some(&rerun)),
        post_keyed(&app, path, "race", Some(&rerun))
    );
    let (a, b) = (answer_parts(a).await, answer_parts(b).await);
    assert_eq!((a.0, b.0), (201, 201));
    assert_eq!(a.3, b.3);
    assert!(a.1 != b.1, "one of them replayed");
    let (_, raced) = app.get_json("/api/v1/runs?name_prefix=raced").await;
    assert_eq!(raced.as_array().expect("runs").len(), 1);
    cancel_all(&app).await;
}

/// `DELETE` a path.
async fn delete(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .delete(format!("{}{path}", app.address))
        .send()
        .await
        .expect("answered")
}

#[actix_web::test]
async fn deleting_an_ended_runs_files_keeps_its_history() {
    let app = spawn_app_with(|c| c.train.cpu_slots = 1).await;
    let id = app.submit_ok(&quick_spec("to-clean")).await;
    let live = app.submit_ok(&long_spec("live")).await;
    let path = format!("/api/v1/runs/{id}/artifacts");
    let done = app
        .wait_for(&id, |r| r["state"] == "completed" && r["slot"].is_null())
        .await;
    assert!(!done["checkpoints_kept"]
        .as_array()
        .expect("kept")
        .is_empty());
    let final_weights = format!("{path}/final.safetensors");
    let download = app
        .client
        .get(format!("{}{final_weights}", app.address))
        .send()
        .await
        .expect("answered");
    assert_eq!(download.status(), 200);
    let run_dir = app
        .datasets()
        .parent()
        .expect("data dir")
        .join("runs")
        .join(&id);
    assert!(run_dir.exists());

    app.wait_for(&live, |r| r["state"] == "running").await;
    let detail = assert_problem(
        delete(&app, &format!("/api/v1/runs/{live}/artifacts")).await,
        409,
        "conflict",
    )
    .await;
    assert!(detail.contains("running"), "{detail}");

    let response = delete(&app, &path).await;
    assert_eq!(response.status(), 200);
    let run: Value = response.json().await.expect("run");
    assert!(run["files_deleted"]["files"].as_u64().expect("files") >= 2);
    assert!(run["files_deleted"]["bytes"].as_u64().expect("bytes") > 0);
    assert_eq!(run["checkpoints_kept"], json!([]));
    assert_eq!(run["state"], "completed");
    assert!(!run_dir.exists());
    let detail = assert_problem(
        app.client
            .get(format!("{}{final_weights}", app.address))
            .send()
            .await
            .expect("answered"),
        410,
        "artifact_deleted",
    )
    .await;
    assert!(detail.contains(&id), "{detail}");

    // Again: the same run, no second event; the history is all there.
    assert_eq!(delete(&app, &path).await.status(), 200);
    let events = app.events(&id).await;
    let deleted: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "ArtifactsDeleted")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["data"]["files"], run["files_deleted"]["files"]);
    assert_eq!(events[0]["type"], "RunSubmitted");
    assert!(events.iter().any(|e| e["type"] == "ArtifactSaved"));

    assert_problem(
        delete(
            &app,
            "/api/v1/runs/0190f2a4-0000-7000-8000-000000000000/artifacts",
        )
        .await,
        404,
        "run_not_found",
    )
    .await;
    cancel_all(&app).await;
}

/// A command run that exits at once.
fn command_spec(name: &str) -> Value {
    json!({"name": name, "kind": "command", "argv": ["true"]})
}

#[actix_web::test]
async fn command_runs_are_refused_unless_the_server_allows_them_and_need_an_admin_token() {
    // Off by default: a clear 403 saying how to turn them on, and nothing is made.
    let app = spawn_app().await;
    let detail = assert_problem(
        app.submit(&command_spec("refused")).await,
        403,
        "commands_disabled",
    )
    .await;
    assert!(detail.contains("--allow-commands"), "{detail}");
    assert!(detail.contains("runs.allow_commands"), "{detail}");
    let (_, runs) = app.get_json("/api/v1/runs?name_prefix=refused").await;
    assert_eq!(runs, json!([]));
    // A command spec is checked like any other first: what is wrong with it is named.
    let mut bad = command_spec("bad");
    bad["epochs"] = json!(3);
    let detail = assert_problem(app.submit(&bad).await, 422, "invalid_spec").await;
    assert!(detail.contains("epochs"), "{detail}");

    // Allowed, with tokens: a write token is not enough, an admin one is.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens.toml");
    let write =
        runyard::auth::create_token(&file, "ci", runyard::auth::Role::Write).expect("token");
    let admin =
        runyard::auth::create_token(&file, "ops", runyard::auth::Role::Admin).expect("token");
    let app = spawn_app_with(|config| {
        config.auth.tokens_file = Some(file.clone());
        config.runs.allow_commands = true;
    })
    .await;
    let submit = |token: String, spec: Value| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}/api/v1/runs", app.address))
                .bearer_auth(token)
                .json(&spec)
                .send()
                .await
                .expect("answered")
        }
    };
    let detail = assert_problem(
        submit(write.clone(), command_spec("needs-admin")).await,
        403,
        "forbidden",
    )
    .await;
    assert!(detail.contains("admin"), "{detail}");
    // The same token may still submit training runs.
    let trained = submit(write, quick_spec("trained")).await;
    assert_eq!(trained.status(), 201);
    assert_eq!(
        submit(admin.clone(), command_spec("allowed"))
            .await
            .status(),
        201
    );
    // No training outlives the test.
    let trained: Value = trained.json().await.expect("run");
    let id = trained["id"].as_str().expect("id");
    let cancelled = app
        .client
        .post(format!("{}/api/v1/runs/{id}/cancel", app.address))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("answered");
    assert!(cancelled.status().is_success() || cancelled.status() == 409);
}
