//! `GET /api/v1/runs/{id}/stream`: server-sent events. Every lifecycle event is sent
//! with `id:` = its journal sequence number, read from the journal by cursor, so a
//! client reconnecting with `Last-Event-ID` (or `?after=`) misses nothing and gets
//! nothing twice. Progress is coalesced: each tick, the newest sample of the run, if
//! it changed. A slow client holds a cursor and one sample, never a growing queue.

use std::convert::Infallible;
use std::fmt::Write as _;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::runs::{existing_run_id, EventView};
use super::{ApiError, AppState, ErrorCode};
use crate::actors::Progress;
use crate::domain::{RunId, Seq};

/// Events read from the journal per pass.
const READ_BATCH: usize = 256;
/// Chunks buffered between the feeder task and the connection.
const CHANNEL_CHUNKS: usize = 8;

/// Query of the stream endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this sequence number (like `Last-Event-ID`).
    after: Option<Seq>,
}

fn sse_event(out: &mut String, id: Option<Seq>, name: &str, data: &str) {
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = writeln!(out, "event: {name}");
    for line in data.lines() {
        let _ = writeln!(out, "data: {line}");
    }
    out.push('\n');
}

/// Streams one run's lifecycle events and progress until its terminal event.
pub async fn run_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = existing_run_id(&state, &path)?;
    let header_cursor = req
        .headers()
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<Seq>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidQuery,
                        "Last-Event-ID must be a sequence number",
                    )
                })
        })
        .transpose()?;
    let cursor = header_cursor.or(query.after).unwrap_or(0);

    let (tx, mut rx) = mpsc::channel::<web::Bytes>(CHANNEL_CHUNKS);
    actix_web::rt::spawn(feed(state.into_inner(), id, cursor, tx));
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|chunk| chunk.map(Ok::<_, Infallible>))
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Feeds one stream until the run ends or the client goes away (a failed send).
async fn feed(
    state: std::sync::Arc<AppState>,
    id: RunId,
    mut cursor: Seq,
    tx: mpsc::Sender<web::Bytes>,
) {
    let reader = &state.actors.reader;
    let mut tail = reader.subscribe();
    let mut ticks = state.actors.board.subscribe();
    let mut last_progress: Option<Progress> = None;
    let mut keep_alive = tokio::time::interval_at(
        tokio::time::Instant::now() + state.keep_alive,
        state.keep_alive,
    );
    // Tell the client how soon to retry if the connection drops.
    if tx
        .send(web::Bytes::from_static(b"retry: 1000\n\n"))
        .await
        .is_err()
    {
        return;
    }
    loop {
        // Lifecycle events first, straight from the journal.
        let mut ended = false;
        loop {
            let records = match reader.durable_run_events(id, cursor, READ_BATCH).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::error!(run_id = %id, error = %e, "stream could not read the journal");
                    return;
                }
            };
            if records.is_empty() {
                break;
            }
            let mut chunk = String::new();
            if records.iter().any(|(_, e)| e.event.is_terminal()) {
                // The run's final sample was published before its terminal event was
                // journaled: send it first, so the stream ends on the real figures.
                progress_event(&mut chunk, &state, id, &mut last_progress);
            }
            for (seq, envelope) in &records {
                let view = EventView::new(*seq, envelope);
                let data = serde_json::to_string(&view).unwrap_or_default();
                sse_event(&mut chunk, Some(*seq), view.r#type, &data);
                cursor = *seq;
                ended |= envelope.event.is_terminal();
            }
            if tx.send(chunk.into()).await.is_err() {
                return;
            }
            if records.len() < READ_BATCH {
                break;
            }
        }
        if ended {
            // The terminal event and the slot release are journaled together, so both
            // have been sent; the stream is complete.
            return;
        }
        tokio::select! {
            changed = tail.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = ticks.changed() => {
                if changed.is_err() {
                    return;
                }
                let mut chunk = String::new();
                progress_event(&mut chunk, &state, id, &mut last_progress);
                if !chunk.is_empty() && tx.send(chunk.into()).await.is_err() {
                    return;
                }
            }
            _ = keep_alive.tick() => {
                if tx.send(web::Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Appends a `progress` event to `out` if the run's newest sample differs from `last`.
fn progress_event(out: &mut String, state: &AppState, id: RunId, last: &mut Option<Progress>) {
    let progress = state.actors.board.get(id);
    if progress.is_none() || progress == *last {
        return;
    }
    *last = progress;
    let mut data = serde_json::to_value(progress).unwrap_or_default();
    if let Some(obj) = data.as_object_mut() {
        obj.insert("run_id".into(), serde_json::Value::String(id.to_string()));
    }
    sse_event(out, None, "progress", &data.to_string());
}
