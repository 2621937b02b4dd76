//! [`RunBoard`]: a value per run that an actor writes and the API reads, shared
//! behind a lock that a panicking writer cannot poison for the readers.

use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;

use crate::domain::RunId;

/// A value per run, shared between the actor that keeps it and the API. Keyed with
/// FxHash as the progress board is: run ids are random, nothing to defend against.
pub struct RunBoard<V> {
    values: Arc<RwLock<FxHashMap<RunId, V>>>,
}

impl<V> Clone for RunBoard<V> {
    fn clone(&self) -> Self {
        Self {
            values: Arc::clone(&self.values),
        }
    }
}

impl<V> Default for RunBoard<V> {
    fn default() -> Self {
        Self {
            values: Arc::default(),
        }
    }
}

impl<V> std::fmt::Debug for RunBoard<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunBoard").finish_non_exhaustive()
    }
}

impl<V> RunBoard<V> {
    /// What `read` makes of a run's value, when it has one.
    pub fn read<T>(&self, run_id: RunId, read: impl FnOnce(&V) -> T) -> Option<T> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        values.get(&run_id).map(read)
    }

    /// What `read` makes of every value.
    pub fn read_all<T>(&self, mut read: impl FnMut(&V) -> T) -> Vec<T> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        values.values().map(&mut read).collect()
    }

    /// Sets a run's value.
    pub fn insert(&self, run_id: RunId, value: V) {
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        values.insert(run_id, value);
    }

    /// Removes a run's value when `still` says it is the one to remove.
    pub fn remove_if(&self, run_id: RunId, still: impl FnOnce(&V) -> bool) {
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        if values.get(&run_id).is_some_and(still) {
            values.remove(&run_id);
        }
    }
}

impl<V: Default> RunBoard<V> {
    /// Changes a run's value, starting from the default.
    pub fn update(&self, run_id: RunId, change: impl FnOnce(&mut V)) {
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        change(values.entry(run_id).or_default());
    }
}
