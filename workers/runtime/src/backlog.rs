//! The dead letters pending in a family's DLQ: those its replay group (`<group>.dlq-replay`) has
//! not handled yet. The `dlq` tool reads and moves them; the workers export how many there are
//! and how old the oldest is (`cdc_dlq_pending`, `cdc_dlq_oldest_pending_age_seconds`). Both
//! count them here, so an alert and `dlq ls` always agree.
//!
//! The replay group is never subscribed: clients assign partitions themselves and the `dlq`
//! tool commits explicitly, so its committed offsets mean exactly "handled up to here".
//!
//! # Layout
//! - [`replay_group_config`]: a client of the replay group.
//! - [`partitions`], [`watermarks`], [`pending`]: where the pending letters are.
//! - [`first_timestamps`]: when the first pending letter of each partition was dead-lettered.

use std::collections::BTreeMap;
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
