//! Bearer-token auth: the middleware that asks each request for the role its route
//! needs, against the tokens of [`crate::auth`].
//!
//! What each request needs ([`required_role`]): `/healthz` and `/readyz` are open, and
//! so are the dashboard page `/` and its `/assets/` (they hold no data: the page reads
//! the API with the token the person enters); under `/api/`, reads (`GET`, `HEAD`) need
//! `read` and everything else `write`. Handlers that need `admin` check the [`Caller`]
//! the middleware leaves in the request's extensions.
//!
//! The token comes in `Authorization: Bearer TOKEN`. The four stream routes also take it
//! as the query parameter `access_token` ([`takes_query_token`]), because a browser's
//! `EventSource` cannot send headers; it is checked the same way, and the access log
//! writes paths without their query, so it is not logged either.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};

use super::{ApiError, ErrorCode};
pub use crate::auth::{Caller, Role, Tokens};

/// The role a request needs, or `None` when it is open to anyone.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    // `/metrics` names runs and their figures: it needs a token too.
    if !(path == "/api" || path.starts_with("/api/") || path == "/metrics") {
        return None;
    }
    // A Slurm worker proves itself with its job's secret, checked by the handler.
    if method == Method::POST && is_worker_registration(path) {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        Some(Role::Read)
    } else {
        Some(Role::Write)
    }
}

/// Whether `path` is a worker's registration, `/api/v1/runs/{id}/worker`.
fn is_worker_registration(path: &str) -> bool {
    path.strip_prefix("/api/v1/runs/")
        .and_then(|rest| rest.strip_suffix("/worker"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Whether `path` is one of the four stream routes (`/api/v1/stream`,
/// `/api/v1/runs/{id}/stream`, `/api/v1/runs/{id}/logs/stream`,
/// `/api/v1/sweeps/{id}/stream`), the only ones that take
/// the token as the query parameter `access_token` too: an `EventSource` cannot send an
/// `Authorization` header.
pub fn takes_query_token(path: &str) -> bool {
    path == "/api/v1/stream"
        || path
            .strip_prefix("/api/v1/sweeps/")
            .and_then(|rest| rest.strip_suffix("/stream"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        || path
            .strip_prefix("/api/v1/runs/")
            .and_then(|rest| {
                rest.strip_suffix("/logs/stream")
                    .or_else(|| rest.strip_suffix("/stream"))
            })
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The `access_token` query parameter of a request to a stream route.
fn query_token(req: &ServiceRequest) -> Option<String> {
    if !takes_query_token(req.path()) {
        return None;
    }
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()?
        .into_inner()
        .into_iter()
        .find_map(|(key, value)| (key == "access_token").then_some(value))
}

/// The token of a request: `Authorization: Bearer TOKEN`.
fn bearer(req: &ServiceRequest) -> Option<&str> {
    bearer_token(req.headers())
}

/// The token of `Authorization: Bearer TOKEN` in `headers`.
pub fn bearer_token(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    let value = headers
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The auth middleware (for `actix_web::middleware::from_fn`): with tokens
/// configured, a request that needs a role gets `401` without a valid token and `403`
/// with a token of too small a role; the caller is left in the request's extensions.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // A reference count; tokens are only looked at when some are configured.
    let tokens = req.app_data::<web::Data<Tokens>>().cloned();
    let admitted = match tokens.as_deref() {
        Some(tokens) if !tokens.is_empty() => admit(&req, tokens),
        _ => Ok(None),
    };
    match admitted {
        Ok(caller) => {
            if let Some(caller) = caller {
                req.extensions_mut().insert(caller);
            }
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        // A response rather than an error: it keeps the request, so the outer
        // middlewares (metrics, traces) still see which route was refused.
        Err(error) => Ok(req.error_response(error).map_into_right_body()),
    }
}

/// The caller of a request to a route that needs a role (`None` for open routes), or
/// why it is refused.
fn admit(req: &ServiceRequest, tokens: &Tokens) -> Result<Option<Caller>, ApiError> {
    let Some(needed) = required_role(req.method(), req.path()) else {
        return Ok(None);
    };
    // The header wins; the query parameter counts on the stream routes only.
    let presented = bearer(req).map(str::to_owned).or_else(|| query_token(req));
    let caller = match presented.as_deref() {
        None => {
            let how = if takes_query_token(req.path()) {
                "send `Authorization: Bearer TOKEN` or `?access_token=TOKEN`"
            } else {
                "send `Authorization: Bearer TOKEN`"
            };
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                format!("this route needs a token: {how}"),
            ));
        }
        Some(token) => tokens.verify(token).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "the token is not valid (unknown or revoked)",
            )
        })?,
    };
    if caller.role < needed {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "token `{}` has role `{}`; {} {} needs `{}`",
                caller.name,
                caller.role.name(),
                req.method(),
                req.path(),
                needed.name()
            ),
        ));
    }
    Ok(Some(caller))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_read_writes_need_write_and_health_is_open() {
        assert_eq!(required_role(&Method::GET, "/healthz"), None);
        assert_eq!(required_role(&Method::GET, "/readyz"), None);
        assert_eq!(required_role(&Method::GET, "/"), None);
        assert_eq!(
            required_role(&Method::GET, "/api/v1/runs"),
            Some(Role::Read)
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/runs"),
            Some(Role::Write)
        );
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/runs/x/artifacts"),
            Some(Role::Write)
        );
        assert_eq!(required_role(&Method::GET, "/apiary"), None);
        assert_eq!(required_role(&Method::GET, "/assets/dashboard.js"), None);
    }

    #[test]
    fn only_the_stream_routes_take_the_token_as_a_query_parameter() {
        assert!(takes_query_token("/api/v1/stream"));
        assert!(takes_query_token(
            "/api/v1/runs/0193a3c4-0000-7000-8000-000000000000/stream"
        ));
        assert!(takes_query_token(
            "/api/v1/runs/0193a3c4-0000-7000-8000-000000000000/logs/stream"
        ));
        for path in [
            "/api/v1/runs",
            "/api/v1/runs/x/logs",
            "/api/v1/runs//logs/stream",
            "/api/v1/runs/a/b/logs/stream",
            "/api/v1/runs/x/events",
            "/api/v1/runs//stream",
            "/api/v1/runs/a/b/stream",
            "/api/v1/streams",
            "/",
        ] {
            assert!(!takes_query_token(path), "{path}");
        }
    }
}
