//! Building and running the server: open and replay the journal, start the actors,
//! bind the listener (port 0 works, for tests), serve.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::Server;
use anyhow::Context as _;

use crate::actors::{supervisor, Actors};
use crate::config::Config;
use crate::http::{self, AppState, RecoveryNote, ReplayReport};
use crate::store::{replay, EventLog, ReplayStats};
use crate::train::data::DataRoots;

/// Interval between keep-alive comments on event streams.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How the server starts, beyond its configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Move a bad tail of the journal aside instead of refusing to start
    /// (`runyard serve --repair`).
    pub repair: bool,
}

/// A built server, listening but not yet driven.
pub struct Application {
    address: SocketAddr,
    server: Server,
    actors: Actors,
    replay: ReplayStats,
}

impl Application {
    /// Opens the journal in the configured data directory, replays it, starts the
    /// actors and binds the listener. Must run inside an actix system.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, StartOptions::default()).await
    }

    /// [`Application::build`], with start-up options.
    pub async fn build_with(config: Config, options: StartOptions) -> anyhow::Result<Self> {
        let data_dir = &config.server.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let journal_dir = data_dir.join("journal");
        let log = EventLog::open(&journal_dir).context("cannot open the journal")?;
        let (state, stats) = replay_or_repair(&log, data_dir, options.repair)?;
        tracing::info!(
            events = stats.events,
            runs = stats.runs,
            elapsed_ms = stats.elapsed.as_secs_f64() * 1e3,
            from_snapshot = stats.from_snapshot,
            dir = %journal_dir.display(),
            "journal replayed"
        );
        let recovery = state.recovery();
        let last_replay = ReplayReport {
            events: stats.events,
            runs: stats.runs,
            elapsed_ms: stats.elapsed.as_secs_f64() * 1e3,
            from_snapshot: stats.from_snapshot,
            recovery: recovery
                .iter()
                .map(|(run_id, event)| RecoveryNote {
                    run_id: *run_id,
                    event: event.kind().name(),
                    slot: match event {
                        crate::domain::Event::SlotReleased { slot } => Some(*slot),
                        _ => None,
                    },
                    repair: matches!(event, crate::domain::Event::SlotReleased { .. })
                        && !state.run(*run_id).is_some_and(|r| r.state.is_live()),
                })
                .collect(),
        };
        let devices = supervisor::slot_devices(config.train.cpu_slots);
        if devices.iter().all(|d| *d == tch::Device::Cpu) {
            // Torch's intra-op pool is process-wide: the slots share the cores.
            let threads = config.train.cpu_threads();
            tch::set_num_threads(threads as i32);
            tracing::info!(threads, slots = devices.len(), "cpu training threads");
        }
        let roots = DataRoots::new(config.data_roots());
        let actors = supervisor::start(
            log,
            state,
            &devices,
            config.train.tick(),
            data_dir,
            &roots,
            config.journal.snapshot_every,
        );
        let listener = TcpListener::bind(config.server.bind)
            .with_context(|| format!("cannot listen on {} (server.bind)", config.server.bind))?;
        let address = listener.local_addr()?;
        let server = http::serve(
            listener,
            AppState {
                actors: actors.clone(),
                keep_alive: KEEP_ALIVE,
                cancel_wait: Duration::from_secs(30),
                data_dir: data_dir.clone(),
                roots,
                last_replay,
            },
        )?;
        Ok(Self {
            address,
            server,
            actors,
            replay: stats,
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The running actors.
    pub fn actors(&self) -> &Actors {
        &self.actors
    }

    /// What the start-up replay did.
    pub fn replay_stats(&self) -> ReplayStats {
        self.replay
    }

    /// Serves until the server is stopped (SIGINT or SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Replays the journal. A record that cannot be read stops the start with an error
/// naming it and the directory, unless `repair` is set: then that record and every
/// later one are moved aside into a file, a `JournalRepaired` event takes the bad
/// record's place, and the replay is done again.
fn replay_or_repair(
    log: &EventLog,
    data_dir: &std::path::Path,
    repair: bool,
) -> anyhow::Result<(crate::domain::State, ReplayStats)> {
    let err = match replay(log) {
        Ok(replayed) => return Ok(replayed),
        Err(e) => e,
    };
    let Some(bad) = err.bad_record() else {
        return Err(err).context("cannot replay the journal");
    };
    if !repair {
        anyhow::bail!(
            "cannot replay the journal: {err}. Records before {bad} are intact; \
             `runyard serve --repair` moves record {bad} and every later record aside \
             into {}/ and starts from record {}",
            data_dir.join(crate::store::repair::REPAIRS_DIR).display(),
            bad - 1
        );
    }
    let report = crate::store::move_tail_aside(log, data_dir, bad, &err.to_string())
        .context("cannot repair the journal")?;
    tracing::warn!(
        from_seq = report.from_seq,
        to_seq = report.to_seq,
        file = %report.file,
        reason = %report.reason,
        "journal repaired: a bad tail was moved aside"
    );
    let envelope = crate::domain::Envelope::now(
        crate::domain::RunId::SYSTEM,
        crate::domain::Event::JournalRepaired {
            from_seq: report.from_seq,
            to_seq: report.to_seq,
            reason: report.reason.clone(),
            file: report.file.clone(),
        },
    );
    log.append(report.from_seq, std::slice::from_ref(&envelope))
        .context("cannot journal the repair")?;
    replay(log).context("cannot replay the journal after the repair")
}
