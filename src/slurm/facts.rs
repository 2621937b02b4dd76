//! The facts a Slurm worker answers its server with, `GET /api/v1/runs/{id}/facts`:
//! the run's journaled events after a sequence number, each in the journal's own
//! encoding (so the server journals exactly the fact the worker recorded, NaN figures
//! included), and its newest sampled progress. The worker's HTTP handler writes them
//! and the server's job follower reads them; both see this wire format here.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Envelope, Progress, Seq};

/// One journaled event of the run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Fact {
    /// Its sequence number in the answering server's journal.
    #[schema(value_type = u64)]
    pub seq: Seq,
    /// Its kind, e.g. `EpochCompleted` (for people reading the answer).
    pub kind: String,
    /// The journal's record of it (bincode of the versioned envelope), base64.
    pub envelope: String,
}

impl Fact {
    /// The fact of a journal record.
    pub fn new(seq: Seq, envelope: &Envelope) -> Self {
        Self {
            seq,
            kind: envelope.event.kind().name().to_string(),
            envelope: base64::engine::general_purpose::STANDARD
                .encode(crate::store::codec::encode(envelope)),
        }
    }

    /// The record back, or why it cannot be read.
    pub fn decode(&self) -> Result<Envelope, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.envelope)
            .map_err(|e| format!("fact {}: not base64: {e}", self.seq))?;
        crate::store::codec::decode(self.seq, &bytes).map_err(|e| format!("fact {}: {e}", self.seq))
    }
}

/// The answer of `GET /api/v1/runs/{id}/facts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Facts {
    /// The run's state in the answering server's journal.
    pub state: String,
    /// The newest progress sample while the run trains.
    pub progress: Option<Progress>,
    /// Journaled events after `after`, in order (at most 1,000: ask again after the
    /// last one for more).
    pub facts: Vec<Fact>,
}
