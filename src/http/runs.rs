//! `/api/v1/runs`: submit (JSON, YAML or TOML), list (filters, sort, cursor pages), get,
//! events, cancel, pause, resume, artifacts (download, delete).

use actix_web::http::header;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::error::Problem;
use super::error::PROBLEM;
use super::{bulk, ApiError, AppState, ErrorCode};
use crate::actors::dispatcher::{
    CancelOutcome, CancelRun, DispatchError, PauseOutcome, PauseRun, ResumeRun, SubmitRun,
};
use crate::actors::files::{self, DeleteError};
use crate::domain::state::{CheckpointRef, ProtocolReport};
use crate::domain::Progress;
use crate::domain::{Envelope, Run, RunId, RunSpec, RunState, Seq};

/// A run as the API shows it: its fold, plus live progress and summary metrics.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunView<'a> {
    #[serde(flatten)]
    run: &'a Run,
    /// The newest progress sample, while the run is running.
    progress: Option<Progress>,
    /// Summary metrics of the journaled epochs.
    metrics: Metrics,
    /// The checkpoints the keep policy leaves on disk, oldest first.
    checkpoints_kept: &'a [CheckpointRef],
    /// 1-based place in the queue, for a queued run.
    queue_position: Option<usize>,
    /// A command run's progress-pipe figures (lines, bad lines by kind, the last
    /// error, the newest free-form metrics): live while its command runs, else
    /// those journaled when its last attempt ended. Absent for training runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<ProtocolReport>,
    /// A Slurm run's job as Slurm and its worker show it now (`state` `PENDING` with
    /// Slurm's `reason` while the run is queued; `unreachable` while its worker does
    /// not answer). Absent for local runs and ended jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    slurm_live: Option<crate::actors::slurm::SlurmLive>,
}

/// Summary metrics of a run's journaled epochs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RunMetrics)]
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
        // Once the run's files are deleted, no checkpoint is left on disk.
        let keep = if run.files_deleted.is_some() {
            0
        } else {
            run.keep as usize
        };
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
            protocol: run.protocol.clone(),
            slurm_live: None,
        }
    }

    /// Shows the live view of a Slurm run's job, when it has one.
    pub fn with_slurm(mut self, live: Option<crate::actors::slurm::SlurmLive>) -> Self {
        self.slurm_live = live;
        self
    }

    /// Shows the live progress-pipe figures of a running command, when there are.
    pub fn with_live_protocol(mut self, live: Option<ProtocolReport>) -> Self {
        if live.is_some() {
            self.protocol = live;
        }
        self
    }
}

/// One journaled event as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Journal sequence number.
    #[schema(value_type = u64)]
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

/// Reads a request body of at most `limit` bytes; a larger one is a `413` naming the
/// limit (checked against `Content-Length` first, so it is not read at all).
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "request body is larger than the limit of {limit} bytes (server.max_body_bytes)"
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(ErrorCode::MalformedBody, e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
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
    let position = fold.queue_position(id);
    Ok(response.json(
        RunView::new(run, state.actors.board.get(id), position)
            .with_live_protocol(state.actors.commands.get(id))
            .with_slurm(state.actors.slurm_board.read(id, Clone::clone)),
    ))
}

/// A format a run spec can be sent in, chosen by the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// `application/json` (or any `+json` type); also what a body without a
    /// `Content-Type` is read as.
    Json,
    /// `application/yaml`, `application/x-yaml`, `text/yaml` (or any `+yaml` type).
    Yaml,
    /// `application/toml`.
    Toml,
}

/// The media types `POST /api/v1/runs` accepts, as its `415` names them.
pub const ACCEPTED_SPEC_TYPES: &str =
    "application/json, application/yaml (or application/x-yaml, text/yaml) or application/toml";

