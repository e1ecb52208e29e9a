//! The `search` command line: the runtime's (`run`, `provision`, `--print-config`) with this
//! family's [`Settings`] and two subcommands of its own, `settings [--apply]` and `reindex`.
//!
//! Those two write Meilisearch directly, outside the worker's [`Effects`](cdc_runtime::shadow::Effects):
//! with `RUN_MODE=shadow` (a shadow's configuration promises no writes) they refuse to write,
//! naming the setting; `settings` without `--apply` and `reindex --dry-run` still run.

use std::process::ExitCode;
use std::time::Duration;

use cdc_runtime::cli::FamilyCommands;
use cdc_runtime::config::ConfigError;
use cdc_runtime::{RuntimeError, WorkerConfig};
use clap::{Subcommand, ValueEnum};

use crate::meili::Meilisearch;
use crate::reindex;
use crate::settings::differences;
use crate::{FAMILY, Index, Search, Settings};

/// The subcommands beside the runtime's `run` and `provision`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show how the indexes' settings on the server differ from the declared ones; with
    /// `--apply`, make them equal (creating a missing index). Idempotent.
    Settings {
        /// Which index.
        #[arg(long, value_enum, default_value_t = Which::All)]
        index: Which,
        /// Change the server's settings (otherwise only show the differences).
        #[arg(long)]
        apply: bool,
    },
    /// Rebuild an index from MariaDB into `<index>__reindex` (with the live index's settings),
    /// then swap it in; resumes after an interruption. Exit 0 when every index is swapped in.
    Reindex {
        /// Which index.
        #[arg(long, value_enum)]
        index: Which,
        /// At most this many rows read (documents written) per second.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rate: Option<u32>,
        /// Read and build every document, write nothing, print the counts.
        #[arg(long)]
        dry_run: bool,
        /// Rows per page: one SELECT and one Meilisearch task each.
        #[arg(long, default_value_t = 1000, value_parser = page_size)]
        page_size: usize,
        /// How often progress is recorded for a resume: each record costs Meilisearch an
        /// indexing batch of its own; a rerun after a kill redoes at most this much.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        record_every: Duration,
    },
}

impl FamilyCommands<Settings> for Command {
    async fn run(self, config: WorkerConfig, settings: Settings) -> Result<ExitCode, RuntimeError> {
        match self {
            Command::Settings { index, apply } => {
                if apply {
                    refuse_in_shadow_mode(&config, "settings --apply", "without --apply")?;
                }
                index_settings(&settings, index.indexes(), apply).await
            }
            Command::Reindex {
                index,
                rate,
                dry_run,
                page_size,
                record_every,
            } => {
                if !dry_run {
                    refuse_in_shadow_mode(&config, "reindex", "with --dry-run")?;
                }
                let options = reindex::Options {
                    rate,
                    dry_run,
                    page_size,
                    record_every,
                };
                reindex_indexes(&config, &settings, index.indexes(), &options).await
            }
        }
    }
}

/// Refuses `command`, which writes Meilisearch, when `config` is a shadow's (`RUN_MODE=shadow`);
/// `preview` says how the command runs without writing.
fn refuse_in_shadow_mode(
    config: &WorkerConfig,
    command: &str,
    preview: &str,
) -> Result<(), ConfigError> {
    if config.is_shadow() {
        return Err(ConfigError::Invalid {
            name: "RUN_MODE".into(),
            reason: format!(
                "shadow: `search {command}` writes Meilisearch; run it with RUN_MODE=live, or \
                 {preview} to write nothing"
            ),
        });
    }
    Ok(())
}

fn page_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("{text}: not a number from 1 to 100000")),
    }
}

/// Which index a subcommand works on.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Which {
    Subjects,
    Characters,
    Persons,
    All,
}

impl Which {
    fn indexes(self) -> &'static [Index] {
        match self {
            Which::Subjects => &[Index::Subjects],
            Which::Characters => &[Index::Characters],
            Which::Persons => &[Index::Persons],
            Which::All => &Index::ALL,
        }
    }
}

/// Runs the binary.
pub fn main() -> ExitCode {
    cdc_runtime::cli::main_with_commands::<Settings, Command, _, _, _>(FAMILY, Search::connect)
}

/// `search settings`: one block per index with the differences, applied with `apply`.
async fn index_settings(
    settings: &Settings,
    indexes: &[Index],
    apply: bool,
) -> Result<ExitCode, RuntimeError> {
    let failed = |source: anyhow::Error| RuntimeError::Sink {
        what: "Meilisearch",
        source,
    };
    let meilisearch = Meilisearch::new(
        &settings.meilisearch_url,
        &settings.meilisearch_key,
        settings.meilisearch_timeout,
    )
    .map_err(failed)?;
    for index in indexes {
        let name = index.name_with(&settings.meilisearch_index_prefix);
        let wanted = index.settings();
        let current = meilisearch.settings(&name).await.map_err(failed)?;
        let changes = match &current {
            None => {
                println!("{name}: missing; to be created with primary key `id` and these settings");
                differences(&serde_json::Value::Null, &wanted)
            }
            Some(current) => differences(current, &wanted),
        };
        if changes.is_empty() {
            println!("{name}: up to date");
            continue;
        }
        for (setting, have, want) in &changes {
            println!("{name}: {setting}\n  - {have}\n  + {want}");
        }
        if !apply {
            println!("{name}: not changed (run with --apply)");
            continue;
        }
        if current.is_none() {
            meilisearch.create_index(&name).await.map_err(failed)?;
        }
        meilisearch
            .update_settings(&name, &wanted)
            .await
            .map_err(failed)?;
        println!("{name}: applied");
    }
    Ok(ExitCode::SUCCESS)
}

/// `search reindex`: each index in turn; the first failure ends the run (exit 1), naming the
/// store (a rerun resumes).
async fn reindex_indexes(
    config: &WorkerConfig,
    settings: &Settings,
    indexes: &[Index],
    options: &reindex::Options,
) -> Result<ExitCode, RuntimeError> {
    let meilisearch = Meilisearch::new(
        &settings.meilisearch_url,
        &settings.meilisearch_key,
        settings.meilisearch_timeout,
    )
    .map_err(|source| RuntimeError::Sink {
        what: "Meilisearch",
        source,
    })?;
    let reindexer = reindex::Reindexer::new(
        cdc_runtime::mysql::pool(config),
        cdc_runtime::Dependency::mysql(&config.mysql_host, config.mysql_port),
        meilisearch,
        &settings.meilisearch_index_prefix,
    );
    let mut out = std::io::stdout();
    for index in indexes {
        if let Err(error) = reindexer.run(*index, options, &mut out).await {
            tracing::error!(index = index.name(), %error, "reindex failed");
            eprintln!(
                "error: reindex of {}: {error}; a rerun resumes",
                index.name_with(&settings.meilisearch_index_prefix)
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
