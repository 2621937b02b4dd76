//! `runyard worker --job-dir DIR`: one job of a Slurm run, on a compute node.
//!
//! A worker is a runyard server of its own, with a slot per rank of its node (one
//! for all but a command run with `ranks_per_node`), whose journal (in the
//! shared directory, kept across the run's jobs) holds only its run. It trains the
//! run exactly as a local slot would (the tch loop or the user's command), listens
//! on an ephemeral port of the node's address behind the job's secret, and writes
//! `worker.json` once it listens. The server that submitted the job pulls the run's
//! facts and progress from it (`GET /api/v1/runs/{id}/facts`).
//!
//! The run's first job submits the run to the worker's journal; a later job resumes
//! it (from a pause) or lets recovery queue it again (after a lost job), so it
//! continues from the newest checkpoint. SIGTERM (`scancel --signal=TERM`, a time
//! limit or a preemption) checkpoints and stops the run; the worker exits once the
//! run is paused or over.

pub mod rank;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::actors::dispatcher::{PauseRun, ResumeRun, SubmitRun};
use crate::config::Config;
use crate::domain::RunState;
use crate::slurm::files::{self, node_name, Registration, WorkerJob};
use crate::startup::{Application, StartOptions};

/// Environment variable naming the address a worker binds to, instead of its node
/// name's.
pub const HOST_VAR: &str = "RUNYARD_WORKER_HOST";

/// Runs the job whose `job.json` is in `job_dir`, until its run is paused or over.
pub fn run(job_dir: &Path) -> anyhow::Result<()> {
    let job_file = job_dir.join("job.json");
    let job: WorkerJob = files::read_json(&job_file)
        .with_context(|| format!("cannot read {}", job_file.display()))?
        .with_context(|| format!("{} does not exist", job_file.display()))?;
    let host = node_address();
    let mut config = Config::defaults();
    config.server.data_dir = job.data_dir.clone();
    config.server.bind = SocketAddr::new(host, 0);
    config.auth.tokens_file = Some(job_dir.join("tokens.toml"));
    // The server checked who may submit a command run.
    config.runs.allow_commands = true;
    config.data.roots = job.data_roots.clone();
    config.train.tick_ms = job.tick_ms;
    // One slot per rank on this node (the spec a worker runs claims them all).
    config.train.cpu_slots = job.spec.slots.max(1);
    if let Ok(filter) = std::env::var("RUNYARD_LOG") {
        config.log.filter = filter;
    }
    crate::telemetry::init(&config.log.filter);
    actix_web::rt::System::new().block_on(async move {
        let options = StartOptions {
            repair: false,
            keep_signals: true,
            nodes: job.nodes.max(1),
            node_address: Some(host),
            rung_end: job.pause_after_epochs,
        };
        let app = Application::build_with(config, options)
            .await
            .context("the worker cannot start")?;
        let actors = app.actors().clone();
        let address = app.address();
        actix_web::rt::spawn(app.run_until_stopped());
        start_or_resume(&actors, &job).await?;
        let registration = Registration {
            address: address.to_string(),
            node: node_name(),
            pid: std::process::id(),
            job_id: std::env::var("SLURM_JOB_ID")
                .ok()
                .and_then(|id| id.parse().ok()),
        };
        let text = serde_json::to_vec_pretty(&registration)?;
        files::write_atomic(&job_dir.join("worker.json"), &text, 0o644)
            .context("cannot write worker.json")?;
        println!("runyard worker listening on http://{address}");
        tracing::info!(%address, run_id = %job.run_id, job = job.job, "worker listening");
        if let Some(url) = &job.server_url {
            register(url, job_dir, &job, &registration).await;
        }
        follow(&actors, &job).await
    })
}

