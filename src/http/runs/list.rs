//! `GET /api/v1/runs`: the runs matching the filters given, in a sort order, whole or
//! in cursor pages.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{json_body, RunView};
use crate::domain::{Run, RunId, RunState, Seq};
use crate::http::error::{Problem, PROBLEM};
use crate::http::{ApiError, AppState, ErrorCode};

/// Most runs one page of `GET /api/v1/runs` holds.
pub const MAX_PAGE: usize = 1000;

/// The order of `GET /api/v1/runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortField {
    /// Submission order (the `RunSubmitted` sequence number).
    CreatedAt,
    /// Order of each run's newest event.
    UpdatedAt,
    /// Place in the dispatch queue (queued local runs, in the order they will
    /// start), then every other run in submission order.
    Queue,
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
    const ACCEPTED: &'static str =
        "created_at, -created_at, updated_at, -updated_at, name, -name, queue, -queue";

    fn parse(raw: &str) -> Result<Self, ApiError> {
        let (descending, name) = match raw.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, raw),
        };
        let field = match name {
            "created_at" => SortField::CreatedAt,
            "updated_at" => SortField::UpdatedAt,
            "name" => SortField::Name,
            "queue" => SortField::Queue,
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
            SortField::Queue => "queue",
        };
        if self.descending {
            format!("-{field}")
        } else {
            field.to_string()
        }
    }

    /// The run's place in this order: unique, since sequence numbers are. `place` is
    /// its 1-based place in the dispatch queue, when it has one.
    fn key(self, run: &Run, place: Option<usize>) -> (String, Seq) {
        match self.field {
            SortField::CreatedAt => (String::new(), run.submitted_seq),
            SortField::UpdatedAt => (String::new(), run.last_seq),
            SortField::Name => (run.name.clone(), run.submitted_seq),
            // Places as fixed-width digits sort as numbers; `~` sorts after them.
            SortField::Queue => match place {
                Some(place) => (format!("{place:020}"), run.submitted_seq),
                None => ("~".to_string(), run.submitted_seq),
            },
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

    /// How many runs of `fold` match the filters, whatever the cursor: the whole
    /// count when nothing filters (no scan).
    fn count(&self, fold: &crate::domain::State) -> usize {
        if self.state.is_none() && self.name_prefix.is_none() && self.labels.is_empty() {
            fold.len()
        } else {
            fold.runs().filter(|run| self.matches(run)).count()
        }
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
/// rel="next"` header; `X-Total-Count` says how many runs match in all. The body
/// stays a plain array.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    summary = "List runs",
    description = "The runs matching every filter given, in `sort` order. Without `limit`, \
        every match; with it, one page, and when more follow, the next page's cursor in \
        `X-Next-Cursor` and `Link: <…&cursor=C>; rel=\"next\"`. `X-Total-Count` is the number \
        of runs matching the filters, on every page. An empty parameter counts as absent.",
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
                `updated_at`, `-updated_at`, `name`, `-name`, or `queue` (queued local runs \
                in the order they will start, then the others by submission) or `-queue`.",
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
                ("X-Total-Count" = u64, description = "How many runs match the filters, on every page (the cursor does not change it)."),
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
        .map(|run| (sort.key(run, positions.get(&run.id).copied()), run))
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
    let total = query.count(&fold);
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
    response.insert_header(("X-Total-Count", total.to_string()));
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
