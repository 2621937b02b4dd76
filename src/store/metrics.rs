//! The progress history ("metrics"): what the ticker sampled of each run, kept in the
//! `metrics` tree of the journal's database for charts, with a bounded number of points
//! per run and metric however long the run. It is not part of the durable lifecycle
//! contract: it is written without a flush of its own (sled's periodic flush and the
//! journal's group commits carry it to disk), and a sample the writer had no time for
//! is dropped.
//!
//! # Keys and values
//!
//! - A point: `run id (16 bytes) | metric id (1 byte, from 1) | step (u64, big-endian)`
//!   → `wall-clock time in ms since the Unix epoch (u64, big-endian) | value (f64 bits,
//!   big-endian)`. Big-endian steps keep a series in step order, so a step range is one
//!   range scan.
//! - A series' state: `run id | 0x00 | metric id` → `version (1) | stride | count |
//!   last step` (three big-endian `u64`), written in the same sled batch as the points
//!   it describes, so it survives a restart and always matches them. A missing or
//!   unreadable state record is re-derived from the series' keys.
//!
//! # Steps
//!
//! A point's step is the batch index across the whole run:
//! `(epoch - 1) * batches_per_epoch + batch`, the number of optimizer steps taken, the
//! same number a checkpoint carries. A resumed attempt (pause, crash, retry) starts at
//! its checkpoint's step, so its points continue the series. When a point arrives at a
//! step *below* the newest stored one, the attempt that stored the later points was
//! abandoned (it failed or the server died after its last checkpoint): those points are
//! deleted and the series continues from the new one. So the history always describes
//! the line of attempts that led to the newest; a retry that starts over at step 0
//! replaces the whole history (and its stride goes back to 1).
//!
//! # Downsampling
//!
//! Each series has a `stride`, a power of two starting at 1, and keeps at most one
//! point per bucket of steps `[k * stride, (k + 1) * stride)`: the newest one. A new
//! point in the same bucket as the newest stored point replaces it, so the newest point
//! is always kept. When the series would hold more than the bound ([`MAX_POINTS`]), the
//! stride doubles (as often as needed for the run so far to span at most half the
//! bound of buckets) and each new bucket keeps only the newest of the points it holds.
//! The series then holds at most half the bound, and at least half the bound new
//! points arrive before the next thinning, so the work is constant per point on
//! average. A run of a million batches thus ends with at most [`MAX_POINTS`] points,
//! one per equally wide bucket of steps over the whole run.
//!
//! # Queries
//!
//! [`read`] answers the points with a step in `[from, to]`, in step order. When more
//! than the `points` asked for are stored, it reduces them the way the store does:
//! buckets of a power-of-two multiple of the stride, aligned on multiples of their
//! width, the smallest width that gives at most `points` buckets, and the newest point
//! of each bucket. The answer then holds between about half of `points` and `points`;
//! and as the buckets are aligned on step 0, a chart polling a live run sees old
//! points stay put until the width doubles.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::RunId;
use crate::store::StoreError;

/// The most points kept per run and metric.
pub const MAX_POINTS: u64 = 2048;

/// Points a query answers when it does not say how many.
pub const DEFAULT_QUERY_POINTS: usize = 500;

/// The smallest bound [`record`] accepts: a thinning must leave room for new points.
const MIN_BOUND: u64 = 4;

/// Version byte of the series state record.
const STATE_VERSION: u8 = 1;

/// Length of a point key: run id, metric id, step.
const POINT_KEY_LEN: usize = 16 + 1 + 8;

/// Length of a point value: time and value.
const POINT_VALUE_LEN: usize = 16;

/// Length of a series state record.
const STATE_LEN: usize = 1 + 8 * 3;

/// A sampled quantity of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Metric {
    /// Loss of the last batch before the sample (no point while it is not finite, e.g.
    /// right after a resume).
    Loss,
    /// Smoothed training speed in examples per second.
    SamplesPerSec,
    /// Share of the run done, 0 to 100.
    Percent,
    /// Epochs done, fractional: `step / batches_per_epoch`, to plot against epochs.
    Epoch,
    /// Estimated seconds to the end of the attempt (no point until a rate is known).
    EtaSecs,
}

impl Metric {
    /// Number of metrics.
    pub const COUNT: usize = 5;

