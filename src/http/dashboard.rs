//! The dashboard: one page at `/` and its script and style sheet under `/assets/`,
//! embedded in the binary (no build step, no CDN, nothing fetched at run time).
//!
//! The page holds no data: it reads everything from `/api/v1` with the token the
//! person enters (kept in the browser's session storage), so these routes are open
//! ([`auth::required_role`](super::auth::required_role) asks no role outside `/api`).
//! It follows the runs live through `EventSource` on the stream routes, which take
//! the token as `?access_token=` because an `EventSource` cannot send headers.
//!
//! Each asset has a strong `ETag` (a digest of its bytes) and `Cache-Control: no-cache`,
//! so a browser revalidates it on every load and gets a bodiless `304` while it is
//! unchanged; a new binary serves new assets at once. An unknown asset is answered by
//! the fallback like any unknown route: `404 route_not_found`.

use std::sync::LazyLock;

use actix_web::http::header::{self, EntityTag, IfNoneMatch};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse};
use sha2::{Digest as _, Sha256};

use crate::domain::{EventKind, RunState};

/// The page's HTML, with [`CONFIG_MARK`] where the configuration goes.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// The page's script.
const SCRIPT_JS: &str = include_str!("dashboard/dashboard.js");
/// The page's style sheet.
const STYLE_CSS: &str = include_str!("dashboard/dashboard.css");
/// The spec the README's tour submits, offered by the page's "Digits example" button.
const DIGITS_EXAMPLE: &str = include_str!("../../examples/digits.json");
/// Replaced in [`INDEX_HTML`] by the page's configuration (a JSON data block).
const CONFIG_MARK: &str = "__RUNYARD_CONFIG__";

/// What the page may load: only its own script, style sheet and API (a data block,
/// not a script, carries its configuration).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One embedded file as served.
struct Asset {
    body: String,
    content_type: &'static str,
    /// Strong validator: the first 16 bytes of the body's SHA-256, in hex.
    etag: EntityTag,
}

impl Asset {
    fn new(body: String, content_type: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let etag = EntityTag::new_strong(hex::encode(&digest[..16]));
        Self {
            body,
            content_type,
            etag,
        }
    }

    /// `200` with the body, or `304` when the request's `If-None-Match` names it.
    fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let fresh = match req.get_header::<IfNoneMatch>() {
            Some(IfNoneMatch::Any) => true,
            Some(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&self.etag)),
            None => false,
        };
        let mut response = if fresh {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        response
            .insert_header(header::ETag(self.etag.clone()))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        if self.content_type.starts_with("text/html") {
            response
                .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
                .insert_header((header::REFERRER_POLICY, "no-referrer"));
        }
        if fresh {
            return response.finish();
        }
        response
            .content_type(self.content_type)
            .body(self.body.clone())
    }
}

/// The page's configuration, read by its script: the lifecycle event names the
/// streams send (from [`EventKind::ALL`], so the page never misses a new one), the run
/// states its filter offers (from [`RunState::ALL`]) and the digits example spec.
fn config_json() -> String {
    let names: Vec<&str> = EventKind::ALL.into_iter().map(EventKind::name).collect();
    let states: Vec<&str> = RunState::ALL.iter().map(|s| s.name()).collect();
    let digits: serde_json::Value = serde_json::from_str(DIGITS_EXAMPLE).unwrap_or_else(|e| {
        tracing::error!(error = %e, "examples/digits.json is not JSON");
        serde_json::Value::Null
    });
    let config = serde_json::json!({
        "event_names": names,
        "run_states": states,
        "digits_example": digits,
    });
    // In JSON, `<` only occurs inside strings, where `\u003c` means the same: the block
    // can then never hold `</script>`.
    config.to_string().replace('<', "\\u003c")
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        INDEX_HTML.replacen(CONFIG_MARK, &config_json(), 1),
        "text/html; charset=utf-8",
    )
});
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(SCRIPT_JS.to_string(), "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(STYLE_CSS.to_string(), "text/css; charset=utf-8"));

/// `GET /`: the dashboard page.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    operation_id = "dashboard",
    summary = "The dashboard page",
    description = "The dashboard: runs a page at a time (filtered by state and label, in the \
        API's sort orders) with live state and progress, the queue and slots, a page per run \
        (`/#/runs/{id}`, shown alone) with live loss and accuracy charts, its event timeline \
        and cancel, pause and resume, runs compared (`/#/compare/{id},{id}`: overlaid loss \
        and validation curves, the spec fields that differ), a form to submit a run, the \
        sweeps and a page per sweep (`/#/sweeps/{id}`) with its trials, best-so-far curve, \
        overlaid validation curves and parallel coordinates. It holds no data: its \
        script reads the API with the token entered on the page.",
    params(
        (
            "If-None-Match" = Option<String>,
            Header,
            nullable = false,
            description = "An `ETag` received before: `304` while the page is unchanged."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The page.",
            content_type = "text/html",
            body = String,
            headers(
                ("ETag" = String, description = "A strong validator of these bytes."),
                ("Cache-Control" = String, description = "`no-cache`: revalidate before each use.")
            )
        ),
        (
            status = 304,
            description = "Unchanged since the `ETag` in `If-None-Match`; no body.",
            headers(("ETag" = String, description = "The same validator."))
        ),
    )
)]
pub async fn index(req: HttpRequest) -> HttpResponse {
    INDEX.respond(&req)
}

