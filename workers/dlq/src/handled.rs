//! Which dead letters are handled, letter by letter.
//!
//! A letter is handled once the tool replayed or purged it. Two records say so together:
//! - the replay group's committed offset on each DLQ partition ([`Family::replay_group`]):
//!   every letter before it is handled;
//! - the family's handled topic ([`Family::dlq_handled_topic`], compacted, one partition, keyed
//!   `<partition>@<offset>`): letters at or after that offset handled on their own (a filtered
//!   replay, a purge of one letter).
//!
//! A letter is pending when neither says it is handled, so any letter can be replayed or purged
//! whatever its neighbours, and none is handled twice. After an operation the group moves to each
//! partition's first pending letter, and the handled records it moved past are deleted
//! (tombstones): the topic only ever holds letters handled ahead of a pending one.
//!
//! Order of writes for each chunk of letters: the effect (re-produce or apply), then the handled
//! records (acknowledged), then the group. An interrupt waits for the chunk in hand, so it
//! repeats nothing; a crash between two writes repeats at most one chunk's effects, which the
//! families' idempotent effects absorb.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use cdc_runtime::backlog::{self, OffsetsByPartition, handled_key};
use cdc_topics::Family;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::letter::{Letter, millis};
use crate::reader::DlqReader;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What became of a handled letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Re-applied or re-produced (a new failure is a new letter).
    Replayed,
    /// Skipped on purpose.
    Purged,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Replayed => "replayed",
            Outcome::Purged => "purged",
        }
    }
}

/// The handled topic of one family's DLQ: what it says, and a producer to add to it (made at
/// the first write: `ls` and `show` only read).
pub struct Handled {
    topic: String,
    offsets: OffsetsByPartition,
    producer_config: ClientConfig,
    producer: Option<FutureProducer>,
}

impl Handled {
    /// Reads the handled topic whole through `reader`'s client. A missing topic (a DLQ nothing
    /// was handled in yet, on a deployment provisioned before the topic existed) reads as empty.
    pub fn load(
        config: &cdc_runtime::WorkerConfig,
        family: &Family,
        reader: &DlqReader,
    ) -> anyhow::Result<Self> {
        let topic = family.dlq_handled_topic();
        let offsets = backlog::handled(reader.consumer(), &topic)
            .with_context(|| format!("reading {topic}"))?;
        let mut producer_config = cdc_runtime::kafka::base_config(config, "dlq-handled");
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all");
        Ok(Self {
            topic,
            offsets,
            producer_config,
            producer: None,
        })
    }

    /// Whether `letter` was handled on its own, ahead of the replay group.
    pub fn contains(&self, letter: &Letter) -> bool {
        self.offsets
            .get(&letter.partition)
            .is_some_and(|set| set.contains(&letter.offset))
    }

    /// Records `letters` as handled with `outcome` by the operation `operation` (its audit id),
    /// and waits until the broker acknowledges every record.
    pub async fn mark(
        &mut self,
        letters: &[&Letter],
        outcome: Outcome,
        operation: &str,
    ) -> anyhow::Result<()> {
        let at = millis(std::time::SystemTime::now());
        let value =
            json!({"outcome": outcome.as_str(), "at": at, "operation": operation}).to_string();
        for letter in letters {
            self.send(&handled_key(letter.partition, letter.offset), Some(&value))
                .await?;
        }
        for letter in letters {
            self.offsets
                .entry(letter.partition)
                .or_default()
                .insert(letter.offset);
        }
        Ok(())
    }

    /// Deletes the records of letters before `starts` (per partition, where the replay group
    /// now stands): the group says they are handled.
    pub async fn forget_before(&mut self, starts: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        let mut covered = Vec::new();
        for (&partition, &start) in starts {
            if let Some(set) = self.offsets.get_mut(&partition) {
                let kept = set.split_off(&start);
                covered.extend(set.iter().map(|&offset| handled_key(partition, offset)));
                *set = kept;
            }
        }
        for key in &covered {
            self.send(key, None).await?;
        }
        Ok(())
    }

    /// Writes one record (`None`: a tombstone) and waits for its acknowledgement. One at a time:
    /// tansu reports the high watermark of a partition whose last batch holds several records
    /// as that batch's first offset + 1, and [`Handled::load`] reads up to the high watermark.
    async fn send(&mut self, key: &str, value: Option<&str>) -> anyhow::Result<()> {
        let producer = match &mut self.producer {
            Some(producer) => producer,
            none => none.insert(self.producer_config.create()?),
        };
        let mut record = FutureRecord::<str, str>::to(&self.topic).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer
            .send(record, TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| anyhow::anyhow!("writing {key} to {}: {e}", self.topic))
    }
}
