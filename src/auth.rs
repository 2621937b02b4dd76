//! The tokens file: who may call the API, as SHA-256 hashes with a name and a role.
//!
//! Tokens live in a tokens file (`auth.tokens_file`, `--tokens-file`) that holds only
//! their SHA-256, each with a name and a role. `runyard token create` makes one,
//! prints it once and adds its hash ([`create_token`]); a server loads them
//! ([`Tokens::load`]) and checks a presented token in constant time against every
//! stored hash ([`Tokens::verify`]); neither the token nor its hash is ever logged.
//! Roles nest: `admin` may do what `write` may, `write` what `read` may. The HTTP
//! middleware that asks for them is [`crate::http::auth`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

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
}
