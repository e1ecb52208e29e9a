//! The ledger of applied messages: how a family whose effects are SQL writes applies each
//! message exactly once. Shared by every such family (the timeline writer, notify).
//!
//! A message's identity — its Kafka coordinates, or for a dead letter put back by `dlq replay`
//! the coordinates of its first delivery ([`Record::identity`](crate::Record::identity)) — is
//! looked up in [`TABLE`] inside the family's transaction (`SELECT … FOR UPDATE`, so a
//! concurrent delivery waits); a message found there is stale, and each message the family
//! applies is recorded in the same transaction as its writes. Writes and identities commit or
//! roll back together, so a redelivery (retry, crash, rewind, new consumer group, replay) is a
//! no-op, while a message that was dead-lettered — never recorded — can still be applied by a
//! later replay.
//!
//! An identity is the topic, partition, offset *and record timestamp* (ms; for a replayed dead
//! letter, its `cdc.dlq.original.timestamp` header), not the consumer group: the effect is on
//! the database, whoever consumes. The timestamp tells a topic's incarnations apart: a topic
//! deleted and created again reuses offsets from 0, and its messages are new ones, applied.
//! A message without a timestamp, and rows recorded before the column existed, have -1 and
//! match their coordinates alone. Each [`Ledger`] prunes its own topics' identities after its
//! retention (keep it ≥ the topics' retention).
//!
//! The table and its changes are migrations (`workers/runtime/migrations/`, embedded here as
//! [`MIGRATOR`]), applied by the families' `migrate` subcommand (the Helm chart's
//! pre-install/pre-upgrade hook), never by a worker at run time. sqlx records applied
//! migrations in `_sqlx_migrations` and holds a named lock (`GET_LOCK`) while it migrates, so
//! two concurrent runs are safe; an applied migration whose file changed is refused (checksum):
//! never edit one, add the next.
//!
//! # Layout
//! - [`MIGRATOR`], [`migrate`]: the fleet's own tables.
//! - [`Ledger`]: look up, record and prune identities.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{MySql, MySqlConnection, MySqlPool, QueryBuilder};

use crate::family::Coordinates;
use crate::{HandlerError, mysql::classify};

/// The table of applied messages' identities.
pub const TABLE: &str = "cdc_applied_messages";

/// The fleet's own tables, as migrations (`workers/runtime/migrations/`). Their files moved
/// here from the timeline crate unchanged: versions and checksums in databases migrated by
/// earlier versions still match.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// `kafka_timestamp` of a message the broker gave no timestamp, of a dead letter put back
/// without `cdc.dlq.original.timestamp`, and of rows recorded before the column existed: at its
/// coordinates it matches whatever the timestamp (unknown is never taken as a new message, so
/// nothing is applied twice).
const UNKNOWN_TIMESTAMP: i64 = -1;

/// Server error numbers that say [`TABLE`] is missing or not in the shape this version
/// expects: `ER_NO_SUCH_TABLE`, `ER_BAD_FIELD_ERROR`.
const SCHEMA_ERRORS: &[u16] = &[1146, 1054];

/// How often identities older than the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Identities per statement when a batch's are looked up or recorded together.
const PER_STATEMENT: usize = 500;

/// Applies the pending migrations on `pool`'s database; returns the descriptions of those it
/// applied (empty: the schema was up to date).
pub async fn migrate(pool: &MySqlPool) -> Result<Vec<String>, MigrateError> {
    let applied_before = applied_versions(pool).await?;
    MIGRATOR.run(pool).await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !applied_before.contains(&m.version))
        .map(|m| format!("{:04} {}", m.version, m.description))
        .collect())
}

/// The versions `_sqlx_migrations` lists as applied (none if the table does not exist yet).
async fn applied_versions(pool: &MySqlPool) -> Result<Vec<i64>, MigrateError> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?,
    )
}

/// One family's view of the ledger: the group it records, the topics it prunes, and the
/// command that creates the table (named in the error while it is missing).
pub struct Ledger {
    group: String,
    topics: Vec<String>,
    retention: Duration,
    migrate_command: String,
    last_prune: Mutex<Option<Instant>>,
}

impl Ledger {
    /// The ledger of a family consuming `topics` (with their prefix) in `group`, remembering
    /// identities for `retention`; `migrate_command` (`timeline migrate`) creates the table.
    pub fn new(
        group: impl Into<String>,
        topics: Vec<String>,
        retention: Duration,
        migrate_command: impl Into<String>,
    ) -> Self {
        Self {
            group: group.into(),
            topics,
            retention,
            migrate_command: migrate_command.into(),
            last_prune: Mutex::new(None),
        }
    }

