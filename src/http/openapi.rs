//! The OpenAPI 3.1 document of the API, `GET /api/v1/openapi.json`: generated from the
//! handlers' `#[utoipa::path]` attributes and the `ToSchema` types they answer, built
//! once, and served as it is.
//!
//! What every operation shares is added here, from the code that decides it, instead of
//! being written into each attribute: the bearer security a route needs and the `401`
//! and `403` that come with it ([`auth::required_role`]), the `Retry-After` of every
//! `503` and the `WWW-Authenticate` of every `401` ([`ApiError`](super::ApiError)), and
//! the codes a problem can carry ([`ErrorCode::ALL`]).
//!
//! Tests hold the document to the server: the routes it describes are exactly
//! [`ROUTES`](super::ROUTES), every `$ref` resolves, and each error response names codes
//! of its status.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::http::Method;
use actix_web::HttpResponse;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{Object, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

pub mod checks;

use super::auth::{self, Role};
use super::error::{Problem, PROBLEM};
use super::{
    dashboard, health, logs, metrics, prometheus, runs, slots, stream, sweeps, worker, ErrorCode,
};
use crate::domain::EventKind;

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "runyard",
        description = "A crash-safe orchestrator for machine-learning training runs: submit \
            runs, watch them over server-sent events, pause, resume, cancel, download their \
            files.\n\n\
            Errors are `application/problem+json` (`Problem`): `type`, `title`, `status`, \
            `detail` and a `code` from the README's error table.\n\n\
            Authentication: with tokens configured (`auth.tokens_file`), every `/api` route \
            needs `Authorization: Bearer TOKEN` of a large enough role (`read` for `GET`, \
            `write` for everything else; `admin` may do what `write` may, `write` what `read` \
            may). With none, the server listens on loopback only and needs no token. \
            `/healthz` and `/readyz` are always open, and so are the dashboard page `/` and \
            its assets, which hold no data. The four stream routes also take the token as \
            the query parameter `access_token`, for an `EventSource`, which cannot send \
            headers."
    ),
    paths(
        dashboard::index,
        dashboard::script,
        dashboard::style,
        health::healthz,
        health::readyz,
        document,
        runs::submit::submit,
        runs::list::list,
        runs::view::get,
        runs::view::events,
        worker::facts,
        worker::register,
        metrics::run_metrics,
        runs::control::cancel,
        runs::control::pause,
        runs::control::resume,
        runs::artifacts::artifact,
        runs::artifacts::delete_artifacts,
        logs::tail,
        logs::stream,
        stream::run_stream,
        stream::all_stream,
        sweeps::submit,
        sweeps::list,
        sweeps::get,
        sweeps::cancel,
        sweeps::pause,
        sweeps::resume,
        stream::sweep_stream,
        slots::list,
        slots::audit,
        prometheus::exposition,
    ),
    components(schemas(
        Problem,
        runs::submit::OnDuplicate,
        logs::LogStream,
        crate::domain::RunState,
        crate::store::metrics::Metric,
    )),
    modifiers(&Shared),
    tags(
        (name = "runs", description = "Submitting, reading and steering runs; their files."),
        (name = "streams", description = "Server-sent events of runs and sweeps."),
        (name = "sweeps", description = "Hyperparameter sweeps: trials (runs) over a search space, grid, random or ASHA."),
        (name = "slots", description = "The slot ledger."),
        (name = "health", description = "Liveness and readiness; always open."),
        (name = "meta", description = "This document."),
        (name = "dashboard", description = "The dashboard page and its assets; always open."),
        (name = "operations", description = "Prometheus metrics."),
    )
)]
struct ApiDoc;

/// The document, built once.
static DOCUMENT: LazyLock<Document> = LazyLock::new(ApiDoc::openapi);

/// The document as served: the derived one with [`checks`] written in.
static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    // A tree of strings and maps always serializes.
    let mut doc = serde_json::to_value(&*DOCUMENT).unwrap_or_default();
    checks::state(&mut doc);
    doc.to_string()
});

/// Builds the document now rather than on the first request.
pub fn build() {
    LazyLock::force(&DOCUMENT_JSON);
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    summary = "This document",
    description = "The OpenAPI 3.1 document of this API, generated from the server's code.",
    responses(
        (
            status = 200,
            description = "The document.",
            content_type = "application/json",
            body = serde_json::Value
        )
    )
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT_JSON.as_str())
}

/// Adds what every operation shares (see the module docs).
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token made by `runyard token create`; needed only when the server \
                         has tokens configured.",
                    ))
                    .build(),
            ),
        );
        enumerate(
            components.schemas.get_mut("Problem"),
            "code",
            ErrorCode::ALL.map(ErrorCode::name),
        );
        enumerate(
            components.schemas.get_mut("EventView"),
            "type",
            EventKind::ALL.map(EventKind::name),
        );
        admit_tags(&mut components.schemas);
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in operations_mut(item) {
                secure(operation, auth::required_role(&method, path));
                for (status, response) in operation.responses.responses.iter_mut() {
                    if let RefOr::T(response) = response {
                        add_error_headers(status, response);
                    }
                }
            }
        }
    }
}

