//! The data directory on `scripts/cutfs.py`, a FUSE filesystem that keeps every write
//! in its own memory until the file is fsynced: a power cut is that process killed and
//! the filesystem mounted again on what it had synced.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};

/// How long a mount may take to appear; only a safety net.
const MOUNT_PATIENCE: Duration = Duration::from_secs(30);

/// The Python that has fusepy (`scripts/setup-cutfs.sh` makes it).
fn python() -> PathBuf {
    match std::env::var_os("RUNYARD_CUTFS_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cutfs-venv/bin/python"),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cutfs.py")
}

/// Whether `path` is a mount point now (as `/proc/self/mountinfo` lists them).
fn mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| point == wanted)
}

/// Why this machine cannot mount the filesystem, or `None` when it can.
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    let python = python();
    if !python.exists() {
        return Some(format!(
            "{} is missing (scripts/setup-cutfs.sh installs fusepy there)",
            python.display()
        ));
    }
    let probe = Command::new(&python)
        .args(["-c", "import fuse"])
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        });
    match probe {
        Ok((true, _)) => None,
        Ok((false, err)) => Some(format!(
            "fusepy does not load: {}",
            err.lines().last().unwrap_or("")
        )),
        Err(e) => Some(format!("cannot run {}: {e}", python.display())),
    }
}

/// A mounted cutfs: `point` shows `backing` plus every unsynced write.
pub struct CutFs {
    backing: PathBuf,
    point: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Cuts so far.
    pub cuts: u64,
}

impl CutFs {
    /// Mounts a fresh filesystem under `dir` (`dir/backing` on `dir/mnt`).
    pub fn mount(dir: &Path) -> Result<Self> {
        let backing = dir.join("backing");
        let point = dir.join("mnt");
        std::fs::create_dir_all(&backing).context("backing directory")?;
        std::fs::create_dir_all(&point).context("mount point")?;
        let mut fs = Self {
            backing,
            point: point.canonicalize().context("mount point")?,
            log: dir.join("cutfs.log"),
            child: None,
            cuts: 0,
        };
        fs.start()?;
        Ok(fs)
    }

    /// Where the filesystem is mounted.
    pub fn point(&self) -> &Path {
        &self.point
    }

    fn start(&mut self) -> Result<()> {
        ensure!(
            !mounted(&self.point),
            "{} is still mounted",
            self.point.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .context("cutfs log")?;
        let mut child = Command::new(python())
            .arg(script())
            .arg(&self.backing)
            .arg(&self.point)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().context("cutfs log")?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("start cutfs")?;
        let deadline = Instant::now() + MOUNT_PATIENCE;
        while !mounted(&self.point) {
            if let Some(status) = child.try_wait().context("cutfs status")? {
                bail!(
                    "cutfs exited ({status}) before mounting: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("cutfs did not mount within {MOUNT_PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().context("reap cutfs")?;
        }
        if mounted(&self.point) {
            let status = Command::new("umount")
                .arg("-l")
                .arg(&self.point)
                .status()
                .context("umount")?;
            ensure!(
                status.success(),
                "umount -l {} failed",
                self.point.display()
            );
        }
        Ok(())
    }

    /// The power cut: every write not fsynced is gone, then the same directory is
    /// mounted again on what survived. Call it with nothing writing.
    pub fn cut(&mut self) -> Result<()> {
        self.stop().context("cut")?;
        self.cuts += 1;
        self.start().context("mount after the cut")
    }
}

impl Drop for CutFs {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
