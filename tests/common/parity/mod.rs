//! The offline parity harness (`make parity`): one recorded event file fed to a legacy worker
//! command and to a family's worker binary, each against a Redis server and topics of its own;
//! every Redis write each side issues is recorded (`MONITOR`) and compared, record by record.
//! The `parity` binary (`tests/parity_cli.rs`) runs it; `tests/parity.rs` runs that binary with
//! the reference script (`scripts/legacy_reference.py`) as the legacy command.
//!
//! How writes are tied to records: records are fed one at a time. After each, the harness waits
//! until each side's consumer group has committed past it (a worker commits a record only once
//! it applied it), then sends a fence (`ECHO parity-fence-N`) to each side's Redis and reads its
//! `MONITOR` stream up to the fence: Redis reports commands to monitors in the order it runs
//! them, so what came before the fence and after the previous one is that record's. No timing
//! is involved; a side that never commits a record fails the run after `--record-timeout`.
//!
//! # Layout
//! - [`Options`], [`run`], [`Report`] (here): a run.
//! - [`Baseline`] (here): the keys seeded in both Redis and the records where the family
//!   deliberately differs.
//! - `side`: one side's Redis, topics, group, process and `MONITOR` stream.
//! - [`writes`]: from `MONITOR` lines to the writes compared (`DEL`/`UNLINK` of several keys
//!   count as one `DEL` per key; order within a record is ignored), and their diff.

mod side;
pub mod writes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::fixtures::{self, Fixture};
use side::Side;
use writes::{Classifier, Diff};

/// The legacy command `make parity` runs unless told another: the reference script, configured
/// from the environment the harness gives every legacy command (see `Side::legacy_env`).
pub const REFERENCE_LEGACY_CMD: &str = "python3 scripts/legacy_reference.py \
     --brokers \"$KAFKA_BROKERS\" --group \"$KAFKA_GROUP_ID\" \
     --topic-prefix \"$KAFKA_TOPIC_PREFIX\" --redis-url \"$REDIS_URL\" \
     --key-prefix \"$REDIS_KEY_PREFIX\"";

/// What to compare.
#[derive(Debug, Clone)]
pub struct Options {
    /// The legacy worker, a shell command run with `sh -c` in the repository's root.
    pub legacy_cmd: String,
    /// The legacy side's topic prefix; none: one of the run's own. Empty for a legacy worker
    /// that reads fixed topic names (`bin/mq.ts`).
    pub legacy_topic_prefix: Option<String>,
    /// The family (`topics/families/<family>.toml`) whose binary is compared.
    pub family: String,
    /// The recorded events, in the fixtures' line format; only the family's topics are fed.
    pub events: PathBuf,
    /// The baseline ([`Baseline`]); none: nothing seeded, no difference expected.
    pub baseline: Option<PathBuf>,
    /// How long each side may take to commit one record.
    pub record_timeout: Duration,
    /// Where the two sides' logs go.
    pub log_dir: PathBuf,
}

/// What a run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Records fed.
    pub records: usize,
    /// Records whose writes were the same on both sides.
    pub identical: usize,
    /// Records that differed where the baseline says the family deliberately differs.
    pub known: usize,
    /// Records that differed otherwise.
    pub unexpected: usize,
}

/// The baseline file: `fixtures/expected/cache-invalidation.json`'s shape, of which the harness
/// reads `seeded` (keys set in both Redis before the run, so a deletion also changes state) and
/// each record's `differs` (by the events file's `seq`: the family deliberately differs there).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Baseline {
    /// Keys set in both Redis first.
    #[serde(default)]
    pub seeded: Vec<String>,
    /// Records, of which those with `differs`.
    #[serde(default)]
    pub records: Vec<BaselineRecord>,
}

/// One record of the baseline.
#[derive(Debug, Clone, Deserialize)]
pub struct BaselineRecord {
    /// Line of the events file.
    pub seq: u64,
    /// Why the family differs from the legacy worker on it, if it does.
    #[serde(default)]
    pub differs: Option<String>,
}

impl Baseline {
    /// Reads `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the baseline {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a baseline (`seeded`, `records`)", path.display()))
    }

    fn differences(&self) -> HashMap<u64, &str> {
        self.records
            .iter()
            .filter_map(|r| r.differs.as_deref().map(|why| (r.seq, why)))
            .collect()
    }
}

