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
