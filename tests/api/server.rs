//! The one launcher of the real binary as a server, for every test that needs a child
//! process (crash, restart, lock, fault and fixed-port tests).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::helpers::TIMEOUT;

/// How to start `runyard serve`: its data directory, where it listens, its log file,
/// and any extra arguments and environment.
pub(crate) struct Launch {
    data_dir: PathBuf,
    bind: String,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Launch {
    /// `runyard serve` on port 0 of loopback over `data_dir`, with a 20 ms tick and
    /// `info` logs to `DATA_DIR.log`.
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            bind: "127.0.0.1:0".into(),
            log: data_dir.with_extension("log"),
            args: Vec::new(),
            env: vec![
                ("RUNYARD__TRAIN__TICK_MS".into(), "20".into()),
                ("RUST_LOG".into(), "info".into()),
            ],
        }
    }

    /// Listens on `bind` instead of an ephemeral port.
    pub(crate) fn bind(mut self, bind: &str) -> Self {
        self.bind = bind.into();
        self
    }

    /// Writes stderr to `log`.
    pub(crate) fn log(mut self, log: &Path) -> Self {
        self.log = log.to_path_buf();
        self
    }

    /// Adds `args` after the usual ones.
    pub(crate) fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Sets an environment variable (a later one wins).
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the server and waits for its first line, the address it listens on.
    pub(crate) fn start(&self) -> Server {
        match self.try_start() {
            Ok(server) => server,
            Err(line) => panic!("unexpected first line {line:?}"),
        }
    }

    /// [`Launch::start`], or the first line it printed instead of its address (it
    /// could not bind, say); the process is gone then.
    pub(crate) fn try_start(&self) -> Result<Server, String> {
        let log = std::fs::File::create(&self.log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_runyard"));
        command
            .args(["serve", "--bind", &self.bind, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("server starts");
        let stdout = child.stdout.take().expect("stdout");
        // The first stdout line names the address; read it off-thread with a deadline.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        let mut server = Server {
            child,
            address: String::new(),
        };
        match line.trim().strip_prefix("runyard listening on ") {
            Some(address) => {
                server.address = address.to_string();
                Ok(server)
            }
            None => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                Err(line)
            }
        }
    }
}

/// The server as a child process; killed when dropped so a failing test leaves none.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) address: String,
}

impl Server {
    /// [`Launch::new`] started, snapshotting every 10 events (so a restart replays
    /// from one), with stderr in a file beside `data_dir` named by `log_name`.
    pub(crate) fn start(data_dir: &Path, log_name: &str) -> Self {
        Self::start_with(data_dir, log_name, &[])
    }

    /// [`Server::start`] with `args` after the usual ones.
    pub(crate) fn start_with(data_dir: &Path, log_name: &str, args: &[&str]) -> Self {
        Launch::new(data_dir)
            .env("RUNYARD__JOURNAL__SNAPSHOT_EVERY", "10")
            .log(&data_dir.with_extension(log_name))
            .args(args)
            .start()
    }

    /// Sends SIGTERM (a graceful stop, as a service manager asks for one) and waits
    /// for the process to exit.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        // The shell's own `kill`: no procps needed.
        let sent = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .expect("sh runs");
        assert!(sent.success(), "SIGTERM sent");
        self.child.wait().expect("reaped")
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown code runs.
    pub(crate) fn kill(mut self) {
        // std's Child::kill sends SIGKILL on Unix.
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
