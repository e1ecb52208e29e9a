//! The dead letters pending in a family's DLQ: those its replay group (`<group>.dlq-replay`) has
//! not handled yet. The `dlq` tool reads and moves them; the workers export how many there are
//! and how old the oldest is (`cdc_dlq_pending`, `cdc_dlq_oldest_pending_age_seconds`). Both
//! count them here, so an alert and `dlq ls` always agree.
//!
//! The replay group is never subscribed: clients assign partitions themselves and the `dlq`
//! tool commits explicitly, so its committed offsets mean exactly "handled up to here". Letters
//! the tool handled on their own beyond that offset (a filtered replay, a purge of one letter)
//! are listed in the DLQ's handled topic ([`Family::dlq_handled_topic`]), read by [`handled`].
//!
//! # Layout
//! - [`replay_group_config`]: a client of the replay group.
//! - [`partitions`], [`watermarks`], [`pending`]: where the pending letters are.
//! - [`handled`], [`handled_key`], [`Backlog`]: the letters handled on their own, and what is
//!   left pending once they are taken out.
//! - [`first_timestamps`]: when the first pending letter of each partition was dead-lettered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cdc_topics::Family;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::WorkerConfig;

/// How long one broker round trip may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `[start, end)` offsets per DLQ partition.
pub type Ranges = BTreeMap<i32, (i64, i64)>;

/// Settings of a client of `family`'s replay group, which never commits by itself.
pub fn replay_group_config(
    config: &WorkerConfig,
    family: &Family,
    client_id: &str,
) -> ClientConfig {
    let mut c = crate::kafka::base_config(config, client_id);
    c.set("group.id", family.replay_group())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    c
}

/// The partitions of `topic` from the brokers' metadata; none if it does not exist. Fails only
/// if no broker answers.
pub fn partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Low and high watermarks per partition.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) -> KafkaResult<Ranges> {
    partitions
        .iter()
        .map(|&p| Ok((p, consumer.fetch_watermarks(topic, p, TIMEOUT)?)))
        .collect()
}

/// Per partition, the first letter not yet handled (the replay group's committed offset, else
/// the partition's first record) and the end, as of now: `end - start` letters are pending.
/// `consumer` must be a client of the replay group ([`replay_group_config`]).
pub fn pending<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) -> KafkaResult<Ranges> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
    Ok(watermarks(consumer, topic, partitions)?
        .into_iter()
        .map(|(p, (low, high))| {
            let start = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o.max(low),
                _ => low,
            };
            (p, (start, high))
        })
        .collect())
}

/// Offsets per DLQ partition.
pub type OffsetsByPartition = BTreeMap<i32, BTreeSet<i64>>;

/// The key of a letter's record in the handled topic.
pub fn handled_key(partition: i32, offset: i64) -> String {
    format!("{partition}@{offset}")
}

fn parse_handled_key(key: &[u8]) -> Option<(i32, i64)> {
    let (partition, offset) = std::str::from_utf8(key).ok()?.split_once('@')?;
    Some((partition.parse().ok()?, offset.parse().ok()?))
}

/// The letters the handled topic `topic` lists (a record with a value; a tombstone deletes),
/// read whole through `consumer`'s own assignment (which this replaces, then leaves empty).
/// A topic that does not exist lists none.
pub fn handled<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> KafkaResult<OffsetsByPartition> {
    let mut offsets = OffsetsByPartition::new();
    if partitions(consumer, topic, TIMEOUT)?.is_empty() {
        return Ok(offsets);
    }
    let (low, high) = consumer.fetch_watermarks(topic, 0, TIMEOUT)?;
    if low >= high {
        return Ok(offsets);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + TIMEOUT;
    let mut next = low;
    while next < high && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        next = msg.offset() + 1;
        let Some((partition, offset)) = msg.key().and_then(parse_handled_key) else {
            continue;
        };
        if msg.payload().is_some() {
            offsets.entry(partition).or_default().insert(offset);
        } else if let Some(set) = offsets.get_mut(&partition) {
            set.remove(&offset);
        }
    }
    consumer.unassign()?;
    if next < high {
        return Err(rdkafka::error::KafkaError::MessageConsumption(
            rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
        ));
    }
    Ok(offsets)
}

/// The pending letters of one DLQ partition once the handled ones are taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// The first letter neither the replay group nor the handled topic covers (`end` if none).
    pub first: i64,
    /// How many letters are pending.
    pub count: i64,
}

impl Backlog {
    /// The backlog of the range `[start, end)` less the `handled` offsets.
    pub fn of((start, end): (i64, i64), handled: Option<&BTreeSet<i64>>) -> Self {
        let empty = BTreeSet::new();
        let handled = handled.unwrap_or(&empty);
        let mut first = start;
        while first < end && handled.contains(&first) {
            first += 1;
        }
        let inside = handled.range(start..end.max(start)).count() as i64;
        Self {
            first,
            count: (end - start).max(0) - inside,
        }
    }
}

/// The record timestamp (ms since the epoch: when it was dead-lettered) of the first letter of
/// each range of `ranges` that is not empty, read through `consumer`'s own assignment (which
/// this replaces, then leaves empty). A partition whose letter does not arrive within
/// [`TIMEOUT`] is left out.
pub fn first_timestamps<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    ranges: &Ranges,
) -> KafkaResult<BTreeMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &(start, end)) in ranges {
        if start < end {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
        }
    }
    let mut found = BTreeMap::new();
    if tpl.count() == 0 {
        return Ok(found);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + TIMEOUT;
    while found.len() < tpl.count() && Instant::now() < deadline {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if let Some(ms) = msg.timestamp().to_millis() {
            found.entry(msg.partition()).or_insert(ms);
        }
    }
    consumer.unassign()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_letters_leave_the_backlog() {
        let handled: BTreeSet<i64> = [3, 4, 7, 20].into();
        assert_eq!(
            Backlog::of((3, 10), Some(&handled)),
            Backlog { first: 5, count: 4 }
        );
        assert_eq!(
            Backlog::of((5, 5), Some(&handled)),
            Backlog { first: 5, count: 0 }
        );
        assert_eq!(Backlog::of((0, 2), None), Backlog { first: 0, count: 2 });
        assert_eq!(
            parse_handled_key(handled_key(3, 1_234).as_bytes()),
            Some((3, 1_234))
        );
        assert_eq!(parse_handled_key(b"3:1234"), None);
    }
}
