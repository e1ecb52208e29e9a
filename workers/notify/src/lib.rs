//! The notify family: server-private's `notify.v1` consumer (bangumi-behaviour §3.2). Each message
//! (protobuf `mq.v1.Notify`) becomes a user notification in MariaDB, with the effects of
//! `Notify.create` (`lib/notify.ts`), exactly once:
//!
//! 1. a message to its own sender is skipped (`self`);
//! 2. the recipient's `chii_memberfields` row is read (`privacy`, `blocklist`);
//! 3. a sender on the blocklist is skipped (`blocked`);
//! 4. the privacy setting of the type (comment, mention or friend notifications) decides:
//!    none skips (`privacy_none`), friends requires that the recipient follows the sender in
//!    `chii_friends` (`not_friends`);
//! 5. the `chii_notify_field` row of the type's hash and the message's `mid` is found, or
//!    inserted with the title;
//! 6. a `chii_notify` row is inserted (unread), and the recipient's `chii_members.new_notify`
//!    is incremented.
//!
//! Bad input is dead-lettered, never dropped: bytes that are not a `Notify`, a type without a
//! settings entry, a recipient without a `chii_memberfields` row, a privacy or blocklist that
//! cannot be read. The notification's time is the record's timestamp (when the API produced
//! it), so a redelivery or a replay keeps it.
//!
//! A batch (one partition, in offset order) is one MariaDB transaction, in a fixed number of
//! round trips whatever its size: the identities already applied
//! ([`cdc_runtime::applied`]: a redelivery is stale), the recipients' settings, the
//! friendships asked about, the fields, then one multi-row `INSERT` each for new fields, the
//! notifications and the identities, and one `UPDATE` of the counters. Every record is decided
//! before anything is written; only a value MariaDB refuses (an id past its column's range)
//! rolls the batch back, and the runtime then applies its records one by one, dead-lettering
//! that one alone.
//!
//! # Layout
//! - [`message`]: the protobuf message.
//! - [`rules`]: server-private's rules (hashes, privacy, blocklist, title), pure.
//! - [`Settings`]: this family's settings.
//! - [`Notify`]: the [`Handler`]; [`store`]: its SQL.

pub mod message;
pub mod rules;
pub mod store;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cdc_runtime::applied::Ledger;
use cdc_runtime::cli::FamilySettings;
use cdc_runtime::config::ConfigError;
use cdc_runtime::mysql::{classify, end_transaction};
use cdc_runtime::shadow::{Effect, Effects, compare::Compared};
use cdc_runtime::{Dependency, Event, Handler, HandlerError, Outcome, Record, WorkerConfig};
use sqlx::MySqlPool;

use crate::message::Notify as Message;
use crate::rules::{Privacy, Recipient};
use crate::store::{FieldKey, Row};

/// The family's name in `topics/`.
pub const FAMILY: &str = "notify";

/// Settings of this family, beside the runtime's [`WorkerConfig`].
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// How long an applied message's identity is remembered (`cdc_applied_messages`): a
    /// redelivery or replay within it is recognised and changes nothing. Keep it ≥ the
    /// retention of `notify.v1` and of the DLQ.
    #[arg(long, env = "NOTIFY_APPLIED_TTL", default_value = "30days", value_parser = humantime::parse_duration)]
    pub applied_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            applied_ttl: Duration::from_secs(30 * 86_400),
        }
    }
}

impl FamilySettings for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.applied_ttl < Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                name: "NOTIFY_APPLIED_TTL".into(),
                reason: "must be at least 1m (use the topic retention)".into(),
            });
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "notify.applied_ttl = {}",
            humantime::format_duration(self.applied_ttl)
        )
    }
}

/// The family's handler.
pub struct Notify {
    pool: MySqlPool,
    mysql: Dependency,
    applied: Ledger,
    /// Whether the tables' engines were checked (once per process).
    engines_checked: AtomicBool,
    /// Live, or shadow: the batch's transaction rolled back, its rows planned.
    effects: Effects,
}

/// A message that passed the checks needing no database: its record's place in the batch,
/// the message and its field hash.
struct Pending<'a> {
    index: usize,
    record: &'a Record,
    message: Message,
    hash: u8,
}

