//! `search reindex`: an index rebuilt whole from MariaDB into a new index, then swapped in, so
//! search never serves a half-built index. The on-call's tool (and a Helm Job); the worker never
//! reindexes by itself (the Go indexer reindexes into the live index at start-up).
//!
//! For each index: the rows are read in id order, a page at a time (`… WHERE id > ? ORDER BY id
//! LIMIT n`, the worker's SELECTs), made into documents by the worker's rules ([`crate::built`]),
//! and written to `<live>__reindex` ([`target_name`]), created with the live index's settings
//! (the declared ones when there is no live index yet). Several pages are indexed at once; every
//! `--record-every`, the last id of a page whose task and those of the pages before it succeeded
//! is recorded in the state index `<prefix>search_reindex_state` ([`state_index`]), one document
//! per index; a rerun that finds the target and its state resumes after that id, and without state
//! it starts over. At the end the state is deleted, the live index and the target are swapped (one atomic Meilisearch task), and the old index is deleted. That order keeps a
//! rerun correct after a kill at any point: it never resumes into an index already swapped.
//!
//! Not handled: the worker keeps writing the live index meanwhile; a change to a row the reindex
//! has already read is in the old index only, and missing after the swap until that entity's next
//! change. Reindex with the worker stopped (or at a quiet time); see the README.
//!
//! # Layout
//! - [`Options`]: rate, page size, dry run; [`Summary`]: what a run did.
//! - [`Reindexer`]: the connections; [`Reindexer::run`] reindexes one index.
//! - [`ReindexError`]: which store failed.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use cdc_runtime::{Dependency, HandlerError};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use sqlx::MySqlPool;

use crate::document::Built;
use crate::meili::{Meilisearch, Task};
use crate::{Index, Rows, built};

/// How a reindex runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// At most this many rows read (and documents written) per second.
    pub rate: Option<u32>,
    /// Read and build everything, write nothing.
    pub dry_run: bool,
    /// Rows per page (one SELECT, one replace task).
    pub page_size: usize,
    /// How often progress is recorded in the state index (at most once per page).
    pub record_every: Duration,
}

/// What a reindex of one index did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Documents written (or, in a dry run, built).
    pub written: u64,
    /// Entities without a document: redirected or banned.
    pub skipped: u64,
    /// Entities whose rows cannot make a document: id and reason.
    pub unusable: Vec<(u32, String)>,
    /// The id this run resumed after, if it resumed.
    pub resumed_after: Option<u32>,
    /// How long it took.
    pub elapsed: Duration,
}

/// A store failed; the run stops (a rerun resumes).
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    /// Reading the rows.
    #[error("MariaDB ({address}): {source:#}")]
    MariaDb {
        address: String,
        source: anyhow::Error,
    },
    /// Any Meilisearch call.
    #[error("Meilisearch ({address}): {source:#}")]
    Meilisearch {
        address: String,
        source: anyhow::Error,
    },
}

/// Pages being indexed while the next ones are read: Meilisearch merges the tasks enqueued while
/// it indexes into its next indexing batch, and each batch has a fixed cost (≈ 0.7 s here).
const PAGES_IN_FLIGHT: usize = 16;

/// `<live>__reindex`: where `live` is rebuilt (fixed, so a rerun finds it).
pub fn target_name(live: &str) -> String {
    format!("{live}__reindex")
}

/// `<prefix>search_reindex_state`: one document per index being rebuilt.
pub fn state_index(prefix: &str) -> String {
    format!("{prefix}search_reindex_state")
}

/// The indexes a reindex of one index uses.
struct Names {
    /// The live index.
    live: String,
    /// Where it is rebuilt ([`target_name`]).
    target: String,
    /// The state index ([`state_index`]).
    state: String,
}

impl Names {
    fn of(index: Index, prefix: &str) -> Self {
        let live = index.name_with(prefix);
        Self {
            target: target_name(&live),
            state: state_index(prefix),
            live,
        }
    }
}

/// The connections a reindex uses.
pub struct Reindexer {
    pool: MySqlPool,
    mysql: Dependency,
    meilisearch: Meilisearch,
    prefix: String,
}

impl Reindexer {
    /// Over `pool` (the MariaDB at `mysql`), `meilisearch`, indexes named after `prefix`.
    pub fn new(pool: MySqlPool, mysql: Dependency, meilisearch: Meilisearch, prefix: &str) -> Self {
        Self {
            pool,
            mysql,
            meilisearch,
            prefix: prefix.to_owned(),
        }
    }

    fn mariadb(&self, source: impl Into<anyhow::Error>) -> ReindexError {
        ReindexError::MariaDb {
            address: self.mysql.address().to_owned(),
            source: source.into(),
        }
    }

    fn meili(&self, source: impl Into<anyhow::Error>) -> ReindexError {
        ReindexError::Meilisearch {
            address: self.meilisearch.at.address().to_owned(),
            source: source.into(),
        }
    }

