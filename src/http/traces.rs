//! A span per HTTP request, when traces are on: the middleware that reads the W3C
//! `traceparent` (and `tracestate`) of a request, makes the request's span a child of
//! the caller's span (or the root of a trace of its own), and hands it to the
//! server's trace pipeline when the response head is ready.
//!
//! The span follows the OpenTelemetry HTTP server conventions: named `METHOD ROUTE`
//! (`POST /api/v1/runs`), kind `server`, with `http.request.method`, `http.route`,
//! `url.path` (never the query: a stream's `access_token` stays out of traces),
//! `http.response.status_code`, `client.address` and `user_agent.original`; its
//! status is an error for a 5xx answer only. An event stream's span ends when its
//! response starts, not when the stream ends. Probes and scrapes get no span.
//!
//! A caller whose `traceparent` says it is not sampled (flags `00`) is not followed:
//! the request gets a trace of its own.
//!
//! The span's id is picked before the handler runs and left in the request's
//! extensions ([`request_span`]), so the work a handler asks of the actors can be put
//! under it (a submit's journal flush: see [`crate::telemetry::work`]).

use std::time::SystemTime;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _, HttpRequest};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::AppState;
use crate::telemetry::traces::caller_span;

/// Paths whose requests get no span: probes and Prometheus scrapes come every few
/// seconds and would drown the requests people look for.
pub const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The caller's span named by a request's `traceparent` and `tracestate` headers,
/// if valid and sampled.
pub fn sampled_caller(headers: &actix_web::http::header::HeaderMap) -> Option<SpanContext> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    caller_span(header("traceparent"), header("tracestate")).filter(SpanContext::is_sampled)
}

/// The span of a request being handled, in its extensions while traces are on.
#[derive(Debug, Clone)]
struct RequestSpan(SpanContext);

/// The span of the request `req` (exported when its response is ready), when traces
/// are on: what the work it asks of the actors goes under.
pub fn request_span(req: &HttpRequest) -> Option<SpanContext> {
    req.extensions()
        .get::<RequestSpan>()
        .map(|span| span.0.clone())
}

/// The tracing middleware (for `actix_web::middleware::from_fn`); passes requests
/// straight through when traces are off.
pub async fn trace_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let traces = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.traces.clone())
        .filter(|_| !UNTRACED.contains(&req.path()));
    let Some(traces) = traces else {
        return next.call(req).await;
    };
    let start = SystemTime::now();
    let caller = sampled_caller(req.headers());
    let (trace_id, parent, trace_state) = match &caller {
        Some(caller) => (
            caller.trace_id(),
            caller.span_id(),
            caller.trace_state().clone(),
        ),
        None => (traces.new_trace_id(), SpanId::INVALID, Default::default()),
    };
    let span_context = SpanContext::new(
        trace_id,
        traces.new_span_id(),
        TraceFlags::SAMPLED,
        false,
        trace_state,
    );
    req.extensions_mut()
        .insert(RequestSpan(span_context.clone()));
    let method = req.method().to_string();
    let route = req.match_pattern();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("url.path", req.path().to_string()),
        KeyValue::new("url.scheme", req.connection_info().scheme().to_string()),
    ];
    if let Some(route) = &route {
        attributes.push(KeyValue::new("http.route", route.clone()));
    }
    if let Some(peer) = req.peer_addr() {
        attributes.push(KeyValue::new("client.address", peer.ip().to_string()));
    }
    if let Some(agent) = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new("user_agent.original", agent.to_string()));
    }

    let result = next.call(req).await;

    let status = match &result {
        Ok(response) => response.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method,
    };
    traces.export(SpanData {
        span_context,
        parent_span_id: parent,
        parent_span_is_remote: caller.is_some(),
        span_kind: SpanKind::Server,
        name: name.into(),
        start_time: start,
        end_time: SystemTime::now(),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if status.is_server_error() {
            Status::error(status.to_string())
        } else {
            Status::Unset
        },
        instrumentation_scope: traces.scope().clone(),
    });
    result
}