    /// Every metric, in the order of [`Sample::values`].
    pub const ALL: [Metric; Metric::COUNT] = [
        Metric::Loss,
        Metric::SamplesPerSec,
        Metric::Percent,
        Metric::Epoch,
        Metric::EtaSecs,
    ];

    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::SamplesPerSec => "samples_per_sec",
            Metric::Percent => "percent",
            Metric::Epoch => "epoch",
            Metric::EtaSecs => "eta_secs",
        }
    }

    /// The metric of an API name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Its place in [`Sample::values`].
    pub fn index(self) -> usize {
        match self {
            Metric::Loss => 0,
            Metric::SamplesPerSec => 1,
            Metric::Percent => 2,
            Metric::Epoch => 3,
            Metric::EtaSecs => 4,
        }
    }

    /// Its byte in keys. On disk: never renumber one.
    fn id(self) -> u8 {
        self.index() as u8 + 1
    }
}

/// One stored point of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Batch index across the run (see the module docs).
    pub step: u64,
    /// Wall-clock time of the sample, in ms since the Unix epoch.
    pub time_ms: u64,
    /// The metric's value.
    pub value: f64,
}

/// One sample of a run as the ticker took it: a value per metric, at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The run.
    pub run_id: RunId,
    /// Batch index across the run.
    pub step: u64,
    /// Wall-clock time of the sample, in ms since the Unix epoch.
    pub time_ms: u64,
    /// The value of each metric, indexed by [`Metric::index`]; a value that is not
    /// finite (NaN for "none") stores no point.
    pub values: [f64; Metric::COUNT],
}

/// The downsampling state of one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesState {
    /// Steps per bucket, a power of two: at most one point is kept per bucket.
    pub stride: u64,
    /// Points stored.
    pub count: u64,
    /// Step of the newest point (`None` when `count` is 0).
    pub last_step: Option<u64>,
}

impl SeriesState {
    const EMPTY: SeriesState = SeriesState {
        stride: 1,
        count: 0,
        last_step: None,
    };

    fn encode(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        out[0] = STATE_VERSION;
        out[1..9].copy_from_slice(&self.stride.to_be_bytes());
        out[9..17].copy_from_slice(&self.count.to_be_bytes());
        out[17..25].copy_from_slice(&self.last_step.unwrap_or(0).to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != STATE_LEN || bytes[0] != STATE_VERSION {
            return None;
        }
        let stride = u64_at(bytes, 1)?;
        let count = u64_at(bytes, 9)?;
        let last = u64_at(bytes, 17)?;
        if !stride.is_power_of_two() {
            return None;
        }
        Some(Self {
            stride,
            count,
            last_step: (count > 0).then_some(last),
        })
    }
}

/// A failure to read or write the progress history.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The journal's database is not available (being reopened).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// sled failed on the metrics tree.
    #[error("metrics tree: {0}")]
    Sled(#[from] sled::Error),
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at + 8)?;
    Some(u64::from_be_bytes(slice.try_into().ok()?))
}

fn point_key(run_id: RunId, metric: Metric, step: u64) -> [u8; POINT_KEY_LEN] {
    let mut key = [0u8; POINT_KEY_LEN];
    key[..16].copy_from_slice(run_id.as_bytes());
    key[16] = metric.id();
    key[17..].copy_from_slice(&step.to_be_bytes());
    key
}

fn state_key(run_id: RunId, metric: Metric) -> [u8; 18] {
    let mut key = [0u8; 18];
    key[..16].copy_from_slice(run_id.as_bytes());
    key[17] = metric.id();
    key
}

fn step_of(key: &[u8]) -> Option<u64> {
    if key.len() != POINT_KEY_LEN {
        return None;
    }
    u64_at(key, 17)
}

fn encode_point(time_ms: u64, value: f64) -> [u8; POINT_VALUE_LEN] {
    let mut out = [0u8; POINT_VALUE_LEN];
    out[..8].copy_from_slice(&time_ms.to_be_bytes());
    out[8..].copy_from_slice(&value.to_bits().to_be_bytes());
    out
}

