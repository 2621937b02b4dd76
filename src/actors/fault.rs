//! Panics in actor handlers: the guard that catches one and hands it to the actor's
//! [`Recover`] hook, and the fault points that inject one in tests.
//!
//! actix restarts a supervised actor only when it *stops*; a panic that leaves a
//! handler unwinds the arbiter thread and ends the server. So every handler of the
//! journal, the dispatcher, the ticker, the slots and the run actors runs its work
//! through [`guard`] (and most futures they spawn through [`guarded`]): a panic is
//! caught, logged, and turned into [`Recover::recover`], which for a supervised actor
//! is a stop that its `Supervisor` answers with a restart, and its
//! `Supervised::restarting` re-derives its state from the journal.
//!
//! A fault point ([`point`]) panics when `RUNYARD_FAULT` arms it. The variable is
//! read once per process: a comma list of `ACTOR:N` (`journal`, `dispatcher`,
//! `ticker`, `slot`, `run`), each making the N-th time that actor's fault point is
//! reached panic, once; e.g. `RUNYARD_FAULT=dispatcher:2,ticker:1`. Fault points
//! exist only in debug builds (`cfg(debug_assertions)`, what `cargo test` builds):
//! in a release build [`point`] is an empty function and the variable is never read.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::Poll;

use actix::prelude::*;

/// The actors whose handlers are guarded, as named in logs, metrics and
/// `RUNYARD_FAULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKind {
    /// The journal, the single writer of the event log.
    Journal,
    /// The dispatcher, which journals commands and hands runs to their executor.
    Dispatcher,
    /// The local executor, which keeps the queue of runs waiting for slots.
    Local,
    /// The ticker, which samples live runs' progress.
    Ticker,
    /// A slot actor, one per device.
    Slot,
    /// A run actor, one per live attempt.
    Run,
}

impl ActorKind {
    /// Every kind, in the order metrics list them.
    pub const ALL: [ActorKind; 6] = [
        ActorKind::Journal,
        ActorKind::Dispatcher,
        ActorKind::Local,
        ActorKind::Ticker,
        ActorKind::Slot,
        ActorKind::Run,
    ];

    /// The name used in logs, the `actor` label and `RUNYARD_FAULT`.
    pub fn name(self) -> &'static str {
        match self {
            ActorKind::Journal => "journal",
            ActorKind::Dispatcher => "dispatcher",
            ActorKind::Local => "local",
            ActorKind::Ticker => "ticker",
            ActorKind::Slot => "slot",
            ActorKind::Run => "run",
        }
    }
}

impl std::fmt::Display for ActorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An actor whose handlers' panics are caught: what it does after one.
pub trait Recover: Actor<Context = Context<Self>> {
    /// Which actor this is.
    const KIND: ActorKind;

    /// Called once a panic in one of the actor's handlers (or in a future it spawned
    /// through [`guarded`]) was caught and logged. The state may be half-changed: a
    /// supervised actor stops here (`ctx.stop()`) so that its `Supervisor` restarts
    /// it and `Supervised::restarting` re-derives the state from the journal.
    fn recover(&mut self, ctx: &mut Context<Self>);
}

/// Runs `body`, the work of one of `act`'s handlers (`site` names it in the log); a
/// panic in it is caught, logged and handed to [`Recover::recover`], and `None` is
/// answered instead of the body's value.
pub fn guard<A: Recover, R>(
    act: &mut A,
    ctx: &mut Context<A>,
    site: &'static str,
    body: impl FnOnce(&mut A, &mut Context<A>) -> R,
) -> Option<R> {
    match panic::catch_unwind(AssertUnwindSafe(|| body(act, ctx))) {
        Ok(value) => Some(value),
        Err(payload) => {
            log_panic(A::KIND, site, payload.as_ref());
            act.recover(ctx);
            None
        }
    }
}

/// Wraps a future that `A` spawns, waits on or answers a message with, so that a
/// panic while it is polled (in its continuations) is caught like one in a
/// handler: the future then ends at once with `None`, after [`Recover::recover`].
/// (An answer to a message that a stopping actor's future would give goes nowhere:
/// the sender sees the mailbox closed.)
pub fn guarded<A: Recover, F: ActorFuture<A>>(site: &'static str, future: F) -> Guarded<F> {
    Guarded {
        inner: Box::pin(future),
        site,
    }
}

/// [`guarded`] for a future whose value nobody needs, ready for `ctx.spawn` or
/// `ctx.wait`.
pub fn guarded_unit<A: Recover, F: ActorFuture<A, Output = ()>>(
    site: &'static str,
    future: F,
) -> impl ActorFuture<A, Output = ()> {
    guarded(site, future).map(|_, _, _| ())
}

/// A future wrapped by [`guarded`].
pub struct Guarded<F> {
    inner: Pin<Box<F>>,
    site: &'static str,
}

