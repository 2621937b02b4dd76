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

/// Default interval between keep-alive comments on event streams
/// (`server.sse_keep_alive_ms`).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Longest time a stopping server spends sending its last spans.
pub const TRACE_FLUSH: Duration = Duration::from_secs(5);

/// How the server starts, beyond its configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Move a bad tail of the journal aside instead of refusing to start
    /// (`runyard serve --repair`).
    pub repair: bool,
    /// Leave SIGINT and SIGTERM to the caller instead of stopping the HTTP server on
    /// them (a Slurm worker checkpoints on SIGTERM and keeps answering meanwhile).
    pub keep_signals: bool,
    /// Nodes a command run's ranks span: over 1 only in the Slurm worker of a job on
    /// several nodes, which starts the other nodes' ranks with `srun` (0 counts as 1).
    pub nodes: u32,
    /// This node's address, which those ranks reach rank 0 at (`MASTER_ADDR`).
    pub node_address: Option<std::net::IpAddr>,
    /// In the Slurm worker of a sweep trial's job: the epochs after which its run
    /// pauses (the end of the trial's rung), which the worker's own journal, holding
    /// no sweep, cannot say.
    pub rung_end: Option<u32>,
}

/// A built server, listening but not yet driven.
pub struct Application {
    address: SocketAddr,
    server: Server,
    actors: Actors,
    replay: ReplayStats,
    /// The event streams' counters, also in the handlers' state.
    streams: std::sync::Arc<http::stream::StreamStats>,
    /// The trace pipeline, when traces are on (flushed when the server stops).
    traces: Option<crate::telemetry::traces::Traces>,
    /// This server's hold on its data directory, let go when it stops.
    _lock: crate::store::DirLock,
    /// The actor that builds runs' spans from the journal, when traces are on.
    tracer: Option<actix::Addr<crate::actors::tracer::Tracer>>,
}

