//! The follower of one Slurm job ([`RemoteRun`]): it pulls the worker's facts and
//! progress every tick, asks Slurm when the worker does not answer, and when the job
//! has ended journals what the worker left and what the job's end means (see
//! [`crate::domain::slurm`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::shared::{SlurmContext, StopJob, WorkerRegistered};
use crate::actors::journal::{answered, Append, AppendError};
use crate::actors::ticker::{Unwatch, Watch};
use crate::config::SlurmConfig;
use crate::domain::slurm::{self, FactSource, Mapped};
use crate::domain::{Envelope, Event, Rejection, RunId, RunState, Seq};
use crate::slurm::cli::{self, JobInfo, SlurmError};
use crate::slurm::facts::{Fact, Facts};
use crate::slurm::files::{self, Registration};
use crate::telemetry::work;
use crate::train::ProgressCells;
use opentelemetry::trace::SpanContext;

/// How long one pull from a worker may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(5);

/// A follower is done: its job ended and what it left is journaled.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FollowerDone {
    /// The run.
    pub run_id: RunId,
    /// The job that ended.
    pub job_id: u64,
}

impl Handler<WorkerRegistered> for RemoteRun {
    type Result = ();

    fn handle(&mut self, msg: WorkerRegistered, _ctx: &mut Self::Context) {
        self.register(msg.registration, msg.secret, "http");
    }
}

/// Follows one Slurm job of a run.
pub struct RemoteRun {
    run_id: RunId,
    job_id: u64,
    dir: PathBuf,
    worker_dir: PathBuf,
    secret: Option<String>,
    address: Option<String>,
    node: Option<String>,
    cells: Option<Arc<ProgressCells>>,
    busy: bool,
    /// A read of `worker.json` is under way.
    reading_registration: bool,
    /// The last pull got no answer.
    pull_failed: bool,
    /// The worker said its run stopped: it is exiting, so Slurm is asked instead.
    worker_exiting: bool,
    last_slurm_check: Option<Instant>,
    stop: Option<Instant>,
    poll_interval: Duration,
    grace: Duration,
    max_lost: u32,
    context: SlurmContext,
    /// Told once the job ended and what it left is journaled (the executor).
    done: Recipient<FollowerDone>,
    http: reqwest::Client,
}

