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
//! - [`Options`], [`run`], [`Report`]: a run.
//! - `Side`: one side's Redis, topics, group, process and `MONITOR` stream.
//! - [`parse_monitor_line`], `Classifier`, [`normalise`]: from `MONITOR` lines to the writes
//!   compared (`DEL`/`UNLINK` of several keys count as one `DEL` per key; order within a record
//!   is ignored).
//! - [`Baseline`]: the keys seeded in both Redis and the records where the family deliberately
//!   differs.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::fixtures::{self, Fixture};
use crate::process::{PrivateRedis, wait_exit, worker_command};

/// The legacy command `make parity` runs unless told another: the reference script, configured
/// from the environment the harness gives every legacy command (see [`Side::legacy_env`]).
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

/// One side of the comparison: its own Redis server, topics under its own prefix, its own
/// consumer group, its process and the `MONITOR` stream of its Redis.
struct Side {
    name: &'static str,
    redis: PrivateRedis,
    conn: redis::aio::MultiplexedConnection,
    topic_prefix: String,
    group: String,
    offsets: BaseConsumer,
    monitor: mpsc::UnboundedReceiver<String>,
    process: Option<Child>,
    log: PathBuf,
    writes: usize,
}

impl Side {
    /// Starts its Redis and seeds it, creates its topics (under `topic_prefix`; existing ones
    /// are used), commits their current ends for its group (so the worker starts at the first
    /// record fed, whatever its reset policy and whatever the topics held), and starts
    /// monitoring (after the seeding, which is not a write of the side).
    async fn prepare(
        name: &'static str,
        run: &str,
        topic_prefix: &str,
        family: &cdc_topics::Family,
        baseline: &Baseline,
        options: &Options,
    ) -> anyhow::Result<Self> {
        let redis = PrivateRedis::start().await?;
        crate::seed_keys_at(&redis.uri(), "", &baseline.seeded).await?;
        let conn = crate::redis_at(&redis.uri()).await?;
        let topic_prefix = topic_prefix.to_owned();
        let group = format!("{run}-{name}");
        let topics = family.clone().with_topic_prefix(&topic_prefix);
        crate::provision(&topics).await?;
        let offsets = crate::manual_consumer(&group)?;
        let names: Vec<String> = topics.all_topics().map(str::to_owned).collect();
        let mut start = TopicPartitionList::new();
        for (topic, ends) in names.iter().zip(crate::ends_of(&names, topics.partitions)?) {
            for (p, end) in ends.into_iter().enumerate() {
                start.add_partition_offset(topic, p as i32, Offset::Offset(end))?;
            }
        }
        offsets
            .commit(&start, CommitMode::Sync)
            .with_context(|| format!("committing the {name} group's start"))?;
        let mut stream = redis::Client::open(redis.uri())?
            .get_async_monitor()
            .await?
            .into_on_message::<String>();
        let (lines, monitor) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(line) = stream.next().await {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name,
            redis,
            conn,
            topic_prefix,
            group,
            offsets,
            monitor,
            process: None,
            log: options.log_dir.join(format!("{run}-{name}.log")),
            writes: 0,
        })
    }

    /// The environment every legacy command gets (the contract, README "Parity harness").
    fn legacy_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KAFKA_BROKERS", crate::brokers()),
            ("KAFKA_TOPIC_PREFIX", self.topic_prefix.clone()),
            ("KAFKA_GROUP_ID", self.group.clone()),
            ("REDIS_URL", self.redis.uri()),
            ("REDIS_URI", self.redis.uri()),
            ("REDIS_KEY_PREFIX", String::new()),
            ("SCHEMA_REGISTRY_URL", crate::registry_url()),
        ]
    }

    /// Runs `command` with `sh -c` in the repository's root, in a process group of its own
    /// (so that stopping it reaches what the shell started).
    fn start_legacy(&mut self, command: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(fixtures::dir().join(".."))
            .envs(self.legacy_env());
        self.spawn(cmd)
            .with_context(|| format!("starting the legacy command {command:?}"))
    }

    /// Runs the family's worker binary, committing every 20 ms (each record waits for it).
    fn start_family(&mut self, family: &str) -> anyhow::Result<()> {
        let mut cmd = worker_command(
            family,
            &self.topic_prefix,
            &self.group,
            &self.redis.uri(),
            "",
        )?;
        cmd.env("COMMIT_INTERVAL", "20ms")
            .env("SCHEMA_REGISTRY_URL", crate::registry_url());
        self.spawn(cmd)
    }

    fn spawn(&mut self, mut cmd: Command) -> anyhow::Result<()> {
        let log = std::fs::File::create(&self.log)
            .with_context(|| format!("creating {}", self.log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        self.process = Some(cmd.spawn()?);
        Ok(())
    }

    /// Waits until the side's group has committed `topic[partition]` past `offset`; fails if
    /// its process exits first or `within` passes.
    async fn wait_committed(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        within: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        loop {
            let committed = self
                .offsets
                .committed_offsets(list.clone(), Duration::from_secs(10))?;
            if let Some(Offset::Offset(o)) = committed
                .find_partition(topic, partition)
                .map(|e| e.offset())
                && o > offset
            {
                return Ok(());
            }
            if let Some(status) = self
                .process
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
                bail!(
                    "the {} side exited ({status}) before committing {topic}[{partition}]@{offset}; its log ({}):\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if started.elapsed() > within {
                bail!(
                    "the {} side did not commit {topic}[{partition}]@{offset} (group {}) within {within:?}; \
                     does it consume that topic and commit after applying? its log ({}):\n{}",
                    self.name,
                    self.group,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends fence `n` and returns the writes `MONITOR` reported before it (since fence `n-1`),
    /// normalised and sorted.
    async fn writes_until_fence(
        &mut self,
        n: usize,
        classifier: &mut Classifier,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let fence = format!("parity-fence-{n}");
        redis::cmd("ECHO")
            .arg(&fence)
            .query_async::<String>(&mut self.conn)
            .await?;
        let mut writes = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.monitor.recv())
                .await
                .ok()
                .flatten()
                .with_context(|| format!("the {} Redis' MONITOR stream ended", self.name))?;
            let Some(command) = parse_monitor_line(&line) else {
                bail!("not a MONITOR line: {line:?}");
            };
            if command.len() == 2 && command[0].eq_ignore_ascii_case("ECHO") && command[1] == fence
            {
                break;
            }
            if classifier.is_write(&mut self.conn, &command[0]).await? {
                writes.extend(normalise(command));
            }
        }
        writes.sort();
        self.writes += writes.len();
        Ok(writes)
    }

    /// SIGTERM to its process group, then waits for it to exit.
    async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.process.take() else {
            return Ok(());
        };
        signal_group(&child, "TERM");
        if wait_exit(&mut child, Duration::from_secs(30))
            .await?
            .is_none()
        {
            signal_group(&child, "KILL");
            let _ = child.wait();
            bail!("the {} side did not stop within 30 s of SIGTERM", self.name);
        }
        Ok(())
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<6} topics {}, group {}, Redis {}, log {}",
            self.name,
            if self.topic_prefix.is_empty() {
                "without prefix".to_owned()
            } else {
                format!("{}*", self.topic_prefix)
            },
            self.group,
            self.redis.uri(),
            self.log.display()
        )
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            signal_group(&child, "KILL");
            let _ = child.wait();
        }
    }
}

