//! One error type for the API: every error a client can cause is answered as
//! `application/problem+json` with `type`, `title`, `status`, `detail` and `code`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::dispatcher::DispatchError;
use crate::actors::journal::AppendError;

/// The error codes of the API, each with its status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not well-formed JSON.
    MalformedBody,
    /// The body is well-formed but not a valid run spec.
    InvalidSpec,
    /// The body is larger than allowed.
    BodyTooLarge,
    /// The body's media type is not accepted.
    UnsupportedMediaType,
    /// No such run.
    RunNotFound,
    /// No such route.
    RouteNotFound,
    /// The run has no artifact of that name.
    ArtifactNotFound,
    /// The run's state does not allow the request.
    Conflict,
    /// A query parameter is wrong.
    InvalidQuery,
    /// The server is still replaying its journal.
    NotReady,
    /// The journal cannot write (disk full, an I/O error) or is reopening; nothing
    /// was written, and the request can be retried.
    JournalUnavailable,
    /// Something failed on the server's side.
    Internal,
}

impl ErrorCode {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ErrorCode::MalformedBody => (
                StatusCode::BAD_REQUEST,
                "malformed_body",
                "Malformed request body",
            ),
            ErrorCode::InvalidSpec => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_spec",
                "Invalid run spec",
            ),
            ErrorCode::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "Request body too large",
            ),
            ErrorCode::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            ErrorCode::RunNotFound => (StatusCode::NOT_FOUND, "run_not_found", "Run not found"),
            ErrorCode::RouteNotFound => (StatusCode::NOT_FOUND, "route_not_found", "No such route"),
            ErrorCode::ArtifactNotFound => (
                StatusCode::NOT_FOUND,
                "artifact_not_found",
                "Artifact not found",
            ),
            ErrorCode::Conflict => (
                StatusCode::CONFLICT,
                "conflict",
                "Conflict with the run's state",
            ),
            ErrorCode::InvalidQuery => (
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "Invalid query parameter",
            ),
            ErrorCode::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "Not ready"),
            ErrorCode::JournalUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                "Journal unavailable",
            ),
            ErrorCode::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }
}

/// An error answered to an API client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct ApiError {
    /// Which error.
    pub code: ErrorCode,
    /// What exactly was wrong, for a person.
    pub detail: String,
}

impl ApiError {
    /// `404 run_not_found` for `id`.
    pub fn run_not_found(id: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::RunNotFound, format!("no run with id {id}"))
    }

    /// An error with a detail message.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    r#type: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, title) = self.code.parts();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(code, detail = %self.detail, "request refused");
        } else if status.is_server_error() {
            tracing::error!(code, detail = %self.detail, "request failed");
        }
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        response
            .content_type("application/problem+json")
            .json(Problem {
                r#type: format!("https://runyard.dev/problems/{code}"),
                title,
                status: status.as_u16(),
                detail: &self.detail,
                code,
            })
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::NotFound(id) => ApiError::run_not_found(id),
            DispatchError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            DispatchError::Append(AppendError::Rejected(rejection)) => {
                ApiError::new(ErrorCode::Conflict, rejection.to_string())
            }
            DispatchError::Append(e @ (AppendError::Storage(_) | AppendError::Stopped)) => {
                ApiError::new(
                    ErrorCode::JournalUnavailable,
                    format!("{e}; nothing was written, retry later"),
                )
            }
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::new(ErrorCode::Internal, format!("actor unavailable: {e}"))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Sled { .. }
            | StoreError::Closed { .. }
            | StoreError::Interrupted { .. } => {
                ApiError::new(ErrorCode::JournalUnavailable, e.to_string())
            }
            StoreError::Record { .. } | StoreError::BadKey { .. } => {
                ApiError::new(ErrorCode::Internal, e.to_string())
            }
        }
    }
}
