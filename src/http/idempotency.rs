//! `Idempotency-Key` on POST requests: the first answer to a key is stored (in the
//! `idempotency` tree of the journal's database) and a retry with the same key, method,
//! path, query, content type and body gets it again, byte for byte, with
//! `Idempotent-Replayed: true`; the same key with another request is a `409
//! idempotency_key_reused`. Records expire after [`RECORD_TTL`].
//!
//! The answer is stored after the handler has done its work (its events are durable)
//! and before it is sent. A crash between the two loses the record, not the work: the
//! retry runs the request again, and finds what the first attempt did (a submission
//! answers `200` with the run it made, a cancel `409` naming the run's end state).
//! Answers of `5xx` are not stored, so a request refused by a failing disk is tried
//! afresh.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState, ErrorCode};

/// The request header that names a retry-safe request.
pub const HEADER: &str = "idempotency-key";

/// The response header set on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// How long an answer is kept for retries.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// Time between two sweeps of expired records.
const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

/// What is kept of a first answer.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// When the answer was stored, in microseconds since the Unix epoch.
    at_micros: i64,
    /// `METHOD path?query`, for the conflict message.
    request: String,
    /// Hex SHA-256 of the method, path, query, content type and body.
    fingerprint: String,
    /// The status answered.
    status: u16,
    /// The answer's `Content-Type`.
    content_type: Option<String>,
    /// The answer's `Location`.
    location: Option<String>,
    /// The answer's body (the API answers JSON text).
    body: String,
}

impl Record {
    fn expired(&self, now_micros: i64) -> bool {
        now_micros.saturating_sub(self.at_micros) > RECORD_TTL.as_micros() as i64
    }

    fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = HttpResponse::build(status);
        if let Some(content_type) = &self.content_type {
            response.insert_header((CONTENT_TYPE, content_type.as_str()));
        }
        if let Some(location) = &self.location {
            response.insert_header((LOCATION, location.as_str()));
        }
        response.insert_header((REPLAYED_HEADER, "true"));
        response.body(self.body.clone())
    }
}

/// Requests with a key under way in this process: a retry that arrives while the first
/// attempt runs waits for it, then gets its answer.
static IN_FLIGHT: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// When expired records were last swept, in microseconds since the Unix epoch.
static LAST_SWEEP: LazyLock<Mutex<i64>> = LazyLock::new(Default::default);

/// The request's key, if it has one; a malformed key is a `400 invalid_header`.
fn key_of(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(ApiError::new(
            ErrorCode::InvalidHeader,
            format!("Idempotency-Key: must be 1 to {MAX_KEY_BYTES} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// Hex SHA-256 over what makes two requests the same request.
fn fingerprint(req: &HttpRequest, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    for part in [
        req.method().as_str().as_bytes(),
        req.path().as_bytes(),
        req.query_string().as_bytes(),
        req.headers()
            .get(CONTENT_TYPE)
            .map_or(&b""[..], HeaderValue::as_bytes),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.update(body);
    hex::encode(hash.finalize())
}

/// Runs `handle` for a POST request whose body is `body`, or, when the request has an
/// `Idempotency-Key` already answered, answers as the first time without running it.
pub async fn guard<F, Fut>(
    req: &HttpRequest,
    state: &AppState,
    body: &[u8],
    handle: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<HttpResponse, ApiError>>,
{
    let Some(key) = key_of(req)? else {
        return handle().await;
    };
    let fingerprint = fingerprint(req, body);
    let request = format!(
        "{} {}{}{}",
        req.method(),
        req.path(),
        if req.query_string().is_empty() {
            ""
        } else {
            "?"
        },
        req.query_string()
    );
    let lock = {
        let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(in_flight.entry(key.clone()).or_default())
    };
    let answer = async {
        let _turn = lock.lock().await;
        let tree = state.actors.reader.log().idempotency_tree()?;
        let now = chrono::Utc::now().timestamp_micros();
        if let Some(record) = read(&tree, &key).await? {
            if !record.expired(now) {
                if record.fingerprint != fingerprint {
                    return Err(ApiError::new(
                        ErrorCode::IdempotencyKeyReused,
                        format!(
                            "Idempotency-Key `{key}` was used for another request ({}) or another \
                             body; use a new key for a new request",
                            record.request
                        ),
                    ));
                }
                return Ok(record.response());
            }
        }
        let response = match handle().await {
            Ok(response) => response,
            Err(e) => e.error_response(),
        };
        let status = response.status();
        let header = |name: HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (content_type, location) = (header(CONTENT_TYPE), header(LOCATION));
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let record = Record {
            at_micros: now,
            request,
            fingerprint,
            status: status.as_u16(),
            content_type,
            location,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        if !status.is_server_error() {
            if let Err(e) = write(state.actors.reader.log(), &tree, &key, &record).await {
                // The work is done and durable; only a retry's replay is lost.
                tracing::warn!(error = %e, "idempotency record not stored");
            }
            sweep(tree, now);
        }
        let mut response = record.response();
        response.headers_mut().remove(REPLAYED_HEADER);
        Ok(response)
    };
    let result = answer.await;
    let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    if in_flight
        .get(&key)
        .is_some_and(|l| Arc::ptr_eq(l, &lock) && Arc::strong_count(l) <= 2)
    {
        in_flight.remove(&key);
    }
    result
}

/// Reads the record of `key`, off the async threads. A record that does not decode (an
/// older layout) counts as absent.
async fn read(tree: &sled::Tree, key: &str) -> Result<Option<Record>, ApiError> {
    let (tree, key) = (tree.clone(), key.to_string());
    let found = actix_web::web::block(move || tree.get(key.as_bytes()))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::JournalUnavailable,
                format!("cannot read idempotency records: {e}"),
            )
        })?;
    Ok(found.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Stores the record of `key` and syncs it to stable storage, off the async threads.
async fn write(
    log: &crate::store::EventLog,
    tree: &sled::Tree,
    key: &str,
    record: &Record,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    let (log, tree, key) = (log.clone(), tree.clone(), key.to_string());
    actix_web::web::block(move || log.insert_durable(&tree, key.as_bytes(), bytes))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Removes expired records in the background, at most once per [`SWEEP_EVERY`].
fn sweep(tree: sled::Tree, now_micros: i64) {
    {
        let mut last = LAST_SWEEP.lock().unwrap_or_else(|p| p.into_inner());
        if now_micros.saturating_sub(*last) < SWEEP_EVERY.as_micros() as i64 {
            return;
        }
        *last = now_micros;
    }
    std::thread::spawn(move || {
        let mut removed = 0u64;
        for item in tree.iter() {
            let Ok((key, value)) = item else { break };
            let expired =
                serde_json::from_slice::<Record>(&value).map_or(true, |r| r.expired(now_micros));
            if expired && tree.remove(key).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "expired idempotency records removed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_expire_after_a_day() {
        let record = Record {
            at_micros: 0,
            request: "POST /api/v1/runs".into(),
            fingerprint: String::new(),
            status: 201,
            content_type: Some("application/json".into()),
            location: Some("/api/v1/runs/x".into()),
            body: "{}".into(),
        };
        let day = RECORD_TTL.as_micros() as i64;
        assert!(!record.expired(day));
        assert!(record.expired(day + 1));
        let response = record.response();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            response
                .headers()
                .get(REPLAYED_HEADER)
                .map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
        assert_eq!(
            response.headers().get(LOCATION).map(|v| v.as_bytes()),
            Some(&b"/api/v1/runs/x"[..])
        );
    }
}
