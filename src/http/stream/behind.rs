//! A stream further behind than the journal's window of recent records: a task of
//! its own reads the log from its cursor (one of [`super::StreamStats`]'s read
//! permits at a time) and hands it the records, a small chunk at a time, waiting at
//! most a keep-alive interval for each to be taken. Once its cursor is inside the
//! window, it goes back to its worker's hub.

use std::sync::Arc;

use super::slot::{Attention, Refused};
use super::sub::{Door, Sub};
use super::{gather, End, Frames, CHUNK_BYTES};
use crate::http::AppState;

/// Events read from the journal per pass.
const READ_BATCH: usize = 64;

/// Catches `sub` up with the window, then hands it back through `door`.
pub(super) async fn catch_up(state: Arc<AppState>, mut sub: Sub, door: Door) {
    let attention = Arc::new(Attention::default());
    sub.tx.watch(Some((Arc::clone(&attention), 0)));
    let caught_up = read_to_window(&state, &mut sub, &attention).await;
    sub.tx.watch(None);
    match caught_up {
        Ok(()) => {
            if let Err(refused) = door.send(sub) {
                // Only while the worker shuts down.
                refused.0.end(&state, End::Done);
            }
        }
        Err(end) => sub.end(&state, end),
    }
}

/// Hands `chunk` over, waiting at most a keep-alive interval for room.
async fn send(
    state: &AppState,
    sub: &Sub,
    attention: &Attention,
    called: &mut Vec<usize>,
    chunk: Frames,
) -> Result<(), End> {
    let deadline = tokio::time::Instant::now() + state.keep_alive;
    let mut chunk = Some(chunk);
    loop {
        if sub.tx.is_closed() {
            return Err(End::Gone);
        }
        if sub.tx.has_room() {
            return match sub.tx.try_send(chunk.take().unwrap_or_default()) {
                Ok(()) => Ok(()),
                Err(Refused::Closed) => Err(End::Gone),
                // Only this task sends on the slot.
                Err(Refused::Full) => Err(End::Slow),
            };
        }
        sub.tx.want_room();
        attention.take_into(called);
        if tokio::time::timeout_at(deadline, attention.notified())
            .await
            .is_err()
        {
            return Err(End::Slow);
        }
    }
}

async fn read_to_window(state: &AppState, sub: &mut Sub, attention: &Attention) -> Result<(), End> {
    let reader = &state.actors.reader;
    let run = match sub.filter.runs.as_deref() {
        Some([one]) => Some(*one),
        _ => None,
    };
    // The keys the connection put on the list (only this stream's): a buffer kept.
    let mut called = Vec::new();
    loop {
        if sub.cursor >= reader.durable_seq() || reader.recent_after(sub.cursor, 0, run).is_some() {
            return Ok(());
        }
        let durable = reader.durable_seq();
        let records = {
            // The semaphore is never closed.
            let _permit = state.streams.reads.acquire().await.map_err(|_| End::Done)?;
            reader
                .records_after(sub.cursor, READ_BATCH, run)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "stream could not read the journal");
                    End::Done
                })?
        };
        let read_to_end = records.len() < READ_BATCH;
        let mut rest = &records[..];
        while !rest.is_empty() {
            // Chunks of frames of at least CHUNK_BYTES, made after the fold is let go
            // of, each with the last sequence number it holds: the cursor follows every
            // chunk taken, so a stream ended as too slow names exactly what its client
            // got.
            let gathered = {
                let fold = reader.state();
                gather(state, sub, rest, &fold, CHUNK_BYTES)
            };
            if !gathered.frames.is_empty() {
                Box::pin(send(state, sub, attention, &mut called, gathered.frames)).await?;
            }
            sub.cursor = gathered.through;
            if gathered.ended {
                return Err(End::Done);
            }
            rest = &rest[gathered.read..];
        }
        if read_to_end {
            // Every record up to `durable` was read (for a one-run stream, every one
            // of its run's): none before it is left for this stream.
            sub.cursor = sub.cursor.max(durable);
        }
    }
}
