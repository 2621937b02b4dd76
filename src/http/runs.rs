//! `/api/v1/runs`: submit, list, get, events, cancel.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, ErrorCode, MAX_BODY_BYTES};
use crate::actors::dispatcher::{
    CancelOutcome, CancelRun, PauseOutcome, PauseRun, ResumeRun, SubmitRun,
};
use crate::actors::Progress;
use crate::domain::state::CheckpointRef;
use crate::domain::{Envelope, Run, RunId, RunSpec, RunState, Seq};

/// A run as the API shows it: its fold, plus live progress and summary metrics.
#[derive(Debug, Serialize)]
pub struct RunView<'a> {
    #[serde(flatten)]
    run: &'a Run,
    progress: Option<Progress>,
    metrics: Metrics,
    /// The checkpoints the keep policy leaves on disk, oldest first.
    checkpoints_kept: &'a [CheckpointRef],
    /// 1-based place in the queue, for a queued run.
    queue_position: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Metrics {
    epochs_completed: usize,
    train_loss: Option<f64>,
    train_accuracy: Option<f64>,
    best_train_accuracy: Option<f64>,
    /// Validation loss after the last evaluated epoch.
    val_loss: Option<f64>,
    /// Validation accuracy (classification) or MAE (regression) after the last
    /// evaluated epoch.
    val_metric: Option<f64>,
    /// The best validation metric of any epoch (highest accuracy, lowest MAE).
    best_val_metric: Option<f64>,
    /// Sum of the journaled epochs' wall times.
    training_time_ms: u64,
}

impl<'a> RunView<'a> {
    /// The view of `run` with the newest progress sample, if it is live.
    pub fn new(run: &'a Run, progress: Option<Progress>, queue_position: Option<usize>) -> Self {
        let last = run.epochs.last();
        let keep = run.keep as usize;
        let kept_from = run.checkpoints.len().saturating_sub(keep);
        Self {
            run,
            progress: progress.filter(|_| run.state == RunState::Running),
            metrics: Metrics {
                epochs_completed: run.epochs.len(),
                train_loss: last.map(|e| e.train_loss),
                train_accuracy: last.map(|e| e.train_accuracy),
                best_train_accuracy: run.epochs.iter().map(|e| e.train_accuracy).reduce(f64::max),
                val_loss: run.epochs.iter().rev().find_map(|e| e.val_loss),
                val_metric: run.epochs.iter().rev().find_map(|e| e.val_metric),
                best_val_metric: {
                    let metrics = run.epochs.iter().filter_map(|e| e.val_metric);
                    if run.task == crate::domain::spec::Task::Regression {
                        metrics.reduce(f64::min)
                    } else {
                        metrics.reduce(f64::max)
                    }
                },
                training_time_ms: run.epochs.iter().map(|e| e.duration_ms).sum(),
            },
            checkpoints_kept: &run.checkpoints[kept_from..],
            queue_position,
        }
    }
}

/// One journaled event as the API shows it.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// Journal sequence number.
    pub seq: Seq,
    /// When it was recorded.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The run it is about.
    pub run_id: RunId,
    /// The event's name, e.g. `EpochCompleted`.
    pub r#type: &'static str,
    /// The event's fields.
    pub data: serde_json::Value,
}

impl EventView {
    /// The view of the record at `seq`.
    pub fn new(seq: Seq, envelope: &Envelope) -> Self {
        Self {
            seq,
            at: envelope.recorded_at(),
            run_id: envelope.run_id,
            r#type: envelope.event.kind().name(),
            data: envelope.event.data_json(),
        }
    }
}

/// Parses a run id from a path segment; anything else cannot name a run.
pub fn parse_run_id(raw: &str) -> Result<RunId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::RunNotFound,
            format!("no run with id `{raw}` (not a run id)"),
        )
    })
}

