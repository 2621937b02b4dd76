//! The Slurm executor: runs with `"executor": "slurm"` are queued by Slurm, not by the
//! dispatcher. [`SlurmExecutor`] submits each job (`sbatch`, then `SlurmJobSubmitted`
//! journaled before anyone is answered) and starts a [`RemoteRun`] per job, which
//! follows it the way the ticker follows a local run: it pulls, every tick, the
//! worker's new facts (journaled in order, each once: `WorkerSynced` records the
//! worker's sequence number in the same append) and its progress (written into cells
//! the ticker samples, so streams, metrics and traces see a Slurm run as a local one).
//!
//! When the worker cannot be reached, or has not registered yet, Slurm is asked for
//! the job's state instead (`scontrol`, `squeue`) and the run is shown `unreachable`,
//! not failed. When the job has ended, the facts the worker journaled and the server
//! did not pull are read from the worker's journal in the shared directory, and the
//! job's end decides the rest: a run that did not finish on its own is cancelled or
//! paused as asked, retried in a new job when the cluster lost it (`NODE_FAIL`,
//! `PREEMPTED`), or failed with Slurm's state and the job's last output line.
//!
//! After a server restart the executor re-attaches to every job the journal names and
//! has not seen end, and submits jobs for Slurm runs that were waiting for one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use rustc_hash::FxHashMap;

mod follower;
mod shared;

pub use follower::RemoteRun;
pub use shared::{SlurmBoard, SlurmContext, SlurmLive, StopJob, WorkerRegistered};

use super::executor::{Launch, Restore, Resync, Stop, StopWhy, Withdraw};
use super::journal::{answered, Append};
use crate::config::SlurmConfig;
use crate::domain::spec::Executor;
use crate::domain::{Event, RunId, RunSpec, RunState};
use crate::slurm::cli::{self, SlurmError, Submission};
use crate::slurm::files::{self, WorkerJob};
use crate::telemetry::work;
use follower::FollowerDone;

/// Submits and follows Slurm jobs.
pub struct SlurmExecutor {
    config: SlurmConfig,
    shared: PathBuf,
    worker_bin: PathBuf,
    context: SlurmContext,
    /// The follower of each run's live job, with the job's id.
    followers: FxHashMap<RunId, (u64, Addr<RemoteRun>)>,
    /// Runs whose next job is being submitted (one `sbatch` at a time per run).
    launching: rustc_hash::FxHashSet<RunId>,
}

impl SlurmExecutor {
    /// An executor over `shared` (the configured shared directory).
    pub fn new(config: SlurmConfig, shared: PathBuf, context: SlurmContext) -> Self {
        let worker_bin = config
            .worker_bin
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("runyard"));
        Self {
            config,
            shared,
            worker_bin,
            context,
            followers: FxHashMap::default(),
            launching: rustc_hash::FxHashSet::default(),
        }
    }

    fn follow(&mut self, run_id: RunId, job_id: u64, dir: PathBuf, ctx: &mut Context<Self>) {
        let follower = RemoteRun::new(
            (run_id, job_id),
            dir,
            files::worker_data_dir(&self.shared, run_id),
            &self.config,
            self.context.clone(),
            ctx.address().recipient(),
        );
        self.context
            .board
            .update(run_id, |live| *live = SlurmLive::default());
        self.followers.insert(run_id, (job_id, follower.start()));
    }

    /// Submits a run's next job after `wait`, if the run is still waiting for one.
    fn launch_after(&self, run_id: RunId, wait: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(wait, move |_, ctx| ctx.address().do_send(Launch { run_id }));
    }
}

impl Actor for SlurmExecutor {
    type Context = Context<Self>;

    /// Re-attaches to the jobs the journal names (the jobs of runs that were waiting
    /// for one are submitted at the first [`Resync`]).
    fn started(&mut self, ctx: &mut Self::Context) {
        let state = self.context.reader.state();
        let follow: Vec<_> = state
            .runs()
            .filter(|r| r.executor == Executor::Slurm && !r.state.is_terminal())
            .filter(|r| r.state != RunState::Paused)
            .filter_map(|run| {
                let job = run.slurm.as_ref().filter(|job| job.ended.is_none())?;
                Some((run.id, job.job_id, PathBuf::from(&job.dir)))
            })
            .collect();
        drop(state);
        for (run_id, job_id, dir) in follow {
            tracing::info!(%run_id, job_id, "re-attaching to slurm job");
            self.follow(run_id, job_id, dir, ctx);
        }
    }
}