    /// Rebuilds `index` (see the module's doc); progress on a bar (stderr, when a terminal),
    /// what it does as lines on `out`.
    pub async fn run(
        &self,
        index: Index,
        options: &Options,
        out: &mut impl Write,
    ) -> Result<Summary, ReindexError> {
        let started = Instant::now();
        let names = Names::of(index, &self.prefix);
        let (live, target) = (&names.live, &names.target);
        let mut summary = Summary::default();

        // MariaDB first: nothing is created in Meilisearch while the rows cannot be read.
        let total = self.remaining(index, 0).await?;
        let after = if options.dry_run {
            0
        } else {
            self.prepare(index, &names).await?
        };
        if after > 0 {
            summary.resumed_after = Some(after);
            let _ = writeln!(out, "{live}: resuming into {target} after id {after}");
        } else if !options.dry_run {
            let _ = writeln!(out, "{live}: rebuilding into {target}");
        }
        let remaining = if after > 0 {
            self.remaining(index, after).await?
        } else {
            total
        };
        let bar = progress_bar(remaining, live);
        let result = self
            .pages(index, after, options, &names, &bar, &mut summary)
            .await;
        bar.finish_and_clear();
        result?;

        if !options.dry_run {
            self.swap_in(index, &names).await?;
        }
        summary.elapsed = started.elapsed();
        report(out, live, options.dry_run, &summary);
        Ok(summary)
    }

    /// The id to resume after: the state's when the target exists and the state names it;
    /// otherwise 0, with the target (re)created empty with the live index's settings.
    async fn prepare(&self, index: Index, names: &Names) -> Result<u32, ReindexError> {
        let (live, target, state_uid) = (&names.live, &names.target, &names.state);
        let m = &self.meilisearch;
        let state = m
            .document(state_uid, index.name())
            .await
            .map_err(|e| self.meili(handler_error(e)))?;
        let target_exists = m
            .settings(target)
            .await
            .map_err(|e| self.meili(e))?
            .is_some();
        if let Some(state) = &state
            && target_exists
            && state["target"] == target.as_str()
            && let Some(after) = state["after_id"]
                .as_u64()
                .and_then(|a| u32::try_from(a).ok())
        {
            return Ok(after);
        }
        if target_exists {
            m.delete_index(target)
                .await
                .map_err(|e| self.meili(handler_error(e)))?;
        }
        let settings = match m.settings(live).await.map_err(|e| self.meili(e))? {
            Some(current) => without_nulls(current),
            None => index.settings(),
        };
        m.create_index(target).await.map_err(|e| self.meili(e))?;
        m.update_settings(target, &settings)
            .await
            .map_err(|e| self.meili(e))?;
        let recorded = self.record(index, names, 0).await?;
        m.wait(recorded)
            .await
            .map_err(|e| self.meili(handler_error(e)))?;
        Ok(0)
    }

