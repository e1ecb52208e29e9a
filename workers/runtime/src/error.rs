//! Error classes and the runtime's own errors.
//!
//! One classification decides every failure's path: [`ErrorClass::Transient`] is retried in place
//! with backoff (the partition waits), [`ErrorClass::Permanent`] sends the record to the family's
//! dead-letter topic and processing goes on, [`ErrorClass::Fatal`] stops the worker (bad
//! configuration, a broker that refuses our client).
//!
//! # Layout
//! - [`ErrorClass`]: the three paths.
//! - [`Stage`]: where in the pipeline a record failed (a metric label and a DLQ header).
//! - [`RuntimeError`]: failures that stop a worker, named by the step that failed.

use std::fmt;

/// What a failure means for the record that hit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retry in place with backoff; never dead-lettered, nothing skipped.
    Transient,
    /// Dead-letter the record and continue.
    Permanent,
    /// Stop the worker.
    Fatal,
}

impl ErrorClass {
    /// Lower-case name used in metrics labels and DLQ headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pipeline step at which a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Bytes → event (schema crate, registry).
    Decode,
    /// Event → effects (family handler).
    Apply,
    /// Producing to the dead-letter topic.
    DeadLetter,
    /// Storing or committing offsets.
    Commit,
}

impl Stage {
    /// Lower-case name used in metrics labels and DLQ headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Apply => "apply",
            Stage::DeadLetter => "dead_letter",
            Stage::Commit => "commit",
        }
    }
}

/// A failure that stops the worker.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The family files in `topics/` are invalid.
    #[error(transparent)]
    Family(#[from] cdc_topics::FamilyError),
    /// librdkafka refused to create a client (usually an invalid property, named in the message).
    #[error("creating the Kafka {client}: {source}")]
    KafkaClient {
        /// Which client: consumer, producer, admin.
        client: &'static str,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// Subscribing to the family's topics failed.
    #[error("subscribing to {topics}: {source}")]
    Subscribe {
        /// The topics.
        topics: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// The HTTP server for metrics and probes could not start.
    #[error("serving metrics and probes on {addr}: {source}")]
    Http {
        /// Address.
        addr: std::net::SocketAddr,
        /// I/O error.
        source: std::io::Error,
    },
    /// The consumer's poll thread stopped unexpectedly.
    #[error("the poll thread stopped: {0}")]
    PollThread(String),
    /// Creating topics failed.
    #[error("provisioning topic {topic}: {reason}")]
    Provision {
        /// Topic.
        topic: String,
        /// Broker's answer.
        reason: String,
    },
    /// Setting up a sink (Redis, MySQL) failed at start.
    #[error("connecting to {what}: {source:#}")]
    Sink {
        /// Which sink.
        what: &'static str,
        /// Cause.
        source: anyhow::Error,
    },
}

impl RuntimeError {
    /// Every runtime error stops the worker.
    pub fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}
