//! The `timeline` service-topic writer: messages become `chii_timeline` rows (inserted, or
//! merged into the previous row), exactly once in effect.
//!
//! A batch (one partition, in offset order) is one MariaDB transaction. Each message's identity
//! — its Kafka coordinates, or for a dead letter put back by `dlq replay` the coordinates of its
//! first delivery ([`Record::identity`]) — is looked up in [`APPLIED_TABLE`] (`SELECT … FOR
//! UPDATE`, so a concurrent delivery waits); if present the message is stale, else it is written
//! and its identity recorded, in the same transaction. Writes and identities commit or roll back
//! together, so a redelivery (retry, crash, rewind, new consumer group, replay) is a no-op, while
//! a message that was dead-lettered — never recorded — can still be applied by a later replay.
//!
//! An identity is the topic, partition, offset *and record timestamp* (ms; for a replayed dead
//! letter, its `cdc.dlq.original.timestamp` header), not the consumer group: the effect is on
//! the database, whoever consumes. The timestamp tells a topic's incarnations apart: a topic
//! deleted and created again reuses offsets from 0, and its messages are new ones, applied.
//! A message without a timestamp, and rows recorded before the column existed, have -1 and
//! match their coordinates alone. Identities are pruned after the retention given to
//! [`Writer::new`] (keep it ≥ the topic's retention). The table and its changes are migrations
//! ([`crate::migrate`]): this module runs no DDL.
//!
//! # Layout
//! - [`message`]: parsing and per-op rules (pure).
//! - [`js`]: `JSON.stringify`-exact values; [`php`]: old PHP-serialised memos.
//! - [`merge`]: previous row + new detail → the update (pure).
//! - [`Writer`]: the transaction.

pub mod js;
pub mod merge;
pub mod message;
pub mod php;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cdc_runtime::{Event, HandlerError, Outcome, Record};
use sqlx::{MySql, MySqlPool, Transaction};

use cdc_runtime::mysql::classify;
use merge::{Previous, Update};
use message::{Merge, Write};

/// The table of applied messages' identities; created and changed only by the migrations
/// ([`crate::migrate`], `timeline migrate`).
pub const APPLIED_TABLE: &str = "cdc_applied_messages";

/// `kafka_timestamp` of a message the broker gave no timestamp, of a dead letter put back
/// without `cdc.dlq.original.timestamp`, and of rows recorded before the column existed: at its
/// coordinates it matches whatever the timestamp (unknown is never taken as a new message, so
/// nothing is applied twice).
const UNKNOWN_TIMESTAMP: i64 = -1;

/// Server error numbers that say [`APPLIED_TABLE`] is missing or not in the shape this version
/// expects: `ER_NO_SUCH_TABLE`, `ER_BAD_FIELD_ERROR`.
const SCHEMA_ERRORS: &[u16] = &[1146, 1054];

/// How often identities older than the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The writer.
pub struct Writer {
    mysql: MySqlPool,
    group: String,
    retention: Duration,
    last_prune: Mutex<Option<Instant>>,
}

impl Writer {
    /// A writer on `mysql`, recording `group` with each message it applies and remembering
    /// applied messages for `retention`.
    pub fn new(mysql: MySqlPool, group: impl Into<String>, retention: Duration) -> Self {
        Self {
            mysql,
            group: group.into(),
            retention,
            last_prune: Mutex::new(None),
        }
    }

    /// Deletes identities older than the retention, at most once per [`PRUNE_EVERY`], in small
    /// steps so no lock is held long.
    async fn prune(&self) -> Result<(), HandlerError> {
        {
            let Ok(mut last) = self.last_prune.lock() else {
                return Ok(());
            };
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        loop {
            let pruned = sqlx::query(
                "DELETE FROM cdc_applied_messages WHERE applied_at < NOW() - INTERVAL ? SECOND LIMIT 1000",
            )
            .bind(self.retention.as_secs())
            .execute(&self.mysql)
            .await
            .map_err(|e| applied_table_error("pruning cdc_applied_messages", e))?;
            if pruned.rows_affected() < 1000 {
                return Ok(());
            }
        }
    }

    /// Applies service records of one partition, in order.
    pub async fn apply(&self, records: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.prune().await?;
        let mut tx = self
            .mysql
            .begin()
            .await
            .map_err(|e| classify("starting a transaction", e))?;
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            let write = match parse(record) {
                Ok(write) => write,
                Err(outcome) => {
                    outcomes.push(outcome);
                    continue;
                }
            };
            let id = record.identity();
            let timestamp = id.timestamp_ms.unwrap_or(UNKNOWN_TIMESTAMP);
            let seen: Option<i64> = sqlx::query_scalar(
                "SELECT kafka_offset FROM cdc_applied_messages WHERE topic = ? AND kafka_partition = ? AND kafka_offset = ? AND (kafka_timestamp IN (?, -1) OR ? = -1) LIMIT 1 FOR UPDATE",
            )
            .bind(&*id.topic)
            .bind(id.partition)
            .bind(id.offset)
            .bind(timestamp)
            .bind(timestamp)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| applied_table_error("reading cdc_applied_messages", e))?;
            if seen.is_some() {
                outcomes.push(Outcome::Stale);
                continue;
            }
            let outcome = write_one(&mut tx, &write).await?;
            if outcome == Outcome::Applied {
                sqlx::query(
                    "INSERT INTO cdc_applied_messages (topic, kafka_partition, kafka_offset, kafka_timestamp, consumer_group) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&*id.topic)
                .bind(id.partition)
                .bind(id.offset)
                .bind(timestamp)
                .bind(&self.group)
                .execute(&mut *tx)
                .await
                .map_err(|e| applied_table_error("recording the applied message", e))?;
            }
            outcomes.push(outcome);
        }
        tx.commit().await.map_err(|e| classify("committing", e))?;
        Ok(outcomes)
    }
}

