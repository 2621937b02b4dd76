//! `GET /api/v1/slots`.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::{AppState, ReplayReport};
use crate::domain::{JournalRepair, RunId, Seq, SlotId};

/// A slot and the run holding it.
#[derive(Serialize, utoipa::ToSchema)]
struct SlotView<'a> {
    /// The slot.
    id: SlotId,
    /// Its device, e.g. `cuda:0` or `cpu`.
    device: &'a str,
    /// The run holding it; `null` when free.
    run_id: Option<RunId>,
    /// Sequence number of the event that gave it to that run.
    #[schema(value_type = Option<u64>)]
    since_seq: Option<Seq>,
}

/// Every slot with the run holding it, from the slot ledger.
#[utoipa::path(
    get,
    path = "/api/v1/slots",
    tag = "slots",
    operation_id = "list_slots",
    summary = "List slots",
    description = "Every slot with the run holding it, from the slot ledger.",
    responses((status = 200, description = "The slots.", body = Vec<SlotView>))
)]
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let fold = state.actors.reader.state();
    let views: Vec<SlotView> = state
        .actors
        .slots
        .iter()
        .map(|slot| {
            let holding = fold.slots().holder(slot.id);
            SlotView {
                id: slot.id,
                device: &slot.device,
                run_id: holding.map(|h| h.run_id),
                since_seq: holding.map(|h| h.since),
            }
        })
        .collect();
    HttpResponse::Ok().json(views)
}

/// A slot of the audit: its holder and whether the ledger agrees with the holder's state.
#[derive(Serialize, utoipa::ToSchema)]
struct AuditSlot<'a> {
    /// The slot.
    id: SlotId,
    /// Its device.
    device: &'a str,
    /// The run holding it; `null` when free.
    run_id: Option<RunId>,
    /// Sequence number of the event that gave it to that run.
    #[schema(value_type = Option<u64>)]
    since_seq: Option<Seq>,
    /// The holder's state.
    #[schema(value_type = Option<crate::domain::RunState>)]
    run_state: Option<&'static str>,
    /// Free, or held by a live run.
    consistent: bool,
}

/// What `GET /api/v1/slots/audit` answers.
#[derive(Serialize, utoipa::ToSchema)]
struct SlotAudit<'a> {
    /// The ledger, slot by slot.
    slots: Vec<AuditSlot<'a>>,
    /// What the last start-up replay found and repaired.
    last_replay: &'a ReplayReport,
    /// Every journal repair (`serve --repair`) ever journaled.
    journal_repairs: &'a [JournalRepair],
}

/// `GET /api/v1/slots/audit`: the slot ledger with the state of each holder (a slot
/// is consistent when free or held by a live run), what the last start-up replay
/// found and repaired, and every journal repair (`serve --repair`) ever journaled.
#[utoipa::path(
    get,
    path = "/api/v1/slots/audit",
    tag = "slots",
    operation_id = "audit_slots",
    summary = "Audit the slot ledger",
    description = "The slot ledger with the state of each holder (a slot is consistent when \
        free or held by a live run), what the last start-up replay found and repaired, and \
        every journal repair (`serve --repair`) ever journaled.",
    responses((status = 200, description = "The audit.", body = SlotAudit))
)]
pub async fn audit(state: web::Data<AppState>) -> HttpResponse {
    let fold = state.actors.reader.state();
    let slots: Vec<AuditSlot> = state
        .actors
        .slots
        .iter()
        .map(|slot| {
            let holding = fold.slots().holder(slot.id);
            let run = holding.and_then(|h| fold.run(h.run_id));
            AuditSlot {
                id: slot.id,
                device: &slot.device,
                run_id: holding.map(|h| h.run_id),
                since_seq: holding.map(|h| h.since),
                run_state: run.map(|r| r.state.name()),
                consistent: holding.is_none() || run.is_some_and(|r| r.state.is_live()),
            }
        })
        .collect();
    HttpResponse::Ok().json(SlotAudit {
        slots,
        last_replay: &state.last_replay,
        journal_repairs: fold.repairs(),
    })
}
