//! librdkafka client settings for the consumer, the dead-letter producer and the admin client,
//! in one place.
//!
//! Order of precedence: runtime defaults < deployment settings ([`WorkerConfig`], passthrough
//! included) < properties the runtime owns (group, offset storage), which nothing overrides.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::WorkerConfig;

/// Defaults a deployment may override through `KAFKA_CONFIG__*`.
///
/// - `session.timeout.ms`/`heartbeat.interval.ms`: short enough that a replaced pod's partitions
///   move within seconds (and that tansu, which answers JoinGroup after half the session
///   timeout, assigns quickly); long enough for production brokers' minimum (6 s).
/// - `fetch.wait.max.ms`: the broker may hold a fetch this long when none of its partitions has
///   data. librdkafka keeps one fetch in flight per broker, and leaves out a partition whose
///   queue is full; so while a worker catches up on one busy partition, a fetch of only its idle
///   partitions goes out and is held this long, and the busy partition waits behind it. At
///   librdkafka's 500 ms (or our earlier 100 ms) a catch-up drain stalls again and again; 25 ms
///   keeps it at full speed (tansu, 1.2M records: 100 ms 208–240k/s, 50 ms 282k, 25 ms and 10 ms
///   320k) at the cost of 40 empty fetches a second per idle worker (tansu: 10 % of a core for
///   42 partitions; 100 ms: 3 %). It also bounds latency on brokers that always wait it out.
/// - `fetch.queue.backoff.ms`: how long librdkafka waits to fetch again after a partition's
///   queue was full. Its 1 s default stalls a partition whose task just took a batch.
/// - `statistics.interval.ms`: consumer lag metrics.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1500"),
    ("fetch.wait.max.ms", "25"),
    ("fetch.queue.backoff.ms", "1"),
    ("statistics.interval.ms", "5000"),
    ("auto.offset.reset", "earliest"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("enable.partition.eof", "false"),
];

/// The prefetch settings of a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefetchLimits {
    /// `queued.max.messages.kbytes`: records librdkafka keeps ready per partition. Each
    /// partition has its own queue (see `engine`), and librdkafka fetches a partition again
    /// only while its queue holds less than this.
    pub queue_kbytes: u64,
    /// `max.partition.fetch.bytes`: the most one fetch returns per partition.
    pub fetch_bytes: u64,
    /// `fetch.max.bytes`: the most one fetch returns in all (librdkafka's default is 50 MiB).
    /// A record keeps the whole response it came in alive until it is processed, so one slow
    /// partition can pin a response full of other partitions' records; 1/32 of the budget keeps
    /// that small without cutting any partition's fetch.
    pub response_bytes: u64,
}

impl PrefetchLimits {
    /// The most `partitions` partitions hold at once: each its queue plus one fetch.
    pub fn held(&self, partitions: usize) -> u64 {
        ((self.queue_kbytes << 10) + self.fetch_bytes) * partitions as u64
    }
}

/// Neither limit goes below this: a fetch must still make progress.
const MIN_PREFETCH_BYTES: u64 = 64 << 10;

/// Larger fetches buy nothing more (tansu, draining one partition of 14 topics: 1 MiB ≈ 230k
/// records/s, 4 MiB ≈ 300k, 8 MiB no better; `bench/profile.md`, session 5).
const MAX_FETCH_BYTES: u64 = 4 << 20;

/// Two fetches' worth keeps a partition's next fetch in flight while its task works through the
/// last one; librdkafka's 64 MiB default is far more than batches need.
const MAX_QUEUE_BYTES: u64 = 2 * MAX_FETCH_BYTES;

