//! The one pooled HTTP client of a client command, bound to a server, and error
//! answers read as problems.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::common::{ClientError, Connection};
use super::config;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence on a connection; streams get a keep-alive comment every 15 s.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a whole answer (not streams): cancel and pause wait up to 30 s
/// server-side for the run to stop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// The one HTTP client of the process, bound to a server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The base URL without a trailing slash, as the user gave it (for messages).
    base: String,
    token: Option<String>,
}

impl Client {
    /// Resolves the server and token (flags, environment, config file, default) and
    /// builds the pooled client.
    pub fn new(connection: &Connection) -> Result<Self, ClientError> {
        let resolved = config::resolve(connection)?;
        let url = reqwest::Url::parse(&resolved.server).map_err(|e| {
            ClientError::Local(format!("invalid server URL `{}`: {e}", resolved.server))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ClientError::Local(format!(
                "invalid server URL `{}`: expected http://HOST[:PORT] or https://HOST[:PORT]",
                resolved.server
            )));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("runyard-cli/", env!("CARGO_PKG_VERSION")));
        // A proxy from the environment is for the outside world, never for this
        // machine's own server.
        if is_loopback(&url) {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Local(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: resolved.server.trim_end_matches('/').to_string(),
            token: resolved.token,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/`) with the token attached.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request with the whole-answer timeout; an error status becomes
    /// [`ClientError::Answer`].
    pub async fn send(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        self.send_streaming(builder.timeout(REQUEST_TIMEOUT)).await
    }

    /// Sends a request without a whole-answer timeout (for streams).
    pub async fn send_streaming(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(answer_error(response).await)
        }
    }

    /// `GET path` and its JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let response = self.send(self.request(Method::GET, path)).await?;
        self.json(response).await
    }

    /// The JSON body of a successful answer.
    pub async fn json(&self, response: Response) -> Result<Value, ClientError> {
        response.json().await.map_err(|e| {
            if e.is_decode() {
                ClientError::Local(format!(
                    "the server at {} answered something that is not JSON: {}",
                    self.base,
                    innermost(&e)
                ))
            } else {
                self.unreachable(&e)
            }
        })
    }

    /// The error for a request that got no (complete) answer.
    pub fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            server: self.base.clone(),
            reason: innermost(error),
        }
    }
}

/// Whether `url` names this machine.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The most specific cause in an error's chain, e.g. `Connection refused (os error
/// 111)` rather than reqwest's `error sending request for url (…)`.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = last.source() {
        last = source;
    }
    let text = last.to_string();
    if let Some(e) = error.downcast_ref::<reqwest::Error>() {
        if e.is_timeout() && !text.contains("timed out") {
            return format!("timed out ({text})");
        }
    }
    text
}

/// Turns an error answer into [`ClientError::Answer`], from its problem+json when it
/// has one.
async fn answer_error(response: Response) -> ClientError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(problem) if problem.get("code").is_some() => ClientError::Answer {
            status: status.as_u16(),
            code: problem["code"].as_str().unwrap_or("unknown").to_string(),
            detail: problem["detail"]
                .as_str()
                .or(problem["title"].as_str())
                .unwrap_or("no detail")
                .to_string(),
        },
        _ => ClientError::Answer {
            status: status.as_u16(),
            code: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            detail: short(&text),
        },
    }
}

/// At most one line and 200 characters of a non-problem answer body.
fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return "no detail".into();
    }
    let mut out: String = line.chars().take(200).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// Whether a status is worth retrying while following a stream (the server is
/// restarting or overloaded).
pub(super) fn retryable(status: u16) -> bool {
    StatusCode::from_u16(status).is_ok_and(|s| s.is_server_error())
}
