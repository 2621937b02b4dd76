//! One error type for the API: every error a client can cause is answered as
//! `application/problem+json` with `type`, `title`, `status`, `detail` and `code`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::dispatcher::DispatchError;
use crate::actors::journal::AppendError;
use crate::domain::spec::parse::SpecParseError;

/// The media type of every error answer.
pub const PROBLEM: &str = "application/problem+json";
/// The error codes of the API, each with its status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not a well-formed document of its media type (JSON, YAML, TOML).
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
    /// The path is a route, but not of this method (`Allow` names those it has).
    MethodNotAllowed,
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
    /// A run with the same spec digest exists and the submission asked
    /// `on_duplicate=reject`.
    Duplicate,
    /// An `Idempotency-Key` was used before with another method, path or body.
    IdempotencyKeyReused,
    /// The run's files were deleted (`DELETE /runs/{id}/artifacts`); its history stays.
    ArtifactDeleted,
    /// A request header has a value that is not accepted (e.g. `Idempotency-Key`).
    InvalidHeader,
    /// The route needs a token and none (or an invalid one) was sent.
    Unauthorized,
    /// The token's role does not allow the request.
    Forbidden,
    /// A command run was submitted to a server that does not accept them.
    CommandsDisabled,
    /// A run asked for an executor the server does not have enabled.
    ExecutorDisabled,
    /// No sweep with that id.
    SweepNotFound,
    /// A sweep spec that breaks a rule (names the path).
    InvalidSweep,
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
            ErrorCode::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
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
            ErrorCode::Duplicate => (
                StatusCode::CONFLICT,
                "duplicate",
                "A run with the same spec exists",
            ),
            ErrorCode::IdempotencyKeyReused => (
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "Idempotency key used for another request",
            ),
            ErrorCode::ArtifactDeleted => {
                (StatusCode::GONE, "artifact_deleted", "Artifact deleted")
            }
            ErrorCode::InvalidHeader => (
                StatusCode::BAD_REQUEST,
                "invalid_header",
                "Invalid request header",
            ),
            ErrorCode::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication needed",
            ),
            ErrorCode::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            ErrorCode::CommandsDisabled => (
                StatusCode::FORBIDDEN,
                "commands_disabled",
                "Command runs are not enabled",
            ),
            ErrorCode::ExecutorDisabled => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "executor_disabled",
                "The run's executor is not enabled",
            ),
            ErrorCode::SweepNotFound => {
                (StatusCode::NOT_FOUND, "sweep_not_found", "Sweep not found")
            }
            ErrorCode::InvalidSweep => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_sweep",
                "Invalid sweep spec",
            ),
        }
    }

    /// Every code, for the README table check.
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::MalformedBody,
        ErrorCode::InvalidSpec,
        ErrorCode::BodyTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RunNotFound,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ArtifactNotFound,
        ErrorCode::Conflict,
        ErrorCode::InvalidQuery,
        ErrorCode::NotReady,
        ErrorCode::JournalUnavailable,
        ErrorCode::Internal,
        ErrorCode::Duplicate,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::ArtifactDeleted,
        ErrorCode::InvalidHeader,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::CommandsDisabled,
        ErrorCode::ExecutorDisabled,
        ErrorCode::SweepNotFound,
        ErrorCode::InvalidSweep,
    ];

    /// The HTTP status answered with this code.
    pub fn status(self) -> StatusCode {
        self.parts().0
    }

    /// The code as it appears in the `code` field, e.g. `invalid_spec`.
    pub fn name(self) -> &'static str {
        self.parts().1
    }

    /// A short title for the code.
    pub fn title(self) -> &'static str {
        self.parts().2
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

    /// `410 artifact_deleted` when `run`'s files were deleted (`what` names what was
    /// asked for, e.g. "its logs are gone"); `Ok` while they are there.
    pub fn unless_files_deleted(run: &crate::domain::Run, what: &str) -> Result<(), Self> {
        let Some(deleted) = &run.files_deleted else {
            return Ok(());
        };
        Err(Self::new(
            ErrorCode::ArtifactDeleted,
            format!(
                "the files of run {} were deleted at {} (event {}); {what}",
                run.id,
                deleted
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                deleted.seq
            ),
        ))
    }

    /// An error with a detail message.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// The body of every error answer (RFC 9457 problem details, plus `code`).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Problem<'a> {
    /// A URI naming the kind of problem: `https://runyard.dev/problems/{code}`.
    r#type: String,
    /// A short title of the code.
    title: &'a str,
    /// The HTTP status, repeated.
    status: u16,
    /// What exactly was wrong, for a person.
    detail: &'a str,
    /// The error code, one per row of the README's error table.
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
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.content_type(PROBLEM).json(Problem {
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

impl From<crate::actors::sweeper::SweepError> for ApiError {
    fn from(e: crate::actors::sweeper::SweepError) -> Self {
        use crate::actors::sweeper::SweepError;
        match e {
            SweepError::NotFound(id) => {
                ApiError::new(ErrorCode::SweepNotFound, format!("no sweep with id {id}"))
            }
            SweepError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            SweepError::Append(e) => DispatchError::Append(e).into(),
        }
    }
}

impl From<SpecParseError> for ApiError {
    fn from(e: SpecParseError) -> Self {
        match e {
            SpecParseError::Malformed(message) => ApiError::new(ErrorCode::MalformedBody, message),
            SpecParseError::Invalid(message) => ApiError::new(ErrorCode::InvalidSpec, message),
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
            | StoreError::Interrupted { .. }
            | StoreError::Sync { .. } => {
                ApiError::new(ErrorCode::JournalUnavailable, e.to_string())
            }
            StoreError::Record { .. }
            | StoreError::BadKey { .. }
            | StoreError::Short { .. }
            | StoreError::BadWatermark { .. } => ApiError::new(ErrorCode::Internal, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails to compile when a code is added without being listed in [`ErrorCode::ALL`]
    /// (and so in the README check below).
    fn listed(code: ErrorCode) -> bool {
        match code {
            ErrorCode::MalformedBody
            | ErrorCode::InvalidSpec
            | ErrorCode::BodyTooLarge
            | ErrorCode::UnsupportedMediaType
            | ErrorCode::RunNotFound
            | ErrorCode::RouteNotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::ArtifactNotFound
            | ErrorCode::Conflict
            | ErrorCode::InvalidQuery
            | ErrorCode::NotReady
            | ErrorCode::JournalUnavailable
            | ErrorCode::Internal
            | ErrorCode::Duplicate
            | ErrorCode::IdempotencyKeyReused
            | ErrorCode::ArtifactDeleted
            | ErrorCode::InvalidHeader
            | ErrorCode::Unauthorized
            | ErrorCode::Forbidden
            | ErrorCode::CommandsDisabled
            | ErrorCode::ExecutorDisabled
            | ErrorCode::SweepNotFound
            | ErrorCode::InvalidSweep => ErrorCode::ALL.contains(&code),
        }
    }

    #[test]
    fn every_error_code_is_in_the_readme_table_with_its_status() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let mut names = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(listed(code));
            assert!(names.insert(code.name()), "{} twice", code.name());
            let row = format!("| `{}` | {} |", code.name(), code.status().as_u16());
            assert!(
                readme.lines().any(|line| line.starts_with(&row)),
                "README's error table lacks the row `{row} …`"
            );
        }
        let rows = readme
            .lines()
            .filter(|l| {
                l.starts_with("| `")
                    && l.split('|').nth(2).is_some_and(|s| {
                        let s = s.trim();
                        s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())
                    })
            })
            .count();
        assert_eq!(rows, ErrorCode::ALL.len(), "the table lists no other code");
    }
}
