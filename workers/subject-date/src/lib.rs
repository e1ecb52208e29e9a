//! The subject-date family: a subject's release date in `chii_subject_fields` (`field_year`,
//! `field_mon`, `field_date`) recomputed from its infobox whenever the subject or one of its
//! revisions is written — server-private's `updateSubjectDate` (bangumi-behaviour §1.3), with the
//! runtime's retries, dead letters and metrics around it.
//!
//! - `chii_subjects` `c`/`u` → the subject of the key's `subject_id`.
//! - `chii_subject_revisions` `c`/`u` → the subject of the row's `rev_subject_id` (the legacy
//!   reads it from the key, which only holds `rev_id`, so it never acts on revisions).
//! - Deletes, snapshot reads and truncates do nothing, as in the legacy.
//!
//! Idempotent by construction: the date is recomputed from the subject's row as it is now, not
//! from the event, so a duplicate, a replay or events in any order leave the fields the current
//! infobox gives. Nothing needs fencing or recording.
//!
//! A batch waits until its newest change is [`Settings::read_delay`] old (the legacy sleeps 2 s
//! in its only consumer), loads all its subjects with one `SELECT … IN`, and writes every dated
//! subject once, in one `UPDATE`.
//!
//! # Layout
//! - [`date`]: infobox → release date, the legacy's rules (pure).
//! - [`Settings`]: this family's settings.
//! - [`SubjectDate`]: the [`Handler`].

pub mod date;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cdc_runtime::cli::FamilySettings;
use cdc_runtime::config::ConfigError;
use cdc_runtime::mysql::{classify, transient};
use cdc_runtime::shadow::{Effect, Effects, compare::Compared};
use cdc_runtime::{Dependency, Event, Handler, HandlerError, Outcome, Record, WorkerConfig};
use cdc_schemas::{ChangeEvent, Columns, Op, RowChange};
use sqlx::{MySqlPool, QueryBuilder};

use crate::date::Fields;

/// The family's name in `topics/`.
pub const FAMILY: &str = "subject-date";

const SUBJECTS: &str = "chii_subjects";
const REVISIONS: &str = "chii_subject_revisions";

/// The longest [`Settings::read_delay`]: a batch holds its partition while it waits.
const MAX_READ_DELAY: Duration = Duration::from_secs(60);

/// Settings of this family, beside the runtime's [`WorkerConfig`].
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// How old a change must be before its subject is read back: time for the MySQL replicas
    /// this worker reads from to have it. Only a batch of changes younger than this waits, and
    /// only its own partition. 0 reads at once (a worker reading the primary). At most 1m.
    #[arg(long, env = "SUBJECT_DATE_READ_DELAY", default_value = "2s", value_parser = humantime::parse_duration)]
    pub read_delay: Duration,
}

impl FamilySettings for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.read_delay > MAX_READ_DELAY {
            return Err(ConfigError::Invalid {
                name: "SUBJECT_DATE_READ_DELAY".into(),
                reason: format!(
                    "{} is longer than 1m: a waiting batch holds its partition",
                    humantime::format_duration(self.read_delay)
                ),
            });
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "subject_date.read_delay = {}",
            humantime::format_duration(self.read_delay)
        )
    }
}

/// What a record asks for.
enum Trigger {
    /// Recompute this subject's date; the change was written at `written_ms`.
    Subject { id: u32, written_ms: i64 },
    /// Nothing to do.
    Done(Outcome),
}

/// A subject's row as the date needs it.
#[derive(sqlx::FromRow)]
struct Subject {
    subject_id: u32,
    subject_type_id: u16,
    subject_platform: u16,
    field_infobox: String,
}

/// The family's handler.
pub struct SubjectDate {
    pool: MySqlPool,
    mysql: Dependency,
    read_delay: Duration,
    effects: Effects,
}

impl SubjectDate {
    /// A handler reading and writing through `pool`, which is `mysql`.
    pub fn new(pool: MySqlPool, mysql: Dependency, settings: &Settings) -> Self {
        Self {
            pool,
            mysql,
            read_delay: settings.read_delay,
            effects: Effects::live(),
        }
    }

