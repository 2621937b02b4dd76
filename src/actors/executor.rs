//! The executor seam: what the dispatcher asks of whichever executor runs a run.
//!
//! The dispatcher journals what a client asked for (a submit, cancel, pause or
//! resume) and then hands the run to the executor its spec names, through the same
//! few messages for every executor: [`Launch`] a run the journal holds as queued,
//! [`Withdraw`] a queued run before it starts (and [`Restore`] it when the stop could
//! not be journaled), [`Stop`] a run whose cancel or pause is journaled, and
//! [`Resync`] with the journal's state after a restart. Each executor is a side of
//! its own — the local side ([`super::local::LocalExecutor`]: the queue, the slots
//! and their run actors) and the Slurm side ([`super::slurm::SlurmExecutor`]: jobs
//! and the followers of their workers) — and decides what each message means for
//! its runs. Another executor (Kubernetes, say) is one more actor answering these
//! messages and one more entry in [`Executors`]; nothing else changes.

use actix::prelude::*;

use crate::domain::spec::Executor as ExecutorKind;
use crate::domain::RunId;

/// Puts a run the journal holds as queued (just submitted, resumed) in its
/// executor's hands: the local side queues it for slots, the Slurm side submits its
/// job. Answers once the executor has taken it (for Slurm, once the job is
/// journaled); an `Err` says why it is not launched yet (it stays queued, and the
/// executor tries again).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct Launch {
    /// The run.
    pub run_id: RunId,
}

/// Why a run is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhy {
    /// A cancel: the run ends.
    Cancel,
    /// A pause: the run checkpoints and waits for a resume.
    Pause,
}

/// Takes a queued run out of its executor's hands before it starts, if the executor
/// can: answers whether it did, in which case the cancel or pause is carried out at
/// once (journaled as done, not as asked for).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct Withdraw {
    /// The run.
    pub run_id: RunId,
    /// What the run is withdrawn for.
    pub why: StopWhy,
}

/// Gives a run [`Withdraw`] took back its place: the stop it was withdrawn for was
/// not journaled.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Restore {
    /// The run.
    pub run_id: RunId,
}

/// Stops a run whose cancel or pause the journal holds: the executor signals what
/// runs it (a withdrawn run has nothing running, but its executor may still have
/// something to end, as a Slurm job waiting in Slurm's queue).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop {
    /// The run.
    pub run_id: RunId,
    /// A cancel or a pause.
    pub why: StopWhy,
    /// Whether [`Withdraw`] took it before it started.
    pub withdrawn: bool,
}

/// Brings an executor in line with the journal's state: sent once the dispatcher's
/// recovery at start is journaled (the executor's first look at its runs) and again
/// after the dispatcher restarts (its lost answers may have owed a [`Launch`] or a
/// [`Stop`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Resync;

/// One executor, as the dispatcher sees it.
#[derive(Clone)]
pub struct Executor {
    launch: Recipient<Launch>,
    withdraw: Recipient<Withdraw>,
    restore: Recipient<Restore>,
    stop: Recipient<Stop>,
    resync: Recipient<Resync>,
}

impl Executor {
    /// The executor behind `addr`.
    pub fn of<A>(addr: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<Launch>
            + Handler<Withdraw>
            + Handler<Restore>
            + Handler<Stop>
            + Handler<Resync>,
    {
        Self {
            launch: addr.clone().recipient(),
            withdraw: addr.clone().recipient(),
            restore: addr.clone().recipient(),
            stop: addr.clone().recipient(),
            resync: addr.clone().recipient(),
        }
    }

    /// Sends [`Launch`].
    pub fn launch(&self, run_id: RunId) -> RecipientRequest<Launch> {
        self.launch.send(Launch { run_id })
    }

    /// Sends [`Withdraw`].
    pub fn withdraw(&self, run_id: RunId, why: StopWhy) -> RecipientRequest<Withdraw> {
        self.withdraw.send(Withdraw { run_id, why })
    }

    /// Sends [`Restore`], not waiting.
    pub fn restore(&self, run_id: RunId) {
        self.restore.do_send(Restore { run_id });
    }

    /// Sends [`Stop`], not waiting.
    pub fn stop(&self, run_id: RunId, why: StopWhy, withdrawn: bool) {
        self.stop.do_send(Stop {
            run_id,
            why,
            withdrawn,
        });
    }

    /// Sends [`Resync`], not waiting.
    pub fn resync(&self) {
        self.resync.do_send(Resync);
    }
}

/// The executors of this server, by the kind a run's spec names.
#[derive(Clone)]
pub struct Executors {
    local: Executor,
    slurm: Option<Executor>,
}

impl Executors {
    /// The local executor, and the Slurm one where it is enabled.
    pub fn new(local: Executor, slurm: Option<Executor>) -> Self {
        Self { local, slurm }
    }

    /// The executor that runs runs of `kind`, if this server has it.
    pub fn of(&self, kind: ExecutorKind) -> Option<&Executor> {
        match kind {
            ExecutorKind::Local => Some(&self.local),
            ExecutorKind::Slurm => self.slurm.as_ref(),
        }
    }

    /// Every executor this server has.
    pub fn all(&self) -> impl Iterator<Item = &Executor> {
        std::iter::once(&self.local).chain(self.slurm.as_ref())
    }
}
