//! The cache-invalidation family: deletes the Redis cache keys of changed `chii_*` rows, exactly
//! as server-private's `bin/mq.ts` does (same tables, operations and key formats), with the
//! runtime's retries, dead letters and metrics around it.
//!
//! Deleting a cache key is idempotent and order-insensitive (the next read refills it from
//! MySQL), so duplicates, redeliveries and replays leave the same state; no fencing is needed.
//!
//! # Layout
//! - [`keys`]: the key formats.
//! - [`tables`]: table → operations → keys, as data.
//! - [`plan`]: one change → the keys to delete (pure).
//! - [`CacheInvalidation`]: the [`Handler`]: a batch's keys, de-duplicated, deleted in one
//!   pipelined round trip (in shadow mode: each record's keys planned as its own `DEL`s).

pub mod keys;
pub mod tables;

use std::collections::BTreeSet;

use cdc_runtime::shadow::{Effects, compare::Compared};
use cdc_runtime::{Dependency, Event, Handler, HandlerError, Outcome, Record, sink};
use cdc_schemas::{ChangeEvent, Columns, Op, Row, RowChange, Value};
use redis::aio::ConnectionManager;

use crate::keys::{Ids, render};
use crate::tables::{IdFrom, rule};

/// The family's name in `topics/`.
pub const FAMILY: &str = "cache-invalidation";

/// Keys per `DEL` command in the pipeline.
const KEYS_PER_DEL: usize = 512;

/// What one change asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Delete these keys.
    Delete(Vec<String>),
    /// Nothing to do, for this reason (a metric label).
    Skip(&'static str),
}

/// The keys `change` invalidates (with `prefix` in front), or why none.
///
/// Errors are permanent: the change lacks the id its table's rule needs.
pub fn plan(change: &RowChange, prefix: &str) -> Result<Plan, String> {
    let Some(rule) = rule(change.table()) else {
        return Ok(Plan::Skip("unknown_table"));
    };
    if change.op == Op::Read {
        return Ok(Plan::Skip("snapshot"));
    }
    if !rule.ops.contains(&change.op) {
        return Ok(Plan::Skip("op_without_effect"));
    }
    let ids = match rule.ids {
        IdFrom::Key(column) => {
            let key = change
                .key
                .as_ref()
                .ok_or_else(|| format!("{}: message has no key (needs {column})", rule.table))?;
            Ids::One(
                key.u64(column)
                    .map_err(|e| format!("{}: key: {e}", rule.table))?,
            )
        }
        IdFrom::Row(column) => match id_from_rows(change, column) {
            Some(id) => Ids::One(id),
            None => return Ok(Plan::Skip("no_id")),
        },
        IdFrom::RowPair([user, friend]) => {
            match (id_from_rows(change, user), id_from_rows(change, friend)) {
                (Some(uid), Some(fid)) => Ids::Pair { uid, fid },
                _ => return Ok(Plan::Skip("no_id")),
            }
        }
    };
    Ok(Plan::Delete(
        rule.keys
            .iter()
            .map(|format| render(prefix, format, ids))
            .collect(),
    ))
}

/// What the comparison with the legacy worker watches: every key format of [`tables::RULES`].
fn compared() -> Compared {
    static FORMATS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let formats = FORMATS.get_or_init(|| {
        let mut formats: Vec<&'static str> =
            tables::RULES.iter().flat_map(|r| r.keys).copied().collect();
        formats.sort_unstable();
        formats.dedup();
        formats
    });
    Compared {
        key_formats: formats,
        channels: &[],
    }
}

/// `before.column`, else `after.column`, as server-private's `before?.x ?? after?.x`; zero and
/// null count as absent (its `if (!uid) return`).
fn id_from_rows(change: &RowChange, column: &str) -> Option<u64> {
    fn non_null<'a>(row: Option<&'a Row>, column: &str) -> Option<&'a Value> {
        row.and_then(|r| r.get(column))
            .filter(|v| !matches!(v, Value::Null))
    }
    non_null(change.before.as_ref(), column)
        .or_else(|| non_null(change.after.as_ref(), column))
        .and_then(Value::as_u64)
        .filter(|id| *id != 0)
}

/// The family's handler.
pub struct CacheInvalidation {
    redis: ConnectionManager,
    /// Where `redis` points, named in its failures.
    redis_at: Dependency,
    key_prefix: String,
    effects: Effects,
}

impl CacheInvalidation {
    /// A handler deleting keys (after `key_prefix`) through `redis`, which is `redis_at`.
    pub fn new(
        redis: ConnectionManager,
        redis_at: Dependency,
        key_prefix: impl Into<String>,
    ) -> Self {
        Self {
            redis,
            redis_at,
            key_prefix: key_prefix.into(),
            effects: Effects::live(),
        }
    }

    /// The same handler, its effects passed through `effects` (shadow mode).
    pub fn with_effects(mut self, effects: Effects) -> Self {
        self.effects = effects;
        self
    }

    /// Connects to `REDIS_URI` (lazily: a worker starts while Redis is down).
    pub async fn connect(config: cdc_runtime::WorkerConfig) -> anyhow::Result<Self> {
        let effects = Effects::open(&config, FAMILY, compared()).await?;
        Ok(Self::new(
            sink::redis(&config.redis_uri)?,
            Dependency::redis(&config.redis_uri),
            config.redis_key_prefix,
        )
        .with_effects(effects))
    }

    /// Deletes `keys` (live), or plans their deletion by `records` (shadow).
    async fn delete(&self, keys: &[String], records: &[Record]) -> Result<(), HandlerError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(KEYS_PER_DEL) {
            pipe.del(chunk).ignore();
        }
        let mut redis = self.redis.clone();
        self.effects
            .redis(&mut redis, &pipe, records)
            .await
            .map_err(|e| sink::redis_error(e).at(&self.redis_at))
    }

    fn outcome(&self, record: &Record, keys: &mut BTreeSet<String>) -> Outcome {
        let Event::Change(event) = &record.event else {
            return Outcome::Skipped("not_a_change");
        };
        let ChangeEvent::Row(change) = event.as_ref() else {
            return Outcome::Skipped("truncate");
        };
        match plan(change, &self.key_prefix) {
            Ok(Plan::Delete(planned)) => {
                keys.extend(planned);
                Outcome::Applied
            }
            Ok(Plan::Skip(reason)) => Outcome::Skipped(reason),
            Err(error) => Outcome::Rejected(error),
        }
    }
}

impl Handler for CacheInvalidation {
    /// The columns the table's rule reads; none for tables it does not handle.
    fn row_columns(table: &str) -> Columns {
        Columns::Only(rule(table).map_or(&[], |r| r.ids.row_columns()))
    }

    /// Deleting keys is idempotent by itself: which delivery a record is does not matter.
    const READS_IDENTITY: bool = false;

    const SHADOW: bool = true;

    async fn apply(&self, batch: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        let mut keys = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for record in batch {
            if self.effects.is_shadow() {
                // Each record's own keys, so that its planned effects name it.
                let mut own = BTreeSet::new();
                outcomes.push(self.outcome(record, &mut own));
                let own: Vec<String> = own.into_iter().collect();
                self.delete(&own, std::slice::from_ref(record)).await?;
            } else {
                outcomes.push(self.outcome(record, &mut keys));
            }
        }
        let keys: Vec<String> = keys.into_iter().collect();
        self.delete(&keys, batch).await?;
        Ok(outcomes)
    }
}