/// An error of `what` on [`APPLIED_TABLE`]: if the table is missing or has an older shape, a
/// transient error saying so and to run `timeline migrate` (the partition waits, `/readyz` is
/// false, until it is run); else as [`classify`]d.
fn applied_table_error(what: &str, error: sqlx::Error) -> HandlerError {
    if cdc_runtime::mysql::server_error(&error).is_some_and(|n| SCHEMA_ERRORS.contains(&n)) {
        return HandlerError::Transient(anyhow::anyhow!(
            "{what}: table {APPLIED_TABLE} is missing or older than this worker ({error}); run `timeline migrate` on the database"
        ));
    }
    classify(what, error)
}

/// A record's write, or its outcome if it has none (invalid: rejected whether or not stale,
/// so a bad message is dead-lettered on every delivery).
fn parse(record: &Record) -> Result<Write, Outcome> {
    match &record.event {
        Event::Service {
            value: Some(value), ..
        } => message::parse(value).map_err(Outcome::Rejected),
        Event::Service { value: None, .. } => Err(Outcome::Skipped("empty")),
        Event::Change(_) => Err(Outcome::Skipped("not_a_service_message")),
    }
}

async fn write_one(
    tx: &mut Transaction<'_, MySql>,
    write: &Write,
) -> Result<Outcome, HandlerError> {
    let row = &write.row;
    let previous = match &write.merge {
        Merge::Never => None,
        Merge::Batch { .. } => previous(tx, row.uid, row.cat, Some(row.kind)).await?,
        Merge::Replace { kind, .. } => previous(tx, row.uid, row.cat, *kind).await?,
    };
    let update = match previous {
        Some(previous) => match merge::decide(write, &previous) {
            Ok(update) => update,
            Err(message) => return Ok(Outcome::Rejected(message)),
        },
        None => None,
    };
    match update {
        Some(Update {
            tml_id,
            memo,
            batch,
        }) => {
            let sql = if batch {
                "UPDATE chii_timeline SET tml_batch = 1, tml_memo = ?, tml_source = ? WHERE tml_id = ? LIMIT 1"
            } else {
                "UPDATE chii_timeline SET tml_memo = ?, tml_source = ? WHERE tml_id = ? LIMIT 1"
            };
            sqlx::query(sql)
                .bind(memo)
                .bind(row.source)
                .bind(tml_id)
                .execute(&mut **tx)
                .await
                .map_err(|e| classify(write.op, e))?;
        }
        None => {
            sqlx::query(
                "INSERT INTO chii_timeline (tml_uid, tml_cat, tml_type, tml_related, tml_memo, tml_img, tml_batch, tml_source, tml_replies, tml_dateline) VALUES (?, ?, ?, ?, ?, '', 0, ?, 0, ?)",
            )
            .bind(row.uid)
            .bind(row.cat)
            .bind(row.kind)
            .bind(&row.related)
            .bind(&row.memo)
            .bind(row.source)
            .bind(row.created_at)
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(write.op, e))?;
        }
    }
    Ok(Outcome::Applied)
}

/// The latest row of `uid` in `cat` (and of `kind`, if set), locked until the transaction ends.
///
/// A merge is read-modify-write: two transactions merging into the same row (a `dlq replay
/// --direct` beside the live worker; two consumers of a partition after a lost assignment) must
/// not both read the same memo. The locking read goes through the `tml_uid` index, so under
/// REPEATABLE READ it holds next-key locks on every row of `uid` it scans and the gap after
/// them (also scanning `ORDER BY … DESC`): a second merge for the uid waits for the first to
/// commit, then reads its row; and when there is no previous row yet, the gap locks make the
/// second insert a deadlock (1213, transient: the batch is retried, and finds the row) instead
/// of a second row.
async fn previous(
    tx: &mut Transaction<'_, MySql>,
    uid: u64,
    cat: u32,
    kind: Option<u32>,
) -> Result<Option<Previous>, HandlerError> {
    let columns = "SELECT CAST(tml_id AS UNSIGNED), CAST(tml_type AS UNSIGNED), tml_related, tml_memo, CAST(tml_batch AS UNSIGNED), CAST(tml_dateline AS SIGNED) FROM chii_timeline";
    let query = match kind {
        Some(_) => format!(
            "{columns} WHERE tml_uid = ? AND tml_cat = ? AND tml_type = ? ORDER BY tml_id DESC LIMIT 1 FOR UPDATE"
        ),
        None => format!(
            "{columns} WHERE tml_uid = ? AND tml_cat = ? ORDER BY tml_id DESC LIMIT 1 FOR UPDATE"
        ),
    };
    let mut q = sqlx::query_as::<_, (u64, u64, String, String, u64, i64)>(&query)
        .bind(uid)
        .bind(cat);
    if let Some(kind) = kind {
        q = q.bind(kind);
    }
    let row = q
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| classify("reading the previous chii_timeline row", e))?;
    Ok(
        row.map(|(tml_id, kind, related, memo, batch, dateline)| Previous {
            tml_id,
            kind,
            related,
            memo,
            batch: batch != 0,
            dateline,
        }),
    )
}