/// Splits `budget` over `partitions`: a partition holds at most its queue plus one fetch, so
/// each gets half of its share for either, and a worker assigned every partition (its peers
/// gone, or a first deploy catching up from `earliest`) holds at most `budget` of records.
///
/// librdkafka fixes both limits when the client is created, so the split is by the partitions
/// the worker subscribes to — the most it can be assigned — not by its current assignment. The
/// cost falls on a single busy partition among many idle ones: its fetches are as small as if
/// all were busy (see BENCHMARKS.md, "prefetch budget"). Below [`MIN_PREFETCH_BYTES`] a share
/// is raised to it, and the budget is exceeded (the worker says so at start).
pub fn prefetch_limits(budget: u64, partitions: usize) -> PrefetchLimits {
    let half_share = (budget / partitions.max(1) as u64 / 2).max(MIN_PREFETCH_BYTES);
    let fetch_bytes = half_share.min(MAX_FETCH_BYTES);
    PrefetchLimits {
        queue_kbytes: half_share.min(MAX_QUEUE_BYTES) >> 10,
        fetch_bytes,
        response_bytes: fetch_bytes.max(budget / 32),
    }
}

/// Brokers, security settings and passthrough properties shared by every client.
pub fn base_config(config: &WorkerConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("client.id", client_id);
    for (name, value) in config.kafka_properties() {
        c.set(name, value);
    }
    c
}

/// Consumer settings for `group`: defaults, the prefetch `limits` ([`prefetch_limits`]), then
/// the deployment's, then what at-least-once needs.
pub fn consumer_config(
    config: &WorkerConfig,
    client_id: &str,
    group: &str,
    limits: &PrefetchLimits,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (name, value) in CONSUMER_DEFAULTS {
        c.set(*name, *value);
    }
    c.set(
        "queued.max.messages.kbytes",
        limits.queue_kbytes.to_string(),
    )
    .set("max.partition.fetch.bytes", limits.fetch_bytes.to_string())
    .set("fetch.max.bytes", limits.response_bytes.to_string());
    for (name, value) in base_config(config, client_id).config_map() {
        c.set(name, value);
    }
    c.set("group.id", group)
        // librdkafka commits *stored* offsets on this interval; the runtime stores an offset
        // only after the record's effects are applied.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            duration_ms(config.commit_interval).to_string(),
        );
    c
}

/// How many partitions `topics` have, from the brokers' metadata; a topic the brokers do not
/// know (yet), or every topic when they do not answer in time, counts as `declared` partitions
/// (the family's). For [`prefetch_limits`], before the consumer exists.
pub fn subscribed_partitions(
    config: &WorkerConfig,
    client_id: &str,
    topics: &[&str],
    declared: usize,
) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let metadata = base_config(config, client_id)
        .create::<BaseConsumer>()
        .and_then(|client| client.fetch_metadata(None, Duration::from_secs(5)));
    match metadata {
        Ok(metadata) => topics
            .iter()
            .map(|name| {
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == *name && t.error().is_none())
                    .map_or(declared, |t| t.partitions().len().max(1))
            })
            .sum(),
        Err(error) => {
            tracing::warn!(%error, "reading the topics' partition counts; assuming the family's");
            topics.len() * declared
        }
    }
}

fn duration_ms(d: Duration) -> u128 {
    d.as_millis().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_overrides_defaults_but_never_offset_storage() {
        let config = WorkerConfig::from_args([
            "--kafka-config",
            "session.timeout.ms=2000",
            "--commit-interval",
            "250ms",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let c = consumer_config(
            &config,
            "id",
            "g",
            &prefetch_limits(config.prefetch_budget, 42),
        );
        assert_eq!(c.get("session.timeout.ms"), Some("2000"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("auto.commit.interval.ms"), Some("250"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(c.get("max.partition.fetch.bytes"), Some("399457"));
        assert_eq!(c.get("fetch.max.bytes"), Some("1048576"));
    }

    #[test]
    fn the_budget_bounds_a_worker_holding_every_partition() {
        let budget = 32 << 20;
        for partitions in [1, 6, 42, 200] {
            let limits = prefetch_limits(budget, partitions);
            assert!(
                limits.held(partitions) <= budget,
                "{partitions}: {limits:?}"
            );
        }
        assert_eq!(
            prefetch_limits(budget, 1),
            PrefetchLimits {
                queue_kbytes: 8192,
                fetch_bytes: MAX_FETCH_BYTES,
                response_bytes: MAX_FETCH_BYTES,
            }
        );
        assert_eq!(
            prefetch_limits(budget, 1000).fetch_bytes,
            MIN_PREFETCH_BYTES
        );
    }
}