impl<A: Recover, F: ActorFuture<A>> ActorFuture<A> for Guarded<F> {
    type Output = Option<F::Output>;

    fn poll(
        mut self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        let this = &mut *self;
        let inner = &mut this.inner;
        match panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(act, ctx, task))) {
            Ok(poll) => poll.map(Some),
            Err(payload) => {
                log_panic(A::KIND, this.site, payload.as_ref());
                act.recover(ctx);
                Poll::Ready(None)
            }
        }
    }
}

fn log_panic(actor: ActorKind, site: &'static str, payload: &(dyn Any + Send)) {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    tracing::error!(%actor, site, panic = %message, "actor handler panicked; the actor recovers");
}

/// A fault point of `actor`: panics when `RUNYARD_FAULT` armed it for this hit (debug
/// builds only; in a release build it does nothing and compiles to nothing).
#[inline(always)]
pub fn point(actor: ActorKind) {
    #[cfg(debug_assertions)]
    armed::hit(actor);
    #[cfg(not(debug_assertions))]
    let _ = actor;
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use super::ActorKind;

    /// The environment variable that arms fault points.
    const VARIABLE: &str = "RUNYARD_FAULT";

    /// Per actor kind: the hit that panics (0: none), and hits so far.
    struct Armed {
        at: [u64; ActorKind::ALL.len()],
        hits: [AtomicU64; ActorKind::ALL.len()],
    }

    fn armed() -> &'static Armed {
        static ARMED: OnceLock<Armed> = OnceLock::new();
        ARMED.get_or_init(|| {
            let spec = std::env::var(VARIABLE).unwrap_or_default();
            let at = parse(&spec);
            if at.iter().any(|n| *n > 0) {
                tracing::warn!(variable = VARIABLE, %spec, "fault points armed");
            }
            Armed {
                at,
                hits: Default::default(),
            }
        })
    }

    /// `ACTOR:N` entries, comma separated; a malformed one is logged and skipped.
    pub(super) fn parse(spec: &str) -> [u64; ActorKind::ALL.len()] {
        let mut at = [0; ActorKind::ALL.len()];
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once(':').and_then(|(name, n)| {
                let i = ActorKind::ALL
                    .iter()
                    .position(|k| k.name() == name.trim())?;
                Some((i, n.trim().parse::<u64>().ok().filter(|n| *n > 0)?))
            });
            match parsed {
                Some((i, n)) => at[i] = n,
                None => {
                    tracing::warn!(variable = VARIABLE, %entry, "fault point entry not understood (expected ACTOR:N, N from 1)")
                }
            }
        }
        at
    }

    pub(super) fn hit(actor: ActorKind) {
        let armed = armed();
        let i = actor as usize;
        if armed.at[i] == 0 {
            return;
        }
        let hit = armed.hits[i].fetch_add(1, Ordering::Relaxed) + 1;
        if hit == armed.at[i] {
            panic!("fault point {actor}:{hit} ({VARIABLE})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(debug_assertions)]
    #[test]
    fn fault_specs_arm_the_named_actors_and_skip_what_they_cannot_read() {
        let at = armed::parse("dispatcher:2, run:5,bogus:1,ticker:0,slot:x,journal,local:3");
        assert_eq!(at, [0, 2, 3, 0, 0, 5]);
        assert_eq!(armed::parse(""), [0; 6]);
    }

    struct Fragile {
        recovered: u32,
    }

    impl Actor for Fragile {
        type Context = Context<Self>;
    }

    impl Recover for Fragile {
        const KIND: ActorKind = ActorKind::Slot;

        fn recover(&mut self, _ctx: &mut Context<Self>) {
            self.recovered += 1;
        }
    }

    #[derive(Message)]
    #[rtype(result = "(Option<u32>, u32)")]
    struct Poke {
        fail: bool,
    }

    impl Handler<Poke> for Fragile {
        type Result = MessageResult<Poke>;

        fn handle(&mut self, msg: Poke, ctx: &mut Context<Self>) -> Self::Result {
            let answer = guard(self, ctx, "poke", |_, _| {
                assert!(!msg.fail, "poked too hard");
                7
            });
            MessageResult((answer, self.recovered))
        }
    }

    #[actix_rt::test]
    async fn a_caught_panic_answers_none_and_reaches_the_recover_hook() {
        let addr = Fragile { recovered: 0 }.start();
        assert_eq!(
            addr.send(Poke { fail: false }).await.expect("answer"),
            (Some(7), 0)
        );
        assert_eq!(
            addr.send(Poke { fail: true }).await.expect("answer"),
            (None, 1)
        );
        assert_eq!(
            addr.send(Poke { fail: false })
                .await
                .expect("still running"),
            (Some(7), 1)
        );
    }
}