impl Notify {
    /// A handler writing through `pool` (which is `mysql`), recording identities in `applied`.
    pub fn new(pool: MySqlPool, mysql: Dependency, applied: Ledger) -> Self {
        Self {
            pool,
            mysql,
            applied,
            engines_checked: AtomicBool::new(false),
            effects: Effects::live(),
        }
    }

    /// Warns, once, about written tables without transactions (see [`store::non_transactional`]).
    async fn check_engines(&self, conn: &mut sqlx::MySqlConnection) -> Result<(), HandlerError> {
        if self.engines_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        for (table, engine) in store::non_transactional(conn).await? {
            tracing::warn!(
                table,
                engine,
                "a table notify writes has no transactions: a crash or retry between a batch's writes and its commit can write its rows twice; convert it with ALTER TABLE … ENGINE=InnoDB"
            );
        }
        self.engines_checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Connects (lazily: MySQL may be down at start) with `config` and `settings`.
    pub async fn connect(config: WorkerConfig, settings: Settings) -> anyhow::Result<Self> {
        let family = cdc_topics::by_name(FAMILY)?
            .ok_or_else(|| anyhow::anyhow!("no topics/families/{FAMILY}.toml"))?;
        let group = config.group_id(&family).into_owned();
        let family = family.with_topic_prefix(&config.kafka_topic_prefix);
        // SQL effects: planned, not compared.
        let effects = Effects::open(&config, FAMILY, Compared::default()).await?;
        let mut handler = Self::new(
            cdc_runtime::mysql::pool(&config),
            Dependency::mysql(&config.mysql_host, config.mysql_port),
            Ledger::new(
                group,
                family.service_topics,
                settings.applied_ttl,
                "notify migrate",
            ),
        );
        handler.effects = effects;
        Ok(handler)
    }

    async fn apply_batch(&self, batch: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut pending = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            match check(record) {
                Ok((message, hash)) => pending.push(Pending {
                    index,
                    record,
                    message,
                    hash,
                }),
                Err(outcome) => outcomes[index] = Some(outcome),
            }
        }
        if !pending.is_empty() {
            if !self.effects.is_shadow() {
                self.applied.prune(&self.pool).await?;
            }
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| classify("starting a transaction", e))?;
            self.check_engines(&mut tx).await?;
            let written = self
                .decide_and_write(&mut tx, pending, &mut outcomes)
                .await?;
            end_transaction(tx, &self.effects).await?;
            if self.effects.is_shadow() {
                for (index, row) in written {
                    self.effects
                        .plan(std::slice::from_ref(&batch[index]), planned(&row));
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Skipped("undecided")))
            .collect())
    }

    /// Decides every pending message against the database and writes those that notify, in
    /// `tx`; fills their outcomes. The rows written, with their record's place in the batch.
    async fn decide_and_write(
        &self,
        tx: &mut sqlx::MySqlConnection,
        pending: Vec<Pending<'_>>,
        outcomes: &mut [Option<Outcome>],
    ) -> Result<Vec<(usize, Row)>, HandlerError> {
        let ids: Vec<_> = pending.iter().map(|p| p.record.identity()).collect();
        let seen = self.applied.seen_all(tx, &ids).await?;
        let mut in_batch = HashSet::new();
        let pending: Vec<Pending> = pending
            .into_iter()
            .zip(seen)
            .filter_map(|(p, seen)| {
                let id = p.record.identity();
                let key = (id.topic.clone(), id.partition, id.offset, id.timestamp_ms);
                if seen || !in_batch.insert(key) {
                    outcomes[p.index] = Some(Outcome::Stale);
                    None
                } else {
                    Some(p)
                }
            })
            .collect();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let recipients: BTreeSet<u32> = pending.iter().map(|p| p.message.user_id).collect();
        let settings = store::recipients(tx, &recipients).await?;
        let mut ask_friends = BTreeSet::new();
        let mut notify = Vec::new();
        for p in pending {
            let m = &p.message;
            let Some((privacy, blocklist)) = settings.get(&m.user_id) else {
                outcomes[p.index] = Some(Outcome::Rejected(format!(
                    "user {} (the recipient) has no chii_memberfields row",
                    m.user_id
                )));
                continue;
            };
            let recipient = match Recipient::read(privacy, blocklist) {
                Ok(recipient) => recipient,
                Err(e) => {
                    outcomes[p.index] = Some(Outcome::Rejected(format!(
                        "user {} (the recipient): {e}",
                        m.user_id
                    )));
                    continue;
                }
            };
            if recipient.blocks(m.from_user_id) {
                outcomes[p.index] = Some(Outcome::Skipped("blocked"));
                continue;
            }
            match recipient.privacy(rules::setting_of(m.r#type)) {
                Privacy::None => {
                    outcomes[p.index] = Some(Outcome::Skipped("privacy_none"));
                    continue;
                }
                Privacy::Friends => {
                    ask_friends.insert((m.user_id, m.from_user_id));
                    notify.push((p, true));
                }
                Privacy::All => notify.push((p, false)),
            }
        }
        let friends = store::friendships(tx, &ask_friends).await?;
        let mut rows = Vec::new();
        let mut indexes = Vec::new();
        let mut applied = Vec::new();
        for (p, needs_friendship) in notify {
            let m = &p.message;
            if needs_friendship && !friends.contains(&(m.user_id, m.from_user_id)) {
                outcomes[p.index] = Some(Outcome::Skipped("not_friends"));
                continue;
            }
            rows.push(Row {
                recipient: m.user_id,
                sender: m.from_user_id,
                kind: m.r#type,
                field: FieldKey {
                    hash: p.hash,
                    rid: m.mid,
                },
                title: rules::stored_title(&m.title),
                related: m.mid,
                dateline: dateline(p.record),
            });
            applied.push(p.record.identity());
            indexes.push(p.index);
            outcomes[p.index] = Some(Outcome::Applied);
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        store::write(tx, &rows).await?;
        self.applied.record(tx, &applied).await?;
        Ok(indexes.into_iter().zip(rows).collect())
    }
}

/// What one notification writes, as planned effects: its `chii_notify` row (with its field's
/// hash and id, the `chii_notify_field` row it uses, and the title that row gets if this
/// notification creates it) and its recipient's `new_notify` raised by one.
fn planned(row: &Row) -> Vec<Effect> {
    vec![
        Effect::on("insert", "chii_notify").with_value(serde_json::json!({
            "nt_uid": row.recipient,
            "nt_from_uid": row.sender,
            "nt_type": row.kind,
            "ntf_hash": row.field.hash,
            "ntf_rid": row.field.rid,
            "new_field_title": row.title,
            "nt_related_id": row.related,
            "nt_dateline": row.dateline,
        })),
        Effect::on("update", "chii_members")
            .with_value(serde_json::json!({"uid": row.recipient, "new_notify": "+1"})),
    ]
}

/// The checks that need no database: the message decodes, has a known type and is not to its
/// sender. The message and its field hash, or the record's outcome.
fn check(record: &Record) -> Result<(Message, u8), Outcome> {
    let value = match &record.event {
        Event::Service {
            value: Some(value), ..
        } => value,
        Event::Service { value: None, .. } => return Err(Outcome::Skipped("empty")),
        Event::Change(_) => return Err(Outcome::Skipped("not_a_service_message")),
    };
    let message = Message::parse(value).map_err(Outcome::Rejected)?;
    let hash = rules::hash_of(message.r#type).ok_or_else(|| {
        Outcome::Rejected(format!(
            "notify type {} has no settings entry (server-private lib/notify.ts _settings: 1–15, 17–50)",
            message.r#type
        ))
    })?;
    if message.user_id == message.from_user_id {
        return Err(Outcome::Skipped("self"));
    }
    Ok((message, hash))
}

/// The notification's time (`nt_dateline`, unix seconds): when the message was produced (its
/// record timestamp; a replayed dead letter's first one), else now.
fn dateline(record: &Record) -> u32 {
    let ms = record
        .identity()
        .timestamp_ms
        .filter(|ms| *ms >= 0)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        });
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

impl Handler for Notify {
    const SHADOW: bool = true;

    async fn apply(&self, batch: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        self.apply_batch(batch).await.map_err(|e| e.at(&self.mysql))
    }
}