fn decode_point(step: u64, bytes: &[u8]) -> Option<Point> {
    if bytes.len() != POINT_VALUE_LEN {
        return None;
    }
    Some(Point {
        step,
        time_ms: u64_at(bytes, 0)?,
        value: f64::from_bits(u64_at(bytes, 8)?),
    })
}

/// The state of a series as stored, or re-derived from its keys when the record is
/// missing or unreadable (stride 1: the next thinning picks a fitting one).
fn load_state(
    tree: &sled::Tree,
    run_id: RunId,
    metric: Metric,
) -> Result<SeriesState, sled::Error> {
    if let Some(bytes) = tree.get(state_key(run_id, metric))? {
        if let Some(state) = SeriesState::decode(&bytes) {
            return Ok(state);
        }
        tracing::warn!(run_id = %run_id, metric = metric.name(), "unreadable metrics series state; re-derived from its points");
    }
    let mut state = SeriesState::EMPTY;
    let range = point_key(run_id, metric, 0)..=point_key(run_id, metric, u64::MAX);
    for item in tree.range(range) {
        let (key, _) = item?;
        if let Some(step) = step_of(&key) {
            state.count += 1;
            state.last_step = Some(step);
        }
    }
    Ok(state)
}

/// The changes to one series, gathered in memory and then written in one sled batch.
struct SeriesEdit {
    run_id: RunId,
    metric: Metric,
    state: SeriesState,
    /// The newest step in the tree when the edit began: every stored key is at or
    /// below it, so a step above it was written by this edit alone.
    stored_last: Option<u64>,
    /// Net changes to points: `Some` writes the value, `None` deletes the key.
    changes: BTreeMap<u64, Option<[u8; POINT_VALUE_LEN]>>,
    /// Every step the series holds, the tree's with the changes applied; read only
    /// when a rewind or a thinning needs it.
    steps: Option<BTreeSet<u64>>,
}

impl SeriesEdit {
    fn open(tree: &sled::Tree, run_id: RunId, metric: Metric) -> Result<Self, sled::Error> {
        let state = load_state(tree, run_id, metric)?;
        Ok(Self {
            run_id,
            metric,
            state,
            stored_last: state.last_step,
            changes: BTreeMap::new(),
            steps: None,
        })
    }

    fn steps(&mut self, tree: &sled::Tree) -> Result<&mut BTreeSet<u64>, sled::Error> {
        let steps = match self.steps.take() {
            Some(steps) => steps,
            None => {
                let mut steps = BTreeSet::new();
                let range = point_key(self.run_id, self.metric, 0)
                    ..=point_key(self.run_id, self.metric, u64::MAX);
                for item in tree.range(range) {
                    let (key, _) = item?;
                    steps.extend(step_of(&key));
                }
                for (step, change) in &self.changes {
                    match change {
                        Some(_) => steps.insert(*step),
                        None => steps.remove(step),
                    };
                }
                steps
            }
        };
        Ok(self.steps.insert(steps))
    }

    /// Records the deletion of `step` (the caller keeps `steps` up to date).
    fn unwrite(&mut self, step: u64) {
        if self.stored_last.is_none_or(|last| step > last) {
            // Written by this edit only: forgetting the write is enough.
            self.changes.remove(&step);
        } else {
            self.changes.insert(step, None);
        }
    }

    fn push(&mut self, tree: &sled::Tree, point: Point, bound: u64) -> Result<(), sled::Error> {
        let step = point.step;
        if self.state.last_step.is_some_and(|last| step < last) {
            // The attempt that wrote the later points was abandoned.
            let steps = self.steps(tree)?;
            let abandoned = steps.split_off(&step);
            let (count, last) = (steps.len() as u64, steps.last().copied());
            self.state.count = count;
            self.state.last_step = last;
            for gone in abandoned {
                self.unwrite(gone);
            }
            if self.state.count == 0 {
                self.state.stride = 1;
            }
        }
        let stride = self.state.stride;
        match self.state.last_step {
            Some(last) if last == step => {}
            Some(last) if last / stride == step / stride => {
                // Same bucket: the newer point replaces the newest.
                self.unwrite(last);
                if let Some(steps) = self.steps.as_mut() {
                    steps.remove(&last);
                }
            }
            _ => self.state.count += 1,
        }
        self.changes
            .insert(step, Some(encode_point(point.time_ms, point.value)));
        if let Some(steps) = self.steps.as_mut() {
            steps.insert(step);
        }
        self.state.last_step = Some(step);
        if self.state.count > bound {
            self.thin(tree, step, bound.max(MIN_BOUND))?;
        }
        Ok(())
    }

