//! The HTTP surface: REST under `/api/v1`, server-sent event streams, health checks,
//! the dashboard page (`/`), and the OpenAPI document of them all
//! (`/api/v1/openapi.json`).

pub mod auth;
pub mod bulk;
pub mod dashboard;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod prometheus;
pub mod runs;
pub mod slots;
pub mod state;
pub mod stream;
pub mod sweeps;
pub mod traces;
pub mod views;
pub mod worker;

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpServer, ResponseError};

pub use error::{ApiError, ErrorCode};
pub use state::{AppState, RecoveryNote, ReplayReport, RoutePattern, MAX_BODY_BYTES};

/// One route the server answers: what [`routes`] registers, and what the OpenAPI
/// document must describe (its tests check that both hold the same routes).
#[derive(Debug)]
pub struct Endpoint {
    /// The HTTP method.
    pub method: Method,
    /// The path pattern, written the same way for actix and OpenAPI (`/runs/{id}`).
    pub path: &'static str,
    /// Builds the route's handler (a function, so the table can be a constant).
    handler: fn() -> actix_web::Route,
}

impl Endpoint {
    const fn new(method: Method, path: &'static str, handler: fn() -> actix_web::Route) -> Self {
        Self {
            method,
            path,
            handler,
        }
    }
}

/// `route!(GET "/path" => handler)`: an [`Endpoint`] of [`ROUTES`].
macro_rules! route {
    ($method:ident $path:literal => $handler:path) => {
        Endpoint::new(Method::$method, $path, || web::to($handler))
    };
}

/// Every route served. [`routes`] registers exactly these, so a route cannot be served
/// without being listed here, and `openapi`'s tests fail for one that is not
/// documented.
pub const ROUTES: &[Endpoint] = &[
    route!(GET "/" => dashboard::index),
    route!(GET "/assets/dashboard.js" => dashboard::script),
    route!(GET "/assets/dashboard.css" => dashboard::style),
    route!(GET "/healthz" => health::healthz),
    route!(GET "/readyz" => health::readyz),
    route!(GET "/api/v1/openapi.json" => openapi::document),
    route!(POST "/api/v1/runs" => runs::submit::submit),
    route!(GET "/api/v1/runs" => runs::list::list),
    route!(GET "/api/v1/runs/{id}" => runs::view::get),
    route!(GET "/api/v1/runs/{id}/events" => runs::view::events),
    route!(GET "/api/v1/runs/{id}/facts" => worker::facts),
    route!(POST "/api/v1/runs/{id}/worker" => worker::register),
    route!(GET "/api/v1/runs/{id}/metrics" => metrics::run_metrics),
    route!(POST "/api/v1/runs/{id}/cancel" => runs::control::cancel),
    route!(POST "/api/v1/runs/{id}/pause" => runs::control::pause),
    route!(POST "/api/v1/runs/{id}/resume" => runs::control::resume),
    route!(GET "/api/v1/runs/{id}/artifacts/{name}" => runs::artifacts::artifact),
    route!(DELETE "/api/v1/runs/{id}/artifacts" => runs::artifacts::delete_artifacts),
    route!(GET "/api/v1/runs/{id}/logs" => logs::tail),
    route!(GET "/api/v1/runs/{id}/logs/stream" => logs::stream),
    route!(GET "/api/v1/runs/{id}/stream" => stream::run_stream),
    route!(GET "/api/v1/stream" => stream::all_stream),
    route!(POST "/api/v1/sweeps" => sweeps::submit),
    route!(GET "/api/v1/sweeps" => sweeps::list),
    route!(GET "/api/v1/sweeps/{id}" => sweeps::get),
    route!(POST "/api/v1/sweeps/{id}/cancel" => sweeps::cancel),
    route!(POST "/api/v1/sweeps/{id}/pause" => sweeps::pause),
    route!(POST "/api/v1/sweeps/{id}/resume" => sweeps::resume),
    route!(GET "/api/v1/sweeps/{id}/stream" => stream::sweep_stream),
    route!(GET "/api/v1/slots" => slots::list),
    route!(GET "/api/v1/slots/audit" => slots::audit),
    route!(GET "/metrics" => prometheus::exposition),
];

/// Registers every route of [`ROUTES`], and answers anything else `405
/// method_not_allowed` (with `Allow`) when the path is a route of other methods, `404
/// route_not_found` when it is none.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for endpoint in ROUTES {
        // One resource per method (the guard lets another method of the same path fall
        // through to its own resource), carrying its pattern for the middlewares.
        cfg.service(
            web::resource(endpoint.path)
                .guard(actix_web::guard::Method(endpoint.method.clone()))
                .app_data(RoutePattern(endpoint.path))
                .route((endpoint.handler)()),
        );
    }
    cfg.default_service(web::to(not_found));
}

/// Each route's path as actix matches it, with its method.
static PATTERNS: std::sync::LazyLock<Vec<(actix_web::dev::ResourceDef, &'static Method)>> =
    std::sync::LazyLock::new(|| {
        ROUTES
            .iter()
            .map(|e| (actix_web::dev::ResourceDef::new(e.path), &e.method))
            .collect()
    });

/// The methods served at `path`, in [`ROUTES`]' order; empty when it is no route.
fn methods_at(path: &str) -> Vec<&'static Method> {
    PATTERNS
        .iter()
        .filter(|(pattern, _)| pattern.is_match(path))
        .map(|(_, method)| *method)
        .collect()
}

async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    let methods = methods_at(req.path());
    if methods.is_empty() {
        return ApiError::new(
            ErrorCode::RouteNotFound,
            format!("no route for {} {}", req.method(), req.path()),
        )
        .error_response();
    }
    let allow = methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} has no {} route; it has {allow}",
            req.path(),
            req.method()
        ),
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// Starts serving on an already bound listener (so port 0 works); SIGINT and SIGTERM
/// stop it.
pub fn serve(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    serve_with(listener, true, state)
}

/// [`serve`], with the choice of whether SIGINT and SIGTERM stop the server.
pub fn serve_with(
    listener: TcpListener,
    handle_signals: bool,
    state: AppState,
) -> std::io::Result<Server> {
    openapi::build();
    let tokens = web::Data::new(state.tokens.clone());
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(tokens.clone())
            .app_data(web::PathConfig::default().error_handler(|err, _| {
                ApiError::new(ErrorCode::InvalidQuery, err.to_string()).into()
            }))
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                ApiError::new(ErrorCode::InvalidQuery, err.to_string()).into()
            }))
            .wrap(actix_web::middleware::from_fn(auth::check))
            // Outside auth: refused requests are counted too.
            .wrap(actix_web::middleware::from_fn(prometheus::record))
            // Outside auth too: a refused request has its span.
            .wrap(actix_web::middleware::from_fn(traces::trace_request))
            // Method and path, never the query: a stream's `access_token` stays out of
            // the log.
            .wrap(
                actix_web::middleware::Logger::new("%{method}xi %U %s %Dms")
                    .custom_request_replace("method", |req| req.method().to_string())
                    .log_target("runyard::http"),
            )
            .configure(routes)
    })
    .listen(listener)?
    .shutdown_timeout(5);
    let server = if handle_signals {
        server
    } else {
        server.disable_signals()
    };
    let server = server.run();
    Ok(server)
}
