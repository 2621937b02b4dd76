//! `runyard journal export | import | verify`: the event log of a data directory, as
//! JSON lines and back, and a full check of it. Run them on a data directory no
//! server is using (sled holds a lock on an open one).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Subcommand;

use crate::store::portable::{export, import};
use crate::store::verify::verify;
use crate::store::EventLog;

/// The journal commands.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Write the log as JSON lines (stdout by default).
    Export {
        /// The data directory whose journal is exported.
        #[arg(long)]
        data_dir: PathBuf,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rebuild a new data directory's journal from JSON lines (stdin by default).
    Import {
        /// A new or empty data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Read from this file instead of stdin.
        #[arg(long = "in")]
        input: Option<PathBuf>,
    },
    /// Check checksums, contiguity, the per-run index and the slot ledger.
    Verify {
        /// The data directory whose journal is checked.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Opens the journal of `data_dir`, holding the directory's lock (a live server's
/// directory is refused in one line naming its PID).
fn open_existing(data_dir: &Path) -> anyhow::Result<(crate::store::DirLock, EventLog)> {
    let journal = data_dir.join("journal");
    if !journal.is_dir() {
        bail!(
            "no journal in {} (expected {})",
            data_dir.display(),
            journal.display()
        );
    }
    let lock = crate::store::lock(data_dir)?;
    let log = EventLog::open(&journal).with_context(|| {
        format!(
            "cannot open the journal in {} (is a server using it?)",
            data_dir.display()
        )
    })?;
    Ok((lock, log))
}

/// Runs one journal command.
pub fn run(command: JournalCommand) -> anyhow::Result<()> {
    match command {
        JournalCommand::Export { data_dir, out } => {
            let (_lock, log) = open_existing(&data_dir)?;
            let count = match out {
                Some(path) => {
                    let file = File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut writer = BufWriter::new(file);
                    let count = export(&log, &mut writer)?;
                    writer
                        .into_inner()
                        .map_err(|e| e.into_error())
                        .and_then(|f| f.sync_all())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    count
                }
                None => export(&log, &mut BufWriter::new(std::io::stdout().lock()))?,
            };
            eprintln!("exported {count} records from {}", data_dir.display());
        }
        JournalCommand::Import { data_dir, input } => {
            let (count, state) = match input {
                Some(path) => {
                    let file = File::open(&path)
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    import(&data_dir, BufReader::new(file))
                        .with_context(|| format!("import from {} failed", path.display()))?
                }
                None => import(&data_dir, std::io::stdin().lock())
                    .context("import from stdin failed")?,
            };
            println!(
                "imported {count} records ({} runs) into {}",
                state.len(),
                data_dir.display()
            );
        }
        JournalCommand::Verify { data_dir } => {
            let (_lock, log) = open_existing(&data_dir)?;
            let report = verify(&log);
            let mut out = std::io::stdout().lock();
            let states: Vec<String> = report
                .states
                .iter()
                .map(|(state, n)| format!("{state} {n}"))
                .collect();
            writeln!(
                out,
                "{}: {} records (last seq {}), {} runs ({}), {} index entries, {} slots held",
                data_dir.display(),
                report.records,
                report.last_seq,
                report.runs,
                if states.is_empty() {
                    "none".into()
                } else {
                    states.join(", ")
                },
                report.index_entries,
                report.slots_held
            )?;
            for problem in &report.problems {
                writeln!(out, "problem: {problem}")?;
            }
            if !report.is_clean() {
                bail!(
                    "{} problems found in {}",
                    report.problem_count,
                    data_dir.display()
                );
            }
            writeln!(out, "ok: every check passed")?;
        }
    }
    Ok(())
}