    /// Connects (lazily: MySQL may be down at start) with `config` and `settings`.
    pub async fn connect(config: WorkerConfig, settings: Settings) -> anyhow::Result<Self> {
        let mut handler = Self::new(
            cdc_runtime::mysql::pool(&config),
            Dependency::mysql(&config.mysql_host, config.mysql_port),
            &settings,
        );
        // SQL effects: planned, not compared.
        handler.effects = Effects::open(&config, FAMILY, Compared::default()).await?;
        Ok(handler)
    }

    /// Waits until the newest change of the batch is `read_delay` old — never longer than
    /// `read_delay` from now, whatever a skewed clock says.
    async fn wait_for_replicas(&self, newest_ms: i64) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let delay_ms = i64::try_from(self.read_delay.as_millis()).unwrap_or(i64::MAX);
        let remaining = newest_ms.saturating_add(delay_ms).saturating_sub(now_ms);
        if remaining > 0 {
            let wait = Duration::from_millis(remaining.unsigned_abs()).min(self.read_delay);
            tracing::debug!(wait_ms = wait.as_millis(), "waiting for the replicas");
            tokio::time::sleep(wait).await;
        }
    }

    /// The subjects of `ids` as they are now (absent ones are missing from the map).
    async fn load(&self, ids: &BTreeSet<u32>) -> Result<BTreeMap<u32, Subject>, HandlerError> {
        let mut query = QueryBuilder::new(
            "SELECT subject_id, subject_type_id, subject_platform, field_infobox FROM chii_subjects WHERE subject_id IN (",
        );
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        query.push(")");
        let rows: Vec<Subject> = query
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| transient("reading chii_subjects", e))?;
        Ok(rows.into_iter().map(|s| (s.subject_id, s)).collect())
    }

    /// Writes `updates` with one statement: the rows of a derived table of the new values,
    /// joined to `chii_subject_fields` (a subject without a fields row gets none, as in the
    /// legacy's `UPDATE … WHERE field_sid = ?`). In shadow mode, in a transaction rolled back:
    /// the statement meets the same checks, and changes nothing.
    async fn store(&self, updates: &[(u32, Fields)]) -> Result<(), HandlerError> {
        let mut query = QueryBuilder::new("UPDATE chii_subject_fields f JOIN (");
        for (n, (id, fields)) in updates.iter().enumerate() {
            query.push(if n == 0 {
                "SELECT "
            } else {
                " UNION ALL SELECT "
            });
            query
                .push_bind(*id)
                .push(" AS sid, ")
                .push_bind(fields.year)
                .push(" AS year, ")
                .push_bind(fields.month)
                .push(" AS mon, ")
                .push_bind(&fields.date)
                .push(" AS date");
        }
        query.push(
            ") v ON f.field_sid = v.sid \
             SET f.field_year = v.year, f.field_mon = v.mon, f.field_date = v.date",
        );
        if !self.effects.is_shadow() {
            return query
                .build()
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(|e| classify("updating chii_subject_fields", e));
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| transient("starting a transaction", e))?;
        query
            .build()
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("updating chii_subject_fields", e))?;
        tx.rollback()
            .await
            .map_err(|e| transient("rolling back", e))
    }
}

impl SubjectDate {
    /// In shadow mode: each record's planned row, the `chii_subject_fields` update of its
    /// subject (a subject changed by several records of the batch is written once, and
    /// planned for each).
    fn plan(&self, batch: &[Record], triggers: &[Trigger], updates: &[(u32, Fields)]) {
        if !self.effects.is_shadow() {
            return;
        }
        for (record, trigger) in batch.iter().zip(triggers) {
            let Trigger::Subject { id, .. } = trigger else {
                continue;
            };
            if let Some((_, fields)) = updates.iter().find(|(sid, _)| sid == id) {
                let row = serde_json::json!({
                    "field_sid": id,
                    "field_year": fields.year,
                    "field_mon": fields.month,
                    "field_date": fields.date,
                });
                self.effects.plan(
                    std::slice::from_ref(record),
                    vec![Effect::on("update", "chii_subject_fields").with_value(row)],
                );
            }
        }
    }
}

