//! The one-chunk hand-over between a stream's task and its connection.
//!
//! A stream buffers one chunk between its task and the connection (see
//! [`super::CHANNEL_CHUNKS`]); with ten thousand subscribers, what that hand-over
//! costs is paid ten thousand times. A bounded `tokio::sync::mpsc` channel allocates
//! a block of 32 slots at its creation (about a kilobyte for `Bytes`); this is one
//! slot, a last word for after the task ends, and the wakers of both sides. A chunk
//! is whatever the two ends agree on: the event streams hand over a list of shared
//! frames, so a burst of records is never copied into one buffer per stream.
//!
//! The sender never blocks: it asks to be told ([`Sender::watch`],
//! [`Sender::want_room`]) and the connection puts the stream's key on the sender's
//! [`Attention`] list when it takes the chunk or goes. The sender is the worker's
//! stream hub, or the task catching a stream up on history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

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
    /// The hub that sends on this slot, and the stream's key there.
    watcher: Mutex<Option<(Arc<Attention>, usize)>>,
    /// The watcher asked to be told when the slot is emptied.
    wanted: AtomicBool,
}

/// Streams that need their hub's attention (their slot was emptied, or their client
/// went away), by key, and the hub's wakeup.
#[derive(Default)]
pub struct Attention {
    keys: Mutex<Vec<usize>>,
    notify: Notify,
}

impl Attention {
    /// Swaps the keys put on the list since the last call into `into` (emptied
    /// first), which leaves its buffer for the next ones: no allocation per call.
    pub fn take_into(&self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(
            &mut *self.keys.lock().unwrap_or_else(|p| p.into_inner()),
            into,
        );
    }

    /// Resolves once a key was put on the list (at once if one was since the last
    /// wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    fn call(&self, key: usize) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key);
        self.notify.notify_one();
    }
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Self {
            chunk: Mutex::new(None),
            last: Mutex::new(None),
            sender_gone: AtomicBool::new(false),
            receiver_gone: AtomicBool::new(false),
            receiver: AtomicWaker::new(),
            watcher: Mutex::new(None),
            wanted: AtomicBool::new(false),
        }
    }
}

impl<T> Shared<T> {
    /// Tells the watcher, if any, that `key` needs its attention.
    fn call_watcher(&self) {
        let watcher = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(attention, key)| (Arc::clone(attention), *key));
        if let Some((attention, key)) = watcher {
            attention.call(key);
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

impl<T> Sender<T> {
    /// Whether a chunk handed over now would be taken into the slot: it is empty and
    /// the connection is still there.
    pub fn has_room(&self) -> bool {
        !self.shared.receiver_gone.load(Ordering::Acquire) && lock(&self.shared.chunk).is_none()
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.receiver_gone.load(Ordering::Acquire)
    }

    /// From now on, the connection tells `attention` about `key` when it goes, and
    /// when it empties the slot after [`Sender::want_room`]; `None` stops that.
    pub fn watch(&self, watcher: Option<(Arc<Attention>, usize)>) {
        *self
            .shared
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = watcher;
        self.shared.wanted.store(false, Ordering::Release);
    }

    /// Asks to be told (through the watcher) once the slot is emptied; told at once
    /// if it already is.
    pub fn want_room(&self) {
        self.shared.wanted.store(true, Ordering::Release);
        if self.has_room() && self.shared.wanted.swap(false, Ordering::AcqRel) {
            self.shared.call_watcher();
        }
    }

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
        if chunk.is_some() && self.shared.wanted.swap(false, Ordering::AcqRel) {
            self.shared.call_watcher();
        }
        chunk
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
        self.shared.call_watcher();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::web::Bytes;

    fn take(attention: &Attention) -> Vec<usize> {
        let mut keys = Vec::new();
        attention.take_into(&mut keys);
        keys
    }

    fn poll(rx: &mut Receiver<Bytes>) -> Poll<Option<Bytes>> {
        let waker = futures_util::task::noop_waker();
        rx.poll_recv(&mut Context::from_waker(&waker))
    }

    #[test]
    fn one_chunk_at_a_time_then_the_last_word() {
        let (tx, mut rx) = slot();
        assert_eq!(poll(&mut rx), Poll::Pending);
        tx.try_send(Bytes::from_static(b"a")).expect("empty slot");
        assert_eq!(tx.try_send(Bytes::from_static(b"b")), Err(Refused::Full));
        assert_eq!(poll(&mut rx), Poll::Ready(Some(Bytes::from_static(b"a"))));
        tx.try_send(Bytes::from_static(b"b")).expect("room");
        tx.finish(Some(Bytes::from_static(b"last")));
        assert_eq!(poll(&mut rx), Poll::Ready(Some(Bytes::from_static(b"b"))));
        assert_eq!(
            poll(&mut rx),
            Poll::Ready(Some(Bytes::from_static(b"last")))
        );
        assert_eq!(poll(&mut rx), Poll::Ready(None));
    }

    #[tokio::test]
    async fn a_watcher_is_told_when_the_slot_it_waits_on_is_emptied_and_when_the_connection_goes() {
        let attention = Arc::new(Attention::default());
        let (tx, mut rx) = slot();
        tx.watch(Some((Arc::clone(&attention), 7)));
        tx.try_send(Bytes::from_static(b"a")).expect("empty slot");
        assert!(!tx.has_room());
        // Taken without being asked for: no word.
        assert_eq!(poll(&mut rx), Poll::Ready(Some(Bytes::from_static(b"a"))));
        assert!(take(&attention).is_empty());
        tx.try_send(Bytes::from_static(b"b")).expect("empty slot");
        tx.want_room();
        assert!(take(&attention).is_empty(), "still full");
        assert_eq!(poll(&mut rx), Poll::Ready(Some(Bytes::from_static(b"b"))));
        attention.notified().await;
        assert_eq!(take(&attention), vec![7]);
        // Asked while already empty: told at once.
        tx.want_room();
        assert_eq!(take(&attention), vec![7]);
        drop(rx);
        assert_eq!(take(&attention), vec![7], "the connection went");
        assert!(tx.is_closed() && !tx.has_room());
    }
}