/// Every operation of a path, with its method.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|op| (method, op)))
}

/// Lists the values a string property of a component can take.
fn enumerate<const N: usize>(
    schema: Option<&mut RefOr<Schema>>,
    property: &str,
    values: [&str; N],
) {
    let Some(RefOr::T(Schema::Object(object))) = schema else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property) {
        field.enum_values = Some(values.into_iter().map(Into::into).collect());
    }
}

/// Lets the variant structs of an internally tagged enum (`{"kind": "mlp", ...}`) hold
/// the tag. Each is `additionalProperties: false` (serde's `deny_unknown_fields`), so
/// without the tag among its properties no object could match both halves of its
/// variant's `allOf`, and every spec would fail validation.
fn admit_tags(schemas: &mut BTreeMap<String, RefOr<Schema>>) {
    let mut tagged = Vec::new();
    for schema in schemas.values() {
        let RefOr::T(Schema::OneOf(one_of)) = schema else {
            continue;
        };
        for variant in &one_of.items {
            let RefOr::T(Schema::AllOf(all_of)) = variant else {
                continue;
            };
            if let [RefOr::Ref(fields), RefOr::T(Schema::Object(tag))] = all_of.items.as_slice() {
                let component = fields.ref_location.rsplit('/').next().unwrap_or_default();
                for name in tag.properties.keys() {
                    tagged.push((component.to_string(), name.clone()));
                }
            }
        }
    }
    for (component, tag) in tagged {
        if let Some(RefOr::T(Schema::Object(fields))) = schemas.get_mut(&component) {
            fields
                .properties
                .entry(tag)
                .or_insert_with(|| Object::with_type(Type::String).into());
        }
    }
}

/// Sets the security an operation needs: none for an open route; for one that needs
/// `role`, either none (a server without tokens) or a bearer token of that role, which
/// also brings the `401` and `403` of the auth middleware.
fn secure(operation: &mut Operation, role: Option<Role>) {
    let note = match role {
        None => "Open: needs no token.".to_string(),
        Some(role) => format!(
            "Needs role `{}` (or a larger one) when the server has tokens configured.",
            role.name()
        ),
    };
    operation.description = Some(match operation.description.take() {
        Some(description) => format!("{description}\n\n{note}"),
        None => note,
    });
    let mut security = vec![SecurityRequirement::default()];
    if let Some(role) = role {
        security.push(SecurityRequirement::new(BEARER, [role.name()]));
        let responses = &mut operation.responses.responses;
        responses.insert(
            "401".into(),
            problem(format!(
                "`{}`: the server has tokens configured and the request sent none, or one \
                 that is unknown or revoked.",
                ErrorCode::Unauthorized.name()
            )),
        );
        let forbidden = format!(
            "`{}`: the token's role is smaller than `{}`.",
            ErrorCode::Forbidden.name(),
            role.name()
        );
        // An operation's own 403 (e.g. a command run's) is kept, with this one added.
        let description = match responses.get("403") {
            Some(RefOr::T(own)) => format!("{forbidden} {}", own.description),
            _ => forbidden,
        };
        responses.insert("403".into(), problem(description));
    }
    operation.security = Some(security);
}

