//! A command run's output files: `DATA_DIR/runs/ID/logs/stdout.log` and `stderr.log`,
//! appended to across attempts (each attempt starts with a `==> attempt N <==` line)
//! and rotated by size.
//!
//! Rotation: before a write would take a file past `runs.log_max_bytes`, the file is
//! renamed `NAME.1`, an older `NAME.1` becomes `NAME.2`, and so on up to
//! `NAME.{runs.log_keep}`; the oldest beyond that is dropped. A file is never split
//! in the middle of a write, so one write larger than the limit makes a file larger
//! than the limit. `log_keep = 0` keeps no rotated file (the file starts over), and
//! `log_max_bytes = 0` never rotates.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory of a run's output files, under its run directory.
pub use crate::domain::layout::LOGS_DIR;

/// The file a command's standard output goes to.
pub const STDOUT_LOG: &str = "stdout.log";

/// The file a command's standard error goes to.
pub const STDERR_LOG: &str = "stderr.log";

/// The line that starts each attempt's output in both files.
pub fn attempt_header(attempt: u32) -> String {
    format!("==> attempt {attempt} <==\n")
}

/// The `n`th rotated file of `path` (`stdout.log.1` is the newest).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// An output file that rotates itself by size.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingLog {
    /// Opens `path` for appending (creating it), rotating at `max_bytes` and keeping
    /// `keep` rotated files.
    pub fn open(path: PathBuf, max_bytes: u64, keep: u32) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            size,
            max_bytes,
            keep,
        })
    }

    /// Appends `data`, rotating first when it would take the file past the limit.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.max_bytes > 0 && self.size > 0 && self.size + data.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..self.keep).rev() {
            match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        } else {
            self.file.set_len(0)?;
        }
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn a_file_is_rotated_before_it_passes_the_limit_and_old_ones_shift() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(STDOUT_LOG);
        let mut log = RotatingLog::open(path.clone(), 10, 2).expect("open");
        for chunk in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n"] {
            log.write(chunk.as_bytes()).expect("write");
        }
        assert_eq!(read(&path), "eeee\nffff\n");
        assert_eq!(read(&rotated(&path, 1)), "cccc\ndddd\n");
        assert_eq!(read(&rotated(&path, 2)), "aaaa\nbbbb\n");
        assert!(!rotated(&path, 3).exists(), "at most `keep` rotated files");

        // Reopened (the next attempt): appends, and knows the size it starts from.
        let mut log = RotatingLog::open(path.clone(), 10, 2).expect("reopen");
        log.write(attempt_header(2).as_bytes()).expect("write");
        assert_eq!(read(&path), "==> attempt 2 <==\n");
        assert_eq!(read(&rotated(&path, 1)), "eeee\nffff\n");
        assert_eq!(read(&rotated(&path, 2)), "cccc\ndddd\n");
    }

    #[test]
    fn keeping_none_starts_the_file_over_and_no_limit_never_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(STDERR_LOG);
        let mut log = RotatingLog::open(path.clone(), 4, 0).expect("open");
        log.write(b"abc").expect("write");
        log.write(b"def").expect("write");
        assert_eq!(read(&path), "def");
        assert!(!rotated(&path, 1).exists());

        let other = dir.path().join("other.log");
        let mut log = RotatingLog::open(other.clone(), 0, 3).expect("open");
        for _ in 0..100 {
            log.write(b"0123456789").expect("write");
        }
        assert_eq!(read(&other).len(), 1000);
        assert!(!rotated(&other, 1).exists());
    }
}
