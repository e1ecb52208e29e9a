//! Reading a family's DLQ topic, partition by partition, and moving its replay group.
//!
//! The replay group (`Family::replay_group`) is never subscribed: the tool assigns partitions
//! itself and commits explicitly, so its committed offsets mean exactly "handled up to here".
//! What is pending is counted by `cdc_runtime::backlog`, as the workers' DLQ metrics count it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cdc_topics::Family;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::DlqError;
use crate::letter::Letter;

const TIMEOUT: Duration = Duration::from_secs(10);

pub use cdc_runtime::backlog::Ranges;

/// A family's DLQ, read through its replay group.
pub struct DlqReader {
    consumer: BaseConsumer,
    /// The DLQ topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: Vec<i32>,
}

impl DlqReader {
    /// Connects with the workers' Kafka settings; fails with `BrokerUnreachable` if no broker
    /// answers, and names the topic if the DLQ does not exist.
    pub fn connect(config: &cdc_runtime::WorkerConfig, family: &Family) -> Result<Self, DlqError> {
        let consumer: BaseConsumer =
            cdc_runtime::backlog::replay_group_config(config, family, "dlq").create()?;
        let partitions =
            cdc_runtime::backlog::partitions(&consumer, &family.dlq, Duration::from_secs(5))
                .map_err(|e| DlqError::BrokerUnreachable {
                    brokers: config.kafka_brokers.clone(),
                    reason: e.to_string(),
                })?;
        if partitions.is_empty() {
            return Err(DlqError::Usage(format!(
                "DLQ topic {} does not exist (run `{} provision`)",
                family.dlq, family.family
            )));
        }
        Ok(Self {
            consumer,
            topic: family.dlq.clone(),
            partitions,
        })
    }

    /// Low and high watermarks per partition.
    pub fn watermarks(&self) -> anyhow::Result<Ranges> {
        Ok(cdc_runtime::backlog::watermarks(
            &self.consumer,
            &self.topic,
            &self.partitions,
        )?)
    }

    /// Per partition, the first record not yet handled and the end, as of now
    /// ([`cdc_runtime::backlog::pending`]).
    pub fn pending(&self) -> anyhow::Result<Ranges> {
        Ok(cdc_runtime::backlog::pending(
            &self.consumer,
            &self.topic,
            &self.partitions,
        )?)
    }

    /// Every record of the DLQ, handled ones included.
    pub fn everything(&self) -> anyhow::Result<Ranges> {
        self.watermarks()
    }

    /// Reads `ranges` in offset order per partition, calling `visit` for each record until it
    /// returns false.
    pub fn read(
        &self,
        ranges: &Ranges,
        mut visit: impl FnMut(Letter) -> bool,
    ) -> anyhow::Result<()> {
        let mut todo: BTreeMap<i32, i64> = ranges
            .iter()
            .filter(|(_, (start, end))| start < end)
            .map(|(&p, &(_, end))| (p, end))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &(start, _)) in ranges.iter().filter(|(p, _)| todo.contains_key(p)) {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(start))?;
        }
        self.consumer.assign(&tpl)?;
        let mut last_progress = Instant::now();
        while !todo.is_empty() {
            let Some(result) = self.consumer.poll(Duration::from_millis(200)) else {
                if last_progress.elapsed() > TIMEOUT {
                    bail!(
                        "no record from {} for {TIMEOUT:?}; still expected: {todo:?}",
                        self.topic
                    );
                }
                continue;
            };
            let msg = result.context("reading the DLQ")?;
            last_progress = Instant::now();
            let letter = Letter::from_message(&msg);
            let Some(&end) = todo.get(&letter.partition) else {
                continue;
            };
            if letter.offset >= end {
                todo.remove(&letter.partition);
                continue;
            }
            if letter.offset + 1 >= end {
                todo.remove(&letter.partition);
            }
            if !visit(letter) {
                break;
            }
        }
        self.consumer.unassign()?;
        Ok(())
    }

    /// Commits the replay group at `offsets` (next record to handle, per partition).
    pub fn commit(&self, offsets: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in offsets {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .with_context(|| format!("committing the replay group on {}", self.topic))
    }
}

/// Per-partition progress of an operation over pending records: the replay group may move only
/// over a prefix of handled records, so a record the operation leaves alone stays pending.
#[derive(Debug, Default)]
pub struct Progress {
    next: BTreeMap<i32, i64>,
    blocked: BTreeMap<i32, i64>,
}

impl Progress {
    /// Progress starting at the pending ranges' starts.
    pub fn new(ranges: &Ranges) -> Self {
        Self {
            next: ranges.iter().map(|(&p, &(start, _))| (p, start)).collect(),
            blocked: BTreeMap::new(),
        }
    }

    /// `letter` was handled (replayed, or purged). The group moves past it unless a record
    /// before it was left alone.
    pub fn handled(&mut self, letter: &Letter) {
        let limit = self
            .blocked
            .get(&letter.partition)
            .copied()
            .unwrap_or(i64::MAX);
        if letter.offset < limit {
            let next = self.next.entry(letter.partition).or_insert(0);
            *next = (*next).max(letter.offset + 1);
        }
    }

    /// `letter` was left alone (filtered out): its partition's group stays before it.
    pub fn left(&mut self, letter: &Letter) {
        self.blocked
            .entry(letter.partition)
            .or_insert(letter.offset);
    }

    /// Where the replay group should be now.
    pub fn offsets(&self) -> &BTreeMap<i32, i64> {
        &self.next
    }
}
