//! The event log on disk: sled trees, the record codec, replay, export and import as
//! JSON lines, and verification.

pub mod codec;
pub mod log;
pub mod portable;
pub mod replay;
pub mod verify;

pub use codec::CodecError;
pub use log::{EventLog, StoreError};
pub use replay::{replay, ReplayStats};