/// Feeds the family's records of `options.events` to both sides, prints a diff of every record
/// whose writes differ and a summary, and returns the counts. An error (a side that fails to
/// start, exits or never commits a record) ends the run.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    crate::require_broker().await?;
    let family = crate::family(&options.family, "")?;
    let records: Vec<Fixture> = fixtures::load_file(&options.events)?
        .into_iter()
        .filter(|f| family.all_topics().any(|t| t == f.topic))
        .collect();
    if records.is_empty() {
        bail!(
            "no record of {} is on a topic of the family {} ({})",
            options.events.display(),
            family.family,
            family.all_topics().collect::<Vec<_>>().join(", ")
        );
    }
    let baseline = match &options.baseline {
        Some(path) => Baseline::load(path)?,
        None => Baseline::default(),
    };
    let known = baseline.differences();
    let run = crate::unique("parity");
    println!(
        "parity of {}: {} records of {} on its topics; run {run}",
        family.family,
        records.len(),
        shown(&options.events)
    );
    let legacy_prefix = options
        .legacy_topic_prefix
        .clone()
        .unwrap_or_else(|| format!("{run}.legacy."));
    let mut legacy =
        Side::prepare("legacy", &run, &legacy_prefix, &family, &baseline, options).await?;
    let mut fleet = Side::prepare(
        "family",
        &run,
        &format!("{run}.family."),
        &family,
        &baseline,
        options,
    )
    .await?;
    legacy.start_legacy(&options.legacy_cmd)?;
    fleet.start_family(&family.family)?;
    for side in [&legacy, &fleet] {
        println!("  {side}");
    }

    let producer = crate::producer()?;
    let mut classifier = Classifier::default();
    let mut report = Report::default();
    for (n, record) in records.iter().enumerate() {
        let mut fed = Vec::with_capacity(2);
        for side in [&legacy, &fleet] {
            let topic = format!("{}{}", side.topic_prefix, record.topic);
            let at =
                crate::produce(&producer, &topic, std::slice::from_ref(&record.record)).await?;
            fed.push((topic, at[0]));
        }
        let mut writes = Vec::with_capacity(2);
        for (side, (topic, (partition, offset))) in [&mut legacy, &mut fleet].into_iter().zip(fed) {
            side.wait_committed(&topic, partition, offset, options.record_timeout)
                .await
                .with_context(|| format!("seq {} ({})", record.seq, describe(record)))?;
            writes.push(side.writes_until_fence(n, &mut classifier).await?);
        }
        report.records += 1;
        let diff = Diff::of(&writes[0], &writes[1]);
        if diff.is_empty() {
            report.identical += 1;
            continue;
        }
        match known.get(&record.seq) {
            Some(why) => {
                report.known += 1;
                println!(
                    "\nknown difference, seq {} ({}): {why}",
                    record.seq,
                    describe(record)
                );
            }
            None => {
                report.unexpected += 1;
                println!("\nDIFFERS: seq {} ({})", record.seq, describe(record));
            }
        }
        print!("{diff}");
    }
    for side in [&mut legacy, &mut fleet] {
        side.stop().await?;
    }
    println!(
        "\n{} records: {} identical, {} known differences{}, {} unexpected; writes: legacy {}, family {}",
        report.records,
        report.identical,
        report.known,
        options
            .baseline
            .as_ref()
            .map(|b| format!(" ({})", shown(b)))
            .unwrap_or_default(),
        report.unexpected,
        legacy.writes,
        fleet.writes
    );
    println!(
        "{}",
        if report.unexpected == 0 {
            "PARITY"
        } else {
            "DIVERGENCE"
        }
    );
    Ok(report)
}

/// `path`, relative to the repository's root when under it.
fn shown(path: &Path) -> String {
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let path = canonical(path);
    match path.strip_prefix(canonical(&fixtures::dir().join(".."))) {
        Ok(relative) => relative.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// `table key …, scenario` of a record, for the diff.
fn describe(record: &Fixture) -> String {
    let key = record.record.key.as_deref().map_or_else(
        || "null".to_owned(),
        |k| {
            let k = String::from_utf8_lossy(k);
            let mut short: String = k.chars().take(80).collect();
            if short.len() < k.len() {
                short.push('…');
            }
            short
        },
    );
    let value = if record.record.value.is_none() {
        ", tombstone"
    } else {
        ""
    };
    format!(
        "{} key {key}, {}{value}",
        record.topic.rsplit('.').next().unwrap_or(&record.topic),
        record.scenario
    )
}