/// A response with a problem body.
fn problem(description: String) -> RefOr<Response> {
    let mut response = Response::new(description);
    response.content.insert(
        PROBLEM.into(),
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    RefOr::T(response)
}

/// The headers [`ApiError`](super::ApiError) adds to some statuses.
fn add_error_headers(status: &str, response: &mut Response) {
    let (name, value, description) = match status {
        "401" => ("WWW-Authenticate", Type::String, "`Bearer`."),
        "503" => (
            "Retry-After",
            Type::Integer,
            "Seconds to wait before retrying: `1`.",
        ),
        _ => return,
    };
    response.headers.insert(
        name.into(),
        HeaderBuilder::new()
            .schema(Object::with_type(value))
            .description(Some(description))
            .build(),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::http::ROUTES;
    use crate::store::metrics::Metric;

    fn doc() -> Value {
        serde_json::from_str(&DOCUMENT_JSON).expect("the document is JSON")
    }

    /// `(METHOD, path, operation)` of every operation in the document.
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                out.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
        out
    }

    #[test]
    fn the_document_is_openapi_3_1_of_this_crate() {
        let doc = doc();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1.")),
            "{}",
            doc["openapi"]
        );
        assert_eq!(doc["info"]["title"], "runyard");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn the_documented_routes_are_exactly_the_served_ones() {
        let documented: BTreeSet<(String, String)> = operations(&doc())
            .into_iter()
            .map(|(method, path, _)| (method, path))
            .collect();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|e| (e.method.to_string(), e.path.to_string()))
            .collect();
        assert_eq!(served.len(), ROUTES.len(), "a route is listed twice");
        let undocumented: Vec<_> = served.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "served but not documented (add #[utoipa::path] and list it in ApiDoc): \
             {undocumented:?}"
        );
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            unserved.is_empty(),
            "documented but not served: {unserved:?}"
        );
    }

    #[test]
    fn every_ref_resolves_to_a_component() {
        fn walk(value: &Value, refs: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        refs.push(target.clone());
                    }
                    map.values().for_each(|v| walk(v, refs));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        let doc = doc();
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(refs.len() > 20, "{refs:?}");
        for target in refs {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("`{target}` is not a local reference"));
            assert!(
                pointer.starts_with("/components/") && doc.pointer(pointer).is_some(),
                "`{target}` does not resolve"
            );
        }
    }

    #[test]
    fn operations_are_unique_and_declare_exactly_their_path_parameters() {
        let mut ids = BTreeSet::new();
        for (method, path, operation) in operations(&doc()) {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            assert!(operation["summary"].is_string(), "{method} {path}");
            let in_template: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{method} {path}");
                    p["name"].as_str().expect("name")
                })
                .collect();
            assert_eq!(in_template, declared, "{method} {path}");
        }
    }

    #[test]
    fn security_follows_the_auth_rules() {
        for (method, path, operation) in operations(&doc()) {
            let method: Method = method.parse().expect("method");
            let security = operation["security"].as_array().expect("security");
            assert_eq!(security[0], serde_json::json!({}), "{method} {path}");
            let responses = &operation["responses"];
            match auth::required_role(&method, &path) {
                None => {
                    assert_eq!(security.len(), 1, "{method} {path} is open");
                    assert!(responses["401"].is_null(), "{method} {path}");
                }
                Some(role) => {
                    assert_eq!(
                        security[1],
                        serde_json::json!({ BEARER: [role.name()] }),
                        "{method} {path}"
                    );
                    assert!(responses["401"]["headers"]["WWW-Authenticate"].is_object());
                    assert!(responses["403"].is_object(), "{method} {path}");
                }
            }
        }
    }

    /// Each error response says which codes it answers, as "`code`: when", and those
    /// codes have its status; its body is a problem, except the bodiless answers of a
    /// file download (`Range` and conditional requests).
    #[test]
    fn error_responses_name_codes_of_their_status() {
        for (method, path, operation) in operations(&doc()) {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let code: u16 = status.parse().expect("numeric status");
                if code < 400 {
                    continue;
                }
                let description = response["description"].as_str().expect("description");
                if response["content"].is_null() {
                    assert!(
                        path.contains("/artifacts/") && description.ends_with("no body."),
                        "{method} {path} {status} has no problem body"
                    );
                    continue;
                }
                let content = response["content"].as_object().expect("content");
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    [PROBLEM],
                    "{method} {path} {status}"
                );
                assert_eq!(
                    content[PROBLEM]["schema"]["$ref"],
                    "#/components/schemas/Problem"
                );
                // The parts alternate text and quoted names; a code is a name followed
                // by a colon.
                let parts: Vec<&str> = description.split('`').collect();
                let named: Vec<&str> = parts
                    .windows(2)
                    .skip(1)
                    .step_by(2)
                    .filter(|pair| pair[1].starts_with(':'))
                    .map(|pair| pair[0])
                    .collect();
                assert!(!named.is_empty(), "{method} {path} {status}: {description}");
                for name in named {
                    let error = ErrorCode::ALL
                        .into_iter()
                        .find(|c| c.name() == name)
                        .unwrap_or_else(|| panic!("{method} {path}: no error code `{name}`"));
                    assert_eq!(
                        error.status().as_u16(),
                        code,
                        "{method} {path}: `{name}` is not a {status}"
                    );
                }
                if code == 503 {
                    assert!(response["headers"]["Retry-After"].is_object());
                }
            }
        }
    }

    #[test]
    fn enumerations_are_the_names_the_code_uses() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let names = |schema: &Value| -> Vec<String> {
            schema["enum"]
                .as_array()
                .expect("enum")
                .iter()
                .map(|v| v.as_str().expect("string").to_string())
                .collect()
        };
        assert_eq!(
            names(&schemas["Problem"]["properties"]["code"]),
            ErrorCode::ALL.map(|c| c.name().to_string())
        );
        assert_eq!(
            names(&schemas["EventView"]["properties"]["type"]),
            EventKind::ALL.map(|k| k.name().to_string())
        );
        assert_eq!(
            names(&schemas["Metric"]),
            Metric::ALL.map(|m| m.name().to_string())
        );
        let states: Vec<String> = crate::domain::RunState::ALL
            .iter()
            .map(|s| s.name().to_string())
            .collect();
        assert_eq!(names(&schemas["RunState"]), states);
    }
}
