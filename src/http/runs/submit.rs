//! `POST /api/v1/runs`: reads a spec as JSON, YAML or TOML, checks it (and the data it
//! names), and submits it, answering once `RunSubmitted` is durable; a spec a run
//! already has is answered as `on_duplicate` says.

use actix_web::http::header;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{read_body, run_response, RunView};
use crate::actors::dispatcher::SubmitRun;
use crate::domain::spec::parse::{parse_spec_as, SpecFormat, ACCEPTED_SPEC_TYPES};
use crate::domain::{RunId, RunSpec};
use crate::http::error::{Problem, PROBLEM};
use crate::http::{auth, idempotency, ApiError, AppState, ErrorCode};
use crate::train::check;

/// Checks the data and model a spec names ([`check::check_submission`]) off the async
/// threads; a spec with nothing to check does not leave them.
pub async fn check_data(state: &AppState, spec: RunSpec) -> Result<RunSpec, ApiError> {
    if !check::needed(&spec) {
        return Ok(spec);
    }
    let roots = state.roots.clone();
    web::block(move || check::check_submission(spec, &roots))
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
    let format = body_format(&req)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let command_gate = CommandGate::of(&req, &state);
    // Picked before the guard, so a replayed answer costs no trace.
    let trace = state
        .traces
        .as_ref()
        .map(|traces| traces.assign(crate::http::traces::sampled_caller(req.headers()).as_ref()));
    let parent = crate::http::traces::request_span(&req);
    idempotency::guard(&req, &state, &body, || {
        submit_spec(
            &state,
            format,
            on_duplicate,
            &body,
            (trace, parent),
            command_gate,
        )
    })
    .await
}

/// Refuses a spec this server cannot place: on an executor it has not enabled, or on
/// more slots than it has. `prefix` goes before the field named (`base.` for a
/// sweep's base).
pub fn check_placement(state: &AppState, spec: &RunSpec, prefix: &str) -> Result<(), ApiError> {
    if !spec.executor.is_local() && state.actors.slurm.is_none() {
        return Err(ApiError::new(
            ErrorCode::ExecutorDisabled,
            format!(
                "{prefix}executor: this server does not run Slurm jobs: enable them with \
                 `[executors.slurm] enabled = true` and a `shared_dir` \
                 (RUNYARD__EXECUTORS__SLURM__ENABLED=true, RUNYARD__EXECUTORS__SLURM__SHARED_DIR=...)"
            ),
        ));
    }
    let available = state.actors.slots.len();
    if spec.slots as usize > available {
        return Err(ApiError::new(
            ErrorCode::InvalidSpec,
            format!(
                "{prefix}slots: the run needs {} slots together, this server has {available}",
                spec.slots
            ),
        ));
    }
    Ok(())
}

/// The format of a spec body, as its `Content-Type` says (JSON without one).
pub fn body_format(req: &HttpRequest) -> Result<SpecFormat, ApiError> {
    match req.headers().get(header::CONTENT_TYPE) {
        None => Ok(SpecFormat::Json),
        Some(content_type) => {
            let value = String::from_utf8_lossy(content_type.as_bytes());
            SpecFormat::from_content_type(&value).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("content type `{value}` is not accepted; send {ACCEPTED_SPEC_TYPES}"),
                )
            })
        }
    }
}

/// Whether a command run may be submitted by this request.
#[derive(Debug, Clone, Copy)]
pub struct CommandGate {
    /// `runs.allow_commands`.
    allowed: bool,
    /// Tokens are configured and the caller's is not an admin one.
    admin_missing: bool,
}

impl CommandGate {
    /// Whoever may submit may run a command only where the server allows it, and,
    /// with tokens configured, only with an admin token.
    pub fn of(req: &HttpRequest, state: &AppState) -> Self {
        let admin_missing = !state.tokens.is_empty()
            && req
                .extensions()
                .get::<auth::Caller>()
                .is_none_or(|caller| caller.role < auth::Role::Admin);
        Self {
            allowed: state.allow_commands,
            admin_missing,
        }
    }

    /// Refuses a command run this request may not submit.
    pub fn check(self) -> Result<(), ApiError> {
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
    (trace, parent): (
        Option<crate::domain::Event>,
        Option<opentelemetry::trace::SpanContext>,
    ),
    command_gate: CommandGate,
) -> Result<HttpResponse, ApiError> {
    let spec = parse_spec_as(format, body)?;
    if spec.kind == crate::domain::spec::RunKind::Command {
        command_gate.check()?;
    }
    check_placement(state, &spec, "")?;
    let spec = check_data(state, spec).await?;
    let submitted = state
        .actors
        .dispatcher
        .send(SubmitRun {
            run_id: RunId::new(),
            spec,
            rerun: on_duplicate == OnDuplicate::Rerun,
            trace,
            parent,
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
