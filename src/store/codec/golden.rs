//! What pins the on-disk format: `tests/golden/records-v1.hex` (the stored bytes of
//! records of every [`Event`](crate::domain::Event) variant) and the variant table in
//! the module docs, checked against each other and against the enum as serde sees it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{self, Serialize, Serializer};

use super::*;
use crate::domain::{Event, RunId, SlotId};

/// What a maintainer runs, deliberately, to append the records of a new variant.
const APPEND: &str = "cargo test --locked --lib store::codec::golden -- --ignored";

/// The golden file of the current envelope version.
fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/golden/records-v{ENVELOPE_VERSION}.hex"))
}

fn header() -> String {
    format!(
        "\
# The stored bytes of journal records, envelope version {ENVELOPE_VERSION}, exactly as
# `runyard::store::codec::encode` writes them: the CRC32C of the payload (4 bytes,
# big-endian), then the payload (bincode 2, standard config). One record a line:
# seq<TAB>Event variant<TAB>bytes in hex
#
# Released bytes never change: journals on disk hold them, and every later build must
# read them (the tests in src/store/codec.rs check it). A new Event variant goes at
# the end of the enum and gets new lines appended here: add its events at the end of
# `samples()` in src/store/codec.rs, then run
#   {APPEND}
# which appends their lines and refuses to change a released one.
"
    )
}

fn run(last: u8) -> RunId {
    RunId::from_bytes([
        0x01, 0x97, 0x6f, 0x3a, 0x52, 0x00, 0x7c, 0x4d, 0x8e, 0x5f, 0x01, 0x23, 0x45, 0x67, 0x89,
        last,
    ])
}

