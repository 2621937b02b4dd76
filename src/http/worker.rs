//! `GET /api/v1/runs/{id}/facts`: what a Slurm server pulls from the worker of its
//! run every tick. The run's journaled events after a sequence number, each in the
//! journal's own encoding (so the server journals exactly the fact the worker
//! recorded, NaN figures included), and its newest sampled progress. Every server
//! answers it; a worker is a server whose journal holds its one run.

use actix_web::{web, HttpResponse};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::Problem;
use super::openapi::PROBLEM;
use super::runs::existing_run_id;
use super::{ApiError, AppState};
use crate::actors::ticker::Progress;
use crate::domain::{Envelope, Seq};

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

/// One journaled event of the run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Fact {
    /// Its sequence number in the answering server's journal.
    #[schema(value_type = u64)]
    pub seq: Seq,
    /// Its kind, e.g. `EpochCompleted` (for people reading the answer).
    pub kind: String,
    /// The journal's record of it (bincode of the versioned envelope), base64.
    pub envelope: String,
}

impl Fact {
    /// The fact of a journal record.
    pub fn new(seq: Seq, envelope: &Envelope) -> Self {
        Self {
            seq,
            kind: envelope.event.kind().name().to_string(),
            envelope: base64::engine::general_purpose::STANDARD
                .encode(crate::store::codec::encode(envelope)),
        }
    }

    /// The record back, or why it cannot be read.
    pub fn decode(&self) -> Result<Envelope, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.envelope)
            .map_err(|e| format!("fact {}: not base64: {e}", self.seq))?;
        crate::store::codec::decode(self.seq, &bytes).map_err(|e| format!("fact {}: {e}", self.seq))
    }
}

/// The answer of `GET /api/v1/runs/{id}/facts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Facts {
    /// The run's state in the answering server's journal.
    pub state: String,
    /// The newest progress sample while the run trains.
    pub progress: Option<Progress>,
    /// Journaled events after `after`, in order (at most 1,000: ask again after the
    /// last one for more).
    pub facts: Vec<Fact>,
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
