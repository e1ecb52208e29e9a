//! Filling a topic fast: large non-idempotent batches from a threaded producer, every record's
//! delivery checked, the partitions' ends taken from the delivery reports (tansu's reported
//! ends fall short, see [`crate::client_config`]). For the bench and for tests that need a
//! backlog of a million records.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;

use crate::{Out, brokers};

struct FillContext {
    max_offset: Vec<AtomicI64>,
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for FillContext {}

impl ProducerContext for FillContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                if let Some(slot) = self.max_offset.get(m.partition() as usize) {
                    slot.fetch_max(m.offset(), Ordering::Relaxed);
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What a [`fill`] produced, and how fast.
#[derive(Debug, Clone, Serialize)]
pub struct Fill {
    pub topic: String,
    pub partitions: i32,
    pub events: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub per_s: f64,
    /// The next offset of each partition, from the delivery reports.
    pub ends: Vec<i64>,
}

/// The record batches [`fill`] produces: 1 MB, for speed.
pub const FILL_BATCH_BYTES: u64 = 1_000_000;

/// The record batches Debezium produces: Kafka Connect leaves the producer's `batch.size` at its
/// default, 16 KiB. A consumer fetches whole batches, so the batch size decides how much one
/// fetch returns past `max.partition.fetch.bytes`, and how much one record keeps alive.
pub const DEBEZIUM_BATCH_BYTES: u64 = 16 << 10;

/// Produces `n` records made by `make(i)` to `topic` (of `partitions`) in large batches; fails
/// unless every record is acknowledged.
pub fn fill(
    topic: &str,
    partitions: i32,
    n: u64,
    make: &(dyn Fn(u64) -> Out + Sync),
) -> anyhow::Result<Fill> {
    fill_in_batches(topic, partitions, n, FILL_BATCH_BYTES, make)
}

/// [`fill`] in record batches of at most `batch_bytes`.
pub fn fill_in_batches(
    topic: &str,
    partitions: i32,
    n: u64,
    batch_bytes: u64,
    make: &(dyn Fn(u64) -> Out + Sync),
) -> anyhow::Result<Fill> {
    let context = FillContext {
        max_offset: (0..partitions).map(|_| AtomicI64::new(-1)).collect(),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let producer: ThreadedProducer<FillContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        // tansu serves idempotent producers several times slower (seen: 16k vs 118k msg/s).
        .set("enable.idempotence", "false")
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("batch.size", batch_bytes.to_string())
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000")
        .create_with_context(context)?;
    let started = Instant::now();
    let mut bytes = 0u64;
    for i in 0..n {
        let out = make(i);
        bytes += out.value.as_ref().map_or(0, |v| v.len() as u64)
            + out.key.as_ref().map_or(0, |k| k.len() as u64);
        let mut headers = OwnedHeaders::new();
        for (k, v) in &out.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
        if let Some(p) = out.partition {
            record = record.partition(p);
        }
        if let Some(k) = &out.key {
            record = record.key(k);
        }
        if let Some(v) = &out.value {
            record = record.payload(v);
        }
        if let Some(ts) = out.timestamp_ms {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => bail!("producing to {topic}: {e}"),
            }
        }
        if i > 0 && i % 200_000 == 0 {
            eprintln!("  {topic}: {i} of {n} queued");
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .context("flushing the fill producer")?;
    let seconds = started.elapsed().as_secs_f64();
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    if failed > 0 || delivered != n {
        bail!("{topic}: {delivered} of {n} delivered, {failed} failed");
    }
    let ends: Vec<i64> = ctx
        .max_offset
        .iter()
        .map(|o| o.load(Ordering::Relaxed) + 1)
        .collect();
    let total: i64 = ends.iter().sum();
    if total as u64 != n {
        bail!("{topic}: delivery reports end at {ends:?} (sum {total}), expected {n}");
    }
    Ok(Fill {
        topic: topic.to_owned(),
        partitions,
        events: n,
        bytes,
        seconds,
        per_s: n as f64 / seconds,
        ends,
    })
}