/// The date `subject` should have, or why it keeps what it has.
fn decide(subject: &Subject) -> Result<Fields, &'static str> {
    let wiki = bangumi_wiki::parse(&subject.field_infobox).map_err(|error| {
        tracing::info!(subject_id = subject.subject_id, %error, "infobox does not parse; date left as is");
        "unparseable_infobox"
    })?;
    date::extract(&wiki, subject.subject_type_id, subject.subject_platform)
        .fields()
        .map_err(date::NotStored::reason)
}

/// What `record` asks for.
fn trigger(record: &Record) -> Trigger {
    let Event::Change(event) = &record.event else {
        return Trigger::Done(Outcome::Skipped("not_a_change"));
    };
    let ChangeEvent::Row(change) = event.as_ref() else {
        return Trigger::Done(Outcome::Skipped("op_without_effect"));
    };
    match change.op {
        Op::Create | Op::Update => {}
        Op::Read => return Trigger::Done(Outcome::Skipped("snapshot")),
        Op::Delete => return Trigger::Done(Outcome::Skipped("op_without_effect")),
    }
    match subject_of(change) {
        Ok(Some(id)) => Trigger::Subject {
            id,
            written_ms: change.source.ts_ms,
        },
        Ok(None) => Trigger::Done(Outcome::Skipped("unknown_table")),
        Err(message) => Trigger::Done(Outcome::Rejected(message)),
    }
}

/// The subject a create or update of `change`'s table is about; `None` for another table.
fn subject_of(change: &RowChange) -> Result<Option<u32>, String> {
    let (row, column, part) = match change.table() {
        SUBJECTS => (change.key.as_ref(), "subject_id", "key"),
        REVISIONS => (change.after.as_ref(), "rev_subject_id", "after"),
        _ => return Ok(None),
    };
    let table = change.table();
    let row = row.ok_or_else(|| format!("{table}: the message has no {part} (needs {column})"))?;
    let id = row
        .u64(column)
        .map_err(|e| format!("{table}: {part}: {e}"))?;
    u32::try_from(id)
        .map(Some)
        .map_err(|_| format!("{table}: {part}: {column} {id} is not a subject id"))
}

impl Handler for SubjectDate {
    fn row_columns(table: &str) -> Columns {
        match table {
            REVISIONS => Columns::Only(&["rev_subject_id"]),
            _ => Columns::Only(&[]),
        }
    }

    /// The date is recomputed from the current row: which delivery a record is does not matter.
    const READS_IDENTITY: bool = false;

    const SHADOW: bool = true;

    async fn apply(&self, batch: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        let triggers: Vec<Trigger> = batch.iter().map(trigger).collect();
        let mut ids = BTreeSet::new();
        let mut newest_ms = None;
        for trigger in &triggers {
            if let Trigger::Subject { id, written_ms } = trigger {
                ids.insert(*id);
                newest_ms = newest_ms.max(Some(*written_ms));
            }
        }
        if let Some(newest_ms) = newest_ms {
            self.wait_for_replicas(newest_ms).await;
        }
        // Each subject once, whatever number of its changes the batch holds.
        let subjects = if ids.is_empty() {
            BTreeMap::new()
        } else {
            self.load(&ids).await.map_err(|e| e.at(&self.mysql))?
        };
        let mut outcomes = BTreeMap::new();
        let mut updates = Vec::new();
        for id in ids {
            let outcome = match subjects.get(&id).map(decide) {
                None => Outcome::Skipped("missing_subject"),
                Some(Err(reason)) => Outcome::Skipped(reason),
                Some(Ok(fields)) => {
                    updates.push((id, fields));
                    Outcome::Applied
                }
            };
            outcomes.insert(id, outcome);
        }
        if !updates.is_empty() {
            self.store(&updates).await.map_err(|e| e.at(&self.mysql))?;
            self.plan(batch, &triggers, &updates);
        }
        Ok(triggers
            .into_iter()
            .map(|trigger| match trigger {
                Trigger::Subject { id, .. } => outcomes[&id].clone(),
                Trigger::Done(outcome) => outcome,
            })
            .collect())
    }
}
