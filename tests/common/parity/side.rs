//! One side of a parity run: its Redis server, topics, consumer group, process and the
//! `MONITOR` stream of its Redis.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::writes::{Classifier, normalise, parse_monitor_line};
use super::{Baseline, Options};
use crate::fixtures;
use crate::process::{PrivateRedis, wait_exit, worker_command};

/// One side of the comparison: its own Redis server, topics under its own prefix, its own
/// consumer group, its process and the `MONITOR` stream of its Redis.
pub(super) struct Side {
    name: &'static str,
    redis: PrivateRedis,
    conn: redis::aio::MultiplexedConnection,
    pub(super) topic_prefix: String,
    group: String,
    offsets: BaseConsumer,
    monitor: mpsc::UnboundedReceiver<String>,
    process: Option<Child>,
    log: PathBuf,
    pub(super) writes: usize,
}

impl Side {
    /// Starts its Redis and seeds it, creates its topics (under `topic_prefix`; existing ones
    /// are used), commits their current ends for its group (so the worker starts at the first
    /// record fed, whatever its reset policy and whatever the topics held), and starts
    /// monitoring (after the seeding, which is not a write of the side).
    pub(super) async fn prepare(
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
    pub(super) fn start_legacy(&mut self, command: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(fixtures::dir().join(".."))
            .envs(self.legacy_env());
        self.spawn(cmd)
            .with_context(|| format!("starting the legacy command {command:?}"))
    }

    /// Runs the family's worker binary, committing every 20 ms (each record waits for it).
    pub(super) fn start_family(&mut self, family: &str) -> anyhow::Result<()> {
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
    pub(super) async fn wait_committed(
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
    pub(super) async fn writes_until_fence(
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
    pub(super) async fn stop(&mut self) -> anyhow::Result<()> {
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
