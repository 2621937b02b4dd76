//! The event log on disk: sled trees, the record codec, replay, export and import as
//! JSON lines, verification, and the sampled progress history (`metrics`).

pub mod codec;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod portable;
pub mod repair;
pub mod replay;
pub mod verify;

pub use codec::CodecError;
pub use lock::{lock, DirLock, LockError};
pub use log::{EventLog, StoreError};
pub use repair::{move_tail_aside, RepairError, RepairReport};
pub use replay::{replay, ReplayStats};