impl SpecFormat {
    /// The format a `Content-Type` value names (parameters such as `charset` are
    /// ignored), or `None` when it is not one runyard reads.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let mime = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(SpecFormat::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
                Some(SpecFormat::Yaml)
            }
            "application/toml" => Some(SpecFormat::Toml),
            m if m.ends_with("+json") => Some(SpecFormat::Json),
            m if m.ends_with("+yaml") => Some(SpecFormat::Yaml),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SpecFormat::Json => "JSON",
            SpecFormat::Yaml => "YAML",
            SpecFormat::Toml => "TOML",
        }
    }
}

/// Parses and checks a run spec sent as `format`. A body that is not a document of
/// that format is a `400 malformed_body` naming the line and column; a document that
/// is not a valid spec is a `422 invalid_spec` naming the field.
pub fn parse_spec_as(format: SpecFormat, body: &[u8]) -> Result<RunSpec, ApiError> {
    let text = match format {
        SpecFormat::Json => return parse_spec(body),
        SpecFormat::Yaml | SpecFormat::Toml => std::str::from_utf8(body).map_err(|e| {
            let (line, column) = line_column(body, e.valid_up_to());
            ApiError::new(
                ErrorCode::MalformedBody,
                format!(
                    "body is not valid {}: line {line} column {column}: not UTF-8 (byte {})",
                    format.name(),
                    e.valid_up_to()
                ),
            )
        })?,
    };
    let malformed = |message: String| {
        ApiError::new(
            ErrorCode::MalformedBody,
            format!("body is not valid {}: {message}", format.name()),
        )
    };
    // Read into a JSON tree first: the document's own errors keep their position, and
    // the spec is then read exactly as a JSON body is (same rules, same field paths).
    let tree: serde_json::Value = match format {
        SpecFormat::Yaml => serde_saphyr::from_str(text).map_err(|e| {
            let message = e.without_snippet().to_string();
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            malformed(one_line(message))
        })?,
        _ => toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |span| span.start.min(text.len()));
            let (line, column) = line_column(text.as_bytes(), at);
            malformed(format!(
                "line {line} column {column}: {}",
                one_line(e.message())
            ))
        })?,
    };
    let spec: RunSpec = serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        ApiError::new(
            ErrorCode::InvalidSpec,
            join_path(&path, &e.into_inner().to_string()),
        )
    })?;
    spec.validate()
        .map_err(|e| ApiError::new(ErrorCode::InvalidSpec, e.to_string()))?;
    Ok(spec)
}

/// 1-based line and column (in characters) of byte offset `at` of `text`.
fn line_column(text: &[u8], at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, column)
}

