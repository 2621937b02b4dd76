//! Layered configuration: `config/default.toml` (built in), then an optional file,
//! then `RUNYARD__SECTION__KEY` environment variables, then command-line flags. A bad
//! value names its key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The defaults, the same text as `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of configuration environment variables; `__` separates section and key.
pub const ENV_PREFIX: &str = "RUNYARD__";

/// Smallest `server.max_body_bytes` accepted: a run spec needs some room.
const MIN_BODY_BYTES: usize = 1 << 10;

/// Largest `server.max_body_bytes` accepted (1 GiB): bodies are read into memory.
const MAX_BODY_BYTES: usize = 1 << 30;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP server and data directory.
    pub server: ServerConfig,
    /// Slots and progress sampling.
    pub train: TrainConfig,
    /// Data files.
    pub data: DataConfig,
    /// The event log.
    pub journal: JournalConfig,
    /// Logging.
    pub log: LogConfig,
    /// Bearer tokens.
    #[serde(default)]
    pub auth: AuthConfig,
    /// OpenTelemetry traces.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Command runs and their logs.
    #[serde(default)]
    pub runs: RunsConfig,
    /// Executors other than the server's own slots.
    #[serde(default)]
    pub executors: ExecutorsConfig,
}

/// `[executors]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorsConfig {
    /// `[executors.slurm]`: runs with `"executor": "slurm"`.
    #[serde(default)]
    pub slurm: SlurmConfig,
}

/// `[executors.slurm]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// Whether runs with `"executor": "slurm"` are accepted.
    #[serde(default)]
    pub enabled: bool,
    /// The partition of jobs whose spec names none; absent: Slurm's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// A directory the server and every compute node see at the same path: each
    /// job's script, its worker's journal, checkpoints and artifacts. Required when
    /// enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_dir: Option<PathBuf>,
    /// The `runyard` binary on the compute nodes; absent: this server's own path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_bin: Option<PathBuf>,
    /// How often a job's state is asked of Slurm (`squeue`) while its worker cannot be
    /// reached, or has not registered yet, in milliseconds. Workers are polled every
    /// tick (`train.tick_ms`).
    #[serde(default = "default_slurm_poll_ms")]
    pub poll_interval_ms: u64,
    /// Where workers register with this server, e.g. `http://head-node:8080`; absent:
    /// the address the server listens on (its host name when it listens on all
    /// addresses). Workers also register through `worker.json` in the shared
    /// directory, which is enough on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Extra `sbatch` arguments for every job, e.g. `["--nice=10"]`.
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    /// Seconds between `scancel --signal=TERM` (the worker checkpoints and stops) and
    /// `scancel` (Slurm kills the job).
    #[serde(default = "default_slurm_grace_secs")]
    pub grace_secs: u64,
    /// Jobs the cluster may lose for one run (node failure, preemption) before the
    /// run fails.
    #[serde(default = "default_slurm_max_lost")]
    pub max_lost: u32,
}

fn default_slurm_poll_ms() -> u64 {
    2000
}

fn default_slurm_grace_secs() -> u64 {
    30
}

fn default_slurm_max_lost() -> u32 {
    5
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            partition: None,
            shared_dir: None,
            worker_bin: None,
            poll_interval_ms: default_slurm_poll_ms(),
            server_url: None,
            sbatch_args: Vec::new(),
            grace_secs: default_slurm_grace_secs(),
            max_lost: default_slurm_max_lost(),
        }
    }
}

impl SlurmConfig {
    /// How often Slurm is asked about a job whose worker is not answering.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// `[runs]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsConfig {
    /// Whether runs of `"kind": "command"` are accepted. A command run executes a
    /// program on this machine as the server's user, so it is off unless enabled here
    /// or with `runyard serve --allow-commands`; with tokens configured it also needs
    /// an `admin` token.
    #[serde(default)]
    pub allow_commands: bool,
    /// Size at which a command run's `stdout.log` or `stderr.log` is rotated.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Rotated log files kept per stream (`stdout.log.1` .. `.N`).
    #[serde(default = "default_log_keep")]
    pub log_keep: u32,
}