/// `GET /assets/dashboard.js`: the dashboard's script.
#[utoipa::path(
    get,
    path = "/assets/dashboard.js",
    tag = "dashboard",
    operation_id = "dashboard_script",
    summary = "The dashboard's script",
    description = "The script of the dashboard page (plain JavaScript, no dependencies).",
    params(
        (
            "If-None-Match" = Option<String>,
            Header,
            nullable = false,
            description = "An `ETag` received before: `304` while the script is unchanged."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The script.",
            content_type = "text/javascript",
            body = String,
            headers(
                ("ETag" = String, description = "A strong validator of these bytes."),
                ("Cache-Control" = String, description = "`no-cache`: revalidate before each use.")
            )
        ),
        (
            status = 304,
            description = "Unchanged since the `ETag` in `If-None-Match`; no body.",
            headers(("ETag" = String, description = "The same validator."))
        ),
    )
)]
pub async fn script(req: HttpRequest) -> HttpResponse {
    SCRIPT.respond(&req)
}

/// `GET /assets/dashboard.css`: the dashboard's style sheet.
#[utoipa::path(
    get,
    path = "/assets/dashboard.css",
    tag = "dashboard",
    operation_id = "dashboard_style",
    summary = "The dashboard's style sheet",
    description = "The style sheet of the dashboard page.",
    params(
        (
            "If-None-Match" = Option<String>,
            Header,
            nullable = false,
            description = "An `ETag` received before: `304` while the style sheet is unchanged."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The style sheet.",
            content_type = "text/css",
            body = String,
            headers(
                ("ETag" = String, description = "A strong validator of these bytes."),
                ("Cache-Control" = String, description = "`no-cache`: revalidate before each use.")
            )
        ),
        (
            status = 304,
            description = "Unchanged since the `ETag` in `If-None-Match`; no body.",
            headers(("ETag" = String, description = "The same validator."))
        ),
    )
)]
pub async fn style(req: HttpRequest) -> HttpResponse {
    STYLE.respond(&req)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn the_page_carries_every_event_name_run_state_and_the_digits_example() {
        let html = &INDEX.body;
        assert!(!html.contains(CONFIG_MARK));
        let start = html.find("id=\"runyard-config\"").expect("config block");
        let block = &html[start..];
        let json =
            &block[block.find('>').expect("tag end") + 1..block.find("</script>").expect("end")];
        let config: serde_json::Value = serde_json::from_str(json).expect("config is JSON");
        let names: Vec<&str> = config["event_names"]
            .as_array()
            .expect("names")
            .iter()
            .map(|v| v.as_str().expect("name"))
            .collect();
        assert_eq!(names, EventKind::ALL.map(EventKind::name));
        let states = config["run_states"].as_array().expect("states");
        assert_eq!(states.len(), RunState::ALL.len());
        assert_eq!(states[0], "queued");
        assert_eq!(config["digits_example"]["name"], "digits");
    }

    #[actix_web::test]
    async fn an_asset_is_not_modified_while_its_etag_matches() {
        let header_of = |response: &HttpResponse, name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let first = script(TestRequest::get().to_http_request()).await;
        assert_eq!(first.status(), 200);
        assert_eq!(
            header_of(&first, header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
        let etag = header_of(&first, header::ETAG);
        assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
        let again = script(
            TestRequest::get()
                .insert_header((header::IF_NONE_MATCH, etag.clone()))
                .to_http_request(),
        )
        .await;
        assert_eq!(again.status(), 304);
        assert_eq!(header_of(&again, header::ETAG), etag);
        let other = script(
            TestRequest::get()
                .insert_header((header::IF_NONE_MATCH, "\"0000\""))
                .to_http_request(),
        )
        .await;
        assert_eq!(other.status(), 200);
        // Each asset has its own validator.
        let css = style(TestRequest::get().to_http_request()).await;
        assert_ne!(header_of(&css, header::ETAG), etag);
    }
}
