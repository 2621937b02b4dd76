//! The event log on disk: sled trees, the record codec and replay.

pub mod codec;
pub mod log;
pub mod replay;

pub use codec::CodecError;
pub use log::{EventLog, StoreError};
pub use replay::{replay, ReplayStats};