impl Application {
    /// Opens the journal in the configured data directory, replays it, starts the
    /// actors and binds the listener. Must run inside an actix system.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, StartOptions::default()).await
    }

    /// [`Application::build`], with start-up options.
    pub async fn build_with(config: Config, options: StartOptions) -> anyhow::Result<Self> {
        let traces = crate::telemetry::traces::Traces::start(&config.telemetry)?;
        Self::build_with_traces(config, options, traces).await
    }

    /// [`Application::build_with`], exporting through `traces` (started from the
    /// configuration by the caller: `runyard serve` starts it first, so that its
    /// process-wide subscriber exports the actors' spans through it too; see
    /// [`crate::telemetry::init_with_traces`]).
    pub async fn build_with_traces(
        config: Config,
        options: StartOptions,
        traces: Option<crate::telemetry::traces::Traces>,
    ) -> anyhow::Result<Self> {
        let data_dir = &config.server.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        // Before anything else reads or writes there: one server per data directory.
        let lock = crate::store::lock(data_dir)?;
        let tokens = match &config.auth.tokens_file {
            Some(path) => crate::auth::Tokens::load(path)?,
            None => crate::auth::Tokens::default(),
        };
        if !tokens.is_empty() {
            tracing::info!(
                tokens = tokens.len(),
                "API tokens loaded; every /api route needs one"
            );
        }
        if let Some(traces) = &traces {
            tracing::info!(endpoint = traces.endpoint(), "traces on: OTLP/HTTP export");
        }
        let journal_dir = data_dir.join("journal");
        let log = EventLog::open(&journal_dir).context("cannot open the journal")?;
        // The replay (`store.replay` under it) and the end of what the last stop left.
        let recovering = tracing::debug_span!(
            target: crate::telemetry::work::TARGET,
            parent: None,
            "startup.recover",
            runyard.journal.events = tracing::field::Empty,
            runyard.runs = tracing::field::Empty,
            runyard.journal.from_snapshot = tracing::field::Empty,
            runyard.recovered = tracing::field::Empty,
            runyard.orphans_ended = tracing::field::Empty,
        );
        let entered = recovering.enter();
        let (state, stats) = replay_or_repair(&log, data_dir, options.repair)?;
        recovering.record("runyard.journal.events", stats.events as i64);
        recovering.record("runyard.runs", stats.runs as i64);
        if let Some(seq) = stats.from_snapshot {
            recovering.record("runyard.journal.from_snapshot", seq as i64);
        }
        tracing::info!(
            events = stats.events,
            runs = stats.runs,
            elapsed_ms = stats.elapsed.as_secs_f64() * 1e3,
            from_snapshot = stats.from_snapshot,
            dir = %journal_dir.display(),
            "journal replayed"
        );
        // Before anything resumes: no command left by a killed server keeps a slot.
        let (state, orphans) = end_orphan_commands(&log, state)?;
        let recovery = state.recovery();
        // Journaled by the dispatcher once it starts: here, what it will journal.
        recovering.record("runyard.recovered", recovery.len() as i64);
        recovering.record("runyard.orphans_ended", orphans.len() as i64);
        drop(entered);
        drop(recovering);
        let last_replay = ReplayReport {
            events: stats.events,
            runs: stats.runs,
            elapsed_ms: stats.elapsed.as_secs_f64() * 1e3,
            from_snapshot: stats.from_snapshot,
            recovery: orphans
                .iter()
                .chain(&recovery)
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
        let mut bind = config.server.bind;
        if tokens.is_empty() && !bind.ip().is_loopback() {
            let loopback = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bind.port());
            tracing::warn!(
                requested = %bind,
                listening = %loopback,
                "no API tokens configured (auth.tokens_file): listening on loopback only; \
                 create one with `runyard token create`"
            );
            bind = loopback;
        }
        let listener = TcpListener::bind(bind)
            .with_context(|| format!("cannot listen on {bind} (server.bind)"))?;
        let address = listener.local_addr()?;
        // Workers register at this URL unless the configuration names another.
        let mut slurm = config.executors.slurm.clone();
        if slurm.server_url.is_none() {
            let host = if address.ip().is_unspecified() {
                crate::slurm::files::node_name()
            } else {
                address.ip().to_string()
            };
            slurm.server_url = Some(format!("http://{host}:{}", address.port()));
        }
        let roots = DataRoots::new(config.data_roots());
        // The tracer takes over after the last record the previous server wrote.
        let replayed_seq = state.last_seq();
        let actors = supervisor::start(
            log,
            state,
            &devices,
            config.train.tick(),
            data_dir,
            &roots,
            config.journal.snapshot_every,
            crate::train::command::CommandSettings {
                nodes: options.nodes.max(1),
                address: options.node_address,
                rung_end: options.rung_end,
                ..crate::train::command::CommandSettings::from(&config.runs)
            },
            Some(&slurm).filter(|s| s.enabled),
        );
        let tracer = traces.as_ref().map(|traces| {
            actix::Actor::start(crate::actors::tracer::Tracer::new(
                actors.reader.clone(),
                traces.clone(),
                replayed_seq,
            ))
        });
        let streams = std::sync::Arc::new(http::stream::StreamStats::default());
        let server = http::serve_with(
            listener,
            !options.keep_signals,
            AppState {
                actors: actors.clone(),
                keep_alive: Duration::from_millis(config.server.sse_keep_alive_ms),
                streams: std::sync::Arc::clone(&streams),
                cancel_wait: Duration::from_secs(30),
                max_body_bytes: config.server.max_body_bytes,
                data_dir: data_dir.clone(),
                roots,
                last_replay,
                tokens,
                traces: traces.clone(),
                allow_commands: config.runs.allow_commands,
                views: Default::default(),
            },
        )?;
        Ok(Self {
            address,
            server,
            actors,
            replay: stats,
            streams,
            traces,
            tracer,
            _lock: lock,
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

    /// Counters of the event streams (connected clients, disconnects).
    pub fn stream_stats(&self) -> std::sync::Arc<http::stream::StreamStats> {
        std::sync::Arc::clone(&self.streams)
    }

    /// What the start-up replay did.
    pub fn replay_stats(&self) -> ReplayStats {
        self.replay
    }

    /// Serves until the server is stopped (SIGINT or SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some(traces) = self.traces {
            crate::actors::tracer::flush_and_stop(self.tracer, traces, TRACE_FLUSH).await;
        }
        served
    }

    /// Spans this server exported and dropped (all zero when traces are off).
    pub fn span_counts(&self) -> crate::telemetry::SpanCounts {
        self.traces
            .as_ref()
            .map(crate::telemetry::traces::Traces::counts)
            .unwrap_or_default()
    }

    /// The trace pipeline, when traces are on.
    pub fn traces(&self) -> Option<crate::telemetry::traces::Traces> {
        self.traces.clone()
    }
}

