//! Where the client's server and token come from, each overriding the one after:
//! `--server`/`--token`, `RUNYARD_SERVER`/`RUNYARD_TOKEN`, the config file, the default.
//!
//! The config file is `$RUNYARD_CLI_CONFIG` when set (it must exist; set it empty for
//! none), else `$XDG_CONFIG_HOME/runyard/cli.toml` or `~/.config/runyard/cli.toml` when
//! present. It is TOML with the keys `server` and `token`.

use std::path::{Path, PathBuf};

use figment::providers::{Format as _, Toml};
use figment::Figment;
use serde::Deserialize;

use super::common::{ClientError, Connection};

/// The server used when nothing names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "RUNYARD_CLI_CONFIG";

/// The keys of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The server's base URL.
    pub server: Option<String>,
    /// The bearer token.
    pub token: Option<String>,
}

/// The server and token a command uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The server's base URL.
    pub server: String,
    /// The bearer token, if any.
    pub token: Option<String>,
}

/// The config file to read, if any: `(path, whether it must exist)`.
pub fn config_path() -> Option<(PathBuf, bool)> {
    if let Some(explicit) = std::env::var_os(CONFIG_ENV) {
        return (!explicit.is_empty()).then(|| (PathBuf::from(explicit), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some((base.join("runyard").join("cli.toml"), false))
}

/// Reads and checks one config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Local(format!("cannot read config file {}: {e}", path.display()))
    })?;
    Figment::from(Toml::string(&text))
        .extract::<FileConfig>()
        .map_err(|e| ClientError::Local(format!("invalid config file {}: {e}", path.display())))
}

/// Layers the flags and environment (already merged by clap) over the config file and
/// the default.
pub fn resolve(connection: &Connection) -> Result<Resolved, ClientError> {
    let given = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
    let (mut server, mut token) = (given(&connection.server), given(&connection.token));
    if server.is_none() || token.is_none() {
        if let Some((path, required)) = config_path() {
            if required || path.is_file() {
                let file = read_file(&path)?;
                server = server.or(given(&file.server));
                token = token.or(given(&file.token));
            }
        }
    }
    Ok(Resolved {
        server: server.unwrap_or_else(|| DEFAULT_SERVER.to_string()),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_names_unknown_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cli.toml");
        std::fs::write(&path, "server = \"http://h:1\"\ntokn = \"x\"\n").expect("write");
        let err = read_file(&path).expect_err("unknown key");
        assert!(err.to_string().contains("tokn"), "{err}");
        std::fs::write(&path, "server = \"http://h:1\"\ntoken = \"t\"\n").expect("write");
        let file = read_file(&path).expect("valid");
        assert_eq!(file.server.as_deref(), Some("http://h:1"));
        assert_eq!(file.token.as_deref(), Some("t"));
    }

    #[test]
    fn a_missing_config_file_is_named() {
        let err = read_file(Path::new("/nonexistent/cli.toml")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/cli.toml"), "{err}");
    }
}