/// A multi-line parser message on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
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
    let Ok((model, data)) = spec.training_parts() else {
        // A command run: no data of the server's to check.
        return Ok(spec);
    };
    let script = matches!(model, crate::domain::spec::ModelSpec::Torchscript(_));
    if data.declared_samples().is_some() && !script {
        return Ok(spec);
    }
    let roots = state.roots.clone();
    web::block(move || {
        let (train, _) = crate::train::data::load_run(&spec, &roots)?;
        spec.validate_shape(&train.shape())?;
        if script {
            // Load the module once on the CPU: a wrong file or shape is a 422 now.
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let (model, _) = spec.training_parts()?;
            crate::train::model::Net::build(
                &vs.root(),
                model,
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
#[utoipa::path(
    post,
    path = "/api/v1/runs",
    tag = "runs",
    operation_id = "submit_run",
    summary = "Submit a run",
    description = "Reads a run spec as JSON, YAML or TOML, as its `Content-Type` says (a body \
        without one is read as JSON, and so is any `+json` type; any `+yaml` type is YAML), \
        checks it, and answers `201` with the run once `RunSubmitted` is durable. A spec whose \
        digest a run already has is answered as `on_duplicate` says.",
    params(
        (
            "on_duplicate" = Option<OnDuplicate>,
            Query,
            description = "What a spec whose digest a run already has does: `return_existing` \
                (the default: `200` with the newest such run), `rerun` (`201` with a new run) or \
                `reject` (`409 duplicate`). Empty counts as absent."
        ),
        (
            "Idempotency-Key" = Option<String>,
            Header,
            nullable = false,
            description = "Makes the request safe to retry: 1 to 255 visible ASCII characters. \
                A retry with the same key, method, path, query, content type and body within 24 \
                hours gets the first answer again (unless it was a `5xx`), with \
                `Idempotent-Replayed: true`, without doing the work twice."
        ),
        (
            "traceparent" = Option<String>,
            Header,
            nullable = false,
            description = "W3C trace context of the caller. When the server exports traces, \
                the new run's trace (root span `run`) becomes a child of this span, in the \
                caller's trace; without it (or when it is not sampled), the run gets a trace of \
                its own. The run's `trace_id` says which.",
            example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ),
    ),
    request_body(
        description = "The run spec. The same document is accepted as JSON, YAML or TOML.",
        content(
            (RunSpec = "application/json"),
            (RunSpec = "application/yaml"),
            (RunSpec = "application/x-yaml"),
            (RunSpec = "text/yaml"),
            (RunSpec = "application/toml"),
        ),
    ),
    responses(
        (
            status = 201,
            description = "The new run, once `RunSubmitted` is durable.",
            body = RunView,
            headers(
                ("Location" = String, description = "The run's URL, `/api/v1/runs/{id}`."),
                ("Idempotent-Replayed" = String, description = "`true` on an answer replayed for a retried `Idempotency-Key`."),
            )
        ),
        (
            status = 200,
            description = "A run with the same spec digest exists and `on_duplicate` is \
                `return_existing`: the newest such run.",
            body = RunView,
            headers(
                ("Location" = String, description = "The run's URL, `/api/v1/runs/{id}`."),
                ("Idempotent-Replayed" = String, description = "`true` on an answer replayed for a retried `Idempotency-Key`."),
            )
        ),
        (status = 400, description = "`malformed_body`: the body is not a well-formed document of its media type (names the line and column); `invalid_query`: an unknown parameter or `on_duplicate` value; `invalid_header`: a malformed `Idempotency-Key`.", body = Problem, content_type = PROBLEM),
        (status = 409, description = "`duplicate`: `on_duplicate=reject` and a run with the same spec digest exists (named); `idempotency_key_reused`: the `Idempotency-Key` was used for another request.", body = Problem, content_type = PROBLEM),
        (status = 413, description = "`body_too_large`: the body is larger than `server.max_body_bytes` (named).", body = Problem, content_type = PROBLEM),
        (status = 415, description = "`unsupported_media_type`: the `Content-Type` is not accepted (those that are are named).", body = Problem, content_type = PROBLEM),
        (status = 403, description = "`commands_disabled`: a `command` run, and the server does not accept them (`runyard serve --allow-commands`). With tokens configured, a `command` run also needs an `admin` token (`forbidden` otherwise).", body = Problem, content_type = PROBLEM),
        (status = 422, description = "`invalid_spec`: the spec breaks a rule, has an unknown field, or names data that cannot be read (names the field); `executor_disabled`: an `\"executor\": \"slurm\"` run, and the server has no Slurm executor enabled.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: something failed on the server's side.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<SubmitQuery>,
) -> Result<HttpResponse, ApiError> {
    let on_duplicate = OnDuplicate::parse(query.on_duplicate.as_deref())?;
    let format = match req.headers().get(header::CONTENT_TYPE) {
        None => SpecFormat::Json,
        Some(content_type) => {
            let value = String::from_utf8_lossy(content_type.as_bytes());
            SpecFormat::from_content_type(&value).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("content type `{value}` is not accepted; send {ACCEPTED_SPEC_TYPES}"),
                )
            })?
        }
    };
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    // Whoever may submit may run a command only where the server allows it, and, with
    // tokens configured, only with an admin token.
    let admin_missing = !state.tokens.is_empty()
        && req
            .extensions()
            .get::<super::auth::Caller>()
            .is_none_or(|caller| caller.role < super::auth::Role::Admin);
    let command_gate = CommandGate {
        allowed: state.allow_commands,
        admin_missing,
    };
    // Picked before the guard, so a replayed answer costs no trace.
    let trace = state
        .traces
        .as_ref()
        .map(|traces| traces.assign(super::traces::sampled_caller(req.headers()).as_ref()));
    super::idempotency::guard(&req, &state, &body, || {
        submit_spec(&state, format, on_duplicate, &body, trace, command_gate)
    })
    .await
}

/// Whether a command run may be submitted by this request.
#[derive(Debug, Clone, Copy)]
struct CommandGate {
    /// `runs.allow_commands`.
    allowed: bool,
    /// Tokens are configured and the caller's is not an admin one.
    admin_missing: bool,
}

impl CommandGate {
    fn check(self) -> Result<(), ApiError> {
        if !self.allowed {
            return Err(ApiError::new(
                ErrorCode::CommandsDisabled,
                "command runs execute programs on the server and this server does not accept \
                 them: start it with `runyard serve --allow-commands` or set \
                 `runs.allow_commands = true` (RUNYARD__RUNS__ALLOW_COMMANDS=true)",
            ));
        }
        if self.admin_missing {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "command runs need a token of role `admin`",
            ));
        }
        Ok(())
    }
}

