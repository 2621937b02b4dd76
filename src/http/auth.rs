//! Bearer-token auth.
//!
//! Tokens live in a tokens file (`auth.tokens_file`, `--tokens-file`) that holds only
//! their SHA-256, each with a name and a role. `runyard token create` makes one,
//! prints it once and adds its hash. A request's token is hashed and compared in
//! constant time with every stored hash; neither the token nor its hash is ever
//! logged. Roles nest: `admin` may do what `write` may, `write` what `read` may.
//!
//! What each request needs ([`required_role`]): `/healthz` and `/readyz` are open, and
//! so are the dashboard page `/` and its `/assets/` (they hold no data: the page reads
//! the API with the token the person enters); under `/api/`, reads (`GET`, `HEAD`) need
//! `read` and everything else `write`. Handlers that need `admin` check the [`Caller`]
//! the middleware leaves in the request's extensions.
//!
//! The token comes in `Authorization: Bearer TOKEN`. The three stream routes also take it
//! as the query parameter `access_token` ([`takes_query_token`]), because a browser's
//! `EventSource` cannot send headers; it is checked the same way, and the access log
//! writes paths without their query, so it is not logged either.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{ApiError, ErrorCode};

/// What a token may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read runs, events, streams, slots.
    Read,
    /// Also submit, cancel, pause, resume, delete artifacts.
    Write,
    /// Also what is reserved to operators (command runs).
    Admin,
}

impl Role {
    /// The role's name, as written in the tokens file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// Who made a request, as the auth middleware found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: Role,
}

/// A problem with the tokens file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file cannot be read or written.
    #[error("tokens file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid tokens file.
    #[error("tokens file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
}

/// One entry of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A name for people and logs (never the token).
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// The tokens a server accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, Role, [u8; 32])>,
}

/// Prefix of every token, so a leaked one is easy to recognize and search for.
pub const TOKEN_PREFIX: &str = "ry_";

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn read_file(path: &Path) -> Result<TokensFile, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokensFile::default()),
        Err(source) => {
            return Err(AuthError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    toml::from_str(&text).map_err(|e| AuthError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string().trim().replace('\n', " "),
    })
}

impl Tokens {
    /// Reads a tokens file; a missing file holds no token.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let file = read_file(path)?;
        let mut entries = Vec::with_capacity(file.tokens.len());
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let invalid = |reason: String| AuthError::Invalid {
                path: path.to_path_buf(),
                reason: format!("tokens[{i}] ({}): {reason}", entry.name),
            };
            let bytes = hex::decode(&entry.sha256)
                .map_err(|e| invalid(format!("sha256 is not hex: {e}")))?;
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| invalid("sha256 must be 64 hex digits".into()))?;
            entries.push((entry.name, entry.role, hash));
        }
        Ok(Self { entries })
    }

    /// Whether no token is configured (the server then listens on loopback only).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The caller a presented token belongs to. Every stored hash is compared, in
    /// constant time, whatever matches first.
    pub fn verify(&self, presented: &str) -> Option<Caller> {
        let hash = digest(presented);
        let mut found = None;
        for (name, role, stored) in &self.entries {
            if bool::from(stored.ct_eq(&hash)) && found.is_none() {
                found = Some(Caller {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }
}

/// Makes a new token named `name` with `role`, adds its hash to the tokens file at
/// `path` (created with mode 0600 when missing; written to a temporary file and
/// renamed, so a failure leaves the old file), and returns the token: it is shown
/// once and stored nowhere.
pub fn create_token(path: &Path, name: &str, role: Role) -> Result<String, AuthError> {
    let invalid = |reason: String| AuthError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(invalid(format!(
            "token name `{name}`: use 1 to 64 of A-Z a-z 0-9 - _ . @"
        )));
    }
    let mut file = read_file(path)?;
    if file.tokens.iter().any(|t| t.name == name) {
        return Err(invalid(format!("a token named `{name}` exists already")));
    }
    let secret: [u8; 32] = rand::random();
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    file.tokens.push(TokenEntry {
        name: name.to_string(),
        role,
        sha256: hex::encode(digest(&token)),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let text = toml::to_string(&file).map_err(|e| invalid(e.to_string()))?;
    let io = |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    temp.write_all(
        b"# runyard tokens: SHA-256 hashes only; add one with `runyard token create`.\n",
    )
    .and_then(|()| temp.write_all(text.as_bytes()))
    .and_then(|()| temp.as_file().sync_all())
    .map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    // The rename is durable only once the directory that names the file is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(token)
}

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

/// Whether `path` is one of the three stream routes (`/api/v1/stream`,
/// `/api/v1/runs/{id}/stream`, `/api/v1/runs/{id}/logs/stream`), the only ones that take
/// the token as the query parameter `access_token` too: an `EventSource` cannot send an
/// `Authorization` header.
pub fn takes_query_token(path: &str) -> bool {
    path == "/api/v1/stream"
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
    fn created_tokens_verify_with_their_role_and_others_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.toml");
        let reader = create_token(&path, "ci", Role::Read).expect("create");
        let admin = create_token(&path, "ops", Role::Admin).expect("create");
        assert!(reader.starts_with(TOKEN_PREFIX) && reader.len() == 67);
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(
            !text.contains(&reader) && !text.contains(&admin),
            "only hashes"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let tokens = Tokens::load(&path).expect("load");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.verify(&reader).map(|c| c.role), Some(Role::Read));
        assert_eq!(
            tokens.verify(&admin),
            Some(Caller {
                name: "ops".into(),
                role: Role::Admin
            })
        );
        assert_eq!(tokens.verify("ry_00"), None);
        assert_eq!(tokens.verify(""), None);
        let again = create_token(&path, "ci", Role::Write).expect_err("same name");
        assert!(again.to_string().contains("exists already"), "{again}");
        let bad = create_token(&path, "a b", Role::Write).expect_err("bad name");
        assert!(bad.to_string().contains("token name"), "{bad}");
    }

    #[test]
    fn a_missing_file_holds_no_token_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Tokens::load(&dir.path().join("none.toml"))
            .expect("missing is empty")
            .is_empty());
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[[tokens]]\nname = \"x\"\nrole = \"root\"\nsha256 = \"00\"\ncreated_at = \"\"\n",
        )
        .expect("write");
        let err = Tokens::load(&path).expect_err("bad role").to_string();
        assert!(err.contains("bad.toml") && err.contains("root"), "{err}");
        std::fs::write(
            &path,
            "[[tokens]]\nname = \"x\"\nrole = \"read\"\nsha256 = \"00\"\ncreated_at = \"\"\n",
        )
        .expect("write");
        let err = Tokens::load(&path).expect_err("short hash").to_string();
        assert!(
            err.contains("tokens[0] (x)") && err.contains("64 hex"),
            "{err}"
        );
    }

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
