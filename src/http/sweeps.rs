//! `/api/v1/sweeps`: submit a sweep (JSON, YAML or TOML, like a run), list them, read
//! one with its trials, stream its events, and cancel, pause or resume it.
//!
//! A sweep's trials are ordinary runs (labelled `sweep` and `trial`), so everything
//! `/runs` offers works on them too; the views here add what only the sweep knows:
//! each trial's point, rung, results and where the searcher has it.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{Problem, PROBLEM};
use super::runs::read_body;
use super::runs::submit::{body_format, check_data, check_placement, CommandGate};
use super::{idempotency, ApiError, AppState, ErrorCode};
use crate::actors::sweeper::{ControlSweep, SubmitSweep, SweepCommand};
use crate::domain::spec::parse::{parse_as, SpecParseError};
use crate::domain::spec::{RunKind, RunSpec};
use crate::domain::state::{metric_of, RungResult, Sweep, SweepState};
use crate::domain::sweep::{Mode, SearcherSpec, SweepSpec, TrialStatus};
use crate::domain::{RunId, RunState, State};

/// One trial as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrialView {
    /// Its number in the sweep, from 0.
    pub number: u32,
    /// Its run (`/api/v1/runs/{run_id}`).
    pub run_id: RunId,
    /// Its values by field path of the base spec.
    #[schema(value_type = Object)]
    pub point: Value,
    /// Where the searcher has it: `training`, `waiting` (paused at the end of `rung`),
    /// `finished`, `stopped` (by the sweep) or `failed`; `rung` with the first two.
    #[serde(flatten)]
    pub status: TrialStatus,
    /// Its metric at the end of each rung it finished.
    pub results: Vec<Option<f64>>,
    /// Its newest result.
    pub metric: Option<f64>,
    /// Its run's state.
    pub run_state: Option<RunState>,
    /// Epochs its run has finished.
    pub epochs: u32,
    /// The sweep's metric after each finished epoch (where the run reports it): the
    /// trial's validation curve.
    pub curve: Vec<Option<f64>>,
}

impl TrialView {
    fn of(fold: &State, sweep: &Sweep, number: u32) -> Option<Self> {
        let trial = sweep.trial(number)?;
        let run = fold.run(trial.run_id);
        let metric = sweep
            .checked()
            .map_or("val_accuracy", |c| c.metric.as_str());
        let curve = run.map_or_else(Vec::new, |run| {
            run.epochs
                .iter()
                .map(|e| {
                    let value = metric_of(run, metric, e.epoch);
                    value.is_finite().then_some(value)
                })
                .collect()
        });
        Some(Self {
            number,
            run_id: trial.run_id,
            point: trial.point.clone(),
            status: trial.status,
            results: trial.results.clone(),
            metric: trial.metric(),
            run_state: run.map(|r| r.state),
            epochs: run.and_then(|r| r.epochs.last()).map_or(0, |e| e.epoch),
            curve,
        })
    }
}

/// A sweep as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SweepView {
    /// The sweep's id.
    pub id: RunId,
    /// Its name.
    pub name: String,
    /// `running`, `paused`, `completed` or `cancelled`.
    pub state: SweepState,
    /// `grid`, `random` or `asha`.
    pub searcher: &'static str,
    /// The metric that ranks trials.
    pub metric: String,
    /// Which way it is better.
    pub mode: Mode,
    /// The epochs a trial has trained at the end of each rung (one rung for grid and
    /// random search).
    pub rungs: Vec<u32>,
    /// Trials the sweep makes at most.
    pub max_trials: u32,
    /// Trials training at once, at most.
    pub max_concurrent: u32,
    /// Trials by where the searcher has them (`training`, `waiting`, `finished`,
    /// `stopped`, `failed`).
    pub counts: BTreeMap<&'static str, usize>,
    /// The best trial so far (once completed, the sweep's answer).
    pub best: Option<TrialView>,
    /// Every trial (left out of the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trials: Option<Vec<TrialView>>,
    /// Every rung result in the order they came (left out of the list): the
    /// best-so-far curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<RungResult>>,
    /// The spec as submitted (left out of the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<SweepSpec>,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When its last event was recorded.
    pub updated_at: DateTime<Utc>,
}