fn default_log_max_bytes() -> u64 {
    10 << 20
}

fn default_log_keep() -> u32 {
    3
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self {
            allow_commands: false,
            log_max_bytes: default_log_max_bytes(),
            log_keep: default_log_keep(),
        }
    }
}

/// Environment variable naming the OTLP endpoint, read when `telemetry.otlp_endpoint`
/// is not set (the OpenTelemetry standard one).
pub const OTEL_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP (protobuf) receiver, e.g. `http://localhost:4318`;
    /// spans go to its `/v1/traces`. Absent: no traces. Falls back to
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Longest time a finished span waits before it is sent, in milliseconds.
    #[serde(default = "default_export_interval_ms")]
    pub export_interval_ms: u64,
}

fn default_export_interval_ms() -> u64 {
    5000
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            export_interval_ms: default_export_interval_ms(),
        }
    }
}

impl TelemetryConfig {
    /// The batch export interval.
    pub fn export_interval(&self) -> Duration {
        Duration::from_millis(self.export_interval_ms)
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The tokens file (see `runyard token create`); absent or holding no token: no
    /// auth, and the server listens on loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
}

/// `[journal]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Events between state snapshots (replay starts from the newest); 0 disables them.
    pub snapshot_every: u64,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Directories data files in run specs may be read from; empty means
    /// `DATA_DIR/datasets`.
    pub roots: Vec<PathBuf>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub bind: SocketAddr,
    /// Where the journal and run artifacts live.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes; a larger one is a `413`.
    pub max_body_bytes: usize,
    /// Interval between keep-alive comments on event streams, in milliseconds; a
    /// stream client that has not taken its events for this long is disconnected.
    pub sse_keep_alive_ms: u64,
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// CPU slots when there is no CUDA device.
    pub cpu_slots: u32,
    /// Ticker period in milliseconds.
    pub tick_ms: u64,
    /// Torch threads for CPU training: 0 shares the machine's cores among the CPU
    /// slots.
    pub threads_per_slot: u32,
}