/// The work of `POST /api/v1/runs` once its body is read.
async fn submit_spec(
    state: &AppState,
    format: SpecFormat,
    on_duplicate: OnDuplicate,
    body: &[u8],
    trace: Option<crate::domain::Event>,
    command_gate: CommandGate,
) -> Result<HttpResponse, ApiError> {
    let spec = parse_spec_as(format, body)?;
    if spec.kind == crate::domain::spec::RunKind::Command {
        command_gate.check()?;
    }
    if !spec.executor.is_local() && state.actors.slurm.is_none() {
        return Err(ApiError::new(
            ErrorCode::ExecutorDisabled,
            "executor: this server does not run Slurm jobs: enable them with \
             `[executors.slurm] enabled = true` and a `shared_dir` \
             (RUNYARD__EXECUTORS__SLURM__ENABLED=true, RUNYARD__EXECUTORS__SLURM__SHARED_DIR=...)",
        ));
    }
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
    let spec = check_data(state, spec).await?;
    let submitted = state
        .actors
        .dispatcher
        .send(SubmitRun {
            run_id: RunId::new(),
            spec,
            rerun: on_duplicate == OnDuplicate::Rerun,
            trace,
        })
        .await??;
    if !submitted.created && on_duplicate == OnDuplicate::Reject {
        wait_durable(state, submitted.run_id).await?;
        return Err(ApiError::new(
            ErrorCode::Duplicate,
            format!(
                "run {} has the same spec (digest); submit with on_duplicate=rerun for a new run, \
                 or on_duplicate=return_existing to be answered with that run",
                submitted.run_id
            ),
        ));
    }
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
        wait_durable(state, submitted.run_id).await?;
    }
    run_response(state, submitted.run_id, response)
}

/// Query of `POST /api/v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitQuery {
    /// What a spec whose digest a run already has does: `return_existing` (the
    /// default), `rerun` or `reject`.
    on_duplicate: Option<String>,
}

/// What a submission of a spec that a run already has does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum OnDuplicate {
    /// Answer `200` with the newest run of that digest.
    ReturnExisting,
    /// Make a new run all the same.
    Rerun,
    /// Answer `409 duplicate`, naming the existing run.
    Reject,
}

impl OnDuplicate {
    /// Reads the `on_duplicate` query parameter; absent or empty is `return_existing`.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw.unwrap_or_default() {
            "" | "return_existing" => Ok(OnDuplicate::ReturnExisting),
            "rerun" => Ok(OnDuplicate::Rerun),
            "reject" => Ok(OnDuplicate::Reject),
            other => Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("on_duplicate: `{other}` is not one of return_existing, rerun, reject"),
            )),
        }
    }
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