    /// How many entities of `index` have an id after `after`.
    async fn remaining(&self, index: Index, after: u32) -> Result<u64, ReindexError> {
        let (table, column) = (index.table(), index.key_column());
        let count: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} > ?"))
                .bind(after)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.mariadb(anyhow::anyhow!("counting {table}: {e}")))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Every page after `after`: read, built, written to `target` and recorded (not in a dry run).
    /// Up to [`PAGES_IN_FLIGHT`] pages are being indexed while the next ones are read; progress
    /// is recorded every `record_every`, up to a page that succeeded with every page before it.
    async fn pages(
        &self,
        index: Index,
        mut after: u32,
        options: &Options,
        names: &Names,
        bar: &ProgressBar,
        summary: &mut Summary,
    ) -> Result<(), ReindexError> {
        let paced_from = Instant::now();
        let mut recorded = paced_from;
        let mut read: u64 = 0;
        // Pages written, oldest first: each one's task (none without documents) and last id.
        let mut writing: VecDeque<(Option<Task>, u32)> = VecDeque::new();
        loop {
            let rows = built(
                &self.pool,
                index,
                Rows::Page {
                    after,
                    limit: options.page_size,
                },
            )
            .await
            .map_err(|e| self.mariadb(handler_error(e)))?;
            let Some(last) = rows.keys().next_back().copied() else {
                break;
            };
            let mut documents: Vec<Map<String, Value>> = Vec::with_capacity(rows.len());
            for (id, made) in rows.iter() {
                match made {
                    Ok(Built::Document(doc)) => documents.push(doc.clone()),
                    Ok(Built::Redirected | Built::Banned) => summary.skipped += 1,
                    Err(reason) => summary.unusable.push((*id, reason.clone())),
                }
            }
            if !options.dry_run {
                let task = if documents.is_empty() {
                    None
                } else {
                    Some(
                        self.meilisearch
                            .replace_documents(&names.target, &documents)
                            .await
                            .map_err(|e| self.meili(handler_error(e)))?,
                    )
                };
                writing.push_back((task, last));
                while writing.len() >= PAGES_IN_FLIGHT {
                    let done = self.written(&mut writing).await?;
                    if recorded.elapsed() >= options.record_every {
                        self.record(index, names, done).await?;
                        recorded = Instant::now();
                    }
                }
            }
            summary.written += documents.len() as u64;
            read += rows.len() as u64;
            bar.inc(rows.len() as u64);
            after = last;
            if let Some(rate) = options.rate.filter(|r| *r > 0) {
                let due = paced_from + Duration::from_secs_f64(read as f64 / f64::from(rate));
                tokio::time::sleep_until(due.into()).await;
            }
        }
        while !writing.is_empty() {
            self.written(&mut writing).await?;
        }
        Ok(())
    }

    /// Waits for the oldest page of `writing` to succeed; returns its last id.
    async fn written(
        &self,
        writing: &mut VecDeque<(Option<Task>, u32)>,
    ) -> Result<u32, ReindexError> {
        let Some((task, last)) = writing.pop_front() else {
            return Ok(0);
        };
        if let Some(task) = task {
            self.meilisearch
                .wait(task)
                .await
                .map_err(|e| self.meili(handler_error(e)))?;
        }
        Ok(last)
    }

    /// Records that every entity of `index` up to `after_id` is in the target: enqueues the
    /// state's task, without waiting for it (Meilisearch runs tasks in order, so the state
    /// never gets ahead of the pages written before it).
    async fn record(
        &self,
        index: Index,
        names: &Names,
        after_id: u32,
    ) -> Result<Task, ReindexError> {
        let state = Map::from_iter([
            ("id".to_owned(), json!(index.name())),
            ("after_id".to_owned(), json!(after_id)),
            ("target".to_owned(), json!(names.target)),
        ]);
        self.meilisearch
            .replace_documents(&names.state, &[state])
            .await
            .map_err(|e| self.meili(handler_error(e)))
    }

    /// Deletes the state, swaps `target` in as `live` (creating `live` first if missing), and
    /// deletes the old index (now named `target`).
    async fn swap_in(&self, index: Index, names: &Names) -> Result<(), ReindexError> {
        let (live, target, state_uid) = (&names.live, &names.target, &names.state);
        let m = &self.meilisearch;
        let task = m
            .delete_documents_by_key(state_uid, &[index.name()])
            .await
            .map_err(|e| self.meili(handler_error(e)))?;
        m.wait(task)
            .await
            .map_err(|e| self.meili(handler_error(e)))?;
        if m.settings(live).await.map_err(|e| self.meili(e))?.is_none() {
            m.create_index(live).await.map_err(|e| self.meili(e))?;
        }
        m.swap_indexes(live, target)
            .await
            .map_err(|e| self.meili(handler_error(e)))?;
        m.delete_index(target)
            .await
            .map_err(|e| self.meili(handler_error(e)))
    }
}

/// A [`HandlerError`]'s cause, without its class.
fn handler_error(error: HandlerError) -> anyhow::Error {
    match error {
        HandlerError::Transient(e) | HandlerError::Permanent(e) => e,
    }
}

/// Settings as `GET …/settings` gives them, without the nulls (unset; `PATCH` would reset them).
fn without_nulls(settings: Value) -> Value {
    match settings {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}

/// A bar of `total` rows on stderr; indicatif hides it when stderr is not a terminal.
fn progress_bar(total: u64, live: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} rows, {per_sec}, eta {eta}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(live.to_owned());
    bar
}

/// The summary lines of a run.
fn report(out: &mut impl Write, live: &str, dry_run: bool, summary: &Summary) {
    for (id, reason) in &summary.unusable {
        let _ = writeln!(out, "{live}: {id}: unusable, no document: {reason}");
    }
    let seconds = summary.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        summary.written as f64 / seconds
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "{live}: {} {} documents, {} skipped (redirected or banned), {} unusable, in {:.1}s ({rate:.0} documents/s){}",
        if dry_run {
            "dry run: would write"
        } else {
            "wrote"
        },
        summary.written,
        summary.skipped,
        summary.unusable.len(),
        seconds,
        if dry_run {
            "; nothing written"
        } else {
            "; swapped in"
        },
    );
    if !dry_run {
        let _ = writeln!(
            out,
            "{live}: note: changes made while reindexing to rows already read are missing until \
             their next change; run with the worker stopped or reindex at a quiet time"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fixed_so_a_rerun_finds_them() {
        let names = Names::of(Index::Subjects, "staging_");
        assert_eq!(names.live, "staging_subjects");
        assert_eq!(names.target, "staging_subjects__reindex");
        assert_eq!(names.state, "staging_search_reindex_state");
    }

    #[test]
    fn unset_settings_are_left_out() {
        let settings = json!({ "synonyms": {}, "searchCutoffMs": null, "rankingRules": ["words"] });
        assert_eq!(
            without_nulls(settings),
            json!({ "synonyms": {}, "rankingRules": ["words"] })
        );
    }
}
