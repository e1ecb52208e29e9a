//! The `timeline` service-topic writer: messages become `chii_timeline` rows (inserted, or
//! merged into the previous row), exactly once in effect.
//!
//! A batch (one partition, in offset order) is one MariaDB transaction: it locks the
//! partition's row of [`OFFSETS_TABLE`] (`SELECT … FOR UPDATE`), skips records below the
//! stored next offset as stale (already written by an earlier delivery), writes the others,
//! stores the new next offset, and commits. Writes and the offset commit or roll back
//! together, so a redelivery (retry, crash, rewind, new consumer group) is a no-op.
//!
//! The offsets row is keyed by topic and partition, not by consumer group: the effect is on
//! the database, whoever consumes, so a new group (which starts from the earliest offset) does
//! not write the topic's history twice.
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

use std::sync::atomic::{AtomicBool, Ordering};

use cdc_runtime::{Event, HandlerError, Outcome, Record};
use sqlx::{MySql, MySqlPool, Transaction};

use crate::sql::classify;
use merge::{Previous, Update};
use message::{Merge, Write};

/// The table holding each partition's next offset to write.
pub const OFFSETS_TABLE: &str = "cdc_kafka_offsets";

/// Its definition; created on the writer's first batch if missing.
pub const OFFSETS_DDL: &str = "CREATE TABLE IF NOT EXISTS cdc_kafka_offsets (
  topic VARCHAR(249) NOT NULL,
  kafka_partition INT NOT NULL,
  next_offset BIGINT NOT NULL,
  consumer_group VARCHAR(255) NOT NULL DEFAULT '' COMMENT 'last writer, informational',
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (topic, kafka_partition)
) ENGINE=InnoDB DEFAULT CHARSET=ascii";

/// The writer.
pub struct Writer {
    mysql: MySqlPool,
    group: String,
    table_ready: AtomicBool,
}

impl Writer {
    /// A writer on `mysql`, recording `group` as the last writer.
    pub fn new(mysql: MySqlPool, group: impl Into<String>) -> Self {
        Self {
            mysql,
            group: group.into(),
            table_ready: AtomicBool::new(false),
        }
    }

    /// Applies service records of one partition, in order.
    pub async fn apply(&self, records: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let parsed: Vec<Result<Write, Outcome>> = records.iter().map(parse).collect();
        if !self.table_ready.load(Ordering::Relaxed) {
            sqlx::query(OFFSETS_DDL)
                .execute(&self.mysql)
                .await
                .map_err(|e| classify("creating cdc_kafka_offsets", e))?;
            self.table_ready.store(true, Ordering::Relaxed);
        }
        let (topic, partition) = (&first.at.topic, first.at.partition);
        let mut tx = self
            .mysql
            .begin()
            .await
            .map_err(|e| classify("starting a transaction", e))?;
        sqlx::query(
            "INSERT IGNORE INTO cdc_kafka_offsets (topic, kafka_partition, next_offset, consumer_group) VALUES (?, ?, 0, ?)",
        )
        .bind(topic)
        .bind(partition)
        .bind(&self.group)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify("initialising cdc_kafka_offsets", e))?;
        let next: i64 = sqlx::query_scalar(
            "SELECT next_offset FROM cdc_kafka_offsets WHERE topic = ? AND kafka_partition = ? FOR UPDATE",
        )
        .bind(topic)
        .bind(partition)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| classify("locking cdc_kafka_offsets", e))?;

        let mut outcomes = Vec::with_capacity(records.len());
        let mut last = next - 1;
        for (record, write) in records.iter().zip(parsed) {
            last = last.max(record.at.offset);
            outcomes.push(match write {
                Err(outcome) => outcome,
                Ok(_) if record.at.offset < next => Outcome::Stale,
                Ok(write) => write_one(&mut tx, &write).await?,
            });
        }
        sqlx::query(
            "UPDATE cdc_kafka_offsets SET next_offset = ?, consumer_group = ? WHERE topic = ? AND kafka_partition = ?",
        )
        .bind(last + 1)
        .bind(&self.group)
        .bind(topic)
        .bind(partition)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify("storing the next offset", e))?;
        tx.commit().await.map_err(|e| classify("committing", e))?;
        Ok(outcomes)
    }
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

/// The latest row of `uid` in `cat` (and of `kind`, if set).
async fn previous(
    tx: &mut Transaction<'_, MySql>,
    uid: u64,
    cat: u32,
    kind: Option<u32>,
) -> Result<Option<Previous>, HandlerError> {
    let columns = "SELECT CAST(tml_id AS UNSIGNED), CAST(tml_type AS UNSIGNED), tml_related, tml_memo, CAST(tml_batch AS UNSIGNED), CAST(tml_dateline AS SIGNED) FROM chii_timeline";
    let query = match kind {
        Some(_) => format!(
            "{columns} WHERE tml_uid = ? AND tml_cat = ? AND tml_type = ? ORDER BY tml_id DESC LIMIT 1"
        ),
        None => format!("{columns} WHERE tml_uid = ? AND tml_cat = ? ORDER BY tml_id DESC LIMIT 1"),
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
