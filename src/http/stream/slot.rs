//! The one-chunk hand-over between a stream's task and its connection.
//!
//! A stream buffers one chunk between its task and the connection (see
//! [`super::CHANNEL_CHUNKS`]); with ten thousand subscribers, what that hand-over
//! costs is paid ten thousand times. A bounded `tokio::sync::mpsc` channel allocates
//! a block of 32 slots at its creation (about a kilobyte for `Bytes`); this is one
//! slot, a last word for after the task ends, and the wakers of both sides. A chunk
//! is whatever the two ends agree on: the event streams hand over a list of shared
//! frames, so a burst of records is never copied into one buffer per stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

struct Shared<T> {
    /// The chunk waiting for the connection.
    chunk: Mutex<Option<T>>,
    /// What the connection sends after the last chunk, once the task has ended.
    last: Mutex<Option<T>>,
    /// The task has ended: no chunk will follow.
    sender_gone: AtomicBool,
    /// The connection has dropped its end: the client is gone.
    receiver_gone: AtomicBool,
    /// The connection's waker.
    receiver: AtomicWaker,
    /// Wakes the task when the slot is emptied or the connection goes.
    sender: Notify,
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Self {
            chunk: Mutex::new(None),
            last: Mutex::new(None),
            sender_gone: AtomicBool::new(false),
            receiver_gone: AtomicBool::new(false),
            receiver: AtomicWaker::new(),
            sender: Notify::new(),
        }
    }
}

fn lock<T>(cell: &Mutex<Option<T>>) -> std::sync::MutexGuard<'_, Option<T>> {
    cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a chunk was not handed over.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The slot still holds the previous chunk.
    Full,
    /// It stayed full for the whole wait.
    Timeout,
    /// The connection is gone.
    Closed,
}

/// The task's end.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The connection's end.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A new hand-over.
pub fn slot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared::default());
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

impl<T: Clone + 'static> Sender<T> {
    /// Hands `chunk` over if the slot is empty.
    pub fn try_send(&self, chunk: T) -> Result<(), Refused> {
        if self.shared.receiver_gone.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        {
            let mut slot = lock(&self.shared.chunk);
            if slot.is_some() {
                return Err(Refused::Full);
            }
            *slot = Some(chunk);
        }
        self.shared.receiver.wake();
        Ok(())
    }

    /// Hands `chunk` over, waiting at most `wait` for the slot to empty.
    pub async fn send_timeout(&self, chunk: T, wait: Duration) -> Result<(), Refused> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let emptied = self.shared.sender.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            match self.try_send(chunk.clone()) {
                Err(Refused::Full) => {}
                done => return done,
            }
            if tokio::time::timeout_at(deadline, emptied).await.is_err() {
                return Err(Refused::Timeout);
            }
        }
    }

    /// A future that resolves once the connection is gone (it holds no `Sender`).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            loop {
                let woken = shared.sender.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if shared.receiver_gone.load(Ordering::Acquire) {
                    return;
                }
                woken.await;
            }
        }
    }

    /// Ends the hand-over with `last`, sent after the chunk still waiting, if any.
    pub fn finish(self, last: Option<T>) {
        *lock(&self.shared.last) = last;
        // Dropping `self` now marks the sender gone and wakes the connection.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.sender_gone.store(true, Ordering::Release);
        self.shared.receiver.wake();
    }
}

impl<T> Receiver<T> {
    /// The next chunk; `None` once the task has ended and everything was taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(chunk) = self.take() {
            return Poll::Ready(Some(chunk));
        }
        self.shared.receiver.register(cx.waker());
        // Checked again after registering, so a chunk handed over meanwhile is seen.
        if let Some(chunk) = self.take() {
            return Poll::Ready(Some(chunk));
        }
        if self.shared.sender_gone.load(Ordering::Acquire) {
            return Poll::Ready(lock(&self.shared.last).take());
        }
        Poll::Pending
    }

    fn take(&self) -> Option<T> {
        let chunk = lock(&self.shared.chunk).take();
        if chunk.is_some() {
            self.shared.sender.notify_waiters();
        }
        chunk
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
        self.shared.sender.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::web::Bytes;

    fn poll(rx: &mut Receiver<Bytes>) -> Poll<Option<Bytes>> {
        let waker = futures_util::task::noop_waker();
        rx.poll_recv(&mut Context::from_waker(&waker))
    }

    #[tokio::test]
    async fn one_chunk_at_a_time_then_the_last_word() {
        let (tx, mut rx) = slot();
        assert_eq!(poll(&mut rx), Poll::Pending);
        tx.try_send(Bytes::from_static(b"a")).expect("empty slot");
        assert_eq!(tx.try_send(Bytes::from_static(b"b")), Err(Refused::Full));
        assert_eq!(
            tx.send_timeout(Bytes::from_static(b"b"), Duration::from_millis(1))
                .await,
            Err(Refused::Timeout)
        );
        assert_eq!(poll(&mut rx), Poll::Ready(Some(Bytes::from_static(b"a"))));
        tx.send_timeout(Bytes::from_static(b"b"), Duration::from_secs(60))
            .await
            .expect("room");
        tx.finish(Some(Bytes::from_static(b"last")));
        assert_eq!(poll(&mut rx), Poll::Ready(Some(Bytes::from_static(b"b"))));
        assert_eq!(
            poll(&mut rx),
            Poll::Ready(Some(Bytes::from_static(b"last")))
        );
        assert_eq!(poll(&mut rx), Poll::Ready(None));
    }

    #[tokio::test]
    async fn a_waiting_sender_is_woken_by_the_connection_taking_or_going() {
        let (tx, mut rx) = slot();
        tx.try_send(Bytes::from_static(b"a")).expect("empty slot");
        let waiting = tokio::spawn(async move {
            let sent = tx
                .send_timeout(Bytes::from_static(b"b"), Duration::from_secs(60))
                .await;
            (tx, sent)
        });
        tokio::task::yield_now().await;
        assert_eq!(poll(&mut rx), Poll::Ready(Some(Bytes::from_static(b"a"))));
        let (tx, sent) = waiting.await.expect("sender task");
        assert_eq!(sent, Ok(()));
        let closed = tokio::spawn(tx.closed());
        tokio::task::yield_now().await;
        drop(rx);
        closed
            .await
            .expect("closed resolves once the connection is gone");
        assert_eq!(tx.try_send(Bytes::from_static(b"c")), Err(Refused::Closed));
    }
}