    /// Deletes this family's identities older than the retention, at most once per
    /// [`PRUNE_EVERY`], in small steps so no lock is held long.
    pub async fn prune(&self, pool: &MySqlPool) -> Result<(), HandlerError> {
        {
            let Ok(mut last) = self.last_prune.lock() else {
                return Ok(());
            };
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        if self.topics.is_empty() {
            return Ok(());
        }
        loop {
            let mut query = QueryBuilder::<MySql>::new(
                "DELETE FROM cdc_applied_messages WHERE applied_at < NOW() - INTERVAL ",
            );
            query.push_bind(self.retention.as_secs());
            query.push(" SECOND AND topic IN (");
            let mut topics = query.separated(", ");
            for topic in &self.topics {
                topics.push_bind(topic);
            }
            query.push(") LIMIT 1000");
            let pruned = query
                .build()
                .execute(pool)
                .await
                .map_err(|e| self.error("pruning cdc_applied_messages", e))?;
            if pruned.rows_affected() < 1000 {
                return Ok(());
            }
        }
    }

    /// Whether `id` is recorded, locking its entry (or the gap where it would go) until the
    /// transaction of `conn` ends.
    pub async fn seen(
        &self,
        conn: &mut MySqlConnection,
        id: &Coordinates,
    ) -> Result<bool, HandlerError> {
        Ok(self.seen_all(conn, &[id]).await?[0])
    }

    /// For each of `ids`, whether it is recorded (in one statement per few hundred), locking
    /// as [`Ledger::seen`].
    pub async fn seen_all(
        &self,
        conn: &mut MySqlConnection,
        ids: &[&Coordinates],
    ) -> Result<Vec<bool>, HandlerError> {
        // By topic-partition, so each statement reads one prefix range of the primary key.
        let mut groups: BTreeMap<(&str, i32), Vec<i64>> = BTreeMap::new();
        for id in ids {
            groups
                .entry((&*id.topic, id.partition))
                .or_default()
                .push(id.offset);
        }
        let mut found: HashSet<(String, i32, i64, i64)> = HashSet::new();
        for ((topic, partition), offsets) in groups {
            for chunk in offsets.chunks(PER_STATEMENT) {
                let mut query = QueryBuilder::<MySql>::new(
                    "SELECT topic, kafka_partition, kafka_offset, kafka_timestamp FROM cdc_applied_messages WHERE topic = ",
                );
                query.push_bind(topic);
                query.push(" AND kafka_partition = ");
                query.push_bind(partition);
                query.push(" AND kafka_offset IN (");
                let mut list = query.separated(", ");
                for offset in chunk {
                    list.push_bind(*offset);
                }
                query.push(") FOR UPDATE");
                let rows: Vec<(String, i32, i64, i64)> = query
                    .build_query_as()
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| self.error("reading cdc_applied_messages", e))?;
                found.extend(rows);
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                let timestamp = timestamp_of(id);
                found.iter().any(|(topic, partition, offset, recorded)| {
                    *topic == *id.topic
                        && *partition == id.partition
                        && *offset == id.offset
                        && (*recorded == timestamp
                            || *recorded == UNKNOWN_TIMESTAMP
                            || timestamp == UNKNOWN_TIMESTAMP)
                })
            })
            .collect())
    }

    /// Records `ids` as applied, in the transaction of `conn` (one statement per few hundred).
    pub async fn record(
        &self,
        conn: &mut MySqlConnection,
        ids: &[&Coordinates],
    ) -> Result<(), HandlerError> {
        for chunk in ids.chunks(PER_STATEMENT) {
            let mut query = QueryBuilder::<MySql>::new(
                "INSERT INTO cdc_applied_messages (topic, kafka_partition, kafka_offset, kafka_timestamp, consumer_group) ",
            );
            query.push_values(chunk, |mut row, id| {
                row.push_bind(&*id.topic)
                    .push_bind(id.partition)
                    .push_bind(id.offset)
                    .push_bind(timestamp_of(id))
                    .push_bind(&self.group);
            });
            query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(|e| self.error("recording the applied messages", e))?;
        }
        Ok(())
    }

    /// An error of `what` on [`TABLE`]: if the table is missing or has an older shape, a
    /// transient error saying so and to run the migrate command (the partition waits,
    /// `/readyz` is false, until it is run); else as [`classify`]d.
    pub fn error(&self, what: &str, error: sqlx::Error) -> HandlerError {
        if crate::mysql::server_error(&error).is_some_and(|n| SCHEMA_ERRORS.contains(&n)) {
            return HandlerError::Transient(anyhow::anyhow!(
                "{what}: table {TABLE} is missing or older than this worker ({error}); run `{}` on the database",
                self.migrate_command
            ));
        }
        classify(what, error)
    }
}

fn timestamp_of(id: &Coordinates) -> i64 {
    id.timestamp_ms.unwrap_or(UNKNOWN_TIMESTAMP)
}