/// Sends `signal` to the process group `child` leads.
fn signal_group(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{}", child.id()))
        .status();
}

/// The last lines of a log, for an error.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Which commands are writes, as the Redis server says (`COMMAND INFO`: the `write` flag),
/// plus `PUBLISH` and `SPUBLISH`. A script's commands reach `MONITOR` one by one, so `EVAL`
/// itself is not counted.
#[derive(Default)]
struct Classifier {
    known: HashMap<String, bool>,
}

impl Classifier {
    async fn is_write(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
        command: &str,
    ) -> anyhow::Result<bool> {
        let name = command.to_ascii_lowercase();
        if let Some(write) = self.known.get(&name) {
            return Ok(*write);
        }
        let info: redis::Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(&name)
            .query_async(conn)
            .await?;
        let flags: Vec<String> = match info {
            redis::Value::Array(mut entries) if !entries.is_empty() => match entries.remove(0) {
                redis::Value::Array(fields) if fields.len() > 2 => {
                    redis::from_redis_value(fields[2].clone()).unwrap_or_default()
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let write = flags.iter().any(|f| f == "write") || name == "publish" || name == "spublish";
        self.known.insert(name, write);
        Ok(write)
    }
}

/// The command of a `MONITOR` line (`1700000000.000001 [0 127.0.0.1:5000] "DEL" "k"`), its
/// arguments unescaped; none if the line is not one.
pub fn parse_monitor_line(line: &str) -> Option<Vec<String>> {
    let (_, rest) = line.split_once("] ")?;
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('"') => {}
            Some(_) => return None,
        }
        let mut arg: Vec<u8> = Vec::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => arg.push(b'\n'),
                    'r' => arg.push(b'\r'),
                    't' => arg.push(b'\t'),
                    'a' => arg.push(7),
                    'b' => arg.push(8),
                    'x' => {
                        let hex: String = [chars.next()?, chars.next()?].iter().collect();
                        arg.push(u8::from_str_radix(&hex, 16).ok()?);
                    }
                    c => arg.extend(c.to_string().as_bytes()),
                },
                c => arg.extend(c.to_string().as_bytes()),
            }
        }
        args.push(String::from_utf8_lossy(&arg).into_owned());
    }
    if args.is_empty() {
        return None;
    }
    args[0] = args[0].to_ascii_uppercase();
    Some(args)
}

