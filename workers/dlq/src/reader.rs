//! Reading a family's DLQ topic, partition by partition, and moving its replay group.
//!
//! The replay group (`Family::replay_group`) is never subscribed: the tool assigns partitions
//! itself and commits explicitly, so its committed offsets mean exactly "handled up to here";
//! letters handled beyond that are in the handled topic (see [`crate::handled`]). Where the
//! group stands is read by `cdc_runtime::backlog`, as the workers' DLQ metrics read it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cdc_topics::Family;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::cli::Filter;
use crate::error::DlqError;
use crate::handled::Handled;
use crate::letter::Letter;
use cdc_runtime::backlog::OffsetsByPartition;

const TIMEOUT: Duration = Duration::from_secs(10);

pub use cdc_runtime::backlog::Ranges;

/// A family's DLQ, read through its replay group.
pub struct DlqReader {
    consumer: BaseConsumer,
    /// The DLQ topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: Vec<i32>,
    /// Its replication factor (the handled topic gets the same).
    pub replication: i32,
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
        let replication = consumer
            .fetch_metadata(Some(&family.dlq), Duration::from_secs(5))
            .ok()
            .and_then(|m| {
                let t = m.topics().first()?;
                Some(t.partitions().first()?.replicas().len().max(1) as i32)
            })
            .unwrap_or(1);
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
            replication,
        })
    }

    /// The client of the replay group it reads through.
    pub(crate) fn consumer(&self) -> &BaseConsumer {
        &self.consumer
    }

    /// Rejects a filter naming a partition or an offset the DLQ does not have.
    pub fn check(&self, filter: &Filter) -> Result<(), DlqError> {
        let Some(partition) = filter.partition else {
            return Ok(());
        };
        if !self.partitions.contains(&partition) {
            return Err(DlqError::Usage(format!(
                "--partition {partition}: {} has partitions {}",
                self.topic,
                span(&self.partitions)
            )));
        }
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, TIMEOUT)
            .map_err(|e| DlqError::Other(e.into()))?;
        for (flag, offset) in [
            ("--offset", filter.offset),
            ("--from-offset", filter.from_offset),
            ("--to-offset", filter.to_offset),
        ] {
            if let Some(offset) = offset
                && !(low..high).contains(&offset)
            {
                return Err(DlqError::Usage(format!(
                    "{flag} {offset}: {}[{partition}] holds offsets {}",
                    self.topic,
                    if low < high {
                        format!("{low}..={}", high - 1)
                    } else {
                        "none (it is empty)".into()
                    }
                )));
            }
        }
        Ok(())
    }

    /// Low and high watermarks per partition.
    pub fn watermarks(&self) -> anyhow::Result<Ranges> {
        Ok(cdc_runtime::backlog::watermarks(
            &self.consumer,
            &self.topic,
            &self.partitions,
        )?)
    }

    /// Per partition, where the replay group stands (its committed offset, else the partition's
    /// first record) and the end, as of now. Letters in these ranges are pending unless the
    /// handled topic lists them ([`DlqReader::read_pending`]).
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

    /// Reads the letters of `ranges` that `handled` does not list, as [`DlqReader::read`].
    pub fn read_pending(
        &self,
        ranges: &Ranges,
        handled: &Handled,
        mut visit: impl FnMut(Letter) -> bool,
    ) -> anyhow::Result<()> {
        self.read(ranges, |letter| handled.contains(&letter) || visit(letter))
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

/// `0..=2`, or the list when not contiguous.
fn span(partitions: &[i32]) -> String {
    match (partitions.first(), partitions.last()) {
        (Some(first), Some(last)) if (last - first) as usize + 1 == partitions.len() => {
            format!("{first}..={last}")
        }
        _ => format!("{partitions:?}"),
    }
}

/// The pending letters of an operation's ranges, as the operation handles them. The replay
/// group may move to each partition's first letter still pending (or the range's end).
#[derive(Debug, Default)]
pub struct Pending {
    ends: BTreeMap<i32, i64>,
    offsets: OffsetsByPartition,
}

impl Pending {
    /// No pending letter yet in `ranges`.
    pub fn new(ranges: &Ranges) -> Self {
        Self {
            ends: ranges.iter().map(|(&p, &(_, end))| (p, end)).collect(),
            offsets: OffsetsByPartition::new(),
        }
    }

    /// `letter` was read and is pending.
    pub fn add(&mut self, letter: &Letter) {
        self.offsets
            .entry(letter.partition)
            .or_default()
            .insert(letter.offset);
    }

    /// `letter` is handled now.
    pub fn handled(&mut self, letter: &Letter) {
        if let Some(set) = self.offsets.get_mut(&letter.partition) {
            set.remove(&letter.offset);
        }
    }

    /// How many letters are still pending.
    pub fn count(&self) -> usize {
        self.offsets.values().map(BTreeSet::len).sum()
    }

    /// Per partition, the first letter still pending, else the end of the range read.
    pub fn group_offsets(&self) -> BTreeMap<i32, i64> {
        self.ends
            .iter()
            .map(|(&p, &end)| {
                let first = self.offsets.get(&p).and_then(|set| set.first().copied());
                (p, first.unwrap_or(end))
            })
            .collect()
    }
}
