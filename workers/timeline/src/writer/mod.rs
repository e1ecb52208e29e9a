//! The `timeline` service-topic writer: messages become `chii_timeline` rows (inserted, or
//! merged into the previous row), exactly once in effect.
//!
//! A batch (one partition, in offset order) is one MariaDB transaction. Each message's identity
//! is looked up in the shared ledger of applied messages ([`cdc_runtime::applied`], which
//! explains identities, locking and pruning); if present the message is stale, else it is
//! written and its identity recorded, in the same transaction. The table is a migration
//! (`timeline migrate`): this module runs no DDL.
//!
//! # Shadow mode
//! With shadow [`Effects`] the batch's transaction runs exactly as live (ledger lookups, locking
//! reads, `INSERT`s, `UPDATE`s, the ledger's records) and is rolled back instead of committed;
//! each applied message is planned as the row it wrote: `insert` of `chii_timeline` (the row's
//! columns; its `tml_id` is the one the rolled-back insert got, for the batch's later merges to
//! name) or, when the merge window merged it into an existing row, `update` of `chii_timeline`
//! (`tml_id`, the new `tml_memo`, `tml_source`, and `tml_batch: 1` when it becomes a batch).
//! The ledger's pruning is skipped.
//!
//! Divergences this implies. The rolled-back ledger remembers nothing, so a redelivery (a
//! restart, a rebalance) is planned again: a duplicate plan, not a divergence. Nothing of an
//! earlier batch is kept either: a message merges only into a row of its own batch or of the
//! live table. The live table is the legacy writer's meanwhile, so a message is decided against
//! the rows it wrote: a merge may be planned into a row the legacy writer inserted (often the
//! row the legacy writer made of this very message or of its batch's predecessors, where live
//! the fleet would have inserted or merged into its own row), and the memo planned then holds
//! the legacy row's details too. Compare a plan with the legacy writer's rows by the resulting
//! row (uid, cat, type, memo's details, window), not by `insert`/`update` or `tml_id`.
//!
//! # Layout
//! - [`message`]: parsing and per-op rules (pure).
//! - [`merge`]: previous row + new detail → the update (pure).
//! - [`Writer`]: the transaction.

pub mod merge;
pub mod message;

use std::time::Duration;

use cdc_runtime::applied::Ledger;
use cdc_runtime::shadow::{Effect, Effects};
use cdc_runtime::{Event, HandlerError, Outcome, Record};
use sqlx::{MySql, MySqlPool, Transaction};

use cdc_runtime::mysql::{classify, end_transaction};
use merge::{Previous, Update};
use message::{Merge, Write};

/// The writer.
pub struct Writer {
    mysql: MySqlPool,
    applied: Ledger,
    /// Live, or shadow: each batch's transaction rolled back, its rows planned.
    effects: Effects,
}

impl Writer {
    /// A writer on `mysql` for the service topics `topics`, recording `group` with each
    /// message it applies and remembering applied messages for `retention`.
    pub fn new(
        mysql: MySqlPool,
        group: impl Into<String>,
        topics: Vec<String>,
        retention: Duration,
    ) -> Self {
        Self {
            mysql,
            applied: Ledger::new(group, topics, retention, "timeline migrate"),
            effects: Effects::live(),
        }
    }

    /// The same writer with `effects` (shadow: see the module's "Shadow mode").
    pub fn with_effects(mut self, effects: Effects) -> Self {
        self.effects = effects;
        self
    }

    /// Applies service records of one partition, in order.
    pub async fn apply(&self, records: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let shadow = self.effects.is_shadow();
        if !shadow {
            self.applied.prune(&self.mysql).await?;
        }
        let mut tx = self
            .mysql
            .begin()
            .await
            .map_err(|e| classify("starting a transaction", e))?;
        let mut outcomes = Vec::with_capacity(records.len());
        let mut planned = Vec::new();
        for record in records {
            let write = match parse(record) {
                Ok(write) => write,
                Err(outcome) => {
                    outcomes.push(outcome);
                    continue;
                }
            };
            let id = record.identity();
            if self.applied.seen(&mut tx, id).await? {
                outcomes.push(Outcome::Stale);
                continue;
            }
            let outcome = match write_one(&mut tx, &write).await? {
                Ok(written) => {
                    self.applied.record(&mut tx, &[id]).await?;
                    if shadow {
                        planned.push((record, written.planned(&write)));
                    }
                    Outcome::Applied
                }
                Err(outcome) => outcome,
            };
            outcomes.push(outcome);
        }
        end_transaction(tx, &self.effects).await?;
        for (record, effect) in planned {
            self.effects
                .plan(std::slice::from_ref(record), vec![effect]);
        }
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

/// What a message wrote.
enum Written {
    /// Its row, inserted, with this `tml_id`.
    Inserted(u64),
    /// Merged into an existing row.
    Merged(Update),
}

impl Written {
    /// The planned effect (shadow mode): the row inserted, or the columns the merge updated.
    fn planned(self, write: &Write) -> Effect {
        let row = &write.row;
        match self {
            Written::Inserted(tml_id) => {
                Effect::on("insert", "chii_timeline").with_value(serde_json::json!({
                    "tml_id": tml_id,
                    "tml_uid": row.uid,
                    "tml_cat": row.cat,
                    "tml_type": row.kind,
                    "tml_related": row.related,
                    "tml_memo": row.memo,
                    "tml_img": "",
                    "tml_batch": 0,
                    "tml_source": row.source,
                    "tml_replies": 0,
                    "tml_dateline": row.created_at,
                }))
            }
            Written::Merged(Update {
                tml_id,
                memo,
                batch,
            }) => {
                let mut value = serde_json::json!({
                    "tml_id": tml_id,
                    "tml_memo": memo,
                    "tml_source": row.source,
                });
                if batch {
                    value["tml_batch"] = 1.into();
                }
                Effect::on("update", "chii_timeline").with_value(value)
            }
        }
    }
}

/// Writes `write` in `tx`: what it wrote, or its outcome if it writes nothing.
async fn write_one(
    tx: &mut Transaction<'_, MySql>,
    write: &Write,
) -> Result<Result<Written, Outcome>, HandlerError> {
    let row = &write.row;
    let previous = match &write.merge {
        Merge::Never => None,
        Merge::Batch { .. } => previous(tx, row.uid, row.cat, Some(row.kind)).await?,
        Merge::Replace { kind, .. } => previous(tx, row.uid, row.cat, *kind).await?,
    };
    let update = match previous {
        Some(previous) => match merge::decide(write, &previous) {
            Ok(update) => update,
            Err(message) => return Ok(Err(Outcome::Rejected(message))),
        },
        None => None,
    };
    match update {
        Some(update) => {
            let sql = if update.batch {
                "UPDATE chii_timeline SET tml_batch = 1, tml_memo = ?, tml_source = ? WHERE tml_id = ? LIMIT 1"
            } else {
                "UPDATE chii_timeline SET tml_memo = ?, tml_source = ? WHERE tml_id = ? LIMIT 1"
            };
            sqlx::query(sql)
                .bind(&update.memo)
                .bind(row.source)
                .bind(update.tml_id)
                .execute(&mut **tx)
                .await
                .map_err(|e| classify(write.op, e))?;
            Ok(Ok(Written::Merged(update)))
        }
        None => {
            let inserted = sqlx::query(
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
            Ok(Ok(Written::Inserted(inserted.last_insert_id())))
        }
    }
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
