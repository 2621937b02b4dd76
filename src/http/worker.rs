//! `GET /api/v1/runs/{id}/facts`: what a Slurm server pulls from the worker of its
//! run every tick. The run's journaled events after a sequence number, each in the
//! journal's own encoding (so the server journals exactly the fact the worker
//! recorded, NaN figures included), and its newest sampled progress. Every server
//! answers it; a worker is a server whose journal holds its one run.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::Problem;
use super::error::PROBLEM;
use super::runs::existing_run_id;
use super::{ApiError, AppState};
use crate::domain::Seq;
use crate::slurm::facts::{Fact, Facts};

/// Most facts in one answer.
pub const MAX_FACTS: usize = 1000;

/// Query of `GET /api/v1/runs/{id}/facts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsQuery {
    /// Only facts with a larger sequence number.
    #[serde(default)]
    after: Seq,
}

/// `GET /api/v1/runs/{id}/facts`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/facts",
    tag = "runs",
    operation_id = "run_facts",
    summary = "A run's facts and live progress, for the server that follows it",
    description = "What a Slurm server pulls from its worker every tick: the run's durable \
        events after `after`, each as the journal's own record (bincode, base64), and the \
        newest progress sample. Any server answers it.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        ("after" = Option<u64>, Query, description = "Only facts with a larger sequence number (default 0)."),
    ),
    responses(
        (status = 200, description = "The facts and the progress.", body = Facts),
        (status = 400, description = "`invalid_query`: an unknown parameter or a value that is not a whole number.", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: something failed on the server's side.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read now; retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn facts(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<FactsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = existing_run_id(&state, &path)?;
    let (run_state, progress) = {
        let fold = state.actors.reader.state();
        let run_state = fold.run(id).map(|r| r.state);
        let progress = state
            .actors
            .board
            .get(id)
            .filter(|_| run_state.is_some_and(|s| s.is_live()));
        (run_state.map(|s| s.name()).unwrap_or("unknown"), progress)
    };
    let records = state
        .actors
        .reader
        .durable_run_events(id, query.after, MAX_FACTS)
        .await?;
    Ok(HttpResponse::Ok().json(Facts {
        state: run_state.to_string(),
        progress,
        facts: records
            .iter()
            .map(|(seq, env)| Fact::new(*seq, env))
            .collect(),
    }))
}

/// `POST /api/v1/runs/{id}/worker`: a Slurm worker registers where it listens.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/worker",
    tag = "runs",
    operation_id = "register_worker",
    summary = "A Slurm worker registers where it listens",
    description = "Sent once by `runyard worker` when it listens, with its job's secret as \
        `Authorization: Bearer SECRET` (not an API token: the secret the server made for \
        the job). The server pulls the run's facts from that address from then on. Workers \
        also register through `worker.json` in the shared directory, which is enough on its \
        own; this only saves the wait for the server to find that file.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
    ),
    request_body(content = crate::slurm::files::Registration, content_type = "application/json"),
    responses(
        (status = 204, description = "Registered: the server pulls from the worker from now on."),
        (status = 400, description = "`malformed_body`: the body is not a registration, or its `address` is not `IP:PORT`.", body = Problem, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: the job's secret is missing or wrong.", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`conflict`: the run has no Slurm job running, or the registration names another job.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: the job's secret could not be read.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn register(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: actix_web::HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    use super::ErrorCode;
    let id = existing_run_id(&state, &path)?;
    let job = {
        let fold = state.actors.reader.state();
        fold.run(id)
            .and_then(|run| run.slurm.clone())
            .filter(|job| job.ended.is_none())
    };
    let (Some(job), Some(slurm)) = (job, state.actors.slurm.clone()) else {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("run {id} has no Slurm job running"),
        ));
    };
    // The job's secret is checked as any token is: against the hash in the tokens
    // file the server wrote for the job's worker.
    let presented = super::auth::bearer_token(req.headers()).map(str::to_owned);
    let tokens_file = std::path::Path::new(&job.dir).join("tokens.toml");
    let tokens = web::block(move || super::auth::Tokens::load(&tokens_file))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot read the secret of job {}: {e}", job.job_id),
            )
        })?;
    let Some(secret) = presented.filter(|p| tokens.verify(p).is_some()) else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "send the job's secret (the `secret` file of its directory) as `Authorization: Bearer SECRET`",
        ));
    };
    let registration: crate::slurm::files::Registration = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::MalformedBody, format!("not a registration: {e}")))?;
    if registration
        .address
        .parse::<std::net::SocketAddr>()
        .is_err()
    {
        return Err(ApiError::new(
            ErrorCode::MalformedBody,
            format!("address must be IP:PORT, got {:?}", registration.address),
        ));
    }
    if let Some(other) = registration.job_id.filter(|j| *j != job.job_id) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "the registration is for Slurm job {other}; run {id}'s job is {}",
                job.job_id
            ),
        ));
    }
    slurm.do_send(crate::actors::slurm::WorkerRegistered {
        run_id: id,
        job_id: job.job_id,
        registration,
        secret,
    });
    Ok(HttpResponse::NoContent().finish())
}