/// Most runs one page of `GET /api/v1/runs` holds.
pub const MAX_PAGE: usize = 1000;

/// The order of `GET /api/v1/runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortField {
    /// Submission order (the `RunSubmitted` sequence number).
    CreatedAt,
    /// Order of each run's newest event.
    UpdatedAt,
    /// Name, then submission order.
    Name,
}

/// A sort order: a field and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sort {
    field: SortField,
    descending: bool,
}

impl Sort {
    const ACCEPTED: &'static str = "created_at, -created_at, updated_at, -updated_at, name, -name";

    fn parse(raw: &str) -> Result<Self, ApiError> {
        let (descending, name) = match raw.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, raw),
        };
        let field = match name {
            "created_at" => SortField::CreatedAt,
            "updated_at" => SortField::UpdatedAt,
            "name" => SortField::Name,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("sort: `{raw}` is not one of {}", Self::ACCEPTED),
                ))
            }
        };
        Ok(Self { field, descending })
    }

    fn name(self) -> String {
        let field = match self.field {
            SortField::CreatedAt => "created_at",
            SortField::UpdatedAt => "updated_at",
            SortField::Name => "name",
        };
        if self.descending {
            format!("-{field}")
        } else {
            field.to_string()
        }
    }

    /// The run's place in this order: unique, since sequence numbers are.
    fn key(self, run: &Run) -> (String, Seq) {
        match self.field {
            SortField::CreatedAt => (String::new(), run.submitted_seq),
            SortField::UpdatedAt => (String::new(), run.last_seq),
            SortField::Name => (run.name.clone(), run.submitted_seq),
        }
    }
}

/// Where a page of `GET /api/v1/runs` ends: the sort it was made for and the last
/// run's sort key. Sent as base64url of its JSON, which clients treat as opaque.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// The `sort` the cursor belongs to.
    sort: String,
    /// The last run's name (for `sort=name`, else empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    /// The last run's sequence number in this order.
    seq: Seq,
}

impl Cursor {
    fn encode(&self) -> String {
        use base64::Engine as _;
        // Plain data always serializes.
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(raw: &str, sort: Sort) -> Result<Self, ApiError> {
        use base64::Engine as _;
        let invalid = || {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("cursor: `{raw}` is not a cursor this server gave out"),
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| invalid())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.sort != sort.name() {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!(
                    "cursor: it was made for sort={}, not sort={}; send the same sort",
                    cursor.sort,
                    sort.name()
                ),
            ));
        }
        Ok(cursor)
    }
}

/// A label filter: `key` (the run has the label) or `key=value`.
#[derive(Debug)]
struct LabelFilter {
    key: String,
    value: Option<String>,
}

