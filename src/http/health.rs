//! Liveness and readiness.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::{ApiError, AppState, ErrorCode};

/// `GET /healthz`: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the journal is replayed and recovery is done.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.actors.ready.load(Ordering::Acquire) {
        let last_seq = state.actors.reader.state().last_seq();
        Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "last_seq": last_seq})))
    } else {
        Err(ApiError::new(ErrorCode::NotReady, "replaying the journal"))
    }
}
