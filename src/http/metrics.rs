//! `GET /api/v1/runs/{id}/metrics`: a run's sampled progress history, one metric at a
//! time, for charts. Read straight from the `metrics` tree (off the async threads):
//! neither the journal actor nor the ticker is on the path.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::Problem;
use super::error::PROBLEM;
use super::runs::existing_run_id;
use super::{ApiError, AppState, ErrorCode};
use crate::domain::RunId;
use crate::store::metrics::{self, Metric, Query, DEFAULT_QUERY_POINTS, MAX_POINTS};

/// Query of `GET /api/v1/runs/{id}/metrics`. Every parameter is optional, and an empty
/// one (`from=`) counts as absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// The metric (`loss` by default).
    name: Option<String>,
    /// Smallest step (inclusive).
    from: Option<String>,
    /// Largest step (inclusive).
    to: Option<String>,
    /// Most points answered (default 500, at most the points kept per run).
    points: Option<String>,
}

/// A run's history of one metric.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricsView {
    /// The run.
    pub run_id: RunId,
    /// The metric.
    #[schema(value_type = Metric)]
    pub name: &'static str,
    /// The step range asked for (`null`: open).
    pub from: Option<u64>,
    /// The step range asked for (`null`: open).
    pub to: Option<u64>,
    /// Steps per bucket of the stored history: at most one point is kept per bucket
    /// (1 while the run is short enough to keep every sampled step).
    pub stride: u64,
    /// Steps per bucket of this answer: `stride`, or a multiple of it when the
    /// stored points were reduced to `points` (each point is the newest of its bucket).
    pub bucket: u64,
    /// Points stored in the range.
    pub total: u64,
    /// The points, in step order.
    pub points: Vec<PointView>,
}

/// One point of a history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PointView {
    /// Batch index across the run: `(epoch - 1) * batches_per_epoch + batch`.
    pub step: u64,
    /// When it was sampled.
    pub time: Option<DateTime<Utc>>,
    /// The metric's value.
    pub value: f64,
}

/// A parameter's value, `None` when absent or empty.
fn given(raw: &Option<String>) -> Option<&str> {
    raw.as_deref().filter(|v| !v.is_empty())
}

fn parse_step(param: &str, raw: &Option<String>) -> Result<Option<u64>, ApiError> {
    given(raw)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("{param}: `{v}` is not a step (a whole number from 0)"),
                )
            })
        })
        .transpose()
}

/// Checks the query: the metric, the step range and the number of points.
fn parse_query(query: &MetricsQuery) -> Result<(Metric, Query), ApiError> {
    let metric = match given(&query.name) {
        None => Metric::Loss,
        Some(name) => Metric::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("name: `{name}` is not one of {}", names.join(", ")),
            )
        })?,
    };
    let from = parse_step("from", &query.from)?;
    let to = parse_step("to", &query.to)?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("from: {from} is larger than to: {to}"),
            ));
        }
    }
    let points = match given(&query.points) {
        None => DEFAULT_QUERY_POINTS,
        Some(v) => match v.parse::<u64>() {
            Ok(0) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    "points: must be at least 1",
                ))
            }
            // More than are ever kept is as good as all of them.
            Ok(n) => n.min(MAX_POINTS) as usize,
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("points: `{v}` is not a whole number from 1"),
                ))
            }
        },
    };
    Ok((metric, Query { from, to, points }))
}

/// `GET /api/v1/runs/{id}/metrics?name=loss&from=&to=&points=`: the run's history of
/// one metric, at most `points` points in step order; an empty list for a run that
/// has not trained yet.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/metrics",
    tag = "runs",
    operation_id = "get_run_metrics",
    summary = "A run's progress history",
    description = "The sampled history of one metric, in step order, reduced to at most \
        `points` points (each the newest of its bucket); an empty list for a run that has not \
        trained yet. An empty parameter counts as absent.",
    params(
        ("id" = String, Path, description = "The run's id (a UUID); anything else names no run."),
        ("name" = Option<Metric>, Query, description = "The metric (default `loss`)."),
        ("from" = Option<u64>, Query, description = "Smallest step (inclusive)."),
        ("to" = Option<u64>, Query, description = "Largest step (inclusive)."),
        (
            "points" = Option<u64>,
            Query,
            minimum = 1,
            description = "Most points answered (default 500; more than are kept means all)."
        ),
    ),
    responses(
        (status = 200, description = "The history.", body = MetricsView),
        (status = 400, description = "`invalid_query`: an unknown parameter, or a value that is not accepted (named).", body = Problem, content_type = PROBLEM),
        (status = 404, description = "`run_not_found`: no run with that id.", body = Problem, content_type = PROBLEM),
        (status = 500, description = "`internal`: the history could not be read.", body = Problem, content_type = PROBLEM),
    )
)]
pub async fn run_metrics(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<MetricsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = existing_run_id(&state, &path)?;
    let (metric, query) = parse_query(&query)?;
    let log = state.actors.reader.log().clone();
    let series = web::block(move || {
        let tree = log.metrics_tree()?;
        Ok::<_, metrics::MetricsError>(metrics::read(&tree, id, metric, &query)?)
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(HttpResponse::Ok().json(MetricsView {
        run_id: id,
        name: metric.name(),
        from: query.from,
        to: query.to,
        stride: series.stride,
        bucket: series.bucket,
        total: series.total,
        points: series
            .points
            .iter()
            .map(|p| PointView {
                step: p.step,
                time: i64::try_from(p.time_ms)
                    .ok()
                    .and_then(DateTime::from_timestamp_millis),
                value: p.value,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(
        name: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        points: Option<&str>,
    ) -> MetricsQuery {
        MetricsQuery {
            name: name.map(String::from),
            from: from.map(String::from),
            to: to.map(String::from),
            points: points.map(String::from),
        }
    }

    #[test]
    fn defaults_and_empty_parameters() {
        let (metric, q) = parse_query(&query(None, Some(""), None, Some(""))).expect("ok");
        assert_eq!(metric, Metric::Loss);
        assert_eq!((q.from, q.to, q.points), (None, None, DEFAULT_QUERY_POINTS));
        let (metric, q) =
            parse_query(&query(Some("percent"), Some("3"), Some("3"), Some("99999"))).expect("ok");
        assert_eq!(metric, Metric::Percent);
        assert_eq!(
            (q.from, q.to, q.points),
            (Some(3), Some(3), MAX_POINTS as usize)
        );
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let detail = |q: MetricsQuery| parse_query(&q).expect_err("refused").detail;
        assert!(detail(query(Some("accuracy"), None, None, None)).contains("loss, samples_per_sec"));
        assert!(detail(query(None, Some("-1"), None, None)).starts_with("from:"));
        assert!(detail(query(None, None, Some("x"), None)).starts_with("to:"));
        assert!(detail(query(None, Some("5"), Some("4"), None)).starts_with("from: 5"));
        assert!(detail(query(None, None, None, Some("0"))).starts_with("points:"));
        assert!(detail(query(None, None, None, Some("1.5"))).starts_with("points:"));
    }
}