impl SweepView {
    /// The view of `sweep`; `full` adds its trials, results and spec.
    pub fn of(fold: &State, sweep: &Sweep, full: bool) -> Self {
        let checked = sweep.checked();
        let searcher = match sweep.spec.searcher {
            SearcherSpec::Grid { .. } => "grid",
            SearcherSpec::Random { .. } => "random",
            SearcherSpec::Asha { .. } => "asha",
        };
        let trials = full.then(|| {
            (0..sweep.trials.len() as u32)
                .filter_map(|n| TrialView::of(fold, sweep, n))
                .collect()
        });
        Self {
            id: sweep.id,
            name: sweep.name.clone(),
            state: sweep.state,
            searcher,
            metric: checked.map(|c| c.metric.clone()).unwrap_or_default(),
            mode: checked.map(|c| c.schedule.mode).unwrap_or_default(),
            rungs: checked
                .map(|c| c.schedule.rungs.clone())
                .unwrap_or_default(),
            max_trials: checked.map_or(0, |c| c.schedule.max_trials),
            max_concurrent: checked.map_or(0, |c| c.schedule.max_concurrent),
            counts: sweep.counts().into_iter().collect(),
            best: sweep.best.and_then(|n| TrialView::of(fold, sweep, n)),
            trials,
            results: full.then(|| sweep.results.clone()),
            spec: full.then(|| sweep.spec.clone()),
            reason: sweep.reason.clone(),
            created_at: sweep.created_at,
            updated_at: sweep.updated_at,
        }
    }
}

/// A sweep id from the path; anything else names no sweep.
fn existing_sweep_id(state: &AppState, raw: &str) -> Result<RunId, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::SweepNotFound,
            format!("no sweep with id `{raw}`"),
        )
    };
    let id: RunId = raw.parse().map_err(|_| not_found())?;
    state
        .actors
        .reader
        .state()
        .sweep(id)
        .map(|_| id)
        .ok_or_else(not_found)
}

/// Answers with the sweep's full view.
fn sweep_response(
    state: &AppState,
    id: RunId,
    mut response: actix_web::HttpResponseBuilder,
) -> Result<HttpResponse, ApiError> {
    let fold = state.actors.reader.state();
    let sweep = fold
        .sweep(id)
        .ok_or_else(|| ApiError::new(ErrorCode::SweepNotFound, format!("no sweep with id {id}")))?;
    Ok(response.json(SweepView::of(&fold, sweep, true)))
}

fn invalid_sweep(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSweep, detail)
}

