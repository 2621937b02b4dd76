//! `GET /api/v1/runs/{id}` (the run now, or as it was at a sequence number) and `GET
//! /api/v1/runs/{id}/events` (its journaled events).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{existing_run_id, json_body, parse_run_id, run_response, EventView, RunView};
use crate::domain::{EventKind, Seq};
use crate::http::error::{Problem, PROBLEM};
use crate::http::{ApiError, AppState, ErrorCode};

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

/// Most events one answer of `GET /api/v1/runs/{id}/events` holds.
const MAX_EVENTS: usize = 10_000;

/// Query of `GET /api/v1/runs/{id}/events`.
#[derive(Debug, Default)]
struct EventsQuery {
    /// Only events with a larger sequence number.
    after: Seq,
    /// At most this many events (default and maximum [`MAX_EVENTS`]).
    limit: Option<usize>,
    /// Only events of these kinds (none: every kind).
    types: Vec<EventKind>,
}

impl EventsQuery {
    /// Reads the query string; an unknown parameter or a bad value is a `400
    /// invalid_query` naming it.
    fn parse(query: &str) -> Result<Self, ApiError> {
        let invalid = |detail: String| ApiError::new(ErrorCode::InvalidQuery, detail);
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| invalid(e.to_string()))?
            .into_inner();
        let mut parsed = Self::default();
        for (name, value) in pairs {
            match name.as_str() {
                "after" => {
                    parsed.after = value
                        .parse()
                        .map_err(|_| invalid(format!("after: `{value}` is not a whole number")))?;
                }
                "limit" => {
                    parsed.limit =
                        Some(value.parse().map_err(|_| {
                            invalid(format!("limit: `{value}` is not a whole number"))
                        })?);
                }
                "type" => {
                    let kind = EventKind::ALL
                        .into_iter()
                        .find(|k| k.name() == value)
                        .ok_or_else(|| {
                            invalid(format!(
                                "type: `{value}` is not an event name such as `EpochEvaluated`"
                            ))
                        })?;
                    parsed.types.push(kind);
                }
                other => {
                    return Err(invalid(format!(
                        "`{other}` is not a parameter of this list; use after, limit or type"
                    )))
                }
            }
        }
        Ok(parsed)
    }
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
        (
            "type" = Option<Vec<String>>,
            Query,
            description = "Only events of this name (e.g. `EpochEvaluated`); repeatable. `limit` \
                counts the events answered, and the last one's `seq` is the next `after`."
        ),
    ),
    responses(
        (status = 200, description = "The events.", body = Vec<EventView>),
        (status = 400, description = "`invalid_query`: an unknown parameter, a value that is not a whole number, or a `type` that names no event.", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: something failed on the server's side.", body = Problem, content_type = PROBLEM),
        (status = 503, description = "`journal_unavailable`: the journal cannot be read or written now; nothing was written, retry later.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn events(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = EventsQuery::parse(req.query_string())?;
    let id = existing_run_id(&state, &path)?;
    let limit = query.limit.unwrap_or(MAX_EVENTS).clamp(1, MAX_EVENTS);
    let reader = &state.actors.reader;
    let records = if query.types.is_empty() {
        reader.durable_run_events(id, query.after, limit).await?
    } else {
        // The run's events a page at a time, keeping those of the kinds asked for.
        let mut kept = Vec::new();
        let mut after = query.after;
        loop {
            let page = reader.durable_run_events(id, after, MAX_EVENTS).await?;
            let full = page.len() == MAX_EVENTS;
            after = page.last().map_or(after, |(seq, _)| *seq);
            kept.extend(
                page.into_iter()
                    .filter(|(_, env)| query.types.contains(&env.event.kind())),
            );
            if kept.len() >= limit || !full {
                break;
            }
        }
        kept.truncate(limit);
        kept
    };
    let views: Vec<EventView> = records
        .iter()
        .map(|(seq, env)| EventView::new(*seq, env))
        .collect();
    Ok(HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .body(json_body(views.iter())?))
}
