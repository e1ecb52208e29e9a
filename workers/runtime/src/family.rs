//! What a family supplies to the runtime: a [`Handler`] that turns a batch of decoded records
//! into applied effects.
//!
//! The runtime owns everything else (polling, decoding, batching, retries, dead letters, offsets).
//! A handler never sees tombstones, heartbeats, schema-change or transaction records: the runtime
//! counts those as skipped. It sees [`Event::Change`] for Debezium row changes and truncates, and
//! [`Event::Service`] for records of the family's service topics.
//!
//! # Layout
//! - [`Handler`]: the one trait a family implements.
//! - [`Record`], [`Event`], [`Coordinates`]: what it receives.
//! - [`Outcome`]: what it reports per record.
//! - [`HandlerError`]: a failure of the whole batch, classified.
//! - [`Started`], [`Confirmation`]: a batch whose effects are started but not yet durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cdc_schemas::{ChangeEvent, Columns};

use crate::dependency::Dependency;
use crate::error::ErrorClass;

/// Where a record came from in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    /// Topic (with any configured prefix); shared by the records of a batch.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp, ms since the epoch, if the broker gave one.
    pub timestamp_ms: Option<i64>,
}

/// The decoded content of a record.
#[derive(Debug)]
pub enum Event {
    /// A Debezium row change (`c`/`u`/`d`/`r`) or truncate.
    Change(Box<ChangeEvent>),
    /// A record of one of the family's service topics: key and value bytes as produced.
    Service {
        /// Key bytes.
        key: Option<Vec<u8>>,
        /// Value bytes.
        value: Option<Vec<u8>>,
    },
}

/// One record of a batch, decoded.
#[derive(Debug)]
pub struct Record {
    /// Kafka coordinates.
    pub at: Coordinates,
    /// Where the record was first consumed, if it is a dead letter put back (its
    /// `cdc.dlq.original.*` headers): replays keep the identity of the first delivery. Read only
    /// for a handler that reads identities ([`Handler::READS_IDENTITY`]).
    pub origin: Option<Coordinates>,
    /// Decoded content.
    pub event: Event,
}

impl Record {
    /// The record's identity across deliveries: its first coordinates (for a replayed dead
    /// letter) or its own. Handlers that deduplicate by Kafka coordinates use this.
    pub fn identity(&self) -> &Coordinates {
        self.origin.as_ref().unwrap_or(&self.at)
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are applied.
    Applied,
    /// Not newer than what the state already reflects (idempotency fence); nothing applied.
    Stale,
    /// Nothing to do for this record (snapshot read, unknown table…); the reason is a metric label.
    Skipped(&'static str),
    /// The data is unusable: the record goes to the dead-letter topic with this message.
    Rejected(String),
}

/// A failure of a whole batch.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A dependency is unreachable or timed out: the runtime retries the batch with backoff.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// The batch cannot be applied as is: the runtime applies its records one by one and
    /// dead-letters those that fail on their own.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    /// The same failure, of `dependency`: its log line, `/readyz` reason and message name it
    /// (`redis 10.0.0.5:6379: connection refused`).
    pub fn at(self, dependency: &Dependency) -> Self {
        match self {
            HandlerError::Transient(e) => HandlerError::Transient(e.context(dependency.clone())),
            HandlerError::Permanent(e) => HandlerError::Permanent(e.context(dependency.clone())),
        }
    }

    /// The dependency that failed, if the family named it ([`HandlerError::at`]).
    pub fn dependency(&self) -> Option<&Dependency> {
        match self {
            HandlerError::Transient(e) | HandlerError::Permanent(e) => e.downcast_ref(),
        }
    }

    /// The class that decides retry or dead letter.
    pub fn class(&self) -> ErrorClass {
        match self {
            HandlerError::Transient(_) => ErrorClass::Transient,
            HandlerError::Permanent(_) => ErrorClass::Permanent,
        }
    }
}

/// Resolves once the effects of a [`Started`] batch are durable; an error means they may not be,
/// and the runtime applies the batch again with [`Handler::apply`].
pub type Confirmation = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A batch whose effects are started ([`Handler::start`]).
#[derive(Default)]
pub struct Started {
    /// One per record, as [`Handler::apply`] reports them.
    pub outcomes: Vec<Outcome>,
    /// What makes the effects durable; `None`: they are already.
    pub confirmation: Option<Confirmation>,
}

/// A family's logic: applies one partition's batch, in order.
///
/// Contract:
/// - `apply` returns one [`Outcome`] per record, in the same order, or an error for the batch.
/// - Effects must be idempotent: the runtime may call `apply` again with the same records after a
///   transient error, a crash or a replay, and the resulting state must be as if once.
/// - A transient error means *nothing* may be assumed applied; a permanent one is followed by
///   one-record batches of the same records.
/// - A handler whose store makes writes durable asynchronously (Meilisearch's tasks) may
///   implement [`Handler::start`] and [`Handler::UNCONFIRMED_BATCHES`] so that a partition does
///   not idle while its store catches up.
pub trait Handler: Send + Sync + 'static {
    /// The row-image columns the handler reads of `table` (all by default). Declaring a few, or
    /// none, makes decoding skip the rest: most of a wide row's decoding cost.
    ///
    /// The runtime asks with the table its topic is named after (`<prefix>.<db>.<table>`); a
    /// record whose `source.table` turns out different is decoded again with every column.
    fn row_columns(table: &str) -> Columns {
        let _ = table;
        Columns::All
    }

    /// Whether the handler reads [`Record::identity`]. When it does not, the runtime does not
    /// read a record's headers for the `cdc.dlq.original.*` coordinates of a dead letter put
    /// back ([`Record::origin`] stays `None`): librdkafka parses a record's headers into a list
    /// the first time they are asked for, ≈ 10 % of the CPU a cache-invalidation drain spends.
    const READS_IDENTITY: bool = true;

    /// How many batches of one partition may wait for their [`Confirmation`] at once. The
    /// runtime stores a batch's offset only once it is confirmed, and in offset order.
    const UNCONFIRMED_BATCHES: usize = 1;

    /// Whether the handler passes every effect through [`crate::shadow::Effects`], so that it
    /// can run in shadow mode (`RUN_MODE=shadow`); a worker refuses shadow mode otherwise.
    const SHADOW: bool = false;

    /// Applies `batch` and reports per-record outcomes.
    fn apply(
        &self,
        batch: &[Record],
    ) -> impl Future<Output = Result<Vec<Outcome>, HandlerError>> + Send;

    /// Starts `batch`'s effects and returns before they are durable, with the outcomes and
    /// their [`Confirmation`]; the runtime meanwhile starts the partition's next batches. The
    /// default is [`Handler::apply`], durable on return.
    ///
    /// A handler that returns a confirmation must have order-free effects (each rebuilt from
    /// the current source, say): when a confirmation fails, the runtime applies that batch again
    /// after later batches of its partition have started.
    fn start(
        &self,
        batch: &[Record],
    ) -> impl Future<Output = Result<Started, HandlerError>> + Send {
        async move {
            Ok(Started {
                outcomes: self.apply(batch).await?,
                confirmation: None,
            })
        }
    }
}
