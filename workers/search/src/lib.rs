//! The search family: Bangumi's Meilisearch indexes `subjects`, `characters` and `persons` kept
//! in step with MariaDB, with the documents Bangumi's Go indexer (`bangumi/server` `canal/`,
//! `internal/search/`) builds.
//!
//! Any change of `chii_subjects`, `chii_subject_fields`, `chii_characters` or `chii_persons`
//! (create, update, snapshot read or delete) rebuilds the document of the entity its key names
//! from the entity's rows **as they are now**: a missing row (deleted), a redirect or a ban
//! removes the document; otherwise it is replaced whole. So a late, repeated or reordered event
//! can never leave the index older than a fresh load of the rows.
//!
//! A batch loads each index's entities with one `SELECT … IN` and enqueues one replace task and
//! one delete task per index ([`Handler::start`]); its offsets are stored only once Meilisearch
//! reports them succeeded (the batch's confirmation). Meanwhile the partition's next batches are
//! enqueued ([`Search::UNCONFIRMED_BATCHES`]), and partitions run in parallel, so Meilisearch
//! always has work queued.
//!
//! In shadow mode (`RUN_MODE=shadow`) a batch reads its rows and builds its documents as in live
//! mode, enqueues nothing (no Meilisearch request at all) and plans each record's effect on its
//! entity's document (`Search::plan`).
//!
//! # Layout
//! - [`document`]: rows → documents, the Go indexer's rules (pure).
//! - [`meili`]: the Meilisearch calls and their failure classes.
//! - [`settings`]: the indexes' settings, declared once; [`cli`]: the binary's command line.
//! - [`reindex`]: `search reindex`, a whole index rebuilt from MariaDB and swapped in.
//! - [`Index`]: the three indexes and the tables that feed them; [`built`]: rows → documents.
//! - [`Settings`]: this family's settings; [`Search`]: the [`Handler`].

pub mod cli;
pub mod document;
pub mod meili;
pub mod reindex;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cdc_runtime::cli::FamilySettings;
use cdc_runtime::config::ConfigError;
use cdc_runtime::mysql::transient;
use cdc_runtime::shadow::{Effect, Effects, compare::Compared};
use cdc_runtime::{
    Confirmation, Dependency, Event, Handler, HandlerError, Outcome, Record, Started, WorkerConfig,
};
use cdc_schemas::{ChangeEvent, Columns};
use serde_json::{Map, Value, json};
use sqlx::{MySqlPool, QueryBuilder};

use crate::document::{Built, CharacterRow, PersonRow, SubjectRow};
use crate::meili::{Meilisearch, Task};

/// The family's name in `topics/`.
pub const FAMILY: &str = "search";

/// A Meilisearch index of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Index {
    /// `subjects`: `chii_subjects` with `chii_subject_fields`.
    Subjects,
    /// `characters`: `chii_characters`.
    Characters,
    /// `persons`: `chii_persons`.
    Persons,
}

impl Index {
    /// Every index.
    pub const ALL: [Index; 3] = [Index::Subjects, Index::Characters, Index::Persons];

    /// The index's name (before `MEILISEARCH_INDEX_PREFIX`).
    pub fn name(self) -> &'static str {
        match self {
            Index::Subjects => "subjects",
            Index::Characters => "characters",
            Index::Persons => "persons",
        }
    }

    /// The index's name after `prefix` (`MEILISEARCH_INDEX_PREFIX`).
    pub fn name_with(self, prefix: &str) -> String {
        format!("{prefix}{}", self.name())
    }

    /// The index a change of `table` is about, and the key column naming the entity.
    fn of_table(table: &str) -> Option<(Index, &'static str)> {
        match table {
            "chii_subjects" => Some((Index::Subjects, "subject_id")),
            "chii_subject_fields" => Some((Index::Subjects, "field_sid")),
            "chii_characters" => Some((Index::Characters, "crt_id")),
            "chii_persons" => Some((Index::Persons, "prsn_id")),
            _ => None,
        }
    }
}

