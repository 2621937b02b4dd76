//! How one journal record is laid out: a CRC32C checksum of the payload, then the
//! payload, a bincode 2 encoding of the [`Envelope`]. A torn or corrupt record fails
//! its checksum and is reported, never applied.
//!
//! # Versions and upcasting
//!
//! The envelope's first field is its format version, so the decoder reads the
//! version alone before it decodes anything else and hands the payload to the
//! decoder of that version. Released shapes never change: when an event's shape must
//! change, the shapes of the current version are frozen in a module `v{N}` here
//! (plain copies, never edited again), [`ENVELOPE_VERSION`] goes up, and
//! `decode_payload` gets an arm that decodes the frozen shapes and upcasts them to
//! the current ones. The golden journals under `tests/golden/` hold every released
//! version to that: they must replay to the same state in every later build.
//! Adding a variant at the end of [`Event`](crate::domain::Event) is not a shape
//! change (bincode numbers variants in order), and needs no new version.
//!
//! # Variant indices
//!
//! bincode writes an enum variant as its position in the enum, not its name, so
//! these numbers are as much the on-disk format as the bytes are: reorder two
//! variants and every journal on disk reads as other events, or not at all. A new
//! variant goes at the end and takes the next number; a released number never
//! changes. `tests/golden/records-v1.hex` holds the stored bytes of records of every
//! variant, and the tests of this module hold this table, those bytes and the enum
//! to each other (the table is read from this file, so it cannot go stale).
//! [`Event`](crate::domain::Event)'s fields use no other enum (an `Option` is
//! bincode's own 0 or 1, not a position); a test fails should one appear.
//!
//! | index | `Event` variant |
//! |------:|-----------------|
//! | 0 | `RunSubmitted` |
//! | 1 | `SlotClaimed` |
//! | 2 | `RunStarted` |
//! | 3 | `EpochCompleted` |
//! | 4 | `RunCompleted` |
//! | 5 | `RunFailed` |
//! | 6 | `CancelRequested` |
//! | 7 | `RunCancelled` |
//! | 8 | `RunRequeued` |
//! | 9 | `SlotReleased` |
//! | 10 | `CheckpointSaved` |
//! | 11 | `PauseRequested` |
//! | 12 | `RunPaused` |
//! | 13 | `RunResumed` |
//! | 14 | `ResumedFromCheckpoint` |
//! | 15 | `ArtifactSaved` |
//! | 16 | `EpochEvaluated` |
//! | 17 | `RunRetryScheduled` |
//! | 18 | `RunStalled` |
//! | 19 | `StallEnded` |
//! | 20 | `JournalRepaired` |
//! | 21 | `ArtifactsDeleted` |
//! | 22 | `TraceAssigned` |
//! | 23 | `CommandStarted` |
//! | 24 | `CommandExited` |
//! | 25 | `SlurmJobSubmitted` |
//! | 26 | `SlurmJobStarted` |
//! | 27 | `SlurmJobEnded` |
//! | 28 | `SlurmJobLost` |
//! | 29 | `WorkerSynced` |
//! | 30 | `RankStarted` |
//! | 31 | `SweepSubmitted` |
//! | 32 | `TrialCreated` |
//! | 33 | `TrialReachedRung` |
//! | 34 | `TrialPromoted` |
//! | 35 | `TrialStopped` |
//! | 36 | `SweepCompleted` |
//! | 37 | `SweepCancelled` |
//! | 38 | `SweepPaused` |
//! | 39 | `SweepResumed` |

use crate::domain::event::{Envelope, ENVELOPE_VERSION};
use crate::domain::Seq;

const CHECKSUM_LEN: usize = 4;