impl LabelFilter {
    fn matches(&self, run: &Run) -> bool {
        match (run.labels.get(&self.key), &self.value) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The parsed query of `GET /api/v1/runs`.
#[derive(Debug)]
struct ListQuery {
    state: Option<RunState>,
    name_prefix: Option<String>,
    labels: Vec<LabelFilter>,
    sort: Sort,
    limit: Option<usize>,
    cursor: Option<Cursor>,
}

impl ListQuery {
    /// Reads the query string; an unknown parameter or a bad value is a `400
    /// invalid_query` naming it. An empty value counts as absent.
    fn parse(query: &str) -> Result<Self, ApiError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.to_string()))?
            .into_inner();
        let mut parsed = ListQuery {
            state: None,
            name_prefix: None,
            labels: Vec::new(),
            sort: Sort {
                field: SortField::CreatedAt,
                descending: true,
            },
            limit: None,
            cursor: None,
        };
        let mut cursor = None;
        for (name, value) in &pairs {
            if value.is_empty() {
                continue;
            }
            match name.as_str() {
                "state" => {
                    let found = RunState::ALL.iter().find(|s| s.name() == value);
                    parsed.state = Some(*found.ok_or_else(|| {
                        let names: Vec<&str> = RunState::ALL.iter().map(|s| s.name()).collect();
                        ApiError::new(
                            ErrorCode::InvalidQuery,
                            format!("state: `{value}` is not one of {}", names.join(", ")),
                        )
                    })?);
                }
                "name_prefix" => parsed.name_prefix = Some(value.clone()),
                "label" => parsed.labels.push(match value.split_once('=') {
                    Some((key, want)) => LabelFilter {
                        key: key.to_string(),
                        value: Some(want.to_string()),
                    },
                    None => LabelFilter {
                        key: value.clone(),
                        value: None,
                    },
                }),
                "sort" => parsed.sort = Sort::parse(value)?,
                "limit" => {
                    let limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=MAX_PAGE).contains(l));
                    parsed.limit = Some(limit.ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::InvalidQuery,
                            format!("limit: `{value}` is not a whole number from 1 to {MAX_PAGE}"),
                        )
                    })?);
                }
                "cursor" => cursor = Some(value.clone()),
                other => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidQuery,
                        format!(
                            "`{other}` is not a parameter of this list; use state, name_prefix, \
                             label, sort, limit or cursor"
                        ),
                    ))
                }
            }
        }
        if let Some(raw) = cursor {
            parsed.cursor = Some(Cursor::decode(&raw, parsed.sort)?);
        }
        Ok(parsed)
    }

    fn matches(&self, run: &Run) -> bool {
        self.state.is_none_or(|s| run.state == s)
            && self
                .name_prefix
                .as_deref()
                .is_none_or(|p| run.name.starts_with(p))
            && self.labels.iter().all(|l| l.matches(run))
    }
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `GET /api/v1/runs`: the runs matching every filter given (`state`, `name_prefix`,
/// each `label`), in `sort` order (newest first by default); with `limit`, one page
/// of them, and the next page's cursor in `X-Next-Cursor` and a `Link: <…>;
/// rel="next"` header. The body stays a plain array.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    summary = "List runs",
    description = "The runs matching every filter given, in `sort` order. Without `limit`, \
        every match; with it, one page, and when more follow, the next page's cursor in \
        `X-Next-Cursor` and `Link: <…&cursor=C>; rel=\"next\"`. An empty parameter counts as \
        absent.",
    params(
        ("state" = Option<RunState>, Query, description = "Only runs in this state."),
        ("name_prefix" = Option<String>, Query, description = "Only runs whose name starts with this."),
        (
            "label" = Option<Vec<String>>,
            Query,
            description = "`key=value` (the run has that label with that value) or `key` (the \
                run has that label); repeatable, all must match."
        ),
        (
            "sort" = Option<String>,
            Query,
            description = "`-created_at` (the default, newest first), `created_at`, \
                `updated_at`, `-updated_at`, `name` or `-name`.",
            example = "-created_at"
        ),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Runs per page (1 to 1,000); without it, every match."),
        (
            "cursor" = Option<String>,
            Query,
            description = "The `X-Next-Cursor` of the previous page (opaque); send the same \
                `sort` and filters with it."
        ),
    ),
    responses(
        (
            status = 200,
            description = "The matching runs (a page of them with `limit`).",
            body = Vec<RunView>,
            headers(
                ("Link" = String, description = "`<URL of the next page>; rel=\"next\"`, when more runs follow."),
                ("X-Next-Cursor" = String, description = "The next page's cursor, when more runs follow."),
            )
        ),
        (status = 400, description = "`invalid_query`: an unknown parameter, or a value that is not accepted (named).", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string())?;
    let fold = state.actors.reader.state();
    let positions: std::collections::HashMap<RunId, usize> = fold
        .queue()
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i + 1))
        .collect();
    let sort = query.sort;
    let after = |key: &(String, Seq)| match &query.cursor {
        None => true,
        Some(c) => {
            let cursor = (c.name.clone(), c.seq);
            if sort.descending {
                *key < cursor
            } else {
                *key > cursor
            }
        }
    };
    // Runs are kept in submission order: sorted by it, a page is its first `limit`
    // matches (one more says whether another page follows), with no sort of them all.
    let in_order: Box<dyn Iterator<Item = &Run>> = match (sort.field, sort.descending) {
        (SortField::CreatedAt, true) => Box::new(fold.runs().rev()),
        _ => Box::new(fold.runs()),
    };
    let matching = in_order
        .filter(|run| query.matches(run))
        .map(|run| (sort.key(run), run))
        .filter(|(key, _)| after(key));
    let mut runs: Vec<(_, &Run)> = if sort.field == SortField::CreatedAt {
        matching
            .take(query.limit.map_or(usize::MAX, |limit| limit + 1))
            .collect()
    } else {
        let mut all: Vec<_> = matching.collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        if sort.descending {
            all.reverse();
        }
        all
    };
    let next = match query.limit {
        Some(limit) if runs.len() > limit => {
            runs.truncate(limit);
            runs.last().map(|((name, seq), _)| Cursor {
                sort: sort.name(),
                name: name.clone(),
                seq: *seq,
            })
        }
        _ => None,
    };
    let views: Vec<RunView> = runs
        .into_iter()
        .map(|(_, run)| {
            let position = positions.get(&run.id).copied();
            RunView::new(run, state.actors.board.get(run.id), position)
                .with_live_protocol(state.actors.commands.get(run.id))
                .with_slurm(state.actors.slurm_board.read(run.id, Clone::clone))
        })
        .collect();
    let mut response = HttpResponse::Ok();
    if let Some(next) = next {
        let cursor = next.encode();
        let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
        let mut link: Vec<String> = pairs
            .iter()
            .filter(|(name, _)| name != "cursor")
            .map(|(name, value)| format!("{}={}", query_escape(name), query_escape(value)))
            .collect();
        link.push(format!("cursor={cursor}"));
        response.insert_header((
            header::LINK,
            format!("<{}?{}>; rel=\"next\"", req.path(), link.join("&")),
        ));
        response.insert_header(("X-Next-Cursor", cursor));
    }
    Ok(response
        .content_type(header::ContentType::json())
        .body(json_body(views.iter())?))
}

