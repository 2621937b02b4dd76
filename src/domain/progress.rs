//! A run's progress as the ticker samples it from the training thread's cells.

/// A run's progress as shown in the run JSON and on its stream.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// 1-based epoch in progress.
    pub epoch: u64,
    /// Epochs in the attempt.
    pub epochs: u64,
    /// Batches finished in the current epoch.
    pub batch: u64,
    /// Batches in one epoch.
    pub batches_per_epoch: u64,
    /// Examples processed in this attempt.
    pub samples: u64,
    /// Loss of the last batch (null before the first).
    pub loss: Option<f64>,
    /// Share of the attempt done, 0 to 100.
    pub percent: f64,
    /// Smoothed training speed.
    pub samples_per_sec: f64,
    /// Estimated seconds to the end of the attempt (null until a rate is known).
    pub eta_secs: Option<f64>,
}
