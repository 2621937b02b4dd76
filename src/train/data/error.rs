//! What makes data unusable, and how much of it may be loaded.

use crate::domain::SpecError;

/// Largest data set loaded, in feature values (1 GiB of `f32`).
pub const MAX_FEATURE_VALUES: i64 = 1 << 28;

/// Data that cannot be used: which field of the spec, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DataError {
    /// Path of the spec field, e.g. `data.path` or `validation.data.target`.
    pub field: String,
    /// What is wrong, naming the file where there is one.
    pub reason: String,
}

impl DataError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<DataError> for SpecError {
    fn from(e: DataError) -> Self {
        SpecError {
            field: e.field,
            reason: e.reason,
        }
    }
}
