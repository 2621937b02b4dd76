//! The event log on disk: sled trees, the record codec and replay.

pub mod codec;
pub mod log;

pub use codec::CodecError;
pub use log::{EventLog, StoreError};
