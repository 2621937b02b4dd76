//! The real `runyard` binary as a child process, killed with SIGKILL, and the journal
//! commands run on its data directory while it is down.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};

/// The binary under test: this build's, or the one `RUNYARD_LOOP_BIN` names, so the
/// loop can be run against another build (an older commit, to see what it loses).
pub fn bin() -> PathBuf {
    std::env::var_os("RUNYARD_LOOP_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_runyard")),
        PathBuf::from,
    )
}

/// How often a wait re-checks its condition.
const POLL: Duration = Duration::from_millis(10);

/// One server process on the loop's data directory.
pub struct Server {
    child: Child,
    first_line: mpsc::Receiver<String>,
    /// The server's stderr (its log).
    pub log: PathBuf,
}

impl Server {
    /// Starts `runyard serve` on a free port; its log goes to `log`.
    pub fn spawn(data_dir: &Path, log: PathBuf, snapshot_every: u64) -> Result<Self> {
        let stderr = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut command = Command::new(bin());
        // Only the settings below: nothing from the caller's environment changes the
        // server under test.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RUNYARD__") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUNYARD__TRAIN__TICK_MS", "20")
            .env("RUNYARD__TRAIN__CPU_SLOTS", "2")
            // The same thread count in every process keeps resumed runs bit-identical.
            .env("RUNYARD__TRAIN__THREADS_PER_SLOT", "1")
            .env(
                "RUNYARD__JOURNAL__SNAPSHOT_EVERY",
                snapshot_every.to_string(),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .context("start the server")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, first_line) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep reading so a later write to stdout never meets a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        Ok(Self {
            child,
            first_line,
            log,
        })
    }

    /// The exit status if the process has ended (by itself: we only ever kill it in
    /// [`Server::kill`]).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails when the server died without being killed.
    pub fn ensure_alive(&mut self) -> Result<()> {
        if let Some(status) = self.exited() {
            bail!(
                "the server exited by itself ({status}); its log is {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// Waits for the first stdout line and returns `http://ADDR` from it.
    pub async fn address(&mut self, safety: Duration) -> Result<String> {
        let deadline = Instant::now() + safety;
        loop {
            match self.first_line.try_recv() {
                Ok(line) => {
                    let address = line
                        .trim()
                        .strip_prefix("runyard listening on ")
                        .with_context(|| format!("unexpected first stdout line {line:?}"))?;
                    return Ok(address.to_string());
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    bail!("the server closed stdout without printing its address")
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            self.ensure_alive()
                .context("the server did not start (replay or recovery failed?)")?;
            ensure!(
                Instant::now() < deadline,
                "no address printed within {safety:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `/readyz` answers 200 and returns its `last_seq`.
    pub async fn wait_ready(
        &mut self,
        client: &reqwest::Client,
        address: &str,
        safety: Duration,
    ) -> Result<u64> {
        let deadline = Instant::now() + safety;
        let mut last_answer = String::from("nothing");
        loop {
            if let Ok(response) = client.get(format!("{address}/readyz")).send().await {
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if status == 200 {
                    return body["last_seq"]
                        .as_u64()
                        .with_context(|| format!("readyz without last_seq: {body}"));
                }
                last_answer = format!("{status} {body}");
            }
            self.ensure_alive()
                .context("the server died before it was ready")?;
            ensure!(
                Instant::now() < deadline,
                "not ready within {safety:?}; /readyz last answered {last_answer}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL: no shutdown code runs. Fails if the server had already died.
    pub fn kill(&mut self) -> Result<()> {
        self.ensure_alive()?;
        self.child.kill().context("SIGKILL")?;
        let status = self.child.wait().context("reap the server")?;
        ensure!(
            status.signal() == Some(9),
            "the server ended with {status} instead of by the SIGKILL"
        );
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `runyard journal ...` command on a data directory no server uses.
fn journal(args: &[&str], data_dir: &Path) -> Result<String> {
    let output = Command::new(bin())
        .arg("journal")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run runyard journal {}", args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "`runyard journal {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// What `runyard journal verify` reported.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    /// Its summary line.
    pub summary: String,
    pub last_seq: u64,
    /// Runs by state, e.g. `running` -> 2.
    pub states: BTreeMap<String, u64>,
    pub slots_held: u64,
}

impl Verified {
    /// Runs in any of `states`.
    pub fn count(&self, states: &[&str]) -> u64 {
        states.iter().filter_map(|s| self.states.get(*s)).sum()
    }

    /// `R runs (completed 3, queued 2)`.
    pub fn runs(&self) -> String {
        let total: u64 = self.states.values().sum();
        let states: Vec<String> = self
            .states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        format!("{total} runs ({})", states.join(", "))
    }
}

/// `runyard journal verify`: exits 0 only when checksums, contiguity, the run index
/// and the slot ledger are all right.
pub fn verify(data_dir: &Path) -> Result<Verified> {
    let out = journal(&["verify"], data_dir)?;
    // "DIR: N records (last seq L), R runs (completed 3, queued 2), I index entries,
    // S slots held"
    let summary = out.lines().next().unwrap_or_default().to_string();
    let between = |start: &str, end: &str| {
        let rest = summary.rsplit(start).next()?;
        Some(rest.split(end).next()?.to_string())
    };
    let parsed = (|| {
        let last_seq = between("(last seq ", ")")?.parse().ok()?;
        let mut states = BTreeMap::new();
        let listed = between(" runs (", ")")?;
        if listed != "none" {
            for part in listed.split(", ") {
                let (state, n) = part.rsplit_once(' ')?;
                states.insert(state.to_string(), n.parse().ok()?);
            }
        }
        let slots_held = between("index entries, ", " slots held")?.parse().ok()?;
        Some((last_seq, states, slots_held))
    })();
    let (last_seq, states, slots_held) =
        parsed.with_context(|| format!("unexpected verify summary {summary:?}"))?;
    Ok(Verified {
        summary,
        last_seq,
        states,
        slots_held,
    })
}

/// `runyard journal export --out FILE`, read back as lines.
pub fn export(data_dir: &Path, out: &Path) -> Result<Vec<String>> {
    let out_arg = out.to_string_lossy().into_owned();
    journal(&["export", "--out", &out_arg], data_dir)?;
    let text = std::fs::read_to_string(out).with_context(|| format!("read {}", out.display()))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// The last `n` lines of a server log, leaving out successful reads.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !(l.contains(" GET ") && l.contains(" HTTP/1.1 200 ")))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