impl Handler<Resync> for SlurmExecutor {
    type Result = ();

    /// Submits jobs for Slurm runs waiting for one (after their retry delay), as a
    /// lost [`Launch`] would have; a run whose job is being submitted or followed is
    /// left alone ([`Launch`] is idempotent besides).
    fn handle(&mut self, _msg: Resync, ctx: &mut Self::Context) {
        let state = self.context.reader.state();
        let mut launch = Vec::new();
        for run in state
            .runs()
            .filter(|r| r.executor == Executor::Slurm && r.state == RunState::Queued)
        {
            let followed = self.followers.contains_key(&run.id) || self.launching.contains(&run.id);
            match &run.slurm {
                Some(job) if job.ended.is_none() => {}
                _ if followed => {}
                _ => {
                    let wait = run
                        .not_before
                        .and_then(|t| (t - chrono::Utc::now()).to_std().ok())
                        .unwrap_or_default();
                    launch.push((run.id, wait));
                }
            }
        }
        drop(state);
        for (run_id, wait) in launch {
            self.launch_after(run_id, wait, ctx);
        }
    }
}

impl Handler<Withdraw> for SlurmExecutor {
    type Result = bool;

    /// A queued run is paused at once (its job, if Slurm still holds it, is cancelled
    /// by the [`Stop`] that follows); a cancel goes through the job's end, as for a
    /// running one.
    fn handle(&mut self, msg: Withdraw, _ctx: &mut Self::Context) -> bool {
        msg.why == StopWhy::Pause
    }
}

impl Handler<Restore> for SlurmExecutor {
    type Result = ();

    /// Nothing was taken: a withdrawn Slurm run is still the journal's queued run.
    fn handle(&mut self, _msg: Restore, _ctx: &mut Self::Context) {}
}

impl Handler<Stop> for SlurmExecutor {
    type Result = ();

    /// Stops the run's job; a paused run cancelled has none.
    fn handle(&mut self, msg: Stop, ctx: &mut Self::Context) {
        let ended = self
            .context
            .reader
            .state()
            .run(msg.run_id)
            .is_none_or(|r| r.state.is_terminal());
        if msg.why == StopWhy::Pause || !ended {
            self.stop_job(msg.run_id, ctx);
        }
    }
}

/// What a launch needs, taken from the state before going off the actor.
struct Prepared {
    job: u32,
    name: String,
    dir: PathBuf,
    spec: RunSpec,
    /// A sweep trial's rung end, which its worker pauses at.
    rung_end: Option<u32>,
    /// The run's `queue_wait` span, which the submission goes under.
    queue_wait: opentelemetry::trace::SpanContext,
}

