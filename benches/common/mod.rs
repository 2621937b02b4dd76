//! What every bench binary shares: where the target directory is, whether this is a
//! real `--bench` run or the smoke run of `cargo test --benches`, and how figures are
//! written for `scripts/bench-report.py` (`target/bench-figures/<bench>.json`, each
//! figure `{"value": v, "unit": u}`).

// Each bench binary compiles this module on its own and uses part of it.
#![allow(dead_code)]

pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How the bench binary was invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--list`: nothing to run.
    List,
    /// Without `--bench` (`cargo test --benches`): check the loops work, report nothing.
    Smoke,
    /// `cargo bench`: measure and write figures.
    Bench,
}

/// The mode from the command line.
pub fn mode() -> Mode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        Mode::List
    } else if has("--bench") && !has("--test") && !has("--profile-time") {
        Mode::Bench
    } else {
        Mode::Smoke
    }
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Figures of one bench binary.
#[derive(Debug, Default)]
pub struct Figures {
    map: BTreeMap<String, serde_json::Value>,
    /// Print each figure as `name: value unit` as it is recorded.
    echo: Option<usize>,
}

impl Figures {
    /// Figures that are only collected.
    pub fn quiet() -> Self {
        Self::default()
    }

    /// Figures also printed as they are recorded, with `decimals` decimals.
    pub fn echoed(decimals: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            echo: Some(decimals),
        }
    }

    /// Records one figure.
    pub fn put(&mut self, name: impl Into<String>, value: f64, unit: &str) {
        let name = name.into();
        if let Some(decimals) = self.echo {
            println!("{name}: {value:.decimals$} {unit}");
        }
        self.map
            .insert(name, serde_json::json!({ "value": value, "unit": unit }));
    }

    /// Whether no figure was recorded.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Writes `target/bench-figures/<stem>.json`.
    pub fn write(&self, stem: &str) {
        let out = target_dir().join("bench-figures");
        std::fs::create_dir_all(&out).expect("create target/bench-figures");
        let text = serde_json::to_string_pretty(&self.map).expect("figures serialize");
        std::fs::write(out.join(format!("{stem}.json")), text + "\n")
            .unwrap_or_else(|e| panic!("write {stem} figures: {e}"));
    }
}