/// The records of the golden file, record `i` being seq `i + 1`, with fixed ids,
/// times and values. Append only: a released record never changes or goes away.
fn samples() -> Vec<Envelope> {
    let (a, b, c) = (run(0xa1), run(0xb2), run(0xc3));
    let sha = |byte: &str| byte.repeat(32);
    let events = vec![
        (
            a,
            Event::RunSubmitted {
                name: "golden-bytes".into(),
                digest: sha("5e"),
                spec: r#"{"name":"golden-bytes","epochs":2}"#.into(),
            },
        ),
        (a, Event::SlotClaimed { slot: SlotId(3) }),
        (
            a,
            Event::RunStarted {
                attempt: 1,
                slot: SlotId(3),
                device: "cuda:0".into(),
            },
        ),
        (
            a,
            Event::EpochCompleted {
                epoch: 1,
                train_loss: 0.6875,
                train_accuracy: 0.5,
                duration_ms: 1234,
            },
        ),
        (
            a,
            Event::RunCompleted {
                train_loss: 0.125,
                train_accuracy: 0.96875,
            },
        ),
        (
            b,
            Event::RunFailed {
                reason: "cuda out of memory".into(),
            },
        ),
        (b, Event::CancelRequested),
        (
            b,
            Event::RunCancelled {
                reason: "cancelled by a client".into(),
            },
        ),
        (
            b,
            Event::RunRequeued {
                reason: "server restarted".into(),
            },
        ),
        (b, Event::SlotReleased { slot: SlotId(300) }),
        (
            b,
            Event::CheckpointSaved {
                path: "runs/b2/checkpoints/step-40.pt".into(),
                epoch: 2,
                batch: 7,
                step: 40,
                sha256: sha("c4"),
                bytes: 1_048_576,
            },
        ),
        (b, Event::PauseRequested),
        (
            b,
            Event::RunPaused {
                reason: "paused by a client".into(),
            },
        ),
        (b, Event::RunResumed),
        (
            b,
            Event::ResumedFromCheckpoint {
                step: 40,
                path: "runs/b2/checkpoints/step-40.pt".into(),
            },
        ),
        (
            b,
            Event::ArtifactSaved {
                name: "final.safetensors".into(),
                path: "runs/b2/artifacts/final.safetensors".into(),
                sha256: sha("a7"),
                bytes: 70_000,
            },
        ),
        (
            b,
            Event::EpochEvaluated {
                epoch: 3,
                val_loss: 0.25,
                val_metric: 0.9375,
            },
        ),
        (
            b,
            Event::RunRetryScheduled {
                reason: "exit code 3".into(),
                retry: 2,
                delay_ms: 30_000,
            },
        ),
        (
            b,
            Event::RunStalled {
                idle_secs: 301.5,
                threshold_secs: 300.0,
            },
        ),
        (b, Event::StallEnded { idle_secs: 302.25 }),
        (
            RunId::SYSTEM,
            Event::JournalRepaired {
                from_seq: 17,
                to_seq: 19,
                reason: "record 17 fails its checksum".into(),
                file: "repaired/journal-tail-17.jsonl".into(),
            },
        ),
        (
            b,
            Event::ArtifactsDeleted {
                files: 4,
                bytes: 3_145_728,
            },
        ),
        (
            c,
            Event::TraceAssigned {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
                parent_span_id: Some("53995c3f42cd8ad8".into()),
            },
        ),
        (
            c,
            Event::TraceAssigned {
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: "b7ad6b7169203331".into(),
                parent_span_id: None,
            },
        ),
        (
            c,
            Event::CommandStarted {
                pid: 4242,
                pgid: 4242,
                start_ticks: 987_654_321,
            },
        ),
        (
            c,
            Event::CommandExited {
                status: "exit code 0".into(),
                exit_code: Some(0),
                signal: None,
                lines: 12,
                bad: Vec::new(),
                last_error: None,
                metrics: Vec::new(),
            },
        ),
        (
            c,
            Event::CommandExited {
                status: "killed by signal 9 (SIGKILL)".into(),
                exit_code: None,
                signal: Some(9),
                lines: 40,
                bad: vec![("not_json".into(), 2), ("too_long".into(), 1)],
                last_error: Some("line 39 is not JSON".into()),
                metrics: vec![("lr".into(), 0.001), ("tokens_per_s".into(), 5120.5)],
            },
        ),
        (
            c,
            Event::SlurmJobSubmitted {
                job_id: 881_234,
                job: 1,
                dir: "/shared/runyard/jobs/c3-1".into(),
            },
        ),
        (
            c,
            Event::SlurmJobStarted {
                job_id: 881_234,
                attempt: 1,
                node: "gpu-node-07".into(),
                device: "cuda:0".into(),
            },
        ),
        (
            c,
            Event::SlurmJobEnded {
                job_id: 881_234,
                state: "NODE_FAIL".into(),
                reason: "node gpu-node-07 failed".into(),
            },
        ),
        (
            c,
            Event::SlurmJobLost {
                job_id: 881_234,
                reason: "NODE_FAIL".into(),
                lost: 1,
                delay_ms: 60_000,
            },
        ),
        (c, Event::WorkerSynced { through_seq: 77 }),
        (
            b,
            Event::RankStarted {
                rank: 1,
                pid: 31_338,
                pgid: 31_338,
                start_ticks: 9_876_544,
            },
        ),
        (
            run(0xd4),
            Event::SweepSubmitted {
                name: "digits-asha".into(),
                digest: sha("5f"),
                spec: r#"{"name":"digits-asha","base":{"name":"digits"},"space":{},"searcher":{"kind":"random","max_trials":1}}"#.into(),
            },
        ),
        (
            run(0xd4),
            Event::TrialCreated {
                trial: 0,
                run: a,
                point: r#"{"optimizer.lr":0.01}"#.into(),
            },
        ),
        (
            run(0xd4),
            Event::TrialReachedRung {
                trial: 0,
                rung: 1,
                epochs: 3,
                metric: 0.9625,
            },
        ),
        (run(0xd4), Event::TrialPromoted { trial: 0, rung: 2 }),
        (
            run(0xd4),
            Event::TrialStopped {
                trial: 1,
                reason: "not among the best 1/3 at rung 0".into(),
            },
        ),
        (run(0xd4), Event::SweepCompleted { best: Some(0) }),
        (
            run(0xd4),
            Event::SweepCancelled {
                reason: "cancelled by request".into(),
            },
        ),
        (run(0xd4), Event::SweepPaused),
        (run(0xd4), Event::SweepResumed),
        // New records go here, at the end.
    ];
    events
        .into_iter()
        .zip(1i64..)
        .map(|((run_id, event), n)| Envelope {
            version: ENVELOPE_VERSION,
            recorded_at_micros: 1_750_000_000_000_000 + n * 250_000,
            run_id,
            event,
        })
        .collect()
}