/// A write as compared: the command name upper-cased; a `DEL` or `UNLINK` of several keys is
/// one `DEL` per key (deleting is deleting, however batched).
pub fn normalise(command: Vec<String>) -> Vec<Vec<String>> {
    match command[0].as_str() {
        "DEL" | "UNLINK" => command[1..]
            .iter()
            .map(|key| vec!["DEL".to_owned(), key.clone()])
            .collect(),
        _ => vec![command],
    }
}

/// The writes of one record that only one side issued (as multisets).
struct Diff {
    only_legacy: Vec<Vec<String>>,
    only_family: Vec<Vec<String>>,
    both: usize,
}

impl Diff {
    fn of(legacy: &[Vec<String>], family: &[Vec<String>]) -> Self {
        let mut counts: BTreeMap<&Vec<String>, i64> = BTreeMap::new();
        for w in legacy {
            *counts.entry(w).or_default() += 1;
        }
        for w in family {
            *counts.entry(w).or_default() -= 1;
        }
        let mut diff = Self {
            only_legacy: Vec::new(),
            only_family: Vec::new(),
            both: 0,
        };
        for (w, n) in counts {
            let side = if n > 0 {
                &mut diff.only_legacy
            } else {
                &mut diff.only_family
            };
            side.extend(std::iter::repeat_n(w.clone(), n.unsigned_abs() as usize));
        }
        diff.both = legacy.len() - diff.only_legacy.len();
        diff
    }

    fn is_empty(&self) -> bool {
        self.only_legacy.is_empty() && self.only_family.is_empty()
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (mark, side, writes) in [
            ('-', "legacy only", &self.only_legacy),
            ('+', "family only", &self.only_family),
        ] {
            for w in writes {
                let shown: Vec<String> = w
                    .iter()
                    .map(|a| {
                        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                            format!("{a:?}")
                        } else {
                            a.clone()
                        }
                    })
                    .collect();
                writeln!(f, "  {mark} {side}: {}", shown.join(" "))?;
            }
        }
        writeln!(f, "    (both: {} write(s))", self.both)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_parse_with_their_escapes() {
        assert_eq!(
            parse_monitor_line(r#"1700000000.000001 [0 127.0.0.1:5000] "del" "a b" "q\"\\\x01""#),
            Some(vec!["DEL".into(), "a b".into(), "q\"\\\u{1}".into()])
        );
        assert_eq!(
            parse_monitor_line(r#"1700000000.000001 [0 lua] "SET" "k" """#),
            Some(vec!["SET".into(), "k".into(), String::new()])
        );
        assert_eq!(parse_monitor_line("OK"), None);
    }

    #[test]
    fn deletions_compare_key_by_key() {
        let one = normalise(vec!["UNLINK".into(), "a".into(), "b".into()]);
        let diff = Diff::of(
            &one,
            &[
                vec!["DEL".into(), "b".into()],
                vec!["DEL".into(), "c".into()],
            ],
        );
        assert_eq!(diff.only_legacy, [vec!["DEL".to_owned(), "a".to_owned()]]);
        assert_eq!(diff.only_family, [vec!["DEL".to_owned(), "c".to_owned()]]);
        assert_eq!(diff.both, 1);
    }
}
