//! `/api/v1/runs`: submit (JSON, YAML or TOML), list (filters, sort, cursor pages), get,
//! events, cancel, pause, resume, artifacts (download, delete).
//!
//! One file per use case; this one holds what several of them (and the stream, log,
//! metrics and worker resources) share: the views of a run and of an event, reading a
//! run id and a body, and answering with a run.
//!
//! - [`submit`]: `POST /runs`, its query and duplicate handling.
//! - [`list`]: `GET /runs`, its filters, sort orders and cursor pages.
//! - [`view`]: `GET /runs/{id}` (now or at a sequence number) and its events.
//! - [`control`]: cancel, pause and resume.
//! - [`artifacts`]: downloading a run's files and deleting them.

pub mod artifacts;
pub mod control;
pub mod list;
pub mod submit;
pub mod view;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;

use crate::domain::state::{CheckpointRef, ProtocolReport};
use crate::domain::Progress;
use crate::domain::{Envelope, Run, RunId, RunState, Seq};
use crate::http::{bulk, ApiError, AppState, ErrorCode};

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
    /// Whether `protocol` is a running command's live figures rather than the fold's.
    #[serde(skip)]
    live_protocol: bool,
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
    /// evaluated epoch: kept for clients older than `val_accuracy` and `val_mae`.
    val_metric: Option<f64>,
    /// The best validation metric of any epoch (highest accuracy, lowest MAE): kept
    /// for clients older than `best_val_accuracy` and `best_val_mae`.
    best_val_metric: Option<f64>,
    /// A classification run's validation accuracy after the last evaluated epoch
    /// (`val_metric` under its name); absent for a regression run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    val_accuracy: Option<Option<f64>>,
    /// A classification run's best validation accuracy of any epoch; absent for a
    /// regression run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    best_val_accuracy: Option<Option<f64>>,
    /// A regression run's validation mean absolute error after the last evaluated
    /// epoch (`val_metric` under its name); absent for a classification run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    val_mae: Option<Option<f64>>,
    /// A regression run's lowest validation mean absolute error of any epoch; absent
    /// for a classification run.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    best_val_mae: Option<Option<f64>>,
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
        let regression = run.task == crate::domain::spec::Task::Regression;
        let val_metric = run.epochs.iter().rev().find_map(|e| e.val_metric);
        let best_val_metric = {
            let metrics = run.epochs.iter().filter_map(|e| e.val_metric);
            if regression {
                metrics.reduce(f64::min)
            } else {
                metrics.reduce(f64::max)
            }
        };
        // The same figures under the name of what they measure, for this task only.
        let (accuracy, mae) = if regression {
            (None, Some((val_metric, best_val_metric)))
        } else {
            (Some((val_metric, best_val_metric)), None)
        };
        Self {
            run,
            progress: progress.filter(|_| run.state == RunState::Running),
            metrics: Metrics {
                epochs_completed: run.epochs.len(),
                train_loss: last.map(|e| e.train_loss),
                train_accuracy: last.map(|e| e.train_accuracy),
                best_train_accuracy: run.epochs.iter().map(|e| e.train_accuracy).reduce(f64::max),
                val_loss: run.epochs.iter().rev().find_map(|e| e.val_loss),
                val_metric,
                best_val_metric,
                val_accuracy: accuracy.map(|(last, _)| last),
                best_val_accuracy: accuracy.map(|(_, best)| best),
                val_mae: mae.map(|(last, _)| last),
                best_val_mae: mae.map(|(_, best)| best),
                training_time_ms: run.epochs.iter().map(|e| e.duration_ms).sum(),
            },
            checkpoints_kept: &run.checkpoints[kept_from..],
            queue_position,
            protocol: run.protocol.clone(),
            slurm_live: None,
            live_protocol: false,
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
            self.live_protocol = true;
        }
        self
    }

    /// Whether the view is its run's fold alone (no progress, queue place, live
    /// command or Slurm figures): the same run always reads the same.
    pub fn fold_only(&self) -> bool {
        self.progress.is_none()
            && self.queue_position.is_none()
            && self.slurm_live.is_none()
            && !self.live_protocol
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
    let run = fold
        .shared_run(id)
        .ok_or_else(|| ApiError::run_not_found(id))?;
    let view = RunView::new(run, state.actors.board.get(id), fold.queue_position(id))
        .with_live_protocol(state.actors.commands.get(id))
        .with_slurm(state.actors.slurm_board.read(id, Clone::clone));
    let body = state
        .views
        .body(run, view.fold_only(), || serde_json::to_vec(&view))
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot write the answer: {e}")))?;
    Ok(response
        .content_type(header::ContentType::json())
        .body(body))
}

/// A JSON array of `items`, written by [`bulk::json_array`].
fn json_body<T: Serialize>(items: impl ExactSizeIterator<Item = T>) -> Result<Vec<u8>, ApiError> {
    bulk::json_array(items)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot write the answer: {e}")))
}
