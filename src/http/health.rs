//! Liveness and readiness.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::error::Problem;
use super::error::PROBLEM;
use super::{ApiError, AppState, ErrorCode};
use crate::domain::Seq;

/// What `GET /healthz` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`: the process answers.
    #[schema(example = "ok")]
    status: &'static str,
    /// Whether the journal takes writes.
    journal: JournalHealth,
    /// Journal writes that failed since start.
    journal_write_failures: u64,
    /// Times the journal recovered from a failed write since start.
    journal_recoveries: u64,
}

/// Whether the journal takes writes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
enum JournalHealth {
    /// It does.
    Ok,
    /// It refuses writes since a failed one (reads keep working).
    Degraded {
        /// What failed.
        reason: String,
    },
}

/// What `GET /readyz` answers once the server is ready.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Ready {
    /// Always `ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// Sequence number of the newest durable event.
    #[schema(value_type = u64)]
    last_seq: Seq,
}

/// `GET /healthz`: the process answers; says whether the journal takes writes.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    summary = "Liveness",
    description = "Answers while the process runs, and says whether the journal takes writes.",
    responses((status = 200, description = "The process answers.", body = Health))
)]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let health = state.actors.reader.health();
    let journal = match health.degraded() {
        Some(reason) => JournalHealth::Degraded { reason },
        None => JournalHealth::Ok,
    };
    HttpResponse::Ok().json(Health {
        status: "ok",
        journal,
        journal_write_failures: health.failures(),
        journal_recoveries: health.recoveries(),
    })
}

/// `GET /readyz`: the journal is replayed, recovery is done, and the journal takes
/// writes (reads keep working while it does not).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    summary = "Readiness",
    description = "Ready once the journal is replayed, recovery is done, and the journal takes \
        writes (reads keep working while it does not).",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (
            status = 503,
            description = "`not_ready`: still replaying the journal; `journal_unavailable`: the \
                journal refuses writes since a failed one.",
            body = Problem,
            content_type = PROBLEM
        ),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(reason) = state.actors.reader.health().degraded() {
        return Err(ApiError::new(
            ErrorCode::JournalUnavailable,
            format!("the journal refuses writes since a failed write: {reason}"),
        ));
    }
    if state.actors.ready.load(Ordering::Acquire) {
        Ok(HttpResponse::Ok().json(Ready {
            status: "ready",
            last_seq: state.actors.reader.state().last_seq(),
        }))
    } else {
        Err(ApiError::new(ErrorCode::NotReady, "replaying the journal"))
    }
}