impl Handler<Launch> for SlurmExecutor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: Launch, _ctx: &mut Self::Context) -> Self::Result {
        let run_id = msg.run_id;
        if self.launching.contains(&run_id) {
            return Box::pin(fut::ready(Ok(())));
        }
        let prepared = {
            let state = self.context.reader.state();
            let Some(run) = state.run(run_id) else {
                return Box::pin(fut::ready(Err(format!("no run with id {run_id}"))));
            };
            if run.state != RunState::Queued || run.executor != Executor::Slurm {
                return Box::pin(fut::ready(Ok(())));
            }
            if run.slurm.as_ref().is_some_and(|j| j.ended.is_none()) {
                return Box::pin(fut::ready(Ok(())));
            }
            let spec: RunSpec = match serde_json::from_str(run.spec.get()) {
                Ok(spec) => spec,
                // As a local run's: it fails, naming why, rather than wait forever.
                Err(e) => {
                    let failed = Append::one(
                        run_id,
                        Event::RunFailed {
                            reason: format!("stored spec is unreadable: {e}"),
                        },
                    );
                    let journal = self.context.journal.clone();
                    return Box::pin(
                        async move {
                            answered(journal.send(failed).await)
                                .map(drop)
                                .map_err(|e| e.to_string())
                        }
                        .into_actor(self),
                    );
                }
            };
            let job = run.slurm.as_ref().map_or(1, |j| j.job + 1);
            Prepared {
                job,
                name: files::job_name(run_id, job),
                dir: files::job_dir(&self.shared, run_id, job),
                spec,
                rung_end: state.rung_end(run_id),
                queue_wait: work::queue_wait_of(run),
            }
        };
        // The submission ends the run's queue wait, as a slot claim does a local run's.
        let span = tracing::debug_span!(
            target: work::TARGET,
            parent: None,
            "slurm.submit",
            runyard.run.id = %run_id,
            runyard.slurm.job = i64::from(prepared.job),
            runyard.slurm.job_id = tracing::field::Empty,
            runyard.outcome = tracing::field::Empty,
        );
        work::set_parent(&span, &prepared.queue_wait);
        let in_blocking = span.clone();
        let worker_job = WorkerJob {
            run_id,
            job: prepared.job,
            spec: local_spec(&prepared.spec),
            data_dir: files::worker_data_dir(&self.shared, run_id),
            nodes: prepared.spec.nodes.max(1),
            data_roots: self.context.data_roots.clone(),
            tick_ms: self.context.tick.as_millis() as u64,
            server_url: self.config.server_url.clone(),
            pause_after_epochs: prepared.rung_end,
        };
        let worker_bin = self.worker_bin.clone();
        let partition = prepared
            .spec
            .partition
            .clone()
            .or_else(|| self.config.partition.clone());
        let extra = self.config.sbatch_args.clone();
        let spec = prepared.spec.clone();
        let dir = prepared.dir.clone();
        let name = prepared.name.clone();
        let submitted = actix_web::rt::task::spawn_blocking(move || {
            // `slurm.sbatch` and `slurm.find_job` go under the submission.
            let _entered = in_blocking.enter();
            write_job_files(&dir, &worker_job, &worker_bin)?;
            // A job of this name submitted just before a crash is the job: no second.
            if let Ok(Some(job_id)) = cli::find_job(&name) {
                tracing::info!(%run_id, job_id, "found the job submitted before a restart");
                return Ok(job_id);
            }
            let output = dir.join("output.log");
            let script = dir.join("job.sh");
            cli::sbatch(&Submission {
                script: &script,
                name: &name,
                output: &output,
                dir: &dir,
                partition: partition.as_deref(),
                gres: spec.gres.as_deref(),
                time_limit: spec.time_limit.as_deref(),
                account: spec.account.as_deref(),
                qos: spec.qos.as_deref(),
                nodes: spec.nodes.max(1),
                ranks_per_node: spec.ranks_per_node.max(1),
                extra: &extra,
            })
        });
        let journal = self.context.journal.clone();
        self.launching.insert(run_id);
        Box::pin(
            async move {
                let result = submitted
                    .await
                    .unwrap_or_else(|e| Err(SlurmError::Unavailable(format!("sbatch task: {e}"))));
                let outcome = match &result {
                    Ok(job_id) => {
                        span.record("runyard.slurm.job_id", *job_id as i64);
                        "submitted"
                    }
                    Err(SlurmError::Refused(_)) => "refused",
                    Err(SlurmError::Unavailable(_)) => "unavailable",
                };
                span.record("runyard.outcome", outcome);
                let event = match &result {
                    Ok(job_id) => Event::SlurmJobSubmitted {
                        job_id: *job_id,
                        job: prepared.job,
                        dir: prepared.dir.display().to_string(),
                    },
                    Err(SlurmError::Refused(message)) => Event::RunFailed {
                        reason: format!("Slurm refused the job: {message}"),
                    },
                    Err(SlurmError::Unavailable(message)) => {
                        return (Err(format!("cannot submit to Slurm: {message}")), None)
                    }
                };
                let appended = answered(
                    journal
                        .send(Append::one(run_id, event).under(work::context_of(&span)))
                        .await,
                );
                if appended.is_err() {
                    span.record("runyard.outcome", "journal_failed");
                }
                match (appended, result) {
                    (Ok(_), Ok(job_id)) => (Ok(()), Some((job_id, prepared.dir))),
                    (Ok(_), Err(_)) => (Ok(()), None),
                    (Err(e), Ok(job_id)) => {
                        // Not journaled: the job must not run unrecorded.
                        let _ =
                            actix_web::rt::task::spawn_blocking(move || cli::scancel(job_id, None))
                                .await;
                        (Err(format!("cannot journal the Slurm job: {e}")), None)
                    }
                    (Err(e), Err(_)) => (Err(format!("cannot journal the refused job: {e}")), None),
                }
            }
            .into_actor(self)
            .map(move |(result, follow), executor, ctx| {
                executor.launching.remove(&run_id);
                if let Some((job_id, dir)) = follow {
                    tracing::info!(%run_id, job_id, "slurm job submitted");
                    executor.follow(run_id, job_id, dir, ctx);
                } else if let Err(e) = &result {
                    tracing::warn!(%run_id, error = %e, "slurm submission failed; trying again");
                    executor.launch_after(run_id, executor.config.poll_interval() * 5, ctx);
                }
                result
            }),
        )
    }
}

