//! `GET /api/v1/runs/{id}/artifacts/{name}` (a file the journal names) and `DELETE
//! /api/v1/runs/{id}/artifacts` (an ended run's files).

use actix_web::{web, HttpRequest, HttpResponse};

use super::{existing_run_id, run_response, RunView};
use crate::actors::dispatcher::DispatchError;
use crate::actors::files::{self, DeleteError};
use crate::http::error::{Problem, PROBLEM};
use crate::http::{ApiError, AppState, ErrorCode};

/// `GET /api/v1/runs/{id}/artifacts/{name}`: downloads the final weights or a kept
/// checkpoint. Only files the journal names are served.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/artifacts/{name}",
    tag = "runs",
    operation_id = "download_artifact",
    summary = "Download an artifact",
    description = "Downloads a file the run's journal names: an artifact (`final.safetensors`) \
        or a kept checkpoint (by file name). Conditional (`If-None-Match`, \
        `If-Modified-Since`, `If-Match`, `If-Unmodified-Since`) and `Range` requests are \
        answered as HTTP says.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        ("name" = String, Path, description = "The artifact's name, or a kept checkpoint's file name."),
    ),
    responses(
        (
            status = 200,
            description = "The file.",
            content_type = "application/octet-stream",
            headers(
                ("ETag" = String, description = "The file's entity tag."),
                ("Last-Modified" = String, description = "When the file was last written."),
            )
        ),
        (
            status = 206,
            description = "The part of the file a `Range` header asked for.",
            content_type = "application/octet-stream",
            headers(("Content-Range" = String, description = "Which bytes of the file are sent."))
        ),
        (status = 304, description = "Not modified since the `If-None-Match` or `If-Modified-Since` given; no body."),
        (status = 400, description = "A malformed `Range` header; no body."),
        (status = 404, description = "`run_not_found`: no run with that id; `artifact_not_found`: the run has no artifact or kept checkpoint of that name.", body = Problem, content_type = PROBLEM),
        (status = 410, description = "`artifact_deleted`: the run's files were deleted.", body = Problem, content_type = PROBLEM),
        (status = 412, description = "An `If-Match` or `If-Unmodified-Since` precondition failed; no body."),
        (status = 416, description = "The `Range` asked for is not in the file; no body."),
    )
)]
pub async fn artifact(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (raw_id, name) = path.into_inner();
    let id = existing_run_id(&state, &raw_id)?;
    let relative = {
        let fold = state.actors.reader.state();
        let run = fold.run(id).ok_or_else(|| ApiError::run_not_found(id))?;
        ApiError::unless_files_deleted(run, &format!("`{name}` is gone"))?;
        run.artifacts
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.path.clone())
            .or_else(|| {
                run.checkpoints
                    .iter()
                    .find(|c| c.path.rsplit('/').next() == Some(name.as_str()))
                    .map(|c| c.path.clone())
            })
    };
    let not_found = || {
        ApiError::new(
            ErrorCode::ArtifactNotFound,
            format!("run {id} has no artifact named `{name}`"),
        )
    };
    let relative = relative.ok_or_else(not_found)?;
    let file = actix_files::NamedFile::open_async(state.data_dir.join(relative))
        .await
        .map_err(|_| not_found())?;
    Ok(file
        .set_content_type(
            "application/octet-stream"
                .parse()
                .map_err(|_| not_found())?,
        )
        .into_response(&req))
}

/// `DELETE /api/v1/runs/{id}/artifacts`: removes an ended run's files
/// (`DATA_DIR/runs/ID`: checkpoints and artifacts) and answers `200` with the run, whose
/// `files_deleted` says what went; its history stays. `409` while the run has not
/// ended (or still holds a slot). Deleting again answers the run again and removes
/// anything left behind, without a second event.
///
/// The use case is [`crate::actors::files::delete_run_files`]: `ArtifactsDeleted` is
/// journaled before anything is removed, so a failed append leaves every file in
/// place (`503`), and a crash after it leaves files that the next start removes.
#[utoipa::path(
    delete,
    path = "/api/v1/runs/{id}/artifacts",
    tag = "runs",
    operation_id = "delete_artifacts",
    summary = "Delete a run's files",
    description = "Removes an ended run's files (checkpoints and artifacts), journals \
        `ArtifactsDeleted` first, and answers the run, whose `files_deleted` says what went. \
        Its events and view stay. Deleting again answers the run again, without a second \
        event.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
    ),
    responses(
        (status = 200, description = "The run, with `files_deleted` set.", body = RunView),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`conflict`: the run has not ended (or still holds a slot, or its Slurm job has not ended).", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: something failed on the server's side.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn delete_artifacts(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = existing_run_id(&state, &path)?;
    let actors = &state.actors;
    files::delete_run_files(&actors.journal, &actors.reader, &state.data_dir, id)
        .await
        .map_err(|e| match e {
            DeleteError::UnknownRun(id) => ApiError::run_not_found(id),
            e @ (DeleteError::NotEnded { .. } | DeleteError::Rejected(_)) => {
                ApiError::new(ErrorCode::Conflict, e.to_string())
            }
            e @ (DeleteError::Read { .. } | DeleteError::Remove { .. }) => {
                ApiError::new(ErrorCode::Internal, e.to_string())
            }
            DeleteError::Journal(e) => DispatchError::Append(e).into(),
        })?;
    run_response(&state, id, HttpResponse::Ok())
}
