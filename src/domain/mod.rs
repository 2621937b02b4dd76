//! Pure types and rules: run specs, events, the run state machine, the slot ledger
//! and the fold of events into state. Nothing here does I/O, so replay and every
//! rule are tested with plain unit tests.

pub mod event;
pub mod ids;
pub mod layout;
pub mod logs;
pub mod progress;
pub mod slots;
pub mod slurm;
pub mod spec;
pub mod state;
pub mod sweep;

pub use event::{Envelope, Event, EventKind};
pub use ids::{RunId, Seq, SlotId};
pub use layout::RunLayout;
pub use logs::LogStream;
pub use progress::Progress;
pub use slots::SlotLedger;
pub use spec::{RunSpec, SpecError};
pub use state::{JournalRepair, Rejection, Run, RunState, State, Sweep, SweepState};