/// The spec a worker runs: the same training on its node's slots, one rank per slot
/// (the ranks on the job's other nodes are the worker's too, see
/// [`crate::train::command`]).
fn local_spec(spec: &RunSpec) -> RunSpec {
    RunSpec {
        executor: Executor::Local,
        partition: None,
        gres: None,
        time_limit: None,
        account: None,
        qos: None,
        slots: spec.ranks_per_node.max(1),
        nodes: 1,
        ranks_per_node: 1,
        ..spec.clone()
    }
}

/// Writes a job's directory: `job.json`, the secret and its hash, `job.sh`.
fn write_job_files(dir: &Path, job: &WorkerJob, worker_bin: &Path) -> Result<(), SlurmError> {
    let io = |what: &str, e: std::io::Error| {
        SlurmError::Unavailable(format!("cannot write {what} in {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("the job directory", e))?;
    std::fs::create_dir_all(&job.data_dir).map_err(|e| io("the worker directory", e))?;
    let tokens = dir.join("tokens.toml");
    let _ = std::fs::remove_file(&tokens);
    let secret = crate::auth::create_token(&tokens, "server", crate::auth::Role::Admin)
        .map_err(|e| SlurmError::Unavailable(format!("cannot make the job's secret: {e}")))?;
    files::write_atomic(&dir.join("secret"), secret.as_bytes(), 0o600)
        .map_err(|e| io("secret", e))?;
    let json = serde_json::to_vec_pretty(job).map_err(|e| io("job.json", e.into()))?;
    files::write_atomic(&dir.join("job.json"), &json, 0o600).map_err(|e| io("job.json", e))?;
    let script = files::batch_script(worker_bin, dir);
    files::write_atomic(&dir.join("job.sh"), script.as_bytes(), 0o700).map_err(|e| io("job.sh", e))
}

impl SlurmExecutor {
    /// Stops the run's live job through its follower, or cancels a run that waits for
    /// its next job.
    fn stop_job(&mut self, run_id: RunId, _ctx: &mut Context<Self>) {
        let msg = StopJob { run_id };
        let live_job = self.context.reader.state().run(msg.run_id).and_then(|r| {
            r.slurm
                .as_ref()
                .filter(|j| j.ended.is_none())
                .map(|j| j.job_id)
        });
        match self.followers.get(&msg.run_id) {
            Some((job_id, follower)) if Some(*job_id) == live_job => {
                follower.do_send(StopJob { run_id: msg.run_id });
                return;
            }
            _ => {}
        }
        // No job: a run waiting for its next one is cancelled here.
        let cancel = self
            .context
            .reader
            .state()
            .run(msg.run_id)
            .is_some_and(|r| r.cancel_requested && r.state == RunState::Queued);
        if cancel {
            self.context.journal.do_send(Append::one(
                msg.run_id,
                Event::RunCancelled {
                    reason: "cancelled by request before its Slurm job started".into(),
                },
            ));
        }
    }
}

impl Handler<WorkerRegistered> for SlurmExecutor {
    type Result = ();

    fn handle(&mut self, msg: WorkerRegistered, _ctx: &mut Self::Context) {
        match self.followers.get(&msg.run_id) {
            Some((job_id, follower)) if *job_id == msg.job_id => follower.do_send(msg),
            _ => {
                tracing::info!(run_id = %msg.run_id, job_id = msg.job_id, "registration of a job not followed: ignored")
            }
        }
    }
}

impl Handler<FollowerDone> for SlurmExecutor {
    type Result = ();

    fn handle(&mut self, msg: FollowerDone, ctx: &mut Self::Context) {
        // A follower of the run's next job may have started meanwhile: it stays.
        if self
            .followers
            .get(&msg.run_id)
            .is_some_and(|(job_id, _)| *job_id == msg.job_id)
        {
            self.followers.remove(&msg.run_id);
            self.context.board.remove_if(msg.run_id, |_| true);
        }
        // A lost job's run waits for its delay, then gets a new job.
        let wait = {
            let state = self.context.reader.state();
            state
                .run(msg.run_id)
                .filter(|r| r.state == RunState::Queued)
                .map(|r| {
                    r.not_before
                        .and_then(|t| (t - chrono::Utc::now()).to_std().ok())
                        .unwrap_or_default()
                })
        };
        if let Some(wait) = wait {
            self.launch_after(msg.run_id, wait, ctx);
        }
    }
}