    /// Doubles the stride until the run so far spans at most half of `bound` buckets,
    /// and keeps the newest point of each bucket.
    fn thin(&mut self, tree: &sled::Tree, last: u64, bound: u64) -> Result<(), sled::Error> {
        let target = bound / 2;
        let mut stride = self.state.stride.saturating_mul(2);
        while last / stride >= target && stride < u64::MAX {
            stride = stride.saturating_mul(2);
        }
        let steps = self.steps(tree)?;
        let older: Vec<u64> = steps
            .iter()
            .zip(steps.iter().skip(1))
            .filter(|(step, next)| **step / stride == **next / stride)
            .map(|(step, _)| *step)
            .collect();
        for step in &older {
            steps.remove(step);
        }
        let count = steps.len() as u64;
        self.state.count = count;
        self.state.stride = stride;
        for step in older {
            self.unwrite(step);
        }
        Ok(())
    }

    fn finish(self, batch: &mut sled::Batch) {
        for (step, change) in self.changes {
            let key = point_key(self.run_id, self.metric, step);
            match change {
                Some(value) => batch.insert(&key[..], &value[..]),
                None => batch.remove(&key[..]),
            }
        }
        batch.insert(
            &state_key(self.run_id, self.metric)[..],
            &self.state.encode()[..],
        );
    }
}

/// Stores samples, keeping at most `bound` points per run and metric (at least 4):
/// each sample's points and series states are written in one sled batch.
pub fn record(tree: &sled::Tree, samples: &[Sample], bound: u64) -> Result<(), sled::Error> {
    for sample in samples {
        let mut batch = sled::Batch::default();
        for metric in Metric::ALL {
            let value = sample.values[metric.index()];
            if !value.is_finite() {
                continue;
            }
            let mut edit = SeriesEdit::open(tree, sample.run_id, metric)?;
            let point = Point {
                step: sample.step,
                time_ms: sample.time_ms,
                value,
            };
            edit.push(tree, point, bound)?;
            edit.finish(&mut batch);
        }
        tree.apply_batch(batch)?;
    }
    Ok(())
}

/// Stores many points of one series in step order as if recorded one by one, with one
/// read of its state and one sled batch (for imports and tests; the ticker's path is
/// [`record`]). Points whose value is not finite are skipped.
pub fn record_series(
    tree: &sled::Tree,
    run_id: RunId,
    metric: Metric,
    points: &[Point],
    bound: u64,
) -> Result<(), sled::Error> {
    let mut edit = SeriesEdit::open(tree, run_id, metric)?;
    for point in points.iter().filter(|p| p.value.is_finite()) {
        edit.push(tree, *point, bound)?;
    }
    let mut batch = sled::Batch::default();
    edit.finish(&mut batch);
    tree.apply_batch(batch)
}

/// What a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Smallest step wanted (inclusive).
    pub from: Option<u64>,
    /// Largest step wanted (inclusive).
    pub to: Option<u64>,
    /// At most this many points (at least 1).
    pub points: usize,
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The points, in step order.
    pub points: Vec<Point>,
    /// The series' stride: steps per bucket of the stored points.
    pub stride: u64,
    /// Steps per bucket of the answer: `stride`, or a power-of-two multiple of it
    /// when the stored points were reduced to fit.
    pub bucket: u64,
    /// Points stored in the range asked for.
    pub total: u64,
}