/// One line of a golden file.
#[derive(Debug, PartialEq)]
struct Line {
    seq: Seq,
    variant: String,
    bytes: Vec<u8>,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\t{}\t{}", self.seq, self.variant, to_hex(&self.bytes))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The lines of a golden file; `#` comments and blank lines are skipped, and the
/// records must be numbered 1, 2, 3...
fn parse(text: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || panic!("golden line {}: not seq<TAB>variant<TAB>hex: {line}", n + 1);
        let mut cells = line.split('\t');
        let (Some(seq), Some(variant), Some(hex), None) =
            (cells.next(), cells.next(), cells.next(), cells.next())
        else {
            bad()
        };
        let (Ok(seq), Some(bytes)) = (seq.parse::<Seq>(), from_hex(hex)) else {
            bad()
        };
        assert_eq!(
            seq,
            lines.len() as Seq + 1,
            "golden line {}: records are numbered 1, 2, 3...",
            n + 1
        );
        lines.push(Line {
            seq,
            variant: variant.to_string(),
            bytes,
        });
    }
    lines
}

fn golden_lines() -> Vec<Line> {
    let path = golden_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; `{APPEND}` writes it", path.display());
    });
    parse(&text)
}

/// The lines the events built here give.
fn sample_lines() -> Vec<Line> {
    samples()
        .iter()
        .zip(1..)
        .map(|(envelope, seq)| Line {
            seq,
            variant: variant_of(&envelope.event).1.to_string(),
            bytes: encode(envelope),
        })
        .collect()
}

fn fail_on(problems: &[String], hint: &str) {
    assert!(problems.is_empty(), "{}\n\n{hint}", problems.join("\n"));
}

const NEVER_CHANGE: &str = "Released bytes never change: journals on disk hold them. Put the \
    Event variants back in their released order and shape; a change of shape is a new \
    envelope version with an upcaster (see the docs of store::codec), and a new variant \
    goes at the end of the enum.";