/// Settings of this family, beside the runtime's [`WorkerConfig`].
#[derive(Clone, clap::Args)]
pub struct Settings {
    /// Meilisearch's address.
    #[arg(long, env = "MEILISEARCH_URL", default_value = "http://127.0.0.1:7700")]
    pub meilisearch_url: String,
    /// Meilisearch's API key (a key with the documents and tasks rights; the master key works).
    #[arg(
        long,
        env = "MEILISEARCH_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub meilisearch_key: String,
    /// Prefix of every index name (staging copies, tests); empty in production.
    #[arg(long, env = "MEILISEARCH_INDEX_PREFIX", default_value = "")]
    pub meilisearch_index_prefix: String,
    /// How long one Meilisearch request may take before it counts as failed (and is retried).
    #[arg(long, env = "MEILISEARCH_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub meilisearch_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl FamilySettings for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(&self.meilisearch_url);
        if !url.is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            return Err(ConfigError::Invalid {
                name: "MEILISEARCH_URL".into(),
                reason: format!(
                    "{}: not an http(s) URL",
                    cdc_runtime::config::redact_uri(&self.meilisearch_url)
                ),
            });
        }
        if self.meilisearch_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                name: "MEILISEARCH_TIMEOUT".into(),
                reason: "must be more than 0".into(),
            });
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "search.meilisearch_url = {}\nsearch.meilisearch_key = {}\nsearch.meilisearch_index_prefix = {:?}\nsearch.meilisearch_timeout = {}",
            cdc_runtime::config::redact_uri(&self.meilisearch_url),
            if self.meilisearch_key.is_empty() {
                "(none)"
            } else {
                "***"
            },
            self.meilisearch_index_prefix,
            humantime::format_duration(self.meilisearch_timeout)
        )
    }
}

/// What a record asks for.
enum Target {
    /// Rebuild this entity's document; `deleted`: the record is a delete of its row.
    Entity {
        index: Index,
        id: u32,
        deleted: bool,
    },
    /// Nothing to do.
    Done(Outcome),
}

/// What an entity's rows make of its document.
enum Change {
    Replace(Map<String, Value>),
    /// Removed: the reason is the outcome of the entity's records.
    Remove(Outcome),
    /// The rows cannot make a document: the entity's records are dead-lettered with this.
    Unusable(String),
}

/// The family's handler.
pub struct Search {
    pool: MySqlPool,
    mysql: Dependency,
    meilisearch: Meilisearch,
    index_prefix: String,
    effects: Effects,
}

impl Search {
    /// Connects (lazily: MySQL and Meilisearch may be down at start).
    pub async fn connect(config: WorkerConfig, settings: Settings) -> anyhow::Result<Self> {
        Ok(Self {
            pool: cdc_runtime::mysql::pool(&config),
            mysql: Dependency::mysql(&config.mysql_host, config.mysql_port),
            meilisearch: Meilisearch::new(
                &settings.meilisearch_url,
                &settings.meilisearch_key,
                settings.meilisearch_timeout,
            )?,
            index_prefix: settings.meilisearch_index_prefix,
            // Meilisearch effects: planned, not compared.
            effects: Effects::open(&config, FAMILY, Compared::default()).await?,
        })
    }

    /// The full name of `index`.
    pub fn index_name(&self, index: Index) -> String {
        index.name_with(&self.index_prefix)
    }

    /// What the rows of `ids` of `index` make now.
    async fn changes(
        &self,
        index: Index,
        ids: &BTreeSet<u32>,
    ) -> Result<BTreeMap<u32, Change>, HandlerError> {
        let built = built(&self.pool, index, Rows::Ids(ids)).await?;
        Ok(ids
            .iter()
            .map(|id| {
                let change = match built.get(id) {
                    None => Change::Remove(Outcome::Skipped("missing")),
                    Some(Ok(Built::Document(doc))) => Change::Replace(doc.clone()),
                    Some(Ok(Built::Redirected)) => Change::Remove(Outcome::Applied),
                    Some(Ok(Built::Banned)) => Change::Remove(Outcome::Applied),
                    Some(Err(message)) => {
                        Change::Unusable(format!("{} {id}: {message}", index.name()))
                    }
                };
                (*id, change)
            })
            .collect())
    }

    /// Enqueues `changes` of `index`: one replace task, one delete task.
    async fn enqueue(
        &self,
        index: Index,
        changes: &BTreeMap<u32, Change>,
    ) -> Result<Vec<Task>, HandlerError> {
        let name = self.index_name(index);
        let mut replaced = Vec::new();
        let mut removed = Vec::new();
        for (id, change) in changes {
            match change {
                Change::Replace(doc) => replaced.push(doc.clone()),
                Change::Remove(_) => removed.push(*id),
                Change::Unusable(_) => {}
            }
        }
        let mut tasks = Vec::new();
        if !replaced.is_empty() {
            tasks.push(self.meilisearch.replace_documents(&name, &replaced).await?);
        }
        if !removed.is_empty() {
            tasks.push(self.meilisearch.delete_documents(&name, &removed).await?);
        }
        Ok(tasks)
    }