/// The points of one series in `[from, to]`, at most `points` of them (see the module
/// docs for the reduction). A run or metric with no points answers an empty series.
pub fn read(
    tree: &sled::Tree,
    run_id: RunId,
    metric: Metric,
    query: &Query,
) -> Result<Series, sled::Error> {
    let stride = match tree.get(state_key(run_id, metric))? {
        Some(bytes) => SeriesState::decode(&bytes).map_or(1, |s| s.stride),
        None => 1,
    };
    let from = query.from.unwrap_or(0);
    let to = query.to.unwrap_or(u64::MAX);
    let mut stored = Vec::new();
    if from <= to {
        for item in tree.range(point_key(run_id, metric, from)..=point_key(run_id, metric, to)) {
            let (key, value) = item?;
            match step_of(&key).and_then(|step| decode_point(step, &value)) {
                Some(point) => stored.push(point),
                None => {
                    tracing::warn!(run_id = %run_id, metric = metric.name(), key = ?key, "unreadable metrics point skipped");
                }
            }
        }
    }
    let total = stored.len() as u64;
    let wanted = query.points.max(1) as u64;
    let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
        return Ok(Series {
            points: stored,
            stride,
            bucket: stride,
            total,
        });
    };
    if total <= wanted {
        return Ok(Series {
            points: stored,
            stride,
            bucket: stride,
            total,
        });
    }
    // u128, so a width past the largest step still divides.
    let (lo, hi) = (u128::from(first.step), u128::from(last.step));
    let mut width = u128::from(stride);
    while hi / width - lo / width + 1 > u128::from(wanted) {
        width *= 2;
    }
    let points = newest_per_bucket(&stored, |step| u128::from(step) / width);
    Ok(Series {
        points,
        stride,
        bucket: u64::try_from(width).unwrap_or(u64::MAX),
        total,
    })
}

/// The newest point of each bucket, in step order.
fn newest_per_bucket(points: &[Point], bucket: impl Fn(u64) -> u128) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    for point in points {
        match out.last_mut() {
            Some(kept) if bucket(kept.step) == bucket(point.step) => *kept = *point,
            _ => out.push(*point),
        }
    }
    out
}