/// Puts the run to work in the worker's journal: submitted by the first job,
/// resumed after a pause; after a lost job, recovery has already queued it.
async fn start_or_resume(actors: &crate::actors::Actors, job: &WorkerJob) -> anyhow::Result<()> {
    let state = actors.reader.state().run(job.run_id).map(|r| r.state);
    match state {
        None => {
            actors
                .dispatcher
                .send(SubmitRun {
                    run_id: job.run_id,
                    spec: job.spec.clone(),
                    rerun: true,
                    trace: None,
                    parent: None,
                })
                .await?
                .context("cannot submit the run to the worker's journal")?;
        }
        Some(RunState::Paused) => {
            actors
                .dispatcher
                .send(ResumeRun { run_id: job.run_id })
                .await?
                .context("cannot resume the run")?;
        }
        Some(other) => {
            tracing::info!(
                state = other.name(),
                "the run continues as its journal says"
            );
        }
    }
    Ok(())
}

/// Tells the server where this worker listens (`POST /api/v1/runs/{id}/worker` with
/// the job's secret), a few times if it does not answer. Best effort: the server also
/// finds `worker.json`.
async fn register(url: &str, job_dir: &Path, job: &WorkerJob, registration: &Registration) {
    let secret = match std::fs::read_to_string(job_dir.join("secret")) {
        Ok(secret) => secret.trim().to_string(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the job's secret: not registering over HTTP");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "no HTTP client: not registering over HTTP");
            return;
        }
    };
    let target = format!(
        "{}/api/v1/runs/{}/worker",
        url.trim_end_matches('/'),
        job.run_id
    );
    for attempt in 1..=3 {
        let answer = client
            .post(&target)
            .bearer_auth(&secret)
            .json(registration)
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                tracing::info!(server = %url, "registered with the server");
                return;
            }
            Ok(response) => {
                // Refused: trying again would be refused again.
                tracing::warn!(server = %url, status = %response.status(), "the server refused the registration; it reads worker.json instead");
                return;
            }
            Err(e) => {
                tracing::warn!(server = %url, attempt, error = %e, "cannot reach the server to register");
                tokio::time::sleep(Duration::from_secs(attempt)).await;
            }
        }
    }
}

/// Waits until the run is paused or over; SIGTERM and SIGINT pause it (a checkpoint,
/// then the job ends).
async fn follow(actors: &crate::actors::Actors, job: &WorkerJob) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut tick = tokio::time::interval(Duration::from_millis(job.tick_ms.max(10)));
    let mut pausing = false;
    loop {
        let signalled = tokio::select! {
            _ = term.recv() => true,
            _ = interrupt.recv() => true,
            _ = tick.tick() => false,
        };
        if signalled && !pausing {
            pausing = true;
            tracing::info!(run_id = %job.run_id, "signalled: checkpointing and stopping");
            match actors
                .dispatcher
                .send(PauseRun { run_id: job.run_id })
                .await
            {
                Ok(Ok(_)) => {}
                // Not running (queued for a retry, or just ended): nothing to save.
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "no pause needed");
                    let queued = actors
                        .reader
                        .state()
                        .run(job.run_id)
                        .is_some_and(|r| r.state == RunState::Queued);
                    if queued {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let state = actors.reader.state().run(job.run_id).map(|r| r.state);
        match state {
            Some(s) if s.is_terminal() || s == RunState::Paused => {
                tracing::info!(run_id = %job.run_id, state = s.name(), "the run stopped; the worker exits");
                return Ok(());
            }
            None => anyhow::bail!("the run {} is not in the worker's journal", job.run_id),
            Some(_) => {}
        }
    }
}

/// The address to listen on: `RUNYARD_WORKER_HOST`, else the node name's first IPv4
/// address that is not loopback, else its first address, else loopback.
fn node_address() -> IpAddr {
    if let Some(ip) = std::env::var(HOST_VAR).ok().and_then(|h| h.parse().ok()) {
        return ip;
    }
    let addresses: Vec<IpAddr> = (node_name().as_str(), 0)
        .to_socket_addrs()
        .map(|a| a.map(|a| a.ip()).collect())
        .unwrap_or_default();
    addresses
        .iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .or_else(|| addresses.first())
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
