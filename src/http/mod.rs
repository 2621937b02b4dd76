//! The HTTP surface: REST under `/api/v1`, server-sent event streams, health checks.

pub mod auth;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod runs;
pub mod slots;
pub mod stream;

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
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
}

/// What the start-up replay did, as `/api/v1/slots/audit` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayReport {
    /// Events replayed.
    pub events: u64,
    /// Runs found.
    pub runs: usize,
    /// Replay time in milliseconds.
    pub elapsed_ms: f64,
    /// The snapshot replay started from, if any.
    pub from_snapshot: Option<crate::domain::Seq>,
    /// The recovery events journaled right after, as `(run id, event name, slot)`;
    /// a `SlotReleased` of a run that was not live is a ledger repair.
    pub recovery: Vec<RecoveryNote>,
}

/// One recovery event journaled at start.
#[derive(Debug, Clone, serde::Serialize)]
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

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::scope("/api/v1")
                .route("/runs", web::post().to(runs::submit))
                .route("/runs", web::get().to(runs::list))
                .route("/runs/{id}", web::get().to(runs::get))
                .route("/runs/{id}/events", web::get().to(runs::events))
                .route("/runs/{id}/metrics", web::get().to(metrics::run_metrics))
                .route("/runs/{id}/cancel", web::post().to(runs::cancel))
                .route("/runs/{id}/pause", web::post().to(runs::pause))
                .route("/runs/{id}/resume", web::post().to(runs::resume))
                .route("/runs/{id}/artifacts/{name}", web::get().to(runs::artifact))
                .route(
                    "/runs/{id}/artifacts",
                    web::delete().to(runs::delete_artifacts),
                )
                .route("/runs/{id}/stream", web::get().to(stream::run_stream))
                .route("/stream", web::get().to(stream::all_stream))
                .route("/slots", web::get().to(slots::list))
                .route("/slots/audit", web::get().to(slots::audit)),
        )
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::RouteNotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// Starts serving on an already bound listener (so port 0 works).
pub fn serve(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
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
            .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("runyard::http"))
            .configure(routes)
    })
    .listen(listener)?
    .shutdown_timeout(5)
    .run();
    Ok(server)
}
