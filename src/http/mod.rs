//! The HTTP surface: REST under `/api/v1`, server-sent event streams, health checks,
//! the dashboard page (`/`), and the OpenAPI document of them all
//! (`/api/v1/openapi.json`).

pub mod auth;
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
pub mod stream;
pub mod traces;
pub mod worker;

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpServer};

use crate::actors::Actors;
pub use error::{ApiError, ErrorCode};

/// The default of `server.max_body_bytes`, the largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The running actors and their shared views.
    pub actors: Actors,
    /// Interval between keep-alive comments on streams; also how long a stream waits
    /// for a client to take its events before disconnecting it as too slow.
    pub keep_alive: Duration,
    /// Counters of the event streams, shared by all of them.
    pub streams: std::sync::Arc<stream::StreamStats>,
    /// How long a cancel or pause request waits for the run to stop before answering
    /// `202`.
    pub cancel_wait: Duration,
    /// Largest accepted request body, in bytes (`server.max_body_bytes`).
    pub max_body_bytes: usize,
    /// The data directory (artifacts are served from it).
    pub data_dir: std::path::PathBuf,
    /// Where data files named in specs may be read from.
    pub roots: crate::train::data::DataRoots,
    /// What the start-up replay did and the recovery it journaled.
    pub last_replay: ReplayReport,
    /// The bearer tokens accepted; empty: no auth.
    pub tokens: auth::Tokens,
    /// Whether runs of `"kind": "command"` are accepted (`runs.allow_commands`).
    pub allow_commands: bool,
    /// The trace pipeline (request spans, and runs' traces picked at submission);
    /// `None` when traces are off.
    pub traces: Option<crate::telemetry::traces::Traces>,
}

/// What the start-up replay did, as `/api/v1/slots/audit` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    /// Events replayed.
    pub events: u64,
    /// Runs found.
    pub runs: usize,
    /// Replay time in milliseconds.
    pub elapsed_ms: f64,
    /// The snapshot replay started from, if any.
    #[schema(value_type = Option<u64>)]
    pub from_snapshot: Option<crate::domain::Seq>,
    /// The recovery events journaled right after, as `(run id, event name, slot)`;
    /// a `SlotReleased` of a run that was not live is a ledger repair.
    pub recovery: Vec<RecoveryNote>,
}

/// One recovery event journaled at start.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RecoveryNote {
    /// The run.
    pub run_id: crate::domain::RunId,
    /// The event, e.g. `RunRequeued` or `SlotReleased`.
    pub event: &'static str,
    /// The slot released, for `SlotReleased`.
    pub slot: Option<crate::domain::SlotId>,
    /// Whether it repaired the ledger (a slot held by a run that was not live).
    pub repair: bool,
}

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
    route!(POST "/api/v1/runs" => runs::submit),
    route!(GET "/api/v1/runs" => runs::list),
    route!(GET "/api/v1/runs/{id}" => runs::get),
    route!(GET "/api/v1/runs/{id}/events" => runs::events),
    route!(GET "/api/v1/runs/{id}/facts" => worker::facts),
    route!(POST "/api/v1/runs/{id}/worker" => worker::register),
    route!(GET "/api/v1/runs/{id}/metrics" => metrics::run_metrics),
    route!(POST "/api/v1/runs/{id}/cancel" => runs::cancel),
    route!(POST "/api/v1/runs/{id}/pause" => runs::pause),
    route!(POST "/api/v1/runs/{id}/resume" => runs::resume),
    route!(GET "/api/v1/runs/{id}/artifacts/{name}" => runs::artifact),
    route!(DELETE "/api/v1/runs/{id}/artifacts" => runs::delete_artifacts),
    route!(GET "/api/v1/runs/{id}/logs" => logs::tail),
    route!(GET "/api/v1/runs/{id}/logs/stream" => logs::stream),
    route!(GET "/api/v1/runs/{id}/stream" => stream::run_stream),
    route!(GET "/api/v1/stream" => stream::all_stream),
    route!(GET "/api/v1/slots" => slots::list),
    route!(GET "/api/v1/slots/audit" => slots::audit),
    route!(GET "/metrics" => prometheus::exposition),
];

/// The pattern of the route that served a request, as resource data: after the
/// response, `request().app_data::<RoutePattern>()` names it without matching the
/// path against the route table again.
#[derive(Debug, Clone, Copy)]
pub struct RoutePattern(pub &'static str);

/// Registers every route of [`ROUTES`], and answers anything else `404
/// route_not_found`.
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

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::RouteNotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
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