/// A record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// Shorter than a checksum.
    #[error("record {seq} is truncated ({len} bytes)")]
    Truncated {
        /// The record's sequence number.
        seq: Seq,
        /// Its length in bytes.
        len: usize,
    },
    /// The payload does not match its checksum.
    #[error("record {seq} fails its checksum (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The record's sequence number.
        seq: Seq,
        /// The checksum stored in the record.
        stored: u32,
        /// The checksum of the payload as read.
        computed: u32,
    },
    /// The payload passed its checksum but does not decode.
    #[error("record {seq} does not decode: {reason}")]
    Malformed {
        /// The record's sequence number.
        seq: Seq,
        /// The decoder's message.
        reason: String,
    },
    /// A version this build has no decoder for (no runyard wrote it).
    #[error("record {seq} has envelope version {version}, which no runyard release wrote")]
    UnknownVersion {
        /// The record's sequence number.
        seq: Seq,
        /// The version found.
        version: u16,
    },
    /// Written by a newer runyard than this one.
    #[error(
        "record {seq} has envelope version {version}; this build reads up to {ENVELOPE_VERSION}"
    )]
    TooNew {
        /// The record's sequence number.
        seq: Seq,
        /// The version found.
        version: u16,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes an envelope into a checksummed record.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = vec![0u8; CHECKSUM_LEN];
    // Encoding into a Vec only fails for types serde cannot describe; Envelope is not one.
    bincode::serde::encode_into_std_write(envelope, &mut out, config())
        .expect("an envelope always encodes");
    let crc = crc32c::crc32c(&out[CHECKSUM_LEN..]);
    out[..CHECKSUM_LEN].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes and verifies the record stored under `seq`.
pub fn decode(seq: Seq, bytes: &[u8]) -> Result<Envelope, CodecError> {
    if bytes.len() < CHECKSUM_LEN {
        return Err(CodecError::Truncated {
            seq,
            len: bytes.len(),
        });
    }
    let (head, payload) = bytes.split_at(CHECKSUM_LEN);
    let stored = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(CodecError::Checksum {
            seq,
            stored,
            computed,
        });
    }
    let malformed = |reason: String| CodecError::Malformed { seq, reason };
    let (version, _): (u16, usize) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| malformed(format!("no version: {e}")))?;
    decode_payload(seq, version, payload)
}

/// Decodes a checksummed payload written with envelope `version`, upcasting older
/// shapes to the current ones (see the module docs).
fn decode_payload(seq: Seq, version: u16, payload: &[u8]) -> Result<Envelope, CodecError> {
    match version {
        ENVELOPE_VERSION => {
            let (envelope, used): (Envelope, usize) =
                bincode::serde::decode_from_slice(payload, config()).map_err(|e| {
                    CodecError::Malformed {
                        seq,
                        reason: e.to_string(),
                    }
                })?;
            if used != payload.len() {
                return Err(CodecError::Malformed {
                    seq,
                    reason: format!("{} trailing bytes", payload.len() - used),
                });
            }
            Ok(envelope)
        }
        // Older versions get their arm here, decoding a frozen `v{N}` shape and
        // upcasting it; there are none yet (version 1 is the first release).
        v if v > ENVELOPE_VERSION => Err(CodecError::TooNew { seq, version: v }),
        v => Err(CodecError::UnknownVersion { seq, version: v }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, RunId, SlotId};

    fn samples() -> Vec<Envelope> {
        let run = RunId::new();
        vec![
            Envelope::now(
                run,
                Event::RunSubmitted {
                    name: "demo".into(),
                    digest: "ab".repeat(32),
                    spec: r#"{"name":"demo"}"#.into(),
                },
            ),
            Envelope::now(run, Event::SlotClaimed { slot: SlotId(3) }),
            Envelope::now(
                run,
                Event::EpochCompleted {
                    epoch: 2,
                    train_loss: 0.25,
                    train_accuracy: 0.875,
                    duration_ms: 1234,
                },
            ),
            Envelope::now(run, Event::CancelRequested),
            Envelope::now(run, Event::SlotReleased { slot: SlotId(3) }),
        ]
    }

    #[test]
    fn records_round_trip() {
        for (i, envelope) in samples().into_iter().enumerate() {
            let bytes = encode(&envelope);
            assert_eq!(decode(i as Seq + 1, &bytes), Ok(envelope));
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = encode(&samples()[2]);
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(9, &bad).is_err(), "bit {bit} flipped went unnoticed");
        }
    }

    #[test]
    fn torn_records_are_detected() {
        let bytes = encode(&samples()[0]);
        for len in 0..bytes.len() {
            let err = decode(5, &bytes[..len]).expect_err("torn");
            let message = err.to_string();
            assert!(message.contains("record 5"), "{message}");
        }
    }

    #[test]
    fn the_version_is_read_before_the_rest_and_picks_the_decoder() {
        let mut envelope = samples().remove(3);
        envelope.version = 0;
        let err = decode(8, &encode(&envelope)).expect_err("never released");
        assert_eq!(err, CodecError::UnknownVersion { seq: 8, version: 0 });
        // A payload whose version is current but whose rest is not an envelope.
        let mut bytes = encode(&samples()[0]);
        bytes.truncate(CHECKSUM_LEN + 3);
        let crc = crc32c::crc32c(&bytes[CHECKSUM_LEN..]);
        bytes[..CHECKSUM_LEN].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode(9, &bytes),
            Err(CodecError::Malformed { seq: 9, .. })
        ));
    }

    #[test]
    fn newer_versions_are_refused() {
        let mut envelope = samples().remove(1);
        envelope.version = ENVELOPE_VERSION + 1;
        let err = decode(7, &encode(&envelope)).expect_err("too new");
        assert!(matches!(err, CodecError::TooNew { seq: 7, .. }));
    }
}

#[cfg(test)]
mod golden;
