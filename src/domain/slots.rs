//! The slot ledger: which run holds which slot since which event. Claims and
//! releases are both events, so replay can audit that every claim was released.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::Event;
use super::ids::{RunId, Seq, SlotId};

/// A slot held by a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The run holding the slot.
    pub run_id: RunId,
    /// The sequence number of the `SlotClaimed` event.
    pub since: Seq,
}

/// Who holds which slot. Slots absent from the map are free.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotLedger {
    held: BTreeMap<SlotId, Holding>,
}

/// Why a claim or release does not fit the ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The slot is held by another run.
    #[error("{slot} is held by run {holder}")]
    Busy {
        /// The slot asked for.
        slot: SlotId,
        /// The run holding it.
        holder: RunId,
    },
    /// The run releases a slot it does not hold.
    #[error("{slot} is not held by run {run_id}")]
    NotHeld {
        /// The slot released.
        slot: SlotId,
        /// The run that released it.
        run_id: RunId,
    },
}

impl SlotLedger {
    /// Checks that `run_id` may claim `slot`.
    pub fn check_claim(&self, slot: SlotId, _run_id: RunId) -> Result<(), LedgerError> {
        match self.held.get(&slot) {
            Some(h) => Err(LedgerError::Busy {
                slot,
                holder: h.run_id,
            }),
            None => Ok(()),
        }
    }

    /// Checks that `run_id` holds `slot` and so may release it.
    pub fn check_release(&self, slot: SlotId, run_id: RunId) -> Result<(), LedgerError> {
        match self.held.get(&slot) {
            Some(h) if h.run_id == run_id => Ok(()),
            _ => Err(LedgerError::NotHeld { slot, run_id }),
        }
    }

    /// Records a claim (after [`SlotLedger::check_claim`]).
    pub fn claim(&mut self, slot: SlotId, run_id: RunId, since: Seq) {
        self.held.insert(slot, Holding { run_id, since });
    }

    /// Records a release (after [`SlotLedger::check_release`]).
    pub fn release(&mut self, slot: SlotId) {
        self.held.remove(&slot);
    }

    /// Folds in the ledger's part of an event about `run_id` (a run the state knows),
    /// sequence number `seq`: a claim holds the slot from then on; a release frees it
    /// when that run holds it (a release by another, only possible in a hand-edited
    /// journal, changes nothing). Only claims and releases move the ledger: a
    /// `RunStarted` names a slot its run holds, and leaves it held.
    pub fn apply(&mut self, run_id: RunId, seq: Seq, event: &Event) {
        match event {
            Event::SlotClaimed { slot } => self.claim(*slot, run_id, seq),
            Event::SlotReleased { slot }
                if self.holder(*slot).map(|h| h.run_id) == Some(run_id) =>
            {
                self.release(*slot)
            }
            _ => {}
        }
    }

    /// The holder of a slot, if any.
    pub fn holder(&self, slot: SlotId) -> Option<Holding> {
        self.held.get(&slot).copied()
    }

    /// Every held slot, in slot order.
    pub fn held(&self) -> impl Iterator<Item = (SlotId, Holding)> + '_ {
        self.held.iter().map(|(s, h)| (*s, *h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_and_release_are_symmetric() {
        let mut ledger = SlotLedger::default();
        let (a, b) = (RunId::new(), RunId::new());
        let slot = SlotId(0);
        ledger.check_claim(slot, a).expect("free");
        ledger.claim(slot, a, 3);
        assert_eq!(
            ledger.check_claim(slot, b),
            Err(LedgerError::Busy { slot, holder: a })
        );
        assert!(ledger.check_release(slot, b).is_err());
        ledger.check_release(slot, a).expect("held by a");
        ledger.release(slot);
        assert!(ledger.holder(slot).is_none());
        assert!(ledger.check_release(slot, a).is_err());
    }
}
