//! The tool's failures and the exit code each maps to, so scripts can tell them apart.

use std::process::ExitCode;

/// Exit codes (also in `dlq --help`).
pub mod exit {
    /// Everything asked for was done.
    pub const OK: u8 = 0;
    /// An unexpected failure.
    pub const FAILURE: u8 = 1;
    /// Bad usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// Done, but some records failed again and went back to the DLQ.
    pub const PARTIAL: u8 = 3;
    /// The broker could not be reached.
    pub const BROKER_UNREACHABLE: u8 = 4;
    /// Refused: confirmation (`--yes`) missing, the group still has active members, a forward
    /// rewind without `--force`, or an audit trail that cannot be written.
    pub const REFUSED: u8 = 5;
    /// A dependency (Redis, MySQL, the broker) stayed unavailable past `--timeout`; the letter
    /// in hand stays pending, the progress before it is saved.
    pub const UNAVAILABLE: u8 = 6;
    /// Interrupted (SIGINT, SIGTERM) after finishing the letters in hand; progress is saved, and
    /// the same command resumes.
    pub const INTERRUPTED: u8 = 130;
}

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// Bad arguments that clap could not catch (unknown family, inconsistent filters).
    #[error("{0}")]
    Usage(String),
    /// No broker answered.
    #[error("cannot reach the broker at {brokers}: {reason}")]
    BrokerUnreachable {
        /// Bootstrap servers.
        brokers: String,
        /// What failed.
        reason: String,
    },
    /// The command would change state and needs an explicit yes, or it is unsafe now.
    #[error("{0}")]
    Refused(String),
    /// A dependency stayed unavailable past `--timeout`.
    #[error("gave up after {timeout:?}: {waiting_for}")]
    Unavailable {
        /// How long it waited.
        timeout: std::time::Duration,
        /// What it waited for: the dependency, its address, the last error.
        waiting_for: String,
    },
    /// Stopped by a signal; what was done is saved.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl DlqError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            DlqError::Usage(_) => exit::USAGE,
            DlqError::BrokerUnreachable { .. } => exit::BROKER_UNREACHABLE,
            DlqError::Refused(_) => exit::REFUSED,
            DlqError::Unavailable { .. } => exit::UNAVAILABLE,
            DlqError::Interrupted(_) => exit::INTERRUPTED,
            DlqError::Other(_) => exit::FAILURE,
        })
    }
}

impl From<rdkafka::error::KafkaError> for DlqError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        DlqError::Other(e.into())
    }
}