impl TrainConfig {
    /// Torch intra-op threads for CPU training.
    pub fn cpu_threads(&self) -> u32 {
        if self.threads_per_slot > 0 {
            return self.threads_per_slot;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        (cores / self.cpu_slots.max(1)).max(1)
    }

    /// The ticker period.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter directives.
    pub filter: String,
}

/// Values given on the command line, which win over every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--bind`.
    pub bind: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--tokens-file`.
    pub tokens_file: Option<PathBuf>,
    /// `--allow-commands`.
    pub allow_commands: bool,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or a value has the wrong type.
    #[error("{0}")]
    Load(String),
    /// A value is out of its allowed range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `train.cpu_slots`.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Loads the layers from the process environment.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(
            file,
            overrides,
            Env::prefixed(ENV_PREFIX).split("__"),
        ))
    }

    fn figment(file: Option<&Path>, overrides: &Overrides, env: Env) -> Figment {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        // The OpenTelemetry variable comes first, so runyard's own layers win over it.
        figment = figment.merge(
            Env::raw()
                .filter(|key| key == OTEL_ENDPOINT_VAR)
                .map(|_| "telemetry.otlp_endpoint".into()),
        );
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(env);
        if let Some(bind) = overrides.bind {
            figment = figment.merge(Serialized::default("server.bind", bind.to_string()));
        }
        if let Some(file) = &overrides.tokens_file {
            figment = figment.merge(Serialized::default("auth.tokens_file", file));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("server.data_dir", dir));
        }
        if overrides.allow_commands {
            figment = figment.merge(Serialized::default("runs.allow_commands", true));
        }
        figment
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            ConfigError::Load(messages.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The data roots in force: `data.roots`, or `DATA_DIR/datasets` when empty.
    pub fn data_roots(&self) -> Vec<PathBuf> {
        if self.data.roots.is_empty() {
            vec![self.server.data_dir.join("datasets")]
        } else {
            self.data.roots.clone()
        }
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Self {
        Self::from_figment(Figment::from(Toml::string(DEFAULT_TOML)))
            .expect("config/default.toml is valid")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.train.cpu_slots) {
            return Err(ConfigError::Invalid {
                key: "train.cpu_slots",
                reason: format!("must be between 1 and 1024, got {}", self.train.cpu_slots),
            });
        }
        if self.train.threads_per_slot > 1024 {
            return Err(ConfigError::Invalid {
                key: "train.threads_per_slot",
                reason: format!(
                    "must be between 0 and 1024, got {}",
                    self.train.threads_per_slot
                ),
            });
        }
        if !(10..=60_000).contains(&self.train.tick_ms) {
            return Err(ConfigError::Invalid {
                key: "train.tick_ms",
                reason: format!("must be between 10 and 60000, got {}", self.train.tick_ms),
            });
        }
        if !(10..=3_600_000).contains(&self.server.sse_keep_alive_ms) {
            return Err(ConfigError::Invalid {
                key: "server.sse_keep_alive_ms",
                reason: format!(
                    "must be between 10 and 3600000, got {}",
                    self.server.sse_keep_alive_ms
                ),
            });
        }
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&self.server.max_body_bytes) {
            return Err(ConfigError::Invalid {
                key: "server.max_body_bytes",
                reason: format!(
                    "must be between {MIN_BODY_BYTES} and {MAX_BODY_BYTES}, got {}",
                    self.server.max_body_bytes
                ),
            });
        }
        if !((64 << 10)..=(1 << 40)).contains(&self.runs.log_max_bytes) {
            return Err(ConfigError::Invalid {
                key: "runs.log_max_bytes",
                reason: format!(
                    "must be between 65536 and 1099511627776, got {}",
                    self.runs.log_max_bytes
                ),
            });
        }
        if self.runs.log_keep > 100 {
            return Err(ConfigError::Invalid {
                key: "runs.log_keep",
                reason: format!("must be between 0 and 100, got {}", self.runs.log_keep),
            });
        }
        let slurm = &self.executors.slurm;
        if slurm.enabled {
            match &slurm.shared_dir {
                None => {
                    return Err(ConfigError::Invalid {
                        key: "executors.slurm.shared_dir",
                        reason: "is required when executors.slurm.enabled is true: a directory \
                                 the server and every compute node see at the same path"
                            .into(),
                    })
                }
                Some(dir) if !dir.is_absolute() => {
                    return Err(ConfigError::Invalid {
                        key: "executors.slurm.shared_dir",
                        reason: format!("must be an absolute path, got {}", dir.display()),
                    })
                }
                Some(_) => {}
            }
        }
        if !(100..=600_000).contains(&slurm.poll_interval_ms) {
            return Err(ConfigError::Invalid {
                key: "executors.slurm.poll_interval_ms",
                reason: format!(
                    "must be between 100 and 600000, got {}",
                    slurm.poll_interval_ms
                ),
            });
        }
        if slurm.grace_secs > 3600 {
            return Err(ConfigError::Invalid {
                key: "executors.slurm.grace_secs",
                reason: format!("must be between 0 and 3600, got {}", slurm.grace_secs),
            });
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "server.data_dir",
                reason: "must not be empty".into(),
            });
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            let url = reqwest::Url::parse(endpoint).map_err(|e| ConfigError::Invalid {
                key: "telemetry.otlp_endpoint",
                reason: format!("`{endpoint}` is not a URL: {e}"),
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid {
                    key: "telemetry.otlp_endpoint",
                    reason: format!("must be an http:// or https:// URL, got `{endpoint}`"),
                });
            }
        }
        if !(10..=600_000).contains(&self.telemetry.export_interval_ms) {
            return Err(ConfigError::Invalid {
                key: "telemetry.export_interval_ms",
                reason: format!(
                    "must be between 10 and 600000, got {}",
                    self.telemetry.export_interval_ms
                ),
            });
        }
        if let Err(e) = self.log.filter.parse::<tracing_subscriber::EnvFilter>() {
            return Err(ConfigError::Invalid {
                key: "log.filter",
                reason: e.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::result_large_err)] // figment::Jail's own error type
    fn load_with(
        vars: &[(&str, &str)],
        file: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        // Jail keeps the environment change local to this closure.
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = Some(Config::load(file, overrides));
            Ok(())
        });
        out.expect("jail ran")
    }

    #[test]
    fn defaults_load() {
        let config = Config::defaults();
        assert_eq!(config.server.bind, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(config.train.cpu_slots, 1);
        assert_eq!(config.train.tick(), Duration::from_millis(200));
        assert_eq!(config.server.max_body_bytes, 1 << 20);
    }

    #[test]
    fn environment_then_flags_override() {
        let config = load_with(
            &[
                ("RUNYARD__TRAIN__CPU_SLOTS", "3"),
                ("RUNYARD__SERVER__BIND", "127.0.0.1:9000"),
            ],
            None,
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(config.train.cpu_slots, 3);
        assert_eq!(config.server.bind.port(), 9000);
        let overrides = Overrides {
            bind: Some("127.0.0.1:0".parse().expect("addr")),
            data_dir: Some("/tmp/x".into()),
            tokens_file: None,
            allow_commands: true,
        };
        let config = load_with(
            &[("RUNYARD__SERVER__BIND", "127.0.0.1:9000")],
            None,
            &overrides,
        )
        .expect("valid");
        assert_eq!(config.server.bind.port(), 0);
        assert_eq!(config.server.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn traces_are_off_by_default_and_on_with_either_endpoint_variable() {
        let config = load_with(&[], None, &Overrides::default()).expect("valid");
        assert_eq!(config.telemetry.otlp_endpoint, None);
        assert_eq!(config.telemetry.export_interval(), Duration::from_secs(5));
        let config = load_with(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")],
            None,
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            config.telemetry.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        // runyard's own variable wins over the standard one.
        let config = load_with(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("RUNYARD__TELEMETRY__OTLP_ENDPOINT", "http://mine:4318"),
                ("RUNYARD__TELEMETRY__EXPORT_INTERVAL_MS", "100"),
            ],
            None,
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            config.telemetry.otlp_endpoint.as_deref(),
            Some("http://mine:4318")
        );
        assert_eq!(config.telemetry.export_interval_ms, 100);
        for bad in ["collector:4318", "not a url", "ftp://collector"] {
            let err = load_with(
                &[("RUNYARD__TELEMETRY__OTLP_ENDPOINT", bad)],
                None,
                &Overrides::default(),
            )
            .expect_err(bad);
            assert!(err.to_string().contains("telemetry.otlp_endpoint"), "{err}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = load_with(
            &[("RUNYARD__TRAIN__CPU_SLOTS", "0")],
            None,
            &Overrides::default(),
        )
        .expect_err("zero slots");
        assert!(err.to_string().contains("train.cpu_slots"), "{err}");
        let err = load_with(
            &[("RUNYARD__SERVER__MAX_BODY_BYTES", "10")],
            None,
            &Overrides::default(),
        )
        .expect_err("tiny body limit");
        assert!(err.to_string().contains("server.max_body_bytes"), "{err}");
        let err = load_with(
            &[("RUNYARD__SERVER__BIND", "nowhere")],
            None,
            &Overrides::default(),
        )
        .expect_err("bad address");
        assert!(
            err.to_string().to_lowercase().contains("server.bind"),
            "{err}"
        );
        let err = load_with(
            &[("RUNYARD__TRAIN__SLOTS", "2")],
            None,
            &Overrides::default(),
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("slots"), "{err}");
        let err = load_with(
            &[],
            Some(Path::new("/nonexistent/runyard.toml")),
            &Overrides::default(),
        )
        .expect_err("missing file");
        assert!(
            err.to_string().contains("/nonexistent/runyard.toml"),
            "{err}"
        );
    }
}