    /// In shadow mode, instead of [`Search::enqueue`]: each record's planned effect on its
    /// entity's document in the index live mode would write — `upsert_document` with the whole
    /// document (its `id` included) the replace task would carry, or `delete_document` with the
    /// id the delete task would carry. The tasks merge the batch (an entity changed by several
    /// records is written once, as its rows are now); each of those records plans the same
    /// effect, so every line names the record that caused it. A record whose rows cannot make
    /// a document plans nothing here: the runtime plans its dead letter.
    fn plan(
        &self,
        batch: &[Record],
        targets: &[Target],
        changes: &BTreeMap<Index, BTreeMap<u32, Change>>,
    ) {
        for (record, target) in batch.iter().zip(targets) {
            let Target::Entity { index, id, .. } = target else {
                continue;
            };
            let name = self.index_name(*index);
            let effect = match changes.get(index).and_then(|c| c.get(id)) {
                Some(Change::Replace(doc)) => {
                    Effect::on("upsert_document", name).with_value(Value::Object(doc.clone()))
                }
                Some(Change::Remove(_)) => {
                    Effect::on("delete_document", name).with_value(json!(id))
                }
                Some(Change::Unusable(_)) | None => continue,
            };
            self.effects
                .plan(std::slice::from_ref(record), vec![effect]);
        }
    }
}

/// Subjects with their `chii_subject_fields` row (left-joined: a subject may lack it).
const SUBJECTS_SQL: &str = "SELECT s.subject_id, s.subject_type_id, s.subject_name, s.subject_name_cn, \
     s.field_infobox, s.field_meta_tags, s.subject_platform, s.subject_nsfw, s.subject_ban, \
     s.subject_wish, s.subject_collect, s.subject_doing, s.subject_on_hold, s.subject_dropped, \
     f.field_tags, \
     CAST(f.field_rate_1 + 2 * f.field_rate_2 + 3 * f.field_rate_3 + 4 * f.field_rate_4 + \
          5 * f.field_rate_5 + 6 * f.field_rate_6 + 7 * f.field_rate_7 + 8 * f.field_rate_8 + \
          9 * f.field_rate_9 + 10 * f.field_rate_10 AS UNSIGNED) AS weighted_votes, \
     CAST(f.field_rate_1 + f.field_rate_2 + f.field_rate_3 + f.field_rate_4 + f.field_rate_5 + \
          f.field_rate_6 + f.field_rate_7 + f.field_rate_8 + f.field_rate_9 + f.field_rate_10 \
          AS UNSIGNED) AS votes, \
     f.field_rank, CAST(f.field_date AS CHAR) AS field_date, f.field_redirect \
     FROM chii_subjects s LEFT JOIN chii_subject_fields f ON f.field_sid = s.subject_id WHERE ";

const CHARACTERS_SQL: &str = "SELECT crt_id, crt_name, crt_infobox, crt_comment, crt_collects, crt_nsfw, \
     crt_redirect FROM chii_characters WHERE ";

const PERSONS_SQL: &str = "SELECT prsn_id, prsn_name, prsn_infobox, prsn_comment, prsn_collects, \
     prsn_redirect, prsn_writer, prsn_producer, prsn_mangaka, prsn_artist, prsn_seiyu, \
     prsn_illustrator, prsn_actor FROM chii_persons WHERE ";

/// Which rows of an index to read.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// The entities `ids` (a batch of changes).
    Ids(&'a BTreeSet<u32>),
    /// The first `limit` entities after id `after`, in id order (a page of a reindex).
    Page { after: u32, limit: usize },
}

impl Index {
    /// The index's SELECT (ending in `WHERE `) and its id column.
    fn select(self) -> (&'static str, &'static str) {
        match self {
            Index::Subjects => (SUBJECTS_SQL, "s.subject_id"),
            Index::Characters => (CHARACTERS_SQL, "crt_id"),
            Index::Persons => (PERSONS_SQL, "prsn_id"),
        }
    }

    /// The id column of [`Index::table`].
    pub fn key_column(self) -> &'static str {
        match self {
            Index::Subjects => "subject_id",
            Index::Characters => "crt_id",
            Index::Persons => "prsn_id",
        }
    }

    /// The table with one row per entity of the index.
    pub fn table(self) -> &'static str {
        match self {
            Index::Subjects => "chii_subjects",
            Index::Characters => "chii_characters",
            Index::Persons => "chii_persons",
        }
    }
}

/// What the rows `rows` of `index` make, by id: a document, or why none, or why the rows cannot
/// make one. Entities without a row are absent.
pub async fn built(
    pool: &MySqlPool,
    index: Index,
    rows: Rows<'_>,
) -> Result<BTreeMap<u32, Result<Built, String>>, HandlerError> {
    Ok(match index {
        Index::Subjects => load::<SubjectRow>(pool, index, rows)
            .await?
            .into_iter()
            .map(|row| (row.subject_id, row.build()))
            .collect(),
        Index::Characters => load::<CharacterRow>(pool, index, rows)
            .await?
            .into_iter()
            .map(|row| (row.crt_id, Ok(row.build())))
            .collect(),
        Index::Persons => load::<PersonRow>(pool, index, rows)
            .await?
            .into_iter()
            .map(|row| (row.prsn_id, Ok(row.build())))
            .collect(),
    })
}

