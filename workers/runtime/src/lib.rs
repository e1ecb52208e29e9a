//! The consumer engine every worker family shares.
//!
//! A family supplies its [`cdc_topics::Family`] (from `topics/`) and a [`Handler`]; the runtime
//! does the rest: rdkafka consumption with at-least-once offset handling, per-partition ordered
//! batches processed in parallel, decoding through `cdc-schemas`, retries with backoff for
//! transient failures, dead letters for permanent ones, Prometheus metrics, probes, JSON logs and
//! graceful shutdown. It is not where any family's business logic lives.
//!
//! Data flows one way: broker → [`engine`] (poll, per-partition order) → [`pipeline`] (decode,
//! apply, dead-letter) → handler → sink → offsets stored → committed.
//!
//! # Layout
//! - [`cli`]: the shared command line of family binaries.
//! - [`config`]: settings from the environment, validated, redacted.
//! - [`worker`]: start/run one family's worker.
//! - [`engine`]: the poll thread and partition tasks.
//! - [`pipeline`]: one batch's path; also the replay entry point.
//! - [`family`]: the [`Handler`] trait and what it receives.
//! - [`decode`]: records → events, with the schema registry.
//! - [`dependency`]: the services a worker talks to, named without credentials.
//! - [`dead_letter`]: the DLQ producer and its headers.
//! - [`applied`]: the ledger of applied messages (exactly-once SQL effects) and the fleet's
//!   own tables' migrations.
//! - [`backlog`]: the dead letters pending in a DLQ (the `dlq` tool and the DLQ metrics).
//! - [`kafka`]: librdkafka settings.
//! - [`provision`]: topic creation from `topics/`.
//! - [`shadow`]: shadow mode: effects planned and reported, not applied; the comparison.
//! - [`sink`]: Redis connection and error classification.
//! - [`mysql`]: the MySQL/MariaDB pool (strict sessions) and error classification.
//! - [`observe`]: metrics, probes, logging.
//! - [`watch`]: the topics' existence (readiness) and the DLQ's depth (metrics), in the background.
//! - [`error`]: error classes and fatal errors.

pub mod applied;
pub mod backlog;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod decode;
pub mod dependency;
pub mod engine;
pub mod error;
pub mod family;
pub mod kafka;
pub mod mysql;
pub mod observe;
pub mod pipeline;
pub mod provision;
pub mod shadow;
pub mod sink;
pub mod watch;
pub mod worker;

pub use config::{RunMode, WorkerConfig};
pub use dependency::Dependency;
pub use error::{ErrorClass, RuntimeError, Stage};
pub use family::{
    Confirmation, Coordinates, Event, Handler, HandlerError, Outcome, Record, Started,
};
pub use worker::{Running, run, start};

/// `cell`'s value, made by `init` on first use (a client most workers never need); a failed
/// `init` leaves the cell empty for the next try. std's `OnceLock::get_or_try_init` is unstable.
pub(crate) fn get_or_try_init<T, E>(
    cell: &std::sync::OnceLock<T>,
    init: impl FnOnce() -> Result<T, E>,
) -> Result<&T, E> {
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    let value = init()?;
    Ok(cell.get_or_init(|| value))
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