/// A JSON array of `items`, written by [`bulk::json_array`].
fn json_body<T: Serialize>(items: impl ExactSizeIterator<Item = T>) -> Result<Vec<u8>, ApiError> {
    bulk::json_array(items)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot write the answer: {e}")))
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
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    operation_id = "get_run",
    summary = "Get a run",
    description = "The run now, or with `at_seq=N` as it was right after journal event `N` \
        (a fold of its events up to `N`, without live progress).",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        ("at_seq" = Option<u64>, Query, description = "Show the run as it was right after this sequence number."),
    ),
    responses(
        (status = 200, description = "The run.", body = RunView),
        (status = 400, description = "`invalid_query`: an unknown parameter or a bad `at_seq`.", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id, or not yet at `at_seq`.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: something failed on the server's side.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events",
    tag = "runs",
    operation_id = "list_run_events",
    summary = "A run's journaled events",
    description = "The run's durable events, in journal order.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        ("after" = Option<u64>, Query, description = "Only events with a larger sequence number (default 0)."),
        ("limit" = Option<u32>, Query, description = "At most this many events (default and maximum 10,000; others are clamped to 1 to 10,000)."),
    ),
    responses(
        (status = 200, description = "The events.", body = Vec<EventView>),
        (status = 400, description = "`invalid_query`: an unknown parameter or a value that is not a whole number.", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: something failed on the server's side.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
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
    Ok(HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .body(json_body(views.iter())?))
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
    super::idempotency::guard(&req, &state, b"", || cancel_run(&state, &path)).await
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
    super::idempotency::guard(&req, &state, b"", || pause_run(&state, &path)).await
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
    super::idempotency::guard(&req, &state, b"", || resume_run(&state, &path)).await
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
