//! Liveness and readiness.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::{ApiError, AppState, ErrorCode};

/// `GET /healthz`: the process answers; says whether the journal takes writes.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let health = state.actors.reader.health();
    let journal = match health.degraded() {
        Some(reason) => serde_json::json!({"status": "degraded", "reason": reason}),
        None => serde_json::json!({"status": "ok"}),
    };
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "journal": journal,
        "journal_write_failures": health.failures(),
        "journal_recoveries": health.recoveries(),
    }))
}

/// `GET /readyz`: the journal is replayed, recovery is done, and the journal takes
/// writes (reads keep working while it does not).
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(reason) = state.actors.reader.health().degraded() {
        return Err(ApiError::new(
            ErrorCode::JournalUnavailable,
            format!("the journal refuses writes since a failed write: {reason}"),
        ));
    }
    if state.actors.ready.load(Ordering::Acquire) {
        let last_seq = state.actors.reader.state().last_seq();
        Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "last_seq": last_seq})))
    } else {
        Err(ApiError::new(ErrorCode::NotReady, "replaying the journal"))
    }
}