async fn read_body(mut payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(ErrorCode::MalformedBody, e.to_string()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a run id from a path segment and checks that the run exists.
pub fn existing_run_id(state: &AppState, raw: &str) -> Result<RunId, ApiError> {
    let id = parse_run_id(raw)?;
    match state.actors.reader.state().run(id) {
        Some(_) => Ok(id),
        None => Err(ApiError::run_not_found(id)),
    }
}

/// Answers with the run's view and the given status.
fn run_response(
    state: &AppState,
    id: RunId,
    mut response: actix_web::HttpResponseBuilder,
) -> Result<HttpResponse, ApiError> {
    let fold = state.actors.reader.state();
    let run = fold.run(id).ok_or_else(|| ApiError::run_not_found(id))?;
    let position = (run.state == RunState::Queued)
        .then(|| fold.queue().iter().position(|q| *q == id).map(|p| p + 1))
        .flatten();
    Ok(response.json(RunView::new(run, state.actors.board.get(id), position)))
}

/// Parses and checks a JSON run spec; the error names the field at fault.
pub fn parse_spec(body: &[u8]) -> Result<RunSpec, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let spec: RunSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::new(ErrorCode::InvalidSpec, join_path(&path, &inner.to_string()))
            }
            _ => ApiError::new(
                ErrorCode::MalformedBody,
                format!("body is not valid JSON: {inner}"),
            ),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedBody,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    spec.validate()
        .map_err(|e| ApiError::new(ErrorCode::InvalidSpec, e.to_string()))?;
    Ok(spec)
}

/// Joins the path serde stopped at with a message that may start with a path inside a
/// tagged object (`model` + `hidden[0]: invalid type ...`).
fn join_path(path: &str, message: &str) -> String {
    // serde reports the position as "line L column C"; it means nothing to a caller who
    // sent a valid document, so only the path is kept.
    let message = message.split(" at line ").next().unwrap_or(message);
    if path == "." || path.is_empty() {
        return message.to_string();
    }
    match message.split_once(": ") {
        Some((inner, rest)) if !inner.contains(' ') && !inner.contains('`') => {
            let sep = if inner.starts_with('[') { "" } else { "." };
            format!("{path}{sep}{inner}: {rest}")
        }
        _ => format!("{path}: {message}"),
    }
}

/// Loads the data a spec names (off the async threads) and checks the rules that
/// need its shape, so a wrong path, column or shape is a `422` now rather than a
/// failed run later.
async fn check_data(state: &AppState, spec: RunSpec) -> Result<RunSpec, ApiError> {
    let script = matches!(spec.model, crate::domain::spec::ModelSpec::Torchscript(_));
    if spec.data.declared_samples().is_some() && !script {
        return Ok(spec);
    }
    let roots = state.roots.clone();
    web::block(move || {
        let (train, _) = crate::train::data::load_run(&spec, &roots)?;
        spec.validate_shape(&train.shape())?;
        if script {
            // Load the module once on the CPU: a wrong file or shape is a 422 now.
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            crate::train::model::Net::build(
                &vs.root(),
                &spec.model,
                train.feature_count(),
                train.outputs,
                spec.seed,
                &roots,
            )?;
        }
        Ok::<_, crate::domain::SpecError>(spec)
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(|e| ApiError::new(ErrorCode::InvalidSpec, e.to_string()))
}

/// `POST /api/v1/runs`: answers `201` once `RunSubmitted` is durable, or `200` with the
/// existing run when the same spec was submitted before.
pub async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
        let value = content_type.to_str().unwrap_or_default();
        let mime = value.split(';').next().unwrap_or_default().trim();
        if !(mime == "application/json" || mime.ends_with("+json")) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("content type `{value}` is not accepted; send application/json"),
            ));
        }
    }
    let body = read_body(payload).await?;
    let spec = parse_spec(&body)?;
    let available = state.actors.slots.len();
    if spec.slots as usize > available {
        return Err(ApiError::new(
            ErrorCode::InvalidSpec,
            format!(
                "slots: the run needs {} slots together, this server has {available}",
                spec.slots
            ),
        ));
    }
    let spec = check_data(&state, spec).await?;
    let submitted = state
        .actors
        .dispatcher
        .send(SubmitRun {
            run_id: RunId::new(),
            spec,
        })
        .await??;
    let mut response = if submitted.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    response.insert_header((
        header::LOCATION,
        format!("/api/v1/runs/{}", submitted.run_id),
    ));
    if !submitted.created {
        wait_durable(&state, submitted.run_id).await?;
    }
    run_response(&state, submitted.run_id, response)
}

/// Waits until run `id` is in the durable state. A duplicate can name a run whose own
/// submission is accepted but still being flushed: it is answered only once that is
/// on disk, so a client is never told of a run a crash could still take back.
async fn wait_durable(state: &AppState, id: RunId) -> Result<(), ApiError> {
    let reader = &state.actors.reader;
    let mut tail = reader.subscribe();
    let wait = async {
        loop {
            if reader.state().run(id).is_some() {
                return Ok(());
            }
            if let Some(reason) = reader.health().degraded() {
                return Err(reason);
            }
            if tail.changed().await.is_err() {
                return Err("the journal stopped".to_string());
            }
        }
    };
    let unavailable = |why: String| {
        ApiError::new(
            ErrorCode::JournalUnavailable,
            format!("the run {id} this spec duplicates is not durable: {why}; retry later"),
        )
    };
    match tokio::time::timeout(DUPLICATE_WAIT, wait).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(unavailable(why)),
        Err(_) => Err(unavailable(format!(
            "its submission was not flushed within {} s",
            DUPLICATE_WAIT.as_secs()
        ))),
    }
}

