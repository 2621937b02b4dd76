//! One process per data directory: `DATA_DIR/runyard.lock`, locked with `flock(2)` for
//! as long as the server (or a journal command) runs, holding the holder's PID. The
//! kernel drops the lock when the process ends, however it ends (SIGKILL included), so
//! a stale file never keeps a directory locked; the PID in it only names the holder in
//! the refusal.

use std::fs::{File, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "runyard.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "{} is in use by runyard pid {}; stop it or choose another --data-dir",
        dir.display(),
        pid.map_or_else(|| "(unknown)".to_string(), |p| p.to_string())
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The holder's PID, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A held lock on a data directory; dropping it lets another process in.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Locks `data_dir` (which must exist) for this process, or names who holds it.
pub fn lock(data_dir: &Path) -> Result<DirLock, LockError> {
    let path = data_dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::InUse {
                dir: data_dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_one_lets_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock(dir.path()).expect("first");
        let err = lock(dir.path()).expect_err("second").to_string();
        assert_eq!(
            err,
            format!(
                "{} is in use by runyard pid {}; stop it or choose another --data-dir",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(held);
        lock(dir.path()).expect("after the holder let go");
    }
}