/// `POST /api/v1/sweeps`: answers `201` once `SweepSubmitted` is durable; its first
/// trials follow at once.
#[utoipa::path(
    post,
    path = "/api/v1/sweeps",
    tag = "sweeps",
    operation_id = "submit_sweep",
    summary = "Submit a sweep",
    description = "Reads a sweep spec as JSON, YAML or TOML (as `POST /runs` reads a run \
        spec), checks it — its base as a run spec, its space, its searcher, and that every \
        listed value and both ends of every range make a valid trial spec — and answers `201` \
        with the sweep once `SweepSubmitted` is durable. Its trials are runs labelled `sweep` \
        and `trial`.",
    params(
        (
            "Idempotency-Key" = Option<String>,
            Header,
            nullable = false,
            description = "Makes the request safe to retry, as for `POST /runs`."
        ),
    ),
    request_body(
        description = "The sweep spec.",
        content(
            (SweepSpec = "application/json"),
            (SweepSpec = "application/yaml"),
            (SweepSpec = "application/toml"),
        ),
    ),
    responses(
        (status = 201, description = "The new sweep, once `SweepSubmitted` is durable.", body = SweepView,
            headers(("Location" = String, description = "The sweep's URL, `/api/v1/sweeps/{id}`."))),
        (status = 400, description = "`malformed_body`: not a well-formed document (names the line and column); `invalid_header`: a malformed `Idempotency-Key`.", body = Problem, content_type = PROBLEM),
        (status = 403, description = "`commands_disabled`: a `command` base, and the server does not accept commands (`runyard serve --allow-commands`); `forbidden`: a `command` base needs an `admin` token when tokens are configured.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`idempotency_key_reused`: the `Idempotency-Key` was used for another request.", body = Problem, content_type = PROBLEM),
        (status = 413, description = "`body_too_large`: the body is over the server's limit.", body = Problem, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON, YAML or TOML.", body = Problem, content_type = PROBLEM),
        (status = 422, description = "`invalid_sweep`: the spec breaks a rule, names the path (`space.optimizer.lr.loguniform: lo must be > 0`, `space.model.width: the base has no field model.width`); `invalid_spec`: the base names data that cannot be read, or more slots than the server has; `executor_disabled`: the base's executor is not enabled on this server.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let format = body_format(&req)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let gate = CommandGate::of(&req, &state);
    idempotency::guard(&req, &state, &body, || async {
        let spec: SweepSpec = parse_as(format, &body).map_err(|e| match e {
            SpecParseError::Malformed(m) => ApiError::new(ErrorCode::MalformedBody, m),
            SpecParseError::Invalid(m) => invalid_sweep(m),
        })?;
        let checked = spec.check().map_err(|e| invalid_sweep(e.to_string()))?;
        let base: RunSpec = serde_json::from_value(checked.base.clone())
            .map_err(|e| invalid_sweep(format!("base: {e}")))?;
        if base.kind == RunKind::Command {
            gate.check()?;
        }
        check_placement(&state, &base, "base.")?;
        check_data(&state, base).await?;
        let id = RunId::new();
        state
            .actors
            .sweeper
            .send(SubmitSweep { id, spec })
            .await??;
        let mut response = HttpResponse::Created();
        response.insert_header((header::LOCATION, format!("/api/v1/sweeps/{id}")));
        sweep_response(&state, id, response)
    })
    .await
}

/// `GET /api/v1/sweeps`: every sweep, newest first, without its trials.
#[utoipa::path(
    get,
    path = "/api/v1/sweeps",
    tag = "sweeps",
    operation_id = "list_sweeps",
    summary = "List sweeps",
    description = "Every sweep, newest first: state, searcher, counts of trials by status and \
        the best trial so far (the trials themselves are in `GET /sweeps/{id}`).",
    responses(
        (status = 200, description = "The sweeps.", body = Vec<SweepView>),
    )
)]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let fold = state.actors.reader.state();
    let views: Vec<SweepView> = fold
        .sweeps()
        .rev()
        .map(|s| SweepView::of(&fold, s, false))
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// `GET /api/v1/sweeps/{id}`: the sweep with its trials.
#[utoipa::path(
    get,
    path = "/api/v1/sweeps/{id}",
    tag = "sweeps",
    operation_id = "get_sweep",
    summary = "Get a sweep",
    description = "The sweep with every trial (point, status, rung, results, its run's state \
        and validation curve), the best so far and every rung result in order.",
    params(("id" = String, Path, description = "The sweep's id (a UUID).")),
    responses(
        (status = 200, description = "The sweep.", body = SweepView),
        (status = 404, description = "`sweep_not_found`: no sweep with that id.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = existing_sweep_id(&state, &path)?;
    sweep_response(&state, id, HttpResponse::Ok())
}

async fn control(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    command: SweepCommand,
) -> Result<HttpResponse, ApiError> {
    let id = existing_sweep_id(&state, &path)?;
    idempotency::guard(&req, &state, &[], || async {
        state
            .actors
            .sweeper
            .send(ControlSweep { id, command })
            .await??;
        sweep_response(&state, id, HttpResponse::Ok())
    })
    .await
}

/// `POST /api/v1/sweeps/{id}/cancel`.
#[utoipa::path(
    post,
    path = "/api/v1/sweeps/{id}/cancel",
    tag = "sweeps",
    operation_id = "cancel_sweep",
    summary = "Cancel a sweep",
    description = "Journals `SweepCancelled`: the sweep makes no more trials, and every trial \
        run not yet ended is cancelled (a live one at its next batch boundary). Answers `200` \
        with the sweep once the cancel is durable.",
    params(("id" = String, Path, description = "The sweep's id (a UUID).")),
    responses(
        (status = 200, description = "The sweep, cancelled.", body = SweepView),
        (status = 404, description = "`sweep_not_found`: no sweep with that id.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`conflict`: the sweep already ended.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(req, state, path, SweepCommand::Cancel).await
}

/// `POST /api/v1/sweeps/{id}/pause`.
#[utoipa::path(
    post,
    path = "/api/v1/sweeps/{id}/pause",
    tag = "sweeps",
    operation_id = "pause_sweep",
    summary = "Pause a sweep",
    description = "Journals `SweepPaused`: nothing more is decided, and every trial queued or \
        training is paused (from a checkpoint, as a run's pause). Answers `200` once the pause \
        is durable.",
    params(("id" = String, Path, description = "The sweep's id (a UUID).")),
    responses(
        (status = 200, description = "The sweep, paused.", body = SweepView),
        (status = 404, description = "`sweep_not_found`: no sweep with that id.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`conflict`: the sweep is not running.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn pause(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(req, state, path, SweepCommand::Pause).await
}

/// `POST /api/v1/sweeps/{id}/resume`.
#[utoipa::path(
    post,
    path = "/api/v1/sweeps/{id}/resume",
    tag = "sweeps",
    operation_id = "resume_sweep",
    summary = "Resume a sweep",
    description = "Journals `SweepResumed`: decisions go on, and the trials paused short of \
        their rung's end are resumed from their checkpoints. Answers `200` once it is durable.",
    params(("id" = String, Path, description = "The sweep's id (a UUID).")),
    responses(
        (status = 200, description = "The sweep, running.", body = SweepView),
        (status = 404, description = "`sweep_not_found`: no sweep with that id.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`conflict`: the sweep is not paused.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn resume(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(req, state, path, SweepCommand::Resume).await
}
