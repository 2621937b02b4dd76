//! Appends an actor sent to the journal and has not had answered yet, counted apart
//! from the actor's context: a restart after a panic drops the futures waiting for
//! those answers, though the journal still writes what they asked for, so the
//! restarted actor first waits until every one is answered and only then reads the
//! journal's state to rebuild what it knows.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use super::journal::{AppendError, Journal};
use crate::domain::Seq;

/// The longest a restarted actor waits for the journal to answer the appends its old
/// context sent, before it reads the state anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// What an append to the journal answers.
pub type Appended = Result<Result<Vec<Seq>, AppendError>, MailboxError>;

/// The journal, with a count of the appends sent to it and not answered yet.
#[derive(Clone)]
pub struct InFlight {
    journal: Addr<Journal>,
    count: Arc<watch::Sender<usize>>,
}

impl InFlight {
    /// Counts the appends sent to `journal` through this.
    pub fn new(journal: Addr<Journal>) -> Self {
        Self {
            journal,
            count: Arc::new(watch::channel(0).0),
        }
    }

    /// The journal, for what needs no counting (a `do_send` nobody waits for).
    pub fn journal(&self) -> &Addr<Journal> {
        &self.journal
    }

    /// How many appends are not answered yet.
    pub fn outstanding(&self) -> usize {
        *self.count.borrow()
    }

    /// Sends `msg` to the journal; the answer is awaited off the actor's context too,
    /// so that it is counted as answered even when a restart dropped the future that
    /// waited for it.
    pub fn journaled<M>(&self, msg: M) -> impl std::future::Future<Output = Appended> + 'static
    where
        M: Message<Result = Result<Vec<Seq>, AppendError>> + Send + 'static,
        Journal: Handler<M>,
    {
        let request = self.journal.send(msg);
        self.count.send_modify(|n| *n += 1);
        let counted = Counted(Arc::clone(&self.count));
        let answer = actix_rt::spawn(async move {
            let answer = request.await;
            drop(counted);
            answer
        });
        async move { answer.await.unwrap_or(Err(MailboxError::Closed)) }
    }

    /// Resolves once no append is outstanding (or after 30 s, when it warns).
    pub fn settled(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut count = self.count.subscribe();
        async move {
            let settled = tokio::time::timeout(SETTLE_LIMIT, count.wait_for(|n| *n == 0)).await;
            if settled.is_err() {
                tracing::warn!(
                    limit_secs = SETTLE_LIMIT.as_secs(),
                    "journal answers still outstanding after a restart; reading the state anyway"
                );
            }
        }
    }
}

/// One append counted until this is dropped.
struct Counted(Arc<watch::Sender<usize>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}