/// The state of one series, `None` when it has no point.
pub fn series_state(
    tree: &sled::Tree,
    run_id: RunId,
    metric: Metric,
) -> Result<Option<SeriesState>, sled::Error> {
    let state = load_state(tree, run_id, metric)?;
    Ok((state.count > 0).then_some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the database in `dir`, waiting for a dropped one's file lock: sled's
    /// flusher thread lets go of it shortly after its `Db` is dropped.
    fn open(dir: &std::path::Path) -> (sled::Db, sled::Tree) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let db = loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => break db,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("open sled: {e}"),
            }
        };
        let tree = db.open_tree("metrics").expect("metrics tree");
        (db, tree)
    }

    fn point(step: u64) -> Point {
        Point {
            step,
            time_ms: 1_700_000_000_000 + step,
            value: 1.0 / (step as f64 + 1.0),
        }
    }

    fn all(tree: &sled::Tree, run: RunId, metric: Metric) -> Series {
        let query = Query {
            from: None,
            to: None,
            points: usize::MAX,
        };
        read(tree, run, metric, &query).expect("read")
    }

    fn steps(series: &Series) -> Vec<u64> {
        series.points.iter().map(|p| p.step).collect()
    }

    /// Records steps `0..n`, one call per `chunk` points.
    fn record_steps(tree: &sled::Tree, run: RunId, n: u64, chunk: u64, bound: u64) {
        let mut start = 0;
        while start < n {
            let points: Vec<Point> = (start..(start + chunk).min(n)).map(point).collect();
            record_series(tree, run, Metric::Loss, &points, bound).expect("record");
            start += chunk;
        }
    }

    #[test]
    fn a_million_points_keep_the_bound_spread_evenly_with_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_db, tree) = open(dir.path());
        let run = RunId::new();
        let n = 1_000_000;
        record_steps(&tree, run, n, 50_000, MAX_POINTS);

        let series = all(&tree, run, Metric::Loss);
        let kept = steps(&series);
        assert!(kept.len() as u64 <= MAX_POINTS, "{} points", kept.len());
        assert!(
            kept.len() as u64 > MAX_POINTS / 4,
            "only {} points",
            kept.len()
        );
        assert_eq!(kept.last(), Some(&(n - 1)), "the newest point is kept");
        assert_eq!(series.points.last(), Some(&point(n - 1)));
        let stride = series.stride;
        assert!(stride.is_power_of_two());
        // One point per bucket, the newest of it: every gap is exactly the stride,
        // except the last, to the newest point.
        let gaps: Vec<u64> = kept.windows(2).map(|w| w[1] - w[0]).collect();
        let (last_gap, inner) = gaps.split_last().expect("gaps");
        assert!(inner.iter().all(|g| *g == stride), "uneven gaps");
        assert!(*last_gap <= stride);
        assert_eq!(kept[0], stride - 1, "the first bucket's newest point");
        let state = series_state(&tree, run, Metric::Loss)
            .expect("state")
            .expect("some");
        assert_eq!(state.count, kept.len() as u64);
        assert_eq!(state.last_step, Some(n - 1));
    }

    #[test]
    fn recording_one_point_at_a_time_agrees_with_recording_in_bulk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_db, tree) = open(dir.path());
        let (one, bulk) = (RunId::new(), RunId::new());
        // Sparse, irregular steps as the ticker sees them.
        let sampled: Vec<u64> = (0..3_000u64).map(|i| i * 7 + (i * i) % 5).collect();
        for step in &sampled {
            let mut values = [f64::NAN; Metric::COUNT];
            values[Metric::Loss.index()] = point(*step).value;
            let sample = Sample {
                run_id: one,
                step: *step,
                time_ms: point(*step).time_ms,
                values,
            };
            record(&tree, &[sample], 64).expect("record");
        }
        let points: Vec<Point> = sampled.iter().map(|s| point(*s)).collect();
        record_series(&tree, bulk, Metric::Loss, &points, 64).expect("bulk");
        let (a, b) = (
            all(&tree, one, Metric::Loss),
            all(&tree, bulk, Metric::Loss),
        );
        assert_eq!(a.points, b.points);
        assert_eq!(a.stride, b.stride);
        assert!(a.points.len() <= 64 && a.points.len() > 16);
        assert_eq!(a.points.last().map(|p| p.step), sampled.last().copied());
        // At most one point per bucket.
        let buckets: BTreeSet<u64> = a.points.iter().map(|p| p.step / a.stride).collect();
        assert_eq!(buckets.len(), a.points.len());
        assert!(a.points.windows(2).all(|w| w[0].step < w[1].step));
    }

    #[test]
    fn from_to_and_points_select_and_reduce() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_db, tree) = open(dir.path());
        let run = RunId::new();
        record_steps(&tree, run, 1_000, 1_000, MAX_POINTS);
        let query = |from, to, points| Query { from, to, points };

        let range =
            read(&tree, run, Metric::Loss, &query(Some(100), Some(199), 500)).expect("range");
        assert_eq!(steps(&range), (100..=199).collect::<Vec<_>>());
        assert_eq!(range.total, 100);
        assert_eq!((range.stride, range.bucket), (1, 1));

        let open_end = read(&tree, run, Metric::Loss, &query(Some(990), None, 500)).expect("from");
        assert_eq!(steps(&open_end), (990..1_000).collect::<Vec<_>>());
        let open_start = read(&tree, run, Metric::Loss, &query(None, Some(4), 500)).expect("to");
        assert_eq!(steps(&open_start), [0, 1, 2, 3, 4]);

        let reduced = read(&tree, run, Metric::Loss, &query(None, None, 10)).expect("reduced");
        assert_eq!(reduced.total, 1_000);
        assert!(
            reduced.points.len() <= 10 && reduced.points.len() >= 5,
            "{:?}",
            steps(&reduced)
        );
        assert_eq!(reduced.bucket, 128);
        assert_eq!(steps(&reduced), [127, 255, 383, 511, 639, 767, 895, 999]);

        let one = read(&tree, run, Metric::Loss, &query(Some(10), Some(20), 1)).expect("one");
        assert_eq!(steps(&one), [20], "the newest point of the range");

        let empty = read(&tree, run, Metric::Loss, &query(Some(5_000), None, 10)).expect("empty");
        assert!(empty.points.is_empty() && empty.total == 0);
        let inverted = read(&tree, run, Metric::Loss, &query(Some(9), Some(3), 10)).expect("inv");
        assert!(inverted.points.is_empty());
        let other_metric = all(&tree, run, Metric::Percent);
        assert!(other_metric.points.is_empty());
        let other_run = all(&tree, RunId::new(), Metric::Loss);
        assert!(other_run.points.is_empty());
    }

    #[test]
    fn a_reopened_database_keeps_the_stride_and_goes_on_thinning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = RunId::new();
        let before = {
            let (db, tree) = open(dir.path());
            record_steps(&tree, run, 10_000, 1_000, 256);
            db.flush().expect("flush");
            all(&tree, run, Metric::Loss)
        };
        assert!(before.stride > 1);
        let (_db, tree) = open(dir.path());
        let after_restart = all(&tree, run, Metric::Loss);
        assert_eq!(after_restart, before);
        let state = series_state(&tree, run, Metric::Loss)
            .expect("state")
            .expect("some");
        assert_eq!(state.stride, before.stride);
        assert_eq!(state.count, before.points.len() as u64);

        // Going on from step 10,000 gives what an uninterrupted run gives.
        let points: Vec<Point> = (10_000..20_000).map(point).collect();
        record_series(&tree, run, Metric::Loss, &points, 256).expect("more");
        let continued = all(&tree, run, Metric::Loss);
        let reference = RunId::new();
        record_steps(&tree, reference, 20_000, 20_000, 256);
        assert_eq!(continued, all(&tree, reference, Metric::Loss));
    }

    #[test]
    fn a_state_record_lost_is_re_derived_from_the_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_db, tree) = open(dir.path());
        let run = RunId::new();
        record_steps(&tree, run, 500, 500, 64);
        let count = all(&tree, run, Metric::Loss).points.len() as u64;
        tree.insert(state_key(run, Metric::Loss), &b"garbage"[..])
            .expect("damage");
        let state = series_state(&tree, run, Metric::Loss)
            .expect("state")
            .expect("some");
        assert_eq!((state.count, state.last_step), (count, Some(499)));
        let points: Vec<Point> = (500..5_000).map(point).collect();
        record_series(&tree, run, Metric::Loss, &points, 64).expect("more");
        let series = all(&tree, run, Metric::Loss);
        assert!(series.points.len() <= 64);
        assert_eq!(series.points.last().map(|p| p.step), Some(4_999));
    }

    #[test]
    fn a_step_going_back_drops_the_abandoned_attempts_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_db, tree) = open(dir.path());
        let run = RunId::new();
        record_steps(&tree, run, 300, 300, MAX_POINTS);
        // A resumed attempt from the checkpoint at step 200.
        record_series(
            &tree,
            run,
            Metric::Loss,
            &[point(200), point(201)],
            MAX_POINTS,
        )
        .expect("resume");
        let series = all(&tree, run, Metric::Loss);
        assert_eq!(steps(&series), (0..=201).collect::<Vec<_>>());
        assert_eq!(
            series_state(&tree, run, Metric::Loss)
                .expect("state")
                .map(|s| (s.count, s.last_step)),
            Some((202, Some(201)))
        );

        // A thinned series retried from scratch starts over at stride 1.
        record_steps(&tree, run, 5_000, 5_000, 64);
        assert!(all(&tree, run, Metric::Loss).stride > 1);
        record_series(&tree, run, Metric::Loss, &[point(0), point(1)], 64).expect("retry");
        let series = all(&tree, run, Metric::Loss);
        assert_eq!(steps(&series), [0, 1]);
        assert_eq!(series.stride, 1);
    }

    #[test]
    fn samples_store_each_finite_metric_and_skip_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_db, tree) = open(dir.path());
        let run = RunId::new();
        let mut values = [f64::NAN; Metric::COUNT];
        values[Metric::Loss.index()] = f64::INFINITY;
        values[Metric::Percent.index()] = 12.5;
        values[Metric::Epoch.index()] = 0.25;
        let sample = Sample {
            run_id: run,
            step: 7,
            time_ms: 42,
            values,
        };
        record(&tree, &[sample], MAX_POINTS).expect("record");
        assert!(all(&tree, run, Metric::Loss).points.is_empty());
        assert!(all(&tree, run, Metric::EtaSecs).points.is_empty());
        assert_eq!(
            all(&tree, run, Metric::Percent).points,
            [Point {
                step: 7,
                time_ms: 42,
                value: 12.5
            }]
        );
        assert_eq!(all(&tree, run, Metric::Epoch).points[0].value, 0.25);
        assert_eq!(
            Metric::from_name("samples_per_sec"),
            Some(Metric::SamplesPerSec)
        );
        assert_eq!(Metric::from_name("accuracy"), None);
    }
}