/// Why a probe stopped, and the error type of the recorder.
#[derive(Debug)]
enum Probe {
    /// The enum's name and its variants, in declaration order.
    Declared(&'static str, &'static [&'static str]),
    /// Anything else serde reported.
    Other(String),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Declared(name, variants) => write!(f, "{name} declares {variants:?}"),
            Probe::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Probe {}

impl ser::Error for Probe {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Probe::Other(msg.to_string())
    }
}

impl de::Error for Probe {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Probe::Other(msg.to_string())
    }
}

/// A deserializer that asks an enum for the variants it declares, in order (serde
/// derives that list from the enum itself), and stops there.
struct DeclaredVariants;

impl<'de> Deserializer<'de> for DeclaredVariants {
    type Error = Probe;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probe> {
        Err(Probe::Other("not an enum".into()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probe> {
        Err(Probe::Declared(name, variants))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        struct identifier ignored_any
    }
}

/// `Event`'s variants as serde declares them: the position is bincode's index.
fn declared_event_variants() -> &'static [&'static str] {
    match Event::deserialize(DeclaredVariants) {
        Err(Probe::Declared("Event", variants)) => variants,
        other => panic!("Event did not declare its variants: {other:?}"),
    }
}

/// A serializer that writes nothing and records every enum variant it is given:
/// (enum, variant index, variant name), the index being what bincode writes.
#[derive(Default)]
struct Variants(Vec<(&'static str, u32, &'static str)>);

fn variants_in<T: Serialize>(value: &T) -> Vec<(&'static str, u32, &'static str)> {
    let mut seen = Variants::default();
    value
        .serialize(&mut seen)
        .expect("the recorder takes every value");
    seen.0
}

/// The index and name serde gives `event`'s variant.
fn variant_of(event: &Event) -> (u32, &'static str) {
    match variants_in(event).first() {
        Some(&("Event", index, name)) => (index, name),
        other => panic!("serde reported no Event variant for {event:?}: {other:?}"),
    }
}

macro_rules! ignore {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Probe> {
            Ok(())
        })*
    };
}

impl Serializer for &mut Variants {
    type Ok = ();
    type Error = Probe;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    ignore!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Result<(), Probe> {
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Probe> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Probe> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<(), Probe> {
        self.0.push((name, index, variant));
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Probe> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Probe> {
        self.0.push((name, index, variant));
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Probe> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, Probe> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Probe> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, Probe> {
        self.0.push((name, index, variant));
        Ok(self)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self, Probe> {
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Probe> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, Probe> {
        self.0.push((name, index, variant));
        Ok(self)
    }
}

macro_rules! compound {
    ($($trait:ident :: $method:ident($($key:ty)?)),* $(,)?) => {
        $(impl ser::$trait for &mut Variants {
            type Ok = ();
            type Error = Probe;

            fn $method<T: ?Sized + Serialize>(
                &mut self,
                $(_: $key,)?
                value: &T,
            ) -> Result<(), Probe> {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<(), Probe> {
                Ok(())
            }
        })*
    };
}

compound!(
    SerializeSeq::serialize_element(),
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
);

impl ser::SerializeMap for &mut Variants {
    type Ok = ();
    type Error = Probe;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Probe> {
        key.serialize(&mut **self)
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Probe> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), Probe> {
        Ok(())
    }
}

/// The index → variant table of the module docs, read from this very file.
fn doc_table() -> Vec<(u32, String)> {
    include_str!("../codec.rs")
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix("//! |")?.split('|');
            let index = cells.next()?.trim().parse().ok()?;
            let name = cells.next()?.trim().trim_matches('`').to_string();
            Some((index, name))
        })
        .collect()
}

#[test]
fn the_variant_table_in_the_docs_is_the_enum_as_bincode_numbers_it() {
    let declared: Vec<(u32, String)> = declared_event_variants()
        .iter()
        .zip(0..)
        .map(|(name, index)| (index, name.to_string()))
        .collect();
    let documented = doc_table();
    let mut problems = Vec::new();
    for index in 0..declared.len().max(documented.len()) {
        match (declared.get(index), documented.get(index)) {
            (Some(real), Some(doc)) if real == doc => {}
            (real, doc) => problems.push(format!(
                "index {index}: Event declares {real:?}, the table in store::codec's \
                 docs says {doc:?}"
            )),
        }
    }
    // What serde hands a serializer (bincode among them) agrees with the order of
    // declaration, for every variant.
    for envelope in samples() {
        let (index, name) = variant_of(&envelope.event);
        if declared.get(index as usize).map(|(_, n)| n.as_str()) != Some(name) {
            problems.push(format!(
                "Event::{name} serializes as variant {index}, declared as {:?}",
                declared.iter().find(|(_, n)| n == name)
            ));
        }
    }
    fail_on(
        &problems,
        &format!(
            "A new variant at the end: add its row to the table in the docs of \
             src/store/codec.rs. A variant that moved or was renamed: {NEVER_CHANGE}"
        ),
    );
}

#[test]
fn every_event_variant_has_a_golden_record() {
    let mut recorded: BTreeMap<u32, &'static str> = BTreeMap::new();
    for line in golden_lines() {
        if let Ok(envelope) = decode(line.seq, &line.bytes) {
            let (index, name) = variant_of(&envelope.event);
            recorded.insert(index, name);
        }
    }
    let problems: Vec<String> = declared_event_variants()
        .iter()
        .zip(0u32..)
        .filter(|&(name, index)| recorded.get(&index) != Some(name))
        .map(|(name, index)| {
            format!(
                "Event::{name} (variant {index}) has no record in {} that decodes to it",
                golden_path().display()
            )
        })
        .collect();
    fail_on(
        &problems,
        &format!(
            "A new variant: add events of it at the end of `samples()` in \
             src/store/codec.rs and run `{APPEND}` to append their records. \
             Otherwise: {NEVER_CHANGE}"
        ),
    );
}

#[test]
fn golden_records_decode_to_their_variant_and_encode_back_byte_for_byte() {
    let mut problems = Vec::new();
    for line in golden_lines() {
        let Line {
            seq,
            variant,
            bytes,
        } = &line;
        match decode(*seq, bytes) {
            Err(e) => problems.push(format!("record {seq} ({variant}) does not decode: {e}")),
            Ok(envelope) => {
                let (index, name) = variant_of(&envelope.event);
                if name != variant {
                    problems.push(format!(
                        "record {seq} ({variant}) decodes as Event::{name} (variant {index})"
                    ));
                }
                let again = encode(&envelope);
                if again != *bytes {
                    problems.push(format!(
                        "record {seq} ({variant}) encodes back to other bytes:\n  golden {}\n  now    {}",
                        to_hex(bytes),
                        to_hex(&again)
                    ));
                }
            }
        }
    }
    fail_on(&problems, NEVER_CHANGE);
}

#[test]
fn the_events_built_here_encode_to_the_golden_bytes() {
    let golden = golden_lines();
    let built = samples();
    let mut problems = Vec::new();
    for (i, envelope) in built.iter().enumerate() {
        let seq = i as Seq + 1;
        let (_, name) = variant_of(&envelope.event);
        let Some(line) = golden.get(i) else {
            problems.push(format!(
                "record {seq} (Event::{name}) is not in the golden file yet: run `{APPEND}`"
            ));
            continue;
        };
        if line.variant != name {
            problems.push(format!(
                "record {seq}: the golden file has {}, the events built here Event::{name}",
                line.variant
            ));
        }
        let bytes = encode(envelope);
        if bytes != line.bytes {
            problems.push(format!(
                "record {seq} ({name}) encodes to other bytes than it was released with:\n  \
                 golden {}\n  now    {}",
                to_hex(&line.bytes),
                to_hex(&bytes)
            ));
        }
        if let Ok(decoded) = decode(seq, &line.bytes) {
            if decoded != *envelope {
                problems.push(format!(
                    "record {seq} ({name}) decodes to {decoded:?}, built as {envelope:?}"
                ));
            }
        }
    }
    for line in golden.iter().skip(built.len()) {
        problems.push(format!(
            "record {} ({}) is in the golden file but `samples()` no longer builds it: \
             released records never go away",
            line.seq, line.variant
        ));
    }
    fail_on(
        &problems,
        &format!(
            "A record not in the golden file yet (events added at the end of \
             `samples()`): run `{APPEND}`. Otherwise: {NEVER_CHANGE}"
        ),
    );
}

#[test]
fn events_hold_no_other_enum_that_bincode_numbers_by_position() {
    let problems: Vec<String> = samples()
        .iter()
        .flat_map(|envelope| {
            let (_, outer) = variant_of(&envelope.event);
            variants_in(envelope)
                .into_iter()
                .skip(1)
                .map(move |(name, index, variant)| {
                    format!("Event::{outer} holds {name}::{variant} (variant {index})")
                })
        })
        .collect();
    fail_on(
        &problems,
        "bincode numbers these variants by position too: pin them as Event's are (a \
         table in the docs of store::codec, checked like Event's, and golden records of \
         each), or use a plain type.",
    );
}

/// The one way the golden file is written: run deliberately (`--ignored`), it
/// appends the records of events added at the end of `samples()`, and refuses to
/// touch a released record.
#[test]
#[ignore = "writes tests/golden/records-v1.hex: run it deliberately to append records"]
fn append_new_records_to_the_golden_file() {
    let path = golden_path();
    let released = match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let lines = sample_lines();
    assert!(
        released.len() <= lines.len(),
        "{} has {} records, `samples()` builds {}: released records never go away",
        path.display(),
        released.len(),
        lines.len()
    );
    for (old, new) in released.iter().zip(&lines) {
        assert!(
            old == new,
            "released record {} would change, so nothing was written:\n  golden {old}\n  \
             now    {new}\n\n{NEVER_CHANGE}",
            old.seq
        );
    }
    let mut text = header();
    for line in &lines {
        text.push_str(&format!("{line}\n"));
    }
    let tmp = path.with_extension("hex.tmp");
    std::fs::write(&tmp, text).expect("write the golden file");
    std::fs::rename(&tmp, &path).expect("move the golden file in place");
}
