//! `POST /api/v1/runs/{id}/cancel`, `/pause` and `/resume`: the dispatcher decides, and
//! a run that stops at its next batch boundary is waited for (a while) before answering.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{parse_run_id, run_response, RunView};
use crate::actors::dispatcher::{CancelOutcome, CancelRun, PauseOutcome, PauseRun, ResumeRun};
use crate::domain::{RunId, RunState};
use crate::http::error::{Problem, PROBLEM};
use crate::http::{idempotency, ApiError, AppState};

/// Waits (at most `wait`) until the run has left its slot in a state `done` accepts;
/// answers `200` with the run then, `202` with it otherwise.
async fn answer_when_stopped(
    state: &AppState,
    id: RunId,
    done: impl Fn(RunState) -> bool,
) -> Result<HttpResponse, ApiError> {
    let mut tail = state.actors.reader.subscribe();
    let stopped = tokio::time::timeout(state.cancel_wait, async {
        loop {
            let finished = state
                .actors
                .reader
                .state()
                .run(id)
                .is_some_and(|r| done(r.state) && r.slot.is_none());
            if finished || tail.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    match stopped {
        Ok(()) => run_response(state, id, HttpResponse::Ok()),
        Err(_) => run_response(state, id, HttpResponse::Accepted()),
    }
}

/// `POST /api/v1/runs/{id}/cancel`: a queued or paused run is cancelled at once; a
/// live run stops at its next batch boundary. Answers `200` with the cancelled run, or
/// `202` if it has not stopped within the wait; `409` if it already ended.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    tag = "runs",
    operation_id = "cancel_run",
    summary = "Cancel a run",
    description = "A queued or paused run is cancelled at once; a live run stops at its next batch \
        boundary and frees its slots. Answers `200` once it has stopped, or `202` if it has \
        not within 30 seconds.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        (
            "Idempotency-Key" = Option<String>,
            Header,
            nullable = false,
            description = "Makes the request safe to retry: 1 to 255 visible ASCII characters. \
                A retry with the same key, method, path, query, content type and body within 24 \
                hours gets the first answer again (unless it was a `5xx`), with \
                `Idempotent-Replayed: true`, without doing the work twice."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The cancelled run.",
            body = RunView,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed for a retried `Idempotency-Key`."))
        ),
        (
            status = 202,
            description = "Cancelling: the run has not stopped within the wait.",
            body = RunView,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed for a retried `Idempotency-Key`."))
        ),
        (status = 400, description = "`invalid_header`: a malformed `Idempotency-Key`.", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`conflict`: the run has already ended; `idempotency_key_reused`: the `Idempotency-Key` was used for another request.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: something failed on the server's side.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    idempotency::guard(&req, &state, b"", || cancel_run(&state, &path)).await
}

async fn cancel_run(state: &AppState, path: &str) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(path)?;
    let outcome = state
        .actors
        .dispatcher
        .send(CancelRun { run_id: id })
        .await??;
    match outcome {
        CancelOutcome::Cancelled => run_response(state, id, HttpResponse::Ok()),
        CancelOutcome::Requested => answer_when_stopped(state, id, RunState::is_terminal).await,
    }
}

/// `POST /api/v1/runs/{id}/pause`: a queued run is paused at once; a running one
/// checkpoints at its next batch boundary and gives its slot back. Answers `200` with
/// the paused run, `202` if it has not stopped within the wait, `409` otherwise.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/pause",
    tag = "runs",
    operation_id = "pause_run",
    summary = "Pause a run",
    description = "A queued run is paused at once; a running one checkpoints at its next batch \
        boundary and frees its slots. Answers `200` once it has stopped, or `202` if it has \
        not within 30 seconds. A paused run continues from its checkpoint when \
        resumed.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        (
            "Idempotency-Key" = Option<String>,
            Header,
            nullable = false,
            description = "Makes the request safe to retry: 1 to 255 visible ASCII characters. \
                A retry with the same key, method, path, query, content type and body within 24 \
                hours gets the first answer again (unless it was a `5xx`), with \
                `Idempotent-Replayed: true`, without doing the work twice."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The paused run.",
            body = RunView,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed for a retried `Idempotency-Key`."))
        ),
        (
            status = 202,
            description = "Pausing: the run has not stopped within the wait.",
            body = RunView,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed for a retried `Idempotency-Key`."))
        ),
        (status = 400, description = "`invalid_header`: a malformed `Idempotency-Key`.", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`conflict`: the run is neither queued nor running; `idempotency_key_reused`: the `Idempotency-Key` was used for another request.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: something failed on the server's side.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn pause(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    idempotency::guard(&req, &state, b"", || pause_run(&state, &path)).await
}

async fn pause_run(state: &AppState, path: &str) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(path)?;
    let outcome = state
        .actors
        .dispatcher
        .send(PauseRun { run_id: id })
        .await??;
    match outcome {
        PauseOutcome::Paused => run_response(state, id, HttpResponse::Ok()),
        PauseOutcome::Requested => {
            answer_when_stopped(state, id, |s| s == RunState::Paused || s.is_terminal()).await
        }
    }
}

/// `POST /api/v1/runs/{id}/resume`: a paused run goes back to the queue and continues
/// from its checkpoint. Answers `200` with the run, `409` if it is not paused.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/resume",
    tag = "runs",
    operation_id = "resume_run",
    summary = "Resume a paused run",
    description = "A paused run goes back to the queue and continues from its checkpoint.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        (
            "Idempotency-Key" = Option<String>,
            Header,
            nullable = false,
            description = "Makes the request safe to retry: 1 to 255 visible ASCII characters. \
                A retry with the same key, method, path, query, content type and body within 24 \
                hours gets the first answer again (unless it was a `5xx`), with \
                `Idempotent-Replayed: true`, without doing the work twice."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The run, queued again.",
            body = RunView,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer replayed for a retried `Idempotency-Key`."))
        ),
        (status = 400, description = "`invalid_header`: a malformed `Idempotency-Key`.", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`conflict`: the run is not paused; `idempotency_key_reused`: the `Idempotency-Key` was used for another request.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: something failed on the server's side.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn resume(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    idempotency::guard(&req, &state, b"", || resume_run(&state, &path)).await
}

async fn resume_run(state: &AppState, path: &str) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(path)?;
    state
        .actors
        .dispatcher
        .send(ResumeRun { run_id: id })
        .await??;
    run_response(state, id, HttpResponse::Ok())
}