/// Ends the process groups of commands that a killed server left running
/// ([`crate::train::command::end_orphans`]) and journals a `CommandExited` for each
/// run that had one; answers the state with them folded in, and the records.
fn end_orphan_commands(
    log: &EventLog,
    mut state: crate::domain::State,
) -> anyhow::Result<(
    crate::domain::State,
    Vec<(crate::domain::RunId, crate::domain::Event)>,
)> {
    // Commands started but not yet journaled when the server was killed: found by
    // their RUNYARD_RUN_ID, ended, logged.
    crate::train::command::end_unjournaled(&state);
    let records: Vec<_> = crate::train::command::end_orphans(&state)
        .into_iter()
        .filter(|(run_id, event)| state.check(*run_id, event).is_ok())
        .collect();
    if records.is_empty() {
        return Ok((state, records));
    }
    let first = state.last_seq() + 1;
    let envelopes: Vec<_> = records
        .iter()
        .map(|(run_id, event)| crate::domain::Envelope::now(*run_id, event.clone()))
        .collect();
    log.append(first, &envelopes)
        .context("cannot journal the end of commands left from before the restart")?;
    for (offset, envelope) in envelopes.iter().enumerate() {
        state.apply(first + offset as crate::domain::Seq, envelope);
    }
    Ok((state, records))
}

/// Checks that the log reaches its watermark. A log that ends short of it (sled
/// stopped its recovery at a damaged message) stops the start with both sequence
/// numbers, unless `repair` is set: then the damaged log's files are copied aside, the
/// records sled could read are kept, and a `JournalRepaired` event names what was lost.
fn reach_or_repair(log: &EventLog, data_dir: &std::path::Path, repair: bool) -> anyhow::Result<()> {
    let err = match log.check_reach() {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let repairs = data_dir.join(crate::store::repair::REPAIRS_DIR);
    if !repair {
        anyhow::bail!(
            "cannot start on the journal: {err}. `runyard serve --repair` keeps the records \
             that can be read, copies the damaged log's files aside into {}/ and starts \
             from there",
            repairs.display()
        );
    }
    let report = crate::store::repair::move_short_log_aside(log, data_dir, &err)
        .context("cannot repair the journal")?;
    tracing::warn!(
        from_seq = report.from_seq,
        to_seq = report.to_seq,
        file = %report.file,
        reason = %report.reason,
        "journal repaired: the log ended short of its watermark; its damaged files were copied aside"
    );
    if report.to_seq >= report.from_seq {
        journal_repair(log, &report)?;
    }
    Ok(())
}

/// Journals the `JournalRepaired` event that names `report`, in its first record's
/// place.
fn journal_repair(log: &EventLog, report: &crate::store::RepairReport) -> anyhow::Result<()> {
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
        .context("cannot journal the repair")
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
    reach_or_repair(log, data_dir, repair)?;
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
    journal_repair(log, &report)?;
    replay(log).context("cannot replay the journal after the repair")
}