/// How long a duplicate submission waits for the original to be durable.
const DUPLICATE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Query of `GET /api/v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
}

/// `GET /api/v1/runs`: every run, newest first, optionally filtered by state.
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let wanted = query.state.as_deref();
    if let Some(w) = wanted {
        if !RunState::ALL.iter().any(|s| s.name() == w) {
            let names: Vec<&str> = RunState::ALL.iter().map(|s| s.name()).collect();
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("state: `{w}` is not one of {}", names.join(", ")),
            ));
        }
    }
    let fold = state.actors.reader.state();
    let positions: std::collections::HashMap<RunId, usize> = fold
        .queue()
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i + 1))
        .collect();
    let views: Vec<RunView> = fold
        .runs()
        .rev()
        .filter(|run| wanted.is_none_or(|w| run.state.name() == w))
        .map(|run| {
            let position = positions.get(&run.id).copied();
            RunView::new(run, state.actors.board.get(run.id), position)
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Query of `GET /api/v1/runs/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// Show the run as it was right after this sequence number.
    at_seq: Option<Seq>,
}

/// `GET /api/v1/runs/{id}[?at_seq=N]`: the run now, or as it was right after event
/// `N` (a fold of its events up to `N`; live progress is not part of the past).
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path)?;
    let Some(at) = query.at_seq else {
        return run_response(&state, id, HttpResponse::Ok());
    };
    let id = existing_run_id(&state, &path)?;
    let records = state
        .actors
        .reader
        .durable_run_events(id, 0, usize::MAX)
        .await?;
    let past = crate::domain::State::from_events(
        records
            .iter()
            .take_while(|(seq, _)| *seq <= at)
            .map(|(seq, envelope)| (*seq, envelope)),
    );
    let run = past.run(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::RunNotFound,
            format!("run {id} did not exist yet at sequence number {at}"),
        )
    })?;
    Ok(HttpResponse::Ok().json(RunView::new(run, None, None)))
}

/// Query of `GET /api/v1/runs/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events with a larger sequence number.
    #[serde(default)]
    after: Seq,
    /// At most this many events (default and maximum 10,000).
    limit: Option<usize>,
}

/// `GET /api/v1/runs/{id}/events`: the run's journaled events, in order.
pub async fn events(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = existing_run_id(&state, &path)?;
    let limit = query.limit.unwrap_or(10_000).clamp(1, 10_000);
    let records = state
        .actors
        .reader
        .durable_run_events(id, query.after, limit)
        .await?;
    let views: Vec<EventView> = records
        .iter()
        .map(|(seq, env)| EventView::new(*seq, env))
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

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
pub async fn cancel(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path)?;
    let outcome = state
        .actors
        .dispatcher
        .send(CancelRun { run_id: id })
        .await??;
    match outcome {
        CancelOutcome::Cancelled => run_response(&state, id, HttpResponse::Ok()),
        CancelOutcome::Requested => answer_when_stopped(&state, id, RunState::is_terminal).await,
    }
}

/// `POST /api/v1/runs/{id}/pause`: a queued run is paused at once; a running one
/// checkpoints at its next batch boundary and gives its slot back. Answers `200` with
/// the paused run, `202` if it has not stopped within the wait, `409` otherwise.
pub async fn pause(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path)?;
    let outcome = state
        .actors
        .dispatcher
        .send(PauseRun { run_id: id })
        .await??;
    match outcome {
        PauseOutcome::Paused => run_response(&state, id, HttpResponse::Ok()),
        PauseOutcome::Requested => {
            answer_when_stopped(&state, id, |s| s == RunState::Paused || s.is_terminal()).await
        }
    }
}

/// `POST /api/v1/runs/{id}/resume`: a paused run goes back to the queue and continues
/// from its checkpoint. Answers `200` with the run, `409` if it is not paused.
pub async fn resume(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path)?;
    state
        .actors
        .dispatcher
        .send(ResumeRun { run_id: id })
        .await??;
    run_response(&state, id, HttpResponse::Ok())
}

/// `GET /api/v1/runs/{id}/artifacts/{name}`: downloads the final weights or a kept
/// checkpoint. Only files the journal names are served.
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
