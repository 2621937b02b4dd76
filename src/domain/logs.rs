//! Which of a command run's output streams a log line came from.

use serde::{Deserialize, Serialize};

/// Which of a command's output streams.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The command's standard output.
    #[default]
    Stdout,
    /// The command's standard error.
    Stderr,
}

impl LogStream {
    /// Both streams.
    pub const ALL: [LogStream; 2] = [LogStream::Stdout, LogStream::Stderr];

    /// The name used in queries and on the command line: `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    /// The stream named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}