impl RemoteRun {
    /// A follower of job `job_id` of `run_id`, whose directory is `dir` and whose
    /// worker keeps its data in `worker_dir`.
    pub fn new(
        (run_id, job_id): (RunId, u64),
        dir: PathBuf,
        worker_dir: PathBuf,
        config: &SlurmConfig,
        context: SlurmContext,
        done: Recipient<FollowerDone>,
    ) -> Self {
        Self {
            run_id,
            job_id,
            dir,
            worker_dir,
            secret: None,
            address: None,
            node: None,
            cells: None,
            busy: false,
            reading_registration: false,
            pull_failed: false,
            worker_exiting: false,
            last_slurm_check: None,
            stop: None,
            poll_interval: config.poll_interval(),
            grace: Duration::from_secs(config.grace_secs),
            max_lost: config.max_lost,
            context,
            done,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(PULL_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }
}

impl Actor for RemoteRun {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A worker that registered before a restart is known before anything is
        // stopped: it gets the SIGTERM that lets it checkpoint (no message is handled
        // until the read is done).
        if let Some(read) = self.registration_read() {
            ctx.wait(read);
        }
        // A cancel or pause asked for before a restart is carried out again.
        let asked = self
            .context
            .reader
            .state()
            .run(self.run_id)
            .is_some_and(|r| r.cancel_requested || r.state == RunState::Pausing);
        if asked {
            ctx.address().do_send(StopJob {
                run_id: self.run_id,
            });
        }
        ctx.run_interval(self.context.tick, |follower, ctx| follower.poll(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if self.cells.take().is_some() {
            self.context.ticker.do_send(Unwatch {
                run_id: self.run_id,
            });
        }
    }
}

impl Handler<StopJob> for RemoteRun {
    type Result = ();

    fn handle(&mut self, _msg: StopJob, ctx: &mut Self::Context) {
        if self.stop.is_some() {
            return;
        }
        self.stop = Some(Instant::now());
        let (job_id, run_id) = (self.job_id, self.run_id);
        if self.address.is_none() {
            // No worker yet (the job is pending, or just starting): nothing to save.
            tracing::info!(%run_id, job_id, "cancelling slurm job before its worker started");
            actix_web::rt::task::spawn_blocking(move || {
                if let Err(e) = cli::scancel(job_id, None) {
                    tracing::warn!(%run_id, job_id, error = %e, "scancel failed");
                }
            });
            return;
        }
        tracing::info!(%run_id, job_id, "stopping slurm job: SIGTERM");
        actix_web::rt::task::spawn_blocking(move || {
            if let Err(e) = cli::scancel(job_id, Some("TERM")) {
                // Not delivered (the job is not running): waiting for it is pointless.
                tracing::info!(%run_id, job_id, error = %e, "scancel --signal=TERM not delivered; cancelling the job");
                if let Err(e) = cli::scancel(job_id, None) {
                    tracing::warn!(%run_id, job_id, error = %e, "scancel failed");
                }
            }
        });
        ctx.run_later(self.grace, move |_, _| {
            actix_web::rt::task::spawn_blocking(move || {
                // Ends the job if the worker has not stopped by now (a no-op if it has).
                let _ = cli::scancel(job_id, None);
            });
        });
    }
}

/// What one poll learnt.
enum Polled {
    /// The worker's facts and progress, and how long the pull took.
    Pulled(Facts, Duration),
    /// Slurm's view of the job (the worker is not answering or not registered).
    Slurm(Option<JobInfo>),
    /// Nothing this time.
    Nothing,
}

impl RemoteRun {
    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        // Until it registers, and after a failed pull: a job Slurm started again (or a
        // worker restarted in it) registers a new address.
        if !self.worker_exiting && (self.address.is_none() || self.pull_failed) {
            self.read_registration(ctx);
        }
        let synced = self
            .context
            .reader
            .state()
            .run(self.run_id)
            .and_then(|r| r.slurm.as_ref().map(|j| j.synced_seq))
            .unwrap_or(0);
        let pull = match (&self.address, &self.secret) {
            (Some(address), Some(secret)) if !self.worker_exiting => Some(
                self.http
                    .get(format!(
                        "http://{address}/api/v1/runs/{}/facts?after={synced}",
                        self.run_id
                    ))
                    .bearer_auth(secret)
                    .send(),
            ),
            _ => None,
        };
        let check_slurm = self
            .last_slurm_check
            .is_none_or(|at| at.elapsed() >= self.poll_interval);
        let job_id = self.job_id;
        self.busy = true;
        let polled = async move {
            if let Some(pull) = pull {
                match pull.await {
                    Ok(response) if response.status().is_success() => {
                        match response.json::<Facts>().await {
                            Ok(facts) => return Ok(Polled::Pulled(facts, Duration::ZERO)),
                            Err(e) => {
                                tracing::warn!(job_id, error = %e, "bad answer from the worker")
                            }
                        }
                    }
                    Ok(response) => {
                        tracing::warn!(job_id, status = %response.status(), "the worker refused the pull")
                    }
                    Err(e) => tracing::debug!(job_id, error = %e, "the worker does not answer"),
                }
                Err(check_slurm)
            } else {
                Err(check_slurm)
            }
        };
        let fut = async move {
            let asked = Instant::now();
            let polled = polled.await;
            let waited = asked.elapsed();
            match polled {
                Ok(Polled::Pulled(facts, _)) => (Polled::Pulled(facts, waited), false),
                Ok(polled) => (polled, false),
                Err(false) => (Polled::Nothing, true),
                Err(true) => {
                    let info = actix_web::rt::task::spawn_blocking(move || cli::job_info(job_id))
                        .await
                        .unwrap_or_else(|e| Err(SlurmError::Unavailable(e.to_string())));
                    match info {
                        Ok(info) => (Polled::Slurm(info), true),
                        Err(e) => {
                            tracing::warn!(job_id, error = %e, "cannot ask Slurm about the job");
                            (Polled::Nothing, true)
                        }
                    }
                }
            }
        };
        ctx.spawn(
            fut.into_actor(self)
                .then(|(polled, unreachable), follower, ctx| {
                    let had_worker = follower.address.is_some() && !follower.worker_exiting;
                    follower.pull_failed = unreachable && had_worker;
                    let run_id = follower.run_id;
                    let board = follower.context.board.clone();
                    board.update(run_id, |live| live.unreachable = unreachable && had_worker);
                    let work: std::pin::Pin<Box<dyn ActorFuture<RemoteRun, Output = ()>>> =
                        match polled {
                            Polled::Pulled(facts, waited) => {
                                board.update(run_id, |live| {
                                    live.state = Some("RUNNING".into());
                                    live.reason = None;
                                });
                                follower.show_progress(&facts);
                                let worker_done = matches!(
                                    facts.state.as_str(),
                                    "paused" | "completed" | "failed" | "cancelled"
                                );
                                if worker_done && facts.facts.is_empty() {
                                    // The worker is exiting: ask Slurm from now on.
                                    follower.worker_exiting = true;
                                    follower.last_slurm_check = None;
                                }
                                Box::pin(
                                    follower
                                        .journal_facts(facts.facts, waited, ctx.address())
                                        .into_actor(follower)
                                        .map(|_, _, _| ()),
                                )
                            }
                            Polled::Slurm(info) => {
                                follower.last_slurm_check = Some(Instant::now());
                                let ended = info.as_ref().is_none_or(JobInfo::ended);
                                board.update(run_id, |live| {
                                    live.state = Some(
                                        info.as_ref().map_or("GONE".into(), |i| i.state.clone()),
                                    );
                                    live.reason = info.as_ref().map(|i| i.reason.clone());
                                });
                                if let Some(nodes) = info.as_ref().and_then(|i| i.nodes.clone()) {
                                    follower.node.get_or_insert(nodes);
                                }
                                if ended {
                                    Box::pin(follower.finish(info).into_actor(follower).map(
                                        |_, follower, ctx| {
                                            follower.done.do_send(FollowerDone {
                                                job_id: follower.job_id,
                                                run_id: follower.run_id,
                                            });
                                            ctx.stop();
                                        },
                                    ))
                                } else {
                                    Box::pin(fut::ready(()))
                                }
                            }
                            Polled::Nothing => Box::pin(fut::ready(())),
                        };
                    work.map(|_, follower: &mut RemoteRun, _| follower.busy = false)
                }),
        );
    }

    /// Reads `worker.json` and the secret, once the worker wrote it, on a blocking
    /// thread (they are on the shared filesystem, which may be slow); registers the
    /// worker when they name a new address. One read at a time.
    fn read_registration(&mut self, ctx: &mut Context<Self>) {
        if let Some(read) = self.registration_read() {
            ctx.spawn(read);
        }
    }

    /// The read [`RemoteRun::read_registration`] starts, unless one is under way.
    fn registration_read(&mut self) -> Option<impl ActorFuture<Self, Output = ()>> {
        if self.reading_registration {
            return None;
        }
        self.reading_registration = true;
        let dir = self.dir.clone();
        let read = async move {
            actix_web::rt::task::spawn_blocking(move || {
                let registration = files::read_json::<Registration>(&dir.join("worker.json"))
                    .map_err(|e| format!("cannot read worker.json: {e}"))?;
                let Some(registration) = registration else {
                    return Ok(None);
                };
                let secret = std::fs::read_to_string(dir.join("secret"))
                    .map_err(|e| format!("cannot read the job's secret: {e}"))?;
                Ok(Some((registration, secret.trim().to_string())))
            })
            .await
            .unwrap_or_else(|e| Err(format!("registration read failed: {e}")))
        };
        Some(read.into_actor(self).map(
            |read: Result<Option<(Registration, String)>, String>, follower, _| {
                follower.reading_registration = false;
                match read {
                    Ok(Some((registration, secret))) => {
                        follower.register(registration, secret, "worker.json")
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(run_id = %follower.run_id, error = %e, "worker registration not read"),
                }
            },
        ))
    }

    /// Pulls from the worker at `registration` from now on.
    fn register(&mut self, registration: Registration, secret: String, how: &str) {
        if self.address.as_ref() == Some(&registration.address) {
            return;
        }
        tracing::info!(run_id = %self.run_id, job_id = self.job_id, worker = %registration.address, how, "worker registered");
        self.context.board.update(self.run_id, |live| {
            live.worker = Some(registration.address.clone());
        });
        self.node = Some(registration.node);
        self.address = Some(registration.address);
        self.secret = Some(secret);
        self.pull_failed = false;
    }

    /// Writes the worker's newest progress into the cells the ticker samples.
    fn show_progress(&mut self, facts: &Facts) {
        let Some(progress) = facts.progress else {
            return;
        };
        let cells = self.cells.get_or_insert_with(|| {
            // No room for epoch summaries: those arrive as journaled facts, and a long
            // run's cells would otherwise hold one per epoch for nothing.
            let cells = Arc::new(ProgressCells::open_ended(0));
            self.context.ticker.do_send(Watch {
                run_id: self.run_id,
                cells: Arc::clone(&cells),
            });
            cells
        });
        if cells.epochs() != progress.epochs {
            cells.set_epochs(progress.epochs);
        }
        // The worker's sample has no samples-per-epoch, which the ETA needs; its own
        // ETA and rate give it (samples now plus those still to go, over the epochs).
        let samples_per_epoch = match (progress.eta_secs, progress.epochs) {
            (Some(eta), epochs) if cells.samples_per_epoch() == 0 && epochs > 0 => {
                let total = progress.samples as f64 + eta * progress.samples_per_sec;
                (total / epochs as f64).round() as u64
            }
            _ => cells.samples_per_epoch(),
        };
        if cells.batches_per_epoch() != progress.batches_per_epoch
            || cells.samples_per_epoch() != samples_per_epoch
        {
            cells.set_epoch_size(progress.batches_per_epoch, samples_per_epoch);
        }
        cells.report(
            progress.epoch,
            progress.batch,
            progress.samples,
            progress.loss.unwrap_or(f64::NAN),
        );
    }

    /// Journals the worker's facts in order, each once; on a fact the server cannot
    /// follow (unreadable, or one no worker journals), the run fails naming it and
    /// its job is stopped.
    ///
    /// A pull that brought facts is a `slurm.pull` span, under the run's current span,
    /// from the worker's answer (`waited`: how long the request took) to the facts
    /// journaled; one that brought none has no span (one every tick would drown the
    /// trace).
    fn journal_facts(
        &self,
        facts: Vec<Fact>,
        waited: Duration,
        me: Addr<Self>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let run_id = self.run_id;
        let span = if facts.is_empty() {
            tracing::Span::none()
        } else {
            self.pull_span(&facts, waited)
        };
        let decoded = facts.iter().map(|fact| (fact.seq, fact.decode())).collect();
        let journaled = journal_worker_facts(
            self.source(),
            run_id,
            decoded,
            (self.context.clone(), work::context_of(&span)),
        );
        async move {
            let unfollowable = journaled.await;
            span.record(
                "runyard.outcome",
                if unfollowable {
                    "unfollowable"
                } else {
                    "journaled"
                },
            );
            if unfollowable {
                me.do_send(StopJob { run_id });
            }
        }
    }

    fn pull_span(&self, facts: &[Fact], waited: Duration) -> tracing::Span {
        let span = tracing::debug_span!(
            target: work::TARGET,
            parent: None,
            "slurm.pull",
            runyard.run.id = %self.run_id,
            runyard.slurm.job_id = self.job_id as i64,
            runyard.slurm.facts = facts.len() as i64,
            runyard.slurm.first_fact = facts.first().map_or(0, |f| f.seq as i64),
            runyard.slurm.last_fact = facts.last().map_or(0, |f| f.seq as i64),
            runyard.slurm.pull_ms = waited.as_secs_f64() * 1e3,
            runyard.outcome = tracing::field::Empty,
        );
        let parent = self
            .context
            .reader
            .state()
            .run(self.run_id)
            .and_then(work::current_of);
        if let Some(parent) = &parent {
            work::set_parent(&span, parent);
        }
        span
    }

    fn source(&self) -> FactSource {
        FactSource {
            job_id: self.job_id,
            node: self.node.clone().unwrap_or_else(|| "unknown".into()),
            worker_dir: self.worker_dir.clone(),
        }
    }

    /// The job ended: journals what the worker left unpulled, then how the run goes
    /// on.
    fn finish(&mut self, info: Option<JobInfo>) -> impl std::future::Future<Output = ()> + 'static {
        let source = self.source();
        let context = self.context.clone();
        let (run_id, job_id, max_lost) = (self.run_id, self.job_id, self.max_lost);
        let journal_dir = self.worker_dir.join("journal");
        let output = self.dir.join("output.log");
        async move {
            let synced = context
                .reader
                .state()
                .run(run_id)
                .and_then(|r| r.slurm.as_ref().map(|j| j.synced_seq))
                .unwrap_or(0);
            let left = actix_web::rt::task::spawn_blocking(move || {
                read_left(&journal_dir, run_id, synced)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match left {
                Ok(left) => {
                    let left = left.into_iter().map(|(seq, e)| (seq, Ok(e))).collect();
                    journal_worker_facts(source, run_id, left, (context.clone(), None)).await;
                }
                Err(e) => tracing::warn!(%run_id, error = %e, "cannot read the worker's journal"),
            }
            let (state, reason) = info.as_ref().map_or(
                (
                    "GONE".to_string(),
                    "Slurm no longer knows the job".to_string(),
                ),
                |i| (i.state.clone(), i.reason.clone()),
            );
            let mut records = vec![(
                run_id,
                Event::SlurmJobEnded {
                    job_id,
                    state: state.clone(),
                    reason: reason.clone(),
                },
            )];
            // The job's output is on the shared filesystem: read off the arbiter.
            let last_output =
                actix_web::rt::task::spawn_blocking(move || last_output_line(&output))
                    .await
                    .unwrap_or_default();
            let outcome = {
                let fold = context.reader.state();
                fold.run(run_id).and_then(|run| {
                    slurm::job_end(run, job_id, &state, last_output.as_deref(), max_lost)
                })
            };
            records.extend(outcome.map(|event| (run_id, event)));
            tracing::info!(%run_id, job_id, state = %state, "slurm job ended");
            if let Err(e) = answered(context.journal.send(Append::new(records)).await) {
                tracing::error!(%run_id, job_id, error = %e, "cannot journal the end of the slurm job");
            }
        }
    }
}

/// Reads the facts the worker journaled after `synced` from its journal in the
/// shared directory (the job has ended, so its worker holds it no more).
fn read_left(
    journal_dir: &Path,
    run_id: RunId,
    synced: Seq,
) -> Result<Vec<(Seq, Envelope)>, String> {
    if !journal_dir.exists() {
        return Ok(Vec::new());
    }
    let mut last_error = String::new();
    // The worker may be a moment from exiting: its lock goes with it.
    for _ in 0..50 {
        match crate::store::EventLog::open(journal_dir) {
            Ok(log) => {
                return log
                    .read_run_after(run_id, synced, usize::MAX)
                    .map_err(|e| e.to_string())
            }
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last_error)
}

/// Journals facts in order: in one append with a `WorkerSynced` after them when the
/// state takes them all, else one by one, skipping (with a warning) a fact the
/// server's state refuses, so a repeated pull never journals one twice. At a fact the
/// server cannot follow (`Err`: unreadable; or [`Mapped::Unexpected`]) it stops:
/// what came before is journaled, then the run fails naming that fact. Answers
/// whether it did (the caller stops the job).
async fn journal_worker_facts(
    source: FactSource,
    run_id: RunId,
    facts: Vec<(Seq, Result<Envelope, String>)>,
    (context, parent): (SlurmContext, Option<SpanContext>),
) -> bool {
    let (mapped, unfollowable) = {
        let fold = context.reader.state();
        let Some(run) = fold.run(run_id) else {
            return false;
        };
        // Mapping against the state before the batch is enough: the only facts that
        // depend on the state (a pause) end the worker's run. A sweep trial's epochs
        // are counted through the batch: its rung may end in it.
        let mut rung = slurm::RungWatch::new(run, fold.rung_end(run_id));
        let mut mapped: Vec<(Seq, Option<Event>)> = Vec::new();
        let mut unfollowable = None;
        for (seq, envelope) in facts {
            let reading = envelope.map(|envelope| {
                let at_rung_end = rung.see(&envelope.event);
                slurm::map_fact(&source, run, &envelope.event, at_rung_end)
            });
            match reading {
                Ok(Mapped::Journal(event)) => mapped.push((seq, Some(event))),
                Ok(Mapped::WorkerOwn) => mapped.push((seq, None)),
                Ok(Mapped::Unexpected(reason)) => {
                    unfollowable = Some(format!("fact {seq}: {reason}"));
                    break;
                }
                Err(e) => {
                    unfollowable = Some(format!(
                        "fact {seq} of the worker of Slurm job {} cannot be read: {e}",
                        source.job_id
                    ));
                    break;
                }
            }
        }
        (mapped, unfollowable)
    };
    journal_mapped(run_id, mapped, &context, parent).await;
    let Some(reason) = unfollowable else {
        return false;
    };
    tracing::error!(%run_id, %reason, "a worker fact the server cannot follow: the run fails");
    let failed = context
        .journal
        .send(Append::one(
            run_id,
            Event::RunFailed {
                reason: format!(
                    "{reason}; the server cannot follow the run faithfully and stops its job"
                ),
            },
        ))
        .await;
    if !matches!(failed, Ok(Ok(_))) {
        tracing::warn!(%run_id, "the run's failure was not journaled (it ended meanwhile?)");
    }
    true
}

/// Journals mapped facts (see [`journal_worker_facts`]), each with its `WorkerSynced`.
async fn journal_mapped(
    run_id: RunId,
    mapped: Vec<(Seq, Option<Event>)>,
    context: &SlurmContext,
    parent: Option<SpanContext>,
) {
    let Some(last) = mapped.last().map(|(seq, _)| *seq) else {
        return;
    };
    let mut records: Vec<(RunId, Event)> = mapped
        .iter()
        .filter_map(|(_, event)| event.clone().map(|e| (run_id, e)))
        .collect();
    records.push((run_id, Event::WorkerSynced { through_seq: last }));
    let appended = answered(
        context
            .journal
            .send(Append::new(records).under(parent.clone()))
            .await,
    );
    match appended {
        Ok(_) => return,
        Err(AppendError::Rejected(Rejection::Transition { .. })) => {}
        Err(e) => {
            tracing::warn!(%run_id, error = %e, "cannot journal the worker's facts; next pull retries");
            return;
        }
    }
    for (seq, event) in mapped {
        let mut records: Vec<(RunId, Event)> = event.map(|e| (run_id, e)).into_iter().collect();
        records.push((run_id, Event::WorkerSynced { through_seq: seq }));
        let first = answered(
            context
                .journal
                .send(Append::new(records).under(parent.clone()))
                .await,
        );
        match first {
            Ok(_) => {}
            Err(AppendError::Rejected(rejection)) => {
                tracing::warn!(%run_id, seq, %rejection, "a worker fact the run's state refuses: skipped");
                let skipped = context
                    .journal
                    .send(Append::one(
                        run_id,
                        Event::WorkerSynced { through_seq: seq },
                    ))
                    .await;
                if !matches!(skipped, Ok(Ok(_))) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(%run_id, error = %e, "cannot journal the worker's facts; next pull retries");
                return;
            }
        }
    }
}

/// The last non-empty line of a job's output file, when it can be read.
fn last_output_line(output: &Path) -> Option<String> {
    let text = std::fs::read_to_string(output).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned)
}
