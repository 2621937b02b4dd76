//! What every handler can reach ([`AppState`]), and what the server and its
//! middlewares attach to a request.

use std::time::Duration;

/// The default of `server.max_body_bytes`, the largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The running actors and their shared views.
    pub actors: crate::actors::Actors,
    /// Interval between keep-alive comments on streams; also how long a stream waits
    /// for a client to take its events before disconnecting it as too slow.
    pub keep_alive: Duration,
    /// Counters of the event streams, shared by all of them.
    pub streams: std::sync::Arc<super::stream::StreamStats>,
    /// How long a cancel or pause request waits for the run to stop before answering
    /// `202`.
    pub cancel_wait: Duration,
    /// Largest accepted request body, in bytes (`server.max_body_bytes`).
    pub max_body_bytes: usize,
    /// The data directory (artifacts are served from it).
    pub data_dir: std::path::PathBuf,
    /// Where data files named in specs may be read from.
    pub roots: crate::train::data::DataRoots,
    /// What the start-up replay did and the recovery it journaled.
    pub last_replay: ReplayReport,
    /// The bearer tokens accepted; empty: no auth.
    pub tokens: crate::auth::Tokens,
    /// Whether runs of `"kind": "command"` are accepted (`runs.allow_commands`).
    pub allow_commands: bool,
    /// The trace pipeline (request spans, and runs' traces picked at submission);
    /// `None` when traces are off.
    pub traces: Option<crate::telemetry::traces::Traces>,
    /// Run views kept as sent, for runs nothing live changes.
    pub views: std::sync::Arc<super::views::ViewCache>,
}

/// What the start-up replay did, as `/api/v1/slots/audit` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    /// Events replayed.
    pub events: u64,
    /// Runs found.
    pub runs: usize,
    /// Replay time in milliseconds.
    pub elapsed_ms: f64,
    /// The snapshot replay started from, if any.
    #[schema(value_type = Option<u64>)]
    pub from_snapshot: Option<crate::domain::Seq>,
    /// The recovery events journaled right after, as `(run id, event name, slot)`;
    /// a `SlotReleased` of a run that was not live is a ledger repair.
    pub recovery: Vec<RecoveryNote>,
}

/// One recovery event journaled at start.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RecoveryNote {
    /// The run.
    pub run_id: crate::domain::RunId,
    /// The event, e.g. `RunRequeued` or `SlotReleased`.
    pub event: &'static str,
    /// The slot released, for `SlotReleased`.
    pub slot: Option<crate::domain::SlotId>,
    /// Whether it repaired the ledger (a slot held by a run that was not live).
    pub repair: bool,
}

/// The pattern of the route that served a request, as resource data: after the
/// response, `request().app_data::<RoutePattern>()` names it without matching the
/// path against the route table again.
#[derive(Debug, Clone, Copy)]
pub struct RoutePattern(pub &'static str);