/// The rows `rows` of `index`: its SELECT with `id IN (…)`, or `id > ? ORDER BY id LIMIT ?`.
async fn load<T>(pool: &MySqlPool, index: Index, rows: Rows<'_>) -> Result<Vec<T>, HandlerError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow> + Send + Unpin,
{
    let (select, id_column) = index.select();
    let mut query = QueryBuilder::new(select);
    query.push(id_column);
    match rows {
        Rows::Ids(ids) => {
            query.push(" IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            query.push(")");
        }
        Rows::Page { after, limit } => {
            query
                .push(" > ")
                .push_bind(after)
                .push(" ORDER BY ")
                .push(id_column)
                .push(" LIMIT ")
                .push_bind(u64::try_from(limit).unwrap_or(u64::MAX));
        }
    }
    query
        .build_query_as()
        .fetch_all(pool)
        .await
        .map_err(|e| transient(&format!("reading {id_column}"), e))
}

/// What `record` asks for.
fn target(record: &Record) -> Target {
    let Event::Change(event) = &record.event else {
        return Target::Done(Outcome::Skipped("not_a_change"));
    };
    let ChangeEvent::Row(change) = event.as_ref() else {
        return Target::Done(Outcome::Skipped("op_without_effect"));
    };
    let table = change.table();
    let Some((index, column)) = Index::of_table(table) else {
        return Target::Done(Outcome::Skipped("unknown_table"));
    };
    let Some(key) = change.key.as_ref() else {
        return Target::Done(Outcome::Rejected(format!(
            "{table}: the message has no key (needs {column})"
        )));
    };
    match key.u64(column).map(u32::try_from) {
        Ok(Ok(id)) => Target::Entity {
            index,
            id,
            deleted: change.op == cdc_schemas::Op::Delete,
        },
        Ok(Err(_)) => Target::Done(Outcome::Rejected(format!(
            "{table}: key: {column} is not an id"
        ))),
        Err(e) => Target::Done(Outcome::Rejected(format!("{table}: key: {e}"))),
    }
}

impl Handler for Search {
    /// The id comes from the key; documents from the rows as they are now.
    fn row_columns(_table: &str) -> Columns {
        Columns::Only(&[])
    }

    const READS_IDENTITY: bool = false;

    /// Meilisearch merges the tasks enqueued while it indexes into its next indexing batch:
    /// several batches waiting keep it busy, as the Go worker's asynchronous writes do.
    const UNCONFIRMED_BATCHES: usize = 4;

    const SHADOW: bool = true;

    async fn apply(&self, batch: &[Record]) -> Result<Vec<Outcome>, HandlerError> {
        let Started {
            outcomes,
            confirmation,
        } = self.start(batch).await?;
        if let Some(confirmation) = confirmation {
            confirmation.await?;
        }
        Ok(outcomes)
    }

    /// Enqueues the batch's tasks; the confirmation waits for them to succeed. In shadow mode,
    /// plans them instead (`Search::plan`): nothing to confirm.
    async fn start(&self, batch: &[Record]) -> Result<Started, HandlerError> {
        let targets: Vec<Target> = batch.iter().map(target).collect();
        let mut ids: BTreeMap<Index, BTreeSet<u32>> = BTreeMap::new();
        for target in &targets {
            if let Target::Entity { index, id, .. } = target {
                ids.entry(*index).or_default().insert(*id);
            }
        }
        let mut changes = BTreeMap::new();
        for (index, ids) in &ids {
            let of_index = self
                .changes(*index, ids)
                .await
                .map_err(|e| e.at(&self.mysql))?;
            changes.insert(*index, of_index);
        }
        let mut tasks = Vec::new();
        if self.effects.is_shadow() {
            self.plan(batch, &targets, &changes);
        } else {
            for (index, of_index) in &changes {
                tasks.extend(self.enqueue(*index, of_index).await?);
            }
        }
        let outcomes = targets
            .into_iter()
            .map(|target| match target {
                Target::Entity { index, id, deleted } => {
                    match changes.get(&index).and_then(|c| c.get(&id)) {
                        Some(Change::Replace(_)) => Outcome::Applied,
                        Some(Change::Remove(_)) if deleted => Outcome::Applied,
                        Some(Change::Remove(outcome)) => outcome.clone(),
                        Some(Change::Unusable(message)) => Outcome::Rejected(message.clone()),
                        None => Outcome::Skipped("missing"),
                    }
                }
                Target::Done(outcome) => outcome,
            })
            .collect();
        let meilisearch = self.meilisearch.clone();
        let confirmation = (!tasks.is_empty()).then(|| -> Confirmation {
            Box::pin(async move {
                for task in tasks {
                    meilisearch.wait(task).await?;
                }
                Ok(())
            })
        });
        Ok(Started {
            outcomes,
            confirmation,
        })
    }
}
