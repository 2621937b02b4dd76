//! `GET /api/v1/slots`.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::AppState;
use crate::domain::{RunId, Seq, SlotId};

#[derive(Serialize)]
struct SlotView<'a> {
    id: SlotId,
    device: &'a str,
    run_id: Option<RunId>,
    since_seq: Option<Seq>,
}

/// Every slot with the run holding it, from the slot ledger.
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

#[derive(Serialize)]
struct AuditSlot<'a> {
    id: SlotId,
    device: &'a str,
    run_id: Option<RunId>,
    since_seq: Option<Seq>,
    run_state: Option<&'static str>,
    consistent: bool,
}

/// `GET /api/v1/slots/audit`: the slot ledger with the state of each holder (a slot
/// is consistent when free or held by a live run), what the last start-up replay
/// found and repaired, and every journal repair (`serve --repair`) ever journaled.
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
    HttpResponse::Ok().json(serde_json::json!({
        "slots": slots,
        "last_replay": state.last_replay,
        "journal_repairs": fold.repairs(),
    }))
}
